"""The pipeline's KFP components: one `@dsl.component` per step, and nothing else.

Each body runs inside the step's container (or a kfp.local subprocess) and only calls the step's plain
function in `components/<step>.py`, which is also what the step's command line calls. The step modules
never import kfp, and this module never imports them at compile time: compiling the pipeline needs
neither TensorFlow nor the steps' dependencies.

KFP runs a body as the function's source alone (with `from kfp.dsl import *` and `from typing import *`
above it), so every name a body uses is imported inside it.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from pipeline.images import CPU_IMAGE, GPU_IMAGE, SLIM_IMAGE

# ---- the cluster ---------------------------------------------------------------------------------


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def cluster_settings_op(
    gpu_count: int,
    gcs_secret: str,
    s3_secret: str = "mlpipeline-minio-artifact",
    s3_endpoint: str = "",
    s3_region: str = "",
    s3_path_style: bool = True,
    s3_tls: bool = False,
) -> NamedTuple(
    "ClusterSettings",
    accelerator_count=str,
    gcs_secret_volume=str,
    s3_secret_volume=str,
    s3_settings=str,
):
    """Run parameters in the form the KFP driver reads for the pod spec (pipeline/cluster.py): the
    accelerator count as a string (a number parameter would give no GPU limit at all) and non-empty
    secret names; and the S3 parameters as one string for the steps that read or write buckets.
    Its outputs are strings whatever the run's client typed gpu_count as."""
    from collections import namedtuple

    from pipeline.cluster import accelerator_count, gcs_secret_volume, s3_secret_volume, s3_settings

    settings = namedtuple(
        "ClusterSettings",
        ["accelerator_count", "gcs_secret_volume", "s3_secret_volume", "s3_settings"],
    )
    return settings(
        accelerator_count(gpu_count),
        gcs_secret_volume(gcs_secret),
        s3_secret_volume(s3_secret),
        s3_settings(s3_endpoint, s3_region, s3_path_style, s3_tls),
    )


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def source_version_op(source: str, s3_settings: str = "") -> str:
    """What changes when the data behind `source` changes (pose.files.storage.source_version):
    never cached itself, it feeds download's inputs, so download's cache key follows the data and
    not only the URI."""
    from pipeline import cluster
    from pose.files import steplog, storage

    steplog.setup()
    if cluster.on_kfp_cluster():
        cluster.refuse_local_paths({"source": source}, "checked in the source-version pod")
        cluster.use_mounted_gcs_key()
        cluster.use_s3_settings(s3_settings)
    version = storage.source_version(source)
    shown = version or "none (synthetic://, or a server that sends no version)"
    print(f"source-version: {source}: {shown}")
    return version


# ---- ingest ------------------------------------------------------------------------------------


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def download_op(
    source: str, sha256: str, raw: Output[Dataset], source_version: str = "", s3_settings: str = ""
):
    """Fetches a source URI (https, gs, s3, minio, file, synthetic://N) into the raw AIC dataset;
    sha256 "" = no check. source_version (source-version's output) is part of the cache key, and the
    version an object source must still have when it is read."""
    from components.download import download
    from pipeline import cluster
    from pose.files import steplog

    steplog.setup()
    if cluster.on_kfp_cluster():
        cluster.refuse_local_paths({"source": source}, "checked in the download pod")
        cluster.use_mounted_gcs_key()
        cluster.use_s3_settings(s3_settings)
    # source_version is the run's cache key for the data: download refuses an object replaced since.
    raw.metadata.update(download(source, raw.path, sha256 or None, expected_version=source_version))
    raw.metadata["source_version"] = source_version


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def convert_op(
    raw: Input[Dataset],
    single_person: bool,
    skip_invalid: bool,
    coco: Output[Dataset],
    dataset_info: Output[Artifact],
    num_shards: int = 0,
    keypoints: str = "auto",
    min_keypoints: int = 1,
    valid_fraction: float = 0.1,
    s3_settings: str = "",
) -> str:
    """num_shards > 0: the images go into per-shard packs. Returns coco's URI, for the fan-out's
    pack URIs. dataset_info: the counts and the keypoint set as a small JSON file, which every
    reader of the shards takes too (dag.py says why a cluster needs it). keypoints: auto (the
    data's), a preset name, or a YAML file (a path, or a gs://, s3:// or https:// URI, fetched)."""
    from components.convert import convert
    from pipeline import cluster
    from pose.data import keypoint_files, packs
    from pose.files import steplog

    steplog.setup()
    if cluster.on_kfp_cluster() and keypoint_files.is_remote(keypoints):
        cluster.use_mounted_gcs_key()
        cluster.use_s3_settings(s3_settings)
    counts = convert(
        raw.path,
        coco.path,
        single_person=single_person,
        skip_invalid=skip_invalid,
        num_shards=num_shards or None,
        keypoints=keypoints,
        min_keypoints=min_keypoints,
        valid_fraction=valid_fraction,
    )
    coco.metadata.update(counts)
    packs.write_dataset_info(dataset_info.path, counts)
    return coco.uri


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def pack_uris_op(coco_uri: str, split: str, num_shards: int) -> list[str]:
    from components.fanout import pack_uris
    from pose.files import steplog

    steplog.setup()
    return pack_uris(coco_uri, num_shards)[split]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def shard_op(
    coco: Input[Dataset],
    split: str,
    num_shards: int,
    shard_index: int,
    shards: Output[Dataset],
    crop_size: int = 512,
    dataset_info: Input[Artifact] = None,
):
    """coco: convert's whole output, or one pack (then shard_index -1: the pack's own).
    dataset_info: convert's summary, checked against num_shards. The output's metadata holds
    scalars only: every reader of the shards carries it, per shard, in its one-argument executor
    input (docs/CLUSTER.md)."""
    import os

    from components.shard import shard
    from pose.data import packs
    from pose.files import steplog

    steplog.setup()
    if dataset_info is not None:
        packs.check_shard_inputs(dataset_info.path, **{split: num_shards})
    index = shard(
        coco.path,
        shards.path,
        split,
        num_shards,
        None if shard_index < 0 else shard_index,
        crop_size,
    )
    shards.metadata.update(
        {
            key: index[key]
            for key in ("split", "num_shards", "num_examples", "skipped_unlabelled", "crop_size")
        }
    )
    shards.metadata["shard_files"] = len(index["shards"])
    # What KFP's launcher copied into this pod for the input: every file under its URI.
    shards.metadata["input_bytes"] = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(coco.path)
        for name in names
    )


# ---- training ----------------------------------------------------------------------------------


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_op(
    train_shards: Input[list[Dataset]],
    valid_shards: Input[list[Dataset]],
    dataset_info: Input[Artifact],
    config: str,
    overrides: str,
    model: Output[Model],
    gpu_count: int = 0,
    allow_cpu: bool = False,
    checkpoint_uri: str = "",
    s3_settings: str = "",
):
    """gpu_count: the GPUs the pod asked for; with none visible to TensorFlow, train fails unless allow_cpu.
    checkpoint_uri (gs://, s3://, minio://…): checkpoints kept there as they are written; a retried
    pod resumes from them."""
    from components.train import train
    from pipeline import cluster
    from pose.data import packs
    from pose.files import steplog
    from pose.training.config import parse_overrides

    steplog.setup()
    if cluster.on_kfp_cluster():
        cluster.use_mounted_gcs_key()
        cluster.use_s3_settings(s3_settings)
    packs.check_shard_inputs(dataset_info.path, train=len(train_shards), valid=len(valid_shards))
    metadata = train(
        config,
        [shards.path for shards in train_shards],
        model.path,
        valid_dirs=[shards.path for shards in valid_shards],
        overrides=parse_overrides(overrides),
        expect_gpus=gpu_count,
        allow_cpu=allow_cpu,
        checkpoint_uri=checkpoint_uri,
    )
    model.metadata.update(
        {
            key: metadata[key]
            for key in (
                "model",
                "input_size",
                "output_stride",
                "num_keypoints",
                "steps",
                "epochs",
                "final_loss",
                "images_per_second",
                "pckh",
                "replicas",
                "global_batch_size",
                "parameters",
                "flops",
                "resumed_from_step",
            )
        }
    )


# ---- export ------------------------------------------------------------------------------------


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def freeze_op(model: Input[Model], frozen: Output[Model], export_contract: str = "auto"):
    from components.freeze import freeze
    from pose.files import steplog

    steplog.setup()
    info = freeze(model.path, frozen.path, export_contract=export_contract)
    frozen.metadata.update(
        {
            key: info[key]
            for key in ("model", "input_size", "output_size", "output_name", "max_abs_diff")
        }
    )
    frozen.metadata["contract"] = info["contract"]["name"]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tflite_op(
    frozen: Input[Model],
    representative: Input[list[Dataset]],
    dataset_info: Input[Artifact],
    variants: str,
    tflite_models: Output[Model],
    int8_io: bool = False,
):
    from components.tflite import convert_to_tflite
    from pose.data import packs
    from pose.files import steplog

    steplog.setup()
    packs.check_shard_inputs(dataset_info.path, train=len(representative))
    result = convert_to_tflite(
        frozen.path,
        tflite_models.path,
        [v.strip() for v in variants.split(",")],
        representative_dirs=[d.path for d in representative],
        int8_io=int8_io,
    )
    tflite_models.metadata["model"] = result["model"]
    for variant, metadata in result["variants"].items():
        for key in ("size_bytes", "max_abs_diff", "mean_abs_diff"):
            tflite_models.metadata[f"{variant}_{key}"] = metadata[key]


# ---- evaluation and publishing -----------------------------------------------------------------


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_op(
    tflite_models: Input[Model],
    valid_shards: Input[list[Dataset]],
    dataset_info: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    results: Output[Artifact],
    flip_test: bool = False,
    refine: str = "dark",
    latency_runs: int = 50,
    data_source: str = "",
):
    """data_source: the run's source URI, which the report names as where the validation people
    came from (rendered figures for synthetic://)."""
    import os
    import shutil

    from components.evaluate import evaluate
    from pose.data import packs
    from pose.evaluation.results import metric_figures
    from pose.files import steplog

    steplog.setup()
    packs.check_shard_inputs(dataset_info.path, valid=len(valid_shards))
    outcome = evaluate(
        tflite_models.path,
        [d.path for d in valid_shards],
        results.path,
        flip_test=flip_test,
        refine=refine,
        latency_runs=latency_runs,
        data_source=data_source or None,
    )
    os.makedirs(os.path.dirname(report.path), exist_ok=True)
    shutil.copyfile(f"{results.path}/report.html", report.path)
    for name, value in metric_figures(outcome).items():
        metrics.log_metric(name, value)
    results.metadata["people"] = outcome["settings"]["num_people"]


@dsl.component(base_image=SLIM_IMAGE, install_kfp_package=False)
def publish_op(
    tflite_models: Input[Model],
    report: Input[HTML],
    results: Input[Artifact],
    destination: str,
    variant: str,
    published: Output[Artifact],
    s3_settings: str = "",
):
    from components.publish import publish
    from pipeline import cluster
    from pose.files import steplog

    steplog.setup()
    if cluster.on_kfp_cluster():
        cluster.refuse_local_paths({"publish_uri": destination}, "checked in the publish pod")
        cluster.use_mounted_gcs_key()
        cluster.use_s3_settings(s3_settings)
    manifest = publish(
        tflite_models.path,
        report.path,
        results.path,
        destination,
        variant,
        staging_dir=published.path,
    )
    published.metadata.update(
        {
            "model": manifest["model"],
            "variant": manifest["variant"],
            "destination": manifest["destination"],
            "files": len(manifest["uris"]),
        }
    )
