"""The commit marker of one training checkpoint: `ckpt-<step>.manifest.json`, written after every other
file of the checkpoint, holding their sizes and sha256s (pose.files.integrity's format):

    {"step": 7, "files": {"ckpt-7.index": {"sha256", "bytes"}, "ckpt-7.data-00000-of-00001": {...},
                          "ckpt-7.history.json": {...}, "ckpt-7.progress.json": {...}},
     "fingerprint": {...}, "written": "2026-12-03T03:00:00Z"}

A checkpoint without one was cut short while it was written; one whose files differ from it was
damaged since. Local folders (pose/training/checkpoints.py) and buckets (remote_checkpoints.py) keep
the same file, so a downloaded checkpoint is checked the same way as a local one.
"""

import json
import os
import re
import time
from pathlib import Path

from pose.files.atomic import write_text
from pose.files.integrity import file_checksum, sha256

SUFFIX = ".manifest.json"
_NAME = re.compile(r"^ckpt-(\d+)\.manifest\.json$")


def name(step: int) -> str:
    return f"ckpt-{step}{SUFFIX}"


def step_of(file_name: str) -> int | None:
    """The step of a manifest's file name, None for any other name."""
    match = _NAME.match(file_name)
    return int(match.group(1)) if match else None


def write(folder: Path, step: int, fingerprint: dict) -> dict:
    """Seals checkpoint `step` in `folder`: every other `ckpt-<step>.*` file there is listed; the
    manifest replaces any older one whole (a reader sees the old or the new)."""
    stem = f"ckpt-{step}."
    files = sorted(
        n
        for n in os.listdir(folder)
        if n.startswith(stem) and not n.endswith(SUFFIX) and (folder / n).is_file()
    )
    manifest = {
        "step": step,
        "files": {n: file_checksum(folder / n) for n in files},
        "fingerprint": fingerprint,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text(folder / name(step), json.dumps(manifest, indent=1))
    return manifest


def read(path: Path) -> dict:
    """The manifest at `path`, or a ValueError saying why it is not one."""
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path.name} is unreadable ({type(error).__name__}: {error})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(claim, dict) and isinstance(claim.get("bytes"), int) for claim in files.values()
    ):
        raise ValueError(f"{path.name} is not a checkpoint manifest: {path.read_bytes()[:80]!r}")
    return manifest


def problem(folder: Path, step: int) -> str | None:
    """None when checkpoint `step` in `folder` is exactly what its manifest lists; else what is
    wrong, naming the file."""
    try:
        manifest = read(folder / name(step))
    except ValueError as error:
        return str(error)
    for file_name, claim in manifest["files"].items():
        path = folder / file_name
        if "/" in file_name or not path.is_file():
            return f"{file_name} is missing"
        size = path.stat().st_size
        if size != claim["bytes"]:
            return f"{file_name} has {size} bytes, its manifest says {claim['bytes']}"
        if sha256(path) != claim.get("sha256"):
            return f"{file_name} does not match its sha256 in {name(step)}"
    return None
