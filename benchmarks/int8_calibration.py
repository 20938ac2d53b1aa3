"""Full int8 against float32 on the validation split: which calibration closes the gap (issue 22's
"int8 within 1 point of fp32"), measured on an already-trained model instead of a new main job.

    .venv/bin/python benchmarks/int8_calibration.py --frozen FREEZE_DIR --train SHARDS [--train ...] \\
        --valid SHARDS [--valid ...] --output OUT_DIR [--only 2,3,4] [--no-flip-test]

FREEZE_DIR is a freeze step's output (e.g. `runs/<run>/freeze-op/frozen` of `python3 dev.py run`), the
shards the shard step's train and valid outputs of the same run. Each variant is one conversion of the
frozen graph (the tflite step's own `_convert` where it is the tflite step's settings), scored as evaluate
scores (LiteRT, each model in its contract, flip test, PCKh@0.5 and OKS AP) with both heatmap
refinements (DARK, evaluate's default, and quarter-offset, the web demo's), and on the real photographs
(agreement with the seed's CPM, pose.evaluation.photos). One table is printed and written to
OUT_DIR/int8_calibration.json. Variants that are not full int8 say so in their name.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name -> (training crops, real photographs added, converter setting); "fp32" is the reference. The crops
# are evaluation crops of the training shards (the validation split's distribution: same renderer,
# same crop and scale), as the tflite step draws them. int16x8 (16-bit activations) was left out: it is
# not int8, and XNNPACK does not run it.
VARIANTS = {
    "fp32": (0, False, "fp32"),
    "int8 (the tflite step: 100 crops + photos)": (100, True, "int8"),
    "int8, 300 crops + photos": (300, True, "int8"),
    "int8 + float heatmap conv (not full int8)": (100, True, "float-last"),
    "int8, 100 crops, no photos": (100, False, "int8"),
    # (its calibration images only measure the ranges that pose.models.range_equalisation equalises)
    "int8-dynamic (float activations)": (100, True, "int8-dynamic"),
    "int16x8 (16-bit activations, not int8)": (100, True, "int16x8"),
    # the range equalisation of the CPM stages' concatenations (pose.models.range_equalisation), which
    # the tflite step applies to its quantised variants: without it (before), and the heatmaps
    # stretched to other fractions of the features' range than its TARGET_FRACTION
    "int8 without range equalisation (before)": (100, True, "int8-unequalised"),
    "int8-dynamic without range equalisation (before)": (0, False, "int8-dynamic-unequalised"),
    "int8, heatmaps stretched to 0.25 of the features' range": (100, True, "int8-fraction-0.25"),
    "int8, heatmaps stretched to 1 x the features' range": (100, True, "int8-fraction-1"),
    "int8, heatmaps stretched to 2 x the features' range": (100, True, "int8-fraction-2"),
}


def convert(frozen: Path, info, setting: str, samples):
    import tensorflow as tf

    from components import tflite

    if setting in ("fp32", "int8", "int8-dynamic"):
        return tflite._convert(frozen, info, setting, samples, int8_io=False)[0]
    if setting.endswith("-unequalised"):
        variant = setting.removesuffix("-unequalised")
        return tflite._convert(frozen, info, variant, samples, int8_io=False, equalise=False)[0]
    if setting.startswith("int8-fraction-"):
        return convert_with_fraction(
            frozen, info, samples, float(setting.removeprefix("int8-fraction-"))
        )
    size = info.input_size
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(frozen / "frozen_graph.pb"),
        [info.input_name],
        [info.output_name],
        {info.input_name: [1, size, size, 3]},
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in samples)
    if setting == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        return converter.convert()
    if setting == "float-last":
        # the heatmap head (the last convolution, the resize and the channel gather) left in float
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([image[None]] for image in samples[:8]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=heatmap_head_names(frozen, info, samples),
                # the gather's and resize's names change in quantisation; they occur once, in the head
                denylisted_ops=["RESIZE_BILINEAR", "GATHER"],
            ),
        )
        return debugger.get_nondebug_quantized_model()
    raise ValueError(setting)


def convert_with_fraction(frozen: Path, info, samples, fraction: float) -> bytes:
    """Full int8 with each narrow input stretched to `fraction` of its concatenation's widest input's
    range (the tflite step: range_equalisation.TARGET_FRACTION)."""
    import tempfile

    import tensorflow as tf

    from components import tflite
    from pose.models import range_equalisation

    graph_def = tf.compat.v1.GraphDef.FromString((frozen / "frozen_graph.pb").read_bytes())
    found = range_equalisation.junctions(graph_def)
    tensors = sorted({name for junction in found for name in junction.inputs})
    ranges, channels = range_equalisation.measure_ranges(
        graph_def, info.input_name, samples, tensors
    )
    for junction in found:
        scales = range_equalisation.choose_scales(ranges, junction, fraction)
        graph_def = range_equalisation.fold(graph_def, junction, scales, channels)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "frozen_graph.pb"
        path.write_bytes(graph_def.SerializeToString())
        return tflite._convert_graph(path, info, "int8", samples, int8_io=False)


def heatmap_head_names(frozen: Path, info, samples) -> list[str]:
    """The output tensor names of the full int8 model's last convolution and the ops after it (the
    seed contract's resize and channel gather), the nodes the float-head variant leaves in float."""
    from ai_edge_litert.interpreter import Interpreter

    from components import tflite

    interpreter = Interpreter(
        model_content=tflite._convert(frozen, info, "int8", samples[:2], False)[0]
    )
    names = {tensor["index"]: tensor["name"] for tensor in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DEQUANTIZE"]
    last_conv = max(i for i, op in enumerate(ops) if op["op_name"] == "CONV_2D")
    return [names[index] for op in ops[last_conv:] for index in op["outputs"]]


def write_model(folder: Path, name: str, flatbuffer: bytes, template: dict, setting: str) -> Path:
    """The .tflite and a .json beside it (the tflite step's fp32 .json with this file's identity), so
    that evaluate.open_model reads it as it reads the tflite step's files."""
    from pose.files import integrity
    from pose.models import metadata, tflite_runtime

    path = folder / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    described = tflite_runtime.io_description(tflite_runtime.load(path))
    claims = {
        **template,
        **described,
        "variant": setting,
        "file": path.name,
        "size_bytes": len(flatbuffer),
        "sha256": integrity.sha256(path),
    }
    metadata.path_for(path).write_text(json.dumps(claims, indent=2))
    return path


def score(models: dict, valid: list[str], flip: bool) -> dict:
    """{name: {refine: {pckh, ap}}} over the validation people, decoding each model's heatmaps twice."""
    import numpy as np

    from components import evaluate
    from pose import codec
    from pose.data import inputs

    refines = ("dark", "quarter")
    kept = {name: {r: {"keypoints": [], "scores": []} for r in refines} for name in models}
    truth = {key: [] for key in ("keypoints", "visibility", "bbox", "image_id")}
    size = next(iter(models.values()))["input_size"]
    for batch in inputs.evaluation_dataset(valid, size, evaluate.BATCH_SIZE):
        batch = {key: value.numpy() for key, value in batch.items()}
        truth["keypoints"].append(batch["original_keypoints"])
        for key in ("visibility", "bbox", "image_id"):
            truth[key].append(batch[key])
        for name, model in models.items():

            def predict(images, model=model):
                return evaluate.run_in_contract(model, images)

            heatmaps = (
                codec.flip_test(predict, batch["image"], model["keypoint_set"].flip_index)
                if flip
                else predict(batch["image"])
            )
            for refine in refines:
                decoder = codec.HeatmapCodec.for_heatmaps(
                    size, model["heatmap_size"], refine=refine
                )
                in_input, scores = decoder.decode_to_input(heatmaps)
                kept[name][refine]["keypoints"].append(
                    evaluate.input_to_original(in_input, batch["to_original"])
                )
                kept[name][refine]["scores"].append(scores)
    truth = {key: np.concatenate(value) for key, value in truth.items()}
    return {
        name: {
            refine: evaluate._accuracy(
                {k: np.concatenate(v) for k, v in found.items()},
                truth,
                models[name]["keypoint_set"],
                models[name]["keypoint_set"],
            )
            for refine, found in by_refine.items()
        }
        for name, by_refine in kept.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frozen", type=Path, required=True)
    parser.add_argument("--train", action="append", required=True)
    parser.add_argument("--valid", action="append", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--only", default="", help="comma-separated variant numbers (1-based; fp32 is always made)"
    )
    parser.add_argument("--no-flip-test", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from components import evaluate, tflite
    from pose.evaluation import photos
    from pose.models import contract, metadata, networks

    frozen = tflite._freeze_folder(args.frozen)
    info = tflite._read_freeze_output(frozen)
    chosen = list(VARIANTS)
    if args.only:
        chosen = ["fp32"] + [list(VARIANTS)[int(i) - 1] for i in args.only.split(",") if int(i) > 1]
    folder = args.output / "models"
    folder.mkdir(parents=True, exist_ok=True)
    crops = tflite._representative_images(
        args.train, info.input_size, max(VARIANTS[name][0] for name in chosen) or 1
    )
    pictures = tflite._representative_photos(None, info.input_size)
    models, made = {}, {}
    template = None
    for index, name in enumerate(chosen):
        count, with_photos, setting = VARIANTS[name]
        images = np.concatenate([crops[:count], pictures if with_photos else pictures[:0]])
        samples = contract.from_training_images(images, info.contract)
        started = time.perf_counter()
        flatbuffer = convert(frozen, info, setting, samples)
        seconds = time.perf_counter() - started
        file_name = f"{info.model}_probe{index}"
        if template is None:  # fp32 comes first: its .json describes the model for the others
            from pose.models.metadata import ModelMetadata

            template = ModelMetadata.build(
                info.model,
                info.input_size,
                info.output_size,
                info.num_keypoints,
                info.contract["name"],
                info.keypoint_set,
                input_name=info.input_name,
                output_name=info.output_name,
                **metadata.contract_fields(info.contract["name"], info.keypoint_set),
            ).to_json()
        path = write_model(folder, file_name, flatbuffer, template, setting)
        models[name] = evaluate.open_model(path)
        made[name] = {
            "file": path.name,
            "calibration": f"{count} crops"
            + (f" + {len(pictures)} photographs" if with_photos else ""),
            "kB": len(flatbuffer) / 1024,
            "convert_s": seconds,
        }
        print(f"converted {name}: {made[name]['kB']:.0f} kB in {seconds:.1f}s", flush=True)

    started = time.perf_counter()
    accuracy = score(models, args.valid, not args.no_flip_test)
    print(f"scored {len(models)} models in {time.perf_counter() - started:.0f}s", flush=True)
    anchors = evaluate.resolve_anchors_dir(None)
    reference = networks.identity("mv2_cpm").seed_release
    seed = evaluate.open_model(anchors / f"{reference}.tflite")
    section, _ = photos.evaluate(models, reference, seed, photos.DEFAULT_FOLDER, None)

    fp32 = accuracy["fp32"]["dark"]["pckh"]
    print(
        "| variant | calibration | kB | PCKh@0.5 DARK | vs fp32 | PCKh@0.5 quarter | OKS AP "
        "| photographs: agreement / found joints |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in models:
        dark, quarter = accuracy[name]["dark"], accuracy[name]["quarter"]
        made[name].update(
            pckh_dark=dark["pckh"],
            pckh_quarter=quarter["pckh"],
            ap_dark=dark["ap"],
            agreement=section["agreement"][name],
            agreement_found=section["agreement_found"][name],
        )
        print(
            f"| {name} | {made[name]['calibration'] if name != 'fp32' else '-'} "
            f"| {made[name]['kB']:.0f} | {100 * dark['pckh']:.2f} "
            f"| {100 * (dark['pckh'] - fp32):+.2f} | {100 * quarter['pckh']:.2f} "
            f"| {dark['ap']:.3f} | {section['agreement'][name]:.3f} / "
            f"{section['agreement_found'][name]:.3f} |"
        )
    (args.output / "int8_calibration.json").write_text(json.dumps(made, indent=2))


if __name__ == "__main__":
    main()
