"""train: a MobileNetV2 CPM or hourglass on the shards, on every device the machine has.

Takes    train shard folders (and optionally valid shard folders) from the shard step, and a YAML
         config (pose/training/config.py; experiments/*.yaml) with `key=value` overrides.
Does     a custom training loop under a tf.distribute strategy: MirroredStrategy over all visible
         GPUs (global batch = batch_size x replicas), MultiWorkerMirroredStrategy when TF_CONFIG names
         several workers, the default strategy on a plain CPU; mixed_float16 and optional XLA on GPU.
         Loss: the seed's L2 of every stage's heatmaps against the target (intermediate supervision),
         masked by the per-joint weights, summed over stages and divided by the batch. Adam with the
         seed's exponential decay (or cosine). Checkpoints every `checkpoint_every` steps; a restart on
         the same output folder resumes from the newest one, optimizer state and step count included.
         With --checkpoint-uri gs://bucket/prefix each checkpoint is also uploaded as it is written
         (pose/files/remote_checkpoints.py), and a start in an empty folder (a new pod after preemption)
         resumes from the bucket's newest one. In a multi-worker run every worker restores the bucket's
         newest (only the chief uploads), and all check they resumed the same step before training;
         without a bucket a multi-worker run cannot resume and says so.
         PCKh@0.5 on the valid shards every `eval_every` steps and at the end, decoded by the same codec
         as evaluate's (pose.codec) but without its flip test (`pckh_flip_test`: false in the metadata).
Writes   (docs/ARTIFACTS.md) model.keras, config.yaml, checkpoints/, logs/ (TensorBoard: loss per
         stage, learning rate, images/s, predictions), train_metadata.json.

`python -m components.train --config experiments/local.yaml --data SHARDS --valid-data SHARDS --output DIR
 [--checkpoint-uri gs://bucket/prefix]`
"""
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from components import cli
from pose.files import integrity, outputs, steplog, writer_lock
from pose.data import inputs, records
from pose.models import networks
from pose.evaluation import visualize
from pose.files.atomic import atomic_file
from pose.training.config import TrainConfig, load_config, parse_overrides
from pose.codec import HeatmapCodec
from pose.evaluation.metrics import pckh
from pose.files.remote_checkpoints import FINGERPRINT_FILE, CheckpointMismatch, RemoteCheckpoints, mismatch
from pose.files.storage import split_gs_uri

log = logging.getLogger("train")


PROGRESS = "progress.json"  # in checkpoints/: train_seconds, final_loss, images_per_second at the newest one


class TrainError(ValueError):
    """Unusable training input: names the folder or file and what is wrong."""


def train(config: str, data_dirs: list[str], output_dir: str, valid_dirs: list[str] | None = None,
          overrides: dict | None = None, expect_gpus: int = 0, allow_cpu: bool = False,
          checkpoint_uri: str = "") -> dict:
    """Trains per `config` (a YAML path or YAML text) on `data_dirs`; writes the model folder
    `output_dir` and returns its train_metadata (also written as train_metadata.json).

    `expect_gpus`: GPUs the caller asked for (the pod's accelerator limit); when TensorFlow sees none,
    training fails rather than quietly running on the CPU, unless `allow_cpu`.
    `checkpoint_uri` (gs://…): checkpoints are mirrored there and a start resumes from the newest."""
    cfg = load_config(config, overrides).resolved()
    if cfg.num_keypoints != records.K:  # shards hold K joints per person: say so before building a graph
        raise TrainError(f"config num_keypoints {cfg.num_keypoints}, but the shards hold {records.K} keypoints "
                         f"per person (the AI Challenger joints; {', '.join(data_dirs)})")
    if checkpoint_uri:
        split_gs_uri(checkpoint_uri)  # fail before building anything
    outputs.check_output("train", output_dir, [*data_dirs, *(valid_dirs or [])], allow_legacy=_is_train_output)
    with writer_lock.exclusive_writer(output_dir, "train"), \
            steplog.step("train", config=config, data=data_dirs, valid=valid_dirs, output=output_dir,
                         overrides=overrides or {}, checkpoint_uri=checkpoint_uri) as wrote:
        # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op runs.
        strategy, devices = _strategy(cfg)
        check_gpus(expect_gpus, allow_cpu)
        run = _Run(cfg, strategy, devices, data_dirs, Path(output_dir), valid_dirs or [], checkpoint_uri,
                   config_label=config if "\n" not in config else "(YAML text)")
        metadata = run.fit()
        wrote.update(steps=metadata["steps"], final_loss=round(metadata["final_loss"], 4),
                     images_per_second=round(metadata["images_per_second"], 1), pckh=metadata.get("pckh"),
                     model=str(Path(output_dir) / "model.keras"))
    return metadata


def _is_train_output(folder: Path) -> bool:
    """A train output from before the output marker: resumable, so not someone else's folder."""
    return (folder / "checkpoints").is_dir() or (folder / "train_metadata.json").is_file()


# ---- devices ------------------------------------------------------------------------------------

def _strategy(cfg: TrainConfig):
    """(strategy, device description). GPUs -> MirroredStrategy over all of them; several workers in
    TF_CONFIG -> MultiWorkerMirroredStrategy; several logical CPUs (tests) -> MirroredStrategy over
    them; else the default strategy."""
    if cfg.visible_devices:
        wanted = [int(i) for i in cfg.visible_devices.split(",") if i.strip()]
        gpus = tf.config.list_physical_devices("GPU")
        missing = [i for i in wanted if i >= len(gpus)]
        if missing:
            raise TrainError(f"visible_devices {cfg.visible_devices!r}: GPUs {missing} do not exist "
                             f"({len(gpus)} visible)")
        tf.config.set_visible_devices([gpus[i] for i in wanted], "GPU")
    cluster = _tf_config().get("cluster", {})
    if sum(len(cluster.get(role, [])) for role in ("chief", "worker")) > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return strategy, f"{strategy.num_replicas_in_sync} replicas over {len(cluster.get('worker', []))} workers"
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus]), f"{len(gpus)} GPU(s)"
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus]), f"{len(cpus)} logical CPUs"
    return tf.distribute.get_strategy(), "CPU"


def _tf_config() -> dict:
    """The TF_CONFIG environment variable a multi-worker launcher sets ({} when unset)."""
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def check_gpus(expected: int, allow_cpu: bool) -> None:
    """Fails when GPUs were asked for but TensorFlow sees none (a CPU-only TensorFlow, no driver or CUDA
    libraries, or a pod without the GPU limit), unless CPU training is allowed on purpose."""
    if expected <= 0:
        return
    visible = len(tf.config.list_logical_devices("GPU"))
    if visible == 0 and not allow_cpu:
        raise TrainError(f"{expected} GPU(s) were requested, but TensorFlow sees none (built with CUDA: "
                         f"{tf.test.is_built_with_cuda()}); check the pod's nvidia.com/gpu limit and the image, or "
                         f"allow CPU training on purpose (pipeline parameter allow_cpu=true, train --allow-cpu)")
    if visible == 0:
        log.warning("%d GPU(s) were requested, but TensorFlow sees none: training on the CPU (allow_cpu)", expected)
    elif visible < expected:
        log.warning("%d GPU(s) were requested, but TensorFlow sees %d: training on those", expected, visible)


def _is_chief() -> bool:
    tf_config = _tf_config()
    task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
    if not task:
        return True
    return task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                           and "chief" not in cluster)


# ---- the loss -----------------------------------------------------------------------------------

def stage_losses(stage_heatmaps: list, heatmaps, weights, global_batch_size: int):
    """The seed's loss per stage: tf.nn.l2_loss(prediction - target) / batch, with joints of weight 0
    (unlabelled or outside the input) left out. Dividing by the GLOBAL batch makes the replicas' sum the
    mean over the global batch."""
    mask = tf.cast(weights, tf.float32)[:, None, None, :]
    return tf.stack([tf.nn.l2_loss((tf.cast(h, tf.float32) - heatmaps) * mask) / global_batch_size
                     for h in stage_heatmaps])


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """The learning rate for `step`. exponential: the seed's lr x decay_rate^(step / decay_steps)
    (staircase by default). cosine: from lr down to lr / 100 as `progress` goes from 0 to 1, where
    progress is the larger of step / total steps and elapsed / max_minutes, so a run cut by its time
    budget still ends annealed, on a fast machine or a slow one. Both after a linear warm-up."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "exponential":
        exponent = step // cfg.decay_steps if cfg.staircase else step / cfg.decay_steps
        return cfg.lr * cfg.decay_rate ** exponent
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    return cfg.lr


# ---- the run ------------------------------------------------------------------------------------

class _Run:
    """One training run: data, model, optimizer, checkpoints, summaries and the loop."""

    def __init__(self, cfg: TrainConfig, strategy, devices: str, data_dirs, output_dir: Path, valid_dirs,
                 checkpoint_uri: str = "", config_label: str = ""):
        self.cfg, self.strategy, self.output_dir, self.valid_dirs = cfg, strategy, output_dir, list(valid_dirs)
        self.chief = _is_chief()
        self.on_gpu = bool(tf.config.list_logical_devices("GPU"))
        self.mixed = self.on_gpu if cfg.mixed_precision is None else cfg.mixed_precision
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = cfg.batch_size * self.replicas
        if not data_dirs:
            raise TrainError("no training shard folders given (--data)")
        index = inputs.read_index(data_dirs)
        if index["split"] != "train":
            log.warning("training on shards of split %r (%s)", index["split"], data_dirs)
        integrity.verify_shards(data_dirs)
        self.files = list(index["files"])
        if self.valid_dirs:
            self.files += inputs.read_index(self.valid_dirs)["files"]  # fail now, not after an hour of training
            integrity.verify_shards(self.valid_dirs)
        examples = cfg.num_train_samples or index["num_examples"]
        if examples < 1:
            raise TrainError(f"{data_dirs}: the shard index counts no examples")
        self.steps_per_epoch = max(1, examples // self.global_batch)
        self.total_steps = cfg.max_epoch * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.examples = examples
        log.info("devices: %s, strategy %s, %d replica(s), global batch %d, mixed precision %s, XLA %s",
                 devices, type(strategy).__name__, self.replicas, self.global_batch, self.mixed, cfg.jit_compile)
        log.info("data: %d examples in %d shard file(s), %d steps per epoch, %d steps planned",
                 index["num_examples"], len(index["files"]), self.steps_per_epoch, self.total_steps)

        keras.mixed_precision.set_global_policy("mixed_float16" if self.mixed else "float32")
        keras.utils.set_random_seed(cfg.seed)  # the initial weights, like the data stream, follow the seed
        with strategy.scope():
            self.model = networks.build_from_config(cfg)
            self.warm_start = self._warm_start()
            # A plain variable the loop sets every step (see learning_rate): schedules may depend on time.
            optimizer = keras.optimizers.Adam(learning_rate(cfg, 0, 0.0), epsilon=1e-8)
            self.optimizer = keras.optimizers.LossScaleOptimizer(optimizer) if self.mixed else optimizer
            self.optimizer.build(self.model.trainable_variables)
        keras.mixed_precision.set_global_policy("float32")
        self.info = networks.summary(self.model, print_fn=log.info)

        # Non-chief workers of a multi-worker run write their (identical) checkpoints to scratch; they resume
        # only from the bucket (--checkpoint-uri), the one place every worker can read.
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        checkpoint_dir = output_dir / "checkpoints" if self.chief else Path(tempfile.mkdtemp(prefix="train-worker-"))
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        # What the checkpoints' variables depend on: a resume with another structure is refused up front.
        self.fingerprint = {"model": cfg.model, "input_size": cfg.input_size, "width": cfg.width,
                            "num_stages": cfg.num_stages, "num_keypoints": cfg.num_keypoints,
                            **{k: v for k, v in cfg.architecture_options().items() if v is not None},
                            "mixed_precision": self.mixed}
        self.resumed_from = 0
        self.history: list[dict] = []
        self.progress = {}  # what the run so far measured (PROGRESS), carried across restarts
        if not self.multi_worker:
            self._restore(checkpoint_uri, checkpoint_dir, config_label)
        else:
            # Workers on different steps or weights would hang in, or diverge through, the collectives. A
            # worker whose restore failed still takes part in the agreement, so the others fail with it
            # instead of waiting for it.
            try:
                self._restore(checkpoint_uri, checkpoint_dir, config_label)
                failure = None
            except Exception as error:  # re-raised right after the agreement
                failure = error
            self._agree_on_resumed_step(failure, checkpoint_uri)

        # A restart continues with a fresh, still reproducible, stream rather than replaying the first one.
        dataset = inputs.training_dataset(
            data_dirs, cfg.input_size, networks.output_stride(cfg.model), self.global_batch, cfg.sigma,
            augment=cfg.augment, seed=cfg.seed + self.resumed_from, repeat=True, shuffle_buffer=cfg.shuffle_buffer,
            augmentation=cfg.augmentation)
        self.iterator = iter(strategy.experimental_distribute_dataset(dataset))
        self.train_step = self._make_train_step()
        self.predict = final_heatmaps_function(self.model)
        self.codec = HeatmapCodec(cfg.input_size, cfg.output_stride, cfg.sigma)
        self.writer = tf.summary.create_file_writer(str(output_dir / "logs")) if self.chief else None

    def _warm_start(self) -> dict | None:
        """Loads cfg.init_from into the fresh model (a resumed run's checkpoint then overrides it)."""
        from pose.models import warm_start

        if not self.cfg.init_from:
            return None
        try:
            summary = warm_start.load_into(self.model, self.cfg.init_from, self.cfg.model, self.cfg.seed_layers)
        except warm_start.WarmStartError as error:
            raise TrainError(str(error)) from error
        log.info("warm start: %d layers from %s%s", summary["layers"], self.cfg.init_from,
                 f" (reproduces it to {summary['reproduction_max_abs_diff']:.1e})"
                 if "reproduction_max_abs_diff" in summary else "")
        return summary

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # -- the step --

    def _make_train_step(self):
        model, optimizer, strategy, global_batch = self.model, self.optimizer, self.strategy, self.global_batch

        # XLA compiles the forward and backward pass; the optimizer update stays outside it because
        # its cross-replica all-reduce cannot run inside a compiled cluster.
        @tf.function(jit_compile=self.cfg.jit_compile)
        def gradients(images, heatmaps, weights):
            with tf.GradientTape() as tape:
                stages = networks.stage_heatmaps(model, images, training=True)
                losses = stage_losses(stages, heatmaps, weights, global_batch)
                loss = tf.reduce_sum(losses)
                scaled = optimizer.scale_loss(loss)  # identity unless a LossScaleOptimizer (mixed precision)
            return tape.gradient(scaled, model.trainable_variables), losses

        def replica_step(images, targets):
            grads, losses = gradients(images, targets["heatmaps"], targets["weights"])
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return losses

        @tf.function
        def train_step(iterator):
            images, targets = next(iterator)
            losses = strategy.run(replica_step, args=(images, targets))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return train_step

    # -- the loop --

    def fit(self) -> dict:
        with records.named_shard_errors(self.files):
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        if self.chief:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            outputs.mark(self.output_dir, "train")
            _write_atomically(self.output_dir / "config.yaml", cfg.to_yaml())
        # The time budget counts the seconds of earlier runs of this output too (restarts, preemptions).
        started = time.perf_counter() - self.progress.get("train_seconds", 0.0)
        window_start, window_step = started, self.step
        timed_images, timed_seconds = 0, 0.0
        window_losses, last_losses, skipped_updates = [], None, 0
        if self.step >= self.total_steps:
            log.info("already at step %d of %d: nothing to train", self.step, self.total_steps)
        elif cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes:
            log.info("max_minutes %.1f already spent by the earlier runs (step %d): nothing to train",
                     cfg.max_minutes, self.step)
        elif self.valid_dirs and self.step == 0:
            self._evaluate_into_history(0)  # the untrained baseline the curve starts from
        while self.step < self.total_steps and not (
                cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes):
            step_started = time.perf_counter()
            progress = self.step / self.total_steps
            if cfg.max_minutes:
                progress = max(progress, (step_started - started) / (60 * cfg.max_minutes))
            self.optimizer.learning_rate.assign(learning_rate(cfg, self.step, progress))
            previous_step = self.step
            losses = self.train_step(self.iterator).numpy()
            step = self.step
            if step == previous_step:  # mixed precision: the loss scale overflowed, the update was skipped
                skipped_updates += 1
                continue
            if step > self.resumed_from + 1:  # the first step traces and compiles: not a speed sample
                timed_images += self.global_batch
                timed_seconds += time.perf_counter() - step_started
            if not math.isfinite(float(losses.sum())):
                raise FloatingPointError(f"loss is {losses.sum()} at step {step}; stage losses {losses.tolist()}")
            window_losses.append(losses)
            last_losses = losses
            out_of_time = cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes
            last = step >= self.total_steps or out_of_time
            if step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                rate = (step - window_step) / max(now - window_start, 1e-9)
                mean = sum(window_losses) / len(window_losses)
                eta = (self.total_steps - step) / max(rate, 1e-9)
                log.info("step %d/%d (epoch %.1f): loss %.2f, stages [%s], lr %.2e, %.2f steps/s, %.1f images/s, "
                         "ETA %s", step, self.total_steps, step / self.steps_per_epoch, mean.sum(),
                         " ".join(f"{v:.1f}" for v in mean), self._lr(), rate, rate * self.global_batch,
                         _duration(eta))
                self.history.append({"step": step, "loss": float(mean.sum()), "seconds": round(now - started, 1)})
                window_start, window_step, window_losses = now, step, []
            if self.writer and (step % cfg.summary_every == 0 or last):
                self._summaries(step, last_losses, timed_images / timed_seconds if timed_seconds else 0.0)
            if self.valid_dirs and cfg.eval_every and step % cfg.eval_every == 0 and not last:
                self._evaluate_into_history(step)
            if step % cfg.checkpoint_every == 0 or last:
                self._checkpoint(step, {"train_seconds": time.perf_counter() - started,
                                        "final_loss": float(losses.sum()),
                                        "images_per_second": timed_images / timed_seconds if timed_seconds
                                        else self.progress.get("images_per_second", 0.0)})
            if out_of_time:
                log.info("max_minutes %.1f reached at step %d", cfg.max_minutes, step)
                break

        final_pckh = self._evaluate_into_history(self.step) if self.valid_dirs else None
        images_per_second = timed_images / timed_seconds if timed_seconds else 0.0
        if last_losses is None:  # resumed at the end: report what the previous runs measured
            previous = {**self._previous_metadata(), **self.progress}
            final_loss, images_per_second = previous.get("final_loss", float("nan")), previous.get(
                "images_per_second", 0.0)
        else:
            final_loss = [entry["loss"] for entry in self.history if "loss" in entry][-1]
        metadata = self._metadata(final_loss, images_per_second, final_pckh, time.perf_counter() - started)
        metadata["skipped_updates"] = skipped_updates
        if self.chief:
            self._save_model()
            _write_atomically(self.output_dir / "train_metadata.json", json.dumps(metadata, indent=2))
            self.writer.flush()
        return metadata

    def _lr(self) -> float:
        return float(self.optimizer.learning_rate.numpy())

    def _checkpoint(self, step: int, progress: dict) -> None:
        path = self.manager.save(checkpoint_number=step)
        if self.chief:
            # The history rides along with the checkpoints so that a resumed run keeps the whole curve, and
            # the progress so that it keeps its time budget and the last measurements.
            folder = Path(self.manager.directory)
            _write_atomically(folder / "history.json", json.dumps(self.history))
            _write_atomically(folder / PROGRESS, json.dumps({"step": step, **progress}))
            _write_atomically(folder / FINGERPRINT_FILE, json.dumps(self.fingerprint))
            if self.remote:
                self.remote.upload(step, path, [folder / "history.json", folder / PROGRESS])
        log.info("checkpoint %s", path)

    def _check_local_fingerprint(self, checkpoint_dir: Path, config_label: str) -> None:
        """Checkpoints in the folder from a config of another structure: a clear error instead of the
        restore's mismatch of variables. Folders from before fingerprints are not checked."""
        path = checkpoint_dir / FINGERPRINT_FILE
        if path.is_file():
            message = mismatch(str(checkpoint_dir), self.manager.latest_checkpoint.rsplit("-", 1)[-1],
                               json.loads(path.read_text()), self.fingerprint, config_label)
            if message:
                raise TrainError(message)

    def _fetch_remote_checkpoint(self, checkpoint_uri: str, checkpoint_dir: Path, config_label: str):
        """(the bucket mirror, the marker of its newest checkpoint); (None, None) without a URI. When the
        bucket holds a newer checkpoint than the local folder (a fresh pod's is empty), it is fetched into
        the folder for the manager to resume from; in a multi-worker run, whenever the folder's newest is
        another step (one written but not uploaded before a kill), since every worker must restore the same."""
        if not checkpoint_uri:
            return None, None
        remote = RemoteCheckpoints(checkpoint_uri, self.fingerprint, self.cfg.keep_checkpoints)
        marker = remote.latest()
        if marker is None:
            log.info("no checkpoint in %s yet: starting from scratch", checkpoint_uri)
            return remote, None
        try:
            remote.check(marker, config_label)
        except CheckpointMismatch as error:
            raise TrainError(str(error)) from None
        local = tf.train.latest_checkpoint(str(checkpoint_dir))
        local_step = int(local.rsplit("-", 1)[-1]) if local else -1
        if int(marker["step"]) > local_step or (self.multi_worker and int(marker["step"]) != local_step):
            remote.download(marker, checkpoint_dir)
            _write_atomically(checkpoint_dir / FINGERPRINT_FILE, json.dumps(self.fingerprint))
            log.info("resuming from the checkpoint of step %d in %s", marker["step"], checkpoint_uri)
        return remote, marker

    def _restore(self, checkpoint_uri: str, checkpoint_dir: Path, config_label: str) -> None:
        """Restores the newest checkpoint: the local folder's, or the bucket's when newer. In a multi-worker
        run with a bucket, exactly the bucket's newest on every worker (a fresh start when it has none)."""
        self.remote, marker = self._fetch_remote_checkpoint(checkpoint_uri, checkpoint_dir, config_label)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(checkpoint_dir), self.cfg.keep_checkpoints)
        latest = self.manager.latest_checkpoint
        if latest and self.multi_worker and self.remote and marker is None:
            # Killed before its first upload: the other workers cannot read this folder.
            log.warning("%s is not in %s, which every worker reads: all workers start from scratch", latest,
                        checkpoint_uri)
            latest = None
        if not latest:
            return
        cfg = self.cfg
        self._check_local_fingerprint(checkpoint_dir, config_label)
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            raise TrainError(
                f"{latest}: the checkpoints in {checkpoint_dir} do not fit this model "
                f"({cfg.model}, width {cfg.width}, {cfg.num_stages} stages, input {cfg.input_size}): they were "
                f"written by another config; use another --output, or the config they were written with "
                f"({self.output_dir / 'config.yaml'}). {' '.join(str(error).split())[:300]}") from None
        self.resumed_from = self.step
        self.history = self._previous_history()
        self.progress = self._previous_progress()
        log.info("resumed from %s at step %d", latest, self.resumed_from)

    def _agree_on_resumed_step(self, failure: Exception | None, checkpoint_uri: str) -> None:
        """Gathers every replica's restored step (-1: its worker failed to restore) and stops every worker
        with a clear error unless they all agree; then re-raises this worker's own failure, if any."""
        mine = -1 if failure else self.step

        @tf.function
        def gather():
            def replica_step():
                return tf.distribute.get_replica_context().all_gather(tf.constant([mine], tf.int64), axis=0)
            return self.strategy.run(replica_step)

        steps = [int(s) for s in self.strategy.experimental_local_results(gather())[0].numpy()]
        if failure:
            raise failure
        if -1 in steps:
            raise TrainError(f"another worker failed to restore its checkpoint (see its log; steps per replica, in "
                             f"worker order, -1 failed: {steps}): stopping too rather than waiting for it")
        if len(set(steps)) > 1:
            why = (f"the bucket {checkpoint_uri} changed while they read it: is another run writing there?"
                   if checkpoint_uri else
                   "without --checkpoint-uri a multi-worker run cannot resume: the chief's checkpoints are in "
                   "its --output, which the other workers do not read. Start again with a new --output, or "
                   "train with --checkpoint-uri gs://… (every worker then restores the bucket's newest)")
            raise TrainError(f"the workers would resume from different steps (per replica, in worker order: "
                             f"{steps}); {why}")
        log.info("all %d replicas resume from step %d", len(steps), mine)

    def _previous_history(self) -> list[dict]:
        path = Path(self.manager.directory) / "history.json"
        if not path.is_file():
            return []
        return [entry for entry in json.loads(path.read_text()) if entry["step"] <= self.resumed_from]

    def _previous_progress(self) -> dict:
        path = Path(self.manager.directory) / PROGRESS
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return progress if progress.get("step") == self.resumed_from else {}

    def _previous_metadata(self) -> dict:
        path = self.output_dir / "train_metadata.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- evaluation and summaries --

    def _evaluate_into_history(self, step: int) -> float:
        score = evaluate_pckh(self.predict, self.valid_dirs, self.codec)
        log.info("step %d: PCKh@0.5 on the valid shards (refine %s, no flip test) %.3f", step, self.codec.refine, score)
        if self.history and self.history[-1]["step"] == step:
            self.history[-1]["pckh"] = score
        else:
            self.history.append({"step": step, "pckh": score})
        if self.writer:
            with self.writer.as_default(step=step):
                _scalar_summary("pckh@0.5", score)
        return score

    def _summaries(self, step: int, losses, images_per_second: float) -> None:
        with self.writer.as_default(step=step):
            _scalar_summary("loss", losses.sum())
            _scalar_summary("loss_last_stage", losses[-1])
            for stage, value in enumerate(losses):
                _scalar_summary(f"loss_per_stage/stage_{stage}", value)
            _scalar_summary("learning_rate", self._lr())
            _scalar_summary("images_per_second", images_per_second)
            if self.cfg.pred_image_on_tensorboard:
                grid = self._prediction_grid()
                if grid is not None:
                    _image_summary("predictions", grid)

    def _prediction_grid(self):
        """Predicted heatmaps over a few valid images, one uint8 picture [H, W, 3] (pose.evaluation.visualize)."""
        if not self.valid_dirs:
            return None
        batch = next(iter(inputs.evaluation_dataset(self.valid_dirs, self.cfg.input_size, batch_size=8)))
        heatmaps = self.predict(batch["image"]).numpy()
        return visualize.sample_grid(batch["image"].numpy(), heatmaps)

    # -- outputs --

    def _metadata(self, final_loss: float, images_per_second: float, final_pckh, seconds: float) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model, "input_size": cfg.input_size, "output_stride": cfg.output_stride,
            "num_keypoints": cfg.num_keypoints, "width": cfg.width, "num_stages": cfg.num_stages,
            **{key: value for key, value in cfg.architecture_options().items() if value is not None},
            "steps": self.step, "epochs": round(self.step * self.global_batch / self.examples, 3),
            "final_loss": final_loss, "images_per_second": images_per_second, "pckh": final_pckh,
            "pckh_refine": self.codec.refine, "pckh_flip_test": False,
            "replicas": self.replicas, "global_batch_size": self.global_batch, "mixed_precision": self.mixed,
            "jit_compile": cfg.jit_compile, "resumed_from_step": self.resumed_from,
            "train_seconds": round(seconds, 1), "parameters": self.info["parameters"], "flops": self.info["flops"],
            "output_names": self.info["output_names"], "history": self.history, "warm_start": self.warm_start,
        }

    def _save_model(self) -> None:
        """model.keras in float32 whatever the training precision, so freeze and TFLite get float32
        graphs; written under a temporary name, then renamed."""
        model = self.model
        if self.mixed:
            model = networks.build_from_config(self.cfg)
            model.set_weights([w.numpy() for w in self.model.weights])
        target = self.output_dir / "model.keras"
        with atomic_file(target) as temporary:
            model.save(temporary)


def final_heatmaps_function(model):
    """A compiled `images -> final-stage heatmaps (float32)` for evaluation (eager calls are slow)."""
    return tf.function(lambda images: tf.cast(networks.stage_heatmaps(model, images)[-1], tf.float32),
                       reduce_retracing=True)


def evaluate_pckh(predict, valid_dirs: list[str], codec: HeatmapCodec, batch_size: int = 32) -> float:
    """PCKh@0.5 of `predict(images) -> final heatmaps` on the valid shards, decoded by `codec`, without the
    flip test. Measured in input pixels: the same figure as evaluate's in original pixels, since the
    evaluation crop maps to the photo by a scale and a shift and PCKh is relative to each head's size."""
    predictions, truths, visible = [], [], []
    for batch in inputs.evaluation_dataset(valid_dirs, codec.input_size, batch_size):
        keypoints, _ = codec.decode_to_input(np.asarray(predict(batch["image"])))
        predictions.append(keypoints)
        truths.append(batch["keypoints"].numpy())
        visible.append(batch["visibility"].numpy() > 0)
    if not predictions:
        raise TrainError(f"{valid_dirs}: no validation examples")
    score, _ = pckh(np.concatenate(predictions), np.concatenate(truths), np.concatenate(visible))
    return float(score)


# TensorBoard's own tf.summary.scalar / image need the tensorboard package, which the images do not
# carry; these write the same summaries (the plugin names TensorBoard reads) with the core op.
def _scalar_summary(tag: str, value) -> None:
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def _image_summary(tag: str, image: np.ndarray) -> None:
    """image: uint8 [H, W, 3]."""
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
    height, width = image.shape[:2]
    tf.summary.write(tag, tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(image)]),
                     metadata=metadata)


def _write_atomically(path: Path, text: str) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(text)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def main(argv=None) -> int:
    arguments = cli.parser("train", __doc__)
    arguments.add_argument("--config", required=True, help="YAML config file (experiments/*.yaml) or YAML text")
    arguments.add_argument("--data", action="append", required=True, metavar="SHARDS_DIR",
                           help="train shard folder (index.json + .tfrecord); repeat for several")
    arguments.add_argument("--valid-data", action="append", default=[], metavar="SHARDS_DIR",
                           help="valid shard folder for PCKh@0.5; repeat for several")
    arguments.add_argument("--output", required=True, help="model folder; an existing one with checkpoints resumes")
    arguments.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key (value read as YAML), e.g. --set max_steps=100")
    arguments.add_argument("--expect-gpus", type=int, default=0, metavar="N",
                           help="GPUs this process should see; fail if TensorFlow sees none (default 0: no check)")
    arguments.add_argument("--allow-cpu", action="store_true",
                           help="with --expect-gpus, train on the CPU (with a warning) instead of failing")
    arguments.add_argument("--checkpoint-uri", default="", metavar="gs://BUCKET/PREFIX",
                           help="also keep checkpoints there as they are written, and resume from the newest")
    return cli.run("train", arguments, lambda args: train(args.config, args.data, args.output,
                                                          valid_dirs=args.valid_data,
                                                          overrides=parse_overrides(args.set),
                                                          expect_gpus=args.expect_gpus, allow_cpu=args.allow_cpu,
                                                          checkpoint_uri=args.checkpoint_uri),
                   argv)


if __name__ == "__main__":
    raise SystemExit(main())
