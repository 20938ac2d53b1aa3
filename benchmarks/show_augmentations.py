"""Writes a PNG grid of augmented training samples with their heatmaps overlaid, to check by eye that
heatmaps sit on the joints and that flips swap colours (right joints warm, left joints cool).

    python benchmarks/show_augmentations.py --data SHARDS [--data SHARDS ...] --output grid.png
"""

import argparse
import logging

import cv2

from pose.data import inputs
from pose.evaluation.visualize import sample_grid
from pose.files import steplog


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", action="append", required=True, help="a shard folder (repeat for more)"
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=192)
    parser.add_argument("--output-stride", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-augment", action="store_true", help="show the evaluation centre crops instead"
    )
    args = parser.parse_args(argv)
    steplog.setup()
    with steplog.step("show_augmentations", data=args.data, count=args.count) as wrote:
        dataset = inputs.training_dataset(
            args.data,
            input_size=args.input_size,
            output_stride=args.output_stride,
            batch_size=args.count,
            augment=not args.no_augment,
            seed=args.seed,
        )
        images, targets = next(iter(dataset))
        grid = sample_grid(images.numpy(), targets["heatmaps"].numpy(), columns=args.columns)
        if not cv2.imwrite(args.output, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{args.output}: could not write the PNG")
        logging.getLogger("show_augmentations").info(
            "joints with weight 0 (not drawn): %d of %d",
            int((targets["weights"].numpy() == 0).sum()),
            targets["weights"].numpy().size,
        )
        wrote.update(output=args.output, size=f"{grid.shape[1]}x{grid.shape[0]}")


if __name__ == "__main__":
    main()
