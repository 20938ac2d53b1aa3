"""Shared fixtures: one small synthetic data set pushed through the real steps once per test session.

Each fixture calls a step's plain function (the same one its CLI and KFP component call), so a
test of a later step runs on what the earlier steps really produce.
"""

import builtins
import logging
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
# The seed's released files: $POSE_ANCHORS_DIR (as evaluate reads it), else the repository's anchors/.
ANCHORS = Path(os.environ.get("POSE_ANCHORS_DIR") or REPO / "anchors")
TINY_CONFIG = REPO / "experiments" / "tiny.yaml"
# Overrides of TINY_CONFIG for trainings whose checkpoints a test reads: 64 px, a checkpoint every step.
TINY_TRAINING = {
    "input_size": 64,
    "width": 0.35,
    "batch_size": 2,
    "checkpoint_every": 1,
    "log_every": 1,
    "summary_every": 100,
    "warmup_steps": 0,
    "pred_image_on_tensorboard": False,
}

SYNTHETIC_SOURCE = "synthetic://160?seed=7"


@pytest.fixture(autouse=True)
def print_left_as_found():
    """kfp.local swaps builtins.print for each task, and its ParallelFor threads can leave it swapped for
    good (pipeline/kfp_local_patches.py); every later print then comes indented. A test that leaves print
    replaced fails itself, instead of a later test that reads what was printed."""
    before = builtins.print
    yield
    if builtins.print is not before:
        builtins.print = before
        pytest.fail(
            "this test left builtins.print replaced: a kfp.local run with a ParallelFor outside "
            "pipeline.kfp_local_patches.one_task_at_a_time?"
        )


def load_pipeline_yaml(path: Path) -> tuple[dict, dict]:
    """A compiled pipeline file: (pipeline spec, platform spec)."""
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return pipeline_spec, platform_spec


@pytest.fixture(scope="session")
def compiled_package(tmp_path_factory) -> Path:
    """The pipeline compiled once for the session (tests read it, none changes it)."""
    from pipeline.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")


@pytest.fixture(scope="session")
def compiled(compiled_package) -> tuple[dict, dict]:
    """The session's compiled pipeline, parsed."""
    return load_pipeline_yaml(compiled_package)


@pytest.fixture()
def cli_logging():
    """main() points the root logger at the stderr of its time (capsys's); later tests need it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real S3 server (SeaweedFS) for the session; AWS_ENDPOINT_URL and the credentials point
    at it while it runs (tests/s3.py)."""
    from tests.s3 import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(params=["gs", "s3"])
def object_store(request):
    """The same test against gs:// (a fresh fake-gcs-server) and s3:// (the session's SeaweedFS);
    yields tests/stores.py's face of that store."""
    from tests.stores import GcsTestStore, S3TestStore

    if request.param == "gs":
        from tests.gcs import fake_gcs

        with fake_gcs():
            yield GcsTestStore()
    else:
        request.getfixturevalue("seaweedfs")
        yield S3TestStore()


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    from components.download import download

    out = tmp_path_factory.mktemp("raw") / "raw"
    download(SYNTHETIC_SOURCE, str(out))
    return out


@pytest.fixture(scope="session")
def coco_dataset(synthetic_raw, tmp_path_factory) -> Path:
    from components.convert import convert

    out = tmp_path_factory.mktemp("coco") / "coco"
    convert(str(synthetic_raw), str(out))
    return out


@pytest.fixture(scope="session")
def train_shards(coco_dataset, tmp_path_factory) -> Path:
    from components.shard import shard

    out = tmp_path_factory.mktemp("shards") / "train"
    shard(str(coco_dataset), str(out), split="train", num_shards=2)
    return out


@pytest.fixture(scope="session")
def valid_shards(coco_dataset, tmp_path_factory) -> Path:
    from components.shard import shard

    out = tmp_path_factory.mktemp("shards") / "valid"
    shard(str(coco_dataset), str(out), split="valid", num_shards=1)
    return out


@pytest.fixture(scope="session")
def trained_model(train_shards, valid_shards, tmp_path_factory) -> Path:
    """A tiny model trained briefly: for the steps after train, not for accuracy."""
    from components.train import train

    out = tmp_path_factory.mktemp("model") / "model"
    train(str(TINY_CONFIG), [str(train_shards)], str(out), valid_dirs=[str(valid_shards)])
    return out


@pytest.fixture(scope="session")
def frozen_model(trained_model, tmp_path_factory) -> Path:
    from components.freeze import freeze

    out = tmp_path_factory.mktemp("frozen") / "frozen"
    freeze(str(trained_model), str(out))
    return out


@pytest.fixture(scope="session")
def tflite_models(frozen_model, train_shards, tmp_path_factory) -> Path:
    from components.tflite import convert_to_tflite

    out = tmp_path_factory.mktemp("tflite") / "tflite"
    convert_to_tflite(
        str(frozen_model),
        str(out),
        variants=["fp32", "fp16", "int8-dynamic", "int8"],
        representative_dirs=[str(train_shards)],
    )
    return out
