"""convert: the synthetic release and hand-made AIC releases (official and seed layouts) through the real
step, loaded back with pycocotools; every bad input stops the step with a message naming file and record."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from components.convert import ConvertError, InvalidRecord, convert, image_size
from pose.data import aic_release
from pose.data import keypoints as kp
from pose.data.sources.layouts import OFFICIAL_LAYOUT

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 64, 48
JPEG = cv2.imencode(
    ".jpg", np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
)[1].tobytes()
# One joint of each AIC code: 1 visible, 2 occluded, 3 unlabelled.
CODES = [1, 2, 3, 1, 1, 2, 1, 1, 3, 1, 1, 1, 1, 1]
BOX = [2, 3, 60, 45]


def aic_keypoints(codes=CODES):
    values = []
    for joint, code in enumerate(codes):
        values += [0, 0, 3] if code == 3 else [3 + 4 * joint, 5 + 2 * joint, code]
    return values


def aic_record(image_id, people=1):
    humans = [f"human{i + 1}" for i in range(people)]
    return {
        "url": f"http://example.invalid/{image_id}.jpg",
        "image_id": image_id,
        "keypoint_annotations": {h: aic_keypoints() for h in humans},
        "human_annotations": {h: list(BOX) for h in humans},
    }


def image_id(split, index):
    return f"{split[0]}{index:039x}"  # 40 hex-like characters, as in the real release


def write_release(root: Path, train=None, valid=None) -> dict:
    """An official-layout release; returns {split: (annotation file, image folder, records)}."""
    releases = {
        "train": "ai_challenger_keypoint_train_20170902",
        "valid": "ai_challenger_keypoint_validation_20170911",
    }
    written = {}
    for split, records in (("train", train), ("valid", valid)):
        records = (
            records if records is not None else [aic_record(image_id(split, i)) for i in range(3)]
        )
        annotation_name, images_name = OFFICIAL_LAYOUT[split]
        images = root / releases[split] / images_name
        images.mkdir(parents=True)
        for record in records:
            (images / f"{record['image_id']}.jpg").write_bytes(JPEG)
        annotations = root / releases[split] / annotation_name
        annotations.write_text(json.dumps(records, indent=1))
        written[split] = (annotations, images, records)
    return written


# ---------------------------------------------------------------------------------------------
# The synthetic release, as the next steps get it
# ---------------------------------------------------------------------------------------------


def test_synthetic_release_converts_to_coco(synthetic_raw, coco_dataset):
    for split, (annotation_name, _) in OFFICIAL_LAYOUT.items():
        [raw_file] = synthetic_raw.rglob(annotation_name)
        raw = json.loads(raw_file.read_text())
        coco = COCO(str(coco_dataset / "annotations" / f"person_keypoints_{split}.json"))
        assert len(coco.getImgIds()) == len(raw)
        assert len(coco.getAnnIds()) == sum(len(r["human_annotations"]) for r in raw)
        assert coco.loadCats(1)[0]["keypoints"] == list(kp.default().names)
        by_name = {image["file_name"]: image for image in coco.dataset["images"]}
        for record in raw:
            image = by_name[f"{record['image_id']}.jpg"]
            height, width = cv2.imread(
                str(coco_dataset / "images" / split / image["file_name"])
            ).shape[:2]
            assert (image["width"], image["height"]) == (width, height)
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            for annotation, human in zip(annotations, record["keypoint_annotations"]):
                aic, out = record["keypoint_annotations"][human], annotation["keypoints"]
                assert out[2::3] == [aic_release.AIC_TO_COCO_VISIBILITY[v] for v in aic[2::3]]
                x1, y1, x2, y2 = record["human_annotations"][human]
                assert annotation["bbox"] == [x1, y1, x2 - x1, y2 - y1]
                assert annotation["area"] == (x2 - x1) * (y2 - y1)
                assert annotation["num_keypoints"] == sum(v in (1, 2) for v in aic[2::3])
                assert annotation["iscrowd"] == 0
        assert not (coco_dataset / "rejects.json").exists()


# ---------------------------------------------------------------------------------------------
# Hand-made releases: exact values
# ---------------------------------------------------------------------------------------------


def test_visibility_bbox_and_hard_links(tmp_path):
    release = write_release(
        tmp_path / "raw",
        train=[aic_record(image_id("train", 0)), aic_record(image_id("train", 1), 2)],
    )
    (tmp_path / "coco").mkdir()  # KFP creates the output folder empty
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    assert counts.pop("keypoint_set") == kp.default().to_json()
    assert counts == {
        "train_records": 2,
        "train_images": 2,
        "train_people": 3,
        "train_rejected": 0,
        "valid_records": 3,
        "valid_images": 3,
        "valid_people": 3,
        "valid_rejected": 0,
        "rejected": 0,
    }
    coco = COCO(str(tmp_path / "coco" / "annotations" / "person_keypoints_train.json"))
    image = coco.loadImgs(1)[0]
    assert image == {
        "id": 1,
        "file_name": f"{image_id('train', 0)}.jpg",
        "width": WIDTH,
        "height": HEIGHT,
    }
    annotation = coco.loadAnns(coco.getAnnIds(imgIds=1))[0]
    expected = []
    for joint, code in enumerate(CODES):
        expected += [0, 0, 0] if code == 3 else [3 + 4 * joint, 5 + 2 * joint, {1: 2, 2: 1}[code]]
    assert annotation["keypoints"] == expected
    assert annotation["num_keypoints"] == 12
    assert annotation["bbox"] == [2, 3, 58, 42] and annotation["area"] == 58 * 42
    assert (annotation["category_id"], annotation["iscrowd"]) == (1, 0)
    source = release["train"][1] / image["file_name"]
    assert (
        tmp_path / "coco" / "images" / "train" / image["file_name"]
    ).stat().st_ino == source.stat().st_ino


def test_keypoints_within_two_pixels_of_the_border_are_pulled_inside(tmp_path):
    record = aic_record(image_id("train", 0))
    record["keypoint_annotations"]["human1"][0:2] = [WIDTH + 1, -2]  # joint 0, code 1
    write_release(tmp_path / "raw", train=[record])
    convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    coco = COCO(str(tmp_path / "coco" / "annotations" / "person_keypoints_train.json"))
    assert coco.loadAnns(1)[0]["keypoints"][0:3] == [WIDTH - 1, 0, 2]


def test_image_size_reads_jpeg_headers_and_finds_truncation(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    baseline = cv2.imencode(".jpg", image)[1].tobytes()
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    exif_like = (
        b"\xff\xe1" + (30002).to_bytes(2, "big") + bytes(30000)
    )  # a long APP1 before the frame header
    cases = {
        "baseline": baseline,
        "progressive": progressive,
        "exif": baseline[:2] + exif_like + baseline[2:],
    }
    for name, content in cases.items():
        (tmp_path / f"{name}.jpg").write_bytes(content)
        assert image_size(str(tmp_path / f"{name}.jpg")) == (53, 37), name
    for cut in (0, 3, 30, 300, len(progressive) - 2):
        (tmp_path / "cut.jpg").write_bytes(progressive[:cut])
        assert "is unreadable" in str(image_size(str(tmp_path / "cut.jpg"))), cut
    assert "is missing" in str(image_size(str(tmp_path / "absent.jpg")))


def test_single_person_keeps_images_with_exactly_one_person(tmp_path):
    train = [aic_record(image_id("train", i), people) for i, people in enumerate([1, 2, 0, 1, 3])]
    write_release(tmp_path / "raw", train=train)
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"), single_person=True)
    # The image with no person is left out as such (no person to train on), not as multi-person.
    assert (
        counts["train_images"],
        counts["train_people"],
        counts["train_not_single_person"],
        counts["train_images_without_people"],
    ) == (2, 2, 2, 1)
    coco = COCO(str(tmp_path / "coco" / "annotations" / "person_keypoints_train.json"))
    kept = sorted(image["file_name"] for image in coco.dataset["images"])
    assert kept == [f"{image_id('train', 0)}.jpg", f"{image_id('train', 3)}.jpg"]
    assert sorted(p.name for p in (tmp_path / "coco" / "images" / "train").iterdir()) == kept


def test_seed_layout_reads_back_as_the_same_coco(tmp_path):
    """The seed's files are COCO already: laid out as the seed did, our output converts to itself."""
    write_release(
        tmp_path / "raw", train=[aic_record(image_id("train", i), 1 + i % 2) for i in range(4)]
    )
    convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    seed = tmp_path / "seed" / "ai_challenger"
    seed.mkdir(parents=True)
    for split in ("train", "valid"):
        annotation_name, images_name = aic_release.SEED_LAYOUT[split]
        content = json.loads(
            (tmp_path / "coco" / "annotations" / f"person_keypoints_{split}.json").read_text()
        )
        for image in content["images"]:  # the seed's file names carry a folder prefix
            image["file_name"] = f"ai_challenger/{split}/{image['file_name']}"
        (seed / annotation_name).write_text(json.dumps(content))
        os.rename(tmp_path / "coco" / "images" / split, seed / images_name)
    counts = convert(str(tmp_path / "seed"), str(tmp_path / "again"))
    assert (counts["train_images"], counts["train_people"]) == (4, 6)
    for split in ("train", "valid"):
        first = json.loads((seed / aic_release.SEED_LAYOUT[split][0]).read_text())
        again = json.loads(
            (tmp_path / "again" / "annotations" / f"person_keypoints_{split}.json").read_text()
        )
        assert again["annotations"] == first["annotations"]
        assert [i["file_name"] for i in again["images"]] == [
            Path(i["file_name"]).name for i in first["images"]
        ]


def test_cli_converts_and_reports_bad_input(tmp_path):
    write_release(tmp_path / "raw")
    command = [
        sys.executable,
        "-m",
        "components.convert",
        "--input",
        str(tmp_path / "raw"),
        "--single-person",
    ]
    done = subprocess.run(
        command + ["--output", str(tmp_path / "coco")], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train_images"] == 3
    assert "done in" in done.stderr
    (
        tmp_path
        / "raw"
        / "ai_challenger_keypoint_train_20170902"
        / "keypoint_train_annotations_20170909.json"
    ).write_text("[{")
    failed = subprocess.run(
        command + ["--output", str(tmp_path / "coco2")], cwd=REPO, capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert (
        "keypoint_train_annotations_20170909.json: broken JSON at line 1, column 3" in failed.stderr
    )


# ---------------------------------------------------------------------------------------------
# Bad input: each stops the step with a message naming the file, the record and what is wrong
# ---------------------------------------------------------------------------------------------


def _missing_image(record, images):
    (images / f"{record['image_id']}.jpg").unlink()


def _truncated_image(record, images):
    (images / f"{record['image_id']}.jpg").write_bytes(JPEG[: len(JPEG) // 2])


def _not_an_image(record, images):
    (images / f"{record['image_id']}.jpg").write_bytes(b"<html>not found</html>")


def _short_keypoints(record, images):
    record["keypoint_annotations"]["human1"] = aic_keypoints()[:41]


def _bad_visibility(record, images):
    record["keypoint_annotations"]["human1"][3 * 4 + 2] = 4


def _outside_image(record, images):
    record["keypoint_annotations"]["human1"][3 * 1] = WIDTH + 5


def _box_x2_before_x1(record, images):
    record["human_annotations"]["human1"] = [50, 3, 10, 40]


def _box_y2_before_y1(record, images):
    record["human_annotations"]["human1"] = [2, 40, 60, 3]


def _box_without_keypoints(record, images):
    del record["keypoint_annotations"]["human1"]


BAD_INPUTS = {
    "missing image": (_missing_image, "image {image} is missing"),
    "truncated image": (_truncated_image, "image {image} is unreadable: truncated"),
    "not an image": (_not_an_image, "image {image} is unreadable: not a JPEG"),
    "41 keypoint values": (_short_keypoints, "human1): keypoint list has length 41, expected 42"),
    "visibility code 4": (
        _bad_visibility,
        "human1): joint 4 (left_elbow) has visibility code 4, expected one of 1, 2, 3",
    ),
    "keypoint outside": (
        _outside_image,
        "human1): joint 1 (right_elbow) at (69, 7) is outside the 64x48 image",
    ),
    "x2 < x1": (_box_x2_before_x1, "human1): box [50, 3, 10, 40] has x2 < x1"),
    "y2 < y1": (_box_y2_before_y1, "human1): box [2, 40, 60, 3] has y2 < y1"),
    "box without keypoints": (_box_without_keypoints, "human1): has a box but no keypoints"),
}


def _bad_release(root: Path, mutations) -> tuple[Path, Path]:
    """A train split of good records with record i broken by mutations[i - 1]; returns (annotations, images)."""
    records = [aic_record(image_id("train", i)) for i in range(len(mutations) + 2)]
    release = write_release(root, train=records)
    annotations, images, _ = release["train"]
    for index, mutate in enumerate(mutations, start=1):
        mutate(records[index], images)
    annotations.write_text(json.dumps(records))
    return annotations, images


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_record_stops_with_file_and_record(tmp_path, name):
    mutate, expected = BAD_INPUTS[name]
    annotations, images = _bad_release(tmp_path / "raw", [mutate])
    bad_id = image_id("train", 1)
    with pytest.raises(InvalidRecord) as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    message = str(error.value)
    assert message.startswith(f"{annotations}: record 1 (image_id '{bad_id}'")
    assert expected.format(image=images / f"{bad_id}.jpg") in message
    assert not (tmp_path / "coco").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no half-written output left beside it


def test_duplicate_image_id_names_the_first_record(tmp_path):
    records = [
        aic_record(image_id("train", 0)),
        aic_record(image_id("train", 1)),
        aic_record(image_id("train", 0)),
    ]
    annotations = write_release(tmp_path / "raw", train=records)["train"][0]
    with pytest.raises(
        InvalidRecord,
        match=re.escape(
            f"{annotations}: record 2 (image_id '{image_id('train', 0)}'): "
            "duplicate image_id, first at record 0"
        ),
    ):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))


def test_broken_json_names_the_position(tmp_path):
    annotations, _, _ = write_release(tmp_path / "raw")["valid"]
    annotations.write_text('[\n {"image_id": "a",\n  "keypoint_annotations": {,}\n')
    with pytest.raises(
        ConvertError,
        match=r"keypoint_validation_annotations_20170911\.json: broken JSON at line 3, "
        r"column 28 \(char 48\): Expecting property name",
    ):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    assert not (tmp_path / "coco").exists()


def test_missing_split_and_non_empty_output(tmp_path):
    write_release(tmp_path / "raw")
    (
        tmp_path
        / "raw"
        / "ai_challenger_keypoint_validation_20170911"
        / "keypoint_validation_annotations_20170911.json"
    ).unlink()
    with pytest.raises(
        ConvertError, match="no valid split below .*keypoint_validation_annotations_20170911.json"
    ):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="exists and is not an empty folder"):
        convert(str(tmp_path / "raw"), str(tmp_path / "full"))


def test_skip_invalid_lists_rejects(tmp_path):
    mutations = [mutate for mutate, _ in BAD_INPUTS.values()]
    annotations, _ = _bad_release(tmp_path / "raw", mutations)
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"), skip_invalid=True)
    assert (counts["train_records"], counts["train_images"], counts["train_rejected"]) == (
        len(mutations) + 2,
        2,
        len(mutations),
    )
    assert counts["rejected"] == len(mutations)
    rejects = json.loads((tmp_path / "coco" / "rejects.json").read_text())
    assert rejects["count"] == len(mutations)
    assert [r["record"] for r in rejects["rejects"]] == list(range(1, len(mutations) + 1))
    for reject, (_, expected) in zip(rejects["rejects"], BAD_INPUTS.values()):
        assert reject["split"] == "train" and reject["file"] == str(annotations)
        assert reject["image_id"] == image_id("train", reject["record"])
        assert expected.split("): ")[-1].split("{image}")[-1] in reject["reason"]
    coco = COCO(str(tmp_path / "coco" / "annotations" / "person_keypoints_train.json"))
    kept = sorted(image["file_name"] for image in coco.dataset["images"])
    assert kept == [f"{image_id('train', 0)}.jpg", f"{image_id('train', len(mutations) + 1)}.jpg"]
    assert sorted(p.name for p in (tmp_path / "coco" / "images" / "train").iterdir()) == kept


# The image is ours, built from the same lock as this environment: kfp's guess does not apply.
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_convert_op_runs_under_kfp_local(tmp_path):
    from kfp import dsl, local

    from pipeline.ops import convert_op

    write_release(
        tmp_path / "raw", train=[aic_record(image_id("train", i), 1 + i % 2) for i in range(4)]
    )
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def ingest() -> dsl.Dataset:
        raw = dsl.importer(artifact_uri=str(tmp_path / "raw"), artifact_class=dsl.Dataset)
        return convert_op(raw=raw.output, single_person=True, skip_invalid=False).outputs["coco"]

    coco = ingest().output
    assert coco.metadata["train_images"] == 2 and coco.metadata["train_not_single_person"] == 2
    loaded = COCO(str(Path(coco.path) / "annotations" / "person_keypoints_train.json"))
    assert len(loaded.getImgIds()) == 2 and len(loaded.getAnnIds()) == 2
