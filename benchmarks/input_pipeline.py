"""Images per second of the full training input pipeline (pose.data.inputs.training_dataset: read, shuffle,
parse, decode, affine warp, flip, colour jitter, heatmaps, batch) with its default augmentation and
with rotation drawn for every example and for none, against bare JPEG decoding of the
same shards (read, parse, tf.io.decode_jpeg, with the same parallelism), in one run.

    python benchmarks/input_pipeline.py --data SHARDS [--data SHARDS ...] [--images 3000]
"""

import argparse
import os
import time

import tensorflow as tf

from pose.data import inputs, records, shard_index


def bare_decode(files: list[str], batch_size: int) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices(files)
        .interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .repeat()
        .map(
            lambda s: tf.io.decode_jpeg(records.parse(s)["image/encoded"], channels=3),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .map(
            tf.shape
        )  # decoded crops differ in size: batch their shapes so the work is not skipped
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def measure(
    dataset: tf.data.Dataset, batch_size: int, images: int, warmup_batches: int = 5
) -> tuple[float, float]:
    """(images per second of wall time, CPU milliseconds per image over all of this process's threads).
    On a shared machine the CPU time per image is the steadier figure."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, images // batch_size)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batches * batch_size / wall, 1000.0 * cpu / (batches * batch_size)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", action="append", required=True, help="a shard folder (repeat for more)"
    )
    parser.add_argument("--images", type=int, default=3000, help="images timed per measurement")
    parser.add_argument("--input-size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating measurements of each; the best counts"
    )
    args = parser.parse_args(argv)
    index = shard_index.read(args.data)
    print(
        f"{len(index['files'])} shards, {index['num_examples']} examples, crop size {index['crop_size']}, "
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}"
    )
    full = f"full pipeline {args.input_size}x{args.input_size}"
    datasets = {
        "bare decode_jpeg": bare_decode(index["files"], args.batch_size),
        full: inputs.training_dataset(
            args.data, input_size=args.input_size, batch_size=args.batch_size
        ),
        f"{full}, seeded (reproducible order)": inputs.training_dataset(
            args.data, input_size=args.input_size, batch_size=args.batch_size, seed=0
        ),
        f"{full}, every example rotated": inputs.training_dataset(
            args.data,
            input_size=args.input_size,
            batch_size=args.batch_size,
            augmentation={"rotation_probability": 1.0},
        ),
        f"{full}, no example rotated": inputs.training_dataset(
            args.data,
            input_size=args.input_size,
            batch_size=args.batch_size,
            augmentation={"rotation_probability": 0.0},
        ),
    }
    runs = {name: [] for name in datasets}
    for _ in range(args.repeats):
        for name, dataset in datasets.items():
            runs[name].append(measure(dataset, args.batch_size, args.images))
    best = {}
    for name, results in runs.items():
        rate, cpu = max(r[0] for r in results), min(r[1] for r in results)
        best[name] = (rate, cpu)
        print(
            f"{name:48s} {rate:8.1f} images/s  {cpu:6.2f} CPU ms/image  "
            f"(runs: {', '.join(f'{r:.0f}/s {c:.2f}ms' for r, c in results)})"
        )
    (decode, decode_cpu), (pipeline, pipeline_cpu) = best["bare decode_jpeg"], best[full]
    print(
        f"full / bare: {pipeline / decode:.0%} of the images/s, {decode_cpu / pipeline_cpu:.0%} by CPU time per image"
    )


if __name__ == "__main__":
    main()
