"""What TensorFlow's op determinism costs train: the same short run with it off, then on, in one
process (it cannot be switched off again once on: pose/training/reproducibility.py), with steps/s of
each (train's own rate, the first step's tracing left out) and their ratio, and whether the two runs
end with the same weights. BENCHMARKS.md, "Reproducible training".

    .venv/bin/python benchmarks/determinism.py --config experiments/local_scratch.yaml --steps 150 \
        --source synthetic://200 --work /tmp/pose-determinism

A warm-up run of a few steps goes first, so that what a process pays once (the input pipeline's XLA
compilation, TensorFlow's thread pools) is not charged to the first timed run.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.train_curve import prepare_shards
from pose.files import steplog


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="experiments/local_scratch.yaml")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--source", default="synthetic://200")
    parser.add_argument("--work", default="/tmp/pose-determinism")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    args = parser.parse_args(argv)
    steplog.setup()
    logging.getLogger("train").setLevel(logging.WARNING)
    import keras
    import numpy as np

    from components.train import train
    from pose.training.config import parse_overrides

    work = Path(args.work) / args.source.replace("://", "_").replace("?", "_")
    train_dir, _ = prepare_shards(args.source, work)
    stamp = int(time.time())
    common = {
        **parse_overrides(args.set),
        "max_minutes": None,
        "eval_every": 0,
        "checkpoint_every": 10**6,
        "summary_every": 10**6,
        "pred_image_on_tensorboard": False,
    }

    def run(name: str, steps: int, deterministic_ops: bool) -> dict:
        output = work / f"model-{name}-{stamp}"
        overrides = {**common, "max_steps": steps, "deterministic_ops": deterministic_ops}
        metadata = train(args.config, [str(train_dir)], str(output), overrides=overrides)
        metadata["output"] = output
        return metadata

    run("warm-up", 5, deterministic_ops=False)
    off = run("off", args.steps, deterministic_ops=False)
    on = run("on", args.steps, deterministic_ops=True)
    weights = [
        keras.models.load_model(metadata["output"] / "model.keras", compile=False).get_weights()
        for metadata in (off, on)
    ]
    same = all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    rate = {
        name: metadata["images_per_second"] / metadata["global_batch_size"]
        for name, metadata in (("off", off), ("on", on))
    }
    print(f"config {args.config}, {args.steps} steps, global batch {off['global_batch_size']}")
    print("| op determinism | steps/s | final loss |")
    print("| --- | --- | --- |")
    for name, metadata in (("off", off), ("on", on)):
        print(f"| {name} | {rate[name]:.2f} | {metadata['final_loss']:.4f} |")
    print(f"ratio on / off: {rate['on'] / rate['off']:.3f}; same weights: {same}")


if __name__ == "__main__":
    main()
