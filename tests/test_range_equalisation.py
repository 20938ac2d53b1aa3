"""Range equalisation of the CPM's stage concatenations (pose.models.range_equalisation, issue 22): the
same float function, a closer int8 model, and nothing to do in the Hourglass."""

import numpy as np
import pytest

from components import freeze as freeze_step
from components import tflite
from pose.models import contract, networks, range_equalisation, tflite_runtime
from tests.tiny_models import save_as_train_output

SIZE = 64
NUM_STAGES = 3
# A trained CPM's heatmaps peak near 1 while its backbone features span ~20 (BENCHMARKS.md, issue 22):
# the fresh network's heatmaps are narrowed by this factor (the next stage's kernel rows for them widened
# by its inverse)...
HEATMAP_NARROWING = 0.05
# ... and the next stage reads them this much more strongly than the fresh network's random weights do.
HEATMAP_READING = 10.0


def _heatmaps_like_a_trained_cpm(model, images) -> None:
    """Narrows the inner stages' heatmaps and makes the next stage read them strongly (a trained CPM's
    stages refine the previous stage's heatmaps), then scales the last stage's to peak at 1."""
    num_keypoints = model.outputs[-1].shape[-1]
    for stage in range(NUM_STAGES - 1):
        norm = model.get_layer(f"stage_{stage}_mv1_1_pointwise_bn")
        gamma, beta, mean, variance = norm.get_weights()
        norm.set_weights([gamma * HEATMAP_NARROWING, beta * HEATMAP_NARROWING, mean, variance])
        expand = model.get_layer(f"stage_{stage + 1}_mv2_0_expand")
        (kernel,) = expand.get_weights()
        kernel[:, :, -num_keypoints:, :] *= HEATMAP_READING / HEATMAP_NARROWING
        expand.set_weights([kernel])
    norm = model.get_layer(f"stage_{NUM_STAGES - 1}_mv1_1_pointwise_bn")
    gamma, beta, mean, variance = norm.get_weights()
    peak = float(np.max(networks.stage_heatmaps(model, images)[-1]))
    norm.set_weights([gamma / peak, beta / peak, mean, variance])  # ReLU6 is linear below 6


@pytest.fixture(scope="module")
def cpm(tmp_path_factory, train_shards):
    """(freeze output folder, its model info, 24 calibration and 8 other images in its contract) of a
    small seed-structure CPM with three stages, frozen by the freeze step."""
    import keras

    keras.utils.set_random_seed(0)
    images = tflite._representative_images([str(train_shards)], SIZE, 32)
    # one pass in training mode moves every batch norm halfway to its batch statistics, so that
    # activations keep a trained network's scale through the layers instead of dying out (all the way
    # would divide near-constant channels by near-zero deviations, and amplify float rounding)
    model = networks.build_model(
        "mv2_cpm",
        SIZE,
        width=0.35,
        num_stages=NUM_STAGES,
        batch_norm_momentum=0.5,
        seed_layers=True,
        stage_kernel_size=3,
    )
    model(images, training=True)
    _heatmaps_like_a_trained_cpm(model, images)
    folder = tmp_path_factory.mktemp("equalise")
    save_as_train_output(model, folder / "model")
    freeze_step.freeze(str(folder / "model"), str(folder / "frozen"))
    info = tflite._read_freeze_output(folder / "frozen")
    images = contract.from_training_images(images, info.contract)
    return folder / "frozen", info, images[:24], images[24:]


def _run_graph(graph_def, info, images):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return np.concatenate(
            [
                session.run(f"{info.output_name}:0", {f"{info.input_name}:0": image[None]})
                for image in images
            ]
        )


def test_equalised_graph_is_the_same_float_function(cpm):
    import tensorflow as tf

    frozen, info, calibration, held_out = cpm
    graph_def = tf.compat.v1.GraphDef.FromString((frozen / "frozen_graph.pb").read_bytes())
    equalised_def, scales = range_equalisation.equalise(graph_def, info.input_name, calibration)

    # stages 1 and 2 read concat([features, heatmaps]); the backbone's concatenation is left alone
    assert sorted(name.split("/")[-2].rsplit("_", 1)[0] for name in scales) == [
        "stage_1_concat",
        "stage_2_concat",
    ]
    for by_input in scales.values():
        (scale,) = by_input.values()  # only the heatmaps are stretched, by the ratio of the ranges
        assert 2 < scale <= range_equalisation.MAX_SCALE
    images = np.concatenate([calibration[:4], held_out])
    before = _run_graph(graph_def, info, images)
    after = _run_graph(equalised_def, info, images)
    assert 0.5 < np.abs(before).max() < 2  # heatmaps as a trained CPM's
    assert np.abs(after - before).max() < 1e-5


def test_int8_of_the_equalised_graph_is_closer_to_float(cpm, tmp_path):
    frozen, info, calibration, held_out = cpm
    reference = tflite_runtime.run(
        _load(tflite._convert(frozen, info, "fp32", calibration, False)[0], tmp_path / "fp32"),
        held_out,
    )
    errors = {}
    for equalise in (False, True):
        flatbuffer, scales = tflite._convert(
            frozen, info, "int8", calibration, False, equalise=equalise
        )
        assert bool(scales) == equalise
        heatmaps = tflite_runtime.run(_load(flatbuffer, tmp_path / f"int8_{equalise}"), held_out)
        errors[equalise] = float(np.abs(heatmaps - reference).mean())
    # measured: 0.0032 -> 0.00043 here; on the main job's CPM 0.0034 -> 0.0018 (24 validation crops)
    assert errors[True] < 0.8 * errors[False], errors


def _load(flatbuffer: bytes, path):
    path = path.with_suffix(".tflite")
    path.write_bytes(flatbuffer)
    return tflite_runtime.load(path)


def test_hourglass_has_nothing_to_equalise():
    """Its branches are added, not concatenated: its graph comes back as it was."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = networks.build_model("mv2_hourglass", SIZE, width=0.35, num_stages=2)
    serve = tf.function(lambda image: model(image, training=False)[-1]).get_concrete_function(
        tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")
    )
    graph_def = convert_variables_to_constants_v2(serve).graph.as_graph_def()
    assert range_equalisation.junctions(graph_def) == []
    unchanged, scales = range_equalisation.equalise(
        graph_def, "image", np.zeros((1, SIZE, SIZE, 3))
    )
    assert scales == {} and unchanged is graph_def
