"""train: a MobileNetV2 CPM or hourglass on the shards, on every device the machine has.

Takes    train shard folders (and optionally valid shard folders) from the shard step, and a YAML
         config (pose/training/config.py; experiments/*.yaml) with `key=value` overrides.
Does     a custom training loop (below) under a tf.distribute strategy over every device
         (pose/training/distribution.py: MirroredStrategy over the GPUs, global batch = batch_size
         x replicas; MultiWorkerMirroredStrategy when TF_CONFIG names several workers); mixed_float16
         and optional XLA on GPU. Loss: the seed's L2 of every stage's heatmaps
         (pose/training/objective.py); Adam with the seed's exponential decay or cosine
         (pose/training/learning_rate.py), for the planned steps (max_steps or max_epoch); a time
         budget (max_minutes, pose/training/budget.py) is only a safety stop, and a run it stops
         early says so. The same config, data and seed give the same weights on one machine
         (pose/training/reproducibility.py).
         Checkpoints every `checkpoint_every` steps, mirrored to --checkpoint-uri gs://, s3:// or
         minio://bucket/prefix; a restart resumes from the newest (pose/training/checkpoints.py).
         One training writes a prefix at a time: the chief holds its lock object .train.lock
         (pose/files/remote_checkpoints.py), and a second training there is refused before it
         trains, naming the holder.
         PCKh@0.5 on the valid shards every `eval_every` steps and at the end
         (pose/training/validation.py).
Writes   (docs/ARTIFACTS.md) model.keras, config.yaml, checkpoints/, logs/ (TensorBoard,
         pose/training/summaries.py), train_metadata.json.

`python -m components.train --config experiments/local.yaml --data SHARDS --valid-data SHARDS
 --output DIR [--checkpoint-uri gs://bucket/prefix]`
"""

import contextlib
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from components import cli
from pose.codec import HeatmapCodec
from pose.data import inputs, records, shard_index
from pose.files import integrity, outputs, remote_checkpoints, steplog, uris, writer_lock
from pose.files.atomic import atomic_file, write_text
from pose.files.storage import split_object_uri
from pose.models import networks
from pose.training import distribution, fine_tuning, reproducibility
from pose.training.budget import TimeBudget, duration
from pose.training.checkpoints import Checkpoints, Resumed
from pose.training.config import TrainConfig, load_config, parse_overrides
from pose.training.errors import TrainError
from pose.training.learning_rate import learning_rate
from pose.training.objective import train_step_function
from pose.training.summaries import Summaries
from pose.training.validation import evaluate_pckh, final_heatmaps_function, prediction_grid

log = logging.getLogger("train")


def train(
    config: str,
    data_dirs: list[str],
    output_dir: str,
    valid_dirs: list[str] | None = None,
    overrides: dict | None = None,
    expect_gpus: int = 0,
    allow_cpu: bool = False,
    checkpoint_uri: str = "",
) -> dict:
    """Trains per `config` (a YAML path or YAML text) on `data_dirs`; writes the model folder
    `output_dir` and returns its train_metadata (also written as train_metadata.json).

    `expect_gpus`: GPUs the caller asked for (the pod's accelerator limit); when TensorFlow sees
    none, training fails rather than quietly running on the CPU, unless `allow_cpu`.
    `checkpoint_uri` (gs://, s3:// or minio://…): checkpoints are mirrored there and a start resumes
    from the newest."""
    cfg = load_config(config, overrides).resolved()
    if checkpoint_uri:  # fail before building anything
        split_object_uri(checkpoint_uri)
        try:
            uris.check_uri(checkpoint_uri, "checkpoint_uri")
        except uris.UriError as error:
            raise TrainError(str(error)) from None
    outputs.check_output("train", output_dir, [*data_dirs, *(valid_dirs or [])])
    # One training per bucket prefix too (issue 21): the chief, the one worker that writes there,
    # holds its lock object from before the model is built until the end, success or failure.
    bucket_lock = (
        remote_checkpoints.single_writer(checkpoint_uri, output_dir)
        if checkpoint_uri and distribution.is_chief()
        else contextlib.nullcontext()
    )
    with (
        writer_lock.exclusive_writer(output_dir, "train"),
        bucket_lock as held_bucket,
        steplog.step(
            "train",
            config=config,
            data=data_dirs,
            valid=valid_dirs,
            output=output_dir,
            overrides=overrides or {},
            checkpoint_uri=checkpoint_uri,
        ) as wrote,
    ):
        # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op runs.
        strategy, devices = distribution.strategy(cfg)
        distribution.check_gpus(expect_gpus, allow_cpu)
        keypoint_set = _keypoint_set_of_shards(data_dirs, valid_dirs or [])
        # one heatmap per joint of the shards' set: say so before building a graph
        if cfg.num_keypoints is None:
            cfg.num_keypoints = keypoint_set.num_keypoints
        elif cfg.num_keypoints != keypoint_set.num_keypoints:
            raise TrainError(
                f"config num_keypoints {cfg.num_keypoints}, but the shards hold "
                f"{keypoint_set.num_keypoints} keypoints per person (the keypoint set "
                f"{keypoint_set.name!r}; {', '.join(data_dirs)}): leave num_keypoints out"
            )
        run = _Run(
            cfg,
            strategy,
            devices,
            data_dirs,
            Path(output_dir),
            valid_dirs or [],
            checkpoint_uri,
            config_label=config if "\n" not in config else "(YAML text)",
            bucket_lock=held_bucket,
            keypoint_set=keypoint_set,
        )
        metadata = run.fit()
        wrote.update(
            steps=metadata["steps"],
            final_loss=round(metadata["final_loss"], 4),
            images_per_second=round(metadata["images_per_second"], 1),
            seed=metadata["seed"],
            stopped_by_time_budget=metadata["stopped_by_time_budget"],
            pckh=metadata.get("pckh"),
            model=str(Path(output_dir) / "model.keras"),
        )
    return metadata


def _keypoint_set_of_shards(data_dirs, valid_dirs):
    """The keypoint set of the training shards; the valid shards must hold the same."""
    try:
        found = shard_index.keypoint_set(shard_index.read(data_dirs)) if data_dirs else None
        if found is not None and valid_dirs:
            valid = shard_index.keypoint_set(shard_index.read(valid_dirs))
            if not valid.same_joints(found):
                raise TrainError(
                    f"the training shards hold the keypoint set {found.name!r} "
                    f"({found.num_keypoints} joints), the valid shards {valid.name!r} "
                    f"({valid.num_keypoints})"
                )
    except shard_index.ShardIndexError as error:
        raise TrainError(str(error)) from None
    if found is None:
        raise TrainError("no training shard folders given (--data)")
    return found


class _Run:
    """One training run: what it reads (shards, config), what it builds (model, optimizer, resumed
    state), the loop, and what it writes."""

    def __init__(
        self,
        cfg: TrainConfig,
        strategy,
        devices: str,
        data_dirs,
        output_dir: Path,
        valid_dirs,
        checkpoint_uri: str = "",
        config_label: str = "",
        bucket_lock=None,
        keypoint_set=None,
    ):
        self.cfg, self.strategy, self.output_dir = cfg, strategy, output_dir
        self.keypoint_set = keypoint_set
        self.valid_dirs = list(valid_dirs)
        self.chief = distribution.is_chief()
        self.mixed = distribution.on_gpu() if cfg.mixed_precision is None else cfg.mixed_precision
        self.deterministic_ops = (
            distribution.on_gpu() if cfg.deterministic_ops is None else cfg.deterministic_ops
        )
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = cfg.batch_size * self.replicas
        self._read_shards(data_dirs)
        log.info(
            "devices: %s, strategy %s, %d replica(s), global batch %d, mixed precision %s, XLA %s, "
            "seed %d, op determinism %s",
            devices,
            type(strategy).__name__,
            self.replicas,
            self.global_batch,
            self.mixed,
            cfg.jit_compile,
            cfg.seed,
            self.deterministic_ops,
        )

        keras.mixed_precision.set_global_policy("mixed_float16" if self.mixed else "float32")
        # the initial weights, like the data, follow the seed
        reproducibility.make_reproducible(cfg.seed, self.deterministic_ops)
        with strategy.scope():
            self.model = networks.build_from_config(cfg)
            self.warm_start = self._warm_start()
            try:
                self.frozen = fine_tuning.freeze_layers(self.model, cfg.frozen_layers)
            except fine_tuning.FreezeError as error:
                raise TrainError(str(error)) from error
            # A plain variable the loop sets every step (see learning_rate).
            optimizer = keras.optimizers.Adam(learning_rate(cfg, 0, self.total_steps), epsilon=1e-8)
            self.optimizer = (
                keras.optimizers.LossScaleOptimizer(optimizer) if self.mixed else optimizer
            )
            self.optimizer.build(self.model.trainable_variables)
        keras.mixed_precision.set_global_policy("float32")
        self.info = networks.summary(self.model, print_fn=log.info)

        self.checkpoints = Checkpoints(
            cfg,
            self.model,
            self.optimizer,
            strategy,
            output_dir,
            self.chief,
            distribution.is_multi_worker(strategy),
            self.mixed,
            checkpoint_uri,
            config_label,
            bucket_lock,
        )
        resumed: Resumed = self.checkpoints.restore()
        self.resumed_from, self.history, self.progress = (
            resumed.step,
            resumed.history,
            resumed.progress,
        )

        # A restart continues with a fresh, still reproducible, stream rather than replaying the
        # first one.
        dataset = inputs.training_dataset(
            data_dirs,
            cfg.input_size,
            networks.output_stride(cfg.model),
            self.global_batch,
            cfg.sigma,
            augment=cfg.augment,
            seed=cfg.seed + self.resumed_from,
            repeat=True,
            shuffle_buffer=cfg.shuffle_buffer,
            augmentation=cfg.augmentation,
        )
        self.iterator = iter(strategy.experimental_distribute_dataset(dataset))
        self.train_step = train_step_function(
            self.model,
            self.optimizer,
            strategy,
            self.global_batch,
            cfg.jit_compile,
            batch_norm_learns=not cfg.batch_norm_frozen,
        )
        self.predict = final_heatmaps_function(self.model)
        self.codec = HeatmapCodec(cfg.input_size, cfg.output_stride, cfg.sigma)
        self.summaries = Summaries(output_dir / "logs" if self.chief else None)

    def _read_shards(self, data_dirs) -> None:
        """The shard indexes and checksums, the valid shards' too: fail now, not after an hour of
        training."""
        cfg = self.cfg
        if not data_dirs:
            raise TrainError("no training shard folders given (--data)")
        index = shard_index.read(data_dirs)
        if index["split"] != "train":
            log.warning("training on shards of split %r (%s)", index["split"], data_dirs)
        integrity.verify_shards(data_dirs)
        self.files = list(index["files"])
        if self.valid_dirs:
            self.files += shard_index.read(self.valid_dirs)["files"]
            integrity.verify_shards(self.valid_dirs)
        self.examples = cfg.num_train_samples or index["num_examples"]
        if self.examples < 1:
            raise TrainError(f"{data_dirs}: the shard index counts no examples")
        self.steps_per_epoch = max(1, self.examples // self.global_batch)
        self.total_steps = cfg.max_epoch * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        log.info(
            "data: %d examples in %d shard file(s), %d steps per epoch, %d steps planned",
            index["num_examples"],
            len(index["files"]),
            self.steps_per_epoch,
            self.total_steps,
        )

    def _warm_start(self) -> dict | None:
        """Loads cfg.init_from into the fresh model (a resumed run's checkpoint then overrides it)."""
        from pose.models import warm_start

        if not self.cfg.init_from:
            return None
        try:
            summary = warm_start.load_into(
                self.model,
                self.cfg.init_from,
                self.cfg.model,
                self.cfg.seed_layers,
                self.keypoint_set,
            )
        except warm_start.WarmStartError as error:
            raise TrainError(str(error)) from error
        log.info(
            "warm start: %d layers from %s%s",
            summary["layers"],
            self.cfg.init_from,
            f" (reproduces it to {summary['reproduction_max_abs_diff']:.1e})"
            if "reproduction_max_abs_diff" in summary
            else "",
        )
        if "shared_joints_max_abs_diff" in summary:
            log.info(
                "warm start: joints loaded by name: %s; new joints (fresh channels): %s; layers "
                "partly loaded (%d): %s; the shared joints reproduce the file to %.1e",
                ", ".join(summary["channels_loaded"]) or "none",
                ", ".join(summary["channels_new"]) or "none",
                len(summary["layers_partly_loaded"]),
                ", ".join(summary["layers_partly_loaded"]) or "none",
                summary["shared_joints_max_abs_diff"],
            )
        return summary

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _lr(self) -> float:
        return float(self.optimizer.learning_rate.numpy())

    # -- the loop --

    def fit(self) -> dict:
        with records.named_shard_errors(self.files):
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        if self.chief:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            outputs.mark(self.output_dir, "train")
            write_text(self.output_dir / "config.yaml", cfg.to_yaml())
        budget = TimeBudget(cfg.max_minutes, self.progress.get("train_seconds", 0.0))
        window_start, window_step = budget.started, self.step
        timed_images, timed_seconds = 0, 0.0
        window_losses, last_losses, skipped_updates = [], None, 0
        if self.step >= self.total_steps:
            log.info("already at step %d of %d: nothing to train", self.step, self.total_steps)
        elif budget.spent():
            log.info(
                "max_minutes %g already spent (step %d, earlier runs of this output included): "
                "nothing to train",
                cfg.max_minutes,
                self.step,
            )
        elif self.valid_dirs and self.step == 0:
            self._evaluate_into_history(0)  # the untrained baseline the curve starts from
        while self.step < self.total_steps and not budget.spent():
            step_started = time.perf_counter()
            self.optimizer.learning_rate.assign(learning_rate(cfg, self.step, self.total_steps))
            previous_step = self.step
            losses = self.train_step(self.iterator).numpy()
            step = self.step
            if step == previous_step:  # mixed precision: the loss scale overflowed, no update
                skipped_updates += 1
                continue
            if step > self.resumed_from + 1:  # the first step traces and compiles: not a sample
                timed_images += self.global_batch
                timed_seconds += time.perf_counter() - step_started
            if not np.isfinite(float(losses.sum())):
                raise FloatingPointError(
                    f"loss is {losses.sum()} at step {step}; stage losses {losses.tolist()}"
                )
            window_losses.append(losses)
            last_losses = losses
            out_of_time = budget.spent()
            last = step >= self.total_steps or out_of_time
            if step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                rate = (step - window_step) / max(now - window_start, 1e-9)
                mean = sum(window_losses) / len(window_losses)
                eta = (self.total_steps - step) / max(rate, 1e-9)
                log.info(
                    "step %d/%d (epoch %.1f): loss %.2f, stages [%s], lr %.2e, %.2f steps/s, "
                    "%.1f images/s, ETA %s",
                    step,
                    self.total_steps,
                    step / self.steps_per_epoch,
                    mean.sum(),
                    " ".join(f"{v:.1f}" for v in mean),
                    self._lr(),
                    rate,
                    rate * self.global_batch,
                    duration(eta),
                )
                self.history.append(
                    {
                        "step": step,
                        "loss": float(mean.sum()),
                        "seconds": round(now - budget.started, 1),
                    }
                )
                window_start, window_step, window_losses = now, step, []
            if self.chief and (step % cfg.summary_every == 0 or last):
                grid = (
                    prediction_grid(self.predict, self.valid_dirs, cfg.input_size)
                    if cfg.pred_image_on_tensorboard
                    else None
                )
                self.summaries.step(
                    step,
                    last_losses,
                    self._lr(),
                    timed_images / timed_seconds if timed_seconds else 0.0,
                    grid,
                )
            if self.valid_dirs and cfg.eval_every and step % cfg.eval_every == 0 and not last:
                self._evaluate_into_history(step)
            if step % cfg.checkpoint_every == 0 or last:
                self.checkpoints.save(
                    step,
                    self.history,
                    {
                        "train_seconds": budget.elapsed(),
                        "final_loss": float(losses.sum()),
                        "images_per_second": timed_images / timed_seconds
                        if timed_seconds
                        else self.progress.get("images_per_second", 0.0),
                    },
                )
            if out_of_time:
                break

        stopped_early = self.step < self.total_steps
        if stopped_early:
            log.warning(
                "max_minutes %g reached at step %d of the %d planned: stopped early, so this is "
                "not the model its config defines (the schedule is the same at every step; resume "
                "into this output with a larger max_minutes to finish it)",
                cfg.max_minutes,
                self.step,
                self.total_steps,
            )

        final_pckh = self._evaluate_into_history(self.step) if self.valid_dirs else None
        images_per_second = timed_images / timed_seconds if timed_seconds else 0.0
        if last_losses is None:  # resumed at the end: report what the previous runs measured
            previous = {**self._previous_metadata(), **self.progress}
            final_loss = previous.get("final_loss", float("nan"))
            images_per_second = previous.get("images_per_second", 0.0)
        else:
            final_loss = [entry["loss"] for entry in self.history if "loss" in entry][-1]
        metadata = self._metadata(final_loss, images_per_second, final_pckh, budget.elapsed())
        metadata["skipped_updates"] = skipped_updates
        metadata["stopped_by_time_budget"] = stopped_early
        if self.chief:
            self._save_model()
            write_text(self.output_dir / "train_metadata.json", json.dumps(metadata, indent=2))
            self.summaries.flush()
        return metadata

    def _evaluate_into_history(self, step: int) -> float:
        score = evaluate_pckh(self.predict, self.valid_dirs, self.codec)
        log.info(
            "step %d: PCKh@0.5 on the valid shards (refine %s, no flip test) %.3f",
            step,
            self.codec.refine,
            score,
        )
        if self.history and self.history[-1]["step"] == step:
            self.history[-1]["pckh"] = score
        else:
            self.history.append({"step": step, "pckh": score})
        self.summaries.pckh(step, score)
        return score

    # -- what it writes --

    def _previous_metadata(self) -> dict:
        path = self.output_dir / "train_metadata.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _metadata(
        self, final_loss: float, images_per_second: float, final_pckh, seconds: float
    ) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model,
            "input_size": cfg.input_size,
            "output_stride": cfg.output_stride,
            "num_keypoints": cfg.num_keypoints,
            "keypoint_set": self.keypoint_set.to_json(),
            "width": cfg.width,
            "num_stages": cfg.num_stages,
            **{
                key: value for key, value in cfg.architecture_options().items() if value is not None
            },
            "steps": self.step,
            "planned_steps": self.total_steps,
            "seed": cfg.seed,
            "deterministic_ops": self.deterministic_ops,
            "epochs": round(self.step * self.global_batch / self.examples, 3),
            "final_loss": final_loss,
            "images_per_second": images_per_second,
            "pckh": final_pckh,
            "pckh_refine": self.codec.refine,
            "pckh_flip_test": False,
            "replicas": self.replicas,
            "global_batch_size": self.global_batch,
            "mixed_precision": self.mixed,
            "jit_compile": cfg.jit_compile,
            "resumed_from_step": self.resumed_from,
            "train_seconds": round(seconds, 1),
            "parameters": self.info["parameters"],
            "flops": self.info["flops"],
            "output_names": self.info["output_names"],
            "history": self.history,
            "warm_start": self.warm_start,
            "frozen_layers": len(self.frozen),
        }

    def _save_model(self) -> None:
        """model.keras in float32 whatever the training precision, so freeze and TFLite get float32
        graphs; written under a temporary name, then renamed."""
        model = self.model
        if self.mixed:
            model = networks.build_from_config(self.cfg)
            model.set_weights([w.numpy() for w in self.model.weights])
        with atomic_file(self.output_dir / "model.keras") as temporary:
            model.save(temporary)


def main(argv=None) -> int:
    arguments = cli.parser("train", __doc__)
    arguments.add_argument(
        "--config", required=True, help="YAML config file (experiments/*.yaml) or YAML text"
    )
    arguments.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SHARDS_DIR",
        help="train shard folder (index.json + .tfrecord); repeat for several",
    )
    arguments.add_argument(
        "--valid-data",
        action="append",
        default=[],
        metavar="SHARDS_DIR",
        help="valid shard folder for PCKh@0.5; repeat for several",
    )
    arguments.add_argument(
        "--output", required=True, help="model folder; an existing one with checkpoints resumes"
    )
    arguments.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (value read as YAML), e.g. --set max_steps=100",
    )
    arguments.add_argument(
        "--expect-gpus",
        type=int,
        default=0,
        metavar="N",
        help="GPUs this process should see; fail if TensorFlow sees none (default 0: no check)",
    )
    arguments.add_argument(
        "--allow-cpu",
        action="store_true",
        help="with --expect-gpus, train on the CPU (with a warning) instead of failing",
    )
    arguments.add_argument(
        "--checkpoint-uri",
        default="",
        metavar="gs://|s3://BUCKET/PREFIX",
        help="also keep checkpoints there as they are written, and resume from the newest",
    )

    def run(args) -> dict:
        return train(
            args.config,
            args.data,
            args.output,
            valid_dirs=args.valid_data,
            overrides=parse_overrides(args.set),
            expect_gpus=args.expect_gpus,
            allow_cpu=args.allow_cpu,
            checkpoint_uri=args.checkpoint_uri,
        )

    return cli.run("train", arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
