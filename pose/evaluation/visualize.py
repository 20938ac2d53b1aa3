"""Pictures of training samples for people to look at: images with their heatmaps overlaid, in a grid.

Right-side joints are drawn in warm colours, left-side joints in cool ones, head and neck in green:
after a correct flip, warm stays on the person's right side whatever way they face.
"""

import cv2
import numpy as np

from pose.data.keypoints import NAMES

_WARM = [(255, 40, 40), (255, 140, 0), (255, 230, 0)]  # shoulder, elbow, wrist / hip, knee, ankle
_COOL = [(40, 80, 255), (0, 200, 255), (200, 60, 255)]
JOINT_COLOURS = (
    np.array(
        [
            _WARM[0],
            _WARM[1],
            _WARM[2],
            _COOL[0],
            _COOL[1],
            _COOL[2],
            _WARM[0],
            _WARM[1],
            _WARM[2],
            _COOL[0],
            _COOL[1],
            _COOL[2],
            (0, 255, 0),
            (150, 255, 150),
        ],
        dtype=np.float32,
    )
    / 255.0
)
assert len(JOINT_COLOURS) == len(NAMES)


def overlay(image: np.ndarray, heatmaps: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """image [S, S, 3] float in [0, 1] RGB, heatmaps [h, w, K] -> uint8 [S, S, 3] RGB."""
    size = image.shape[0]
    # cv2.resize keeps the pixel-centre convention of docs/ARTIFACTS.md ("Normalisation").
    maps = cv2.resize(
        np.asarray(heatmaps, np.float32), (size, size), interpolation=cv2.INTER_LINEAR
    )
    maps = np.clip(maps.reshape(size, size, -1), 0.0, 1.0)
    strongest = maps.argmax(axis=-1)
    alpha = strength * maps.max(axis=-1, keepdims=True)
    blended = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * JOINT_COLOURS[strongest]
    return (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample_grid(
    images: np.ndarray, heatmaps: np.ndarray, columns: int = 4, gap: int = 2
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
        grid[top : top + size, left : left + size] = overlay(images[i], heatmaps[i])
    return grid
