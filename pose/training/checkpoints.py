"""train's checkpoints: where they are, what rides along with them, and resuming from them.

checkpoints/ in the model folder holds, every `checkpoint_every` steps (the newest `keep_checkpoints`):
    ckpt-<step>.index, ckpt-<step>.data-*   TensorFlow's checkpoint (tf.train.Checkpoint.write)
    ckpt-<step>.history.json                the loss and PCKh curve up to that step, so a resumed run
                                            keeps the whole curve
    ckpt-<step>.progress.json               train_seconds, final_loss, images_per_second: a resumed
                                            run keeps its time budget and the last measurements
    ckpt-<step>.manifest.json               (MANIFEST) the size and sha256 of each file above: written
                                            last, it commits the checkpoint
and, for the folder:
    checkpoint                              TensorFlow's state file, naming the committed ones (for
                                            TensorFlow's tools; resuming does not trust it)
    fingerprint.json                        what the variables depend on (FINGERPRINT_FILE): a resume
                                            with a config of another structure is refused up front
A checkpoint is complete or ignored. A kill during a write leaves a checkpoint without its manifest,
which no start takes for complete; the previous one stays intact and newest. A start takes the newest
checkpoint whose files match its manifest (one from before manifests, still named by the state file:
whose tensors all read back under TensorFlow's own checksums), logs each newer one it skips and why,
and stops with one line naming them only when checkpoints were committed but none is intact. The
first save after a fallback removes the skipped ones.

A restart on the same output folder resumes from the newest intact checkpoint, optimizer state and step
included. With a checkpoint URI (gs://, s3:// or minio://bucket/prefix) each checkpoint is also uploaded
as it is written (pose/files/remote_checkpoints.py: its files, the manifest, then the bucket's marker),
and a start whose folder holds nothing newer (a new pod after preemption) resumes from the bucket's
newest checkpoint that downloads intact. In a multi-worker run every worker restores exactly that one
(only the chief uploads; the others write theirs to scratch), and all check they resumed the same step
before training; without a bucket a multi-worker run cannot resume and says so.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from pose.files import checkpoint_manifest, storage
from pose.files.atomic import write_text
from pose.files.remote_checkpoints import (
    FINGERPRINT_FILE,
    CheckpointMismatch,
    RemoteCheckpoints,
    mismatch,
)
from pose.training.config import TrainConfig
from pose.training.errors import TrainError

log = logging.getLogger("train")

FOLDER = "checkpoints"  # in the model folder
HISTORY = (
    "history.json"  # ckpt-<step>.history.json; the folder-wide name of folders before manifests
)
PROGRESS = "progress.json"  # likewise
STATE = "checkpoint"  # TensorFlow's state file
# A checkpoint's files, TensorFlow's ckpt-<step>_temp/ and write_text's .ckpt-<step>.*.tmp.json
_STEP = re.compile(r"^\.?ckpt-(\d+)[._]")


def fingerprint(cfg: TrainConfig, mixed_precision: bool) -> dict:
    """What the checkpoints' variables depend on."""
    return {
        "model": cfg.model,
        "input_size": cfg.input_size,
        "width": cfg.width,
        "num_stages": cfg.num_stages,
        "num_keypoints": cfg.num_keypoints,
        **{k: v for k, v in cfg.architecture_options().items() if v is not None},
        "mixed_precision": mixed_precision,
    }


@dataclass
class Resumed:
    """Where the run stands after restoring: step 0 and nothing carried for a fresh start."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    progress: dict = field(default_factory=dict)  # PROGRESS at that step


class Checkpoints:
    """The run's checkpoints: `restore()` once before training, `save()` as it goes."""

    def __init__(
        self,
        cfg: TrainConfig,
        model,
        optimizer,
        strategy,
        model_folder: Path,
        chief: bool,
        multi_worker: bool,
        mixed_precision: bool,
        checkpoint_uri: str = "",
        config_label: str = "",
        bucket_lock=None,
    ):
        self.cfg, self.optimizer, self.strategy = cfg, optimizer, strategy
        # The chief's hold on the bucket prefix (remote_checkpoints.single_writer), confirmed before
        # each upload; None on the other workers, which only read the bucket.
        self.bucket_lock = bucket_lock
        self.model_folder, self.chief, self.multi_worker = model_folder, chief, multi_worker
        self.checkpoint_uri, self.config_label = checkpoint_uri, config_label
        # Non-chief workers of a multi-worker run write their (identical) checkpoints to scratch; they
        # resume only from the bucket (--checkpoint-uri), the one place every worker can read.
        self.folder = (
            model_folder / FOLDER if chief else Path(tempfile.mkdtemp(prefix="train-worker-"))
        )
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        # Created now (a restore creates it anyway), so that every write holds it and a restore of
        # ours matches every object.
        self.checkpoint.save_counter.assign(0)
        self.fingerprint = fingerprint(cfg, mixed_precision)
        self.remote: RemoteCheckpoints | None = None
        self.skipped: list[str] = []  # "<where> ckpt-<step>: <why>", for the log and a final error

    def _step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # -- resuming --

    def restore(self) -> Resumed:
        """Restores the newest intact checkpoint into the model and optimizer: the local folder's,
        or the bucket's when newer. In a multi-worker run with a bucket, exactly the bucket's newest
        intact one on every worker (a fresh start when it has none), and every worker checks they
        all agree."""
        if not self.multi_worker:
            return self._restore()
        # Workers on different steps or weights would hang in, or diverge through, the collectives. A
        # worker whose restore failed still takes part in the agreement, so the others fail with it
        # instead of waiting for it.
        try:
            resumed, failure = self._restore(), None
        except Exception as error:  # re-raised right after the agreement
            resumed, failure = Resumed(), error
        self._agree_on_resumed_step(failure)
        return resumed

    def _restore(self) -> Resumed:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_local_fingerprint()
        step = self._newest_intact_local()
        if self.checkpoint_uri:
            step = self._newest_from_bucket(step)
        if step is None:
            if self.skipped:
                raise TrainError(
                    f"{self.folder}: no intact checkpoint to resume from: "
                    f"{'; '.join(self.skipped)}. Move them away to train from scratch"
                )
            return Resumed()
        prefix = str(self.folder / f"ckpt-{step}")
        cfg = self.cfg
        try:
            self.checkpoint.restore(prefix).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            raise TrainError(
                f"{prefix}: the checkpoints in {self.folder} do not fit this model "
                f"({cfg.model}, width {cfg.width}, {cfg.num_stages} stages, input {cfg.input_size}): "
                f"they were written by another config; use another --output, or the config they were "
                f"written with ({self.model_folder / 'config.yaml'}). "
                f"{' '.join(str(error).split())[:300]}"
            ) from None
        log.info("resumed from %s at step %d", prefix, self._step())
        return Resumed(step, self._carried(step, HISTORY, []), self._carried(step, PROGRESS, {}))

    def _check_local_fingerprint(self) -> None:
        """Checkpoints in the folder from a config of another structure: a clear error instead of
        the restore's mismatch of variables. Folders from before fingerprints are not checked, nor
        is a damaged fingerprint (the restore still checks the shapes)."""
        path = self.folder / FINGERPRINT_FILE
        if not path.is_file():
            return
        try:
            theirs = json.loads(path.read_bytes())
            if not isinstance(theirs, dict):
                raise ValueError(f"a JSON {type(theirs).__name__}, not an object")
        except ValueError as error:
            log.warning("%s is unreadable (%s): not checked; it is written again", path, error)
            return
        steps = self._steps_present()
        if steps:
            message = mismatch(
                str(self.folder), max(steps), theirs, self.fingerprint, self.config_label
            )
            if message:
                raise TrainError(message)

    def _steps_present(self) -> set[int]:
        """The steps of which the folder holds any file (a temporary one too)."""
        return {int(m.group(1)) for n in os.listdir(self.folder) if (m := _STEP.match(n))}

    def _committed_by_state(self) -> list[int]:
        """The steps TensorFlow's state file names ([] without one, or when it is unreadable)."""
        path = self.folder / STATE
        if not path.is_file():
            return []
        try:
            state = tf.train.get_checkpoint_state(str(self.folder))
            if state is None:  # TensorFlow could not parse it (and logged why)
                raise ValueError("not a checkpoint state")
            return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]
        except Exception as error:  # any damage (binary garbage, a cut proto): not evidence
            log.warning(
                "%s is unreadable (%s: %s): ignored, the checkpoints' manifests say which are "
                "complete",
                path,
                type(error).__name__,
                " ".join(str(error).split())[:200],
            )
            return []

    def _newest_intact_local(self) -> int | None:
        """The step of the folder's newest intact checkpoint; None when there is none. Each newer one
        is logged with why it was skipped; the damaged ones (committed, then changed) are kept in
        self.skipped."""
        committed = set(self._committed_by_state())
        for step in sorted(self._steps_present() | committed, reverse=True):
            manifested = (self.folder / checkpoint_manifest.name(step)).exists()
            if not manifested and step not in committed:
                log.warning(
                    "%s/ckpt-%d: its write was cut short (no %s): ignored",
                    self.folder,
                    step,
                    checkpoint_manifest.name(step),
                )
                continue
            why = self._problem(step)
            if why is None:
                return step
            self._skip(f"{self.folder}/ckpt-{step}", why)
        return None

    def _problem(self, step: int) -> str | None:
        """Why checkpoint `step` in the folder is not intact, or None: checked against its manifest,
        or, for one from before manifests, by reading every tensor (TensorFlow checks each one's
        crc32c)."""
        if (self.folder / checkpoint_manifest.name(step)).exists():
            return checkpoint_manifest.problem(self.folder, step)
        log.info(
            "%s/ckpt-%d has no %s (written before manifests, or it was lost): checking it by "
            "reading every tensor back",
            self.folder,
            step,
            checkpoint_manifest.name(step),
        )
        try:
            reader = tf.train.load_checkpoint(str(self.folder / f"ckpt-{step}"))
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except Exception as error:  # any failure to read it back is damage
            return f"unreadable ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
        return None

    def _skip(self, where: str, why: str) -> None:
        log.warning("%s is not intact: %s; falling back to the previous checkpoint", where, why)
        self.skipped.append(f"{where}: {why}")

    def _carried(self, step: int, name: str, empty):
        """What rode along with checkpoint `step` (HISTORY or PROGRESS); a checkpoint from before
        manifests has only the folder-wide file, kept when it is of that step."""
        own = self.folder / f"ckpt-{step}.{name}"
        try:
            if own.is_file():
                return json.loads(own.read_bytes())  # checked against the manifest
            carried = json.loads((self.folder / name).read_bytes())
        except (OSError, ValueError):
            return empty
        if name == HISTORY and isinstance(carried, list):
            return [e for e in carried if isinstance(e, dict) and e.get("step", 0) <= step]
        if name == PROGRESS and isinstance(carried, dict) and carried.get("step") == step:
            return carried
        return empty

    def _newest_from_bucket(self, local: int | None) -> int | None:
        """The step to resume from once the bucket is asked: when it holds a newer intact checkpoint
        than `local` (the folder's newest intact), that one is fetched into the folder. In a
        multi-worker run, the bucket's newest intact one whatever the folder holds (a checkpoint
        written but not uploaded before a kill), since every worker must restore the same."""
        self.remote = RemoteCheckpoints(
            self.checkpoint_uri, self.fingerprint, self.cfg.keep_checkpoints, self.bucket_lock
        )
        candidates = self.remote.checkpoints()
        if not candidates:
            log.info("no checkpoint in %s yet: starting from scratch", self.checkpoint_uri)
            if self.multi_worker and local is not None:
                # Killed before its first upload: the other workers cannot read this folder.
                log.warning(
                    "%s/ckpt-%d is not in %s, which every worker reads: all workers start from "
                    "scratch",
                    self.folder,
                    local,
                    self.checkpoint_uri,
                )
                return None
            return local
        for marker in candidates:
            try:
                self.remote.check(marker, self.config_label)
            except CheckpointMismatch as error:
                raise TrainError(str(error)) from None
            step = int(marker["step"])
            if local is not None and (step == local or (step < local and not self.multi_worker)):
                return local
            try:
                self.remote.download(marker, self.folder)
            except storage.StorageError as error:
                why = str(error)
            else:
                why = self._problem(step)
            if why is None:
                self._record_state(step)
                write_text(self.folder / FINGERPRINT_FILE, json.dumps(self.fingerprint))
                log.info("resuming from the checkpoint of step %d in %s", step, self.checkpoint_uri)
                return step
            self._skip(f"{self.checkpoint_uri}/ckpt-{step}", why)
            self._remove(step)
        return None if self.multi_worker else local

    def _agree_on_resumed_step(self, failure: Exception | None) -> None:
        """Gathers every replica's restored step (-1: its worker failed to restore) and stops every
        worker with a clear error unless they all agree; then re-raises this worker's own failure."""
        mine = -1 if failure else self._step()

        @tf.function
        def gather():
            def replica_step():
                return tf.distribute.get_replica_context().all_gather(
                    tf.constant([mine], tf.int64), axis=0
                )

            return self.strategy.run(replica_step)

        steps = [int(s) for s in self.strategy.experimental_local_results(gather())[0].numpy()]
        if failure:
            raise failure
        if -1 in steps:
            raise TrainError(
                f"another worker failed to restore its checkpoint (see its log; steps per "
                f"replica, in worker order, -1 failed: {steps}): stopping too rather than "
                f"waiting for it"
            )
        if len(set(steps)) > 1:
            why = (
                f"the bucket {self.checkpoint_uri} changed while they read it: is another run "
                f"writing there?"
                if self.checkpoint_uri
                else "without --checkpoint-uri a multi-worker run cannot resume: the chief's checkpoints "
                "are in its --output, which the other workers do not read. Start again with a new "
                "--output, or train with --checkpoint-uri gs://… (every worker then restores the "
                "bucket's newest)"
            )
            raise TrainError(
                f"the workers would resume from different steps (per replica, in worker "
                f"order: {steps}); {why}"
            )
        log.info("all %d replicas resume from step %d", len(steps), mine)

    # -- saving --

    def save(self, step: int, history: list[dict], progress: dict) -> None:
        """Writes checkpoint `step` complete-or-ignored: TensorFlow's files, what rides along, then
        the manifest that commits it; only then the state file names it and older ones are pruned.
        Every worker saves (the collectives need them all); the chief also uploads to the bucket."""
        self._remove(step)  # a cut-short or damaged one of this step, from before a fallback
        prefix = self.checkpoint.write(str(self.folder / f"ckpt-{step}"))
        write_text(self.folder / f"ckpt-{step}.{HISTORY}", json.dumps(history))
        write_text(self.folder / f"ckpt-{step}.{PROGRESS}", json.dumps({"step": step, **progress}))
        checkpoint_manifest.write(self.folder, step, self.fingerprint)
        kept = self._prune(step)
        self._record_state(step, kept)
        if self.chief:
            write_text(self.folder / FINGERPRINT_FILE, json.dumps(self.fingerprint))
            if self.remote:
                self.remote.upload(step, prefix)
        log.info("checkpoint %s", prefix)

    def _prune(self, newest: int) -> list[int]:
        """Keeps the newest `keep_checkpoints` committed checkpoints up to `newest`; removes the rest:
        older ones, cut-short writes, and any newer than `newest` (left behind by a fallback).
        Returns the kept steps, oldest first."""
        committed = sorted(
            s
            for n in os.listdir(self.folder)
            if (s := checkpoint_manifest.step_of(n)) is not None and s <= newest
        )
        kept = committed[-self.cfg.keep_checkpoints :]
        for step in self._steps_present() - set(kept):
            self._remove(step)
        for name in os.listdir(self.folder):  # the folder files' temporaries a kill left
            if name.startswith(f"{STATE}.tmp") or (name.startswith(".") and ".tmp" in name):
                (self.folder / name).unlink(missing_ok=True)
        return kept

    def _remove(self, step: int) -> None:
        """Removes checkpoint `step`'s files, its manifest first (a kill part way leaves no
        checkpoint that claims to be complete)."""
        (self.folder / checkpoint_manifest.name(step)).unlink(missing_ok=True)
        for name in os.listdir(self.folder):
            match = _STEP.match(name)
            if match and int(match.group(1)) == step:
                path = self.folder / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                    missing_ok=True
                )

    def _record_state(self, newest: int, kept: list[int] | None = None) -> None:
        """TensorFlow's state file, naming committed checkpoints only (relative names: the folder
        may move)."""
        names = [f"ckpt-{s}" for s in (kept or [newest])]
        tf.compat.v1.train.update_checkpoint_state(
            str(self.folder), f"ckpt-{newest}", all_model_checkpoint_paths=names
        )
