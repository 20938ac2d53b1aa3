#!/usr/bin/env python3
"""Builds the project's images (pose-slim, pose-cpu, pose-gpu) under the names pipeline/images.py gives them.

    python3 scripts/build_images.py                    # all three
    python3 scripts/build_images.py slim cpu           # the two that CI and `pipeline run --runner docker` need
    python3 scripts/build_images.py slim cpu --base-image pose-stand-in/python:3.11-bookworm

Run it from anywhere with the system's Python 3.11 and a docker engine (DOCKER_HOST; see
scripts/docker_engine.py). It stages the build context in a temporary folder: exactly the image inputs of
pipeline/images.py, plus the seed's two released .tflite files (from --anchors, default $POSE_ANCHORS_DIR, else
../shared/anchors beside the repository) checked against images/anchors/SHA256SUMS. Docker's layer cache keys on content,
so a rebuild after a code edit reuses the dependency layers. The tag is pipeline/images.py's: derived from
the content unless POSE_IMAGE_TAG is set. `--base-image` replaces the Dockerfiles' `python:3.11.7-slim-bookworm`
where no registry can be reached (docker_engine.py builds a stand-in). Prints each image's name, size
and build time.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pipeline import images  # noqa: E402  (standard library only)

KINDS = ("slim", "cpu", "gpu")
# The same folder evaluate looks in outside an image.
DEFAULT_ANCHORS = Path(os.environ.get("POSE_ANCHORS_DIR") or REPO.parent / "shared" / "anchors")
ANCHORS_IN_CONTEXT = "images/anchors"


class BuildError(RuntimeError):
    """The images cannot be built as asked: names what is missing."""


def stage_context(context: Path, anchors: Path) -> None:
    """Copies the image inputs into `context` (repository layout) and the seed's models beside their notice."""
    for path in images.input_files(REPO):
        target = context / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    sums = (REPO / ANCHORS_IN_CONTEXT / "SHA256SUMS").read_text().split("\n")
    for line in filter(None, sums):
        digest, name = line.split()
        source = anchors / name
        if not source.is_file():
            raise BuildError(f"seed model {source} is missing (images/anchors/SHA256SUMS lists it; give the folder "
                             f"holding the seed's released .tflite files with --anchors)")
        if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            raise BuildError(f"seed model {source}: sha256 differs from images/anchors/SHA256SUMS")
        shutil.copyfile(source, context / ANCHORS_IN_CONTEXT / name)
    # The web demo publish uploads (web/build/), built here from its lock: the images have no Node.js.
    if subprocess.run(["bash", str(context / "web" / "build.sh")]).returncode != 0:
        raise BuildError("bash web/build.sh failed (it needs node and npm); its output is above")
    shutil.rmtree(context / "web" / "node_modules")  # 38 MB the images do not copy


def build(kind: str, context: Path, base_image: str | None) -> dict:
    name = images.IMAGES[kind]
    command = ["docker", "build", "--network", "host", "-f", str(context / "images" / f"Dockerfile.{kind}"),
               "-t", name, "--build-arg", f"IMAGE_TAG={images.TAG}"]
    if base_image:
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
    print(f"[build] {name}", flush=True)
    started = time.perf_counter()
    # The legacy builder is what a bare docker engine has; its deprecation notice is expected here.
    result = subprocess.run(command + [str(context)], env=dict(os.environ, DOCKER_BUILDKIT="0"))
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise BuildError(f"docker build of {name} failed (exit {result.returncode}); its output is above")
    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", name], capture_output=True,
                          text=True, check=True).stdout.strip()
    return {"image": name, "seconds": round(seconds, 1), "size_bytes": int(size)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("kinds", nargs="*", choices=KINDS, default=list(KINDS), metavar="KIND",
                        help=f"images to build, of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--base-image", help="base image instead of python:3.11.7-slim-bookworm")
    parser.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS,
                        help=f"folder with the seed's released .tflite files (default {DEFAULT_ANCHORS})")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        print("build_images: no docker client on PATH; `python3 scripts/docker_engine.py up` installs and starts "
              "an engine", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="pose-image-context-") as tmp:
            stage_context(Path(tmp), args.anchors)
            built = [build(kind, Path(tmp), args.base_image) for kind in dict.fromkeys(args.kinds)]
    except BuildError as error:
        print(f"build_images: {error}", file=sys.stderr)
        return 1
    for image in built:
        print(f"{image['image']}  {image['size_bytes'] / 1e6:.0f} MB  built in {image['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
