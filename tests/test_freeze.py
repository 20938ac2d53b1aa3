"""freeze: the seed's tensor names in the SavedModel and the frozen graph, and Keras = SavedModel = .pb."""

import json

import numpy as np
import pytest

from components.freeze import FreezeError, freeze, run_frozen_graph
from pose.data import keypoints
from pose.models.networks import identity
from tests.tiny_models import build_tiny_pose_model, save_as_train_output

CPM_OUTPUT = identity("mv2_cpm").seed_output_name
AIC = keypoints.preset("aic")


@pytest.fixture(scope="module")
def tiny_frozen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = build_tiny_pose_model(64)
    save_as_train_output(model, folder / "model")
    info = freeze(str(folder / "model"), str(folder / "frozen"))
    return model, folder / "frozen", info


def _graph_nodes(path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return {node.name: node.op for node in graph_def.node}


def test_frozen_graph_and_signature_use_the_seed_names(tiny_frozen):
    import tensorflow as tf

    _, folder, info = tiny_frozen
    nodes = _graph_nodes(folder / "frozen_graph.pb")
    assert nodes["image"] == "Placeholder"
    assert CPM_OUTPUT in nodes
    assert not any(op in ("VarHandleOp", "ReadVariableOp") for op in nodes.values()), (
        "variables not folded"
    )
    signature = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    assert list(signature.structured_outputs) == [CPM_OUTPUT]
    assert signature.structured_input_signature[1]["image"].shape.as_list() == [1, 64, 64, 3]
    written = json.loads((folder / "model_info.json").read_text())
    assert written == info
    assert (info["input_size"], info["output_size"], info["output_stride"]) == (64, 32, 2.0)
    assert info["input_name"] == "image" and info["output_name"] == CPM_OUTPUT
    # the default export is the seed's contract: its channel order, so the shoulders are channels 2 and 5
    assert info["contract"]["name"] == "seed" and info["keypoints"][:2] == ["head_top", "neck"]
    assert len(info["keypoints"]) == 14 and [2, 5] in info["flip_pairs"]


def test_keras_saved_model_and_frozen_graph_agree(tiny_frozen):
    import tensorflow as tf

    model, folder, info = tiny_frozen
    from pose.models import contract

    images = np.random.default_rng(11).random((1, 64, 64, 3), dtype=np.float32)
    keras_out = model(images, training=False)[-1].numpy()
    exported_in = contract.from_training_images(
        images, info["contract"]
    )  # each in its own contract
    saved = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    saved_out = contract.to_set_order(
        saved(image=tf.constant(exported_in))[CPM_OUTPUT].numpy(), info["contract"], AIC
    )
    frozen_out = contract.to_set_order(
        run_frozen_graph(folder / "frozen_graph.pb", exported_in, CPM_OUTPUT), info["contract"], AIC
    )
    assert keras_out.shape == (1, 32, 32, 14)
    assert np.abs(saved_out - keras_out).max() <= 1e-4
    assert np.abs(frozen_out - keras_out).max() <= 1e-4
    assert info["max_abs_diff"] <= 1e-4


def test_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FreezeError, match="no model.keras"):
        freeze(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_trained_model_freezes_with_the_seed_names(frozen_model):
    info = json.loads((frozen_model / "model_info.json").read_text())
    assert info["output_name"] in (CPM_OUTPUT, identity("mv2_hourglass").seed_output_name)
    assert info["max_abs_diff"] <= 1e-4
    nodes = _graph_nodes(frozen_model / "frozen_graph.pb")
    assert nodes["image"] == "Placeholder" and info["output_name"] in nodes
