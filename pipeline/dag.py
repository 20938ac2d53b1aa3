"""The pipeline: wires the steps together (README.md, "The DAG"), nothing else.

download -> convert -> shard x N (ParallelFor, train and valid) -> train -> freeze -> tflite -> evaluate -> publish

Every argument below is a run-time parameter (KFP UI, `kfp run create`, `python -m pipeline submit --param`);
the defaults run the small synthetic demo that `python -m pipeline run` runs locally. Cluster settings
(resources, accelerator, /dev/shm, node selector, tolerations, the GCS secret) are ignored by kfp.local;
what they become on a cluster is README's "On a cluster", checked by tests/test_cluster.py.
Images are fixed at compile time: `python -m pipeline compile --image-tag T` (see pipeline/images.py).
"""
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from pipeline.ops import (cluster_settings_op, convert_op, download_op, evaluate_op, freeze_op, pack_uris_op,
                          publish_op, shard_op, tflite_op, train_op)
from pipeline.cluster import GCS_SECRET_MOUNT
from pose.models import contract

PIPELINE_NAME = "pose-estimation-for-mobile"
# The run's defaults (the parameters below; `python -m pipeline run` uses them too).
DEFAULT_SOURCE = "synthetic://2000"
DEFAULT_CONFIG = "experiments/local.yaml"

# Ingest is deterministic in its inputs, so a re-run with the same source reuses it; training is not
# (random init, shuffling), and publishing is a side effect: neither is ever served from the cache.
CACHED_STEPS = {"cluster-settings": True, "download": True, "convert": True, "fanout": True, "shard": True,
                "train": False, "freeze": True, "tflite": True, "evaluate": True, "publish": False}


class Resources(NamedTuple):
    """A step's pod: requests (what the scheduler reserves) and limits (what a namespace ResourceQuota with
    limits.cpu / limits.memory counts; a pod without limits is refused by such a quota)."""
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


# Compile-time, not run parameters: kfp 2.17 drops a parameter used in a resource field of a task inside
# ParallelFor from the loop's inputs, and the shard tasks would fail. Train asks for what a common
# one-GPU node still has free after the system pods (8 vCPU / 32 GiB machines: GKE g2-standard-8, AWS
# g5.2xlarge); its memory limit also holds /dev/shm, which is memory (see SHM_SIZE).
RESOURCES = {
    "cluster-settings": Resources("100m", "256Mi", "500m", "256Mi"),
    "download": Resources("1", "2Gi", "2", "4Gi"),
    "convert": Resources("2", "8Gi", "2", "8Gi"),
    "fanout": Resources("100m", "256Mi", "500m", "256Mi"),
    "shard": Resources("2", "4Gi", "2", "4Gi"),
    "train": Resources("7", "28Gi", "7", "28Gi"),
    "freeze": Resources("2", "8Gi", "2", "8Gi"),
    "tflite": Resources("4", "8Gi", "4", "8Gi"),
    "evaluate": Resources("4", "8Gi", "4", "8Gi"),
    "publish": Resources("1", "2Gi", "1", "2Gi"),
}

# /dev/shm of the train pod: a memory-backed emptyDir instead of the container runtime's 64 MiB, which
# NCCL's shared-memory transport between the GPUs of one pod outgrows. The driver mounts it as is
# (backend/src/v2/driver/k8s.go, GetEmptyDirMounts -> EmptyDirVolumeSource{Medium, SizeLimit}); its pages
# count against train's memory limit.
SHM_SIZE = "4Gi"

# Iterations of the shard fan-out that run at once (each runs a train and a valid shard task): enough to
# read a large release quickly, few enough not to flood the cluster's scheduler or the bucket.
MAX_PARALLEL_SHARD_TASKS = 16
# Retries of the train task (preemption of a GPU node, a lost node): each resumes from checkpoint_uri.
TRAIN_RETRIES = 3


def configure(task, step: str, display_name: str = ""):
    """The step's name in the UI and the logs, its resource requests and limits, and caching."""
    resources = RESOURCES[step]
    return (task.set_display_name(display_name or step)
            .set_cpu_request(resources.cpu).set_memory_request(resources.memory)
            .set_cpu_limit(resources.cpu_limit).set_memory_limit(resources.memory_limit)
            .set_caching_options(CACHED_STEPS[step]))


Outputs = NamedTuple("Outputs", tflite_models=Model, metrics=Metrics, report=HTML, results=Artifact)


def _use_gcs_secret(task, secret_volume) -> None:
    """Mounts the GCS secret named by the cluster-settings task (never ""; see pipeline/cluster.py) at
    GCS_SECRET_MOUNT, optional, so a cluster with Workload Identity (no secret) runs too; the op sets
    GOOGLE_APPLICATION_CREDENTIALS to its key.json itself. Create it with
    `kubectl create secret generic gcs-credentials --from-file=key.json=SA_KEY.json`.
    """
    kubernetes.use_secret_as_volume(task, secret_name=secret_volume, mount_path=GCS_SECRET_MOUNT, optional=True)


def _shard_split(coco_uri, split: str, num_shards):
    """fanout and the shard tasks of one split; returns the shard task (inside its ParallelFor, so readers
    gather its outputs with dsl.Collected).

    Each shard task reads one pack of convert's output, not all of it: the importer makes an artifact of
    the pack's URI, and the launcher copies only what is under an input's URI (docs/ARTIFACTS.md)."""
    packs = configure(pack_uris_op(coco_uri=coco_uri, split=split, num_shards=num_shards), "fanout", f"fanout-{split}")
    with dsl.ParallelFor(packs.output, parallelism=MAX_PARALLEL_SHARD_TASKS) as pack_uri:
        pack = dsl.importer(artifact_uri=pack_uri, artifact_class=Dataset, reimport=False).set_display_name(
            f"pack-{split}")
        return configure(shard_op(coco=pack.output, split=split, num_shards=num_shards, shard_index=-1),
                         "shard", f"shard-{split}")


@dsl.pipeline(name=PIPELINE_NAME,
              description="AI Challenger keypoints -> MobileNetV2 CPM / Hourglass -> TFLite models, evaluated "
                          "against the seed's models (PCKh@0.5, OKS AP, latency), optionally published to gs://.")
def pose_pipeline(
    source: str = DEFAULT_SOURCE,
    sha256: str = "",
    single_person: bool = False,
    skip_invalid: bool = False,
    num_shards: int = 2,
    config: str = DEFAULT_CONFIG,
    overrides: str = "",
    export_contract: str = contract.DEFAULT,
    tflite_variants: str = "fp32,fp16,int8-dynamic,int8",
    latency_runs: int = 50,
    flip_test: bool = True,
    publish_uri: str = "",
    publish_variant: str = "fp16",
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: int = 1,
    gpu_node_selector: dict = {},
    gpu_tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    allow_cpu: bool = False,
    gcs_secret: str = "gcs-credentials",
    checkpoint_uri: str = "",
) -> Outputs:
    settings = configure(cluster_settings_op(gpu_count=gpu_count, gcs_secret=gcs_secret), "cluster-settings")
    download = configure(download_op(source=source, sha256=sha256), "download")
    _use_gcs_secret(download, settings.outputs["gcs_secret_volume"])
    convert = configure(convert_op(raw=download.outputs["raw"], single_person=single_person,
                                   skip_invalid=skip_invalid, num_shards=num_shards), "convert")
    train_shard = _shard_split(convert.outputs["Output"], "train", num_shards)
    valid_shard = _shard_split(convert.outputs["Output"], "valid", num_shards)

    # One dsl.Collected per consumer: kfp 2.17's compiler fails on an instance shared by two tasks.
    train = configure(train_op(train_shards=dsl.Collected(train_shard.outputs["shards"]),
                               valid_shards=dsl.Collected(valid_shard.outputs["shards"]),
                               config=config, overrides=overrides, gpu_count=gpu_count, allow_cpu=allow_cpu,
                               checkpoint_uri=checkpoint_uri), "train")
    # A preempted or failed pod is retried; with checkpoint_uri the new pod resumes from the bucket.
    train.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2.0,
                    backoff_max_duration="600s")
    _use_gcs_secret(train, settings.outputs["gcs_secret_volume"])
    # The count as the settings task's string output: the driver reads "" from a number parameter and then
    # sets no GPU limit (pipeline/cluster.py). The compiler adds that output to train's inputs but not to
    # its dependentTasks, which is what orders the tasks on the cluster: hence .after().
    train.set_accelerator_type(gpu_type).set_accelerator_limit(settings.outputs["accelerator_count"])
    train.after(settings)
    kubernetes.empty_dir_mount(train, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    kubernetes.add_node_selector_json(train, gpu_node_selector)
    kubernetes.add_toleration_json(train, gpu_tolerations)

    freeze = configure(freeze_op(model=train.outputs["model"], export_contract=export_contract), "freeze")
    tflite = configure(tflite_op(frozen=freeze.outputs["frozen"], variants=tflite_variants,
                                 representative=dsl.Collected(train_shard.outputs["shards"])), "tflite")
    evaluate = configure(evaluate_op(tflite_models=tflite.outputs["tflite_models"], latency_runs=latency_runs,
                                     flip_test=flip_test,
                                     valid_shards=dsl.Collected(valid_shard.outputs["shards"])), "evaluate")
    with dsl.If(publish_uri != "", name="publish-requested"):
        publish = configure(publish_op(tflite_models=tflite.outputs["tflite_models"],
                                       report=evaluate.outputs["report"], results=evaluate.outputs["results"],
                                       destination=publish_uri, variant=publish_variant), "publish")
        _use_gcs_secret(publish, settings.outputs["gcs_secret_volume"])

    return Outputs(tflite_models=tflite.outputs["tflite_models"], metrics=evaluate.outputs["metrics"],
                   report=evaluate.outputs["report"], results=evaluate.outputs["results"])

