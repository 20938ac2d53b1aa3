"""Where train runs: the devices it may use, the tf.distribute strategy over them, and this process's
role in a multi-worker run (TF_CONFIG)."""

import json
import logging
import os

import tensorflow as tf

from pose.training.config import TrainConfig
from pose.training.errors import TrainError

log = logging.getLogger("train")


def strategy(cfg: TrainConfig):
    """(strategy, device description). GPUs -> MirroredStrategy over all of them; several workers in
    TF_CONFIG -> MultiWorkerMirroredStrategy; several logical CPUs (tests) -> MirroredStrategy over
    them; else the default strategy. Call it before any other TF op: MultiWorkerMirroredStrategy
    cannot be set up afterwards."""
    if cfg.visible_devices:
        wanted = [int(i) for i in cfg.visible_devices.split(",") if i.strip()]
        gpus = tf.config.list_physical_devices("GPU")
        missing = [i for i in wanted if i >= len(gpus)]
        if missing:
            raise TrainError(
                f"visible_devices {cfg.visible_devices!r}: GPUs {missing} do not exist "
                f"({len(gpus)} visible)"
            )
        tf.config.set_visible_devices([gpus[i] for i in wanted], "GPU")
    cluster = tf_config().get("cluster", {})
    if sum(len(cluster.get(role, [])) for role in ("chief", "worker")) > 1:
        multi = tf.distribute.MultiWorkerMirroredStrategy()
        return multi, (
            f"{multi.num_replicas_in_sync} replicas over {len(cluster.get('worker', []))} workers"
        )
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus]), f"{len(gpus)} GPU(s)"
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus]), f"{len(cpus)} logical CPUs"
    return tf.distribute.get_strategy(), "CPU"


def is_multi_worker(chosen) -> bool:
    return isinstance(chosen, tf.distribute.MultiWorkerMirroredStrategy)


def tf_config() -> dict:
    """The TF_CONFIG environment variable a multi-worker launcher sets ({} when unset)."""
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def is_chief() -> bool:
    """Whether this process writes the run's outputs: the chief, or worker 0 when there is no chief
    (a single process is its own chief)."""
    config = tf_config()
    task, cluster = config.get("task", {}), config.get("cluster", {})
    if not task:
        return True
    return task.get("type") == "chief" or (
        task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster
    )


def on_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def check_gpus(expected: int, allow_cpu: bool) -> None:
    """Fails when GPUs were asked for but TensorFlow sees none (a CPU-only TensorFlow, no driver or
    CUDA libraries, or a pod without the GPU limit), unless CPU training is allowed on purpose."""
    if expected <= 0:
        return
    visible = len(tf.config.list_logical_devices("GPU"))
    if visible == 0 and not allow_cpu:
        raise TrainError(
            f"{expected} GPU(s) were requested, but TensorFlow sees none (built with CUDA: "
            f"{tf.test.is_built_with_cuda()}); check the pod's nvidia.com/gpu limit and "
            f"the image, or allow CPU training on purpose (pipeline parameter "
            f"allow_cpu=true, train --allow-cpu)"
        )
    if visible == 0:
        log.warning(
            "%d GPU(s) were requested, but TensorFlow sees none: training on the CPU (allow_cpu)",
            expected,
        )
    elif visible < expected:
        log.warning(
            "%d GPU(s) were requested, but TensorFlow sees %d: training on those", expected, visible
        )
