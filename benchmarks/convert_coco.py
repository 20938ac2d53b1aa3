"""Benchmark: convert a COCO-format data set of COCO 2017 train's shape (goal: <= 10 min, <= 2 GB peak).

Generates the COCO 2017 layout (annotations/person_keypoints_{train,val}2017.json + train2017/,
val2017/) with the real set's counts: train 118,287 images and 262,465 person annotations in about
240 MB of JSON (segmentation polygons included, as COCO's are), val 5,000 images and 11,004
annotations. Like COCO, about half the images hold no person, 40% of the people have no labelled
joint and 1% are crowds. Images are hard links to a small pool of small JPEGs, so every record
points at its own file and the converter checks and links every one. Then runs the real CLI
(`python -m components.convert`) in a child process and prints its time, rates and peak memory.

    .venv/bin/python benchmarks/convert_coco.py [--scale 1.0] [--workdir DIR]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.convert import timed_convert  # noqa: E402
from pose.data import keypoints  # noqa: E402

# COCO 2017 person keypoints: images, annotations and images holding at least one person.
REAL_SIZES = {"train": (118_287, 262_465, 64_115), "val": (5_000, 11_004, 2_693)}
POOL_SIZE = 50
POLYGON_POINTS = 21  # 42 numbers: COCO's 240 MB is mostly polygons
WIDTH, HEIGHT = 640, 480
PROGRESS_EVERY = 20_000


def make_pool(folder: Path, rng) -> list[Path]:
    folder.mkdir(parents=True)
    pool = []
    for index in range(POOL_SIZE):
        image = cv2.GaussianBlur(
            rng.integers(0, 255, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8), (3, 3), 0
        )
        image = cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        path = folder / f"pool{index:03d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 60])
        pool.append(path)
    return pool


def write_split(root: Path, subset: str, sizes, pool, rng, num_joints: int) -> None:
    num_images, num_people, with_people = sizes
    images_dir = root / f"{subset}2017"
    images_dir.mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    holders = rng.choice(num_images, with_people, replace=False)
    owner = np.concatenate([holders, rng.choice(holders, num_people - with_people)])
    owner.sort()
    started = time.perf_counter()
    with open(root / "annotations" / f"person_keypoints_{subset}2017.json", "w") as f:
        f.write('{"info":{"description":"COCO 2017 shape, generated"},"images":[')
        for index in range(num_images):
            image_id = index + 1
            name = f"{image_id:012d}.jpg"
            os.link(pool[index % len(pool)], images_dir / name)
            f.write(
                ("," if index else "")
                + json.dumps(
                    {
                        "license": 1,
                        "file_name": name,
                        "coco_url": f"http://example.invalid/{name}",
                        "height": HEIGHT,
                        "width": WIDTH,
                        "date_captured": "2013-11-14 17:02:52",
                        "id": image_id,
                    }
                )
            )
        f.write('],"annotations":[')
        for number, index in enumerate(owner):
            x, y = float(rng.uniform(0, WIDTH - 200)), float(rng.uniform(0, HEIGHT - 200))
            w, h = float(rng.uniform(20, 200)), float(rng.uniform(20, 200))
            labelled = 0 if rng.random() < 0.4 else int(rng.integers(1, num_joints + 1))
            codes = np.zeros(num_joints, int)
            codes[rng.choice(num_joints, labelled, replace=False)] = rng.choice(
                [1, 2], labelled, p=[0.3, 0.7]
            )
            xs = np.where(codes > 0, rng.integers(int(x), int(x + w), num_joints), 0)
            ys = np.where(codes > 0, rng.integers(int(y), int(y + h), num_joints), 0)
            polygon = (
                np.round(rng.uniform([x, y], [x + w, y + h], (POLYGON_POINTS, 2)), 2)
                .ravel()
                .tolist()
            )
            annotation = {
                "segmentation": [polygon],
                "num_keypoints": labelled,
                "area": round(w * h * 0.6, 4),
                "iscrowd": int(rng.random() < 0.01),
                "keypoints": np.stack([xs, ys, codes], 1).ravel().tolist(),
                "image_id": int(index) + 1,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "category_id": 1,
                "id": number + 1,
            }
            f.write(("," if number else "") + json.dumps(annotation))
            if (number + 1) % PROGRESS_EVERY == 0:
                print(
                    f"  {subset}: generated {number + 1:,}/{num_people:,} annotations "
                    f"({(number + 1) / (time.perf_counter() - started):.0f}/s)",
                    flush=True,
                )
        category = keypoints.preset("coco").coco_category()
        f.write('],"categories":[' + json.dumps(category) + "]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO 2017's size")
    parser.add_argument(
        "--workdir",
        help="generate here and keep it; a later run with the same "
        "workdir and scale reuses the data (default: a temporary folder, removed)",
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert-coco-bench-"))
    rng = np.random.default_rng(2017)
    sizes = {
        subset: tuple(max(1, round(v * args.scale)) for v in values)
        for subset, values in REAL_SIZES.items()
    }
    num_joints = keypoints.preset("coco").num_keypoints
    images = sum(s[0] for s in sizes.values())
    people = sum(s[1] for s in sizes.values())
    stamp = work / "raw" / "generated.json"
    try:
        if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(sizes)):
            print(f"reusing {images} images, {people} annotations under {work}")
        else:
            shutil.rmtree(work / "raw", ignore_errors=True)
            shutil.rmtree(work / "pool", ignore_errors=True)
            started = time.perf_counter()
            pool = make_pool(work / "pool", rng)
            for subset, split_sizes in sizes.items():
                write_split(work / "raw", subset, split_sizes, pool, rng, num_joints)
            stamp.write_text(json.dumps(sizes))
            print(
                f"generated {images} images, {people} annotations in "
                f"{time.perf_counter() - started:.0f}s under {work}"
            )
        elapsed, cpu_seconds, peak_mib, size_mib = timed_convert(work)
        print(
            f"convert: {images} images, {people} annotations ({size_mib:.0f} MiB of JSON) in {elapsed:.1f}s "
            "(goal <= 600 s)"
        )
        print(f"annotations/s: {people / elapsed:.0f}; images/s: {images / elapsed:.0f}")
        print(
            f"CPU time: {cpu_seconds:.1f}s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(f"peak memory (max RSS of the convert process): {peak_mib:.0f} MiB  (goal <= 2048)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
