"""tflite: every variant loads in LiteRT, keeps the seed's tensor names and is close to the SavedModel."""

import json

import numpy as np
import pytest

from components.freeze import freeze
from components.tflite import QUANTISED, VARIANTS, TFLiteConversionError, convert_to_tflite
from pose.models import contract, tflite_runtime
from tests.tiny_models import build_tiny_pose_model, save_as_train_output

# Largest max / mean abs heatmap difference against the SavedModel (heatmap peaks are ~1).
TOLERANCE = {
    "fp32": (1e-4, 1e-5),
    "fp16": (2e-2, 2e-3),
    "int8-dynamic": (0.25, 0.03),
    "int8": (0.25, 0.03),
}
APP_KEYS = {
    "input_size",
    "output_size",
    "output_stride",
    "normalisation",
    "keypoints",
    "flip_pairs",
    "input",
    "output",
    "input_name",
    "output_name",
    "max_abs_diff",
    "mean_abs_diff",
    "variant",
    "size_bytes",
    "contract",
}


def _sample_images(shard_dir, size, count=4):
    from pose.data import inputs

    batch = next(iter(inputs.evaluation_dataset([str(shard_dir)], size, count)))
    return batch["image"].numpy()


def _saved_model_heatmaps(frozen_dir, images, output_name):
    import tensorflow as tf

    serve = tf.saved_model.load(str(frozen_dir / "saved_model")).signatures["serving_default"]
    return np.concatenate(
        [serve(image=tf.constant(image[None]))[output_name].numpy() for image in images]
    )


def test_every_variant_loads_in_litert_and_is_close_to_the_saved_model(
    tflite_models, frozen_model, valid_shards
):
    info = json.loads((frozen_model / "model_info.json").read_text())
    images = contract.from_training_images(
        _sample_images(valid_shards, info["input_size"]), info["contract"]
    )
    reference = _saved_model_heatmaps(frozen_model, images, info["output_name"])
    for variant in VARIANTS:
        path = tflite_models / f"{info['model']}_{variant}.tflite"
        metadata = json.loads(path.with_suffix(".json").read_text())
        assert set(metadata) >= APP_KEYS, f"{path.name}: metadata lacks {APP_KEYS - set(metadata)}"
        interpreter = tflite_runtime.load(path)
        details = tflite_runtime.io_description(interpreter)
        assert (
            details["input"]["name"] == "image" and details["output"]["name"] == info["output_name"]
        )
        assert details["input"]["shape"] == [1, info["input_size"], info["input_size"], 3]
        assert metadata["size_bytes"] == path.stat().st_size
        difference = np.abs(tflite_runtime.run(interpreter, images) - reference)
        max_limit, mean_limit = TOLERANCE[variant]
        assert difference.max() <= max_limit and difference.mean() <= mean_limit, (
            variant,
            difference.max(),
        )
        assert metadata["max_abs_diff"] <= max_limit
        # the quantised variants record their graph's range equalisation (test_range_equalisation.py)
        equalised = metadata.get("range_equalisation")
        assert isinstance(equalised, dict) if variant in QUANTISED else equalised is None
    sizes = {v: (tflite_models / f"{info['model']}_{v}.tflite").stat().st_size for v in VARIANTS}
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp16"]


@pytest.fixture(scope="module")
def tiny_frozen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    save_as_train_output(build_tiny_pose_model(64), folder / "model")
    freeze(str(folder / "model"), str(folder / "frozen"))
    return folder / "frozen"


def test_int8_input_and_output_option(tiny_frozen, train_shards, tmp_path):
    result = convert_to_tflite(
        str(tiny_frozen),
        str(tmp_path / "out"),
        ["int8"],
        representative_dirs=[str(train_shards)],
        int8_io=True,
        num_representative=16,
    )
    metadata = result["variants"]["int8"]
    assert metadata["input"]["dtype"] == "int8" and metadata["output"]["dtype"] == "int8"
    # the seed contract's inputs are BGR 0..255, calibrated as such: one int8 step is about one pixel level
    assert 0.9 < metadata["input"]["quantization"]["scale"] < 1.1
    interpreter = tflite_runtime.load(tmp_path / "out" / "mv2_cpm_int8.tflite")
    images = contract.from_training_images(_sample_images(train_shards, 64), metadata["contract"])
    reference = _saved_model_heatmaps(tiny_frozen, images, metadata["output_name"])
    assert np.abs(tflite_runtime.run(interpreter, images) - reference).mean() < 0.03


def test_bad_requests_are_clear_errors(tiny_frozen, tmp_path):
    with pytest.raises(TFLiteConversionError, match="needs representative data"):
        convert_to_tflite(str(tiny_frozen), str(tmp_path / "a"), ["fp32", "int8"])
    with pytest.raises(TFLiteConversionError, match="unknown variants"):
        convert_to_tflite(str(tiny_frozen), str(tmp_path / "b"), ["int4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TFLiteConversionError, match="not a freeze output folder"):
        convert_to_tflite(str(tmp_path / "empty"), str(tmp_path / "c"), ["fp32"])
    assert not any((tmp_path / name).exists() for name in "abc")
