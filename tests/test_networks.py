"""The networks: the seed's structure and compute, configurable sizes, and a model.keras that
loads without custom objects."""
import numpy as np
import pytest
import tensorflow as tf

from pose.networks import build_model, count_multiply_adds, output_stride, stage_heatmaps, summary
from tests.conftest import ANCHORS


def _anchor_multiply_adds(path) -> int:
    """Multiply-adds of a .tflite's convolutions, read from its ops and tensor shapes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kernel, out = shapes[op["inputs"][1]], shapes[op["outputs"][0]]
            # CONV_2D kernels are [out, kh, kw, in]; depthwise [1, kh, kw, channels].
            per_pixel = np.prod(kernel) if op["op_name"] == "CONV_2D" else np.prod(kernel[1:])
            total += int(out[1] * out[2] * per_pixel)
    return total


def test_seed_cpm_structure_and_compute():
    model = build_model("mv2_cpm", 192)
    info = summary(model)
    assert info["output_shapes"] == [(96, 96, 14)] * 6
    assert info["output_names"][-1] == "stage_5_out"
    assert model.output_names[-1] == "stage_5_out"
    # The seed's "0.5G" for its CPM at width 0.75 is a count of multiply-adds.
    assert abs(info["multiply_adds"] - 0.5e9) / 0.5e9 <= 0.10, info["multiply_adds"]
    assert info["flops"] == 2 * info["multiply_adds"]
    assert output_stride("mv2_cpm") == 2


def test_seed_hourglass_matches_released_model():
    model = build_model("mv2_hourglass", 192)
    info = summary(model)
    assert info["output_shapes"] == [(48, 48, 14)] * 4
    assert info["output_names"][-1] == "hourglass_out_3"
    assert output_stride("mv2_hourglass") == 4
    anchor = ANCHORS / "pefm-hourglass-192.tflite"
    if not anchor.exists():
        pytest.skip(f"{anchor} not present")
    assert count_multiply_adds(model) == _anchor_multiply_adds(anchor)


def test_count_agrees_with_tensorflow_profiler():
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = build_model("mv2_cpm", 96, width=0.5, num_stages=2)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 96, 96, 3], tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(convert_variables_to_constants_v2(function).graph, options=options)
    # The profiler also counts BN, bias, adds and resizes: a few percent over the convolutions.
    flops = 2 * count_multiply_adds(model)
    assert flops <= profiled.total_float_ops <= 1.10 * flops


@pytest.mark.parametrize("name, size, width, stages, keypoints, stride", [
    ("mv2_cpm", 224, 0.5, 3, 14, 2),
    ("mv2_cpm", 256, 0.35, 1, 5, 2),
    ("mv2_hourglass", 224, 0.5, 3, 14, 4),  # 224 / 4 does not halve evenly three times: resized skips
    ("mv2_hourglass", 256, 0.5, 2, 7, 4),
])
def test_configurable(name, size, width, stages, keypoints, stride):
    model = build_model(name, size, width=width, num_stages=stages, num_keypoints=keypoints)
    heatmap = size // stride
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(heatmap, heatmap, keypoints)] * stages
    outputs = stage_heatmaps(model, np.zeros((1, size, size, 3), np.float32))
    assert len(outputs) == stages and outputs[-1].shape == (1, heatmap, heatmap, keypoints)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mv2_resnet"):
        build_model("mv2_resnet", 192)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("mv2_cpm", 200)


def test_saved_model_loads_without_custom_objects(tmp_path):
    import keras

    model = build_model("mv2_hourglass", 64, width=0.35, num_stages=2)
    image = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    expected = model(image, training=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.output_names == model.output_names
    np.testing.assert_allclose(loaded(image, training=False)[-1], expected[-1], atol=1e-5)
