"""A shard folder's index.json (docs/ARTIFACTS.md): shard writes it, the input pipeline reads it,
integrity checks the shards against it. Its keys: split, num_shards, crop_size, crop_margin, shards
({file name: example count}), num_examples, skipped_unlabelled, feature_spec, keypoint_set (the
set's JSON, pose.data.keypoints; an index without one is of the `aic` set), checksums
(pose.files.integrity)."""

import json
import os
from pathlib import Path

from pose.data import keypoints

FILE = "index.json"


class ShardIndexError(ValueError):
    """A shard folder whose index.json is missing, inconsistent or names files that are not there."""


def path_of(folder) -> Path:
    return Path(folder) / FILE


def write(folder, index: dict) -> None:
    with open(path_of(folder), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)


def read_folder(folder) -> dict:
    """One folder's index.json as written, with its shard counts; ShardIndexError names the file."""
    index_path = path_of(folder)
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index.get("shards"), dict):
            raise KeyError("shards")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ShardIndexError(f"{index_path}: cannot read the shard index: {error!r}") from None
    return index


def read(dirs: list[str] | str) -> dict:
    """Merges the index.json of shard folders: files (sorted paths), num_examples, crop_size, split,
    shards ({path: count}), keypoint_set (its JSON; every folder must hold the same set)."""
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    if not dirs:
        raise ShardIndexError("no shard folders given")
    shards, splits, crop_sizes, sets = {}, set(), set(), {}
    for folder in dirs:
        index = read_folder(folder)
        try:
            splits.add(index["split"])
            crop_sizes.add(int(index["crop_size"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ShardIndexError(
                f"{path_of(folder)}: cannot read the shard index: {error!r}"
            ) from None
        found = _keypoint_set_of(index, folder)
        sets.setdefault(json.dumps(found.to_json(), sort_keys=True), (folder, found))
        for name, count in index["shards"].items():
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ShardIndexError(f"{path_of(folder)}: names {name}, which is not in {folder}")
            shards[path] = int(count)
    if len(splits) > 1 or len(crop_sizes) > 1:
        raise ShardIndexError(
            f"shard folders {dirs} mix splits {sorted(splits)} or crop sizes {sorted(crop_sizes)}"
        )
    if len(sets) > 1:
        (first, a), (second, b) = list(sets.values())[:2]
        raise ShardIndexError(
            f"shard folders hold different keypoint sets: {path_of(first)} has {a.name!r} "
            f"({a.num_keypoints} joints), {path_of(second)} has {b.name!r} ({b.num_keypoints} joints)"
        )
    files = sorted(shards)
    return {
        "files": files,
        "shards": {path: shards[path] for path in files},
        "num_examples": sum(shards.values()),
        "crop_size": crop_sizes.pop(),
        "split": splits.pop(),
        "keypoint_set": next(iter(sets.values()))[1].to_json(),
    }


def _keypoint_set_of(index: dict, folder) -> keypoints.KeypointSet:
    try:
        return keypoints.recorded_in(index, str(path_of(folder)))
    except keypoints.KeypointSetError as error:
        raise ShardIndexError(str(error)) from None


def keypoint_set(index: dict) -> keypoints.KeypointSet:
    """The keypoint set of a merged index (`read`'s result)."""
    return keypoints.from_json(index["keypoint_set"], "shard index")
