"""What a step reads is what it was promised: checksums written by one step, verified by the next.

- Shards: shard writes `"checksums": {file: {"sha256", "bytes"}}` into index.json beside the record
  counts; train, evaluate and tflite call `verify_shards` before reading. An index without checksums
  (older shards) is checked by counting its records instead.
- .tflite: tflite writes `"sha256"` into the model's .json; evaluate and publish call `verify_tflite`.
Every failure names the file and what differs.
"""

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
CHECKSUMS = "checksums"  # the index.json key
BLOCK = 1 << 20


class IntegrityError(ValueError):
    """A file that is not what its index or metadata promises; the message names it."""


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_checksum(path) -> dict:
    return {"sha256": sha256(path), "bytes": os.path.getsize(path)}


def verify_shards(dirs) -> int:
    """Checks every shard named by the index.json of each folder in `dirs` against its checksum (or, for an
    index without checksums, its record count); returns the number of examples."""
    from pose.data import records, shard_index

    total = 0
    for folder in [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs:
        index_path = shard_index.path_of(folder)
        try:
            index = shard_index.read_folder(folder)
        except shard_index.ShardIndexError as error:
            raise IntegrityError(str(error)) from None
        counts = index["shards"]
        checksums = index.get(CHECKSUMS)
        if checksums is None:
            log.warning(
                "%s: no checksums (shards written before they were recorded): counting records instead",
                index_path,
            )
        for name, count in counts.items():
            path = Path(folder) / name
            if not path.is_file():
                raise IntegrityError(f"{path}: named in {index_path} but missing")
            if checksums is not None:
                expected = checksums.get(name)
                if not expected:
                    raise IntegrityError(f"{path}: {index_path} has a count but no checksum for it")
                size = path.stat().st_size
                if size != expected["bytes"]:
                    raise IntegrityError(
                        f"{path}: {size} bytes, but {index_path} says {expected['bytes']} "
                        "(cut short or replaced)"
                    )
                if sha256(path) != expected["sha256"]:
                    raise IntegrityError(
                        f"{path}: sha256 differs from {index_path} (corrupt or replaced)"
                    )
            else:
                found = records.verify_shard(str(path), parse_records=False)
                if found != int(count):
                    raise IntegrityError(f"{path}: {found} records, but {index_path} says {count}")
            total += int(count)
    return total


def verify_tflite(path) -> dict:
    """The .json beside a .tflite, after checking the model file against its sha256; {} when there is no
    .json (the seed's files). A .json without sha256 (one written by hand) is accepted with a warning."""
    from pose.models import metadata as model_metadata

    path = Path(path)
    meta_path = model_metadata.path_for(path)
    if not meta_path.is_file():
        return {}
    try:
        metadata = model_metadata.read_json(meta_path)
    except model_metadata.MetadataError as error:
        raise IntegrityError(str(error)) from None
    expected = metadata.get("sha256")
    if expected is None:
        log.warning("%s: no sha256 to check %s against", meta_path, path.name)
    elif sha256(path) != expected:
        raise IntegrityError(
            f"{path}: sha256 differs from the one in {meta_path.name} (corrupt or replaced)"
        )
    return metadata
