"""The images' sizes and build times, the rebuild after a code-only change, and the whole DAG under
`--runner docker` (BENCHMARKS.md, "Containers").

    .venv/bin/python benchmarks/containers.py [--base-image pose-stand-in/python:3.11-bookworm] [--no-dag]

Needs a docker engine (scripts/docker_engine.py up). It builds pose-slim and pose-cpu of the current content
tag (layer-cached when built before: then the build time is a cache hit, not a cold build), then builds both
again from a staged context with one comment line added to pose/__init__.py (a code-only change; the tag
`bench-code-change` is removed afterwards), then runs `python -m pipeline run --runner docker` on
synthetic://200 with the tiny config (40 steps, 2 shards, fp32 and int8, 3 latency runs) into a temporary
pipeline root. Prints one JSON object.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size(image: str) -> int:
    return int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-image", default=None, help="as scripts/build_images.py --base-image"
    )
    parser.add_argument("--no-dag", action="store_true", help="only the builds")
    args = parser.parse_args()

    engine, build_images = _script("docker_engine"), _script("build_images")
    os.environ["DOCKER_HOST"] = engine.up()
    from pipeline import images

    result = {"tag": images.TAG, "builds": {}, "code_change_rebuild": {}}
    with tempfile.TemporaryDirectory(prefix="pose-bench-context-") as tmp:
        context = Path(tmp)
        build_images.stage_context(context)
        for kind in ("slim", "cpu"):
            built = build_images.build(kind, context, args.base_image)
            result["builds"][kind] = {
                "seconds": built["seconds"],
                "size_mb": round(built["size_bytes"] / 1e6),
            }
        with open(context / "pose" / "__init__.py", "a") as module:
            module.write("\n# benchmarks/containers.py: a code-only change\n")
        for kind in ("slim", "cpu"):
            name = f"{images.IMAGES[kind].rsplit(':', 1)[0]}:bench-code-change"
            command = [
                "docker",
                "build",
                "--network",
                "host",
                "-q",
                "-f",
                str(context / "images" / f"Dockerfile.{kind}"),
                "-t",
                name,
                *(["--build-arg", f"BASE_IMAGE={args.base_image}"] if args.base_image else []),
                str(context),
            ]
            started = time.perf_counter()
            subprocess.run(
                command,
                check=True,
                stdout=subprocess.DEVNULL,
                env=dict(os.environ, DOCKER_BUILDKIT="0"),
            )
            result["code_change_rebuild"][kind] = {
                "seconds": round(time.perf_counter() - started, 1)
            }
            subprocess.run(["docker", "rmi", name], check=True, stdout=subprocess.DEVNULL)

    if not args.no_dag:
        from pipeline.local import run_local

        with tempfile.TemporaryDirectory(prefix="pose-bench-dag-") as root:
            started = time.perf_counter()
            summary = run_local(
                source="synthetic://200?seed=11",
                config="experiments/tiny.yaml",
                runner="docker",
                pipeline_root=root,
                overrides=["max_steps=40"],
                params={"num_shards": 2, "tflite_variants": "fp32,int8", "latency_runs": 3},
            )
            result["dag"] = {
                "seconds": round(time.perf_counter() - started, 1),
                "steps": {s["step"]: s["wall_s"] for s in summary["steps"]},
            }
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
