"""Beyond one node: the train CLI under MultiWorkerMirroredStrategy for real (two worker processes talking
gRPC on 127.0.0.1, as two TFJob pods would), and the TFJob manifest in docs/ checked against that CLI."""
import argparse
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import yaml

from pipeline import images
from tests.conftest import REPO, TINY_CONFIG

TFJOB = REPO / "docs" / "tfjob.yaml"
STEPS = 6


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_train_together_and_the_chief_writes_the_model(train_shards, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    outputs = [tmp_path / f"worker-{index}" for index in range(2)]
    processes = []
    for index, output in enumerate(outputs):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "components.train", "--config", str(TINY_CONFIG), "--data", str(train_shards),
                   "--output", str(output), "--set", f"max_steps={STEPS}", "--set", "log_every=2",
                   "--set", "checkpoint_every=3", "--set", "summary_every=1000",
                   "--set", "pred_image_on_tensorboard=false"]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=600)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for index, (process, log) in enumerate(zip(processes, logs)):
        assert process.returncode == 0, f"worker {index} failed:\n{log[-4000:]}"
        assert "2 replicas over 2 workers" in log, log[-4000:]
        assert f"step {STEPS}/{STEPS}" in log, log[-4000:]

    chief, other = outputs
    metadata = json.loads((chief / "train_metadata.json").read_text())
    assert (chief / "model.keras").is_file()
    assert metadata["replicas"] == 2 and metadata["steps"] == STEPS
    assert metadata["global_batch_size"] == 2 * yaml.safe_load(TINY_CONFIG.read_text())["batch_size"]
    assert math.isfinite(metadata["final_loss"]) and metadata["final_loss"] > 0
    assert not (other / "model.keras").exists()  # only the chief writes the model folder


def train_cli_parser() -> argparse.ArgumentParser:
    """The train CLI's own argparse parser, as components.train.main builds it (captured, not copied)."""
    from components import cli, train

    captured = {}

    def keep_parser(step, arguments, work, argv=None):
        captured["parser"] = arguments
        return 0

    original = cli.run
    cli.run = keep_parser
    try:
        train.main([])
    finally:
        cli.run = original
    return captured["parser"]


def tfjob_replica_specs() -> dict:
    manifest = yaml.safe_load(TFJOB.read_text())
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "TFJob"
    return manifest["spec"]["tfReplicaSpecs"]


def test_the_tfjob_manifest_runs_the_train_cli_of_the_gpu_image():
    specs = tfjob_replica_specs()
    assert set(specs) <= {"Chief", "Worker", "PS", "Evaluator"} and "Worker" in specs
    parser = train_cli_parser()
    for role, spec in specs.items():
        container, = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "tensorflow"]
        repository, _, tag = container["image"].rpartition(":")
        assert repository == images.GPU_IMAGE.rpartition(":")[0] and tag == "TAG", role  # the user fills in TAG
        assert container["command"] == ["python", "-m", "components.train"], role
        args = parser.parse_args(container["args"])  # an unknown flag or a missing required one: SystemExit
        assert (REPO / args.config).is_file(), args.config
        assert args.expect_gpus == int(container["resources"]["limits"]["nvidia.com/gpu"]), role
        assert args.output and args.data


def test_the_tfjob_workers_share_one_output_and_data_volume():
    """Every worker reads the same shards and the chief's model must outlive its pod: a shared claim."""
    for role, spec in tfjob_replica_specs().items():
        pod = spec["template"]["spec"]
        container, = [c for c in pod["containers"] if c["name"] == "tensorflow"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert claims and all(name in mounts for name in claims), role
        assert shm and mounts[shm[0]["name"]] == "/dev/shm", role
        args = train_cli_parser().parse_args(container["args"])
        for path in [args.output, *args.data]:
            assert any(path.startswith(mounts[name] + "/") for name in claims), (role, path)
