"""Warm start: load the weights of one of the seed's released .tflite files, or of an earlier run's
model.keras, into a freshly built network (the training config's `init_from`).

The released files (anchors/) are TF1 graphs converted with batch norm folded into each
convolution's bias, trained on BGR 0..255 pixels with the seed's channel order (pose.models.contract). Our
networks train on RGB / 255 in AIC order, so the import
- unfolds each bias into an identity batch norm (gamma 1, beta = bias, moving mean 0, moving variance
  1 - epsilon, so (x - 0) / sqrt(1 - epsilon + epsilon) * 1 + bias = x + bias exactly);
- folds the input conversion into the first convolution (its input channels reversed, times 255);
- permutes the channels of every tensor in keypoint order (the heatmap heads, and the convolutions that
  read heatmaps: the next CPM stage, the hourglass' back blocks) from the seed's order to AIC's.
The network must be built with `seed_layers: true` (the seed's activations and resizing): the released
CPM is experiments/mv2_cpm_192_tiny.yaml, the released Hourglass experiments/mv2_hourglass_192.yaml.
After loading, the network is run beside the file on one image and must reproduce it.
"""

import re
from pathlib import Path

import numpy as np

from pose.data import keypoints
from pose.models import contract, networks
from pose.training.config import looked_in

# A warm-started network must reproduce the file's heatmaps (peaks ~0.5..1) this closely on a test image.
REPRODUCTION_MAX_ABS_DIFF = 0.02
# Our block names -> the seed's: the part of an inverted residual or separable block.
_SEED_PART = {
    "expand": "up_pointwise",
    "depthwise": "depthwise",
    "project": "pointwise",
    "pointwise": "pointwise",
}
# Blocks the seed builds one at a time (not in a slim.stack, whose scopes count from 1).
_SINGLE_BLOCKS = ("hourglass_mid", "hourglass_back")


REPO = Path(__file__).resolve().parents[2]


def resolve(source: str | Path) -> Path:
    """init_from as given (absolute, or relative to the working folder), else relative to the repository:
    the default config names the released CPM the repository ships (anchors/pefm-cpm-192.tflite), which
    is found so from any working folder, in the image (/app) as in a clone."""
    path = Path(source)
    if path.is_file() or path.is_absolute():
        return path
    return REPO / path


class WarmStartError(ValueError):
    """init_from names a file that is not a usable source for this network: says which layer does not fit."""


def load_into(
    model, source: str | Path, model_name: str, seed_layers: bool, keypoint_set=None
) -> dict:
    """Loads `source` (a seed .tflite or a model.keras) into `model` in place; returns a summary.
    keypoint_set: the joints the network's heatmaps are (default: the `aic` set)."""
    path = resolve(source)
    if not path.is_file():
        raise WarmStartError(f"init_from {source}: no such file (looked in {looked_in()})")
    if path.suffix == ".tflite":
        return _from_seed_tflite(model, path, model_name, seed_layers, keypoint_set)
    if path.suffix == ".keras":
        return _from_keras(model, path)
    raise WarmStartError(
        f"init_from {path}: expected a seed's released .tflite or a model.keras from an earlier run"
    )


# ---- an earlier run's model.keras ----------------------------------------------------------------


def _from_keras(model, path: Path) -> dict:
    import keras

    networks.register_custom_layers()

    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise WarmStartError(f"init_from {path}: cannot load the Keras model: {error}") from error
    source_layers = {layer.name: layer for layer in source.layers}
    if model.input_shape != source.input_shape:
        raise WarmStartError(
            f"init_from {path}: layer 'image': the network takes {model.input_shape[1:]}, "
            f"the file's model {source.input_shape[1:]}"
        )
    loaded = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        if other is None:
            raise WarmStartError(
                f"init_from {path}: layer {layer.name!r} has no counterpart in the file's model "
                f"{source.name!r} (a different network or structure)"
            )
        ours = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(w.shape) for w in other.weights]
        if ours != theirs:
            raise WarmStartError(
                f"init_from {path}: layer {layer.name!r} does not fit: its weights are {ours}, "
                f"the file's {theirs} (a different width, size or structure)"
            )
        layer.set_weights(other.get_weights())
        loaded += 1
    unused = [
        layer.name
        for layer in source.layers
        if layer.weights and layer.name not in {mine.name for mine in model.layers}
    ]
    if unused:
        raise WarmStartError(
            f"init_from {path}: the file's layer {unused[0]!r} has no place in the network "
            f"({len(unused)} such layers)"
        )
    return {"source": str(path), "kind": "keras", "layers": loaded}


# ---- one of the seed's released .tflite files ----------------------------------------------------


def read_seed_file(path: Path) -> dict:
    """{"input_size", "output_name", "output_shape", "convolutions": {seed layer key: (kernel, bias)}} of a
    seed .tflite; WarmStartError when it is not one of the seed's float structures."""
    from pose.models import tflite_runtime

    try:
        interpreter = tflite_runtime.load(path)
    except tflite_runtime.NotTFLiteError as error:
        raise WarmStartError(f"init_from {error}") from error
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    output_name = outputs[0]["name"] if len(outputs) == 1 else None
    if (
        len(inputs) != 1
        or inputs[0]["name"] != "image"
        or np.dtype(inputs[0]["dtype"]) != np.float32
        or output_name is None
        or networks.identity_of_seed_output(output_name) is None
    ):
        raise WarmStartError(
            f"init_from {path}: not one of the seed's released structures (expected one float32 input 'image' and "
            f"one output 'Convolutional_Pose_Machine/stage_<n>_out' or 'hourglass_out_<n>'; it has inputs "
            f"{[i['name'] for i in inputs]} and outputs {[o['name'] for o in outputs]})"
        )
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    convolutions = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        kernel_detail = tensors[op["inputs"][1]]
        if np.dtype(kernel_detail["dtype"]) != np.float32:
            raise WarmStartError(
                f"init_from {path}: {kernel_detail['name']} is {np.dtype(kernel_detail['dtype'])}, "
                "not float32: a quantised file cannot seed training; use the float one"
            )
        name = kernel_detail["name"]
        if not re.search(r"/(depthwise_)?weights$", name):
            raise WarmStartError(
                f"init_from {path}: not one of the seed's released structures (convolution "
                f"weights named {name!r}, the seed's end in '/weights' or '/depthwise_weights')"
            )
        kernel = interpreter.get_tensor(op["inputs"][1])
        bias = (
            interpreter.get_tensor(op["inputs"][2])
            if len(op["inputs"]) > 2 and op["inputs"][2] >= 0
            else None
        )
        convolutions[name.split("/")[-2]] = (op["op_name"], name, kernel, bias)
    if "Conv2d_0" not in convolutions:
        raise WarmStartError(
            f"init_from {path}: not one of the seed's released structures (no stem convolution "
            "'Conv2d_0/weights')"
        )
    return {
        "input_size": int(inputs[0]["shape"][1]),
        "output_name": output_name,
        "output_shape": [int(d) for d in outputs[0]["shape"]],
        "convolutions": convolutions,
        "interpreter": interpreter,
    }


def seed_key(layer_name: str) -> str | None:
    """The seed's scope for one of our convolution layers: `MobilenetV2_part_1_0_expand` ->
    `MobilenetV2_part_1_1_up_pointwise` (slim.stack counts from 1), `Conv2d_0_conv` -> `Conv2d_0`."""
    if layer_name == "Conv2d_0_conv":
        return "Conv2d_0"
    match = re.fullmatch(r"(.+)_(\d+)_(expand|depthwise|project|pointwise)", layer_name)
    if not match:
        return None
    block, index, part = match.groups()
    number = int(index) if block in _SINGLE_BLOCKS else int(index) + 1
    return f"{block}_{number}_{_SEED_PART[part]}"


def _from_seed_tflite(
    model, path: Path, model_name: str, seed_layers: bool, keypoint_set=None
) -> dict:
    """The seed's file into `model`. For the `aic` set every layer loads and the network must reproduce
    the file. For another set, the channels of joints both sets name alike load (by name) into every
    layer in keypoint order, the other heatmap channels start fresh (their readers' weights zero, so
    the shared joints still reproduce the file), and where a block's hidden channels follow the set's
    size (the expansion of a concatenation with the heatmaps) the file's fill the first ones; the
    summary lists the joints loaded, the joints new and the layers only partly loaded."""
    import keras

    keypoint_set = keypoint_set or keypoints.default()
    file_set = keypoints.default()
    seed = read_seed_file(path)
    seed_identity = networks.identity_of_seed_output(seed["output_name"])
    family, config = seed_identity.family, seed_identity.seed_config
    if not seed_layers:
        raise WarmStartError(
            f"init_from {path}: the seed's files need the seed's activations and resizing: set "
            f"seed_layers: true (as {config} does)"
        )
    size = model.input_shape[1]
    if size != seed["input_size"]:
        raise WarmStartError(
            f"init_from {path}: layer 'image' does not fit: the network takes {size}x{size}, the "
            f"file {seed['input_size']}x{seed['input_size']} (input_size in {config})"
        )
    num_keypoints = model.outputs[-1].shape[-1]
    if num_keypoints != keypoint_set.num_keypoints:
        raise WarmStartError(
            f"init_from {path}: the network has {num_keypoints} heatmaps, the keypoint set "
            f"{keypoint_set.name!r} {keypoint_set.num_keypoints}"
        )
    whole = keypoint_set.same_joints(file_set)
    file_channel_of_joint = np.argsort(contract.channels(contract.SEED, file_set))
    # channel_map[c]: the file's heatmap channel holding our channel c's joint, -1 for none
    channel_map = np.full(num_keypoints, -1)
    for ours, theirs in keypoint_set.shared_with(file_set):
        channel_map[ours] = file_channel_of_joint[theirs]
    file_keypoints = file_set.num_keypoints
    layers_by_name = {layer.name: layer for layer in model.layers}
    heatmap_layers, concat_segments = _keypoint_ordered(model, num_keypoints)
    used, partial = set(), []
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            continue
        key = seed_key(layer.name)
        if key is None or key not in seed["convolutions"]:
            raise WarmStartError(
                f"init_from {path}: layer {layer.name!r} does not fit: the file has no weights for "
                f"it ({key or 'no seed name'}; a {family} file, use {config})"
            )
        op_name, tensor_name, kernel, bias = seed["convolutions"][key]
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        # TFLite: conv [out, h, w, in], depthwise [1, h, w, channels]; Keras: [h, w, in, out], [h, w, channels, 1]
        kernel = np.transpose(kernel, (1, 2, 3, 0))
        if bias is None:
            bias = np.zeros(kernel.shape[-1] if not depthwise else kernel.shape[2], np.float32)
        if layer.name == "Conv2d_0_conv":  # BGR 0..255 in the file, RGB / 255 in training
            kernel = kernel[:, :, ::-1, :] * np.float32(255.0)
        source = _producer(layer)
        in_map = out_map = None
        if source in heatmap_layers:
            in_map = channel_map
        elif source in concat_segments:
            in_map = _concat_channel_map(
                layer.kernel.shape[2], concat_segments[source], channel_map, file_keypoints
            )
        if layer.name in heatmap_layers and not depthwise:
            out_map = channel_map
        if depthwise and in_map is not None:
            in_map, out_map = in_map, in_map
        ours = tuple(layer.kernel.shape)
        if (op_name == "DEPTHWISE_CONV_2D") != depthwise:
            mapped = None
        elif whole:
            mapped = _mapped_kernel(kernel, bias, ours, in_map, out_map, depthwise, layer)
        elif _follows_the_set(kernel.shape, ours, file_keypoints, num_keypoints):
            # Channels that are not in keypoint order but whose count follows the set (a block's
            # expansion of a concatenation with the heatmaps): the file's come first, ours beyond
            # them start fresh (their readers at zero).
            if in_map is None and kernel.shape[2] != ours[2]:
                in_map = _prefix_map(ours[2], kernel.shape[2])
                if depthwise:
                    out_map = in_map
            if out_map is None and not depthwise and kernel.shape[3] != ours[3]:
                out_map = _prefix_map(ours[3], kernel.shape[3])
            mapped = _mapped_kernel(kernel, bias, ours, in_map, out_map, depthwise, layer)
        else:
            mapped = None
        if mapped is None:
            raise WarmStartError(
                f"init_from {path}: layer {layer.name!r} does not fit: its kernel is {list(ours)}, "
                f"the file's {tensor_name} is {list(kernel.shape)} (Keras layout; a different "
                f"network, width or structure: the released {family} is {config})"
            )
        kernel, bias, complete = mapped
        if not complete:
            partial.append(layer.name)
        used.add(key)
        layer.kernel.assign(kernel.astype(np.float32))
        _set_bias(layer, bias, layers_by_name, path)
    unused = sorted(set(seed["convolutions"]) - used)
    if unused:
        raise WarmStartError(
            f"init_from {path}: the file's layer {unused[0]!r} has no place in the network "
            f"({len(unused)} such layers: the file has more stages or blocks than {model_name})"
        )
    shared = keypoint_set.shared_with(file_set)
    summary = {
        "source": str(path),
        "kind": "seed_tflite",
        "family": family,
        "layers": len(used),
        "keypoint_set": keypoint_set.name,
        "channels_loaded": [keypoint_set.names[i] for i, _ in shared],
        "channels_new": [n for n in keypoint_set.names if n not in file_set.names],
        "layers_partly_loaded": partial,
    }
    difference = reproduction_difference(model, seed["interpreter"], keypoint_set=keypoint_set)
    if not whole:
        # The shared joints reproduce the file where no channel of the file was dropped (a set of
        # at least the file's joints); a smaller set loses some of each block's channels.
        return {**summary, "shared_joints_max_abs_diff": float(difference)}
    if not difference <= REPRODUCTION_MAX_ABS_DIFF:
        raise WarmStartError(
            f"init_from {path}: the network loaded with its weights does not reproduce it (max abs "
            f"heatmap difference {difference:.3g} on a test image, limit {REPRODUCTION_MAX_ABS_DIFF})"
        )
    return {**summary, "reproduction_max_abs_diff": float(difference)}


def _follows_the_set(theirs, ours, file_keypoints: int, num_keypoints: int) -> bool:
    """Whether a layer differs from the file's only where its channels scale with the number of
    joints (by whole multiples of the difference in joints), so that another keypoint set explains
    the difference and not another network."""
    difference = num_keypoints - file_keypoints
    if tuple(theirs[:2]) != tuple(ours[:2]):
        return False
    return all(
        a == b or (difference != 0 and (b - a) % difference == 0 and (b - a) // difference > 0)
        for a, b in zip(theirs[2:], ours[2:])
    )


def _prefix_map(ours: int, theirs: int) -> np.ndarray:
    """Our channel c is the file's c while the file has one, else new (-1)."""
    return np.where(np.arange(ours) < theirs, np.arange(ours), -1)


def _concat_channel_map(channels: int, offsets, channel_map, file_keypoints: int):
    """For a layer reading a concatenation: our input channel -> the file's (-1: none). Keypoint
    segments (at `offsets` in ours) are len(channel_map) wide here and file_keypoints wide in the file."""
    ours_keypoints = len(channel_map)
    result, shift = np.arange(channels), 0
    starts = sorted(offsets)
    c = 0
    while c < channels:
        if c in starts:
            segment = channel_map
            result[c : c + ours_keypoints] = np.where(segment >= 0, segment + c + shift, -1)
            shift += file_keypoints - ours_keypoints
            c += ours_keypoints
        else:
            result[c] = c + shift
            c += 1
    return result


def _mapped_kernel(kernel, bias, ours_shape, in_map, out_map, depthwise, layer):
    """The file's kernel and bias laid out as our layer's, or None where no channel map makes them fit.
    Returns (kernel, bias, complete): complete False when some of our channels had no counterpart
    (their output weights stay as built, their input weights zero)."""
    if in_map is None and out_map is None:
        return (kernel, bias, True) if tuple(kernel.shape) == tuple(ours_shape) else None
    result = np.array(layer.kernel.numpy(), dtype=np.float32)
    if depthwise:
        out_map = None  # a depthwise kernel's channels are its inputs'
    in_axis_ours = np.arange(ours_shape[2]) if in_map is None else np.asarray(in_map)
    out_axis_ours = np.arange(ours_shape[3]) if out_map is None else np.asarray(out_map)
    if kernel.shape[:2] != tuple(ours_shape[:2]) or (
        in_axis_ours.max(initial=-1) >= kernel.shape[2]
        or out_axis_ours.max(initial=-1) >= kernel.shape[3]
    ):
        return None
    if len(in_axis_ours) != ours_shape[2] or len(out_axis_ours) != ours_shape[3]:
        return None
    if in_map is None and kernel.shape[2] != ours_shape[2]:
        return None
    if out_map is None and not depthwise and kernel.shape[3] != ours_shape[3]:
        return None
    in_ok, out_ok = in_axis_ours >= 0, out_axis_ours >= 0
    if in_map is not None and not depthwise:
        result[:, :, ~in_ok, :] = 0.0  # a fresh joint's readers start at zero
    result[
        np.ix_(
            range(result.shape[0]),
            range(result.shape[1]),
            np.flatnonzero(in_ok),
            np.flatnonzero(out_ok),
        )
    ] = kernel[
        np.ix_(
            range(kernel.shape[0]),
            range(kernel.shape[1]),
            in_axis_ours[in_ok],
            out_axis_ours[out_ok],
        )
    ]
    bias_map = in_axis_ours if depthwise else out_axis_ours
    new_bias = np.zeros(len(bias_map), np.float32)
    new_bias[bias_map >= 0] = bias[bias_map[bias_map >= 0]]
    return result, new_bias, bool(in_ok.all() and out_ok.all())


def _producer(layer) -> str:
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation.name


def _keypoint_ordered(model, num_keypoints: int):
    """(names of the layers whose output is in keypoint order, {concat name: offsets of keypoint segments}).

    A convolution to num_keypoints channels starts keypoint order; batch norms, activations, adds and
    resizes keep it when all their inputs have it; a concatenation keeps it segment by segment."""
    import keras

    ordered, segments = set(), {}
    keep = (
        keras.layers.BatchNormalization,
        keras.layers.ReLU,
        keras.layers.Add,
        keras.layers.UpSampling2D,
        keras.layers.Resizing,
        keras.layers.MaxPooling2D,
        keras.layers.DepthwiseConv2D,
    )
    for layer in model.layers:  # topological order
        if not layer._inbound_nodes or not layer._inbound_nodes[0].input_tensors:
            continue
        producers = [t._keras_history.operation for t in layer._inbound_nodes[0].input_tensors]
        if isinstance(layer, keras.layers.Concatenate):
            offsets, offset = [], 0
            for producer, tensor in zip(producers, layer._inbound_nodes[0].input_tensors):
                if producer.name in ordered:
                    offsets.append(offset)
                offset += tensor.shape[-1]
            if offsets:
                segments[layer.name] = offsets
        elif isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            if layer.filters == num_keypoints and layer.name != "Conv2d_0_conv":
                ordered.add(layer.name)
        elif (isinstance(layer, keep) or type(layer).__name__ == "SeedBilinearUpsampling") and all(
            p.name in ordered for p in producers
        ):
            ordered.add(layer.name)
    return ordered, segments


def _set_bias(layer, bias, layers_by_name: dict, path: Path) -> None:
    """The file's folded bias -> the layer's own bias, or an identity batch norm after it."""
    if getattr(layer, "use_bias", False) and layer.bias is not None:
        layer.bias.assign(bias.astype(np.float32))
        return
    stem = layer.name.removesuffix("_conv")
    batch_norm = layers_by_name.get(f"{layer.name}_bn") or layers_by_name.get(f"{stem}_bn")
    if batch_norm is None:
        if np.any(bias != 0):
            raise WarmStartError(
                f"init_from {path}: layer {layer.name!r} has no bias or batch norm to take the "
                f"file's non-zero bias"
            )
        return
    channels = bias.shape[0]
    batch_norm.gamma.assign(np.ones(channels, np.float32))
    batch_norm.beta.assign(bias.astype(np.float32))
    batch_norm.moving_mean.assign(np.zeros(channels, np.float32))
    batch_norm.moving_variance.assign(np.full(channels, 1.0 - batch_norm.epsilon, np.float32))


def reproduction_difference(model, interpreter, seed: int = 0, keypoint_set=None) -> float:
    """Max abs difference between the file's heatmaps and the network's, over the joints both name
    (all of them for the `aic` set), on one smooth random image."""
    import cv2

    from pose.models import tflite_runtime

    size = model.input_shape[1]
    rng = np.random.default_rng(seed)
    image = cv2.resize(
        rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8),
        (size, size),
        interpolation=cv2.INTER_LINEAR,
    )[None]
    file_set = keypoints.default()
    keypoint_set = keypoint_set or file_set
    theirs = contract.to_set_order(
        tflite_runtime.run(interpreter, contract.model_input(image, "seed")), "seed", file_set
    )
    ours = model(contract.model_input(image, "aic"), training=False)
    ours = np.asarray(ours[-1] if isinstance(ours, (list, tuple)) else ours)
    shared = keypoint_set.shared_with(file_set)
    ours = ours[..., [i for i, _ in shared]]
    theirs = theirs[..., [j for _, j in shared]]
    if ours.shape != theirs.shape:
        raise WarmStartError(
            f"the network's heatmaps are {list(ours.shape)}, the file's {list(theirs.shape)}"
        )
    return float(np.abs(ours - theirs).max())
