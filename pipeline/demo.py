"""The web demo (web/): build it, serve it with a model, list what publish uploads, and the page's Python twin.

  python -m pipeline demo --model PATH.tflite [--port N]

serves the built page (web/build/, made by web/build.sh) and the model on 127.0.0.1 and prints the URL
to open. A .tflite with no .json beside it is one of the seed's released files (they came without one): the
server answers its .json with the seed contract (192 px, BGR 0..255, the seed's channel order) and the stride
read from its output shape. A .json without a `contract` is served as it is, and the page says what is
missing; the server never invents a contract for a model that has a .json.

`reference_keypoints` is what the page computes in still-image mode, done in Python with LiteRT: the
picture padded to a centred square, resized bilinearly to the model's input, decoded with
pose.decoding.decode(refine="quarter") (argmax, a quarter pixel towards the higher neighbour).
"""
import contextlib
import functools
import http.server
import json
import logging
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import numpy as np

from pose import keypoints

log = logging.getLogger("demo")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
BUILD_DIR = WEB_DIR / "build"
MODEL_PATH = "model/"  # where the server puts the model, relative to the page
PICTURES_PATH = "pictures/"
# The folder next to the published model that holds the page, so that <prefix>/demo/index.html?model=../x.tflite works.
PUBLISHED_FOLDER = "demo"

SEED_CHANNEL_ORDER = ("head_top", "neck", *keypoints.NAMES[:12])
SEED_CONTRACT = {"name": "seed", "pixels": "bgr_0_255", "channel_order": list(SEED_CHANNEL_ORDER)}
PIXEL_FORMATS = ("bgr_0_255", "rgb_0_1")

_CONTENT_TYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
                  ".tflite": "application/octet-stream", ".html": "text/html; charset=utf-8", ".css": "text/css",
                  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".y4m": "video/x-yuv4mpeg"}


class DemoError(ValueError):
    """A missing model or page build, or a model the page cannot run; the message names which."""


def build(force: bool = False) -> Path:
    """web/build/ (npm ci from the lock, then the page laid out with the runtime's files); built when missing."""
    if (BUILD_DIR / "index.html").is_file() and not force:
        return BUILD_DIR
    if shutil.which("npm") is None:
        raise DemoError(f"{BUILD_DIR} is not built and npm is not installed: install Node.js (npm), then run "
                        f"bash {WEB_DIR / 'build.sh'}")
    result = subprocess.run(["bash", str(WEB_DIR / "build.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise DemoError(f"bash {WEB_DIR / 'build.sh'} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return BUILD_DIR


def page_files(build_dir: Path = BUILD_DIR) -> list[tuple[Path, str]]:
    """(file, path relative to the published prefix) of every file of the built page, under demo/."""
    if not (build_dir / "index.html").is_file():
        raise DemoError(f"{build_dir}: the web demo is not built (run bash {WEB_DIR / 'build.sh'})")
    return [(path, f"{PUBLISHED_FOLDER}/{path.relative_to(build_dir).as_posix()}")
            for path in sorted(build_dir.rglob("*")) if path.is_file()]


def published_url(model_file_name: str) -> str:
    """The demo's address relative to the published prefix (for the model card's link)."""
    return f"{PUBLISHED_FOLDER}/index.html?model=../{urllib.parse.quote(model_file_name)}"


def model_metadata(model_path: Path) -> dict:
    """The .json the page gets for `model_path`: the one beside it, or for the seed's files the seed contract."""
    beside = model_path.with_suffix(".json")
    if beside.is_file():
        try:
            return json.loads(beside.read_text())
        except json.JSONDecodeError as error:
            raise DemoError(f"{beside}: not valid JSON ({error})") from error
    from pose import tflite_runtime

    interpreter = tflite_runtime.load(model_path)
    _, input_size, _, _ = tflite_runtime.input_shape(interpreter)
    _, output_size, _, channels = tflite_runtime.output_shape(interpreter)
    if channels != keypoints.NUM_KEYPOINTS or input_size % output_size:
        raise DemoError(f"{model_path}: no {beside.name} beside it, and its shapes (input {input_size}, output "
                        f"{output_size}x{output_size}x{channels}) are not a seed release's; write its .json")
    log.info("%s has no .json: serving the seed contract for it (the seed's released files came without one)",
             model_path.name)
    return {"model": model_path.stem, "input_size": input_size, "output_size": output_size,
            "output_stride": input_size // output_size, "num_keypoints": channels,
            "output_name": interpreter.get_output_details()[0]["name"], "contract": dict(SEED_CONTRACT)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The page from web/build/, the model under model/, pictures (optional) under pictures/."""

    def __init__(self, *args, model_path: Path, metadata: bytes, pictures: Path | None, **kwargs):
        self.model_path, self.metadata, self.pictures = model_path, metadata, pictures
        super().__init__(*args, directory=str(BUILD_DIR), **kwargs)

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        model_prefix = f"/{MODEL_PATH}{self.model_path.stem}"
        if path == model_prefix + ".tflite":
            return self._send(self.model_path.read_bytes(), ".tflite")
        if path == model_prefix + ".json":
            return self._send(self.metadata, ".json")
        if self.pictures is not None and path.startswith(f"/{PICTURES_PATH}"):
            picture = (self.pictures / path[len(PICTURES_PATH) + 1:]).resolve()
            if picture.is_file() and picture.is_relative_to(self.pictures.resolve()):
                return self._send(picture.read_bytes(), picture.suffix.lower())
            return self.send_error(404)
        return super().do_GET()

    def _send(self, body: bytes, suffix: str):
        self.send_response(200)
        self.send_header("Content-Type", _CONTENT_TYPES.get(suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def guess_type(self, path):
        return _CONTENT_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
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
    build()
    metadata = json.dumps(model_metadata(model_path)).encode()
    handler = functools.partial(_Handler, model_path=model_path, metadata=metadata,
                                pictures=Path(pictures) if pictures else None)
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise DemoError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({error.strerror})") from error
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{server.server_address[1]}/index.html?model="
               f"{MODEL_PATH}{urllib.parse.quote(model_path.name)}")
    finally:
        server.shutdown()
        server.server_close()


def serve(model: str, port: int = 8000, pictures: str | None = None) -> None:
    """Serves until interrupted; prints the URL to open."""
    with serving(model, port, pictures) as url:
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


# --- the page's Python twin -------------------------------------------------------------------------------

def square_input(bgr: np.ndarray, input_size: int) -> tuple[np.ndarray, dict]:
    """The picture padded (black) to a centred square and resized bilinearly to input_size, as float32 BGR 0..255."""
    import cv2

    height, width = bgr.shape[:2]
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    padded = cv2.copyMakeBorder(bgr.astype(np.float32), top, side - height - top, left, side - width - left,
                                cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return resized, {"side": side, "left": left, "top": top}


def reference_keypoints(model: str, picture: str, metadata: dict | None = None) -> dict:
    """{"order", "keypoints": [[x, y, score] x 14]} in the picture's pixels, as the page's still-image mode makes them."""
    import cv2

    from pose import decoding, tflite_runtime

    model_path = Path(model)
    metadata = metadata or model_metadata(model_path)
    contract = metadata.get("contract")
    if not contract or contract.get("pixels") not in PIXEL_FORMATS:
        raise DemoError(f"{model_path.with_suffix('.json')}: no usable contract ({contract!r})")
    bgr = cv2.imread(str(picture), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"{picture}: not an image cv2 can read")
    size, stride = int(metadata["input_size"]), float(metadata["output_stride"])
    image, square = square_input(bgr, size)
    if contract["pixels"] == "rgb_0_1":
        image = image[..., ::-1] / np.float32(255.0)
    interpreter = tflite_runtime.load(model_path, num_threads=1)
    heatmaps = tflite_runtime.run(interpreter, image[None])
    coords, scores = decoding.decode(heatmaps, refine="quarter")
    in_input = decoding.heatmap_to_input(coords[0], stride)
    in_picture = (in_input + 0.5) * (square["side"] / size) - 0.5 - np.array([square["left"], square["top"]])
    channel_joint = [keypoints.NAMES.index(name) for name in contract["channel_order"]]
    result = [None] * keypoints.NUM_KEYPOINTS
    for channel, joint in enumerate(channel_joint):
        result[joint] = [float(in_picture[channel, 0]), float(in_picture[channel, 1]), float(scores[0, channel])]
    return {"order": list(keypoints.NAMES), "keypoints": result, "scale": square["side"] / size}
