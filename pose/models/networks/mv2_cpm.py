"""MobileNetV2 Convolutional Pose Machine (the seed's `network_mv2_cpm.py`).

Backbone: a width-scaled MobileNetV2 whose five levels (1/2 .. 1/32) are pooled or upsampled to
1/8 and concatenated. Stages: each a stack of three inverted residual blocks (3x3 kernels in
stage 0, 7x7 after) and two separable 1x1 blocks ending in `num_keypoints` heatmaps; every stage
after the first also sees the previous stage's heatmaps. Each stage's heatmaps are upsampled x4,
to input / 2, and supervised; the last one, `stage_<n-1>_out`, is the model's answer.

The defaults are the seed's training code (`network_mv2_cpm.py`) at width 0.75. The CPM it released
(`model-tiny`, anchors/pefm-cpm-192.tflite) is a slimmer variant, which the keyword
options reproduce layer for layer (experiments/mv2_cpm_192_tiny.yaml): width 0.5, backbone
expansion 4, stage expansion 3, 24-channel stage blocks; 0.277 G multiply-adds instead of 0.539.
`stage_kernel_size` is there because LiteRT's XNNPACK has no fast kernel for 7x7 depthwise
convolutions on x86 (BENCHMARKS.md): 5x5 keeps each stage's receptive field well beyond the
24x24 feature map at 192 and runs an order of magnitude faster there.
"""

import keras
from keras import layers

from pose.models.networks import INPUT_SIZE
from pose.models.networks.blocks import (
    _conv_block,
    _inverted_res_stack,
    _max_pool,
    _separable_block,
    _upsample,
    scaled_channels,
)

OUTPUT_STRIDE = 2
DEFAULT_WIDTH = 0.75
DEFAULT_STAGES = 6
# The seed's training code: MobileNetV2's expansion 6 in the backbone, 4 in the stages' second and
# third blocks, stage blocks of 32 x width channels, 7x7 depthwise kernels after stage 0.
DEFAULT_BACKBONE_EXPANSION = 6
DEFAULT_STAGE_EXPANSION = 4
DEFAULT_STAGE_KERNEL_SIZE = 7
ARCHITECTURE_OPTIONS = (
    "backbone_expansion",
    "stage_expansion",
    "stage_channels",
    "stage_kernel_size",
)


def _backbone(image, width: float, expansion: int, momentum: float, seed: bool):
    """MobileNetV2 levels at strides 2, 4, 8, 16, 32, brought to 1/8 and concatenated."""

    def channels(c):
        return scaled_channels(c, width)

    x = _conv_block(image, channels(32), 3, 2, "Conv2d_0", momentum, seed)
    level_0 = _inverted_res_stack(
        x, [(1, channels(16), 1, 3)] * 2, "MobilenetV2_part_0", momentum, seed
    )
    levels = [level_0]
    for part, filters in enumerate((24, 32, 64, 96), start=1):
        blocks = [(expansion, channels(filters), 2, 3)] + [(expansion, channels(filters), 1, 3)] * 4
        levels.append(
            _inverted_res_stack(levels[-1], blocks, f"MobilenetV2_part_{part}", momentum, seed)
        )
    return layers.Concatenate(name="MobilenetV2_concat")(
        [
            _max_pool(levels[0], 4, "mv2_0_max_pool"),
            _max_pool(levels[1], 2, "mv2_1_max_pool"),
            levels[2],
            _upsample(levels[3], 2, "mv2_3_upsample", seed),
            _upsample(levels[4], 4, "mv2_4_upsample", seed),
        ]
    )


def _cpm_stage(
    features,
    previous,
    stage: int,
    width: float,
    filters: int,
    expansion: int,
    kernel_size: int,
    num_keypoints: int,
    momentum: float,
    seed: bool,
):
    """One CPM stage: returns its heatmaps at 1/8 (fed to the next stage). Stage 0 always uses 3x3
    kernels, as in the seed; `kernel_size` is that of the later stages."""
    x = (
        features
        if previous is None
        else layers.Concatenate(name=f"stage_{stage}_concat")([features, previous])
    )
    kernel_size, head_channels = (3, 512) if stage == 0 else (kernel_size, 128)
    x = _inverted_res_stack(
        x,
        [
            (2, filters, 1, kernel_size),
            (expansion, filters, 1, kernel_size),
            (expansion, filters, 1, kernel_size),
        ],
        f"stage_{stage}_mv2",
        momentum,
        seed,
    )
    x = _separable_block(
        x, scaled_channels(head_channels, width), f"stage_{stage}_mv1_0", momentum, seed_layers=seed
    )
    return _separable_block(
        x, num_keypoints, f"stage_{stage}_mv1_1", momentum, activation=False, seed_layers=seed
    )


def build(
    *,
    num_keypoints: int,
    input_size: int = INPUT_SIZE,
    width: float = DEFAULT_WIDTH,
    num_stages: int = DEFAULT_STAGES,
    batch_norm_momentum: float = 0.99,
    backbone_expansion: int = DEFAULT_BACKBONE_EXPANSION,
    stage_expansion: int = DEFAULT_STAGE_EXPANSION,
    stage_channels: int | None = None,
    stage_kernel_size: int = DEFAULT_STAGE_KERNEL_SIZE,
    seed_layers: bool = False,
) -> keras.Model:
    """stage_channels None = the seed's 32 x width (at least 8)."""
    if input_size % 32:
        raise ValueError(f"mv2_cpm: input_size {input_size} must be a multiple of 32")
    if stage_kernel_size < 1 or stage_kernel_size % 2 == 0:
        raise ValueError(f"mv2_cpm: stage_kernel_size {stage_kernel_size} must be odd and positive")
    stage_channels = scaled_channels(32, width) if stage_channels is None else stage_channels
    image = keras.Input((input_size, input_size, 3), name="image")
    features = _backbone(image, width, backbone_expansion, batch_norm_momentum, seed_layers)
    outputs, previous = [], None
    for stage in range(num_stages):
        previous = _cpm_stage(
            features,
            previous,
            stage,
            width,
            stage_channels,
            stage_expansion,
            stage_kernel_size,
            num_keypoints,
            batch_norm_momentum,
            seed_layers,
        )
        outputs.append(_upsample(previous, 4, f"stage_{stage}_out", seed_layers))
    return keras.Model(image, outputs, name="mv2_cpm")
