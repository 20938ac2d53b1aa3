"""The web demo's files and rules (the page itself is web/): where the built page is, what publish uploads,
the .json the page reads for a model (pose.models.metadata).

The page lives in web/ (index.html, app.js, pose.js); web/build.sh runs `npm ci` from web/package-lock.json
and lays the page out with the LiteRT.js runtime files in web/build/, which is served as is.
A .tflite with no .json beside it is one of the seed's released files (they came without one): its .json is
the seed contract (BGR 0..255, the seed's channel order) with the sizes read from the model. A .json without
a `contract` stays as it is, and the page says what is missing; nothing invents a contract for a model that
has a .json.

The page's still-image mode has a Python twin: pose.evaluation.photos.reference_keypoints (evaluate's real
photographs and the browser tests use it).
"""

import fcntl
import logging
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

log = logging.getLogger("demo")

# The folder next to a published model that holds the page: <prefix>/demo/index.html?model=../<model>.tflite.
PUBLISHED_FOLDER = "demo"

# Files a server sends gzip-encoded (Content-Encoding: gzip) to a browser that accepts it: the WASM runtime is
# 9.4 MB as is and 2.9 MB gzipped. web/build.sh writes each one's gzip copy beside it (GZIP_COPY appended).
GZIP_SUFFIXES = (".wasm", ".js", ".html", ".css")
GZIP_COPY = ".gz"
# What web/build/ is made from: a build older than any of them is rebuilt.
PAGE_SOURCES = ("index.html", "app.js", "pose.js", "style.css", "package-lock.json", "build.sh")


class DemoError(ValueError):
    """A missing model or page build, or a model the page cannot run; the message names which."""


def web_dir() -> Path:
    """web/ of the checkout, or of the working directory (the images install the packages, and keep web/ in WORKDIR)."""
    candidates = [Path(os.environ["POSE_WEB_DIR"])] if os.environ.get("POSE_WEB_DIR") else []
    candidates += [Path(__file__).resolve().parent.parent / "web", Path.cwd() / "web"]
    for folder in candidates:
        if (folder / "build.sh").is_file() or (folder / "build" / "index.html").is_file():
            return folder
    raise DemoError(
        f"the web demo's folder is not found (looked in {', '.join(map(str, candidates))}); "
        f"set POSE_WEB_DIR"
    )


def build(force: bool = False) -> Path:
    """web/build/ (npm ci from the lock, then the page laid out with the runtime's files); built when missing."""
    folder = web_dir()
    built = folder / "build" / "index.html"
    sources = [folder / name for name in PAGE_SOURCES if (folder / name).is_file()]

    def fresh() -> bool:
        return (
            built.is_file()
            and not force
            and all(s.stat().st_mtime <= built.stat().st_mtime for s in sources)
        )

    if fresh():
        return folder / "build"
    # build.sh lays the page out in web/build.tmp: two builds at once (four publishes started
    # together on a fresh checkout) removed each other's files. The second waits for the first,
    # and then finds the page built.
    with open(folder / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return folder / "build"
        return _run_build_script(folder)


def _run_build_script(folder: Path) -> Path:
    if shutil.which("npm") is None:
        raise DemoError(
            f"{folder / 'build'} is not built and npm is not installed: install Node.js (npm), then "
            f"run bash {folder / 'build.sh'}"
        )
    result = subprocess.run(["bash", str(folder / "build.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise DemoError(
            f"bash {folder / 'build.sh'} failed: {(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return folder / "build"


def page_files() -> list[tuple[Path, str]]:
    """(file, path under the published prefix) of every file of the built page (built first if needed), under demo/;
    not the gzip copies (a bucket serves the uploaded file itself compressed: see published_encoding)."""
    build_dir = build()
    return [
        (path, f"{PUBLISHED_FOLDER}/{path.relative_to(build_dir).as_posix()}")
        for path in sorted(build_dir.rglob("*"))
        if path.is_file() and path.suffix != GZIP_COPY
    ]


def sent_gzipped(name: str) -> bool:
    """Whether a server sends this page file gzip-encoded to a browser that accepts it."""
    return Path(name).suffix.lower() in GZIP_SUFFIXES


def gzip_copy(path: Path) -> Path | None:
    """The build's gzip copy of a page file (web/build.sh writes it), or None for a file sent as it is."""
    copy = path.with_name(path.name + GZIP_COPY)
    return copy if sent_gzipped(path.name) and copy.is_file() else None


def published_encoding(name: str) -> str | None:
    """ "gzip" for a demo file that publish uploads gzip-compressed (stored with Content-Encoding: gzip; a bucket
    sends it so to browsers, which unpack it, and unpacks it for clients that do not accept gzip), else None."""
    return "gzip" if name.startswith(f"{PUBLISHED_FOLDER}/") and sent_gzipped(name) else None


def gzip_bytes(data: bytes) -> bytes:
    """`data` gzipped as web/build.sh does (gzip -9 -n: best compression, no name or time, so reproducible)."""
    import gzip

    return gzip.compress(data, compresslevel=9, mtime=0)


def published_url(model_file_name: str) -> str:
    """The demo's address relative to the published prefix (for the model card's link)."""
    return f"{PUBLISHED_FOLDER}/index.html?model=../{urllib.parse.quote(model_file_name)}"


def model_metadata(model_path: Path) -> dict:
    """The .json the page gets for `model_path`: the one beside it as it is (the page says what is
    missing), or for the seed's files their metadata (pose.models.metadata.seed_release)."""
    from pose.models import metadata

    try:
        beside = metadata.path_for(model_path)
        if beside.is_file():
            return metadata.read_json(beside)
        log.info(
            "%s has no .json: serving the seed contract for it (the seed's released files came "
            "without one)",
            model_path.name,
        )
        return metadata.seed_release(model_path).to_json()
    except metadata.MetadataError as error:
        raise DemoError(str(error)) from error
