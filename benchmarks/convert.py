"""Benchmark: convert an AIC release the size of the real one (goal: >= 2,000 records/s, <= 2 GB peak).

Generates the official layout with the real set's counts (train 210,000 images / 378,374 people,
validation 30,000 images / 70,356 people): annotation files of random but valid records, and images
that are hard links to a small pool of real JPEGs under distinct 40-hex names, so every record
points at its own file and the converter checks and links every one. Then runs the real CLI
(`python -m components.convert`) in a child process and prints its records/s and peak memory.

    .venv/bin/python benchmarks/convert.py [--scale 1.0] [--workdir DIR]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pose.data.aic_release import AIC_LAYOUT  # noqa: E402

# The real release's counts (AI Challenger keypoint train 20170902, validation 20170911).
REAL_SIZES = {"train": (210_000, 378_374), "valid": (30_000, 70_356)}
POOL_SIZE = 300
NUM_JOINTS = 14


def make_pool(folder: Path, rng) -> list[tuple[Path, int, int]]:
    """A few hundred real JPEGs with the set's typical sizes (hundreds of pixels a side)."""
    folder.mkdir(parents=True)
    pool = []
    for index in range(POOL_SIZE):
        width, height = (int(v) for v in rng.integers(240, 900, 2))
        image = cv2.GaussianBlur(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (9, 9), 0
        )
        path = folder / f"pool{index:04d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        pool.append((path, width, height))
    return pool


def people_per_image(num_images: int, num_people: int, rng) -> np.ndarray:
    """Counts >= 1 with the given total: mostly one person, some up to a dozen, as in the real set."""
    counts = np.ones(num_images, dtype=np.int64)
    extra = rng.choice(num_images, num_people - num_images, p=None)
    np.add.at(counts, extra, 1)
    return counts


def write_split(root: Path, split: str, num_images: int, num_people: int, pool, rng) -> None:
    release, annotation_name, images_name = AIC_LAYOUT[split]
    images = root / release / images_name
    images.mkdir(parents=True)
    counts = people_per_image(num_images, num_people, rng)
    choice = rng.integers(0, len(pool), num_images)
    ids = [f"{split[0]}{i:039x}" for i in range(num_images)]
    with open(root / release / annotation_name, "w") as f:
        f.write("[")
        for index, (image_id, people, pick) in enumerate(zip(ids, counts, choice)):
            source, width, height = pool[pick]
            os.link(source, images / f"{image_id}.jpg")
            codes = rng.choice([1, 2, 3], (people, NUM_JOINTS), p=[0.75, 0.15, 0.10])
            xs = rng.integers(0, width, (people, NUM_JOINTS))
            ys = rng.integers(0, height, (people, NUM_JOINTS))
            keypoints, boxes = {}, {}
            for person in range(people):
                labelled = codes[person] != 3
                x = np.where(labelled, xs[person], 0)
                y = np.where(labelled, ys[person], 0)
                human = f"human{person + 1}"
                keypoints[human] = np.stack([x, y, codes[person]], axis=1).ravel().tolist()
                boxes[human] = [
                    int(xs[person].min()),
                    int(ys[person].min()),
                    int(xs[person].max()),
                    int(ys[person].max()),
                ]
            record = {
                "url": f"http://example.invalid/{image_id}.jpg",
                "image_id": image_id,
                "keypoint_annotations": keypoints,
                "human_annotations": boxes,
            }
            f.write(("," if index else "") + json.dumps(record))
        f.write("]")


def timed_convert(work: Path) -> tuple[float, float, float, float]:
    """`python -m components.convert` from work/raw into a fresh work/coco, its INFO lines printed;
    (wall seconds, CPU seconds, peak RSS in MiB, MiB of annotation JSON read)."""
    shutil.rmtree(work / "coco", ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "components.convert",
        "--input",
        str(work / "raw"),
        "--output",
        str(work / "coco"),
    ]
    started = time.perf_counter()
    with open(work / "convert.log", "w") as log:
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=log)
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mib = usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux
    cpu_seconds = usage.ru_utime + usage.ru_stime
    for line in (work / "convert.log").read_text().replace("\r", "\n").splitlines():
        if " INFO " in line:
            print("  " + line.split(" INFO ", 1)[1])
    size_mib = sum(f.stat().st_size for f in (work / "raw").rglob("*.json")) / 2**20
    return elapsed, cpu_seconds, peak_mib, size_mib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real set's size")
    parser.add_argument(
        "--workdir",
        help="generate here and keep it; a later run with the same workdir and "
        "scale reuses the release (default: a temporary folder, removed)",
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    rng = np.random.default_rng(2017)
    sizes = {
        split: (max(1, round(n * args.scale)), max(1, round(p * args.scale)))
        for split, (n, p) in REAL_SIZES.items()
    }
    records, people = (sum(n for n, _ in sizes.values()), sum(p for _, p in sizes.values()))
    stamp = work / "raw" / "generated.json"
    try:
        if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(sizes)):
            print(f"reusing {records} records, {people} people under {work}")
        else:
            shutil.rmtree(work / "raw", ignore_errors=True)
            shutil.rmtree(work / "pool", ignore_errors=True)
            started = time.perf_counter()
            pool = make_pool(work / "pool", rng)
            for split, (num_images, num_people) in sizes.items():
                write_split(work / "raw", split, num_images, num_people, pool, rng)
            stamp.write_text(json.dumps(sizes))
            print(
                f"generated {records} records, {people} people in {time.perf_counter() - started:.0f}s under {work}"
            )

        elapsed, cpu_seconds, peak_mib, size_mib = timed_convert(work)
        print(
            f"convert: {records} records ({people} people, {size_mib:.0f} MiB of JSON) in {elapsed:.1f}s"
        )
        print(f"records/s: {records / elapsed:.0f}  (goal >= 2000)")
        print(f"people/s: {people / elapsed:.0f}")
        # On a shared machine wall time depends on the neighbours; CPU time much less so.
        print(
            f"CPU time: {cpu_seconds:.1f}s, {records / cpu_seconds:.0f} records per CPU-second; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(f"peak memory (max RSS of the convert process): {peak_mib:.0f} MiB  (goal <= 2048)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
