#!/usr/bin/env python3
"""Builds the project's images (pose-slim, pose-cpu, pose-gpu) under the names pipeline/images.py gives them.

    python3 scripts/build_images.py                    # all three
    python3 scripts/build_images.py slim cpu           # the two that CI and `pipeline run --runner docker` need
    python3 scripts/build_images.py slim cpu --base-image pose-stand-in/python:3.11-bookworm

Run it from anywhere with the system's Python 3.11 and a docker engine (DOCKER_HOST; see
scripts/docker_engine.py). It stages the build context in a temporary folder: exactly the image inputs of
pipeline/images.py (the seed's two released .tflite files among them, in anchors/, checked against
anchors/SHA256SUMS first). Docker's layer cache keys on content,
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
ANCHORS = "anchors"  # the seed's released files, in the repository


class BuildError(RuntimeError):
    """The images cannot be built as asked: names what is missing."""


def check_anchors(folder: Path = REPO / ANCHORS) -> None:
    """The seed's released files are the ones anchors/SHA256SUMS pins (a clone with Git LFS pointers or a
    damaged copy would otherwise go into the images)."""
    for line in filter(None, (folder / "SHA256SUMS").read_text().split("\n")):
        digest, name = line.split()
        source = folder / name
        if not source.is_file():
            raise BuildError(f"seed model {source} is missing (anchors/SHA256SUMS lists it)")
        if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            raise BuildError(f"seed model {source}: sha256 differs from anchors/SHA256SUMS")


def stage_context(context: Path) -> None:
    """Copies the image inputs into `context` (repository layout)."""
    check_anchors()
    for path in images.input_files(REPO):
        target = context / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    # The web demo publish uploads (web/build/), built here from its lock: the images have no Node.js.
    if subprocess.run(["bash", str(context / "web" / "build.sh")]).returncode != 0:
        raise BuildError("bash web/build.sh failed (it needs node and npm); its output is above")
    shutil.rmtree(context / "web" / "node_modules")  # 38 MB the images do not copy


def build(kind: str, context: Path, base_image: str | None) -> dict:
    name = images.IMAGES[kind]
    command = [
        "docker",
        "build",
        "--network",
        "host",
        "-f",
        str(context / "images" / f"Dockerfile.{kind}"),
        "-t",
        name,
        "--build-arg",
        f"IMAGE_TAG={images.TAG}",
    ]
    if base_image:
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
    print(f"[build] {name}", flush=True)
    started = time.perf_counter()
    # The legacy builder is what a bare docker engine has; its deprecation notice is expected here.
    result = subprocess.run(command + [str(context)], env=dict(os.environ, DOCKER_BUILDKIT="0"))
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise BuildError(
            f"docker build of {name} failed (exit {result.returncode}); its output is above"
        )
    size = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"image": name, "seconds": round(seconds, 1), "size_bytes": int(size)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "kinds",
        nargs="*",
        choices=KINDS,
        default=list(KINDS),
        metavar="KIND",
        help=f"images to build, of {', '.join(KINDS)} (default: all)",
    )
    parser.add_argument("--base-image", help="base image instead of python:3.11.7-slim-bookworm")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        print(
            "build_images: no docker client on PATH; `python3 scripts/docker_engine.py up` installs and starts "
            "an engine",
            file=sys.stderr,
        )
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="pose-image-context-") as tmp:
            stage_context(Path(tmp))
            built = [build(kind, Path(tmp), args.base_image) for kind in dict.fromkeys(args.kinds)]
    except BuildError as error:
        print(f"build_images: {error}", file=sys.stderr)
        return 1
    for image in built:
        print(
            f"{image['image']}  {image['size_bytes'] / 1e6:.0f} MB  built in {image['seconds']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
