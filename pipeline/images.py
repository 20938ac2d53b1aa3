"""Container images the steps run in, and the tag they are built and compiled under.

    pose-slim  download, convert, fanout, publish, cluster settings: the steps that never import TensorFlow
    pose-cpu   TensorFlow for CPUs: shard, freeze, tflite, evaluate (with the seed's models inside)
    pose-gpu   TensorFlow with CUDA: train

`scripts/build_images.py` builds them from images/ under these names. The default tag is derived from
what goes into the images (IMAGE_INPUTS, hashed), so a changed image always gets a new name: a cluster
never runs an old image cached under a reused tag, and KFP's cache never hits on one. Override the
registry or tag with POSE_IMAGE_REGISTRY / POSE_IMAGE_TAG (or `python -m pipeline compile --registry
... --image-tag ...`). Importing this module needs only the standard library (the build script runs it
with the system's python3).
"""

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
# Everything the Dockerfiles COPY, and the Dockerfiles and locks themselves, as repository paths (anchors/:
# the seed's released .tflite files with their notice; photos/: the real photographs evaluate shows).
IMAGE_INPUTS = (
    "images/Dockerfile.slim",
    "images/Dockerfile.cpu",
    "images/Dockerfile.gpu",
    "anchors",
    "photos",
    "requirements.lock",
    "requirements-slim.lock",
    "requirements-gpu.lock",
    "pose",
    "components",
    "pipeline",
    "experiments",
    *(
        f"web/{name}"
        for name in (
            "index.html",
            "app.js",
            "pose.js",
            "style.css",
            "package.json",
            "package-lock.json",
            "build.sh",
        )
    ),
)  # the web demo publish uploads
_NOT_INPUTS = (".pyc", ".tmp")  # build leftovers, never copied into an image


def input_files(root: Path = REPO) -> list[Path]:
    """The files of IMAGE_INPUTS under `root`, sorted; raises FileNotFoundError naming a missing input."""
    files = []
    for name in IMAGE_INPUTS:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part == "__pycache__" for part in p.parts)
                and not p.name.endswith(_NOT_INPUTS)
            )
        else:
            raise FileNotFoundError(f"image input {path} is missing")
    return sorted(files)


def content_tag(root: Path = REPO) -> str:
    """`<VERSION>-<12 hex digits>`: a hash over the image inputs' repository paths and contents."""
    digest = hashlib.sha256()
    for path in input_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{VERSION}-{digest.hexdigest()[:12]}"


def _default_tag() -> str:
    # Inside an image the build script has set POSE_IMAGE_TAG; a checkout computes it from its files.
    return os.environ.get("POSE_IMAGE_TAG") or content_tag()


REGISTRY = os.environ.get("POSE_IMAGE_REGISTRY", "ghcr.io/pose-pipeline")
TAG = _default_tag()
SLIM_IMAGE = f"{REGISTRY}/pose-slim:{TAG}"  # download, convert, fanout, publish, cluster settings
CPU_IMAGE = f"{REGISTRY}/pose-cpu:{TAG}"  # shard, freeze, tflite, evaluate
GPU_IMAGE = f"{REGISTRY}/pose-gpu:{TAG}"  # train
IMAGES = {"slim": SLIM_IMAGE, "cpu": CPU_IMAGE, "gpu": GPU_IMAGE}


if (
    __name__ == "__main__"
):  # `eval "$(python3 -m pipeline.images)"`: the names as shell variables (README.md)
    import shlex

    for kind, image in IMAGES.items():
        print(f"POSE_{kind.upper()}_IMAGE={shlex.quote(image)}")
