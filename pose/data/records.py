"""The tf.train.Example layout of a shard: one person per record. Writer, parser and checker share it.

Coordinates follow pixel centres: pixel (i, j) of an image covers the point x = i, y = j (the
convention of cv2.warpAffine and ImageProjectiveTransform). The crop is square; `crop_to_original`
is the 2x3 affine [[a, b, c], [d, e, f]] with x_original = a*u + b*v + c, y_original = d*u + e*v + f
for a crop pixel (u, v).
"""

import contextlib
import re

import numpy as np
import tensorflow as tf


def features(num_keypoints: int) -> dict:
    """feature name -> (dtype, shape) for a keypoint set of `num_keypoints` joints. The parser spec and
    index.json's "feature_spec" come from this."""
    k = int(num_keypoints)
    return {
        "image/encoded": (tf.string, []),  # JPEG of the square person crop
        "image/file_name": (tf.string, []),  # the original image's file name in the COCO folder
        "image/id": (tf.int64, []),  # COCO image id
        "image/original_size": (tf.int64, [2]),  # original image (height, width)
        "person/id": (tf.int64, []),  # COCO annotation id
        "person/keypoints": (tf.float32, [k, 2]),  # (x, y) in crop pixels
        "person/visibility": (tf.int64, [k]),  # COCO 0 unlabelled, 1 occluded, 2 visible
        "person/bbox": (tf.float32, [4]),  # x, y, w, h in crop pixels
        "person/bbox_original": (tf.float32, [4]),  # x, y, w, h in original pixels (COCO bbox)
        "crop/size": (tf.int64, []),  # side of the square crop in pixels
        "crop/to_original": (tf.float32, [2, 3]),  # affine crop pixel -> original pixel
    }


# The features whose shape follows the keypoint set; a reader that does not know the set (the
# integrity scan) parses them as variable-length lists.
_PER_KEYPOINT = ("person/keypoints", "person/visibility")


def parse_spec(num_keypoints: int | None) -> dict:
    spec = {
        name: tf.io.FixedLenFeature(shape, dtype)
        for name, (dtype, shape) in features(num_keypoints or 0).items()
    }
    if num_keypoints is None:
        for name in _PER_KEYPOINT:
            spec[name] = tf.io.VarLenFeature(features(0)[name][0])
    return spec


# InvalidArgumentError messages that come from bad record contents rather than from the model.
_DATA_ERROR = re.compile(r"jpeg|image|example|feature|parse|record", re.IGNORECASE)


class CorruptShardError(ValueError):
    """A shard that cannot be read: names the file and the 0-based record number."""

    def __init__(self, path: str, record: int, reason: str):
        super().__init__(f"{path}: record {record}: {reason}")
        self.path, self.record, self.reason = path, record, reason


def feature_spec_json(num_keypoints: int) -> dict:
    """The feature layout as plain JSON, for index.json."""
    return {
        name: {"dtype": dtype.name, "shape": shape}
        for name, (dtype, shape) in features(num_keypoints).items()
    }


def _feature(value, dtype) -> tf.train.Feature:
    if dtype == tf.string:  # every string feature is a scalar
        data = value if isinstance(value, bytes) else str(value).encode()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    flat = np.asarray(value).ravel().tolist()
    if dtype == tf.int64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in flat]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in flat]))


def make_example(num_keypoints: int, **values) -> bytes:
    """Serialises one person of a set of `num_keypoints` joints. Keyword names are `features()` names
    with '/' replaced by '_' (image_encoded=..., person_keypoints=[[x, y]] * K,
    crop_to_original=[[a, b, c], [d, e, f]], ...)."""
    encoded = {}
    for name, (dtype, shape) in features(num_keypoints).items():
        value = values.pop(name.replace("/", "_"))
        feature = _feature(value, dtype)
        count = len(getattr(feature, feature.WhichOneof("kind")).value)
        expected = int(tf.TensorShape(shape).num_elements())
        if count != expected:
            raise ValueError(f"feature {name}: {count} values, expected {expected} (shape {shape})")
        encoded[name] = feature
    if values:
        raise ValueError(f"unknown features: {sorted(values)}")
    return tf.train.Example(features=tf.train.Features(feature=encoded)).SerializeToString(
        deterministic=True
    )


def parse(serialized: tf.Tensor, num_keypoints: int) -> dict:
    """One serialized record -> dict of tensors, shapes as in `features` (graph-mode safe)."""
    return tf.io.parse_single_example(serialized, parse_spec(num_keypoints))


def verify_shard(
    path: str, parse_records: bool = True, decode_images: bool = False, num_keypoints=None
) -> int:
    """Reads every record of a shard (CRC checks; parsing and JPEG decoding when asked); returns the count.

    Raises CorruptShardError naming the file and record for corrupt or truncated data. Called by
    pose.files.integrity (shards without checksums: counting their records) and named_shard_errors.
    """
    record = 0
    try:
        for serialized in tf.data.TFRecordDataset(path):
            if parse_records or decode_images:
                values = tf.io.parse_single_example(serialized, parse_spec(num_keypoints))
                if decode_images:
                    tf.io.decode_jpeg(values["image/encoded"], channels=3)
            record += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise CorruptShardError(path, record, error.message.splitlines()[0]) from error
    return record


@contextlib.contextmanager
def named_shard_errors(files: list[str]):
    """For a loop over a tf.data pipeline reading `files`: tf.data reports corrupt data without the file
    name, so on such an error this scans the shards, finds the file and record and raises
    CorruptShardError instead. Train and evaluate wrap their reading loops in it."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        if isinstance(error, tf.errors.InvalidArgumentError) and not _DATA_ERROR.search(
            error.message
        ):
            raise  # e.g. a model's shape error: no reason to scan the data
        for path in files:
            try:
                verify_shard(path, decode_images=True)
            except CorruptShardError as named:
                raise named from error
        raise
