"""shard: exact keypoint round-trips, index counts, deterministic bytes, single-shard tasks, named errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.shard import ShardError, main, shard, shard_name
from pose.data import keypoints, records
from pose.files.outputs import MARKER

NUM_KEYPOINTS = keypoints.preset("aic").num_keypoints

DOT_RADIUS = 3


def _person(rng, width, height, margin):
    """Keypoints spread over a box well inside the image, on a grid so dots do not overlap."""
    x0, y0 = rng.uniform(margin, width - margin - 60), rng.uniform(margin, height - margin - 100)
    cells = rng.permutation(20)[:NUM_KEYPOINTS]
    xs = x0 + (cells % 4) * 20.0 + rng.uniform(0, 4, NUM_KEYPOINTS).round(1)
    ys = y0 + (cells // 4) * 20.0 + rng.uniform(0, 4, NUM_KEYPOINTS).round(1)
    return xs, ys


def write_tiny_coco(root: Path, split: str = "train", seed: int = 0) -> dict:
    """A COCO keypoint folder with white dots drawn exactly on the labelled joints. Images of different
    sizes; one person crosses the image border (crop padding); one has no labelled joint (skipped)."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    sizes = [(240, 320), (400, 200), (480, 640), (300, 300)]
    images, annotations, next_id = [], [], 101
    for image_id, (height, width) in enumerate(sizes, start=1):
        canvas = np.full((height, width, 3), 40, np.uint8)
        canvas[..., 1] = 60 + image_id * 20  # a per-image tint: tells images apart in crops
        people = 2 if image_id == 3 else 1
        for _ in range(people):
            xs, ys = _person(rng, width, height, margin=5)
            visibility = rng.choice([0, 1, 2, 2], NUM_KEYPOINTS)
            visibility[[12, 13, 0]] = 2
            if image_id == 4:
                visibility[:] = (
                    0 if not annotations or annotations[-1]["image_id"] != 4 else visibility
                )
            for x, y, v in zip(xs, ys, visibility):
                if v:
                    cv2.circle(
                        canvas, (int(round(x)), int(round(y))), DOT_RADIUS, (255, 255, 255), -1
                    )
            labelled = visibility > 0
            box_x, box_y = xs.min() - 10, ys.min() - 10
            box = [box_x, box_y, xs.max() + 10 - box_x, ys.max() + 10 - box_y]
            keypoints = np.stack(
                [np.where(labelled, xs, 0), np.where(labelled, ys, 0), visibility], -1
            )
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [round(float(v), 2) for v in box],
                    "area": box[2] * box[3],
                    "num_keypoints": int(labelled.sum()),
                    "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
                }
            )
            next_id += 7
        name = f"{image_id:040x}.jpg"
        cv2.imwrite(str(root / "images" / split / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 98])
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    # One more person at the image border of image 1, with a tall box: the square crop leaves the image.
    annotations.append(
        {
            "id": 90,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [2.0, 5.0, 40.0, 230.0],
            "area": 9200.0,
            "num_keypoints": 2,
            "keypoints": [4.0, 10.0, 2] + [0.0, 0.0, 0] * 11 + [20.0, 200.0, 1, 30.0, 100.0, 2],
        }
    )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(coco))
    return coco


def read_records(path) -> list[dict]:
    import tensorflow as tf

    return [
        {k: v.numpy() for k, v in records.parse(s, NUM_KEYPOINTS).items()}
        for s in tf.data.TFRecordDataset(str(path))
    ]


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny") / "coco"
    return root, write_tiny_coco(root)


@pytest.fixture(scope="module")
def tiny_shards(tiny_coco, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_shards") / "train"
    shard(
        str(tiny_coco[0]), str(out), "train", num_shards=2, crop_size=96
    )  # both shards, two processes
    return out


def test_index_counts_match_records(tiny_coco, tiny_shards):
    index = json.loads((tiny_shards / "index.json").read_text())
    labelled = [a for a in tiny_coco[1]["annotations"] if any(a["keypoints"][2::3])]
    assert index["skipped_unlabelled"] == len(tiny_coco[1]["annotations"]) - len(labelled) == 1
    assert sorted(index["shards"]) == [shard_name("train", i, 2) for i in range(2)]
    for name, count in index["shards"].items():
        assert records.verify_shard(str(tiny_shards / name), decode_images=True) == count
    assert index["num_examples"] == sum(index["shards"].values()) == len(labelled)
    assert set(index["feature_spec"]) == set(records.features(NUM_KEYPOINTS))


def test_records_round_trip_to_original_coordinates(tiny_coco, tiny_shards):
    root, coco = tiny_coco
    people = {a["id"]: a for a in coco["annotations"]}
    images = {i["id"]: i for i in coco["images"]}
    seen = []
    for name in sorted(json.loads((tiny_shards / "index.json").read_text())["shards"]):
        for record in read_records(tiny_shards / name):
            person = people[int(record["person/id"])]
            image = images[person["image_id"]]
            seen.append(person["id"])
            assert record["image/id"] == person["image_id"]
            assert record["image/file_name"].decode() == image["file_name"]
            assert list(record["image/original_size"]) == [image["height"], image["width"]]
            expected = np.asarray(person["keypoints"], np.float64).reshape(-1, 3)
            np.testing.assert_array_equal(record["person/visibility"], expected[:, 2])
            crop = cv2.imdecode(np.frombuffer(record["image/encoded"], np.uint8), cv2.IMREAD_COLOR)
            assert crop.shape[0] == crop.shape[1] == record["crop/size"] <= 96
            to_original = record["crop/to_original"].astype(np.float64)
            labelled = expected[:, 2] > 0
            back = record["person/keypoints"] @ to_original[:, :2].T + to_original[:, 2]
            np.testing.assert_allclose(back[labelled], expected[labelled, :2], atol=1e-3)
            box = record["person/bbox"]
            corner = box[:2] @ to_original[:, :2].T + to_original[:, 2]
            np.testing.assert_allclose(corner, person["bbox"][:2], atol=1e-3)
            np.testing.assert_allclose(box[2:] * to_original[0, 0], person["bbox"][2:], atol=1e-3)
            np.testing.assert_allclose(record["person/bbox_original"], person["bbox"], atol=1e-4)
            # The crop's pixels follow: each labelled joint sits on its drawn dot (bright in every channel).
            if person["id"] != 90:
                for x, y in np.round(record["person/keypoints"][labelled]).astype(int):
                    assert crop[y, x].min() > 150, (person["id"], x, y, crop[y, x])
    # Round-robin in id order: shard 0 holds the 1st, 3rd, ... person.
    assert sorted(seen) == sorted(
        people[i]["id"] for i in people if any(people[i]["keypoints"][2::3])
    )


def test_crop_outside_the_image_is_padded_black(tiny_shards):
    record = next(
        r
        for name in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord")
        for r in read_records(tiny_shards / name)
        if r["person/id"] == 90
    )
    crop = cv2.imdecode(np.frombuffer(record["image/encoded"], np.uint8), cv2.IMREAD_COLOR)
    assert crop[:, :5].max() < 20  # the square around the tall box reaches left of x = 0
    assert record["crop/to_original"][0, 2] < 0


def test_shard_index_writes_that_shard_with_the_same_bytes(tiny_coco, tiny_shards, tmp_path):
    for i in range(2):
        out = tmp_path / f"part{i}"
        assert (
            main(
                [
                    "--input",
                    str(tiny_coco[0]),
                    "--output",
                    str(out),
                    "--split",
                    "train",
                    "--num-shards",
                    "2",
                    "--shard-index",
                    str(i),
                    "--crop-size",
                    "96",
                ]
            )
            == 0
        )
        name = shard_name("train", i, 2)
        assert sorted(p.name for p in out.iterdir()) == [MARKER, "index.json", name]
        assert (out / name).read_bytes() == (tiny_shards / name).read_bytes()
        index = json.loads((out / "index.json").read_text())
        assert index["shards"] == {
            name: json.loads((tiny_shards / "index.json").read_text())["shards"][name]
        }


def _one_shard(tiny_coco, tmp_path) -> Path:
    out = tmp_path / "one"
    shard(str(tiny_coco[0]), str(out), "train", num_shards=1, crop_size=64)
    return out / shard_name("train", 0, 1)


def test_corrupt_shard_names_file_and_record(tiny_coco, tmp_path):
    path = _one_shard(tiny_coco, tmp_path)
    data = bytearray(path.read_bytes())
    lengths, offset = [], 0
    while offset < len(data):  # TFRecord framing: length (8), its CRC (4), data, data CRC (4)
        length = int.from_bytes(data[offset : offset + 8], "little")
        lengths.append((offset, length))
        offset += 16 + length
    start, length = lengths[2]
    data[start + 12 + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(records.CorruptShardError, match=rf"{path.name}: record 2: "):
        records.verify_shard(str(path))


def test_truncated_shard_names_file_and_record(tiny_coco, tmp_path):
    path = _one_shard(tiny_coco, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    count = json.loads((path.parent / "index.json").read_text())["num_examples"]
    with pytest.raises(records.CorruptShardError) as error:
        records.verify_shard(str(path))
    assert error.value.path == str(path) and error.value.record == count - 1


def test_bad_input_names_file_and_record(tiny_coco, tmp_path):
    root, coco = tiny_coco
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    (broken / "images").symlink_to(root / "images")
    bad = json.loads(json.dumps(coco))
    bad["annotations"][1]["keypoints"] = bad["annotations"][1]["keypoints"][:-3]
    (broken / "annotations" / "person_keypoints_train.json").write_text(json.dumps(bad))
    with pytest.raises(
        ShardError,
        match=rf"person_keypoints_train.json: annotations\[1\] \(id {bad['annotations'][1]['id']}\)",
    ):
        shard(str(broken), str(tmp_path / "out"), "train", num_shards=1)
    bad = json.loads(json.dumps(coco))
    bad["images"][0]["file_name"] = "missing.jpg"
    (broken / "annotations" / "person_keypoints_train.json").write_text(json.dumps(bad))
    with pytest.raises(ShardError, match=r"missing.jpg: missing or not a readable image"):
        shard(str(broken), str(tmp_path / "out"), "train", num_shards=1)
    assert not (tmp_path / "out").exists()  # nothing half-written


# The image is ours, built from the same lock as this environment: kfp's guess does not apply.
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_shard_op_runs_under_kfp_local(tiny_coco, tiny_shards, tmp_path):
    from kfp import dsl, local

    from pipeline.ops import shard_op

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def one_shard() -> dsl.Dataset:
        coco = dsl.importer(artifact_uri=str(tiny_coco[0]), artifact_class=dsl.Dataset)
        return shard_op(
            coco=coco.output, split="train", num_shards=2, shard_index=1, crop_size=96
        ).outputs["shards"]

    shards = one_shard().output
    name = shard_name("train", 1, 2)
    assert (
        shards.metadata["num_examples"]
        == json.loads((tiny_shards / "index.json").read_text())["shards"][name]
    )
    # Scalars only: the metadata rides in every reader's one-argument executor input on a cluster.
    assert shards.metadata["shard_files"] == 1 and shards.metadata["skipped_unlabelled"] == 1
    assert (Path(shards.path) / name).read_bytes() == (tiny_shards / name).read_bytes()
