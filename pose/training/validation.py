"""The keypoint set's PCK (PCKh@0.5, or PCK@0.2 of the box for a set without a head segment) on the
valid shards while training: decoded by the same codec as evaluate's (pose.codec) but without its
flip test (`pckh_flip_test`: false in train_metadata.json)."""

import numpy as np
import tensorflow as tf

from pose.codec import HeatmapCodec
from pose.data import inputs, shard_index
from pose.evaluation import visualize
from pose.evaluation.metrics import pck
from pose.models import networks
from pose.training.errors import TrainError


def final_heatmaps_function(model):
    """A compiled `images -> final-stage heatmaps (float32)` (eager calls are slow)."""
    return tf.function(
        lambda images: tf.cast(networks.stage_heatmaps(model, images)[-1], tf.float32),
        reduce_retracing=True,
    )


def evaluate_pckh(
    predict, valid_dirs: list[str], codec: HeatmapCodec, batch_size: int = 32
) -> float:
    """The set's PCK of `predict(images) -> final heatmaps` on the valid shards, decoded by `codec`,
    without the flip test. Measured in input pixels: the same figure as evaluate's in original
    pixels, since the evaluation crop maps to the photo by a scale and a shift and PCK is relative
    to each person's head or box."""
    keypoint_set = shard_index.keypoint_set(shard_index.read(valid_dirs))
    predictions, truths, visible, boxes = [], [], [], []
    for batch in inputs.evaluation_dataset(valid_dirs, codec.input_size, batch_size):
        keypoints, _ = codec.decode_to_input(np.asarray(predict(batch["image"])))
        predictions.append(keypoints)
        truths.append(batch["keypoints"].numpy())
        visible.append(batch["visibility"].numpy() > 0)
        scale = np.linalg.norm(
            batch["to_original"].numpy()[:, :, 0], axis=-1
        )  # original px per input px
        boxes.append(batch["bbox"].numpy()[:, 2:].max(axis=-1) / scale)
    if not predictions:
        raise TrainError(f"{valid_dirs}: no validation examples")
    score, _ = pck(
        np.concatenate(predictions),
        np.concatenate(truths),
        np.concatenate(visible),
        keypoint_set,
        np.concatenate(boxes),
    )
    return float(score)


def prediction_grid(predict, valid_dirs: list[str], input_size: int) -> np.ndarray | None:
    """Predicted heatmaps over a few valid images, one uint8 picture [H, W, 3]
    (pose.evaluation.visualize); None without valid shards."""
    if not valid_dirs:
        return None
    batch = next(iter(inputs.evaluation_dataset(valid_dirs, input_size, batch_size=8)))
    keypoint_set = shard_index.keypoint_set(shard_index.read(valid_dirs))
    return visualize.sample_grid(
        batch["image"].numpy(), predict(batch["image"]).numpy(), keypoint_set=keypoint_set
    )
