"""The heatmap codec: joints <-> Gaussian heatmaps, the one place that knows how they map.

`HeatmapCodec(input_size, stride, sigma)` encodes keypoints in input pixels as Gaussian targets
(TensorFlow ops, for the input pipeline) and decodes predicted heatmaps back to keypoints (NumPy, for
training's PCKh, evaluate and predict), with one default sub-pixel refinement. Every caller builds
one codec instead of passing stride, sigma and refine mode separately, so training's PCKh and
evaluate's decode the same way.

Coordinates (docs/ARTIFACTS.md "Normalisation"): a joint at input pixel (x, y) peaks at heatmap
coordinate ((x + 0.5) / stride - 0.5, (y + 0.5) / stride - 0.5); `to_input` inverts `to_heatmap`.

Sub-pixel refinement: "quarter" moves the argmax a quarter pixel towards the higher neighbour (the
seed's and Hourglass papers' trick); "dark" (Zhang et al., "Distribution-Aware Coordinate
Representation for Human Pose Estimation", 2020) blurs the heatmap with a Gaussian, takes its log
and moves to the maximum of the second-order Taylor expansion around the argmax, which recovers
the centre of a Gaussian exactly. "dark" is the default.

TensorFlow is imported only by `encode`, so decoding needs NumPy and OpenCV alone.
"""

from dataclasses import dataclass

import numpy as np

# The seed (PoseEstimationForMobile, dataset.py) drew Gaussians of sigma 6 pixels on the 192x192
# network input and shrank them to the heatmap size, so sigma here is in INPUT pixels: 6 input
# pixels = 3 heatmap pixels for the CPM (stride 2), 1.5 for the hourglass (stride 4). Unlike the
# seed we do not cut the Gaussian off below exp(-1), which keeps it smooth for sub-pixel decoding.
DEFAULT_SIGMA = 6.0
REFINE_MODES = ("dark", "quarter", "none")
# HeatmapCodec.to_input, spelled for apps in each .tflite's .json.
HEATMAP_TO_INPUT = "x_input = (x_heatmap + 0.5) * output_stride - 0.5"
DEFAULT_REFINE = "dark"


@dataclass(frozen=True)
class HeatmapCodec:
    """input_size: the square network input's side; stride: input pixels per heatmap pixel (may be a
    float when read off a model's shapes); sigma: the targets' Gaussian sigma in input pixels;
    refine: the sub-pixel refinement `decode` applies (REFINE_MODES)."""

    input_size: int
    stride: float
    sigma: float = DEFAULT_SIGMA
    refine: str = DEFAULT_REFINE

    def __post_init__(self):
        if self.refine not in REFINE_MODES:
            raise ValueError(f"unknown refine mode {self.refine!r}; expected one of {REFINE_MODES}")

    @classmethod
    def for_heatmaps(
        cls, input_size: int, heatmap_size: int, refine: str = DEFAULT_REFINE
    ) -> "HeatmapCodec":
        """The codec of a model known by its shapes (a .tflite): stride = input_size / heatmap_size."""
        return cls(input_size, input_size / heatmap_size, refine=refine)

    @property
    def heatmap_size(self) -> int:
        return int(self.input_size // self.stride)

    # -- coordinates (NumPy arrays or tensors alike) --

    def to_heatmap(self, points):
        """Input pixel coordinates -> heatmap pixel coordinates."""
        return (points + 0.5) / self.stride - 0.5

    def to_input(self, coords) -> np.ndarray:
        """Heatmap pixel coordinates -> input image pixel coordinates."""
        return (np.asarray(coords, dtype=np.float32) + 0.5) * self.stride - 0.5

    # -- encoding (TensorFlow) --

    def encode(self, points, weights):
        """points [..., K, 2] (x, y) in input pixels, weights [..., K] (0 = no target) -> heatmaps
        [..., H, W, K], H = W = heatmap_size, peak 1.0 at each joint with weight > 0, all zeros
        elsewhere. Leading dimensions (a batch) pass through."""
        import tensorflow as tf

        size = self.heatmap_size
        centres = self.to_heatmap(tf.cast(points, tf.float32))  # [..., K, 2]
        sigma_heatmap = self.sigma / self.stride
        grid = tf.range(size, dtype=tf.float32)[:, None]  # [H or W, 1]
        # The 2-D Gaussian is separable: an outer product of a column and a row profile per joint, laid
        # out [..., H, W, K] directly. Joints without weight get an all-zero map.
        mask = tf.cast(weights > 0, tf.float32)[..., None, :]
        gx = (
            tf.exp(-tf.square(grid - centres[..., None, :, 0]) / (2.0 * sigma_heatmap**2)) * mask
        )  # [..., W, K]
        gy = tf.exp(
            -tf.square(grid - centres[..., None, :, 1]) / (2.0 * sigma_heatmap**2)
        )  # [..., H, K]
        return gy[..., :, None, :] * gx[..., None, :, :]

    # -- decoding (NumPy) --

    def decode(
        self, heatmaps: np.ndarray, blur_sigma: float = 2.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, H, W, K] -> (coords [N, K, 2] as (x, y) in heatmap pixels, scores [N, K]), refined
        per self.refine ("dark" blurs with `blur_sigma`). Scores are the heatmaps' peak values."""
        return decode(heatmaps, self.refine, blur_sigma)

    def decode_to_input(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, H, W, K] -> (keypoints [N, K, 2] in input pixels, scores [N, K])."""
        coords, scores = self.decode(heatmaps)
        return self.to_input(coords), scores


def decode(
    heatmaps: np.ndarray, refine: str = DEFAULT_REFINE, blur_sigma: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """HeatmapCodec.decode with the refinement as an argument (its stride plays no part in decoding).

    refine: "none" (integer argmax), "quarter" (a quarter pixel towards the higher neighbour),
    "dark" (Taylor expansion of the log of the heatmap blurred with `blur_sigma`).
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


def _dark_offsets(
    heatmaps: np.ndarray, xs: np.ndarray, ys: np.ndarray, blur_sigma: float
) -> np.ndarray:
    """Offsets [N, K, 2] from the integer argmax to the maximum of the blurred log-heatmap's Taylor expansion."""
    import cv2

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


# ---- the flip test ------------------------------------------------------------------------------


def flip_images(images: np.ndarray) -> np.ndarray:
    """Images [N, H, W, C] mirrored left to right."""
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1])


def unflip_heatmaps(heatmaps: np.ndarray, flip_index) -> np.ndarray:
    """Heatmaps predicted on flipped images, mirrored back and with left/right joints swapped
    (flip_index: the keypoint set's, pose.data.keypoints.KeypointSet.flip_index, in the heatmaps'
    channel order).

    Mirroring a heatmap array is exact under the pixel-centre convention of HeatmapCodec.to_input.
    """
    return np.ascontiguousarray(np.asarray(heatmaps)[:, :, ::-1][..., list(flip_index)])


def flip_test(predict, images: np.ndarray, flip_index) -> np.ndarray:
    """Mean of predict(images) and the un-flipped predict(flipped images); predict maps [N,H,W,3] -> heatmaps."""
    return 0.5 * (predict(images) + unflip_heatmaps(predict(flip_images(images)), flip_index))
