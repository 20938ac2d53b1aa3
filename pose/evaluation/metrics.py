"""Pose metrics for any keypoint set: PCK (PCKh@0.5 on the set's head segment where it has one, else
PCK@0.2 of the person's box) and OKS AP through pycocotools with the set's sigmas."""

import numpy as np

from pose.data.keypoints import KeypointSet


def head_sizes(gt: np.ndarray, head: tuple[int, int]) -> np.ndarray:
    """Head segment length per person: distance between the set's two head joints, [N]."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.linalg.norm(gt[:, head[0]] - gt[:, head[1]], axis=-1)


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head, threshold: float = 0.5):
    """PCKh@threshold over labelled joints of people whose head size is known (head: the set's two
    head joints).

    pred, gt: [N, K, 2]; visible: [N, K] bool (labelled joints, COCO visibility > 0).
    Returns (mean over all counted joints, per-joint [K] with NaN where none counted).
    """
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    size = head_sizes(gt, head)
    counted = visible & (visible[:, [head[0]]] & visible[:, [head[1]]]) & (size[:, None] > 0)
    return _pck(pred, gt, counted, size, threshold)


def pck_of_box(pred, gt, visible, box_sizes, threshold: float = 0.2):
    """PCK@threshold of the person's box: a joint is right within threshold x the longer side of the
    box (box_sizes [N], in the same pixels as the points)."""
    size = np.asarray(box_sizes, dtype=np.float64)
    counted = np.asarray(visible, dtype=bool) & (size[:, None] > 0)
    return _pck(pred, gt, counted, size, threshold)


def pck(pred, gt, visible, keypoint_set: KeypointSet, box_sizes=None):
    """The set's accuracy figure (keypoint_set.pck_name): PCKh@0.5 where the set has a head segment,
    else PCK@0.2 of the box (box_sizes needed then). Returns (mean, per-joint [K])."""
    if keypoint_set.head is not None:
        return pckh(pred, gt, visible, keypoint_set.head, keypoint_set.pck_threshold)
    if box_sizes is None:
        raise ValueError(f"{keypoint_set.pck_name} of set {keypoint_set.name!r} needs the boxes")
    return pck_of_box(pred, gt, visible, box_sizes, keypoint_set.pck_threshold)


def _pck(pred, gt, counted, size, threshold):
    pred = np.asarray(pred, dtype=np.float64)
    distance = np.linalg.norm(pred - gt, axis=-1)
    correct = (distance <= threshold * size[:, None]) & counted
    per_joint = np.full(gt.shape[1], np.nan)
    totals = counted.sum(axis=0)
    per_joint[totals > 0] = correct.sum(axis=0)[totals > 0] / totals[totals > 0]
    mean = float(correct.sum() / counted.sum()) if counted.any() else float("nan")
    return mean, per_joint


def coco_ground_truth(
    gt: np.ndarray, visibility: np.ndarray, bboxes: np.ndarray, image_ids, keypoint_set: KeypointSet
) -> dict:
    """A COCO keypoint ground-truth dict for people [N]: gt [N, K, 2] and bboxes [N, 4] (x, y, w, h) in
    original image pixels, visibility [N, K] COCO 0/1/2, image_ids [N] integers.

    Records carry no segmentations, so a person's area (the OKS scale s^2) is its box area.
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
    return {
        "images": images,
        "annotations": annotations,
        "categories": [keypoint_set.coco_category()],
    }


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


def coco_keypoint_eval(ground_truth: dict, detections: list[dict], sigmas):
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
    keypoint_set: KeypointSet,
) -> dict:
    """OKS AP through pycocotools with the keypoint set's sigmas: {"ap", "ap50", "ap75", "ar"}
    (COCO's stats 0, 1, 2, 5).

    All coordinates in original image pixels; image_ids [N] integers (several people may share one).
    """
    if len(pred) == 0:
        raise ValueError("oks_ap: no people to evaluate")
    evaluator = coco_keypoint_eval(
        coco_ground_truth(gt, visibility, bboxes, image_ids, keypoint_set),
        coco_detections(pred, scores, image_ids),
        keypoint_set.sigmas,
    )
    stats = evaluator.stats
    return {
        "ap": float(stats[0]),
        "ap50": float(stats[1]),
        "ap75": float(stats[2]),
        "ar": float(stats[5]),
    }
