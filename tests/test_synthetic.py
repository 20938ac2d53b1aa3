"""The synthetic AI Challenger release: layout, schema, annotation semantics, determinism."""

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose.data import keypoints as kp
from pose.data import synthetic
from pose.data.aic_release import AIC_LAYOUT
from pose.data.synthetic import render_coco, render_release

AIC = kp.default()

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
                assert len(values) == 3 * AIC.num_keypoints and all(type(v) is int for v in values)
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
            joints = np.array(values).reshape(AIC.num_keypoints, 3)
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
            for right, left in (
                (synthetic.RIGHT_SHOULDER, synthetic.LEFT_SHOULDER),
                (synthetic.RIGHT_HIP, synthetic.LEFT_HIP),
            ):
                if joints[right, 2] < 3 and joints[left, 2] < 3:
                    assert joints[right, 0] < joints[left, 0]
            if (
                joints[synthetic.HEAD_TOP, 2] < 3 and joints[synthetic.NECK, 2] < 3
            ):  # head top above the neck
                assert joints[synthetic.HEAD_TOP, 1] < joints[synthetic.NECK, 1]
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
            joints = np.array(values).reshape(AIC.num_keypoints, 3)
            x1, y1, x2, y2 = record["human_annotations"][name]
            elbow = joints[synthetic.RIGHT_ELBOW]
            if elbow[2] == 1:
                contrasts.append(np.abs(image[elbow[1], elbow[0]] - image[y1, x1]).sum())
    assert np.median(contrasts) > 20


# synthetic://8?seed=7 as the renderer wrote it before keypoint sets were data: the README's main job's
# figures depend on these bytes (every file's relative path and contents, in sorted order).
AIC_RELEASE_DIGEST = "c5e9d7bb4f3cb453e718272a2b4bb26724783670244a7118bf4095ed035c7def"


def test_the_aic_release_is_byte_for_byte_what_it_was(tmp_path):
    render_release(str(tmp_path), 8, 8, 7)
    digest = hashlib.sha256()
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(tmp_path)).encode())
            digest.update(path.read_bytes())
    assert digest.hexdigest() == AIC_RELEASE_DIGEST


def test_coco_layout_labels_the_same_figures_with_the_face(tmp_path):
    coco = kp.preset("coco")
    summary = render_coco(str(tmp_path / "coco"), 6, 2, 11, coco)
    render_release(str(tmp_path / "aic"), 6, 2, 11)
    data = json.loads((tmp_path / "coco/annotations/person_keypoints_train2017.json").read_text())
    assert data["categories"] == [coco.coco_category()]
    assert len(data["images"]) == 6 and (tmp_path / "coco/val2017").is_dir()
    assert summary["valid_images"] == 2
    aic_records = _records(tmp_path / "aic", "train")
    by_image = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    shared = AIC.shared_with(coco)
    assert len(shared) == 12  # the limbs: the face is COCO's own
    for image, record in zip(data["images"], aic_records):
        aic_people = list(record["keypoint_annotations"].values())
        assert len(by_image[image["id"]]) == len(aic_people)
        for annotation, aic_values in zip(by_image[image["id"]], aic_people):
            values = annotation["keypoints"]
            assert len(values) == 3 * coco.num_keypoints
            for (
                here,
                there,
            ) in shared:  # the same figure: the same limb joints, where both label them
                if aic_values[3 * here + 2] != 3:
                    assert values[3 * there : 3 * there + 2] == aic_values[3 * here : 3 * here + 2]
            x, y, w, h = annotation["bbox"]
            for joint in range(
                5
            ):  # nose, eyes, ears: on the rendered head, inside the person's box
                fx, fy, v = values[3 * joint : 3 * joint + 3]
                if v:
                    assert x - 1 <= fx <= x + w + 1 and y - 1 <= fy <= y + h + 1
    image = cv2.imread(str(tmp_path / "coco/train2017" / data["images"][0]["file_name"]))
    assert image.shape[:2] == (data["images"][0]["height"], data["images"][0]["width"])


def test_a_set_the_renderer_cannot_place_is_refused_by_name(tmp_path):
    odd = kp.from_json(
        {"name": "odd", "keypoints": [*kp.preset("coco").names[5:], "tail_tip"]}, "odd"
    )
    with pytest.raises(synthetic.SyntheticError, match="cannot place tail_tip"):
        render_coco(str(tmp_path), 2, 1, 0, odd, "cvat")
