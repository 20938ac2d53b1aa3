"""train's checkpoints: where they are, what rides along with them, and resuming from them.

checkpoints/ in the model folder holds TensorFlow's checkpoints (every `checkpoint_every` steps, the
newest `keep_checkpoints`) and, beside them, as they were at the newest one:
    history.json       the loss and PCKh curve so far, so a resumed run keeps the whole curve
    progress.json      (PROGRESS) train_seconds, final_loss, images_per_second: a resumed run keeps
                       its time budget and the last measurements
    fingerprint.json   what the variables depend on (FINGERPRINT_FILE): a resume with a config of
                       another structure is refused up front, with both named
A restart on the same output folder resumes from the newest, optimizer state and step included.
With a checkpoint URI (gs://, s3:// or minio://bucket/prefix) each checkpoint is also uploaded as it
is written (pose/files/remote_checkpoints.py), and a start in an empty folder (a new pod after
preemption) resumes from the bucket's newest. In a multi-worker run every worker restores the
bucket's newest (only the chief uploads; the others write theirs to scratch), and all check they
resumed the same step before training; without a bucket a multi-worker run cannot resume and says
so.
"""

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

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
HISTORY = "history.json"
PROGRESS = "progress.json"


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
    ):
        self.cfg, self.optimizer, self.strategy = cfg, optimizer, strategy
        self.model_folder, self.chief, self.multi_worker = model_folder, chief, multi_worker
        self.checkpoint_uri, self.config_label = checkpoint_uri, config_label
        # Non-chief workers of a multi-worker run write their (identical) checkpoints to scratch; they
        # resume only from the bucket (--checkpoint-uri), the one place every worker can read.
        self.folder = (
            model_folder / FOLDER if chief else Path(tempfile.mkdtemp(prefix="train-worker-"))
        )
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.fingerprint = fingerprint(cfg, mixed_precision)
        self.remote: RemoteCheckpoints | None = None
        self.manager = None

    def _step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # -- resuming --

    def restore(self) -> Resumed:
        """Restores the newest checkpoint into the model and optimizer: the local folder's, or the
        bucket's when newer. In a multi-worker run with a bucket, exactly the bucket's newest on
        every worker (a fresh start when it has none), and every worker checks they all agree."""
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
        marker = self._fetch_remote()
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.folder), self.cfg.keep_checkpoints
        )
        latest = self.manager.latest_checkpoint
        if latest and self.multi_worker and self.remote and marker is None:
            # Killed before its first upload: the other workers cannot read this folder.
            log.warning(
                "%s is not in %s, which every worker reads: all workers start from scratch",
                latest,
                self.checkpoint_uri,
            )
            latest = None
        if not latest:
            return Resumed()
        self._check_local_fingerprint()
        cfg = self.cfg
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            raise TrainError(
                f"{latest}: the checkpoints in {self.folder} do not fit this model "
                f"({cfg.model}, width {cfg.width}, {cfg.num_stages} stages, input {cfg.input_size}): "
                f"they were written by another config; use another --output, or the config they were "
                f"written with ({self.model_folder / 'config.yaml'}). "
                f"{' '.join(str(error).split())[:300]}"
            ) from None
        step = self._step()
        log.info("resumed from %s at step %d", latest, step)
        return Resumed(step, self._previous_history(step), self._previous_progress(step))

    def _check_local_fingerprint(self) -> None:
        """Checkpoints in the folder from a config of another structure: a clear error instead of
        the restore's mismatch of variables. Folders from before fingerprints are not checked."""
        path = self.folder / FINGERPRINT_FILE
        if path.is_file():
            message = mismatch(
                str(self.folder),
                self.manager.latest_checkpoint.rsplit("-", 1)[-1],
                json.loads(path.read_text()),
                self.fingerprint,
                self.config_label,
            )
            if message:
                raise TrainError(message)

    def _fetch_remote(self) -> dict | None:
        """The marker of the bucket's newest checkpoint; None without a URI or a checkpoint. When the
        bucket holds a newer checkpoint than the local folder (a fresh pod's is empty), it is fetched
        into the folder for the manager to resume from; in a multi-worker run, whenever the folder's
        newest is another step (one written but not uploaded before a kill), since every worker must
        restore the same."""
        if not self.checkpoint_uri:
            return None
        self.remote = RemoteCheckpoints(
            self.checkpoint_uri, self.fingerprint, self.cfg.keep_checkpoints
        )
        marker = self.remote.latest()
        if marker is None:
            log.info("no checkpoint in %s yet: starting from scratch", self.checkpoint_uri)
            return None
        try:
            self.remote.check(marker, self.config_label)
        except CheckpointMismatch as error:
            raise TrainError(str(error)) from None
        local = tf.train.latest_checkpoint(str(self.folder))
        local_step = int(local.rsplit("-", 1)[-1]) if local else -1
        step = int(marker["step"])
        if step > local_step or (self.multi_worker and step != local_step):
            self.remote.download(marker, self.folder)
            write_text(self.folder / FINGERPRINT_FILE, json.dumps(self.fingerprint))
            log.info("resuming from the checkpoint of step %d in %s", step, self.checkpoint_uri)
        return marker

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

    def _previous_history(self, step: int) -> list[dict]:
        path = self.folder / HISTORY
        if not path.is_file():
            return []
        return [entry for entry in json.loads(path.read_text()) if entry["step"] <= step]

    def _previous_progress(self, step: int) -> dict:
        try:
            progress = json.loads((self.folder / PROGRESS).read_text())
        except (OSError, ValueError):
            return {}
        return progress if progress.get("step") == step else {}

    # -- saving --

    def save(self, step: int, history: list[dict], progress: dict) -> None:
        """Every worker saves (the collectives need them all); the chief also writes what rides
        along and uploads to the bucket."""
        path = self.manager.save(checkpoint_number=step)
        if self.chief:
            write_text(self.folder / HISTORY, json.dumps(history))
            write_text(self.folder / PROGRESS, json.dumps({"step": step, **progress}))
            write_text(self.folder / FINGERPRINT_FILE, json.dumps(self.fingerprint))
            if self.remote:
                self.remote.upload(step, path, [self.folder / HISTORY, self.folder / PROGRESS])
        log.info("checkpoint %s", path)
