"""The web demo's files and rules (the page itself is web/): where the built page is, what publish uploads,
the .json the page reads for a model, and the page's still-image mode in Python.

The page lives in web/ (index.html, app.js, pose.js); web/build.sh runs `npm ci` from web/package-lock.json
and lays the page out with the LiteRT.js runtime files in web/build/, which is served as is.
A .tflite with no .json beside it is one of the seed's released files (they came without one): its .json is
the seed contract (BGR 0..255, the seed's channel order) with the sizes read from the model. A .json without
a `contract` stays as it is, and the page says what is missing; nothing invents a contract for a model that
has a .json.

`reference_keypoints` is what the page computes in still-image mode, done in Python with LiteRT: the picture
padded (black) to a centred square, resized bilinearly to the model's input, decoded by pose.codec with
refine="quarter" (argmax, a quarter pixel towards the higher neighbour: what the page does), mapped back
to input pixels by the codec and to the picture by the square's scale and offset. web/pose.js is its
JavaScript twin.
"""
import json
import logging
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from pose.data import keypoints

log = logging.getLogger("demo")

# The folder next to a published model that holds the page: <prefix>/demo/index.html?model=../<model>.tflite.
PUBLISHED_FOLDER = "demo"

SEED_CHANNEL_ORDER = ("head_top", "neck", *keypoints.NAMES[:12])
SEED_CONTRACT = {"name": "seed", "pixels": "bgr_0_255", "channel_order": list(SEED_CHANNEL_ORDER)}
PIXEL_FORMATS = ("bgr_0_255", "rgb_0_1")
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
    raise DemoError(f"the web demo's folder is not found (looked in {', '.join(map(str, candidates))}); "
                    f"set POSE_WEB_DIR")


def build(force: bool = False) -> Path:
    """web/build/ (npm ci from the lock, then the page laid out with the runtime's files); built when missing."""
    folder = web_dir()
    built = folder / "build" / "index.html"
    sources = [folder / name for name in PAGE_SOURCES if (folder / name).is_file()]
    if built.is_file() and not force and all(s.stat().st_mtime <= built.stat().st_mtime for s in sources):
        return folder / "build"
    if shutil.which("npm") is None:
        raise DemoError(f"{folder / 'build'} is not built and npm is not installed: install Node.js (npm), then "
                        f"run bash {folder / 'build.sh'}")
    result = subprocess.run(["bash", str(folder / "build.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise DemoError(f"bash {folder / 'build.sh'} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return folder / "build"


def page_files() -> list[tuple[Path, str]]:
    """(file, path under the published prefix) of every file of the built page (built first if needed), under demo/;
    not the gzip copies (a bucket serves the uploaded file itself compressed: see published_encoding)."""
    build_dir = build()
    return [(path, f"{PUBLISHED_FOLDER}/{path.relative_to(build_dir).as_posix()}")
            for path in sorted(build_dir.rglob("*")) if path.is_file() and path.suffix != GZIP_COPY]


def sent_gzipped(name: str) -> bool:
    """Whether a server sends this page file gzip-encoded to a browser that accepts it."""
    return Path(name).suffix.lower() in GZIP_SUFFIXES


def gzip_copy(path: Path) -> Path | None:
    """The build's gzip copy of a page file (web/build.sh writes it), or None for a file sent as it is."""
    copy = path.with_name(path.name + GZIP_COPY)
    return copy if sent_gzipped(path.name) and copy.is_file() else None


def published_encoding(name: str) -> str | None:
    """"gzip" for a demo file that publish uploads gzip-compressed (stored with Content-Encoding: gzip; a bucket
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
    """The .json the page gets for `model_path`: the one beside it, or for the seed's files the seed contract."""
    beside = model_path.with_suffix(".json")
    if beside.is_file():
        try:
            return json.loads(beside.read_text())
        except json.JSONDecodeError as error:
            raise DemoError(f"{beside}: not valid JSON ({error})") from error
    from pose.models import tflite_runtime

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


def square_input(bgr, input_size: int) -> tuple:
    """The picture padded (black) to a centred square and resized bilinearly to input_size, as float32 BGR 0..255."""
    import cv2
    import numpy as np

    height, width = bgr.shape[:2]
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    padded = cv2.copyMakeBorder(bgr.astype(np.float32), top, side - height - top, left, side - width - left,
                                cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return resized, {"side": side, "left": left, "top": top}


def reference_keypoints(model: str, picture: str, metadata: dict | None = None) -> dict:
    """{"order", "keypoints": [[x, y, score] x 14]} in the picture's pixels, as the page's still-image mode makes
    them, and "scale": picture pixels per model input pixel."""
    import cv2
    import numpy as np

    from pose.models import tflite_runtime
    from pose.codec import HeatmapCodec

    model_path = Path(model)
    metadata = metadata or model_metadata(model_path)
    contract = metadata.get("contract")
    if not contract or contract.get("pixels") not in PIXEL_FORMATS:
        raise DemoError(f"{model_path.with_suffix('.json')}: no usable contract ({contract!r})")
    from pose.data import pixels

    try:
        data = Path(picture).read_bytes()
        pixels.check_picture(data, str(picture))
    except (OSError, pixels.PictureTooLarge) as error:
        raise DemoError(f"{picture}: {error}") from None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"{picture}: not an image cv2 can read")
    size, stride = int(metadata["input_size"]), float(metadata["output_stride"])
    image, square = square_input(bgr, size)
    if contract["pixels"] == "rgb_0_1":
        image = image[..., ::-1] / np.float32(255.0)
    interpreter = tflite_runtime.load(model_path, num_threads=1)
    heatmaps = tflite_runtime.run(interpreter, image[None])
    in_input, scores = HeatmapCodec(size, stride, refine="quarter").decode_to_input(heatmaps)
    in_picture = (in_input[0] + 0.5) * (square["side"] / size) - 0.5 - np.array([square["left"], square["top"]])
    channel_joint = [keypoints.NAMES.index(name) for name in contract["channel_order"]]
    result = [None] * keypoints.NUM_KEYPOINTS
    for channel, joint in enumerate(channel_joint):
        result[joint] = [float(in_picture[channel, 0]), float(in_picture[channel, 1]), float(scores[0, channel])]
    return {"order": list(keypoints.NAMES), "keypoints": result, "scale": square["side"] / size}
