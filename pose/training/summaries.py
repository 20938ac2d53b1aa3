"""train's TensorBoard summaries (logs/): loss per stage, learning rate, images/s, PCKh@0.5 on the
valid shards and a grid of predictions.

TensorBoard's own tf.summary.scalar / image need the tensorboard package, which the images do not
carry; these write the same summaries (the plugin names TensorBoard reads) with the core op."""

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


class Summaries:
    """The chief's event file in `folder`; other workers pass folder=None and write nothing."""

    def __init__(self, folder: Path | None):
        self.writer = tf.summary.create_file_writer(str(folder)) if folder else None

    def step(
        self,
        step: int,
        losses,
        learning_rate: float,
        images_per_second: float,
        grid: np.ndarray | None = None,
    ) -> None:
        if not self.writer:
            return
        with self.writer.as_default(step=step):
            scalar("loss", losses.sum())
            scalar("loss_last_stage", losses[-1])
            for stage, value in enumerate(losses):
                scalar(f"loss_per_stage/stage_{stage}", value)
            scalar("learning_rate", learning_rate)
            scalar("images_per_second", images_per_second)
            if grid is not None:
                image("predictions", grid)

    def pckh(self, step: int, score: float) -> None:
        if self.writer:
            with self.writer.as_default(step=step):
                scalar("pckh@0.5", score)

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()


def scalar(tag: str, value) -> None:
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def image(tag: str, picture: np.ndarray) -> None:
    """picture: uint8 [H, W, 3]."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
    )
    height, width = picture.shape[:2]
    tf.summary.write(
        tag,
        tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(picture)]),
        metadata=metadata,
    )
