"""PCKh, OKS AP (against pycocotools called directly), sub-pixel decoding and flip-test helpers."""

import contextlib
import io

import numpy as np
import pytest

from pose import codec
from pose.data import keypoints
from pose.evaluation import metrics

AIC = keypoints.preset("aic")


def _person(rng, centre=(100.0, 100.0)):
    points = rng.uniform(-40, 40, (AIC.num_keypoints, 2)) + centre
    points[AIC.index("neck")] = (centre[0], centre[1] - 30)
    points[AIC.index("head_top")] = (centre[0], centre[1] - 50)  # head size 20
    return points


def test_pckh_hand_made_known_answer():
    rng = np.random.default_rng(1)
    gt = np.stack([_person(rng), _person(rng)])
    visible = np.ones(gt.shape[:2], bool)
    pred = gt.copy()
    pred[0, 0] += (9.0, 0.0)  # within 0.5 * 20 = 10: correct
    pred[0, 1] += (0.0, 11.0)  # beyond: wrong
    pred[1, 2] += (8.0, 8.0)  # 11.3: wrong
    visible[1, 3] = False  # not counted
    mean, per_joint = metrics.pckh(pred, gt, visible, AIC.head)
    assert mean == pytest.approx(25 / 27)
    assert (
        per_joint[0] == 1.0 and per_joint[1] == 0.5 and per_joint[2] == 0.5 and per_joint[3] == 1.0
    )


def test_pckh_skips_people_without_a_head_size():
    rng = np.random.default_rng(2)
    gt = np.stack([_person(rng), _person(rng)])
    visible = np.ones(gt.shape[:2], bool)
    visible[1, AIC.index("head_top")] = False
    pred = gt + 100.0
    pred[0] = gt[0]
    mean, per_joint = metrics.pckh(pred, gt, visible, AIC.head)
    assert mean == 1.0 and np.all(per_joint == 1.0)


def _direct_cocoeval_stats(gt_dict, detections):
    """pycocotools used as its documentation shows, independent of pose.evaluation.metrics' builders."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(AIC.sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_oks_ap_equals_cocoeval_on_the_same_predictions():
    rng = np.random.default_rng(3)
    n = 12
    gt = np.stack([_person(rng, rng.uniform(150, 300, 2)) for _ in range(n)])
    visibility = rng.choice([0, 1, 2], size=(n, AIC.num_keypoints), p=[0.1, 0.2, 0.7])
    bboxes = np.concatenate([gt.min(axis=1) - 5, gt.max(axis=1) - gt.min(axis=1) + 10], axis=1)
    image_ids = np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10])
    pred = gt + rng.normal(0, 4, gt.shape)
    scores = rng.uniform(0.2, 1.0, (n, AIC.num_keypoints))

    ours = metrics.oks_ap(pred, scores, gt, visibility, bboxes, image_ids, AIC)

    annotations, detections = [], []
    for i in range(n):
        flat = []
        for (x, y), v in zip(gt[i], visibility[i]):
            flat += [float(x), float(y), int(v)] if v > 0 else [0, 0, 0]
        x0, y0, w, h = (float(b) for b in bboxes[i])
        annotations.append(
            {
                "id": i + 1,
                "image_id": int(image_ids[i]),
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [x0, y0, w, h],
                "area": w * h,
                "keypoints": flat,
                "num_keypoints": int((visibility[i] > 0).sum()),
            }
        )
        detections.append(
            {
                "image_id": int(image_ids[i]),
                "category_id": 1,
                "score": float(scores[i].mean()),
                "keypoints": [c for x, y in pred[i] for c in (float(x), float(y), 1.0)],
            }
        )
    gt_dict = {
        "images": [{"id": int(i)} for i in sorted(set(image_ids))],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(AIC.names), "skeleton": []}],
    }
    stats = _direct_cocoeval_stats(gt_dict, detections)

    assert 0.0 < ours["ap"] < 1.0
    assert ours["ap"] == pytest.approx(stats[0], abs=1e-12)
    assert ours["ap50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["ap75"] == pytest.approx(stats[2], abs=1e-12)


def test_perfect_prediction_gives_ap_one():
    rng = np.random.default_rng(4)
    gt = np.stack([_person(rng, rng.uniform(150, 300, 2)) for _ in range(5)])
    visibility = np.full(gt.shape[:2], 2)
    bboxes = np.tile([50.0, 50.0, 300.0, 300.0], (5, 1))
    result = metrics.oks_ap(gt, np.ones(gt.shape[:2]), gt, visibility, bboxes, np.arange(1, 6), AIC)
    assert result["ap"] == result["ap50"] == result["ap75"] == 1.0


def _gaussian_heatmaps(centres, size=(48, 40), sigma=1.5):
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    maps = [np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres]
    return np.stack(maps, axis=-1)[None].astype(np.float32)


def test_dark_and_quarter_recover_a_sub_pixel_peak():
    rng = np.random.default_rng(5)
    centres = rng.uniform(5, 35, (AIC.num_keypoints, 2))
    heatmaps = _gaussian_heatmaps(centres)
    dark, scores = codec.decode(heatmaps, refine="dark")
    quarter, _ = codec.decode(heatmaps, refine="quarter")
    plain, _ = codec.decode(heatmaps, refine="none")
    assert np.abs(dark[0] - centres).max() < 0.02
    assert np.abs(quarter[0] - centres).max() <= 0.5 + 1e-6
    assert np.abs(quarter[0] - centres).mean() < np.abs(plain[0] - centres).mean()
    assert np.all(scores > 0.6) and np.all(scores <= 1.0)
    with pytest.raises(ValueError, match="refine"):
        codec.decode(heatmaps, refine="cubic")
    with pytest.raises(ValueError, match="refine"):
        codec.HeatmapCodec(192, 2, refine="cubic")


def test_flip_helpers_mirror_and_swap_left_and_right():
    centres = [(10.0 + k, 20.0) for k in range(AIC.num_keypoints)]
    heatmaps = _gaussian_heatmaps(centres, size=(32, 40))
    mirrored = heatmaps[
        :, :, ::-1
    ]  # what a mirror-equivariant model predicts on the flipped image, before swapping
    restored, _ = codec.decode(
        codec.unflip_heatmaps(mirrored[..., list(AIC.flip_index)], AIC.flip_index), "dark"
    )
    assert np.abs(restored[0] - np.array(centres)).max() < 0.02

    swapped, _ = codec.decode(codec.unflip_heatmaps(heatmaps, AIC.flip_index), "dark")
    right, left = AIC.index("right_shoulder"), AIC.index("left_shoulder")
    assert swapped[0, right] == pytest.approx((40 - 1 - centres[left][0], 20.0), abs=0.02)

    def equivariant_model(images):
        # heatmaps from the image itself: mirroring the image mirrors the maps, left/right channels swap
        column = images.mean(axis=(1, 3))
        maps = np.repeat(column[:, None, :, None], AIC.num_keypoints, axis=-1)
        return np.repeat(maps, 4, axis=1)

    images = np.random.default_rng(6).random((2, 4, 40, 3)).astype(np.float32)
    np.testing.assert_allclose(
        codec.flip_test(equivariant_model, images, AIC.flip_index),
        equivariant_model(images),
        atol=1e-6,
    )
