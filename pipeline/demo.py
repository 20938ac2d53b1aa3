"""python -m pipeline demo --model PATH.tflite [--port N]: the web demo (web/) served on 127.0.0.1.

Serves the built page (web/build/, built on first use with web/build.sh) at /, the model and its .json at
model/ (pose.web_demo.model_metadata: the .json beside it, or the seed contract for the seed's released
files), and optionally a folder of pictures at pictures/; prints the URL to open. The runtime and page files
go gzip-encoded (the build's gzip copies, pose.web_demo.gzip_copy) to a browser that accepts gzip: 2.9 MB on
the wire instead of 9.7 MB.
"""

import contextlib
import functools
import http.server
import json
import logging
import threading
import urllib.parse
from pathlib import Path

from pose.web_demo import DemoError, build, gzip_copy, model_metadata

log = logging.getLogger("demo")

MODEL_PATH = "model/"  # where the server puts the model, relative to the page
PICTURES_PATH = "pictures/"

_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".tflite": "application/octet-stream",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}

__all__ = ["DemoError", "serve", "serving"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The page from web/build/, the model under model/, pictures (optional) under pictures/."""

    def __init__(
        self, *args, model_path: Path, metadata: bytes, pictures: Path | None, page: Path, **kwargs
    ):
        self.model_path, self.metadata, self.pictures = model_path, metadata, pictures
        super().__init__(*args, directory=str(page), **kwargs)

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        model_prefix = f"/{MODEL_PATH}{self.model_path.stem}"
        if path == model_prefix + ".tflite":
            return self._send(self.model_path.read_bytes(), ".tflite")
        if path == model_prefix + ".json":
            return self._send(self.metadata, ".json")
        if self.pictures is not None and path.startswith(f"/{PICTURES_PATH}"):
            picture = (self.pictures / path[len(PICTURES_PATH) + 1 :]).resolve()
            if picture.is_file() and picture.is_relative_to(self.pictures.resolve()):
                return self._send(picture.read_bytes(), picture.suffix.lower())
            return self.send_error(404)
        page_file = Path(self.translate_path(self.path))
        compressed = gzip_copy(page_file) if page_file.is_file() else None
        if compressed is not None and self._accepts_gzip():
            return self._send(compressed.read_bytes(), page_file.suffix.lower(), encoding="gzip")
        return super().do_GET()

    def _accepts_gzip(self) -> bool:
        """Whether Accept-Encoding allows gzip (listed, or `*`, with a q-value above 0)."""
        for coding in self.headers.get("Accept-Encoding", "").lower().split(","):
            name, *params = [part.strip() for part in coding.split(";")]
            quality = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                accepted = float(quality) > 0
            except ValueError:
                accepted = False
            if name in ("gzip", "*") and accepted:
                return True
        return False

    def _send(self, body: bytes, suffix: str, encoding: str | None = None):
        self.send_response(200)
        self.send_header("Content-Type", _CONTENT_TYPES.get(suffix, "application/octet-stream"))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def guess_type(self, path):
        return _CONTENT_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("Vary", "Accept-Encoding")  # the page files' bodies depend on it
        super().end_headers()

    def log_message(self, format, *args):
        log.debug("%s " + format, self.address_string(), *args)


@contextlib.contextmanager
def serving(model: str, port: int = 0, pictures: str | None = None):
    """A running server (in a thread) for `model`; yields the page's URL for it."""
    model_path = Path(model)
    if not model_path.is_file():
        raise DemoError(f"--model {model}: no such file")
    if model_path.suffix != ".tflite":
        raise DemoError(f"--model {model}: expected a .tflite file")
    page = build()
    metadata = json.dumps(model_metadata(model_path)).encode()
    handler = functools.partial(
        _Handler,
        model_path=model_path,
        metadata=metadata,
        pictures=Path(pictures) if pictures else None,
        page=page,
    )
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise DemoError(
            f"--port {port}: cannot listen on 127.0.0.1:{port} ({error.strerror})"
        ) from error
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"http://127.0.0.1:{server.server_address[1]}/index.html?model="
            f"{MODEL_PATH}{urllib.parse.quote(model_path.name)}"
        )
    finally:
        server.shutdown()
        server.server_close()


def serve(model: str, port: int = 8000, pictures: str | None = None) -> None:
    """Serves until interrupted; prints the URL to open."""
    with serving(model, port, pictures) as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
