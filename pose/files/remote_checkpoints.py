"""Training checkpoints mirrored to object storage, so that a preempted training pod loses at most one
checkpoint interval: a new pod (KFP's retry) starts in an empty folder and resumes from the bucket.

Layout under the checkpoint URI (gs://, s3:// or minio://bucket/prefix; pose.files.storage reads and writes it):
    ckpt-<step>.index, ckpt-<step>.data-<i>-of-<n>   TensorFlow's checkpoint files, as written locally
    ckpt-<step>.<name>                               train's files beside the checkpoint (history.json,
                                                     progress.json) as they were at that step
    ckpt-<step>.manifest.json                        their sizes and sha256s (pose.files.checkpoint_manifest)
    checkpoint.json                                  {"step", "files", "side_files", "fingerprint", "written"}:
                                                     the marker, naming the newest
Each checkpoint's files are uploaded before its manifest, and the manifest before the marker, which is
replaced whole: a checkpoint whose manifest is in the bucket was uploaded whole. A start goes through them
newest first (checkpoints()), downloads one, and takes it only when every file matches its manifest;
a damaged one is skipped for the previous. Older checkpoints are deleted only after the marker has moved
on.

One training writes a prefix at a time: the chief holds the lock object `.train.lock` there for as
long as it runs (single_writer, pose/files/object_lock.py), and checks it is still its own before each
upload and prune. A second training given the same prefix is refused before it trains, naming the
holder. The holder renews the lock every LOCK_HEARTBEAT_SECONDS; one not renewed for
LOCK_STALE_SECONDS is a training that died, and is taken over. A lock whose owner is this training's
own output path is an earlier attempt of the same training (an Argo retry of a KFP task keeps its
output path: the driver resolves it once and the retry strategy is on the executor pod, KFP's
argocompiler/container.go), killed before its release: taken over at once, so a retry resumes
without waiting. Workers of a multi-worker run other than the chief only read the prefix and take no
lock.

`fingerprint` holds what the checkpoint's variables depend on (model, sizes, structure options, mixed
precision); resuming with a config whose fingerprint differs is refused with both named. A local
checkpoint folder keeps the same in FINGERPRINT_FILE, checked the same way.
"""

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

from pose.files import checkpoint_manifest, storage
from pose.files.object_lock import ObjectLock

log = logging.getLogger(__name__)
MARKER = "checkpoint.json"
FINGERPRINT_FILE = "fingerprint.json"
_STEP = re.compile(r"^ckpt-(\d+)\.")
LOCK = ".train.lock"
# A live training renews its lock this often; a lock not renewed for LOCK_STALE_SECONDS (ten missed
# renewals: a stalled store or a clock skew between hosts of a few minutes still passes) is a
# training that died.
LOCK_HEARTBEAT_SECONDS = 30
LOCK_STALE_SECONDS = 300


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


def _check_bucket(uri: str, store) -> None:
    """Now, not at the first checkpoint after minutes of training."""
    _, bucket, _ = storage.split_object_uri(uri)  # a bucket URI, or a StorageError naming it
    if not storage.bucket_exists(uri, store):
        raise storage.StorageError(
            f"{uri}: bucket {bucket!r} does not exist (or these credentials cannot see it)"
        )


@contextlib.contextmanager
def single_writer(uri: str, output: str):
    """Holds the training's lock of the prefix `uri` for the block (see the module's docstring);
    yields the ObjectLock. LockBusy (a StorageError) naming the holder when another live training
    holds it; a StorageError naming the bucket when it does not exist."""
    _check_bucket(uri, storage.store_for(uri))
    base = uri.rstrip("/")
    with ObjectLock(
        f"{base}/{LOCK}",
        "train",
        base,
        f"wait for it to end (one that died is taken over {LOCK_STALE_SECONDS} s after its last "
        "renewal), or give this training its own checkpoint_uri",
        stale_seconds=LOCK_STALE_SECONDS,
        heartbeat_seconds=LOCK_HEARTBEAT_SECONDS,
        owner=str(Path(output).absolute()),
        noun="training",
    ) as lock:
        yield lock


class RemoteCheckpoints:
    """One training run's checkpoints under a bucket prefix (the layout above). `lock`: the
    single_writer lock this process holds, confirmed before each write (None: a reader only)."""

    def __init__(self, uri: str, fingerprint: dict, keep: int = 3, lock: ObjectLock | None = None):
        storage.split_object_uri(uri)  # a bucket URI, or a StorageError naming it
        self.uri, self.fingerprint, self.keep = uri.rstrip("/"), fingerprint, max(1, keep)
        self.lock = lock
        self.store = storage.store_for(uri)
        _check_bucket(uri, self.store)

    def _object(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def latest(self) -> dict | None:
        """The marker of the newest complete checkpoint, or None when there is none."""
        data = storage.read_bytes(self._object(MARKER), self.store)
        if data is None:
            return None
        try:
            marker = json.loads(data)
        except ValueError as error:  # UnicodeDecodeError included
            raise storage.StorageError(f"{self._object(MARKER)}: not JSON ({error})") from None
        if (
            not isinstance(marker, dict)
            or not isinstance(marker.get("step"), int)
            or not isinstance(marker.get("files"), list)
        ):
            raise storage.StorageError(
                f"{self._object(MARKER)}: not a checkpoint marker (needs an integer 'step' "
                f"and a 'files' list): {data[:200]!r}"
            )
        return marker

    def checkpoints(self) -> list[dict]:
        """Markers of the bucket's checkpoints, newest first: the one checkpoint.json names, and
        each one whose manifest is in the bucket (built from the manifest). A damaged
        checkpoint.json is logged and passed over: the manifests still say what is complete."""
        try:
            newest = self.latest()
        except storage.StorageError as error:
            log.warning("%s; going by the checkpoints' manifests instead", error)
            newest = None
        found = {newest["step"]: newest} if newest else {}
        for name in storage.list_names(self.uri, self.store):
            step = checkpoint_manifest.step_of(name)
            if step is None or step in found:
                continue
            data = storage.read_bytes(self._object(name), self.store)
            try:
                manifest = json.loads(data or b"")
                files = list(manifest["files"])
            except (ValueError, TypeError, KeyError) as error:
                log.warning("%s is not a checkpoint manifest (%s): passed over", name, error)
                continue
            found[step] = {
                "step": step,
                "files": [*files, name],
                "fingerprint": manifest.get("fingerprint") or {},
            }
        return [found[step] for step in sorted(found, reverse=True)]

    def check(self, marker: dict, config_label: str) -> None:
        message = mismatch(
            self.uri, marker["step"], marker.get("fingerprint", {}), self.fingerprint, config_label
        )
        if message:
            raise CheckpointMismatch(message)

    def download(self, marker: dict, local_dir: Path) -> str:
        """Fetches the marker's checkpoint into local_dir, its manifest last; returns its local
        prefix (…/ckpt-<step>). The caller checks it against the manifest before trusting it.
        Checkpoints uploaded before manifests carry their side files by a folder-wide name
        (`side_files`)."""
        local_dir.mkdir(parents=True, exist_ok=True)
        step = int(marker["step"])
        local_names = {remote: local for local, remote in marker.get("side_files", {}).items()}
        for name in sorted(
            marker["files"], key=lambda n: checkpoint_manifest.step_of(n) is not None
        ):
            if "/" in name or name.startswith("."):
                raise storage.StorageError(
                    f"{self._object(MARKER)}: file name {name!r} is not a plain name"
                )
            storage.download_file(
                self._object(name), str(local_dir / local_names.get(name, name)), self.store
            )
        prefix = str(local_dir / f"ckpt-{step}")
        log.info("fetched checkpoint of step %d from %s", step, self.uri)
        return prefix

    def upload(self, step: int, local_prefix: str) -> None:
        """Uploads the checkpoint written at local_prefix (every ckpt-<step>.* file there, its
        manifest last), then the marker naming them, then deletes the other checkpoints but the
        newest `keep`."""
        started = time.perf_counter()
        if self.lock:
            self.lock.confirm()  # another training took the prefix over: write nothing more
        folder, stem = os.path.split(local_prefix)
        files = sorted(
            n for n in os.listdir(folder) if n.startswith(stem + ".") and ".tmp" not in n
        )
        # Data before index, as TensorFlow writes them (tools listing the bucket then never find an
        # index whose data is missing), the manifest after both: it commits the checkpoint.
        files.sort(key=lambda n: (checkpoint_manifest.step_of(n) is not None, n.endswith(".index")))
        for name in files:
            storage.upload_file(os.path.join(folder, name), self._object(name), self.store)
        marker = {
            "step": step,
            "files": files,
            "side_files": {},
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
        if self.lock:
            self.lock.confirm()
        names = [n for n in storage.list_names(self.uri, self.store) if "/" not in n]
        # Newer steps than the one just uploaded are left over from before a fallback: damaged.
        steps = sorted(
            {int(m.group(1)) for n in names if (m := _STEP.match(n)) and int(m.group(1)) <= newest},
            reverse=True,
        )
        keep = set(steps[: self.keep]) | {newest}
        stale = [
            self._object(n) for n in names if (m := _STEP.match(n)) and int(m.group(1)) not in keep
        ]
        storage.delete(stale, self.store)
