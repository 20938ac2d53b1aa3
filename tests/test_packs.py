"""Per-shard packs: convert --num-shards splits each split's images into packs with no copies, shard gives the
same records from a pack as from the whole folder, and in the pipeline each shard task's input holds only
its pack (bytes measured inside the task, under kfp.local)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.convert import convert
from components.shard import ShardError, shard, shard_name
from pipeline.kfp_local_patches import one_task_at_a_time
from pose.data import packs
from tests.conftest import REPO

NUM_SHARDS = 3


def tree_bytes(folder) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.fixture(scope="module")
def packed(synthetic_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "coco"
    convert(str(synthetic_raw), str(out), num_shards=NUM_SHARDS)
    return out


def test_packs_split_each_split_into_disjoint_shares_with_their_people(packed, coco_dataset):
    assert not (packed / "images").exists()
    for split in ("train", "valid"):
        whole = json.loads(
            (coco_dataset / "annotations" / f"person_keypoints_{split}.json").read_text()
        )
        seen_images, seen_people = [], []
        for index in range(NUM_SHARDS):
            folder = packed / packs.pack_path(split, index, NUM_SHARDS)
            info = packs.read_pack_info(folder)
            coco = json.loads(
                (folder / "annotations" / f"person_keypoints_{split}.json").read_text()
            )
            files = sorted(os.listdir(folder / "images" / split))
            assert files == sorted(image["file_name"] for image in coco["images"])
            assert {p["image_id"] for p in coco["annotations"]} <= {i["id"] for i in coco["images"]}
            assert info == {
                "split": split,
                "shard_index": index,
                "num_shards": NUM_SHARDS,
                "images": len(files),
                "people": len(coco["annotations"]),
            }
            # Round-robin over image ids: shares differ by at most one image.
            assert abs(len(files) - len(whole["images"]) / NUM_SHARDS) < 1
            seen_images += coco["images"]
            seen_people += coco["annotations"]
        assert sorted(seen_images, key=lambda i: i["id"]) == whole["images"]
        assert sorted(seen_people, key=lambda p: p["id"]) == whole["annotations"]
        # The top-level annotation file stays whole, the same as without packs.
        assert (
            json.loads((packed / "annotations" / f"person_keypoints_{split}.json").read_text())
            == whole
        )
    # No image is stored twice: the packs together are the images once.
    image_bytes = {
        split: tree_bytes(coco_dataset / "images" / split) for split in ("train", "valid")
    }
    assert (
        sum(
            tree_bytes(packed / packs.pack_path("train", i, NUM_SHARDS) / "images")
            for i in range(NUM_SHARDS)
        )
        == image_bytes["train"]
    )


def test_a_pack_gives_the_same_records_as_the_whole_folder(packed, coco_dataset, tmp_path):
    whole = shard(str(coco_dataset), str(tmp_path / "whole"), "train", NUM_SHARDS, crop_size=64)
    from_packed = shard(str(packed), str(tmp_path / "packed"), "train", NUM_SHARDS, crop_size=64)
    assert from_packed["shards"] == whole["shards"]
    assert from_packed["skipped_unlabelled"] == whole["skipped_unlabelled"]
    index = 1
    name = shard_name("train", index, NUM_SHARDS)
    pack = packed / packs.pack_path("train", index, NUM_SHARDS)
    alone = shard(
        str(pack), str(tmp_path / "alone"), "train", None, crop_size=64
    )  # the pack says which shard
    assert alone["shards"] == {name: whole["shards"][name]} and alone["num_shards"] == NUM_SHARDS
    for folder in ("packed", "alone"):
        assert (tmp_path / folder / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_shard_refuses_a_pack_of_another_shard_or_count(packed, tmp_path):
    pack = packed / packs.pack_path("train", 2, NUM_SHARDS)
    with pytest.raises(
        ShardError,
        match=r"train-00002-of-00003: a pack of train shard 2 of 3, but asked for "
        r"valid shards of 3",
    ):
        shard(str(pack), str(tmp_path / "a"), "valid", NUM_SHARDS)
    with pytest.raises(
        ShardError, match=r"a pack of train shard 2 of 3, but asked for train shard 1 of 3"
    ):
        shard(str(pack), str(tmp_path / "a"), "train", NUM_SHARDS, shard_index=1)
    with pytest.raises(
        ShardError, match=r"no pack train-00000-of-00004 \(convert packed it for another"
    ):
        shard(str(packed), str(tmp_path / "b"), "train", 4, shard_index=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_convert_and_shard_command_lines_take_packs(synthetic_raw, tmp_path):
    def run(*args):
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    counts = json.loads(
        run(
            "components.convert",
            "--input",
            str(synthetic_raw),
            "--output",
            str(tmp_path / "coco"),
            "--num-shards",
            "2",
        )
        .strip()
        .splitlines()[-1]
    )
    assert counts["num_shards"] == 2
    uris = json.loads(
        run(
            "components.fanout",
            "--num-shards",
            "2",
            "--coco-uri",
            str(tmp_path / "coco"),
            "--split",
            "valid",
        )
    )
    assert uris == [str(tmp_path / "coco" / packs.pack_path("valid", i, 2)) for i in range(2)]
    run(
        "components.shard",
        "--input",
        uris[1],
        "--output",
        str(tmp_path / "shards"),
        "--split",
        "valid",
    )
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert list(index["shards"]) == [shard_name("valid", 1, 2)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_each_shard_task_of_the_pipeline_reads_only_its_pack(tmp_path):
    """The DAG's ingest part under kfp.local, wired as pipeline/dag.py wires it: every shard task measures
    the bytes under its input artifact's path (on a cluster, what the launcher downloads into its pod)."""

    from kfp import dsl, local

    from pipeline.ops import convert_op, download_op, pack_uris_op, shard_op

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def ingest(source: str, num_shards: int) -> list[dsl.Dataset]:
        raw = download_op(source=source, sha256="")
        coco = convert_op(
            raw=raw.outputs["raw"], single_person=False, skip_invalid=False, num_shards=num_shards
        )
        fanout = pack_uris_op(coco_uri=coco.outputs["Output"], split="train", num_shards=num_shards)
        with dsl.ParallelFor(fanout.output) as pack_uri:
            pack = dsl.importer(artifact_uri=pack_uri, artifact_class=dsl.Dataset, reimport=False)
            train_shard = shard_op(
                coco=pack.output, split="train", num_shards=num_shards, shard_index=-1, crop_size=64
            )
        return dsl.Collected(train_shard.outputs["shards"])

    with (
        one_task_at_a_time()
    ):  # kfp.local's ParallelFor threads would leave print indented for good
        tasks = ingest(source="synthetic://48?seed=5", num_shards=NUM_SHARDS).output
    (coco,) = (tmp_path / "root").rglob("convert-op/coco")
    whole = tree_bytes(coco)  # what every shard task downloaded before packs
    train = tree_bytes(coco / packs.PACKS_DIR) - sum(
        tree_bytes(coco / packs.pack_path("valid", i, NUM_SHARDS)) for i in range(NUM_SHARDS)
    )
    read = sorted(task.metadata["input_bytes"] for task in tasks)
    names = sorted(
        name
        for task in tasks
        for name in json.loads((Path(task.path) / "index.json").read_text())["shards"]
    )
    assert names == [shard_name("train", i, NUM_SHARDS) for i in range(NUM_SHARDS)]
    assert sum(read) == train  # the train packs, each read once, nothing else
    for size in read:
        assert abs(size - train / NUM_SHARDS) < 0.25 * train / NUM_SHARDS, (size, train)
    assert max(read) < whole / NUM_SHARDS
    print(f"whole coco {whole} bytes; train packs {train}; bytes read per shard task {read}")
