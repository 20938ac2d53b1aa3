"""MobileNetV2 Hourglass (the seed's `network_mv2_hourglass.py`).

Stem: MobileNetV2 down to 1/4. Then a recursive hourglass of `num_stages` levels: each level max
pools, runs five inverted residual blocks, recurses, projects to heatmaps, upsamples and adds a
skip branch from before the pool. Every level's sum `hourglass_out_<i>` is a heatmap estimate
(intermediate supervision, upsampled to 1/4 for the loss); the outermost, `hourglass_out_<n-1>`,
is the model's answer, at input / 4.
"""

import keras
from keras import layers

from pose.models.networks import INPUT_SIZE
from pose.models.networks.blocks import (
    _conv_block,
    _inverted_res_block,
    _inverted_res_stack,
    _max_pool,
    _resize_like,
    scaled_channels,
)

OUTPUT_STRIDE = 4
DEFAULT_WIDTH = 1.0
DEFAULT_STAGES = 4


def _stem(image, width: float, momentum: float, seed: bool):
    def channels(c):
        return scaled_channels(c, width)

    x = _conv_block(image, channels(16), 3, 2, "Conv2d_0", momentum, seed)
    x = _inverted_res_stack(x, [(1, channels(16), 1, 3)] * 2, "Conv2d_1", momentum, seed)
    return _inverted_res_stack(
        x, [(6, channels(24), 2, 3)] + [(6, channels(24), 1, 3)] * 4, "Conv2d_2", momentum, seed
    )


def _hourglass(
    x, level: int, width: float, num_keypoints: int, momentum: float, outputs: list, seed: bool
):
    """One hourglass level; appends its heatmaps to `outputs`, innermost first."""
    filters = scaled_channels(24, width)
    if level == 0:
        return _inverted_res_block(x, 6, filters, 1, 3, "hourglass_mid_0", momentum, seed)
    down = _max_pool(x, 2, f"hourglass_downsample_{level}")
    front = _inverted_res_stack(
        down, [(6, filters, 1, 3)] * 5, f"hourglass_front_{level}", momentum, seed
    )
    middle = _hourglass(front, level - 1, width, num_keypoints, momentum, outputs, seed)
    back = _inverted_res_block(
        middle, 6, num_keypoints, 1, 3, f"hourglass_back_{level - 1}", momentum, seed
    )
    jump = _inverted_res_stack(
        x,
        [(6, filters, 1, 3)] * 4 + [(6, num_keypoints, 1, 3)],
        f"hourglass_branch_jump_{level - 1}",
        momentum,
        seed,
    )
    up = _resize_like(back, jump, f"hourglass_upsample_{level - 1}", seed)
    out = layers.Add(name=f"hourglass_out_{level - 1}")([up, jump])
    outputs.append(out)
    return out


def build(
    *,
    num_keypoints: int,
    input_size: int = INPUT_SIZE,
    width: float = DEFAULT_WIDTH,
    num_stages: int = DEFAULT_STAGES,
    batch_norm_momentum: float = 0.99,
    seed_layers: bool = False,
) -> keras.Model:
    if input_size % 32:
        raise ValueError(f"mv2_hourglass: input_size {input_size} must be a multiple of 32")
    image = keras.Input((input_size, input_size, 3), name="image")
    stem = _stem(image, width, batch_norm_momentum, seed_layers)
    outputs: list = []
    final = _hourglass(
        stem, num_stages, width, num_keypoints, batch_norm_momentum, outputs, seed_layers
    )
    supervised = [
        _resize_like(out, final, f"upsample_for_loss_{index}", seed_layers)
        for index, out in enumerate(outputs[:-1])
    ]
    return keras.Model(image, supervised + [final], name="mv2_hourglass")
