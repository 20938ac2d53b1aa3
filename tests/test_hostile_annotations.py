"""Hostile annotation files through the real convert and shard steps (reliability round 3): numbers
far past the picture, files too large or nested too deep to read, and pictures whose EXIF orientation
turns them against their annotations. Each case stops with one line naming the file and the record."""

import json
import struct
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.convert import ConvertError, InvalidRecord, convert
from components.shard import ShardError, shard
from pose.data import pixels
from pose.data.sources import checks
from tests.test_convert import aic_record, image_id, write_release
from tests.test_shard import write_tiny_coco
from tests.test_sources import JPEG, person, write_export

WIDTH, HEIGHT = 64, 48  # the pictures of test_sources' exports and test_convert's releases


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 EXIF segment holding IFD0's Orientation tag, right after SOI."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def halves(height, width) -> bytes:
    """Left half black, right half white: a 180-degree turn shows white at the top left."""
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:, width // 2 :] = 255
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes()


# ---------------------------------------------------------------------------------------------
# 1. Boxes far outside the picture
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corner", [1e308, 2e5, 1e12])
def test_aic_box_far_outside_the_picture_is_refused(tmp_path, corner):
    records = [aic_record(image_id("train", i)) for i in range(3)]
    records[1]["human_annotations"]["human1"] = [2, 3, corner, 45]
    annotations = write_release(tmp_path / "raw", train=records)["train"][0]
    with pytest.raises(InvalidRecord) as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    message = str(error.value)
    assert message.startswith(
        f"{annotations}: record 1 (image_id '{image_id('train', 1)}', human1): box"
    )
    assert f"beyond the {WIDTH}x{HEIGHT} image" in message
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("bbox", [[1, 2, 1e308, 44], [-2e5, 2, 60, 44], [1, 2, 60, 1e12]])
def test_coco_box_far_outside_the_picture_is_refused(tmp_path, bbox):
    people = [person(1, 1), person(2, 2, bbox=bbox), person(3, 3)]
    path = write_export(tmp_path / "raw", people, num_images=3)
    with pytest.raises(InvalidRecord, match=r"annotation 2\): box .* beyond the 64x48 image") as e:
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.34)
    assert str(e.value).startswith(f"{path}: record ")


def test_box_within_half_a_picture_past_the_border_converts(tmp_path):
    # A person cut by the frame, boxed past it: within checks.BOX_MARGIN_FRACTION, kept as written.
    bbox = [-WIDTH * 0.5, -HEIGHT * 0.5, WIDTH * 2, HEIGHT * 2]
    write_export(tmp_path / "raw", [person(1, 1, bbox=bbox), person(2, 2)], num_images=2)
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.5)
    assert counts["train_people"] + counts["valid_people"] == 2


@pytest.mark.parametrize("area", [float("inf"), float("nan"), -1])
def test_non_finite_or_negative_area_is_refused(tmp_path, area):
    path = write_export(tmp_path / "raw", [person(1, 1, area=area), person(2, 2)], num_images=2)
    with pytest.raises(InvalidRecord, match=r"annotation 1\): area .* not a finite number >= 0"):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.5)
    assert path.is_file()


@pytest.mark.parametrize("width", [float("inf"), -64, 0])
def test_non_finite_or_negative_image_size_is_refused(tmp_path, width):
    path = write_export(tmp_path / "raw", [person(1, 1), person(2, 2)], num_images=2)
    coco = json.loads(path.read_text())
    coco["images"][0]["width"] = width
    path.write_text(json.dumps(coco))
    with pytest.raises(InvalidRecord, match=r"image width .* is not a positive finite number"):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.5)


def _tiny_coco_with(root: Path, bbox) -> dict:
    coco = write_tiny_coco(root)
    coco["annotations"][0]["bbox"] = bbox
    (root / "annotations" / "person_keypoints_train.json").write_text(json.dumps(coco))
    return coco


@pytest.mark.parametrize("bbox", [[10, 10, 1e12, 1e12], [1e308, 10, 20, 20], [10, 10, 2e5, 50]])
def test_shard_refuses_a_crop_past_its_bound_naming_the_record(tmp_path, bbox):
    # A COCO file written by another tool: shard's own bound, before OpenCV allocates the crop.
    coco = _tiny_coco_with(tmp_path / "coco", bbox)
    first = coco["annotations"][0]
    with pytest.raises(
        ShardError, match=rf"annotation {first['id']} \(image id {first['image_id']}, .*not cropped"
    ):
        shard(str(tmp_path / "coco"), str(tmp_path / "out"), "train", num_shards=1)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# 2. Annotation files too large or nested too deep
# ---------------------------------------------------------------------------------------------


def test_annotation_file_over_the_size_bound_is_refused_before_reading(tmp_path):
    path = write_export(tmp_path / "raw", [person(1, 1), person(2, 2)], num_images=2)
    with open(path, "r+b") as f:
        f.truncate(checks.MAX_ANNOTATION_BYTES + 1)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(ConvertError) as error:
            convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"{path}: {checks.MAX_ANNOTATION_BYTES + 1:,} bytes is over the limit"
    )
    assert f"{checks.MAX_ANNOTATION_BYTES:,} bytes" in message
    assert peak < 16 * 1024 * 1024  # refused from the file's size, not after reading it


@pytest.mark.parametrize("bomb", ["[" * 100_000, '{"a":' * 100_000])
def test_json_nesting_bomb_is_refused_naming_the_file(tmp_path, bomb):
    annotations = write_release(tmp_path / "raw")["train"][0]
    annotations.write_text(bomb)
    with pytest.raises(ConvertError) as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    message = str(error.value)
    assert message.startswith(f"{annotations}: JSON nested too deep") and "\n" not in message


def test_the_command_line_names_the_file_of_a_nesting_bomb(tmp_path, capsys):
    from components.convert import main

    annotations = write_release(tmp_path / "raw")["train"][0]
    annotations.write_text("[" * 100_000)
    assert main(["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "coco")]) != 0
    err = capsys.readouterr().err
    assert str(annotations) in err and "RecursionError" not in err


# ---------------------------------------------------------------------------------------------
# 3. EXIF orientation
# ---------------------------------------------------------------------------------------------


def test_exif_orientation_is_read_from_the_header(tmp_path):
    for orientation in range(1, 9):
        picture = tmp_path / f"o{orientation}.jpg"
        picture.write_bytes(with_orientation(JPEG, orientation))
        assert checks.image_facts(str(picture)) == ((WIDTH, HEIGHT), orientation)
    (tmp_path / "plain.jpg").write_bytes(JPEG)
    assert checks.image_facts(str(tmp_path / "plain.jpg")) == ((WIDTH, HEIGHT), 1)


def test_pictures_are_decoded_as_stored_whatever_their_exif_orientation(tmp_path):
    picture = tmp_path / "turned.jpg"
    picture.write_bytes(with_orientation(halves(HEIGHT, WIDTH), 3))
    image = pixels.read_picture(picture)
    assert image.shape[:2] == (HEIGHT, WIDTH)
    assert image[2, 2].max() < 40 and image[2, -3].min() > 215  # black left, white right: unturned
    picture.write_bytes(with_orientation(halves(HEIGHT, WIDTH), 6))
    assert pixels.read_picture(picture).shape[:2] == (HEIGHT, WIDTH)


def test_turned_picture_annotated_at_its_shown_size_is_refused_naming_exif(tmp_path):
    path = write_export(tmp_path / "raw", [person(1, 1), person(2, 2)], num_images=2)
    picture = tmp_path / "raw" / "images" / "default" / "frame_0001.jpg"
    picture.write_bytes(with_orientation(JPEG, 6))
    coco = json.loads(path.read_text())
    coco["images"][0].update(width=HEIGHT, height=WIDTH)  # the size as a browser shows it
    path.write_text(json.dumps(coco))
    with pytest.raises(InvalidRecord) as error:
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.5)
    message = str(error.value)
    assert message.startswith(f"{path}: record 0 (image_id 1)")
    assert f"stored {WIDTH}x{HEIGHT} but the annotations say {HEIGHT}x{WIDTH}" in message
    assert "EXIF orientation 6" in message and "re-save" in message and str(picture) in message


def test_exif_oriented_pictures_are_counted_and_logged(tmp_path, caplog):
    write_export(tmp_path / "raw", [person(n, n) for n in (1, 2, 3, 4)], num_images=4)
    folder = tmp_path / "raw" / "images" / "default"
    (folder / "frame_0001.jpg").write_bytes(with_orientation(JPEG, 3))
    (folder / "frame_0002.jpg").write_bytes(with_orientation(JPEG, 6))
    (folder / "frame_0003.jpg").write_bytes(with_orientation(JPEG, 1))
    with caplog.at_level("WARNING", logger="convert"):
        counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"), valid_fraction=0.25)
    assert counts.get("train_exif_oriented", 0) + counts.get("valid_exif_oriented", 0) == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "EXIF orientation other than 1" in logged and "stored pixels" in logged


def test_keypoints_outside_a_turned_picture_name_exif(tmp_path):
    records = [aic_record(image_id("train", i)) for i in range(3)]
    release = write_release(tmp_path / "raw", train=records)
    annotations, images, _ = release["train"]
    # Annotated on the picture as shown (48 wide, 64 high): a joint at y = 60 is below the stored 48.
    records[1]["keypoint_annotations"]["human1"][1] = 60
    annotations.write_text(json.dumps(records))
    picture = images / f"{image_id('train', 1)}.jpg"
    picture.write_bytes(with_orientation(JPEG, 8))
    with pytest.raises(
        InvalidRecord, match=r"outside the 64x48 image; .*EXIF orientation 8.*re-save"
    ):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))


def test_shard_names_exif_when_a_turned_picture_mismatches(tmp_path):
    coco = write_tiny_coco(tmp_path / "coco")
    first = coco["images"][0]  # 320 wide, 240 high: store it turned, shown at the annotated size
    path = tmp_path / "coco" / "images" / "train" / first["file_name"]
    stored = cv2.rotate(cv2.imread(str(path)), cv2.ROTATE_90_CLOCKWISE)
    path.write_bytes(with_orientation(cv2.imencode(".jpg", stored)[1].tobytes(), 8))
    with pytest.raises(ShardError) as error:
        shard(str(tmp_path / "coco"), str(tmp_path / "out"), "train", num_shards=1)
    message = str(error.value)
    assert "image is 320x240 (h x w) but the annotations say 240x320" in message
    assert "EXIF orientation 8" in message and "re-save it with the rotation applied" in message
