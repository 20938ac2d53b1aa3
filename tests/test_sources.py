"""COCO-format data through the real convert step: COCO 2017's layout (rendered), a CVAT-style
single-subset export of one's own 12-joint skeleton, Label Studio's separate box and keypoint
annotations; the set convert used, written beside the data; and the clear lines bad input gets."""

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO

from components.convert import ConvertError, InvalidRecord, convert, main
from pose.data import keypoints as kp
from pose.data import packs, synthetic
from pose.data.sources.coco import valid_image_ids

WIDTH, HEIGHT = 64, 48
JPEG = cv2.imencode(
    ".jpg", np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
)[1].tobytes()
BODY12 = kp.from_json({"name": "body12", "keypoints": list(kp.preset("coco").names[5:])}, "body12")


def person(image_id, number, labelled=12, joints=12, **extra):
    values = []
    for joint in range(joints):
        values += [4 + 4 * joint, 5 + 3 * (joint % 12), 2] if joint < labelled else [0, 0, 0]
    return {
        "id": number,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": values,
        "num_keypoints": labelled,
        "bbox": [1, 2, 60, 44],
        "iscrowd": 0,
        "area": 60 * 44,
        **extra,
    }


def write_export(root: Path, annotations, num_images=10, keypoint_set=BODY12, subset="default"):
    """CVAT's layout: annotations/person_keypoints_<subset>.json and images/<subset>/."""
    (root / "annotations").mkdir(parents=True)
    (root / "images" / subset).mkdir(parents=True)
    images = []
    for number in range(1, num_images + 1):
        (root / "images" / subset / f"frame_{number:04d}.jpg").write_bytes(JPEG)
        images.append(
            {"id": number, "file_name": f"frame_{number:04d}.jpg", "width": WIDTH, "height": HEIGHT}
        )
    path = root / "annotations" / f"person_keypoints_{subset}.json"
    category = keypoint_set.coco_category()
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [category]})
    )
    return path


def test_coco_2017_layout_converts_with_coco_keypoints(tmp_path):
    nested = tmp_path / "raw" / "coco"  # found at any depth
    synthetic.render_coco(str(nested), 12, 4, 5, kp.preset("coco"))
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "out"), num_shards=2)
    coco_set = kp.preset("coco")
    assert counts["keypoint_set"] == coco_set.to_json()
    assert counts["train_images"] == 12 and counts["valid_images"] == 4
    assert packs.read_keypoint_set(tmp_path / "out") == coco_set
    for index in range(2):
        pack = tmp_path / "out" / packs.pack_path("train", index, 2)
        assert packs.read_keypoint_set(pack) == coco_set
    rendered = json.loads((nested / "annotations/person_keypoints_train2017.json").read_text())
    merged = []
    for index in range(2):
        pack = tmp_path / "out" / packs.pack_path("train", index, 2)
        loaded = COCO(str(pack / "annotations/person_keypoints_train.json"))
        assert loaded.loadCats(1)[0]["keypoints"] == list(coco_set.names)
        merged += [a["keypoints"] for a in loaded.dataset["annotations"]]
    assert sorted(merged) == sorted(a["keypoints"] for a in rendered["annotations"])


def test_cvat_zip_of_ones_own_skeleton_splits_by_valid_fraction(tmp_path):
    synthetic.render_coco(str(tmp_path / "export"), 16, 4, 9, BODY12, "cvat")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as bundle:
        for path in sorted((tmp_path / "export").rglob("*")):
            bundle.write(path, path.relative_to(tmp_path / "export"))
    from components.download import download

    fetched = download(str(tmp_path / "export.zip"), str(tmp_path / "raw"))
    assert fetched["images"] == 20
    first = convert(str(tmp_path / "raw"), str(tmp_path / "out"), valid_fraction=0.25)
    again = convert(str(tmp_path / "raw"), str(tmp_path / "again"), valid_fraction=0.25)
    assert (first["train_images"], first["valid_images"]) == (15, 5)
    assert first == again  # deterministic, by image id
    used = kp.from_json(first["keypoint_set"])
    assert used.names == BODY12.names and used.num_keypoints == 12
    # Partners from the left_/right_ names (the body joints come in left, right pairs).
    assert used.flip_index == tuple(joint ^ 1 for joint in range(12))
    valid = json.loads((tmp_path / "out/annotations/person_keypoints_valid.json").read_text())
    train = json.loads((tmp_path / "out/annotations/person_keypoints_train.json").read_text())
    names = {image["file_name"] for image in valid["images"]}
    assert not names & {image["file_name"] for image in train["images"]}
    assert all(len(a["keypoints"]) == 36 for a in valid["annotations"] + train["annotations"])


def test_valid_image_ids_are_a_fixed_fraction_by_id():
    chosen = valid_image_ids(range(1000), 0.1)
    assert len(chosen) == 100 and chosen == valid_image_ids(reversed(range(1000)), 0.1)
    assert (
        chosen <= valid_image_ids(range(1000), 0.2)
        or len(chosen & valid_image_ids(range(2000), 0.1)) > 40
    )
    assert valid_image_ids([7], 0.5) == set()


def test_crowd_and_too_few_keypoints_are_skipped_and_counted(tmp_path, caplog):
    annotations = [person(i, i) for i in range(1, 11)]
    annotations += [person(1, 11, iscrowd=1), person(2, 12, labelled=2), person(3, 13, labelled=0)]
    write_export(tmp_path / "raw", annotations)
    with caplog.at_level("INFO"):
        counts = convert(
            str(tmp_path / "raw"), str(tmp_path / "out"), min_keypoints=3, valid_fraction=0.2
        )
    assert counts["train_people"] + counts["valid_people"] == 10
    skipped = {
        key: sum(counts.get(f"{split}_skipped_{key}", 0) for split in ("train", "valid"))
        for key in ("crowd", "too_few_keypoints")
    }
    assert skipped == {"crowd": 1, "too_few_keypoints": 2}
    assert "crowd annotations" in caplog.text and "too few labelled joints" in caplog.text


def test_label_studio_boxes_and_keypoints_are_merged(tmp_path):
    """A box-only and a keypoint-only annotation become one person; what fits no box is counted."""
    root = tmp_path / "raw" / "project-1"
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for number in range(1, 6):
        (root / "images" / f"{number}.jpg").write_bytes(JPEG)
        images.append(
            {"id": number, "file_name": f"images/{number}.jpg", "width": WIDTH, "height": HEIGHT}
        )
        box = person(number, 2 * number)
        del box["keypoints"]
        keypoints = person(number, 2 * number + 1)
        del keypoints["bbox"]
        annotations += [box, keypoints]
    stray = person(1, 99)
    del stray["bbox"]
    stray["keypoints"][0:2] = [63, 47]  # outside the only box of image 1, already taken
    annotations.append(stray)
    (root / "result.json").write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": [BODY12.coco_category()]}
        )
    )
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "out"), valid_fraction=0.2)
    assert counts["train_people"] + counts["valid_people"] == 5
    unmatched = sum(
        counts.get(f"{split}_skipped_unmatched_keypoints", 0) for split in ("train", "valid")
    )
    assert unmatched == 1
    out = json.loads((tmp_path / "out/annotations/person_keypoints_train.json").read_text())
    assert all(a["bbox"] == [1, 2, 60, 44] for a in out["annotations"])


def test_wrong_keypoint_length_names_file_record_and_set(tmp_path):
    annotations = [person(i, i) for i in range(1, 11)]
    annotations[3] = person(4, 4, joints=11)
    path = write_export(tmp_path / "raw", annotations)
    with pytest.raises(InvalidRecord) as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "out"), valid_fraction=0.5)
    message = str(error.value)
    assert str(path) in message and "annotation 4" in message
    assert "keypoint list has length 33, expected 36 (12 joints" in message


def test_a_yaml_set_must_name_the_files_joints(tmp_path):
    write_export(tmp_path / "raw", [person(i, i) for i in range(1, 11)])
    good = tmp_path / "body12.yaml"
    values = BODY12.to_json() | {"sigmas": [0.05] * 12}
    good.write_text(yaml.safe_dump(values))
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "out"), keypoints=str(good))
    assert counts["keypoint_set"]["sigmas"] == [0.05] * 12
    assert packs.read_keypoint_set(tmp_path / "out").sigmas == (0.05,) * 12
    swapped = tmp_path / "swapped.yaml"
    names = list(BODY12.names)
    names[0], names[1] = names[1], names[0]
    swapped.write_text(yaml.safe_dump({"name": "swapped", "keypoints": names}))
    with pytest.raises(ConvertError, match="must name the same joints in the same order") as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "again"), keypoints=str(swapped))
    assert "person_keypoints_default.json" in str(error.value) and "'swapped'" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_aic_data_refuses_another_set_on_the_command_line(synthetic_raw, tmp_path, capsys):
    assert (
        main(
            [
                "--input",
                str(synthetic_raw),
                "--output",
                str(tmp_path / "out"),
                "--keypoints",
                "coco",
            ]
        )
        != 0
    )
    err = capsys.readouterr().err
    assert "AI Challenger data labels the keypoints" in err and "'coco'" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_command_line_takes_the_new_options_and_the_pipelines_num_shards(
    synthetic_raw, tmp_path, capsys
):
    arguments = ["--input", str(synthetic_raw), "--output", str(tmp_path / "out")]
    assert (
        main(
            [
                *arguments,
                "--keypoints",
                "auto",
                "--min-keypoints",
                "1",
                "--valid-fraction",
                "0.1",
                "--num-shards",
                "0",
            ]
        )
        == 0
    )
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["keypoint_set"]["name"] == "aic" and "num_shards" not in counts
    assert (
        json.loads((tmp_path / "out" / packs.KEYPOINT_SET_FILE).read_text())
        == kp.default().to_json()
    )


def test_read_keypoint_set_defaults_to_aic_and_names_a_broken_file(tmp_path):
    assert packs.read_keypoint_set(tmp_path) == kp.default()  # written before sets were data
    packs.write_keypoint_set(tmp_path, BODY12)
    assert packs.read_keypoint_set(tmp_path) == BODY12
    (tmp_path / packs.KEYPOINT_SET_FILE).write_text('{"keypoints": ["a", "a"]}')
    with pytest.raises(packs.PackError, match=r"keypoint_set.json.*'a' repeats"):
        packs.read_keypoint_set(tmp_path)
    (tmp_path / packs.KEYPOINT_SET_FILE).write_text("{not json")
    with pytest.raises(packs.PackError, match=r"keypoint_set.json: not a readable keypoint set"):
        packs.read_keypoint_set(tmp_path)
