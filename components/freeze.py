"""freeze: the trained Keras model -> a SavedModel and a frozen GraphDef with the seed's tensor names.

Takes    a train output folder (`model.keras`, `train_metadata.json`).
Does     wraps the last stage's heatmaps in a serving function whose input is `image` (float32
         [1, H, W, 3]) and whose output node is literally `Convolutional_Pose_Machine/stage_5_out`
         (CPM) or `hourglass_out_3` (hourglass), in a model contract (pose.models.contract): by default, for
         the aic keypoint set, the seed's (BGR 0..255 in, the seed's channel order out), so apps built
         for the seed's files load ours unchanged, and for any other set the training contract;
         `--contract aic` keeps the training contract (RGB / 255, the set's order). The
         conversion sits inside the graph. Then checks that Keras, the SavedModel and the frozen graph
         agree on a sample, each fed in its own contract.
Writes   `saved_model/`, `frozen_graph.pb`, `model_info.json` (see docs/ARTIFACTS.md), atomically.
"""

import json
import logging
from pathlib import Path

from components import cli
from pose.models import contract

log = logging.getLogger("freeze")

INPUT_NAME = "image"
MAX_ABS_DIFF = 1e-4
SAMPLE_SEED = 0


class FreezeError(ValueError):
    """The model folder is unusable, or the exported graphs disagree with the Keras model."""


def freeze(model_dir: str, output_dir: str, export_contract: str = contract.AUTO) -> dict:
    """Exports `model_dir`/model.keras to `output_dir` in `export_contract` (pose.models.contract: "seed",
    "aic", or "auto": the seed's for the aic keypoint set, else "aic"); returns model_info (also
    written as model_info.json)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from pose.files import outputs, steplog
    from pose.models import metadata, networks
    from pose.models.metadata import ModelMetadata

    try:
        contract.check_choice(export_contract)
    except contract.ContractError as error:
        raise FreezeError(str(error)) from error
    outputs.check_output("freeze", output_dir, [model_dir])
    with steplog.step(
        "freeze", model=model_dir, output=output_dir, contract=export_contract
    ) as wrote:
        model, train_info = _load_model(Path(model_dir))
        model_name = train_info.get("model", model.name)
        try:
            keypoint_set = metadata.keypoint_set_of(train_info, f"{model_dir}/train_metadata.json")
            export_contract = contract.resolve(export_contract, keypoint_set)
        except (metadata.MetadataError, contract.ContractError) as error:
            raise FreezeError(f"{model_dir}: {error}") from error
        try:
            output_name = networks.identity(model_name).seed_output_name
        except networks.UnknownModel as error:
            raise FreezeError(f"{model_dir}: {error}") from error
        _, height, width, channels = model.input_shape
        if height != width or channels != 3:
            raise FreezeError(
                f"{model_dir}/model.keras: input shape {model.input_shape}, expected [N, S, S, 3]"
            )
        scope, leaf = output_name.rsplit("/", 1) if "/" in output_name else ("", output_name)

        @tf.function(
            input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name=INPUT_NAME)]
        )
        def serve(image):
            heatmaps = model(
                contract.graph_input_to_training(image, export_contract), training=False
            )
            if isinstance(heatmaps, (list, tuple)):
                heatmaps = heatmaps[-1]
            heatmaps = contract.graph_output_from_training(heatmaps, export_contract, keypoint_set)
            with tf.name_scope(scope):
                heatmaps = tf.identity(tf.cast(heatmaps, tf.float32), name=leaf)
            return {output_name: heatmaps}

        concrete = serve.get_concrete_function()
        output_shape = [int(d) for d in concrete.structured_outputs[output_name].shape]
        output_size = output_shape[1]
        sample = np.random.default_rng(SAMPLE_SEED).random((1, height, width, 3), dtype=np.float32)

        from pose.files.atomic import atomic_directory

        with atomic_directory(output_dir, step="freeze") as tmp:
            module = tf.Module()
            module.model = model
            module.serve = serve
            tf.saved_model.save(
                module, str(tmp / "saved_model"), signatures={"serving_default": serve}
            )
            graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
            tf.io.write_graph(graph_def, str(tmp), "frozen_graph.pb", as_text=False)

            differences = _compare(model, tmp, output_name, sample, export_contract, keypoint_set)
            max_abs_diff = max(differences.values())
            log.info(
                "max abs difference on a sample: %s",
                ", ".join(f"{k} {v:.2e}" for k, v in differences.items()),
            )
            if not max_abs_diff <= MAX_ABS_DIFF:
                raise FreezeError(
                    f"{output_dir}: exported graphs disagree with {model_dir}/model.keras "
                    f"(max abs difference {differences}, limit {MAX_ABS_DIFF})"
                )
            info = ModelMetadata.build(
                model_name,
                height,
                output_size,
                output_shape[-1],
                export_contract,
                keypoint_set,
                input_name=INPUT_NAME,
                output_name=output_name,
                **metadata.contract_fields(export_contract, keypoint_set),
                max_abs_diff=float(max_abs_diff),
                max_abs_diff_by_format=differences,
            ).to_json()
            (tmp / metadata.FREEZE_FILE).write_text(json.dumps(info, indent=2))
        wrote.update(
            saved_model=f"{output_dir}/saved_model",
            frozen_graph="frozen_graph.pb",
            output=output_name,
            contract=export_contract,
            max_abs_diff=f"{max_abs_diff:.2e}",
        )
    return info


def _load_model(model_dir: Path):
    import keras

    from pose.models import networks

    networks.register_custom_layers()
    path = model_dir / "model.keras"
    if not path.is_file():
        raise FreezeError(f"{model_dir}: no model.keras (expected a train output folder)")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise FreezeError(
            f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not: "
            "damaged, or something else renamed)"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise FreezeError(f"{path}: cannot load the Keras model: {error}") from error
    info_path = model_dir / "train_metadata.json"
    try:
        train_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except ValueError as error:
        raise FreezeError(f"{info_path}: not valid JSON ({error})") from None
    _check_pose_model(model, path, train_info)
    return model, train_info


def _check_pose_model(model, path: Path, train_info: dict) -> None:
    """A pose model maps [N, S, S, 3] images to [N, S/stride, S/stride, K] heatmaps (the last output when it
    has one per stage); anything else (a classifier, say) would freeze into a file no app can use."""
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    shape = tuple(outputs[-1].shape) if outputs else ()
    size = model.input_shape[1] if len(model.input_shape) == 4 else None
    expected_k = train_info.get("num_keypoints")
    if len(shape) != 4 or not size or not shape[1] or shape[1] != shape[2] or size % shape[1]:
        raise FreezeError(
            f"{path}: output shape {shape} for input {model.input_shape}: not a pose model "
            "(expected [N, h, h, K] heatmaps, h dividing the input size)"
        )
    if expected_k is not None and shape[-1] != expected_k:
        raise FreezeError(
            f"{path}: {shape[-1]} heatmap channels, but train_metadata.json says "
            f"num_keypoints {expected_k}"
        )


def _compare(
    model, folder: Path, output_name: str, sample, export_contract: str, keypoint_set
) -> dict:
    """Max abs difference of the SavedModel's and the frozen graph's heatmaps against Keras on `sample`
    (RGB in [0, 1]), each fed in its own contract and compared in the keypoint set's order."""
    import numpy as np
    import tensorflow as tf

    from pose.models import contract

    keras_out = model(sample, training=False)
    keras_out = np.asarray(
        keras_out[-1] if isinstance(keras_out, (list, tuple)) else keras_out, np.float32
    )
    exported_in = contract.from_training_images(sample, export_contract)
    saved = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    saved_out = contract.to_set_order(
        saved(**{INPUT_NAME: tf.constant(exported_in)})[output_name].numpy(),
        export_contract,
        keypoint_set,
    )
    frozen_out = contract.to_set_order(
        run_frozen_graph(folder / "frozen_graph.pb", exported_in, output_name),
        export_contract,
        keypoint_set,
    )
    return {
        "saved_model": float(np.abs(saved_out - keras_out).max()),
        "frozen_graph": float(np.abs(frozen_out - keras_out).max()),
    }


def run_frozen_graph(path, images, output_name: str, input_name: str = INPUT_NAME):
    """Runs a frozen GraphDef by its node names, as a TF1 tool would."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    imported = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
    )
    function = imported.prune(
        imported.graph.get_tensor_by_name(f"{input_name}:0"),
        imported.graph.get_tensor_by_name(f"{output_name}:0"),
    )
    return function(tf.constant(images)).numpy()


def main(argv=None) -> int:
    arguments = cli.parser("freeze", __doc__)
    arguments.add_argument("--model", required=True, help="train output folder holding model.keras")
    arguments.add_argument(
        "--output",
        required=True,
        help="folder to write saved_model/, frozen_graph.pb, model_info.json",
    )
    arguments.add_argument(
        "--contract",
        default=contract.AUTO,
        choices=contract.CHOICES,
        help="the exported model's contract (pose.models.contract): seed = BGR 0..255 in and the "
        "seed's channel order out (the aic keypoint set only); aic = RGB / 255 in, the keypoint "
        "set's order out; auto (default) = seed for the aic set, else aic",
    )
    return cli.run(
        "freeze", arguments, lambda args: freeze(args.model, args.output, args.contract), argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
