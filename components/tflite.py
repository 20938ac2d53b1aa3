"""tflite: the frozen model -> LiteRT models, float32 / float16 / dynamic-range int8 / full int8.

Takes    a freeze output folder (`saved_model/`, `frozen_graph.pb`, `model_info.json`) and, for full int8,
         shard folders to draw representative images from, plus the real photographs of the repository's
         photos/ (or --representative-photos; "" for none): calibrated on rendered figures only, the int8
         model's activation ranges would not cover real pictures.
Does     converts the frozen graph (so the .tflite tensors keep the seed's names `image` and
         `Convolutional_Pose_Machine/stage_5_out`, and the freeze step's model contract: pixels in and
         channel order out, see pose.models.contract), loads each result in LiteRT and compares its heatmaps
         with the SavedModel's on the same images. Full int8 calibrates on images in the contract's pixels.
         The quantised variants (int8-dynamic, int8) are converted from a copy of the graph whose
         concatenations feeding 1x1 convolutions (the CPM stages' features + heatmaps) have their inputs'
         ranges equalised on those images, the inverse folded into the convolution: the same float
         function, and int8 heatmaps with ~20x more levels (pose.models.range_equalisation).
Writes   `<model>_<variant>.tflite` and `<model>_<variant>.json` (everything an app needs to use it, and
         the difference against the SavedModel), atomically.
"""

import json
import logging
from pathlib import Path

from components import cli

log = logging.getLogger("tflite")

VARIANTS = ("fp32", "fp16", "int8-dynamic", "int8")
# Variants with int8 weights or activations, converted from a graph whose concatenations feeding 1x1
# convolutions have their inputs' ranges equalised first (pose.models.range_equalisation).
QUANTISED = ("int8-dynamic", "int8")
NUM_COMPARISON_SAMPLES = 8
# float32 must reproduce the SavedModel; a larger gap means a broken conversion, not rounding.
FP32_MAX_ABS_DIFF = 1e-3


class TFLiteConversionError(ValueError):
    """Bad arguments or inputs for the conversion, or a float32 model that disagrees with the SavedModel."""


def convert_to_tflite(
    saved_model_dir: str,
    output_dir: str,
    variants: list[str],
    representative_dirs: list[str] | None = None,
    int8_io: bool = False,
    num_representative: int = 100,
    representative_photos: str | None = None,
) -> dict:
    """Converts the freeze output `saved_model_dir` to each variant in `output_dir`; returns
    {"model", "variants": {variant: metadata}} (metadata as in each .json)."""
    import numpy as np

    from pose import codec
    from pose.files import integrity, outputs, steplog
    from pose.files.atomic import atomic_directory
    from pose.models import contract, tflite_runtime
    from pose.models import metadata as model_metadata
    from pose.models.metadata import ModelMetadata

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise TFLiteConversionError(
            f"unknown variants {unknown or variants}; choose from {', '.join(VARIANTS)}"
        )
    if "int8" in variants and not representative_dirs:
        raise TFLiteConversionError(
            "variant int8 (full integer) needs representative data: pass shard folders "
            "(--representative)"
        )
    outputs.check_output("tflite", output_dir, [saved_model_dir, *(representative_dirs or [])])
    with steplog.step(
        "tflite",
        saved_model=saved_model_dir,
        output=output_dir,
        variants=",".join(variants),
        representative=representative_dirs,
    ) as wrote:
        folder = _freeze_folder(Path(saved_model_dir))
        info = _read_freeze_output(folder)
        model_contract = info.contract
        size = info.input_size
        if representative_dirs:
            integrity.verify_shards(representative_dirs)
            images = _representative_images(representative_dirs, size, num_representative)
            photos = _representative_photos(representative_photos, size)
            log.info(
                "representative data: %d crops from the shards, %d real photographs",
                len(images),
                len(photos),
            )
            # the photographs last: the float comparison below takes the first images, from the shards
            samples = contract.from_training_images(
                np.concatenate([images, photos]), model_contract
            )
            compared_on = f"{min(len(samples), NUM_COMPARISON_SAMPLES)} images from {', '.join(representative_dirs)}"
        else:
            samples = contract.from_training_images(
                np.random.default_rng(0).random(
                    (NUM_COMPARISON_SAMPLES, size, size, 3), dtype=np.float32
                ),
                model_contract,
            )
            compared_on = f"{NUM_COMPARISON_SAMPLES} random images (no representative data given)"
        comparison = samples[:NUM_COMPARISON_SAMPLES]
        reference = _saved_model_heatmaps(folder / "saved_model", info, comparison)

        results = {}
        with atomic_directory(output_dir, step="tflite") as tmp:
            for variant in variants:
                flatbuffer, equalised = _convert(folder, info, variant, samples, int8_io)
                name = f"{info.model}_{variant}"
                model_path = tmp / f"{name}.tflite"
                model_path.write_bytes(flatbuffer)
                interpreter = tflite_runtime.load(model_path)
                difference = np.abs(tflite_runtime.run(interpreter, comparison) - reference)
                metadata = ModelMetadata.build(
                    info.model,
                    info.input_size,
                    info.output_size,
                    info.num_keypoints,
                    model_contract["name"],
                    info.keypoint_set,
                    input_name=info.input_name,
                    output_name=info.output_name,
                    sha256=integrity.sha256(model_path),
                    **model_metadata.contract_fields(model_contract["name"], info.keypoint_set),
                    variant=variant,
                    file=model_path.name,
                    size_bytes=len(flatbuffer),
                    **tflite_runtime.io_description(interpreter),
                    keypoint_order=(
                        "keypoints names the output channels in order "
                        "(contract.channel_order); flip_pairs are 0-based channel "
                        "indices"
                    ),
                    heatmap_to_input=codec.HEATMAP_TO_INPUT,
                    max_abs_diff=float(difference.max()),
                    mean_abs_diff=float(difference.mean()),
                    compared_on=compared_on,
                    **({"range_equalisation": equalised} if variant in QUANTISED else {}),
                ).to_json()
                log.info(
                    "%s: %.1f KB, max abs diff %.4g, mean abs diff %.4g against the SavedModel",
                    name,
                    len(flatbuffer) / 1024,
                    metadata["max_abs_diff"],
                    metadata["mean_abs_diff"],
                )
                if variant == "fp32" and metadata["max_abs_diff"] > FP32_MAX_ABS_DIFF:
                    raise TFLiteConversionError(
                        f"{name}.tflite: max abs diff {metadata['max_abs_diff']:.3g} "
                        f"against {folder}/saved_model exceeds {FP32_MAX_ABS_DIFF}"
                    )
                model_metadata.path_for(model_path).write_text(json.dumps(metadata, indent=2))
                results[variant] = metadata
        wrote.update(
            {
                f"{info.model}_{v}.tflite": f"{m['size_bytes'] / 1024:.0f}KB"
                for v, m in results.items()
            }
        )
    return {"model": info.model, "variants": results}


def _freeze_folder(path: Path) -> Path:
    """The freeze output folder, given it or its saved_model/ subfolder."""
    from pose.models import metadata

    folder = (
        path.parent if (path / "saved_model.pb").is_file() and path.name == "saved_model" else path
    )
    missing = [
        name
        for name in ("saved_model", "frozen_graph.pb", metadata.FREEZE_FILE)
        if not (folder / name).exists()
    ]
    if missing:
        raise TFLiteConversionError(
            f"{path}: not a freeze output folder, missing {', '.join(missing)}"
        )
    return folder


def _read_freeze_output(folder: Path):
    """model_info.json (a pose.models.metadata.ModelMetadata), after checking that the two graph
    files parse: a damaged file is named here rather than surfacing as a protobuf DecodeError from
    deep inside the converter."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from pose.models import metadata

    path = folder / metadata.FREEZE_FILE
    try:
        values = metadata.read_json(path)
        missing = [
            key for key in ("model", "input_size", "input_name", "output_name") if key not in values
        ]
        if missing:
            raise TFLiteConversionError(f"{path}: missing {', '.join(missing)}")
        info = metadata.from_json(values, str(path))
    except metadata.MetadataError as error:
        raise TFLiteConversionError(f"{path}: not freeze's model info ({error})") from None
    for path, message in (
        (folder / "frozen_graph.pb", tf.compat.v1.GraphDef()),
        (folder / "saved_model" / "saved_model.pb", None),
    ):
        if message is None:
            from tensorflow.core.protobuf import saved_model_pb2

            message = saved_model_pb2.SavedModel()
        try:
            message.ParseFromString(path.read_bytes())
        except (DecodeError, OSError) as error:
            raise TFLiteConversionError(
                f"{path}: not a readable {type(message).__name__} protobuf ({error}); "
                "expected the freeze step's output"
            ) from None
    return info


def _representative_images(dirs: list[str], size: int, count: int):
    """Up to `count` evaluation crops [N, size, size, 3] in [0, 1] from the shard folders."""
    import numpy as np

    from pose.data import inputs

    images = []
    for batch in inputs.evaluation_dataset(dirs, size, 16):
        images.extend(np.asarray(batch["image"], dtype=np.float32))
        if len(images) >= count:
            break
    if not images:
        raise TFLiteConversionError(
            f"{', '.join(dirs)}: no examples to draw representative images from"
        )
    return np.stack(images[:count])


def _representative_photos(folder: str | None, size: int):
    """The real photographs [N, size, size, 3] RGB in [0, 1], each padded to a square as evaluate and the
    web demo feed them (pose.evaluation.photos.square_input); none when `folder` is "" or the default is missing."""
    import numpy as np

    from pose.evaluation import photos

    if folder == "" or (folder is None and not photos.DEFAULT_FOLDER.is_dir()):
        return np.zeros((0, size, size, 3), np.float32)
    pictures = []
    for path in photos.find(folder or photos.DEFAULT_FOLDER):
        try:
            bgr = photos.read_picture(path)
        except photos.PhotoError as error:
            raise TFLiteConversionError(str(error)) from None
        pictures.append(photos.square_input(bgr, size)[0][..., ::-1] / np.float32(255.0))
    return np.stack(pictures).astype(np.float32)


def _saved_model_heatmaps(path: Path, info, images):
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return np.concatenate(
        [
            serve(**{info.input_name: tf.constant(image[None])})[info.output_name].numpy()
            for image in images
        ]
    )


def _convert(
    folder: Path, info, variant: str, samples, int8_io: bool, equalise: bool = True
) -> tuple[bytes, dict]:
    """(the .tflite flatbuffer, {concatenation: {input: scale}} of the range equalisation applied).

    The quantised variants are converted from the frozen graph with its concatenations' input ranges
    equalised on `samples` (pose.models.range_equalisation; the same float function), unless
    `equalise` is False (benchmarks/int8_calibration.py's "before" variant)."""
    import tempfile

    import tensorflow as tf

    from pose.models import range_equalisation

    graph_path, equalised = folder / "frozen_graph.pb", {}
    with tempfile.TemporaryDirectory(prefix="tflite-") as scratch:
        if variant in QUANTISED and equalise:
            graph_def = tf.compat.v1.GraphDef.FromString(graph_path.read_bytes())
            graph_def, equalised = range_equalisation.equalise(graph_def, info.input_name, samples)
            if equalised:
                log.info(
                    "%s: equalised %d concatenations' input ranges before quantising (scales %s)",
                    variant,
                    len(equalised),
                    ", ".join(f"{s:.2f}" for scales in equalised.values() for s in scales.values()),
                )
                graph_path = Path(scratch) / "equalised_graph.pb"
                graph_path.write_bytes(graph_def.SerializeToString())
        return _convert_graph(graph_path, info, variant, samples, int8_io), equalised


def _convert_graph(graph_path: Path, info, variant: str, samples, int8_io: bool) -> bytes:
    import tensorflow as tf

    size = info.input_size
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(graph_path),
        [info.input_name],
        [info.output_name],
        {info.input_name: [1, size, size, 3]},
    )
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def main(argv=None) -> int:
    arguments = cli.parser("tflite", __doc__)
    arguments.add_argument(
        "--saved-model", required=True, help="freeze output folder (or its saved_model/)"
    )
    arguments.add_argument(
        "--output", required=True, help="folder to write the .tflite files and their .json"
    )
    arguments.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    arguments.add_argument(
        "--representative",
        action="append",
        default=[],
        help="shard folder for int8 calibration and the comparison (repeatable)",
    )
    arguments.add_argument("--num-representative", type=int, default=100)
    arguments.add_argument(
        "--int8-io", action="store_true", help="full int8 model with int8 input and output too"
    )
    arguments.add_argument(
        "--representative-photos",
        default=None,
        help="folder of real photographs added to the int8 calibration (default: the "
        'repository\'s photos/; "" for none)',
    )
    return cli.run(
        "tflite",
        arguments,
        lambda args: convert_to_tflite(
            args.saved_model,
            args.output,
            [v.strip() for v in args.variants.split(",")],
            representative_dirs=args.representative or None,
            int8_io=args.int8_io,
            num_representative=args.num_representative,
            representative_photos=args.representative_photos,
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
