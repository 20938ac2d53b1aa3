"""Heatmap decoding: from [N, H, W, K] heatmaps to keypoints in heatmap pixel coordinates."""
import numpy as np


def decode(heatmaps: np.ndarray, refine: str = "quarter") -> tuple[np.ndarray, np.ndarray]:
    """Returns (coords [N, K, 2] as (x, y) in heatmap pixels, scores [N, K]).

    refine: "none" (integer argmax), "quarter" (a quarter pixel towards the higher neighbour).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, h, w, k = heatmaps.shape
    flat = heatmaps.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    index = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    ys, xs = np.divmod(index, w)
    coords = np.stack([xs, ys], axis=-1).astype(np.float32)
    if refine == "quarter":
        maps = heatmaps.transpose(0, 3, 1, 2)  # N, K, H, W
        ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        right = maps[ni, ki, ys, np.minimum(xs + 1, w - 1)]
        left = maps[ni, ki, ys, np.maximum(xs - 1, 0)]
        down = maps[ni, ki, np.minimum(ys + 1, h - 1), xs]
        up = maps[ni, ki, np.maximum(ys - 1, 0), xs]
        coords[..., 0] += 0.25 * np.sign(right - left)
        coords[..., 1] += 0.25 * np.sign(down - up)
    elif refine != "none":
        raise ValueError(f"unknown refine mode {refine!r}; expected 'none' or 'quarter'")
    return coords, scores


def heatmap_to_input(coords: np.ndarray, stride: float) -> np.ndarray:
    """Heatmap pixel coordinates -> input image pixel coordinates (see docs/ARTIFACTS.md)."""
    return (np.asarray(coords, dtype=np.float32) + 0.5) * stride - 0.5
