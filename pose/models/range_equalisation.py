"""Equalising the ranges of a concatenation's inputs before int8 quantisation (issue 22).

In a full int8 model a concatenation has one scale for all its channels. Each CPM stage after the
first reads `concat([features, heatmaps of the previous stage])` through a 1x1 expand convolution;
the features span a range several times the heatmaps' (peaks near 1), so the heatmaps keep only a few
int8 levels, and QuantizationDebugger ranks exactly those five expand convolutions worst in the model
(BENCHMARKS.md, "Issue 22 continued").

`equalise(graph_def, input_name, samples)` rewrites a frozen GraphDef so that every narrow input of
such a concatenation is multiplied by a constant c (a Mul before the concatenation) and the matching
input rows of each consuming 1x1 convolution's kernel are divided by c. The float function is the same
(up to float rounding); int8 sees the narrow input spread over much of the concatenation's range. c is
chosen from data: TARGET_FRACTION times the ratio of the concatenation's widest input range to this
input's, both measured on `samples` (the calibration images) in float, as the int8 calibrator itself
measures min/max. On the main job's CPM the ratio is ~20 (features ~19.4, heatmaps ~1), so c ~10.

Which concatenations qualify is decided by the graph's structure, not by layer names: a ConcatV2 on the
channel axis whose every consumer is a Conv2D with a constant 1x1 kernel (so the inverse can be folded
exactly). In the MobileNetV2 CPM these are the `stage_N_concat`s of stages 1..n-1; the backbone's own
concatenation also feeds further concatenations, so it is left alone. The Hourglass has none (its
branches are added, not concatenated): its graph comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

# A narrow input is stretched to this fraction of the widest input's range. Measured on the main job's
# CPM (BENCHMARKS.md, "Issue 22: range equalisation"): int8 PCKh@0.5 against fp32 -1.02 unequalised,
# +0.09 at 0.25, +0.01 at 0.5, -0.19 at 1, -0.66 at 2; the photographs' agreement best at 0.5. Half
# leaves the heatmaps headroom above their calibrated peak, and divides their kernel rows (whose int8
# steps are per output channel) half as much as the full ratio would.
TARGET_FRACTION = 0.5
# No input is stretched more than this (a channel group that is almost always zero would otherwise get
# a huge constant), nor at all when the gain would be under 10 %.
MAX_SCALE = 64.0
MIN_SCALE = 1.1


@dataclass
class Junction:
    """A concatenation whose consumers are all 1x1 convolutions with constant kernels."""

    concat: str  # node name
    inputs: list[str]  # tensor names of the concatenated inputs, in order
    kernels: list[str]  # Const node names of the consuming convolutions' kernels


def _tensor_name(edge: str) -> str:
    return edge if ":" in edge else f"{edge}:0"


def _node_name(edge: str) -> str:
    return edge.lstrip("^").split(":")[0]


def junctions(graph_def) -> list[Junction]:
    """The concatenations `equalise` can rewrite, in graph order."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    consumers: dict[str, list] = {}  # data edges only: a control edge ("^name") reads no value
    for node in graph_def.node:
        for edge in node.input:
            if not edge.startswith("^"):
                consumers.setdefault(_node_name(edge), []).append(node)

    def constant_behind(edge: str, private: bool = False):
        """The Const node `edge` reads (through Identity nodes); with `private`, only if nothing else
        reads it or the Identity nodes on the way (a kernel shared elsewhere must stay as it is)."""
        node = nodes[_node_name(edge)]
        while True:
            if private and len(consumers.get(node.name, [])) > 1:
                return None
            if node.op != "Identity":
                return node if node.op == "Const" else None
            node = nodes[_node_name(node.input[0])]

    found = []
    for node in graph_def.node:
        if node.op != "ConcatV2":
            continue
        *inputs, axis_edge = node.input
        axis = constant_behind(axis_edge)
        if axis is None or int(tf.make_ndarray(axis.attr["value"].tensor)) not in (-1, 3):
            continue
        kernels = []
        for consumer in consumers.get(node.name, []):
            is_conv = consumer.op == "Conv2D" and consumer.attr["data_format"].s in (b"", b"NHWC")
            kernel = constant_behind(consumer.input[1], private=True) if is_conv else None
            shape = None if kernel is None else tf.make_ndarray(kernel.attr["value"].tensor).shape
            if kernel is None or _node_name(consumer.input[0]) != node.name or shape[:2] != (1, 1):
                kernels = []
                break
            kernels.append(kernel.name)
        if kernels:
            found.append(Junction(node.name, [_tensor_name(e) for e in inputs], kernels))
    return found


def measure_ranges(graph_def, input_name: str, samples, tensors: list[str]):
    """({tensor: max(x, 0) - min(x, 0) over `samples`}, {tensor: channels}) in float: the int8
    calibrator's range of each tensor (it too keeps zero in every range). `samples` are fed one at a
    time (the frozen graph's input has batch 1)."""
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    low = dict.fromkeys(tensors, 0.0)
    high = dict.fromkeys(tensors, 0.0)
    channels = {}
    with tf.compat.v1.Session(graph=graph) as session:
        for image in samples:
            values = session.run(tensors, {_tensor_name(input_name): image[None]})
            for name, value in zip(tensors, values):
                low[name] = min(low[name], float(np.min(value)))
                high[name] = max(high[name], float(np.max(value)))
                channels[name] = value.shape[-1]
    return {name: high[name] - low[name] for name in tensors}, channels


def choose_scales(
    ranges: dict[str, float], junction: Junction, fraction: float = TARGET_FRACTION
) -> dict[str, float]:
    """{input tensor: c} for the inputs of `junction` worth stretching to `fraction` of its widest
    input's range."""
    widest = max(ranges[name] for name in junction.inputs)
    scales = {}
    for name in junction.inputs:
        if ranges[name] <= 0:
            continue  # all zeros on the calibration data: nothing to gain, and no ratio
        scale = min(fraction * widest / ranges[name], MAX_SCALE)
        if scale >= MIN_SCALE:
            scales[name] = scale
    return scales


def fold(graph_def, junction: Junction, scales: dict[str, float], channels: dict[str, int]):
    """A copy of `graph_def` where each input in `scales` is multiplied by its c before `junction`'s
    concatenation and the matching rows of every consuming kernel are divided by c."""
    import numpy as np
    import tensorflow as tf

    graph_def = type(graph_def).FromString(graph_def.SerializeToString())
    nodes = {node.name: node for node in graph_def.node}
    concat = nodes[junction.concat]
    start, rows = 0, []
    for index, name in enumerate(junction.inputs):
        width = channels[name]
        if name in scales:
            scale = np.float32(scales[name])
            rows.append((slice(start, start + width), scale))
            prefix = f"{junction.concat}/equalised_input_{index}"
            constant = graph_def.node.add(name=f"{prefix}/scale", op="Const")
            constant.attr["dtype"].type = tf.float32.as_datatype_enum
            constant.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(scale, tf.float32))
            multiply = graph_def.node.add(
                name=prefix, op="Mul", input=[concat.input[index], constant.name]
            )
            multiply.attr["T"].type = tf.float32.as_datatype_enum
            concat.input[index] = multiply.name
        start += width
    for kernel_name in junction.kernels:
        value = nodes[kernel_name].attr["value"]
        kernel = tf.make_ndarray(value.tensor).copy()
        if kernel.shape[2] != start:
            raise ValueError(
                f"{kernel_name}: kernel of {kernel.shape[2]} input channels after "
                f"{junction.concat} of {start}"
            )
        for channel_rows, scale in rows:
            kernel[:, :, channel_rows, :] /= scale
        value.tensor.CopyFrom(tf.make_tensor_proto(kernel))
    return graph_def


def equalise(graph_def, input_name: str, samples):
    """(the rewritten GraphDef, {concat node: {input tensor: c}}): every junction's narrow inputs
    stretched to TARGET_FRACTION of its widest input's range on `samples`, the inverse folded into
    its kernels. No samples, or no junction: the graph as it was, and {}."""
    found = junctions(graph_def)
    if not found or not len(samples):
        return graph_def, {}
    tensors = sorted({name for junction in found for name in junction.inputs})
    ranges, channels = measure_ranges(graph_def, input_name, samples, tensors)
    applied = {}
    for junction in found:
        scales = choose_scales(ranges, junction)
        if scales:
            graph_def = fold(graph_def, junction, scales, channels)
            applied[junction.concat] = scales
    return graph_def, applied
