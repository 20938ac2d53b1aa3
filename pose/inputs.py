"""The tf.data input pipeline that train and evaluate import.

Takes shard folders (each with index.json, see docs/ARTIFACTS.md); gives batches for training
(augmented images, Gaussian heatmaps, per-joint loss weights) or for evaluation (centre crops
with the transform back to the original image). Everything per example is TensorFlow ops inside
parallel `map` calls: parse, decode, one affine warp, flip, colour jitter, heatmaps.

Geometry: a record holds a square person crop of side C. The network input is S x S. Input pixel
p maps to crop pixel  M @ p  with M = centre_crop @ rotate_scale @ flip @ centre_input(translation);
with no augmentation the whole crop is resized to the input (the person box centred, scaled to fit).
"""
import dataclasses
import json
import math
import os
import random

import tensorflow as tf

from pose import heatmaps, records
from pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS

AUTOTUNE = tf.data.AUTOTUNE


class ShardIndexError(ValueError):
    """A shard folder whose index.json is missing, inconsistent or names files that are not there."""


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation ranges; train's YAML config sets them (`Augmentation.from_dict`)."""
    scale: tuple[float, float] = (0.75, 1.25)   # > 1 zooms in (the person appears larger)
    rotation_degrees: float = 30.0              # uniform in +- this
    translation: float = 0.1                    # uniform shift in +- this fraction of the input size
    flip_probability: float = 0.5
    brightness: float = 0.15                    # additive, in [0, 1] pixel units
    contrast: float = 0.3                       # factor in 1 +- this
    saturation: float = 0.3                     # factor in 1 +- this
    hue_degrees: float = 10.0                   # rotation of the chroma plane in +- this

    @classmethod
    def from_dict(cls, values: dict | None) -> "Augmentation":
        values = dict(values or {})
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation settings {sorted(unknown)}; known: "
                             f"{[field.name for field in dataclasses.fields(cls)]}")
        if "scale" in values:
            values["scale"] = tuple(float(v) for v in values["scale"])
        return cls(**values)


NO_AUGMENTATION = Augmentation(scale=(1.0, 1.0), rotation_degrees=0.0, translation=0.0, flip_probability=0.0,
                               brightness=0.0, contrast=0.0, saturation=0.0, hue_degrees=0.0)


def read_index(dirs: list[str] | str) -> dict:
    """Merges the index.json of shard folders: files (sorted paths), num_examples, crop_size, split,
    shards ({path: count})."""
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    if not dirs:
        raise ShardIndexError("no shard folders given")
    shards, splits, crop_sizes = {}, set(), set()
    for folder in dirs:
        index_path = os.path.join(folder, "index.json")
        try:
            with open(index_path) as f:
                index = json.load(f)
            splits.add(index["split"])
            crop_sizes.add(int(index["crop_size"]))
            counts = index["shards"]
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise ShardIndexError(f"{index_path}: cannot read the shard index: {error!r}") from error
        for name, count in counts.items():
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ShardIndexError(f"{index_path}: names {name}, which is not in {folder}")
            shards[path] = int(count)
    if len(splits) > 1 or len(crop_sizes) > 1:
        raise ShardIndexError(f"shard folders {dirs} mix splits {sorted(splits)} or crop sizes {sorted(crop_sizes)}")
    files = sorted(shards)
    return {"files": files, "shards": {path: shards[path] for path in files},
            "num_examples": sum(shards.values()), "crop_size": crop_sizes.pop(), "split": splits.pop()}


# ---- geometry -------------------------------------------------------------------------------------

def _matrix(rows) -> tf.Tensor:
    return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in row]) for row in rows])


def input_to_crop(crop_size, input_size: int, scale=1.0, rotation_degrees=0.0, translation=(0.0, 0.0),
                  flip=False) -> tf.Tensor:
    """3x3 affine: input pixel (x, y, 1) -> crop pixel. scale > 1 zooms in; translation (input pixels)
    moves the person; flip mirrors the input horizontally."""
    crop_size = tf.cast(crop_size, tf.float32)
    half_input = (input_size - 1) / 2.0
    zoom = crop_size / input_size / tf.cast(scale, tf.float32)
    angle = tf.cast(rotation_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    tx, ty = tf.cast(translation[0], tf.float32), tf.cast(translation[1], tf.float32)
    centred = _matrix([[mirror, 0.0, -mirror * (half_input + tx)], [0.0, 1.0, -(half_input + ty)], [0.0, 0.0, 1.0]])
    to_crop = _matrix([[cos, -sin, (crop_size - 1) / 2], [sin, cos, (crop_size - 1) / 2], [0.0, 0.0, 1.0]])
    return to_crop @ centred


def apply_affine(matrix: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """matrix [2 or 3, 3] applied to points [K, 2]."""
    return points @ tf.transpose(matrix[:2, :2]) + matrix[:2, 2]


def warp_person(image: tf.Tensor, keypoints: tf.Tensor, visibility: tf.Tensor, input_size: int,
                scale=1.0, rotation_degrees=0.0, translation=(0.0, 0.0), flip=False):
    """One affine warp of a crop [C, C, 3] to the input [S, S, 3] (bilinear, black outside), with the
    keypoints [K, 2] in crop pixels following it; a flip also swaps left and right joints.

    Returns (image [S, S, 3] same dtype, keypoints [K, 2] in input pixels, visibility [K], matrix 3x3
    input -> crop)."""
    matrix = input_to_crop(tf.shape(image)[0], input_size, scale, rotation_degrees, translation, flip)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.reshape(matrix, [9])[None, :8],
        output_shape=[input_size, input_size], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    points = apply_affine(tf.linalg.inv(matrix), keypoints)
    swapped = tf.cast(flip, tf.bool)
    points = tf.where(swapped, tf.gather(points, FLIP_INDEX), points)
    visibility = tf.where(swapped, tf.gather(visibility, FLIP_INDEX), visibility)
    return warped, points, visibility, matrix


def joint_weights(keypoints: tf.Tensor, visibility: tf.Tensor, input_size: int) -> tf.Tensor:
    """1.0 for labelled joints inside the input, else 0.0: [K] float32."""
    inside = tf.reduce_all((keypoints >= 0.0) & (keypoints <= input_size - 1.0), axis=-1)
    return tf.cast(inside & (visibility > 0), tf.float32)


# ---- colour ------------------------------------------------------------------------------------

_RGB_TO_YIQ = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_jitter(image: tf.Tensor, brightness, contrast, saturation, hue_degrees, scale: float = 1.0) -> tf.Tensor:
    """image [H, W, 3] (pixel values x scale in [0, 1]) -> float32 in [0, 1]. Every adjustment is
    linear, so saturation and hue (scale and rotate the chroma plane of YIQ), contrast (around the mean
    luminance) and brightness fold into one 3x3 matrix and one offset: a single pass over the pixels,
    far cheaper than a round trip through HSV."""
    angle = tf.cast(hue_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    chroma = _matrix([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    colour = tf.linalg.inv(_RGB_TO_YIQ) @ chroma @ _RGB_TO_YIQ * scale
    pixels = tf.reshape(tf.cast(image, tf.float32), [-1, 3])
    mean_luminance = tf.reduce_sum(_RGB_TO_YIQ[0] * tf.linalg.matvec(colour, tf.reduce_mean(pixels, axis=0)))
    offset = (1.0 - contrast) * mean_luminance + brightness
    jittered = pixels @ tf.transpose(colour * contrast) + offset
    return tf.reshape(tf.clip_by_value(jittered, 0.0, 1.0), tf.shape(image))


# ---- per-example maps ------------------------------------------------------------------------------

def _decode(example: dict) -> tf.Tensor:
    return tf.io.decode_jpeg(example["image/encoded"], channels=3)


def _random_params(seed: tf.Tensor, augmentation: Augmentation, input_size: int) -> dict:
    u = tf.random.stateless_uniform([9], seed=seed)
    spread = lambda value, i: (2.0 * u[i] - 1.0) * value  # noqa: E731
    low, high = augmentation.scale
    return {
        "scale": low + (high - low) * u[0],
        "rotation_degrees": spread(augmentation.rotation_degrees, 1),
        "translation": (spread(augmentation.translation * input_size, 2),
                        spread(augmentation.translation * input_size, 3)),
        "flip": u[4] < augmentation.flip_probability,
        "brightness": spread(augmentation.brightness, 5),
        "contrast": 1.0 + spread(augmentation.contrast, 6),
        "saturation": 1.0 + spread(augmentation.saturation, 7),
        "hue_degrees": spread(augmentation.hue_degrees, 8),
    }


def training_example(serialized: tf.Tensor, seed: tf.Tensor, input_size: int, output_stride: int, sigma: float,
                     augmentation: Augmentation):
    """One record -> (image [S, S, 3] float32 in [0, 1], {"heatmaps": [S/stride, S/stride, K], "weights": [K]})."""
    example = records.parse(serialized)
    params = _random_params(seed, augmentation, input_size)
    image, points, visibility, _ = warp_person(
        _decode(example), example["person/keypoints"], example["person/visibility"], input_size,
        params["scale"], params["rotation_degrees"], params["translation"], params["flip"])
    image = colour_jitter(image, params["brightness"], params["contrast"], params["saturation"],
                          params["hue_degrees"], scale=1.0 / 255.0)
    weights = joint_weights(points, visibility, input_size)
    targets = heatmaps.encode(points, weights, input_size, output_stride, sigma)
    return image, {"heatmaps": targets, "weights": weights}


def evaluation_example(serialized: tf.Tensor, input_size: int) -> dict:
    example = records.parse(serialized)
    crop_keypoints = example["person/keypoints"]
    image, points, visibility, matrix = warp_person(_decode(example), crop_keypoints, example["person/visibility"],
                                                    input_size)
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
    return names.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), block_length=1,
                            num_parallel_calls=AUTOTUNE)


def training_dataset(dirs: list[str], input_size: int = 192, output_stride: int = 2, batch_size: int = 16,
                     sigma: float = heatmaps.DEFAULT_SIGMA, augment: bool = True, seed: int | None = None,
                     repeat: bool = True, shuffle_buffer: int = 1024,
                     augmentation: Augmentation | dict | None = None,
                     deterministic: bool | None = None) -> tf.data.Dataset:
    """Batches of (images [B, S, S, 3] float32 RGB in [0, 1],
    {"heatmaps": [B, S/stride, S/stride, K] float32, "weights": [B, K] float32}).

    sigma is in input pixels. augment=False gives the evaluation centre crop (still shuffled).
    With a seed the stream is reproducible (order and augmentation); without, it differs per call.
    deterministic (default: whether a seed is given) keeps that order; False lets the parallel stages
    hand over whichever example is ready first, faster on a busy machine but not reproducible.
    When repeating, the last partial batch is dropped so every batch has the same shape.
    """
    files = read_index(dirs)["files"]
    if not augment:
        augmentation = NO_AUGMENTATION
    elif not isinstance(augmentation, Augmentation):
        augmentation = Augmentation.from_dict(augmentation)
    base_seed = random.SystemRandom().randrange(2 ** 31) if seed is None else int(seed)
    dataset = _records(files, shuffle=True, seed=base_seed)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=base_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Per-example augmentation seeds: stateless ops keyed by (seed, position) stay reproducible
    # under parallel map, unlike stateful random ops.
    dataset = dataset.enumerate().map(
        _plain(lambda position, serialized: training_example(
            serialized, tf.stack([tf.constant(base_seed, tf.int64), position]), input_size, output_stride, sigma,
            augmentation)),
        num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=repeat, num_parallel_calls=AUTOTUNE)
    if deterministic is None:
        deterministic = seed is not None
    return dataset.with_options(_options(deterministic)).prefetch(AUTOTUNE)


def evaluation_dataset(dirs: list[str], input_size: int = 192, batch_size: int = 16) -> tf.data.Dataset:
    """Batches of dicts, in shard and record order (see evaluation_example): image, keypoints and
    visibility in input pixels, to_original [B, 2, 3] (input pixel -> original pixel), original_keypoints,
    image_id, person_id, bbox (original xywh), original_size (h, w)."""
    files = read_index(dirs)["files"]
    dataset = tf.data.TFRecordDataset(files).map(_plain(lambda serialized: evaluation_example(serialized, input_size)),
                                                 num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).with_options(_options(deterministic=True)).prefetch(AUTOTUNE)
