"""Gaussian heatmap targets as TensorFlow ops (docs/ARTIFACTS.md "Normalisation").

A joint at input pixel (x, y) peaks at heatmap coordinate ((x + 0.5) / stride - 0.5, (y + 0.5) / stride - 0.5);
pose.decoding.heatmap_to_input inverts that.
"""
import tensorflow as tf

# The seed (PoseEstimationForMobile, dataset.py) drew Gaussians of sigma 6 pixels on the 192x192
# network input and shrank them to the heatmap size, so sigma here is in INPUT pixels: 6 input
# pixels = 3 heatmap pixels for the CPM (stride 2), 1.5 for the hourglass (stride 4). Unlike the
# seed we do not cut the Gaussian off below exp(-1), which keeps it smooth for sub-pixel decoding.
DEFAULT_SIGMA = 6.0


def to_heatmap_coords(points: tf.Tensor, stride: float) -> tf.Tensor:
    return (points + 0.5) / stride - 0.5


def encode(keypoints: tf.Tensor, weights: tf.Tensor, input_size: int, stride: int,
           sigma: float = DEFAULT_SIGMA) -> tf.Tensor:
    """keypoints [..., K, 2] (x, y) in input pixels, weights [..., K] (0 = no target) -> heatmaps
    [..., H, W, K], H = W = input_size // stride, peak 1.0 at each joint with weight > 0, all zeros
    elsewhere. Leading dimensions (a batch) pass through."""
    size = input_size // stride
    centres = to_heatmap_coords(tf.cast(keypoints, tf.float32), float(stride))  # [..., K, 2]
    sigma_heatmap = sigma / stride
    grid = tf.range(size, dtype=tf.float32)[:, None]                           # [H or W, 1]
    # The 2-D Gaussian is separable: an outer product of a column and a row profile per joint, laid
    # out [..., H, W, K] directly. Joints without weight get an all-zero map.
    mask = tf.cast(weights > 0, tf.float32)[..., None, :]
    gx = tf.exp(-tf.square(grid - centres[..., None, :, 0]) / (2.0 * sigma_heatmap ** 2)) * mask  # [..., W, K]
    gy = tf.exp(-tf.square(grid - centres[..., None, :, 1]) / (2.0 * sigma_heatmap ** 2))         # [..., H, K]
    return gy[..., :, None, :] * gx[..., None, :, :]
