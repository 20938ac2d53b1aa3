"""Heatmap decoding: from [N, H, W, K] heatmaps to keypoints in heatmap pixel coordinates.

Sub-pixel refinement: "quarter" moves the argmax a quarter pixel towards the higher neighbour (the
seed's and Hourglass papers' trick); "dark" (Zhang et al., "Distribution-Aware Coordinate
Representation for Human Pose Estimation", 2020) blurs the heatmap with a Gaussian, takes its log
and moves to the maximum of the second-order Taylor expansion around the argmax, which recovers
the centre of a Gaussian exactly.
"""
import cv2
import numpy as np

from pose import keypoints

REFINE_MODES = ("none", "quarter", "dark")


def decode(heatmaps: np.ndarray, refine: str = "quarter",
           blur_sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (coords [N, K, 2] as (x, y) in heatmap pixels, scores [N, K]).

    refine: "none" (integer argmax), "quarter" (a quarter pixel towards the higher neighbour),
    "dark" (Taylor expansion of the log of the heatmap blurred with `blur_sigma`).
    Scores are the heatmaps' peak values.
    """
    if refine not in REFINE_MODES:
        raise ValueError(f"unknown refine mode {refine!r}; expected one of {REFINE_MODES}")
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
    elif refine == "dark":
        coords += _dark_offsets(heatmaps, xs, ys, blur_sigma)
    return coords, scores


def _dark_offsets(heatmaps: np.ndarray, xs: np.ndarray, ys: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Offsets [N, K, 2] from the integer argmax to the maximum of the blurred log-heatmap's Taylor expansion."""
    n, h, w, k = heatmaps.shape
    kernel = 2 * int(np.ceil(3 * blur_sigma)) + 1
    log_maps = np.empty((n, k, h, w), dtype=np.float64)
    for i in range(n):
        # Blurring lowers the peak; rescaling keeps each map's maximum so the log stays comparable.
        blurred = cv2.GaussianBlur(heatmaps[i], (kernel, kernel), blur_sigma).reshape(h, w, k)
        peak_before = heatmaps[i].reshape(-1, k).max(axis=0)
        peak_after = np.maximum(blurred.reshape(-1, k).max(axis=0), 1e-12)
        blurred = blurred * (peak_before / peak_after)
        log_maps[i] = np.log(np.maximum(blurred, 1e-10)).transpose(2, 0, 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    x0 = np.clip(xs, 1, w - 2)
    y0 = np.clip(ys, 1, h - 2)

    def at(dy, dx):
        return log_maps[ni, ki, y0 + dy, x0 + dx]

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * centre + at(0, -1)
    dyy = at(1, 0) - 2 * centre + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    # Only a true maximum (negative-definite Hessian) away from the border is refined.
    usable = (det > 1e-12) & (dxx < 0) & (xs == x0) & (ys == y0)
    safe_det = np.where(usable, det, 1.0)
    offset_x = -(dyy * dx - dxy * dy) / safe_det
    offset_y = -(dxx * dy - dxy * dx) / safe_det
    offsets = np.stack([offset_x, offset_y], axis=-1)
    offsets = np.where(usable[..., None], np.clip(offsets, -1.0, 1.0), 0.0)
    return offsets.astype(np.float32)


def heatmap_to_input(coords: np.ndarray, stride: float) -> np.ndarray:
    """Heatmap pixel coordinates -> input image pixel coordinates (see docs/ARTIFACTS.md)."""
    return (np.asarray(coords, dtype=np.float32) + 0.5) * stride - 0.5


def flip_images(images: np.ndarray) -> np.ndarray:
    """Images [N, H, W, C] mirrored left to right."""
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1])


def unflip_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """Heatmaps predicted on flipped images, mirrored back and with left/right joints swapped.

    Mirroring a heatmap array is exact under the pixel-centre convention of heatmap_to_input.
    """
    return np.ascontiguousarray(np.asarray(heatmaps)[:, :, ::-1][..., list(keypoints.FLIP_INDEX)])


def flip_test(predict, images: np.ndarray) -> np.ndarray:
    """Mean of predict(images) and the un-flipped predict(flipped images); predict maps [N,H,W,3] -> heatmaps."""
    return 0.5 * (predict(images) + unflip_heatmaps(predict(flip_images(images))))
