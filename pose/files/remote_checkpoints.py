"""Training checkpoints mirrored to object storage, so that a preempted training pod loses at most one
checkpoint interval: a new pod (KFP's retry) starts in an empty folder and resumes from the bucket.

Layout under the checkpoint URI (gs://, s3:// or minio://bucket/prefix; pose.files.storage reads and writes it):
    ckpt-<step>.index, ckpt-<step>.data-<i>-of-<n>   TensorFlow's checkpoint files, as written locally
    ckpt-<step>.<name>                               train's files beside the checkpoint (history.json,
                                                     progress.json) as they were at that step
    checkpoint.json                                  {"step", "files", "side_files", "fingerprint", "written"}:
                                                     the marker
The marker is written last, after every file it names, and replaced whole, so a reader that follows it
never sees a half-uploaded checkpoint; older checkpoints are deleted only after the marker has moved on.

`fingerprint` holds what the checkpoint's variables depend on (model, sizes, structure options, mixed
precision); resuming with a config whose fingerprint differs is refused with both named. A local
checkpoint folder keeps the same in FINGERPRINT_FILE, checked the same way.
"""

import json
import logging
import os
import re
import time
from pathlib import Path

from pose.files import storage

log = logging.getLogger(__name__)
MARKER = "checkpoint.json"
FINGERPRINT_FILE = "fingerprint.json"
_STEP = re.compile(r"^ckpt-(\d+)\.")


class CheckpointMismatch(ValueError):
    """The bucket's checkpoints were written by a config with another model structure."""


def mismatch(where: str, step, theirs: dict, ours: dict, config_label: str) -> str | None:
    """None when the fingerprints agree, else the message naming both (only the keys that differ)."""
    if theirs == ours:
        return None
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    return (
        f"{where}: its checkpoint (step {step}) was written for { {k: theirs.get(k) for k in differ} }, "
        f"but the config {config_label} gives { {k: ours.get(k) for k in differ} }; resume with that "
        f"config, or start elsewhere"
    )


class RemoteCheckpoints:
    """One training run's checkpoints under a bucket prefix (the layout above)."""

    def __init__(self, uri: str, fingerprint: dict, keep: int = 3):
        _, bucket, _ = storage.split_object_uri(uri)  # a bucket URI, or a StorageError naming it
        self.uri, self.fingerprint, self.keep = uri.rstrip("/"), fingerprint, max(1, keep)
        self.store = storage.store_for(uri)
        # Now, not at the first checkpoint after minutes of training.
        if not storage.bucket_exists(uri, self.store):
            raise storage.StorageError(
                f"{uri}: bucket {bucket!r} does not exist (or these credentials cannot see it)"
            )

    def _object(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def latest(self) -> dict | None:
        """The marker of the newest complete checkpoint, or None when there is none."""
        text = storage.read_text(self._object(MARKER), self.store)
        if text is None:
            return None
        try:
            marker = json.loads(text)
        except ValueError as error:
            raise storage.StorageError(f"{self._object(MARKER)}: not JSON ({error})") from None
        if (
            not isinstance(marker, dict)
            or not isinstance(marker.get("step"), int)
            or not isinstance(marker.get("files"), list)
        ):
            raise storage.StorageError(
                f"{self._object(MARKER)}: not a checkpoint marker (needs an integer 'step' "
                f"and a 'files' list): {text[:200]!r}"
            )
        return marker

    def check(self, marker: dict, config_label: str) -> None:
        message = mismatch(
            self.uri, marker["step"], marker.get("fingerprint", {}), self.fingerprint, config_label
        )
        if message:
            raise CheckpointMismatch(message)

    def download(self, marker: dict, local_dir: Path) -> str:
        """Fetches the marker's checkpoint into local_dir and makes it the folder's latest for
        tf.train.CheckpointManager; returns its local prefix (…/ckpt-<step>)."""
        import tensorflow as tf

        local_dir.mkdir(parents=True, exist_ok=True)
        step = int(marker["step"])
        local_names = {remote: local for local, remote in marker.get("side_files", {}).items()}
        for name in marker["files"]:
            if "/" in name or name.startswith("."):
                raise storage.StorageError(
                    f"{self._object(MARKER)}: file name {name!r} is not a plain name"
                )
            storage.download_file(
                self._object(name), str(local_dir / local_names.get(name, name)), self.store
            )
        prefix = str(local_dir / f"ckpt-{step}")
        # CheckpointManager resumes from the folder's `checkpoint` state file (TF2 has no public writer of it).
        tf.compat.v1.train.update_checkpoint_state(
            str(local_dir), prefix, all_model_checkpoint_paths=[prefix]
        )
        log.info("fetched checkpoint of step %d from %s", step, self.uri)
        return prefix

    def upload(self, step: int, local_prefix: str, side_files: list[Path] = ()) -> None:
        """Uploads the checkpoint written at local_prefix and the side files (as ckpt-<step>.<name>), then
        the marker naming them, then deletes checkpoints older than the newest `keep`."""
        started = time.perf_counter()
        folder, stem = os.path.split(local_prefix)
        files = sorted(
            n for n in os.listdir(folder) if n.startswith(stem + ".") and ".tmp" not in n
        )
        # Data before index, as TensorFlow writes them (readers go by the marker; tools listing the bucket
        # then never find an index whose data is missing).
        files.sort(key=lambda n: n.endswith(".index"))
        for name in files:
            storage.upload_file(os.path.join(folder, name), self._object(name), self.store)
        sides = {}
        for path in side_files:
            if path.is_file():
                sides[path.name] = f"{stem}.{path.name}"
                storage.upload_file(str(path), self._object(sides[path.name]), self.store)
        marker = {
            "step": step,
            "files": files + list(sides.values()),
            "side_files": sides,
            "fingerprint": self.fingerprint,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        storage.write_text(self._object(MARKER), json.dumps(marker, indent=1), self.store)
        log.info(
            "checkpoint of step %d uploaded to %s in %.1fs",
            step,
            self.uri,
            time.perf_counter() - started,
        )
        self._prune(step)

    def _prune(self, newest: int) -> None:
        names = [n for n in storage.list_names(self.uri, self.store) if "/" not in n]
        steps = sorted({int(m.group(1)) for n in names if (m := _STEP.match(n))}, reverse=True)
        keep = set(steps[: self.keep]) | {newest}
        stale = [
            self._object(n) for n in names if (m := _STEP.match(n)) and int(m.group(1)) not in keep
        ]
        storage.delete(stale, self.store)
