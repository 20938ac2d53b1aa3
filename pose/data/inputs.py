"""The tf.data input pipeline that train and evaluate import.

Takes shard folders (each with index.json, see docs/ARTIFACTS.md); gives batches for training
(augmented images, Gaussian heatmaps, per-joint loss weights) or for evaluation (centre crops
with the transform back to the original image). All of it is TensorFlow ops inside parallel `map`
calls, no Python per example. Training works a batch of records at a time (training_batch):
parse, augmentation draws, transforms and keypoints as [B] vectors; per example only decode and
one affine warp (with the flip); colour jitter and heatmaps for the whole batch, fused by XLA.

Geometry: a record holds a square person crop of side C. The network input is S x S. Input pixel
p maps to crop pixel  M @ p  with M = centre_crop @ rotate_scale @ flip @ centre_input(translation);
with no augmentation the whole crop is resized to the input (the person box centred, scaled to fit).

Speed (benchmarks/input_pipeline.py, BENCHMARKS.md): TensorFlow's only general warp kernel,
ImageProjectiveTransformV3, costs ~20 ns per output value on CPU, twice the cost of decoding the
JPEG. So the warp takes it only when the example is rotated; scale, translation and flip alone are
an axis-aligned resample that `crop_and_resize` does about 2.5x faster, and, as in HRNet and
MMPose, rotation is drawn for a fraction of the examples (`rotation_probability`, default 0.6).
Crops that the warp would shrink at least 2x anyway are decoded at half size by libjpeg's DCT
scaling, which averages 2x2 pixels rather than skipping them.
"""

import dataclasses
import math
import random

import numpy as np
import tensorflow as tf

from pose.codec import DEFAULT_SIGMA, HeatmapCodec
from pose.data import keypoints as keypoint_sets
from pose.data import records, shard_index

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation ranges; train's YAML config sets them (`Augmentation.from_dict`)."""

    scale: tuple[float, float] = (0.75, 1.25)  # > 1 zooms in (the person appears larger)
    rotation_degrees: float = 30.0  # uniform in +- this ...
    rotation_probability: float = 0.6  # ... for this fraction of the examples (HRNet, MMPose: 0.6)
    translation: float = 0.1  # uniform shift in +- this fraction of the input size
    flip_probability: float = 0.5
    brightness: float = 0.15  # additive, in [0, 1] pixel units
    contrast: float = 0.3  # factor in 1 +- this
    saturation: float = 0.3  # factor in 1 +- this
    hue_degrees: float = 10.0  # rotation of the chroma plane in +- this

    @classmethod
    def from_dict(cls, values: dict | None) -> "Augmentation":
        values = dict(values or {})
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown augmentation settings {sorted(unknown)}; known: "
                f"{[field.name for field in dataclasses.fields(cls)]}"
            )
        if "scale" in values:
            values["scale"] = tuple(float(v) for v in values["scale"])
        return cls(**values)


NO_AUGMENTATION = Augmentation(
    scale=(1.0, 1.0),
    rotation_degrees=0.0,
    rotation_probability=0.0,
    translation=0.0,
    flip_probability=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue_degrees=0.0,
)


# ---- geometry -------------------------------------------------------------------------------------
# Every function here takes scalars for one example or [B] tensors for a batch (matrices [..., 3, 3]).


def _affine(row0, row1) -> tf.Tensor:
    """[..., 3, 3] from two rows of scalars or [B] tensors, last row (0, 0, 1)."""
    like = tf.zeros_like(tf.cast(row0[2], tf.float32) + tf.cast(row1[2], tf.float32))
    full = lambda value: tf.cast(value, tf.float32) + like  # noqa: E731
    return tf.stack(
        [
            tf.stack([full(v) for v in row0], -1),
            tf.stack([full(v) for v in row1], -1),
            tf.stack([like, like, like + 1.0], -1),
        ],
        -2,
    )


def input_to_crop(
    crop_size, input_size: int, scale=1.0, rotation_degrees=0.0, translation=(0.0, 0.0), flip=False
) -> tf.Tensor:
    """Affine input pixel (x, y, 1) -> crop pixel: centre the input on the crop's centre, mirror it
    (flip), rotate and shrink it by crop_size / input_size / scale. scale > 1 zooms in; translation
    (input pixels) moves the person."""
    crop_size = tf.cast(crop_size, tf.float32)
    zoom = crop_size / input_size / tf.cast(scale, tf.float32)
    angle = tf.cast(rotation_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    half_input = (input_size - 1) / 2.0
    x0, y0 = (
        half_input + tf.cast(translation[0], tf.float32),
        half_input + tf.cast(translation[1], tf.float32),
    )
    centre = (crop_size - 1.0) / 2.0
    return _affine(
        [mirror * cos, -sin, centre - mirror * cos * x0 + sin * y0],
        [mirror * sin, cos, centre - mirror * sin * x0 - cos * y0],
    )


def apply_affine(matrix: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """matrix [..., 2 or 3, 3] applied to points [..., K, 2]."""
    return (
        tf.linalg.matmul(points, matrix[..., :2, :2], transpose_b=True) + matrix[..., None, :2, 2]
    )


def crop_to_decoded(decode_ratio) -> tf.Tensor:
    """Crop pixel -> pixel of the crop decoded at 1/decode_ratio: decoded pixel i averages crop
    pixels ratio*i .. ratio*i + ratio - 1, so their centres line up."""
    r = tf.cast(decode_ratio, tf.float32)
    return _affine([1.0 / r, 0.0, (1.0 - r) / (2.0 * r)], [0.0, 1.0 / r, (1.0 - r) / (2.0 * r)])


def _sample_axis_aligned(image: tf.Tensor, matrix: tf.Tensor, input_size: int) -> tf.Tensor:
    """Bilinear resample for a matrix without rotation (scale, translation, flip): crop_and_resize
    with the box whose corners are the images of the input's corner pixels (a flip is a box with
    x1 > x2). Outside the image: 0."""
    last = tf.cast(tf.shape(image)[:2] - 1, tf.float32)
    far = float(input_size - 1)
    box = tf.stack(
        [
            matrix[1, 2] / last[0],
            matrix[0, 2] / last[1],
            (matrix[1, 1] * far + matrix[1, 2]) / last[0],
            (matrix[0, 0] * far + matrix[0, 2]) / last[1],
        ]
    )
    resampled = tf.image.crop_and_resize(
        image[None], box[None], [0], [input_size, input_size], extrapolation_value=0.0
    )[0]
    return (
        tf.cast(tf.round(resampled), image.dtype)
        if image.dtype.is_integer
        else tf.cast(resampled, image.dtype)
    )


def _sample_projective(image: tf.Tensor, matrix: tf.Tensor, input_size: int) -> tf.Tensor:
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.reshape(matrix, [9])[None, :8],
        output_shape=[input_size, input_size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def resample(image: tf.Tensor, matrix: tf.Tensor, input_size: int) -> tf.Tensor:
    """image [H, W, 3] -> [S, S, 3] of the same dtype, output pixel p taken (bilinear) from image
    pixel matrix @ p, black outside."""
    rotated = tf.logical_or(tf.not_equal(matrix[0, 1], 0.0), tf.not_equal(matrix[1, 0], 0.0))
    return tf.cond(
        rotated,
        lambda: _sample_projective(image, matrix, input_size),
        lambda: _sample_axis_aligned(image, matrix, input_size),
    )


def swap_left_right(flip, keypoints: tf.Tensor, visibility: tf.Tensor, flip_index):
    """Where flip (a scalar, or [B]), left and right joints trade places (flip_index: the keypoint
    set's): keypoints [..., K, 2], visibility [..., K]."""
    flip = tf.cast(flip, tf.bool)[..., None]
    flip_index = list(flip_index)
    keypoints = tf.where(flip[..., None], tf.gather(keypoints, flip_index, axis=-2), keypoints)
    return keypoints, tf.where(flip, tf.gather(visibility, flip_index, axis=-1), visibility)


def warp_person(
    image: tf.Tensor,
    keypoints: tf.Tensor,
    visibility: tf.Tensor,
    input_size: int,
    scale=1.0,
    rotation_degrees=0.0,
    translation=(0.0, 0.0),
    flip=False,
    decode_ratio=1,
    flip_index=None,
):
    """One affine warp of a crop [C, C, 3] to the input [S, S, 3] (bilinear, black outside), with the
    keypoints [K, 2] in crop pixels following it; a flip also swaps left and right joints.
    decode_ratio: the crop was decoded at 1/decode_ratio of its size (image [C/r, C/r, 3]); keypoints
    and the returned matrix stay in full crop pixels. flip_index: the keypoint set's (needed when
    flipping).

    Returns (image [S, S, 3] of the input's dtype, keypoints [K, 2] in input pixels,
    visibility [K], matrix 3x3 input -> crop)."""
    crop_size = tf.shape(image)[0] * tf.cast(decode_ratio, tf.int32)
    matrix = input_to_crop(crop_size, input_size, scale, rotation_degrees, translation, flip)
    warped = resample(image, crop_to_decoded(decode_ratio) @ matrix, input_size)
    points = apply_affine(tf.linalg.inv(matrix), keypoints)
    if flip_index is not None:
        points, visibility = swap_left_right(flip, points, visibility, flip_index)
    elif flip is not False:
        raise ValueError("warp_person: a flip needs the keypoint set's flip_index")
    return warped, points, visibility, matrix


def joint_weights(
    keypoints: tf.Tensor, visibility: tf.Tensor, input_size: int, set_weights=None
) -> tf.Tensor:
    """The loss weight of each joint: the keypoint set's joint weight (1.0 where it gives none) for
    labelled joints inside the input, else 0.0: [K] float32."""
    inside = tf.reduce_all((keypoints >= 0.0) & (keypoints <= input_size - 1.0), axis=-1)
    weights = tf.cast(inside & (visibility > 0), tf.float32)
    if set_weights is not None and any(w != 1.0 for w in set_weights):
        weights = weights * tf.constant(list(set_weights), tf.float32)
    return weights


# ---- colour ------------------------------------------------------------------------------------

# numpy, not tf.constant: a TensorFlow op at import time starts TensorFlow's runtime, after which
# MultiWorkerMirroredStrategy can no longer be set up (train creates it first thing: pose/training/distribution.py).
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def colour_matrix(saturation, hue_degrees) -> tf.Tensor:
    """[..., 3, 3] RGB -> RGB that scales (saturation) and rotates (hue) the chroma plane of YIQ."""
    angle = tf.cast(hue_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    zero = tf.zeros_like(cos)
    chroma = tf.stack(
        [
            tf.stack([zero + 1.0, zero, zero], -1),
            tf.stack([zero, cos, -sin], -1),
            tf.stack([zero, sin, cos], -1),
        ],
        -2,
    )
    return tf.constant(_YIQ_TO_RGB) @ chroma @ tf.constant(_RGB_TO_YIQ)


def apply_colour(
    images: tf.Tensor,
    matrix: tf.Tensor,
    contrast: tf.Tensor,
    brightness: tf.Tensor,
    scale: float = 1.0,
) -> tf.Tensor:
    """images [B, H, W, 3] (pixel values x scale in [0, 1]), per image a colour matrix [B, 3, 3],
    contrast [B] and brightness [B] -> float32 [B, H, W, 3] in [0, 1]. Every adjustment is linear, so
    saturation and hue, contrast (around the mean luminance) and brightness fold into one 3x3 matrix
    and one offset per image: a single pass over the pixels, far cheaper than a round trip through HSV."""
    images = tf.cast(images, tf.float32)
    colour = matrix * scale
    mean_pixel = tf.reduce_mean(images, axis=[1, 2])  # [B, 3]
    mean_luminance = tf.linalg.matvec(colour, mean_pixel) @ tf.constant(
        _RGB_TO_YIQ[0][:, None]
    )  # [B, 1]
    offset = (1.0 - contrast[:, None]) * mean_luminance + brightness[:, None]  # [B, 1]
    # Three broadcast multiply-adds rather than a contraction over 3 channels: XLA fuses them with
    # the cast, offset and clip into one pass (an einsum here is 3x slower).
    weights = (colour * contrast[:, None, None])[:, None, None]  # [B, 1, 1, 3, 3]
    jittered = (
        images[..., 0:1] * weights[..., 0]
        + images[..., 1:2] * weights[..., 1]
        + images[..., 2:3] * weights[..., 2]
        + offset[:, None, None, :]
    )
    return tf.clip_by_value(jittered, 0.0, 1.0)


# ---- examples ------------------------------------------------------------------------------------


def _decode(encoded: tf.Tensor, ratio=1) -> tf.Tensor:
    """The JPEG at 1/ratio of its size; ratio 1 or 2, a tensor (per example) or an int."""
    if isinstance(ratio, int):
        return tf.io.decode_jpeg(encoded, channels=3, ratio=ratio)
    return tf.cond(ratio == 2, lambda: _decode(encoded, 2), lambda: _decode(encoded, 1))


def _decode_ratio(crop_size: tf.Tensor, input_size: int, largest_scale: float = 1.0) -> tf.Tensor:
    """2 for a crop that every allowed scale shrinks at least 2x (it loses nothing decoded at half
    size), else 1. Training and evaluation share the rule, so evaluation sees the kind of pixels
    training learnt from."""
    return tf.where(crop_size >= int(math.ceil(2 * input_size * largest_scale)), 2, 1)


def _random_params(seed: tf.Tensor, augmentation: Augmentation, input_size: int, count) -> dict:
    """Augmentation draws for a batch of `count` examples: [count] tensors."""
    u = tf.random.stateless_uniform([count, 10], seed=seed)
    spread = lambda value, i: (2.0 * u[:, i] - 1.0) * value  # noqa: E731
    low, high = augmentation.scale
    return {
        "scale": low + (high - low) * u[:, 0],
        "rotation_degrees": tf.where(
            u[:, 9] < augmentation.rotation_probability,
            spread(augmentation.rotation_degrees, 1),
            0.0,
        ),
        "translation": (
            spread(augmentation.translation * input_size, 2),
            spread(augmentation.translation * input_size, 3),
        ),
        "flip": u[:, 4] < augmentation.flip_probability,
        "brightness": spread(augmentation.brightness, 5),
        "contrast": 1.0 + spread(augmentation.contrast, 6),
        "saturation": 1.0 + spread(augmentation.saturation, 7),
        "hue_degrees": spread(augmentation.hue_degrees, 8),
    }


def _colour_and_heatmaps(
    images,
    colour,
    contrast,
    brightness,
    keypoints,
    weights,
    input_size: int,
    output_stride: int,
    sigma: float,
):
    """The elementwise half of a training batch, compiled with XLA (see training_batch)."""
    images = apply_colour(images, colour, contrast, brightness, scale=1.0 / 255.0)
    return images, HeatmapCodec(input_size, output_stride, sigma).encode(keypoints, weights)


_colour_and_heatmaps_xla = tf.function(_colour_and_heatmaps, jit_compile=True)


def training_batch(
    serialized: tf.Tensor,
    seed: tf.Tensor,
    input_size: int,
    output_stride: int,
    sigma: float,
    augmentation: Augmentation,
    keypoint_set: keypoint_sets.KeypointSet,
):
    """Records [B] of `keypoint_set`'s people -> (images [B, S, S, 3] float32 in [0, 1],
    {"heatmaps": [B, S/stride, S/stride, K], "weights": [B, K]}).

    Per example only the pixels are worked on (decode and warp); the rest is done for the whole batch
    at once, because per example its many small ops cost as much as decoding: parsing, augmentation
    draws, transforms and keypoints as [B] vectors; colour jitter and heatmaps fused by XLA."""
    examples = tf.io.parse_example(serialized, records.parse_spec(keypoint_set.num_keypoints))
    params = _random_params(seed, augmentation, input_size, count=tf.shape(serialized)[0])
    crop_size = examples["crop/size"]
    matrix = input_to_crop(
        crop_size,
        input_size,
        params["scale"],
        params["rotation_degrees"],
        params["translation"],
        params["flip"],
    )  # [B, 3, 3]
    decode_ratio = _decode_ratio(crop_size, input_size, max(augmentation.scale))
    to_decoded = crop_to_decoded(decode_ratio) @ matrix

    def decode_and_resample(args):
        encoded, ratio, to_pixels = args
        return resample(_decode(encoded, ratio), to_pixels, input_size)

    images = tf.map_fn(
        decode_and_resample,
        (examples["image/encoded"], decode_ratio, to_decoded),
        fn_output_signature=tf.TensorSpec([input_size, input_size, 3], tf.uint8),
    )

    points, visibility = swap_left_right(
        params["flip"],
        apply_affine(tf.linalg.inv(matrix), examples["person/keypoints"]),
        examples["person/visibility"],
        keypoint_set.flip_index,
    )  # [B, K, 2], [B, K]
    weights = joint_weights(points, visibility, input_size, keypoint_set.joint_weights)
    images, targets = _colour_and_heatmaps_xla(
        images,
        colour_matrix(params["saturation"], params["hue_degrees"]),
        params["contrast"],
        params["brightness"],
        points,
        weights,
        input_size,
        output_stride,
        sigma,
    )
    return images, {"heatmaps": targets, "weights": weights}


def evaluation_example(serialized: tf.Tensor, input_size: int, num_keypoints: int) -> dict:
    example = records.parse(serialized, num_keypoints)
    crop_keypoints = example["person/keypoints"]
    decode_ratio = _decode_ratio(example["crop/size"], input_size)
    image, points, visibility, matrix = warp_person(
        _decode(example["image/encoded"], decode_ratio),
        crop_keypoints,
        example["person/visibility"],
        input_size,
        decode_ratio=decode_ratio,
    )
    crop_to_original = tf.concat([example["crop/to_original"], [[0.0, 0.0, 1.0]]], axis=0)
    return {
        "image": tf.cast(image, tf.float32) / 255.0,
        "keypoints": points,
        "visibility": tf.cast(visibility, tf.int32),
        "to_original": (crop_to_original @ matrix)[:2],
        "original_keypoints": apply_affine(crop_to_original, crop_keypoints),
        "image_id": example["image/id"],
        "person_id": example["person/id"],
        "bbox": example["person/bbox_original"],
        "original_size": tf.cast(example["image/original_size"], tf.int32),
    }


# ---- datasets ------------------------------------------------------------------------------------


def _plain(function):
    """The map functions have no Python control flow on tensors: skip AutoGraph's slow conversion."""
    return tf.autograph.experimental.do_not_convert(function)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Parallelism comes from running many examples at once; splitting each small op across threads
    # as well only adds synchronisation.
    options.threading.max_intra_op_parallelism = 1
    return options


def _records(files: list[str], shuffle: bool, seed: int) -> tf.data.Dataset:
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return names.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
    )


def training_dataset(
    dirs: list[str],
    input_size: int,
    output_stride: int = 2,
    batch_size: int = 16,
    sigma: float = DEFAULT_SIGMA,
    augment: bool = True,
    seed: int | None = None,
    repeat: bool = True,
    shuffle_buffer: int = 1024,
    augmentation: Augmentation | dict | None = None,
    deterministic: bool | None = None,
) -> tf.data.Dataset:
    """Batches of (images [B, S, S, 3] float32 RGB in [0, 1],
    {"heatmaps": [B, S/stride, S/stride, K] float32, "weights": [B, K] float32}).

    sigma is in input pixels. augment=False gives the evaluation centre crop (still shuffled).
    With a seed the stream is reproducible (order and augmentation); without, it differs per call.
    deterministic (default: whether a seed is given) keeps that order; False lets the parallel stages
    hand over whichever example is ready first, faster on a busy machine but not reproducible.
    When repeating, the last partial batch is dropped so every batch has the same shape.
    """
    index = shard_index.read(dirs)
    files, keypoint_set = index["files"], shard_index.keypoint_set(index)
    if not augment:
        augmentation = NO_AUGMENTATION
    elif not isinstance(augmentation, Augmentation):
        augmentation = Augmentation.from_dict(augmentation)
    base_seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    dataset = _records(files, shuffle=True, seed=base_seed)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=base_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Augmentation seeds per batch: stateless ops keyed by (seed, batch number) stay reproducible
    # under parallel map, unlike stateful random ops.
    dataset = (
        dataset.batch(batch_size, drop_remainder=repeat)
        .enumerate()
        .map(
            _plain(
                lambda number, serialized: training_batch(
                    serialized,
                    tf.stack([tf.constant(base_seed, tf.int64), number]),
                    input_size,
                    output_stride,
                    sigma,
                    augmentation,
                    keypoint_set,
                )
            ),
            num_parallel_calls=AUTOTUNE,
        )
    )
    if deterministic is None:
        deterministic = seed is not None
    return dataset.with_options(_options(deterministic)).prefetch(AUTOTUNE)


def evaluation_dataset(dirs: list[str], input_size: int, batch_size: int = 16) -> tf.data.Dataset:
    """Batches of dicts, in shard and record order (see evaluation_example): image, keypoints and
    visibility in input pixels, to_original [B, 2, 3] (input pixel -> original pixel), original_keypoints,
    image_id, person_id, bbox (original xywh), original_size (h, w)."""
    index = shard_index.read(dirs)
    files, num_keypoints = index["files"], shard_index.keypoint_set(index).num_keypoints
    dataset = tf.data.TFRecordDataset(files).map(
        _plain(lambda serialized: evaluation_example(serialized, input_size, num_keypoints)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).with_options(_options(deterministic=True)).prefetch(AUTOTUNE)
