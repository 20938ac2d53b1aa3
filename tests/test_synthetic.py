"""The synthetic AI Challenger release: layout, schema, annotation semantics, determinism."""

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose.data import keypoints as kp
from pose.data.keypoints import AIC_LAYOUT
from pose.data.synthetic import render_release

NUM_TRAIN, NUM_VALID, SEED = 40, 8, 11


def _file_digests(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, render_release(str(folder), NUM_TRAIN, NUM_VALID, SEED)


def _records(folder: Path, split: str) -> list[dict]:
    release_dir, annotation_name, _ = AIC_LAYOUT[split]
    return json.loads((folder / release_dir / annotation_name).read_text())


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(release, tmp_path):
    folder, _ = release
    again = tmp_path / "again"
    render_release(str(again), NUM_TRAIN, NUM_VALID, SEED)
    assert _file_digests(again) == _file_digests(folder)
    other = tmp_path / "other"
    render_release(str(other), 4, 0, SEED + 1)
    first_other = sorted((other / AIC_LAYOUT["train"][0] / AIC_LAYOUT["train"][2]).iterdir())[0]
    assert first_other.name not in {Path(name).name for name in _file_digests(folder)}


def test_official_layout_and_schema(release):
    folder, summary = release
    assert summary["train_images"] == NUM_TRAIN and summary["valid_images"] == NUM_VALID
    ids = set()
    for split, count in (("train", NUM_TRAIN), ("valid", NUM_VALID)):
        release_dir, _, image_folder = AIC_LAYOUT[split]
        records = _records(folder, split)
        assert len(records) == count
        for record in records:
            assert set(record) == {"url", "image_id", "keypoint_annotations", "human_annotations"}
            assert re.fullmatch(r"[0-9a-f]{40}", record["image_id"])
            assert (folder / release_dir / image_folder / f"{record['image_id']}.jpg").is_file()
            assert set(record["keypoint_annotations"]) == set(record["human_annotations"])
            assert all(re.fullmatch(r"human\d+", name) for name in record["keypoint_annotations"])
            for values in record["keypoint_annotations"].values():
                assert len(values) == 3 * kp.NUM_KEYPOINTS and all(type(v) is int for v in values)
            ids.add(record["image_id"])
    assert len(ids) == NUM_TRAIN + NUM_VALID


def test_annotations_match_the_pixels_they_describe(release):
    folder, summary = release
    release_dir, _, image_folder = AIC_LAYOUT["train"]
    codes, people_per_image, sizes = [], [], []
    for record in _records(folder, "train"):
        height, width = cv2.imread(
            str(folder / release_dir / image_folder / f"{record['image_id']}.jpg")
        ).shape[:2]
        sizes.append((width, height))
        people_per_image.append(len(record["keypoint_annotations"]))
        for name, values in record["keypoint_annotations"].items():
            joints = np.array(values).reshape(kp.NUM_KEYPOINTS, 3)
            x1, y1, x2, y2 = record["human_annotations"][name]
            assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height
            labelled = joints[joints[:, 2] < 3]
            outside = joints[joints[:, 2] == 3]
            assert set(joints[:, 2]) <= {1, 2, 3}
            assert (outside[:, :2] == 0).all()
            assert (
                (labelled[:, 0] >= x1)
                & (labelled[:, 0] <= x2)
                & (labelled[:, 1] >= y1)
                & (labelled[:, 1] <= y2)
            ).all()
            codes.extend(joints[:, 2])
            # Front-facing: the person's right is on the image left (rotation stays within +-30 degrees).
            for right, left in ((kp.RIGHT_SHOULDER, kp.LEFT_SHOULDER), (kp.RIGHT_HIP, kp.LEFT_HIP)):
                if joints[right, 2] < 3 and joints[left, 2] < 3:
                    assert joints[right, 0] < joints[left, 0]
            if joints[kp.HEAD_TOP, 2] < 3 and joints[kp.NECK, 2] < 3:  # head top above the neck
                assert joints[kp.HEAD_TOP, 1] < joints[kp.NECK, 1]
    assert all(300 <= w <= 700 and 300 <= h <= 700 for w, h in sizes)
    assert 1 in codes and 2 in codes  # some joints hidden by occluders
    assert codes.count(1) > 0.8 * len(codes)
    assert any(n > 1 for n in people_per_image) and people_per_image.count(1) > NUM_TRAIN // 2
    assert summary["train_people"] == sum(people_per_image)


def test_figures_are_distinct_from_the_background_at_visible_joints(release):
    """Learnability guard: a visible joint sits on drawn body pixels, unlike the box corners around it."""
    folder, _ = release
    release_dir, _, image_folder = AIC_LAYOUT["valid"]
    contrasts = []
    for record in _records(folder, "valid"):
        image = cv2.imread(
            str(folder / release_dir / image_folder / f"{record['image_id']}.jpg")
        ).astype(float)
        for name, values in record["keypoint_annotations"].items():
            joints = np.array(values).reshape(kp.NUM_KEYPOINTS, 3)
            x1, y1, x2, y2 = record["human_annotations"][name]
            elbow = joints[kp.RIGHT_ELBOW]
            if elbow[2] == 1:
                contrasts.append(np.abs(image[elbow[1], elbow[0]] - image[y1, x1]).sum())
    assert np.median(contrasts) > 20
