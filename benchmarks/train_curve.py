"""Training curve: steps, loss and PCKh@0.5 against wall time for a config, on the synthetic set.

Renders (or reuses) `synthetic://N`, converts and shards it through the real steps, trains with the
config, and prints the curve from train_metadata.json as a Markdown table for BENCHMARKS.md.

    .venv/bin/python benchmarks/train_curve.py --config experiments/local.yaml --source synthetic://2000 \
        --work /tmp/pose-curve
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

from pose.files import steplog


def prepare_shards(source: str, work: Path) -> tuple[Path, Path]:
    """raw -> coco -> train and valid shards under `work`, each step skipped when its output exists."""
    from components.convert import convert
    from components.download import download
    from components.shard import shard

    raw, coco, train_dir, valid_dir = work / "raw", work / "coco", work / "train", work / "valid"
    if not raw.exists():
        download(source, str(raw))
    if not coco.exists():
        convert(str(raw), str(coco))
    if not train_dir.exists():
        shard(str(coco), str(train_dir), split="train", num_shards=4)
    if not valid_dir.exists():
        shard(str(coco), str(valid_dir), split="valid", num_shards=1)
    return train_dir, valid_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="experiments/local.yaml")
    parser.add_argument("--source", default="synthetic://2000")
    parser.add_argument(
        "--work", default="/tmp/pose-curve", help="data and model folder (data is reused)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    args = parser.parse_args(argv)
    steplog.setup()
    from components.train import train
    from pose.training.config import parse_overrides

    work = Path(args.work) / args.source.replace("://", "_").replace("?", "_")
    train_dir, valid_dir = prepare_shards(args.source, work)
    model_dir = work / f"model-{Path(args.config).stem}-{int(time.time())}"
    metadata = train(
        args.config,
        [str(train_dir)],
        str(model_dir),
        valid_dirs=[str(valid_dir)],
        overrides=parse_overrides(args.set),
    )
    print(
        f"\nconfig {args.config} {' '.join(args.set)} on {args.source}, {os.cpu_count()} CPUs: "
        f"{metadata['steps']} steps, {metadata['epochs']} epochs, {metadata['train_seconds']:.0f} s, "
        f"{metadata['images_per_second']:.1f} images/s, final PCKh@0.5 {metadata['pckh']:.3f}\n"
    )
    print("| step | wall s | loss | PCKh@0.5 |\n| ---: | ---: | ---: | ---: |")
    seconds = {
        entry["step"]: entry.get("seconds") for entry in metadata["history"] if "seconds" in entry
    }
    for entry in metadata["history"]:
        pckh = f"{entry['pckh']:.3f}" if "pckh" in entry else ""
        loss = f"{entry['loss']:.1f}" if "loss" in entry else ""
        print(f"| {entry['step']} | {seconds.get(entry['step'], '')} | {loss} | {pckh} |")
    logging.getLogger("train_curve").info("model and logs in %s", model_dir)
    (model_dir / "curve.json").write_text(json.dumps(metadata, indent=1))


if __name__ == "__main__":
    main()
