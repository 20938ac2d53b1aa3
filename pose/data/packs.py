"""Shard packs: which images belong to which shard, and the folder holding one shard's share.

The one rule (used by convert to write packs and by shard to read a whole COCO folder, so both give
the same shards): the images of a split, ordered by image id, are dealt round-robin to N shards; a
shard holds the people of its images, in annotation-id order. Dealing images rather than people puts
every image in exactly one pack, so the packs of a split add up to the split with no copies.

A pack (docs/ARTIFACTS.md) is a COCO folder for one split restricted to one shard:
    packs/<split>-<iiiii>-of-<nnnnn>/pack.json                      {"split", "shard_index", "num_shards",
                                                                     "images", "people"}
    packs/<split>-<iiiii>-of-<nnnnn>/annotations/person_keypoints_<split>.json
    packs/<split>-<iiiii>-of-<nnnnn>/images/<split>/<file_name>
    packs/<split>-<iiiii>-of-<nnnnn>/keypoint_set.json              the keypoint set (KeypointSet.to_json())
convert's output holds keypoint_set.json at its top too: whoever reads a pack or the whole folder
finds the set its keypoints are in (read_keypoint_set).
A KFP task whose input artifact URI is a pack's folder gets only that folder copied into its pod.
"""

import json
import os

PACKS_DIR = "packs"
PACK_INFO = "pack.json"
KEYPOINT_SET_FILE = "keypoint_set.json"
# A keypoint set's JSON is a few kilobytes even at pose.data.keypoints.MAX_KEYPOINTS joints.
MAX_KEYPOINT_SET_BYTES = 1 << 20
# The most shards per split, for every runner: on a KFP cluster, train receives one artifact per
# shard of both splits, each inlined (URI and metadata, about 0.9 KB) into its executor input, a
# single command-line argument that Linux caps at 128 KiB. At 32, train's is 58 KB, under half the
# cap (docs/CLUSTER.md, "How many shards"; pipeline/backend checks the compiled pipeline at it).
MAX_SHARDS = 32


class PackError(ValueError):
    """A pack or a shard count that cannot be used; the message names the folder or value."""


def check_num_shards(num_shards) -> int:
    if (
        isinstance(num_shards, bool)
        or not isinstance(num_shards, int)
        or not 1 <= num_shards <= MAX_SHARDS
    ):
        raise PackError(
            f"num_shards={num_shards!r}: expected an integer from 1 to {MAX_SHARDS} "
            f"(the most a KFP cluster can pass to train: docs/CLUSTER.md, "
            f'"How many shards")'
        )
    return num_shards


def pack_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def pack_path(split: str, index: int, num_shards: int) -> str:
    """The pack's folder relative to convert's output (also the suffix of its URI)."""
    return f"{PACKS_DIR}/{pack_name(split, index, num_shards)}"


def shard_of_images(image_ids, num_shards: int) -> dict:
    """{image id: shard index}: image ids in ascending order dealt round-robin."""
    return {image_id: position % num_shards for position, image_id in enumerate(sorted(image_ids))}


def read_pack_info(folder) -> dict | None:
    """The pack's pack.json, or None when `folder` is not a pack."""
    path = os.path.join(folder, PACK_INFO)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            info = json.load(f)
        for key, kind in (("split", str), ("shard_index", int), ("num_shards", int)):
            if not isinstance(info.get(key), kind):
                raise PackError(f"{path}: {key!r} must be a {kind.__name__}, got {info.get(key)!r}")
    except (OSError, json.JSONDecodeError) as error:
        raise PackError(f"{path}: not a readable pack description: {error}") from error
    return info


def write_pack_info(
    folder, split: str, index: int, num_shards: int, images: int, people: int
) -> None:
    with open(os.path.join(folder, PACK_INFO), "w") as f:
        json.dump(
            {
                "split": split,
                "shard_index": index,
                "num_shards": num_shards,
                "images": images,
                "people": people,
            },
            f,
            indent=1,
        )


def write_dataset_info(path, counts: dict) -> None:
    """convert's small summary artifact (counts per split, num_shards), read by shard readers."""
    with open(path, "w") as f:
        json.dump(counts, f, indent=1, sort_keys=True)


def check_shard_inputs(dataset_info_path, **shards_per_split: int) -> dict:
    """Fails unless each split has one shard (folder, or task) per pack that convert made: a step
    handed the wrong list (another run's, a partial one) stops here. Returns the dataset info."""
    with open(dataset_info_path) as f:
        info = json.load(f)
    expected = info.get("num_shards")
    for split, count in shards_per_split.items():
        if expected is not None and count != expected:
            raise PackError(
                f"{dataset_info_path}: convert made {expected} {split} packs, but this "
                f"step has {count} {split} shards"
            )
    return info


def write_keypoint_set(folder, keypoint_set) -> None:
    """<folder>/keypoint_set.json: the set the folder's keypoints are in."""
    with open(os.path.join(folder, KEYPOINT_SET_FILE), "w") as f:
        json.dump(keypoint_set.to_json(), f, indent=1)


def read_keypoint_set(folder):
    """The KeypointSet of a pack or a convert output (<folder>/keypoint_set.json). A folder without the
    file was written before keypoint sets were data, when every data set was AIC: keypoints.default()."""
    from pose.data import keypoints

    path = os.path.join(folder, KEYPOINT_SET_FILE)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return keypoints.default()
    except OSError as error:
        raise PackError(f"{path}: cannot be read ({error.strerror or error})") from error
    if size > MAX_KEYPOINT_SET_BYTES:
        raise PackError(
            f"{path}: {size} bytes; a keypoint set's file is at most {MAX_KEYPOINT_SET_BYTES}"
        )
    try:
        with open(path, "rb") as f:
            values = json.load(f)
        return keypoints.from_json(values, path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{path}: not a readable keypoint set: {error}") from error
    except keypoints.KeypointSetError as error:
        raise PackError(str(error)) from error  # it names the file already
