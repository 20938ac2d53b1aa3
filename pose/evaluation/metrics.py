"""Pose metrics: PCKh (head = head top <-> neck) and OKS AP through pycocotools (AIC sigmas)."""

import numpy as np

from pose.data import keypoints


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
    counted = (
        visible
        & (visible[:, [keypoints.HEAD_TOP]] & visible[:, [keypoints.NECK]])
        & (head[:, None] > 0)
    )
    distance = np.linalg.norm(pred - gt, axis=-1)
    correct = (distance <= threshold * head[:, None]) & counted
    per_joint = np.full(gt.shape[1], np.nan)
    totals = counted.sum(axis=0)
    per_joint[totals > 0] = correct.sum(axis=0)[totals > 0] / totals[totals > 0]
    mean = float(correct.sum() / counted.sum()) if counted.any() else float("nan")
    return mean, per_joint


def coco_ground_truth(
    gt: np.ndarray, visibility: np.ndarray, bboxes: np.ndarray, image_ids
) -> dict:
    """A COCO keypoint ground-truth dict for people [N]: gt [N, K, 2] and bboxes [N, 4] (x, y, w, h) in
    original image pixels, visibility [N, K] COCO 0/1/2, image_ids [N] integers.

    AIC has no segmentations, so a person's area (the OKS scale s^2) is its box area.
    """
    gt = np.asarray(gt, dtype=np.float64)
    visibility = np.asarray(visibility).astype(int)
    bboxes = np.asarray(bboxes, dtype=np.float64)
    annotations = []
    for i, (points, vis, box, image_id) in enumerate(zip(gt, visibility, bboxes, image_ids)):
        flat = np.concatenate([points, vis[:, None]], axis=-1)
        flat[vis == 0] = 0
        annotations.append(
            {
                "id": i + 1,
                "image_id": int(image_id),
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [float(v) for v in box],
                "area": float(box[2] * box[3]),
                "num_keypoints": int((vis > 0).sum()),
                "keypoints": flat.reshape(-1).tolist(),
            }
        )
    images = [{"id": int(image_id)} for image_id in sorted({int(i) for i in image_ids})]
    return {"images": images, "annotations": annotations, "categories": [keypoints.COCO_CATEGORY]}


def coco_detections(pred: np.ndarray, scores: np.ndarray, image_ids) -> list[dict]:
    """COCO keypoint results: one per person, keypoints pred [N, K, 2] in original pixels, the score of a
    person the mean of its joints' peak scores [N, K]."""
    pred = np.asarray(pred, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    detections = []
    for points, joint_scores, image_id in zip(pred, scores, image_ids):
        flat = np.concatenate([points, np.ones((len(points), 1))], axis=-1)
        detections.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "keypoints": flat.reshape(-1).tolist(),
                "score": float(joint_scores.mean()),
            }
        )
    return detections


def coco_keypoint_eval(ground_truth: dict, detections: list[dict], sigmas=keypoints.OKS_SIGMAS):
    """A COCOeval (iouType "keypoints", the given OKS sigmas) evaluated and accumulated, printing nothing."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def oks_ap(
    pred: np.ndarray,
    scores: np.ndarray,
    gt: np.ndarray,
    visibility: np.ndarray,
    bboxes: np.ndarray,
    image_ids,
) -> dict:
    """OKS AP through pycocotools with the AIC sigmas: {"ap", "ap50", "ap75", "ar"} (COCO's stats 0, 1, 2, 5).

    All coordinates in original image pixels; image_ids [N] integers (several people may share one).
    """
    if len(pred) == 0:
        raise ValueError("oks_ap: no people to evaluate")
    evaluator = coco_keypoint_eval(
        coco_ground_truth(gt, visibility, bboxes, image_ids),
        coco_detections(pred, scores, image_ids),
    )
    stats = evaluator.stats
    return {
        "ap": float(stats[0]),
        "ap50": float(stats[1]),
        "ap75": float(stats[2]),
        "ar": float(stats[5]),
    }
