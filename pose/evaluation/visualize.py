"""Pictures of training samples for people to look at: images with their heatmaps overlaid, in a grid.

Right-side joints are drawn in warm colours, left-side joints in cool ones, the others in green:
after a correct flip, warm stays on the person's right side whatever way they face.
"""

import cv2
import numpy as np

from pose.data.keypoints import KeypointSet

_WARM = [(255, 40, 40), (255, 140, 0), (255, 230, 0)]  # right side: cycled along its joints
_COOL = [(40, 80, 255), (0, 200, 255), (200, 60, 255)]  # left side
_CENTRE = [(0, 255, 0), (150, 255, 150)]


def joint_colours(keypoint_set: KeypointSet | None, count: int) -> np.ndarray:
    """[K, 3] float RGB in [0, 1]: right joints warm, left cool, the rest green (KeypointSet.side);
    without a set, the palettes in turn."""
    if keypoint_set is None:
        palette = _WARM + _COOL + _CENTRE
        return np.array([palette[k % len(palette)] for k in range(count)], np.float32) / 255.0
    counters = {1: 0, -1: 0, 0: 0}
    colours = []
    for name in keypoint_set.names:
        side = keypoint_set.side(name)
        palette = {1: _WARM, -1: _COOL, 0: _CENTRE}[side]
        colours.append(palette[counters[side] % len(palette)])
        counters[side] += 1
    return np.array(colours, np.float32) / 255.0


def overlay(
    image: np.ndarray, heatmaps: np.ndarray, strength: float = 0.8, keypoint_set=None
) -> np.ndarray:
    """image [S, S, 3] float in [0, 1] RGB, heatmaps [h, w, K] -> uint8 [S, S, 3] RGB."""
    size = image.shape[0]
    # cv2.resize keeps the pixel-centre convention of docs/ARTIFACTS.md ("Normalisation").
    maps = cv2.resize(
        np.asarray(heatmaps, np.float32), (size, size), interpolation=cv2.INTER_LINEAR
    )
    maps = np.clip(maps.reshape(size, size, -1), 0.0, 1.0)
    strongest = maps.argmax(axis=-1)
    alpha = strength * maps.max(axis=-1, keepdims=True)
    colours = joint_colours(keypoint_set, maps.shape[-1])
    blended = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * colours[strongest]
    return (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample_grid(
    images: np.ndarray, heatmaps: np.ndarray, columns: int = 4, gap: int = 2, keypoint_set=None
) -> np.ndarray:
    """images [N, S, S, 3] float in [0, 1], heatmaps [N, h, w, K] -> one uint8 RGB picture [H, W, 3]
    (e.g. for tf.summary.image after adding a batch axis, or a PNG)."""
    images, heatmaps = np.asarray(images), np.asarray(heatmaps)
    count, size = images.shape[0], images.shape[1]
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.full((rows * (size + gap) - gap, columns * (size + gap) - gap, 3), 255, np.uint8)
    for i in range(count):
        top, left = (i // columns) * (size + gap), (i % columns) * (size + gap)
        grid[top : top + size, left : left + size] = overlay(
            images[i], heatmaps[i], keypoint_set=keypoint_set
        )
    return grid
