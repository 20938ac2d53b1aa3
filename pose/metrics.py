"""Pose metrics: PCKh (head = head top <-> neck) and, later, OKS AP through pycocotools."""
import numpy as np

from pose import keypoints


def head_sizes(gt: np.ndarray) -> np.ndarray:
    """Head segment length per person: distance head top <-> neck, [N]."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.linalg.norm(gt[:, keypoints.HEAD_TOP] - gt[:, keypoints.NECK], axis=-1)


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, threshold: float = 0.5):
    """PCKh@threshold over labelled joints of people whose head size is known.

    pred, gt: [N, K, 2]; visible: [N, K] bool (labelled joints, COCO visibility > 0).
    Returns (mean over all counted joints, per-joint [K] with NaN where none counted).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    head = head_sizes(gt)
    counted = visible & (visible[:, [keypoints.HEAD_TOP]] & visible[:, [keypoints.NECK]]) & (head[:, None] > 0)
    distance = np.linalg.norm(pred - gt, axis=-1)
    correct = (distance <= threshold * head[:, None]) & counted
    per_joint = np.full(gt.shape[1], np.nan)
    totals = counted.sum(axis=0)
    per_joint[totals > 0] = correct.sum(axis=0)[totals > 0] / totals[totals > 0]
    mean = float(correct.sum() / counted.sum()) if counted.any() else float("nan")
    return mean, per_joint
