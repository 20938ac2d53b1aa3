"""Building blocks of the MobileNetV2 pose networks, one function per block.

Written in the style of keras.applications.MobileNetV2: each function takes a tensor and returns
a tensor, and names its layers `<name>_<part>` so a checkpoint or a graph reads like the model.
Only standard Keras layers are used, so `keras.saving.load_model` needs no custom objects and
the graph converts to TFLite as is; the one exception is `seed_layers`' TF1-style bilinear resize
(`SeedBilinearUpsampling`), registered with Keras here, so loading such a model needs `import pose.models.networks`.

`seed_layers=True` builds the layers the seed's slim code builds (and its released files hold): its
batch norms all end in ReLU6 (the stem, the linear projection and the heatmap head too), its depthwise
convolutions have no batch norm and end in plain ReLU, and its bilinear upsampling is TF1's
`resize_bilinear` (no half-pixel centres). Our depthwise convolutions keep a batch norm, which a warm
start from the released files sets to identity (pose.models.warm_start).
"""

import keras
from keras import layers

# The seed trained with Xavier initialisation; BN momentum is configurable because the seed's
# 0.999 leaves the moving statistics far from the batch statistics in a short run.
_INIT = "glorot_uniform"


def scaled_channels(channels: int, width: float) -> int:
    """The seed's width rule: `max(int(channels * width), 8)`."""
    return max(int(channels * width), 8)


@keras.saving.register_keras_serializable(package="pose")
class SeedBilinearUpsampling(layers.Layer):
    """Bilinear upsampling by an integer factor as TF1's resize_bilinear did it (no half-pixel centres,
    corners not aligned): what the seed's graphs, and so its released files, compute."""

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        import tensorflow as tf

        size = tf.shape(x)[1:3] * self.factor
        return tf.compat.v1.image.resize_bilinear(
            x, size, align_corners=False, half_pixel_centers=False
        )

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (
            batch,
            None if height is None else height * self.factor,
            None if width is None else width * self.factor,
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _conv_block(
    x,
    filters: int,
    kernel_size: int,
    stride: int,
    name: str,
    momentum: float,
    seed_layers: bool = False,
):
    """Full convolution, BN, ReLU (ReLU6 in the seed's layers): the network's stem (the seed's `convb`)."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=_INIT,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(6.0 if seed_layers else None, name=f"{name}_relu")(x)


def _inverted_res_block(
    x,
    expansion: int,
    filters: int,
    stride: int,
    kernel_size: int,
    name: str,
    momentum: float,
    seed_layers: bool = False,
):
    """MobileNetV2 inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection.

    As in the seed, the expansion conv is kept even at expansion 1 and the residual is added
    whenever input and output channels match.
    """
    in_channels = x.shape[-1]
    shortcut = x
    x = layers.Conv2D(
        expansion * in_channels, 1, use_bias=False, kernel_initializer=_INIT, name=f"{name}_expand"
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_expand_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=_INIT,
        name=f"{name}_depthwise",
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(None if seed_layers else 6.0, name=f"{name}_depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=_INIT, name=f"{name}_project")(
        x
    )
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_project_bn")(x)
    if seed_layers:
        x = layers.ReLU(6.0, name=f"{name}_project_relu")(x)
    if in_channels == filters and stride == 1:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def _inverted_res_stack(x, blocks, name: str, momentum: float, seed_layers: bool = False):
    """A run of inverted residual blocks, `blocks` = [(expansion, filters, stride, kernel), ...]."""
    for index, (expansion, filters, stride, kernel_size) in enumerate(blocks):
        x = _inverted_res_block(
            x, expansion, filters, stride, kernel_size, f"{name}_{index}", momentum, seed_layers
        )
    return x


def _separable_block(
    x, filters: int, name: str, momentum: float, activation: bool = True, seed_layers: bool = False
):
    """1x1 depthwise then 1x1 pointwise (the seed's `separable_conv` with kernel 1).

    With activation=False it is the heatmap head: linear with a bias and no BN, so heatmaps are
    free to take the target's range (the seed ended in BN + ReLU6, which can die at zero, and
    seed_layers keeps that).
    """
    x = layers.DepthwiseConv2D(
        1, use_bias=False, depthwise_initializer=_INIT, name=f"{name}_depthwise"
    )(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    if not activation and not seed_layers:
        return layers.Conv2D(filters, 1, kernel_initializer=_INIT, name=f"{name}_pointwise")(x)
    x = layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer=_INIT, name=f"{name}_pointwise"
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_pointwise_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pointwise_relu")(x)


def _max_pool(x, factor: int, name: str):
    return layers.MaxPooling2D(factor, strides=factor, padding="same", name=name)(x)


def _upsample(x, factor: int, name: str, seed_layers: bool = False):
    if seed_layers:
        return SeedBilinearUpsampling(factor, name=name)(x)
    return layers.UpSampling2D(factor, interpolation="bilinear", name=name)(x)


def _resize_like(x, reference, name: str, seed_layers: bool = False):
    """Bilinear resize of x to reference's height and width (sizes that do not halve evenly)."""
    height, width = reference.shape[1], reference.shape[2]
    if (x.shape[1], x.shape[2]) == (height, width):
        return x
    if (
        height % x.shape[1] == 0
        and width % x.shape[2] == 0
        and height // x.shape[1] == width // x.shape[2]
    ):
        return _upsample(x, height // x.shape[1], name, seed_layers)
    return layers.Resizing(height, width, interpolation="bilinear", name=name)(x)
