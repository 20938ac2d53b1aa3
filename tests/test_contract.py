"""The model contract: exported models take the seed's pixels and give the seed's channel order by default,
the Keras model keeps the training contract, and fed the same photograph each in its own contract they agree."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.freeze import FreezeError, freeze, run_frozen_graph
from components.tflite import VARIANTS, convert_to_tflite
from pose.data import keypoints
from pose.models import contract, tflite_runtime
from tests.tiny_models import build_tiny_pose_model, save_as_train_output

AIC = keypoints.preset("aic")

PHOTO = Path(__file__).resolve().parent.parent / "photos" / "astronaut.jpg"
SIZE = 64
# Largest max abs heatmap difference against Keras per variant (the tiny model's heatmaps are in [0, 1]).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8-dynamic": 0.25, "int8": 0.25}


def photo_crop(size: int) -> np.ndarray:
    """The fixture photograph as cv2 reads it (uint8 BGR), resized to size x size, batch of one."""
    image = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    assert image is not None, PHOTO
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[None]


def test_seed_contract_names_the_seed_order_and_pixels():
    seed = contract.describe("seed")
    assert seed["pixels"] == "bgr_0_255"
    assert seed["channel_order"][:3] == ["head_top", "neck", "right_shoulder"]
    assert seed["channel_order"][-1] == "left_ankle"
    # AIC's 1-based indices 13, 14, 1, ..., 12, as the seed's README lists its output
    assert [AIC.names.index(name) + 1 for name in seed["channel_order"]] == [
        13,
        14,
        *range(1, 13),
    ]
    assert contract.describe("aic")["channel_order"] == list(AIC.names)
    assert contract.flip_pairs("aic", AIC) == [list(pair) for pair in AIC.swap_pairs]
    assert [2, 5] in contract.flip_pairs(
        "seed", AIC
    )  # right and left shoulder, two places on in the seed's order


def test_pixels_and_channels_convert_both_ways():
    crop = photo_crop(8)
    seed_in = contract.model_input(crop, "seed")
    aic_in = contract.model_input(crop, "aic")
    assert seed_in.dtype == np.float32 and seed_in.max() > 1.0
    np.testing.assert_array_equal(seed_in, crop.astype(np.float32))
    np.testing.assert_allclose(aic_in, crop[..., ::-1] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(contract.from_training_images(aic_in, "seed"), seed_in, rtol=1e-6)
    aic_heatmaps = np.arange(2 * 14, dtype=np.float32).reshape(1, 2, 14)
    seed_heatmaps = aic_heatmaps[..., list(AIC.seed_order)]
    np.testing.assert_array_equal(contract.to_set_order(seed_heatmaps, "seed", AIC), aic_heatmaps)
    np.testing.assert_array_equal(
        contract.to_set_order(aic_heatmaps, {"name": "aic"}, AIC), aic_heatmaps
    )


def test_metadata_without_contract_is_refused_by_name():
    with pytest.raises(contract.ContractError, match='old.json has no "contract"'):
        contract.from_metadata({"input_size": 192}, "old.json")
    assert contract.from_metadata({"contract": contract.describe("seed")})["name"] == "seed"
    with pytest.raises(contract.ContractError, match="not one of"):
        contract.from_metadata({"contract": {"name": "rgb"}}, "bad.json")
    with pytest.raises(contract.ContractError, match="channel_order"):
        contract.from_metadata(
            {"contract": {**contract.describe("seed"), "channel_order": list(AIC.names)}}
        )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, train_shards):
    """A tiny model exported in the default (seed) contract: freeze, then all four LiteRT variants."""
    folder = tmp_path_factory.mktemp("contract")
    model = build_tiny_pose_model(SIZE)
    save_as_train_output(model, folder / "model")
    info = freeze(str(folder / "model"), str(folder / "frozen"))
    convert_to_tflite(
        str(folder / "frozen"),
        str(folder / "tflite"),
        list(VARIANTS),
        representative_dirs=[str(train_shards)],
        num_representative=16,
    )
    return model, folder, info


def test_exports_and_keras_agree_each_in_its_own_contract(exported):
    import tensorflow as tf

    model, folder, info = exported
    assert info["contract"] == contract.describe("seed")
    assert info["keypoints"] == contract.describe("seed")["channel_order"]
    crop = photo_crop(SIZE)
    keras_aic = model(contract.model_input(crop, "aic"), training=False)[-1].numpy()
    seed_in = contract.model_input(crop, "seed")
    saved = tf.saved_model.load(str(folder / "frozen" / "saved_model")).signatures[
        "serving_default"
    ]
    saved_out = saved(image=tf.constant(seed_in))[info["output_name"]].numpy()
    frozen_out = run_frozen_graph(
        folder / "frozen" / "frozen_graph.pb", seed_in, info["output_name"]
    )
    for exported_out in (saved_out, frozen_out):
        # in the seed's order the first channel is the head top, AIC's 13th
        np.testing.assert_allclose(
            exported_out[..., 0], keras_aic[..., AIC.index("head_top")], atol=1e-4
        )
        np.testing.assert_allclose(
            contract.to_set_order(exported_out, "seed", AIC), keras_aic, atol=1e-4
        )
    # fed the training contract's pixels instead, the export gives something else
    wrong = saved(image=tf.constant(contract.model_input(crop, "aic")))[info["output_name"]].numpy()
    assert np.abs(contract.to_set_order(wrong, "seed", AIC) - keras_aic).max() > 1e-3

    for variant in VARIANTS:
        path = folder / "tflite" / f"{info['model']}_{variant}.tflite"
        metadata = json.loads(path.with_suffix(".json").read_text())
        assert metadata["contract"] == contract.describe("seed"), variant
        assert metadata["keypoints"] == metadata["contract"]["channel_order"]
        interpreter = tflite_runtime.load(path)
        heatmaps = tflite_runtime.run(interpreter, contract.model_input(crop, metadata["contract"]))
        difference = np.abs(
            contract.to_set_order(heatmaps, metadata["contract"], AIC) - keras_aic
        ).max()
        assert difference <= TOLERANCE[variant], (variant, difference)


def test_aic_contract_is_an_option(tmp_path):
    model = build_tiny_pose_model(SIZE)
    save_as_train_output(model, tmp_path / "model")
    info = freeze(str(tmp_path / "model"), str(tmp_path / "frozen"), export_contract="aic")
    assert info["contract"] == contract.describe("aic")
    crop = photo_crop(SIZE)
    aic_in = contract.model_input(crop, "aic")
    frozen_out = run_frozen_graph(
        tmp_path / "frozen" / "frozen_graph.pb", aic_in, info["output_name"]
    )
    np.testing.assert_allclose(frozen_out, model(aic_in, training=False)[-1].numpy(), atol=1e-4)
    with pytest.raises(FreezeError, match="unknown model contract 'bgr'"):
        freeze(str(tmp_path / "model"), str(tmp_path / "other"), export_contract="bgr")
    assert not (tmp_path / "other").exists()
