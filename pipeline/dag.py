"""The pipeline: wires the steps together (README.md, "The DAG"), nothing else.

download -> convert -> shard x N (ParallelFor, train and valid) -> train -> freeze -> tflite -> evaluate -> publish

Every argument below is a run-time parameter (KFP UI, `kfp run create`, `python -m pipeline submit --param`);
the defaults run the small synthetic demo that `python -m pipeline run` runs locally. Cluster settings
(resources, accelerator, /dev/shm, node selector, tolerations, the GCS and S3 secrets and settings) are
ignored by kfp.local (a local run's steps take S3 settings from the AWS_* environment);
what they become on a cluster is README's "On a cluster", checked by tests/test_cluster.py.
Images are fixed at compile time: `python -m pipeline compile --image-tag T` (see pipeline/images.py).
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from pipeline.cluster import (
    DEFAULT_S3_ENDPOINT,
    DEFAULT_S3_REGION,
    DEFAULT_S3_SECRET,
    GCS_SECRET_MOUNT,
    S3_SECRET_MOUNT,
)
from pipeline.ops import (
    cluster_settings_op,
    convert_op,
    download_op,
    evaluate_op,
    freeze_op,
    pack_uris_op,
    publish_op,
    shard_op,
    source_version_op,
    tflite_op,
    train_op,
)
from pose.data.packs import MAX_SHARDS
from pose.models import contract

PIPELINE_NAME = "pose-estimation-for-mobile"
# The run's defaults (the parameters below; `python -m pipeline run` uses them too).
DEFAULT_SOURCE = "synthetic://2000"
DEFAULT_CONFIG = "experiments/local.yaml"

# A step is served from the cache when its cache key is unchanged: its input artifacts (by ML
# Metadata id, so an upstream step that ran again means a miss), its parameters, its command and
# image (backend/src/v2/cacheutils/cache.go GenerateCacheKey). So a resubmission that changes only
# tflite_variants, latency_runs, flip_test or the publish_* parameters reuses everything up to train
# and freeze (train's key does not hold them: pipeline/backend cache_key_inputs, tested). Train is
# cached too: a finished training is reused when nothing it reads changed; `submit --no-cache`
# retrains. Publishing is a side effect and always runs. docs/CLUSTER.md ("Reruns") has the table.
# source-version asks the store what the source is now, so it never comes from the cache; download
# is cached on its answer (a replaced object is downloaded again, an unchanged one is not).
CACHED_STEPS = {
    "cluster-settings": True,
    "source-version": False,
    "download": True,
    "convert": True,
    "fanout": True,
    "shard": True,
    "train": True,
    "freeze": True,
    "tflite": True,
    "evaluate": True,
    "publish": False,
}


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
    "source-version": Resources("100m", "256Mi", "500m", "512Mi"),
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
# Argo counts a retry's backoff maxDuration from the *first* attempt's start, starts no retry past
# it and kills every retry pod at it (workflow/controller/operator.go processNodeRetries). So it
# must hold the whole training with all its retries: TRAIN_RETRIES + 1 attempts of up to
# TRAIN_LONGEST_ATTEMPT_S (a day) plus the waits, with room: a week. pipeline/backend checks it.
TRAIN_LONGEST_ATTEMPT_S = 24 * 3600
TRAIN_RETRY_WINDOW = "604800s"
# What the backend model (pipeline/backend) is told about this pipeline when it checks the IR: the
# most items a ParallelFor iterates over (fanout makes one per shard) and the longest attempts.
MAX_LOOP_ITEMS = MAX_SHARDS
LONGEST_ATTEMPT_S = {"train": TRAIN_LONGEST_ATTEMPT_S}


def configure(task, step: str, display_name: str = ""):
    """The step's name in the UI and the logs, its resource requests and limits, and caching."""
    resources = RESOURCES[step]
    return (
        task.set_display_name(display_name or step)
        .set_cpu_request(resources.cpu)
        .set_memory_request(resources.memory)
        .set_cpu_limit(resources.cpu_limit)
        .set_memory_limit(resources.memory_limit)
        .set_caching_options(CACHED_STEPS[step])
    )


class Outputs(NamedTuple):
    tflite_models: Model
    metrics: Metrics
    report: HTML
    results: Artifact


def _use_gcs_secret(task, secret_volume) -> None:
    """Mounts the GCS secret named by the cluster-settings task (never ""; see pipeline/cluster.py) at
    GCS_SECRET_MOUNT, optional, so a cluster with Workload Identity (no secret) runs too; the op sets
    GOOGLE_APPLICATION_CREDENTIALS to its key.json itself. Create it with
    `kubectl create secret generic gcs-credentials --from-file=key.json=SA_KEY.json`.
    """
    kubernetes.use_secret_as_volume(
        task, secret_name=secret_volume, mount_path=GCS_SECRET_MOUNT, optional=True
    )


def _use_storage_secrets(task, settings) -> None:
    """Both stores' secrets, for a step that reads or writes buckets. The S3 secret (KFP's key
    names, `accesskey` and `secretkey`, as its own mlpipeline-minio-artifact) is mounted at
    S3_SECRET_MOUNT, optional like the GCS one (AWS with IRSA has none); the op turns it into
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (pipeline/cluster.py use_s3_settings)."""
    _use_gcs_secret(task, settings.outputs["gcs_secret_volume"])
    kubernetes.use_secret_as_volume(
        task,
        secret_name=settings.outputs["s3_secret_volume"],
        mount_path=S3_SECRET_MOUNT,
        optional=True,
    )


def _shard_split(coco_uri, dataset_info, split: str, num_shards):
    """fanout and the shard tasks of one split; returns the shard task (inside its ParallelFor, so readers
    gather its outputs with dsl.Collected).

    Each shard task reads one pack of convert's output, not all of it: the importer makes an artifact of
    the pack's URI, and the launcher copies only what is under an input's URI (docs/ARTIFACTS.md).
    The importer keeps its own name as display name: the backend records an importer's execution
    under its display name but looks producers up by task name (importer_launcher.go;
    docs/CLUSTER.md). The shard task also takes convert's small dataset_info, so that it can be a
    cache hit only when convert was one (its cache key holds its input artifacts' ids): see
    pose_pipeline."""
    packs = configure(
        pack_uris_op(coco_uri=coco_uri, split=split, num_shards=num_shards),
        "fanout",
        f"fanout-{split}",
    )
    with dsl.ParallelFor(packs.output, parallelism=MAX_PARALLEL_SHARD_TASKS) as pack_uri:
        pack = dsl.importer(artifact_uri=pack_uri, artifact_class=Dataset, reimport=False)
        shard = shard_op(
            coco=pack.output,
            dataset_info=dataset_info,
            split=split,
            num_shards=num_shards,
            shard_index=-1,
        )
        return configure(shard, "shard", f"shard-{split}")


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Human keypoints (AI Challenger, COCO-format data of any keypoint set) -> MobileNetV2 "
    "CPM / Hourglass -> TFLite models, evaluated against the seed's models (PCK, OKS AP, latency), "
    "optionally published to gs:// or s3://.",
)
def pose_pipeline(
    source: str = DEFAULT_SOURCE,
    sha256: str = "",
    single_person: bool = False,
    skip_invalid: bool = False,
    keypoints: str = "auto",
    min_keypoints: int = 1,
    valid_fraction: float = 0.1,
    num_shards: int = 2,
    config: str = DEFAULT_CONFIG,
    overrides: str = "",
    export_contract: str = contract.AUTO,
    tflite_variants: str = "fp32,fp16,int8-dynamic,int8",
    latency_runs: int = 50,
    flip_test: bool = True,
    publish_uri: str = "",
    publish_variant: str = "fp16",
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: int = 1,
    gpu_node_selector: dict = {},
    gpu_tolerations: list = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ],
    allow_cpu: bool = False,
    gcs_secret: str = "gcs-credentials",
    checkpoint_uri: str = "",
    s3_secret: str = DEFAULT_S3_SECRET,
    s3_endpoint: str = DEFAULT_S3_ENDPOINT,
    s3_region: str = DEFAULT_S3_REGION,
    s3_path_style: bool = True,
    s3_tls: bool = False,
) -> Outputs:
    settings = configure(
        cluster_settings_op(
            gpu_count=gpu_count,
            gcs_secret=gcs_secret,
            s3_secret=s3_secret,
            s3_endpoint=s3_endpoint,
            s3_region=s3_region,
            s3_path_style=s3_path_style,
            s3_tls=s3_tls,
        ),
        "cluster-settings",
    )
    s3_settings = settings.outputs["s3_settings"]
    version = configure(source_version_op(source=source, s3_settings=s3_settings), "source-version")
    _use_storage_secrets(version, settings)
    download = configure(
        download_op(
            source=source, sha256=sha256, source_version=version.output, s3_settings=s3_settings
        ),
        "download",
    )
    _use_storage_secrets(download, settings)
    convert = configure(
        convert_op(
            raw=download.outputs["raw"],
            single_person=single_person,
            skip_invalid=skip_invalid,
            num_shards=num_shards,
            keypoints=keypoints,
            min_keypoints=min_keypoints,
            valid_fraction=valid_fraction,
            s3_settings=s3_settings,
        ),
        "convert",
    )
    _use_storage_secrets(convert, settings)
    dataset_info = convert.outputs["dataset_info"]
    train_shard = _shard_split(convert.outputs["Output"], dataset_info, "train", num_shards)
    valid_shard = _shard_split(convert.outputs["Output"], dataset_info, "valid", num_shards)

    # Every reader of a collected shard list also takes dataset_info. On a resubmission some
    # shard tasks may be cache hits (their artifacts under an earlier run's prefix) and others not;
    # the KFP launcher opens the bucket of an input outside this run's prefix only for element [0]
    # of each input list (launcher_v2.go fetchNonDefaultBuckets). A shard task can be a cache hit
    # only if convert was one (shard takes dataset_info too), and then dataset_info[0] lies outside
    # this run's prefix and opens the bucket for every shard. docs/CLUSTER.md, "Resubmitting";
    # checked by pipeline/backend.
    # One dsl.Collected per consumer: kfp 2.17's compiler fails on an instance shared by two tasks.
    train = configure(
        train_op(
            train_shards=dsl.Collected(train_shard.outputs["shards"]),
            valid_shards=dsl.Collected(valid_shard.outputs["shards"]),
            dataset_info=dataset_info,
            config=config,
            overrides=overrides,
            gpu_count=gpu_count,
            allow_cpu=allow_cpu,
            checkpoint_uri=checkpoint_uri,
            s3_settings=s3_settings,
        ),
        "train",
    )
    # A preempted or failed pod is retried (by the policy the cluster's Argo sets: docs/CLUSTER.md);
    # with checkpoint_uri the new pod resumes from the bucket.
    train.set_retry(
        num_retries=TRAIN_RETRIES,
        backoff_duration="60s",
        backoff_factor=2.0,
        backoff_max_duration=TRAIN_RETRY_WINDOW,
    )
    _use_storage_secrets(train, settings)
    # The count as the settings task's string output: the driver reads "" from a number parameter and then
    # sets no GPU limit (pipeline/cluster.py). The compiler adds that output to train's inputs but not to
    # its dependentTasks, which is what orders the tasks on the cluster: hence .after().
    train.set_accelerator_type(gpu_type).set_accelerator_limit(
        settings.outputs["accelerator_count"]
    )
    train.after(settings)
    kubernetes.empty_dir_mount(
        train, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
    )
    kubernetes.add_node_selector_json(train, gpu_node_selector)
    kubernetes.add_toleration_json(train, gpu_tolerations)

    freeze = configure(
        freeze_op(model=train.outputs["model"], export_contract=export_contract), "freeze"
    )
    tflite = configure(
        tflite_op(
            frozen=freeze.outputs["frozen"],
            variants=tflite_variants,
            representative=dsl.Collected(train_shard.outputs["shards"]),
            dataset_info=dataset_info,
        ),
        "tflite",
    )
    evaluate = configure(
        evaluate_op(
            tflite_models=tflite.outputs["tflite_models"],
            latency_runs=latency_runs,
            flip_test=flip_test,
            valid_shards=dsl.Collected(valid_shard.outputs["shards"]),
            dataset_info=dataset_info,
            data_source=source,
        ),
        "evaluate",
    )
    with dsl.If(publish_uri != "", name="publish-requested"):
        publish = configure(
            publish_op(
                tflite_models=tflite.outputs["tflite_models"],
                report=evaluate.outputs["report"],
                results=evaluate.outputs["results"],
                destination=publish_uri,
                variant=publish_variant,
                s3_settings=s3_settings,
            ),
            "publish",
        )
        _use_storage_secrets(publish, settings)

    return Outputs(
        tflite_models=tflite.outputs["tflite_models"],
        metrics=evaluate.outputs["metrics"],
        report=evaluate.outputs["report"],
        results=evaluate.outputs["results"],
    )
