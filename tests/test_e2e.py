"""The whole DAG under kfp.local, as the README's command runs it (`python -m pipeline run --param
source=s3://… --param publish_uri=s3://…`), on one's own skeleton: a CVAT "COCO Keypoints 1.0" export
(one subset, zipped) of a 12-joint body set, read from a real S3 server (SeaweedFS, tests/s3.py),
with its keypoint-set YAML in the same bucket (`keypoints=s3://…`); the tiny training config
warm-started from the seed by joint name, every TFLite variant asked for, evaluation beside the
seed's models on the joints they share, publishing to that S3 server (so the dsl.If branch runs
too), and train's checkpoints in a real fake-gcs-server: both stores in one run. The AIC layout
runs end to end in tests/test_containers.py. The S3 secret key is in none of what the run prints,
publishes or leaves in its pipeline root."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from pose.data import keypoints
from pose.data.synthetic import render_coco
from tests.conftest import REPO
from tests.gcs import fake_gcs, make_bucket
from tests.s3 import SECRET_KEY
from tests.stores import S3TestStore

# One's own set, as a user writes it: COCO's 12 body joints without the face, partners left to the
# left_/right_ names.
BODY12 = {
    key: value
    for key, value in keypoints.preset("coco").subset(range(5, 17)).to_json().items()
    if key != "swap"
} | {"name": "body12"}
VARIANTS = (
    "fp32",
    "int8",
)  # a float and the fully quantised (calibrated) path; the others convert alike
STEPS = (
    "cluster-settings",
    "source-version",
    "download",
    "convert",
    "fanout-train",
    "fanout-valid",
    "shard-train",
    "shard-valid",
    "train",
    "freeze",
    "tflite",
    "evaluate",
    "publish",
)


@pytest.mark.slow
def test_the_whole_pipeline_runs_locally_and_publishes(seaweedfs, tmp_path):
    export = tmp_path / "export"
    render_coco(str(export), 200, 40, 11, keypoints.from_json(BODY12, "body12"), "cvat")
    with zipfile.ZipFile(tmp_path / "body.zip", "w") as bundle:
        for path in sorted(export.rglob("*")):
            bundle.write(path, path.relative_to(export).as_posix())
    s3 = S3TestStore()
    s3.make_bucket("e2e")
    s3.put("s3://e2e/cvat/body.zip", (tmp_path / "body.zip").read_bytes())
    s3.put("s3://e2e/sets/body12.yaml", yaml.safe_dump(BODY12).encode())
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--config",
        "experiments/tiny.yaml",
        "--pipeline-root",
        str(tmp_path / "runs"),
        "--source",
        "s3://e2e/cvat/body.zip",
    ]
    for override in (
        "max_steps=40",
        "summary_every=1000",
        "checkpoint_every=1000",
        "pred_image_on_tensorboard=false",
    ):
        command += ["--set", override]
    for param in (
        "num_shards=2",
        "keypoints=s3://e2e/sets/body12.yaml",
        f"tflite_variants={','.join(VARIANTS)}",
        "latency_runs=3",
        "publish_uri=s3://e2e/pose/run-1",
        "publish_variant=best",
        "checkpoint_uri=gs://e2e/checkpoints/run-1",
    ):
        command += ["--param", param]
    with fake_gcs():
        bucket = make_bucket("e2e")
        done = subprocess.run(
            command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=3000
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        checkpoint = json.loads(
            bucket.blob("checkpoints/run-1/checkpoint.json").download_as_bytes()
        )
    published = set(s3.names("s3://e2e/pose/run-1"))
    out = done.stdout
    [summary_file] = (tmp_path / "runs").glob("*/summary.json")
    summary = json.loads(summary_file.read_text())

    assert {step["step"] for step in summary["steps"]} == set(STEPS)
    assert {s["step"]: s["tasks"] for s in summary["steps"]}["shard-train"] == 2
    assert Path(summary["run_dir"]) == summary_file.parent
    # The version download's cache key follows: the archive's ETag and size, as the store gave them.
    size = (tmp_path / "body.zip").stat().st_size
    assert re.search(
        rf"source-version: s3://e2e/cvat/body\.zip: s3:[0-9a-f]{{32}}:{size}$", out, re.MULTILINE
    )
    trained = json.loads(
        Path(summary["run_dir"], "train-op", "model", "train_metadata.json").read_text()
    )
    assert trained["steps"] == 40  # the --set override reached train
    assert (
        checkpoint["step"] == 40
    )  # checkpoint_uri reached train: its last checkpoint is in the bucket

    models = summary["headline"]["models"]
    assert {name.rsplit("_", 1)[-1] for name in models} == set(VARIANTS)
    assert sorted(Path(p).name for p in summary["models"]) == sorted(
        f"{name}.tflite" for name in models
    )
    for name, figures in models.items():
        assert 0.0 <= figures["pckh"] <= 1.0, name
        assert 0.0 <= figures["ap"] <= 1.0, name
        assert figures["latency_ms"] > 0 and figures["size_mb"] > 0, name
    assert summary["headline"]["people"] > 0
    for figures in summary["headline"]["seed"].values():
        assert figures["latency_ms"] > 0
    assert any(
        key.endswith("_pckh") for key in summary["metrics"]
    )  # the KFP Metrics artifact's figures

    # The set travelled: from the YAML in the bucket through the shards to every model's .json.
    for name in models:
        meta = json.loads(Path(summary["run_dir"]).rglob(f"{name}.json").__next__().read_text())
        kept = keypoints.from_json(meta["keypoint_set"])
        assert kept.names == tuple(BODY12["keypoints"]) and kept.num_keypoints == 12, name
        assert kept.sigmas == tuple(BODY12["sigmas"]) and kept.head is None, name
        assert kept.flip_index == tuple(joint ^ 1 for joint in range(12)), name
        assert meta["num_keypoints"] == 12 and meta["contract"]["name"] != "seed", name
    results = json.loads(s3.get("s3://e2e/pose/run-1/results.json"))
    assert results["settings"]["pck_name"] == "PCK@0.2"  # no head segment: the box
    for anchor in results["anchors"].values():  # the seed's AIC models, on the 12 shared joints
        assert anchor["joints_scored"] == 12, anchor
    report = Path(summary["report"]).read_text()
    assert "<table>" in report and "PCK@0.2" in report and "PCKh" not in report
    card = s3.get("s3://e2e/pose/run-1/MODEL_CARD.md").decode()
    assert "the `body12` set, 12 joints" in card
    assert Path(summary["outputs"]["report"]).read_text() == report
    assert {"MODEL_CARD.md", "published.json", "report.html", "results.json"} <= published
    assert sum(name.endswith(".tflite") for name in published) == 1
    assert (
        json.loads(s3.get("s3://e2e/pose/run-1/published.json"))["destination"]
        == "s3://e2e/pose/run-1"
    )

    assert re.search(r"^train\s+1\s+[\d.]+\s+[\d.]+$", out, re.MULTILINE)  # the per-step time table
    assert "headline figures" in out and summary["report"] in out

    # Nothing secret where a user, a log collector or a reader of the bucket looks: the S3 secret
    # key was in every task's environment (tests/s3.py), and must be in none of the run's output,
    # the published files (published.json among them) or the run's own files (the artifacts and
    # their metadata, summary.json).
    assert SECRET_KEY not in done.stdout + done.stderr
    for name in published:
        assert SECRET_KEY.encode() not in s3.get(f"s3://e2e/pose/run-1/{name}"), name
    for path in Path(summary["run_dir"]).rglob("*"):
        assert not path.is_file() or SECRET_KEY.encode() not in path.read_bytes(), path
