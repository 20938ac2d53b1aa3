"""The pose networks and their identity.

`build_model(name, ...)` (or `build_from_config(cfg)`) returns a Keras model whose outputs are the
list of per-stage heatmaps (last = final), and `summary(model)` prints parameters and FLOPs.
`identity(model_or_name)` says which architecture a model, a name or an exported file is: its family,
the seed's name for its output node and the seed's released file of that family. Nothing else
guesses a model's kind from its name.

Compute is counted analytically per layer: multiply-adds of the convolutions (Conv2D,
DepthwiseConv2D, Dense); FLOPs = 2 x multiply-adds (what TF's profiler reports). The seed's
README says "0.5G" for both models but mixes units: its mv2_cpm source at width 0.75 and 192 is
0.54 G multiply-adds (1.08 GFLOPs), its hourglass 0.268 G multiply-adds (0.54 GFLOPs), exactly the
count of the released hourglass in the seed's anchors. Ours match both (tests/test_networks.py).

The architecture modules (and so Keras) load on first use, so reading a model's identity costs no
TensorFlow import (publish, in the image without TensorFlow, needs only that). Whoever loads a saved
model.keras calls `register_custom_layers()` first.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pose.data import keypoints

if (
    TYPE_CHECKING
):  # keras is imported where a model is built, so that the identity needs no TensorFlow
    import keras

ARCHITECTURES = ("mv2_cpm", "mv2_hourglass")
INPUT_SIZE = 192  # the seed's input side (its released files, its configs): every default here


@dataclass(frozen=True)
class Identity:
    """What an architecture is, beyond how to build it."""

    name: str  # the config's `model`, e.g. "mv2_cpm"
    family: str  # "cpm" or "hourglass": models of a family are compared with each other
    title: str  # for people (model card)
    seed_output_name: (
        str  # the seed's output node, which our exports keep so the seed's apps load them
    )
    seed_release: str  # the stem of the seed's released .tflite of this family (the anchors)
    seed_outputs: str  # the seed's output node names of any stage count (a regular expression)
    seed_config: str  # the experiment that builds the seed's released structure

    def is_seed_output(self, name: str) -> bool:
        return re.fullmatch(self.seed_outputs, name) is not None


IDENTITIES = {
    "mv2_cpm": Identity(
        "mv2_cpm",
        "cpm",
        "MobileNetV2 Convolutional Pose Machine",
        "Convolutional_Pose_Machine/stage_5_out",
        "pefm-cpm-192",
        r"Convolutional_Pose_Machine/stage_\d+_out",
        "experiments/mv2_cpm_192_tiny.yaml",
    ),
    "mv2_hourglass": Identity(
        "mv2_hourglass",
        "hourglass",
        "MobileNetV2 Hourglass",
        "hourglass_out_3",
        "pefm-hourglass-192",
        r"hourglass_out_\d+",
        "experiments/mv2_hourglass_192.yaml",
    ),
}


def identity_of_seed_output(output_name: str) -> Identity | None:
    """The architecture whose seed release names its output `output_name` (any stage count)."""
    return next((known for known in IDENTITIES.values() if known.is_seed_output(output_name)), None)


class UnknownModel(ValueError):
    """A name that is no architecture of ours, no exported file of one and no seed release."""


def identity(model_or_name) -> Identity:
    """The identity of a Keras model (by its name), an architecture name ("mv2_cpm"), an exported file's
    stem ("<model>_<variant>", docs/ARTIFACTS.md) or a seed release's stem ("pefm-cpm-192")."""
    name = model_or_name if isinstance(model_or_name, str) else model_or_name.name
    if name in IDENTITIES:
        return IDENTITIES[name]
    for known in IDENTITIES.values():
        if name == known.seed_release or name.startswith(known.name + "_"):
            return known
    raise UnknownModel(
        f"unknown model {name!r}; expected one of {list(ARCHITECTURES)}, a "
        f"<model>_<variant> of one, or a seed release ({', '.join(i.seed_release for i in IDENTITIES.values())})"
    )


def register_custom_layers() -> None:
    """Registers the custom layers (blocks.SeedBilinearUpsampling) that keras.models.load_model must know."""
    importlib.import_module("pose.models.networks.blocks")


def _architecture(name: str):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return importlib.import_module(f"pose.models.networks.{name}")


def output_stride(name: str) -> int:
    """Input pixels per heatmap pixel: 2 for the CPM, 4 for the hourglass."""
    return _architecture(name).OUTPUT_STRIDE


def default_width(name: str) -> float:
    return _architecture(name).DEFAULT_WIDTH


def default_stages(name: str) -> int:
    return _architecture(name).DEFAULT_STAGES


# Structure options every model takes. seed_layers: the activations and resizing of the seed's slim
# code and released files (pose.models.networks.blocks), which a warm start from those files needs.
COMMON_OPTIONS = ("seed_layers",)


def architecture_options(name: str) -> tuple[str, ...]:
    """The structure options a model takes beyond width and stages (build_model's keywords)."""
    return (*getattr(_architecture(name), "ARCHITECTURE_OPTIONS", ()), *COMMON_OPTIONS)


def build_model(
    name: str,
    input_size: int = INPUT_SIZE,
    width: float | None = None,
    num_stages: int | None = None,
    num_keypoints: int | None = None,
    batch_norm_momentum: float = 0.99,
    **options,
) -> keras.Model:
    """width / num_stages None = the seed's setting for that model (CPM 0.75 / 6, hourglass 1.0 / 4);
    num_keypoints None = the default keypoint set's (pose.data.keypoints.default()).

    options: the model's structure options (architecture_options(name), e.g. the CPM's
    stage_kernel_size); a None value means the seed's setting, an option the model lacks is an error.
    """
    architecture = _architecture(name)
    unknown = sorted(set(options) - set(architecture_options(name)))
    if unknown:
        raise ValueError(
            f"{name} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(architecture_options(name)) or 'none'}"
        )
    return architecture.build(
        input_size=input_size,
        width=architecture.DEFAULT_WIDTH if width is None else width,
        num_stages=architecture.DEFAULT_STAGES if num_stages is None else num_stages,
        num_keypoints=keypoints.default().num_keypoints if num_keypoints is None else num_keypoints,
        batch_norm_momentum=batch_norm_momentum,
        **{key: value for key, value in options.items() if value is not None},
    )


def build_from_config(cfg) -> keras.Model:
    """The network a training config (pose.training.config.TrainConfig) describes."""
    return build_model(
        cfg.model,
        cfg.input_size,
        cfg.width,
        cfg.num_stages,
        cfg.num_keypoints,
        cfg.batch_norm_momentum,
        **cfg.architecture_options(),
    )


def stage_heatmaps(model: keras.Model, images, training: bool = False) -> list:
    """The model's per-stage heatmaps as a list, also for one stage (Keras returns a bare tensor then)."""
    outputs = model(images, training=training)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def count_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image through the model's convolutions and dense layers."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output.shape
            in_channels = layer.input.shape[-1] // layer.groups
            total += (
                height * width * filters * layer.kernel_size[0] * layer.kernel_size[1] * in_channels
            )
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def summary(model: keras.Model, print_fn=print) -> dict:
    """Prints and returns parameters, multiply-adds, FLOPs, input and per-stage output shapes."""
    multiply_adds = count_multiply_adds(model)
    info = {
        "model": model.name,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        "multiply_adds": multiply_adds,
        "flops": 2 * multiply_adds,
        "input_shape": tuple(model.input.shape[1:]),
        "output_shapes": [tuple(o.shape[1:]) for o in model.outputs],
        "output_names": [o._keras_history.operation.name for o in model.outputs],
    }
    print_fn(
        f"{info['model']}: input {info['input_shape']}, {len(model.outputs)} stage outputs of "
        f"{info['output_shapes'][-1]}, final {info['output_names'][-1]}"
    )
    print_fn(
        f"  parameters {info['parameters']:,} (trainable {info['trainable_parameters']:,}), "
        f"{multiply_adds / 1e9:.3f} G multiply-adds = {info['flops'] / 1e9:.3f} GFLOPs"
    )
    return info


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pose.models.networks", description="Print a network's size and compute."
    )
    parser.add_argument("model", choices=sorted(ARCHITECTURES))
    parser.add_argument("--input-size", type=int, default=INPUT_SIZE)
    parser.add_argument("--width", type=float)
    parser.add_argument("--num-stages", type=int)
    parser.add_argument(
        "--keypoints",
        default=keypoints.DEFAULT,
        help="the keypoint set (a preset name or a YAML file) whose joints the heatmaps are",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a structure option, e.g. stage_kernel_size=5 (repeatable)",
    )
    args = parser.parse_args(argv)
    options = {key: int(value) for key, _, value in (item.partition("=") for item in args.set)}
    summary(
        build_model(
            args.model,
            args.input_size,
            args.width,
            args.num_stages,
            keypoints.load(args.keypoints).num_keypoints,
            **options,
        )
    )
