"""LiteRT (ai_edge_litert) helpers shared by the tflite and evaluate steps: load, run, time."""

import os
import time
from pathlib import Path

import numpy as np

# Every .tflite file is a FlatBuffer whose file identifier, at bytes 4..8, is "TFL3".
_TFLITE_IDENTIFIER = b"TFL3"


class NotTFLiteError(ValueError):
    """A file given as a model is not a TensorFlow Lite FlatBuffer."""


# "xnnpack": LiteRT's default CPU path (XNNPACK delegate); "builtin": its own optimised kernels only.
# Both are measured because XNNPACK's int8 kernels are not always the faster: on x86 its int8 7x7
# depthwise convolution (the CPM stages) runs an order of magnitude slower than the builtin one.
RUNTIMES = ("xnnpack", "builtin")


def load(path: str | os.PathLike, num_threads: int | None = None, runtime: str = "xnnpack"):
    """An allocated LiteRT Interpreter for `path`; NotTFLiteError when the file is not TFLite."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = Path(path)
    with open(path, "rb") as file:
        header = file.read(8)
    if len(header) < 8 or header[4:8] != _TFLITE_IDENTIFIER:
        raise NotTFLiteError(
            f"{path}: not a TFLite model (file identifier {header[4:8]!r}, expected "
            f"{_TFLITE_IDENTIFIER!r})"
        )
    try:
        resolver = {
            "xnnpack": OpResolverType.AUTO,
            "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        }[runtime]
        interpreter = Interpreter(
            model_path=str(path),
            num_threads=num_threads or 1,
            experimental_op_resolver_type=resolver,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise NotTFLiteError(f"{path}: LiteRT cannot load it: {error}") from error
    return interpreter


class NoHeatmapOutput(ValueError):
    """A model of several outputs none or more than one of which has a heatmap's shape."""


def input_shape(interpreter) -> tuple[int, ...]:
    """[1, H, W, 3] of the model's image input."""
    return tuple(int(d) for d in interpreter.get_input_details()[0]["shape"])


def heatmap_output(interpreter) -> dict:
    """The output detail of the model's heatmaps, picked by shape, never by name: the sole output of a
    model of one (the seed's), else the first output [1, h, h, K] with h a divisor of the input's side
    smaller than it. Ours with stages give each stage's heatmaps, the final first; BlazePose gives
    landmarks 1x195, a flag 1x1, a segmentation mask 1x256x256x1 (h not smaller: skipped), heatmaps
    1x64x64x39 and world landmarks 1x117."""
    outputs = interpreter.get_output_details()
    if len(outputs) == 1:
        return outputs[0]
    side = input_shape(interpreter)[1]
    for detail in outputs:
        shape = [int(d) for d in detail["shape"]]
        if (
            len(shape) == 4
            and shape[0] == 1
            and shape[1] == shape[2] < side
            and side % shape[1] == 0
        ):
            return detail
    shapes = ", ".join(str([int(d) for d in detail["shape"]]) for detail in outputs)
    raise NoHeatmapOutput(
        f"none of the model's {len(outputs)} outputs ({shapes}) has a heatmap's shape [1, h, h, K] "
        f"(h < {side}, dividing it)"
    )


def output_shape(interpreter) -> tuple[int, ...]:
    """[1, h, w, K] of the model's heatmap output (heatmap_output)."""
    return tuple(int(d) for d in heatmap_output(interpreter)["shape"])


def io_description(interpreter) -> dict:
    """Names, shapes, dtypes and (scale, zero point) of the first input and the heatmap output, for
    metadata."""

    def describe(detail):
        scale, zero_point = detail["quantization"]
        return {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    return {
        "input": describe(interpreter.get_input_details()[0]),
        "output": describe(heatmap_output(interpreter)),
    }


def run(interpreter, images: np.ndarray) -> np.ndarray:
    """Heatmaps [N, h, w, K] float32 for float images [N, H, W, 3] in [0, 1], one image per invoke.

    Quantised (int8 / uint8) inputs and outputs are converted with the tensors' own scale and zero point.
    A model of several outputs gives its heatmap output (heatmap_output), all its channels.
    """
    input_detail = interpreter.get_input_details()[0]
    output_detail = heatmap_output(interpreter)
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    in_dtype = np.dtype(input_detail["dtype"])
    outputs = []
    for image in np.asarray(images, dtype=np.float32):
        tensor = image[None]
        if in_dtype.kind in "iu":
            info = np.iinfo(in_dtype)
            tensor = np.clip(np.round(tensor / in_scale + in_zero), info.min, info.max)
        interpreter.set_tensor(input_detail["index"], tensor.astype(in_dtype))
        interpreter.invoke()
        heatmaps = interpreter.get_tensor(output_detail["index"])[0]
        if np.dtype(output_detail["dtype"]).kind in "iu":
            heatmaps = (heatmaps.astype(np.float32) - out_zero) * out_scale
        outputs.append(heatmaps.astype(np.float32))
    return np.stack(outputs)


# A time-boxed latency measurement still times at least this many runs (its median stays a median).
MIN_TIMED_RUNS = 5


def latency(
    path: str | os.PathLike,
    num_threads: int,
    runs: int = 50,
    warmup: int = 5,
    seed: int = 0,
    runtime: str = "xnnpack",
    max_seconds: float | None = None,
) -> dict:
    """Median and p90 of one invoke in milliseconds over `runs` runs after `warmup` runs.

    With `max_seconds`, the timed runs stop once they have taken that long (after at least
    MIN_TIMED_RUNS), and the warm-up once it has taken a fifth of it (after at least one run): a
    configuration a hundred times slower than the others (full int8 on the builtin kernels with two
    threads on a loaded 2-core machine: 2.5 s an invoke) then costs seconds, not minutes. `runs` in the
    result is the number of runs timed."""
    interpreter = load(path, num_threads=num_threads, runtime=runtime)
    detail = interpreter.get_input_details()[0]
    dtype = np.dtype(detail["dtype"])
    rng = np.random.default_rng(seed)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        sample = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
    else:
        sample = rng.random(detail["shape"], dtype=np.float32).astype(dtype)
    interpreter.set_tensor(detail["index"], sample)
    warm_until = None if max_seconds is None else time.perf_counter() + max_seconds / 5
    for _ in range(min(warmup, max(runs, 1))):
        interpreter.invoke()
        if warm_until is not None and time.perf_counter() > warm_until:
            break
    times = []
    stop_at = None if max_seconds is None else time.perf_counter() + max_seconds
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - started) * 1000.0)
        if stop_at is not None and len(times) >= MIN_TIMED_RUNS and time.perf_counter() > stop_at:
            break
    return {
        "threads": num_threads,
        "runs": len(times),
        "runtime": runtime,
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
    }


def all_threads() -> int:
    return os.cpu_count() or 1
