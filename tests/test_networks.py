"""The networks: the seed's structure and compute, configurable sizes, and a model.keras that
loads without custom objects."""

import numpy as np
import pytest
import tensorflow as tf

from pose.models.networks import (
    UnknownModel,
    build_from_config,
    build_model,
    count_multiply_adds,
    identity,
    output_stride,
    stage_heatmaps,
    summary,
)
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


def _anchor_convolutions(path) -> list[tuple]:
    """(op, output height, kernel shape) of every convolution in a .tflite, sorted."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    shapes = {
        t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()
    }
    return sorted(
        (op["op_name"], shapes[op["outputs"][0]][1], shapes[op["inputs"][1]])
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
    )


def _keras_convolutions(model) -> list[tuple]:
    """The same list for a Keras model, kernels in TFLite's layout ([out, h, w, in]; depthwise [1, h, w, c])."""
    import keras

    convolutions = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            height, width, channels, _ = layer.kernel.shape
            convolutions.append(
                ("DEPTHWISE_CONV_2D", layer.output.shape[1], (1, height, width, channels))
            )
        elif isinstance(layer, keras.layers.Conv2D):
            height, width, in_channels, out_channels = layer.kernel.shape
            convolutions.append(
                ("CONV_2D", layer.output.shape[1], (out_channels, height, width, in_channels))
            )
    return sorted(convolutions)


def test_tiny_config_is_the_released_cpm_layer_for_layer():
    """experiments/mv2_cpm_192_tiny.yaml builds the structure of the seed's released CPM file: the same
    convolutions (kernel shapes and resolutions), so the same multiply-adds and weights."""
    from pose.training.config import load_config

    config = load_config("experiments/mv2_cpm_192_tiny.yaml").resolved()
    model = build_model(
        config.model,
        config.input_size,
        config.width,
        config.num_stages,
        **config.architecture_options(),
    )
    assert count_multiply_adds(model) == 277_261_056
    assert model.output_names[-1] == "stage_5_out"
    anchor = ANCHORS / "pefm-cpm-192.tflite"
    if not anchor.exists():
        pytest.skip(f"{anchor} not present")
    assert _keras_convolutions(model) == _anchor_convolutions(anchor)
    assert count_multiply_adds(model) == _anchor_multiply_adds(anchor)


def test_cpm_structure_options():
    default = build_model("mv2_cpm", 96, width=0.5, num_stages=2)
    options = {
        "backbone_expansion": None,
        "stage_expansion": None,
        "stage_channels": None,
        "stage_kernel_size": None,
    }
    assert _keras_convolutions(
        build_model("mv2_cpm", 96, width=0.5, num_stages=2, **options)
    ) == _keras_convolutions(default)  # None = the seed's training code
    model = build_model(
        "mv2_cpm",
        96,
        width=0.5,
        num_stages=2,
        backbone_expansion=4,
        stage_expansion=3,
        stage_channels=24,
        stage_kernel_size=5,
    )
    kernels = {
        layer.name: tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")
    }
    assert kernels["stage_1_mv2_0_depthwise"][:2] == (5, 5)
    assert kernels["stage_0_mv2_0_depthwise"][:2] == (3, 3)  # stage 0 stays 3x3, as in the seed
    assert kernels["stage_1_mv2_1_expand"] == (1, 1, 24, 72)
    assert kernels["MobilenetV2_part_1_1_expand"] == (1, 1, 12, 48)
    assert count_multiply_adds(model) < count_multiply_adds(default)


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
        tf.TensorSpec([1, 96, 96, 3], tf.float32)
    )
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(
        convert_variables_to_constants_v2(function).graph, options=options
    )
    # The profiler also counts BN, bias, adds and resizes: a few percent over the convolutions.
    flops = 2 * count_multiply_adds(model)
    assert flops <= profiled.total_float_ops <= 1.10 * flops


@pytest.mark.parametrize(
    "name, size, width, stages, keypoints, stride",
    [
        ("mv2_cpm", 224, 0.5, 3, 14, 2),
        ("mv2_cpm", 256, 0.35, 1, 5, 2),
        (
            "mv2_hourglass",
            224,
            0.5,
            3,
            14,
            4,
        ),  # 224 / 4 does not halve evenly three times: resized skips
        ("mv2_hourglass", 256, 0.5, 2, 7, 4),
    ],
)
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
    with pytest.raises(ValueError, match="no option stage_kernel_size"):
        build_model("mv2_hourglass", 192, stage_kernel_size=5)
    with pytest.raises(ValueError, match="stage_kernel_size 4 must be odd"):
        build_model("mv2_cpm", 192, stage_kernel_size=4)


def test_saved_model_loads_without_custom_objects(tmp_path):
    import keras

    model = build_model("mv2_hourglass", 64, width=0.35, num_stages=2)
    image = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    expected = model(image, training=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.output_names == model.output_names
    np.testing.assert_allclose(loaded(image, training=False)[-1], expected[-1], atol=1e-5)


def test_identity_of_models_names_exports_and_seed_releases():
    cpm, hourglass = identity("mv2_cpm"), identity("mv2_hourglass")
    assert (cpm.family, cpm.seed_output_name) == ("cpm", "Convolutional_Pose_Machine/stage_5_out")
    assert (hourglass.family, hourglass.seed_output_name) == ("hourglass", "hourglass_out_3")
    assert identity("mv2_cpm_int8-dynamic") is cpm and identity("pefm-hourglass-192") is hourglass
    assert identity(build_model("mv2_hourglass", 64, width=0.35, num_stages=1)) is hourglass
    with pytest.raises(UnknownModel, match="unknown model 'resnet_fp32'"):
        identity("resnet_fp32")


def test_build_from_config_builds_what_the_config_says():
    from pose.training.config import load_config

    config = load_config(
        "model: mv2_cpm\ninput_size: 96\nwidth: 0.5\nnum_stages: 2\nstage_kernel_size: 5\n"
    ).resolved()
    model = build_from_config(config)
    assert (
        model.name == "mv2_cpm"
        and len(model.outputs) == 2
        and tuple(model.input.shape[1:]) == (96, 96, 3)
    )
    assert model.get_layer("stage_1_out") is not None
