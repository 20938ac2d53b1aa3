"""Warm start (init_from): the seed's released weights load into the matching network exactly, train with
max_steps 0 writes them untouched, and freeze + tflite of that model reproduce the released file on a real
photograph; mismatched or foreign files are clear errors naming the first layer that does not fit."""

import json

import numpy as np
import pytest

from pose.models import contract, tflite_runtime, warm_start
from pose.models.networks import build_model
from pose.training.config import ConfigError, load_config
from tests.conftest import ANCHORS
from tests.test_contract import photo_crop
from tests.tiny_models import build_tiny_pose_model, save_as_train_output

RELEASED = {
    "mv2_cpm": ("experiments/mv2_cpm_192_tiny.yaml", "pefm-cpm-192.tflite"),
    "mv2_hourglass": ("experiments/mv2_hourglass_192.yaml", "pefm-hourglass-192.tflite"),
}


def _anchor(name: str):
    path = ANCHORS / RELEASED[name][1]
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def _network(config_path: str, **overrides):
    config = load_config(config_path, overrides).resolved()
    return build_model(
        config.model,
        config.input_size,
        config.width,
        config.num_stages,
        config.num_keypoints,
        **config.architecture_options(),
    ), config


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RELEASED))
def test_warm_started_export_reproduces_the_released_file(name, train_shards, tmp_path):
    """train (max_steps 0) -> freeze -> tflite fp32, in the seed contract, against the released file on
    the photograph: max abs difference <= 0.02 and the same argmax in every channel."""
    from components.freeze import freeze
    from components.tflite import convert_to_tflite
    from components.train import train

    anchor = _anchor(name)
    config_path = RELEASED[name][0]
    metadata = train(
        config_path,
        [str(train_shards)],
        str(tmp_path / "model"),
        overrides={"init_from": str(anchor), "max_steps": 0},
    )
    assert metadata["steps"] == 0 and metadata["warm_start"]["kind"] == "seed_tflite"
    freeze(str(tmp_path / "model"), str(tmp_path / "frozen"))
    convert_to_tflite(str(tmp_path / "frozen"), str(tmp_path / "tflite"), ["fp32"])
    ours_path = tmp_path / "tflite" / f"{name}_fp32.tflite"
    assert json.loads(ours_path.with_suffix(".json").read_text())["contract"]["name"] == "seed"

    image = contract.model_input(
        photo_crop(192), "seed"
    )  # both files in the seed contract: same input
    released = tflite_runtime.run(tflite_runtime.load(anchor), image)
    ours = tflite_runtime.run(tflite_runtime.load(ours_path), image)
    assert ours.shape == released.shape
    assert released.max() > 0.3  # the photograph is one the released model sees a person in
    assert np.abs(ours - released).max() <= 0.02
    flat = lambda heatmaps: heatmaps.reshape(-1, heatmaps.shape[-1]).argmax(axis=0)  # noqa: E731
    np.testing.assert_array_equal(flat(ours), flat(released))


def test_import_is_exact_for_the_released_cpm():
    anchor = _anchor("mv2_cpm")
    model, config = _network(RELEASED["mv2_cpm"][0])
    summary = warm_start.load_into(model, anchor, config.model, config.seed_layers)
    assert summary["layers"] == 145
    assert summary["reproduction_max_abs_diff"] <= 1e-4
    batch_norm = model.get_layer("Conv2d_0_bn")  # unfolded: identity but for the bias
    np.testing.assert_array_equal(batch_norm.gamma.numpy(), 1.0)
    np.testing.assert_allclose(
        batch_norm.moving_variance.numpy() + batch_norm.epsilon, 1.0, rtol=1e-6
    )


@pytest.mark.parametrize(
    "config_path, overrides, first_misfit",
    [
        (
            "experiments/mv2_hourglass_192.yaml",
            {},
            "layer 'Conv2d_1_0_expand' does not fit",
        ),  # wrong network
        (
            "experiments/mv2_cpm_192_tiny.yaml",
            {"width": 0.75},
            "layer 'Conv2d_0_conv' does not fit",
        ),  # wrong width
        (
            "experiments/mv2_cpm_192_tiny.yaml",
            {"input_size": 224},
            "layer 'image' does not fit",
        ),  # wrong size
        (
            "experiments/mv2_cpm_192_tiny.yaml",
            {"num_stages": 5},
            "the file's layer 'stage_5_mv1_1_depthwise' has no place",
        ),
        ("experiments/mv2_cpm_192_tiny.yaml", {"seed_layers": False}, "set seed_layers: true"),
    ],
)
def test_mismatched_network_names_the_first_layer_that_does_not_fit(
    config_path, overrides, first_misfit
):
    anchor = _anchor("mv2_cpm")
    model, config = _network(config_path, **overrides)
    with pytest.raises(warm_start.WarmStartError, match=first_misfit):
        warm_start.load_into(model, anchor, config.model, config.seed_layers)


def test_foreign_files_are_clear_errors(tmp_path):
    from components.freeze import freeze
    from components.tflite import convert_to_tflite

    model, config = _network(RELEASED["mv2_cpm"][0])
    # one of our own exports: a .tflite, but not one of the seed's structures
    save_as_train_output(build_tiny_pose_model(64), tmp_path / "tiny")
    freeze(str(tmp_path / "tiny"), str(tmp_path / "frozen"))
    convert_to_tflite(str(tmp_path / "frozen"), str(tmp_path / "tflite"), ["fp32"])
    with pytest.raises(
        warm_start.WarmStartError, match="not one of the seed's released structures"
    ):
        warm_start.load_into(model, tmp_path / "tflite" / "mv2_cpm_fp32.tflite", config.model, True)
    (tmp_path / "notes.tflite").write_text("not a model")
    with pytest.raises(warm_start.WarmStartError, match="not a TFLite model"):
        warm_start.load_into(model, tmp_path / "notes.tflite", config.model, True)
    with pytest.raises(warm_start.WarmStartError, match="no such file"):
        warm_start.load_into(model, tmp_path / "missing.tflite", config.model, True)
    with pytest.raises(
        warm_start.WarmStartError, match="expected a seed's released .tflite or a model.keras"
    ):
        warm_start.load_into(model, tmp_path / "tiny" / "train_metadata.json", config.model, True)


def test_keras_model_from_an_earlier_run(tmp_path):
    source = build_model("mv2_hourglass", 64, width=0.35, num_stages=2)
    source.save(tmp_path / "model.keras")
    target = build_model("mv2_hourglass", 64, width=0.35, num_stages=2)
    summary = warm_start.load_into(target, tmp_path / "model.keras", "mv2_hourglass", False)
    assert summary["kind"] == "keras" and summary["layers"] > 0
    image = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(target(image)[-1], source(image)[-1], atol=1e-6)
    wider = build_model("mv2_hourglass", 64, width=1.0, num_stages=2)
    with pytest.raises(warm_start.WarmStartError, match="layer 'Conv2d_0_conv' does not fit"):
        warm_start.load_into(wider, tmp_path / "model.keras", "mv2_hourglass", False)


def test_config_accepts_max_steps_zero_and_init_from():
    config = load_config(
        "experiments/mv2_cpm_192_tiny.yaml", {"max_steps": 0, "init_from": "x.tflite"}
    )
    assert config.max_steps == 0 and config.init_from == "x.tflite" and config.seed_layers is True
    with pytest.raises(ConfigError, match="max_steps"):
        load_config("experiments/tiny.yaml", {"max_steps": -1})


def test_the_default_config_fine_tunes_the_released_cpm_for_a_fixed_number_of_steps(
    tmp_path, monkeypatch
):
    """experiments/local.yaml (the main command's) is the released CPM's network, warm-started from the
    repository's copy of the file (found from any working folder), for a fixed number of steps."""
    default, released = load_config("experiments/local.yaml"), load_config(RELEASED["mv2_cpm"][0])
    assert default.resolved().architecture_options() == released.resolved().architecture_options()
    assert (
        default.model,
        default.input_size,
        default.width,
        default.num_stages,
        default.seed_layers,
    ) == (released.model, 192, released.width, released.num_stages, True)
    monkeypatch.chdir(tmp_path)
    assert (
        warm_start.resolve(default.init_from) == warm_start.REPO / "anchors" / "pefm-cpm-192.tflite"
    )
    assert default.batch_norm_frozen and default.frozen_layers
    # defined by its steps (tests/test_determinism.py checks every local config's length)
    assert default.max_steps and default.lr_schedule in ("constant", "exponential")
    with pytest.raises(ConfigError, match="frozen_layers"):
        load_config("experiments/local.yaml", {"frozen_layers": "("})


def test_the_repositorys_seed_files_are_the_released_ones():
    """anchors/ holds the seed's files unmodified (SHA256SUMS), with the Apache-2.0 licence and a notice."""
    import hashlib

    folder = warm_start.REPO / "anchors"
    sums = dict(
        reversed(line.split())
        for line in (folder / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
    assert sorted(sums) == [
        "blazepose-full-256.tflite",  # MediaPipe's BlazePose GHUM full, the outside anchor
        "pefm-cpm-192.tflite",
        "pefm-hourglass-192.tflite",
    ]
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "PoseEstimationForMobile" in (folder / "NOTICE").read_text()
    assert "MediaPipe" in (folder / "NOTICE").read_text()


def test_frozen_layers_keep_their_weights_while_the_rest_fine_tunes(
    trained_model, train_shards, tmp_path
):
    """Fine-tuning an earlier model with frozen_layers and batch_norm_frozen: the frozen layers' weights,
    batch-norm statistics included, stay those of init_from; the others train."""
    import keras

    from components.train import train
    from pose.models import networks

    source = trained_model / "model.keras"
    metadata = train(
        "experiments/tiny.yaml",
        [str(train_shards)],
        str(tmp_path / "tuned"),
        overrides={
            "init_from": str(source),
            "max_steps": 3,
            "frozen_layers": "Conv2d_0|MobilenetV2_",
            "batch_norm_frozen": True,
            "warmup_steps": 0,
        },
    )
    networks.register_custom_layers()
    before = keras.models.load_model(source, compile=False)
    after = keras.models.load_model(tmp_path / "tuned" / "model.keras", compile=False)
    frozen = [
        layer.name
        for layer in before.layers
        if layer.weights and layer.name.startswith(("Conv2d_0", "Mobilenet"))
    ]
    assert metadata["frozen_layers"] == len(frozen) > 0
    for name in frozen:
        for old, new in zip(
            before.get_layer(name).get_weights(), after.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(old, new, err_msg=name)
    # every batch norm keeps its moving statistics (inference mode), the stages' too; their convolutions train
    stage_bn = [
        layer
        for layer in before.layers
        if layer.name.startswith("stage_") and layer.name.endswith("_bn")
    ]
    for layer in stage_bn:
        for old, new in zip(layer.get_weights()[2:], after.get_layer(layer.name).get_weights()[2:]):
            np.testing.assert_array_equal(old, new, err_msg=layer.name)
    stage_convs = [
        layer.name
        for layer in before.layers
        if layer.name.startswith("stage_") and "_bn" not in layer.name and layer.weights
    ]
    assert any(
        not np.array_equal(
            before.get_layer(n).get_weights()[0], after.get_layer(n).get_weights()[0]
        )
        for n in stage_convs
    )


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_another_keypoint_set_loads_the_joints_it_shares_by_name(name):
    """The seed's file into a COCO-17 network: its twelve limb joints load by name into every layer in
    keypoint order, the five face joints start fresh, and the twelve still reproduce the file."""
    from pose.data import keypoints

    coco, aic = keypoints.preset("coco"), keypoints.preset("aic")
    anchor = _anchor(name)
    model, config = _network(RELEASED[name][0], num_keypoints=coco.num_keypoints)
    summary = warm_start.load_into(model, anchor, config.model, config.seed_layers, coco)
    assert summary["channels_loaded"] == [n for n in coco.names if n in aic.names]
    assert summary["channels_new"] == ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    assert summary["layers_partly_loaded"]
    assert summary["shared_joints_max_abs_diff"] <= 1e-3
    # A network of another structure is still refused, whatever the set.
    wrong, wrong_config = _network(
        "experiments/mv2_cpm_192_tiny.yaml", width=0.75, num_keypoints=17
    )
    if name == "mv2_cpm":
        with pytest.raises(warm_start.WarmStartError, match="layer 'Conv2d_0_conv' does not fit"):
            warm_start.load_into(wrong, anchor, wrong_config.model, True, coco)
