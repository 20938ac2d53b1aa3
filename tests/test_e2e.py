"""The whole DAG under kfp.local, as `python -m pipeline run` runs it: a few hundred synthetic images, the
tiny training config, every TFLite variant, evaluation against the seed's models, and publishing to a real
fake-gcs-server (so the dsl.If branch runs too)."""
import json
import re
from pathlib import Path

import pytest

from pipeline.local import run_local
from tests.gcs import fake_gcs, make_bucket

SOURCE = "synthetic://200?seed=11"
VARIANTS = ("fp32", "int8")  # a float and the fully quantised (calibrated) path; the others convert alike
STEPS = ("cluster-settings", "download", "convert", "fanout-train", "fanout-valid", "shard-train", "shard-valid",
         "train", "freeze", "tflite", "evaluate", "publish")


@pytest.mark.slow
def test_the_whole_pipeline_runs_locally_and_publishes(tmp_path, capsys):
    with fake_gcs():
        bucket = make_bucket("e2e")
        summary = run_local(source=SOURCE, config="experiments/tiny.yaml", pipeline_root=str(tmp_path / "runs"),
                            overrides=["max_steps=40", "summary_every=1000", "checkpoint_every=1000",
                                       "pred_image_on_tensorboard=false"],
                            params={"num_shards": 2, "tflite_variants": ",".join(VARIANTS), "latency_runs": 3,
                                    "publish_uri": "gs://e2e/pose/run-1", "publish_variant": "best",
                                    "checkpoint_uri": "gs://e2e/checkpoints/run-1"})
        published = {blob.name.rsplit("/", 1)[-1] for blob in bucket.list_blobs(prefix="pose/run-1/")}
        checkpoint = json.loads(bucket.blob("checkpoints/run-1/checkpoint.json").download_as_bytes())
    out = capsys.readouterr().out

    assert {step["step"] for step in summary["steps"]} == set(STEPS)
    assert {s["step"]: s["tasks"] for s in summary["steps"]}["shard-train"] == 2
    assert json.loads(Path(summary["run_dir"], "summary.json").read_text()) == summary
    trained = json.loads(Path(summary["run_dir"], "train-op", "model", "train_metadata.json").read_text())
    assert trained["steps"] == 40  # the --set override reached train
    assert checkpoint["step"] == 40  # checkpoint_uri reached train: its last checkpoint is in the bucket

    models = summary["headline"]["models"]
    assert {name.rsplit("_", 1)[-1] for name in models} == set(VARIANTS)
    assert sorted(Path(p).name for p in summary["models"]) == sorted(f"{name}.tflite" for name in models)
    for name, figures in models.items():
        assert 0.0 <= figures["pckh"] <= 1.0, name
        assert 0.0 <= figures["ap"] <= 1.0, name
        assert figures["latency_ms"] > 0 and figures["size_mb"] > 0, name
    assert summary["headline"]["people"] > 0
    for figures in summary["headline"]["seed"].values():
        assert figures["latency_ms"] > 0
    assert any(key.endswith("_pckh") for key in summary["metrics"])  # the KFP Metrics artifact's figures

    report = Path(summary["report"]).read_text()
    assert "<table>" in report and "PCKh@0.5" in report
    assert Path(summary["outputs"]["report"]).read_text() == report
    assert {"MODEL_CARD.md", "published.json", "report.html", "results.json"} <= published
    assert sum(name.endswith(".tflite") for name in published) == 1

    assert re.search(r"^train\s+1\s+[\d.]+\s+[\d.]+$", out, re.MULTILINE)  # the per-step time table
    assert "headline figures" in out and summary["report"] in out
