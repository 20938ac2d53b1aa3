"""Speed of the synthetic AI Challenger renderer on one core: images/s including JPEG encoding and writing.

    .venv/bin/python benchmarks/synthetic.py [--images 1000] [--seed 0]

Goal (issue 2): >= 100 images/s on one core.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2

from pose.data.synthetic import render_release


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="train images; valid adds N // 5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):  # one core, whatever the machine has
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    num_valid = args.images // 5
    with tempfile.TemporaryDirectory() as folder:
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = render_release(folder, args.images, num_valid, args.seed)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    total = args.images + num_valid
    people = summary["train_people"] + summary["valid_people"]
    print(f"images: {total} ({people} people), wall {elapsed:.2f}s, cpu {cpu:.2f}s")
    print(f"images/s (wall, one core): {total / elapsed:.1f}")
    print(f"images/s (cpu time):       {total / cpu:.1f}")
    print(f"mean JPEG size: {summary['bytes'] / total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
