"""The pipeline: wires the steps of ../shared/DESIGN.md together, nothing else.

download -> convert -> shard x N (ParallelFor, train and valid) -> train -> freeze -> tflite -> evaluate -> publish

Every argument below is a run-time parameter (KFP UI, `kfp run create`, `python -m pipeline submit --param`);
the defaults run the small synthetic demo that `python -m pipeline run` runs locally. Cluster settings
(resources, accelerator, node selector, tolerations, the GCS secret) are ignored by kfp.local.
Images are fixed at compile time: `python -m pipeline compile --image-tag T` (see pipeline/images.py).
"""
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from pipeline.ops import (convert_op, download_op, evaluate_op, freeze_op, pack_uris_op, publish_op, shard_op,
                          tflite_op, train_op)

PIPELINE_NAME = "pose-estimation-for-mobile"

# Ingest is deterministic in its inputs, so a re-run with the same source reuses it; training is not
# (random init, shuffling), and publishing is a side effect: neither is ever served from the cache.
CACHED_STEPS = {"download": True, "convert": True, "fanout": True, "shard": True, "train": False,
                "freeze": True, "tflite": True, "evaluate": True, "publish": False}

# (CPU, memory) requests per step. Compile-time, not run parameters: kfp 2.17 drops a parameter used in
# a resource field of a task inside ParallelFor from the loop's inputs, and the shard tasks would fail.
RESOURCES = {"download": ("1", "2Gi"), "convert": ("2", "8Gi"), "fanout": ("100m", "256Mi"),
             "shard": ("2", "4Gi"), "train": ("8", "32Gi"), "freeze": ("2", "8Gi"), "tflite": ("4", "8Gi"),
             "evaluate": ("4", "8Gi"), "publish": ("1", "2Gi")}

GCS_SECRET_MOUNT = "/var/secrets/gcs"
# Iterations of the shard fan-out that run at once (each runs a train and a valid shard task): enough to
# read a large release quickly, few enough not to flood the cluster's scheduler or the bucket.
MAX_PARALLEL_SHARD_TASKS = 16
# Retries of the train task (preemption of a GPU node, a lost node): each resumes from checkpoint_uri.
TRAIN_RETRIES = 3


def configure(task, step: str, display_name: str = ""):
    """The step's name in the UI and the logs, its resource requests and caching."""
    cpu, memory = RESOURCES[step]
    return (task.set_display_name(display_name or step).set_cpu_request(cpu).set_memory_request(memory)
            .set_caching_options(CACHED_STEPS[step]))


Outputs = NamedTuple("Outputs", tflite_models=Model, metrics=Metrics, report=HTML, results=Artifact)


def _use_gcs_secret(task, secret_name) -> None:
    """Mounts the secret's service-account key and points GOOGLE_APPLICATION_CREDENTIALS at it.

    Both come from the secret (optional, so clusters with Workload Identity need none), never from the
    container's env: a literal env var would also reach kfp.local's subprocesses and hide the user's
    own credentials there. Create it with
    `kubectl create secret generic gcs-credentials --from-file=key.json=SA_KEY.json
     --from-literal=GOOGLE_APPLICATION_CREDENTIALS=/var/secrets/gcs/key.json`.
    """
    kubernetes.use_secret_as_volume(task, secret_name=secret_name, mount_path=GCS_SECRET_MOUNT, optional=True)
    kubernetes.use_secret_as_env(task, secret_name=secret_name, optional=True,
                                 secret_key_to_env={"GOOGLE_APPLICATION_CREDENTIALS": "GOOGLE_APPLICATION_CREDENTIALS"})


@dsl.pipeline(name=PIPELINE_NAME,
              description="AI Challenger keypoints -> MobileNetV2 CPM / Hourglass -> TFLite models, evaluated "
                          "against the seed's models (PCKh@0.5, OKS AP, latency), optionally published to gs://.")
def pose_pipeline(
    source: str = "synthetic://2000",
    sha256: str = "",
    single_person: bool = False,
    skip_invalid: bool = False,
    num_shards: int = 2,
    config: str = "experiments/local.yaml",
    overrides: str = "",
    tflite_variants: str = "fp32,fp16,int8-dynamic,int8",
    latency_runs: int = 50,
    flip_test: bool = True,
    publish_uri: str = "",
    publish_variant: str = "fp16",
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: int = 1,
    gpu_node_selector: dict = {"nvidia.com/gpu.present": "true"},
    gpu_tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    gcs_secret: str = "gcs-credentials",
    checkpoint_uri: str = "",
) -> Outputs:
    download = configure(download_op(source=source, sha256=sha256), "download")
    _use_gcs_secret(download, gcs_secret)
    convert = configure(convert_op(raw=download.outputs["raw"], single_person=single_person,
                                   skip_invalid=skip_invalid, num_shards=num_shards), "convert")
    # Each shard task reads one pack of convert's output, not all of it: the importer makes an artifact of
    # the pack's URI, and the launcher copies only what is under an input's URI (docs/ARTIFACTS.md).
    train_packs = configure(pack_uris_op(coco_uri=convert.outputs["Output"], split="train",
                                         num_shards=num_shards), "fanout", "fanout-train")
    with dsl.ParallelFor(train_packs.output, parallelism=MAX_PARALLEL_SHARD_TASKS) as pack_uri:
        pack = dsl.importer(artifact_uri=pack_uri, artifact_class=Dataset, reimport=False).set_display_name(
            "pack-train")
        train_shard = configure(shard_op(coco=pack.output, split="train", num_shards=num_shards, shard_index=-1),
                                "shard", "shard-train")
    valid_packs = configure(pack_uris_op(coco_uri=convert.outputs["Output"], split="valid",
                                         num_shards=num_shards), "fanout", "fanout-valid")
    with dsl.ParallelFor(valid_packs.output, parallelism=MAX_PARALLEL_SHARD_TASKS) as pack_uri:
        pack = dsl.importer(artifact_uri=pack_uri, artifact_class=Dataset, reimport=False).set_display_name(
            "pack-valid")
        valid_shard = configure(shard_op(coco=pack.output, split="valid", num_shards=num_shards, shard_index=-1),
                                "shard", "shard-valid")

    # One dsl.Collected per consumer: kfp 2.17's compiler fails on an instance shared by two tasks.
    train = configure(train_op(train_shards=dsl.Collected(train_shard.outputs["shards"]),
                               valid_shards=dsl.Collected(valid_shard.outputs["shards"]),
                               config=config, overrides=overrides, checkpoint_uri=checkpoint_uri), "train")
    # A preempted or failed pod is retried; with checkpoint_uri the new pod resumes from the bucket.
    train.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2.0,
                    backoff_max_duration="600s")
    _use_gcs_secret(train, gcs_secret)
    train.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    kubernetes.add_node_selector_json(train, gpu_node_selector)
    kubernetes.add_toleration_json(train, gpu_tolerations)

    freeze = configure(freeze_op(model=train.outputs["model"]), "freeze")
    tflite = configure(tflite_op(frozen=freeze.outputs["frozen"], variants=tflite_variants,
                                 representative=dsl.Collected(train_shard.outputs["shards"])), "tflite")
    evaluate = configure(evaluate_op(tflite_models=tflite.outputs["tflite_models"], latency_runs=latency_runs,
                                     flip_test=flip_test,
                                     valid_shards=dsl.Collected(valid_shard.outputs["shards"])), "evaluate")
    with dsl.If(publish_uri != "", name="publish-requested"):
        publish = configure(publish_op(tflite_models=tflite.outputs["tflite_models"],
                                       report=evaluate.outputs["report"], results=evaluate.outputs["results"],
                                       destination=publish_uri, variant=publish_variant), "publish")
        _use_gcs_secret(publish, gcs_secret)

    return Outputs(tflite_models=tflite.outputs["tflite_models"], metrics=evaluate.outputs["metrics"],
                   report=evaluate.outputs["report"], results=evaluate.outputs["results"])

