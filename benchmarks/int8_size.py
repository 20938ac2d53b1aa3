"""Full int8 file size: the tflite step's variants beside a full-int8 file with per-tensor (not per-channel)
weight quantisation, each scored on the validation shards and broken down by benchmarks/tflite_size.py.

    .venv/bin/python benchmarks/int8_size.py --frozen FREEZE_DIR --train SHARDS [--train ...] \\
        --valid SHARDS [--valid ...] --output OUT_DIR

The per-tensor file is the tflite step's int8 conversion (same calibration images, in the model's contract)
with the converter's per-channel quantisation switched off, so it stores one scale and one zero point per
weight tensor instead of one per output channel.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.tflite_size import breakdown


def convert_per_tensor(frozen: Path, train_dirs: list[str], output: Path, name: str) -> Path:
    import tensorflow as tf

    from components import tflite
    from pose.models import contract, metadata

    info = metadata.read(frozen / metadata.FREEZE_FILE)
    size = info.input_size
    samples = contract.from_training_images(
        tflite._representative_images(train_dirs, size, 100), info.contract
    )
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(frozen / "frozen_graph.pb"),
        [info.input_name],
        [info.output_name],
        {info.input_name: [1, size, size, 3]},
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_disable_per_channel = True
    path = output / f"{name}.tflite"
    path.write_bytes(converter.convert())
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frozen", type=Path, required=True)
    parser.add_argument("--train", action="append", required=True)
    parser.add_argument("--valid", action="append", required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from components.evaluate import evaluate
    from components.tflite import convert_to_tflite

    models = args.output / "models"
    convert_to_tflite(
        str(args.frozen),
        str(models),
        ["fp32", "int8-dynamic", "int8"],
        representative_dirs=args.train,
    )
    from pose.models import metadata

    model = metadata.read(args.frozen / metadata.FREEZE_FILE).model
    per_tensor = convert_per_tensor(args.frozen, args.train, models, f"{model}_int8-per-tensor")
    shutil.copyfile(models / f"{model}_int8.json", per_tensor.with_suffix(".json"))
    results = evaluate(
        str(models), args.valid, str(args.output / "evaluation"), latency_runs=10, gallery_size=0
    )
    summary = {}
    for name, model in sorted(results["models"].items()):
        summary[name] = {
            "pckh": model["pckh"],
            "ap": model["ap"],
            "latency_1_thread_ms": model["latency"]["1"]["median_ms"],
            "runtime": model["latency"]["runtime"],
            **breakdown(models / f"{name}.tflite"),
        }
        print(
            f"{name}: PCKh@0.5 {100 * model['pckh']:.1f}, AP {model['ap']:.3f}, "
            f"{model['size_bytes'] / 1e3:.1f} kB, {summary[name]['latency_1_thread_ms']:.2f} ms "
            f"({summary[name]['runtime']})"
        )
        print(
            f"  constants {summary[name]['constant_data_bytes']}, quantisation {summary[name]['quantisation_bytes']}, "
            f"names {summary[name]['tensor_name_bytes']}, graph {summary[name]['graph_and_overhead_bytes']}"
        )
    (args.output / "int8_size.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
