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
from pose.files.remote_checkpoints import MARKER
from pose.files.storage import read_text
from tests.conftest import REPO, TINY_CONFIG

TFJOB = REPO / "docs" / "tfjob.yaml"
FIRST_STEPS, STEPS, EVERY = 4, 6, 2


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(shards, outputs, *flags: str) -> list[tuple[int, str]]:
    """Runs the train CLI as one worker process per output folder (worker 0 the chief), all at once;
    returns (exit code, log) of each once all have ended, and asserts none was still running after 10 minutes."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(len(outputs))]
    processes = []
    for index, output in enumerate(outputs):
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        command = [
            sys.executable,
            "-m",
            "components.train",
            "--config",
            str(TINY_CONFIG),
            "--data",
            str(shards),
            "--output",
            str(output),
            "--set",
            f"checkpoint_every={EVERY}",
            "--set",
            f"log_every={EVERY}",
            "--set",
            "summary_every=1000",
            "--set",
            "pred_image_on_tensorboard=false",
            *flags,
        ]
        processes.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for process in processes:
            logs.append(
                process.communicate(timeout=600)[0]
            )  # a hang fails here instead of waiting forever
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return [(process.returncode, log) for process, log in zip(processes, logs)]


def marker_step(uri: str) -> int:
    text = read_text(f"{uri}/{MARKER}")
    return -1 if text is None else json.loads(text)["step"]


@pytest.mark.slow
# On S3 only, the store KFP ships: what two workers add is the replicas' agreement on one checkpoint,
# which no store takes part in; reading and writing checkpoints on gs:// and s3:// alike is
# test_train_resume.py's, test_checkpoints.py's and the lock tests' (test_reliability.py).
@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_two_workers_train_together_resume_together_from_the_bucket_and_refuse_without_it(
    object_store, train_shards, tmp_path
):
    """Two workers train with a bucket; two new pods (fresh folders) resume both from the bucket's newest
    checkpoint and train on; resuming without the bucket (the chief's folder has checkpoints, the other
    worker's scratch none) stops both workers with the reason instead of hanging."""
    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/multi-worker"
    first = [tmp_path / "first" / f"worker-{index}" for index in range(2)]
    for index, (code, log) in enumerate(
        run_workers(
            train_shards, first, "--checkpoint-uri", uri, "--set", f"max_steps={FIRST_STEPS}"
        )
    ):
        assert code == 0, f"worker {index} failed:\n{log[-4000:]}"
        assert "2 replicas over 2 workers" in log, log[-4000:]
        assert "all 2 replicas resume from step 0" in log, log[-4000:]
        assert f"step {FIRST_STEPS}/{FIRST_STEPS}" in log, log[-4000:]
    chief, other = first
    metadata = json.loads((chief / "train_metadata.json").read_text())
    assert (chief / "model.keras").is_file()
    assert (
        metadata["replicas"] == 2
        and metadata["steps"] == FIRST_STEPS
        and metadata["resumed_from_step"] == 0
    )
    assert (
        metadata["global_batch_size"] == 2 * yaml.safe_load(TINY_CONFIG.read_text())["batch_size"]
    )
    assert math.isfinite(metadata["final_loss"]) and metadata["final_loss"] > 0
    assert not (other / "model.keras").exists()  # only the chief writes the model folder
    assert marker_step(uri) == FIRST_STEPS  # and uploads

    second = [tmp_path / "second" / f"worker-{index}" for index in range(2)]
    for index, (code, log) in enumerate(
        run_workers(train_shards, second, "--checkpoint-uri", uri, "--set", f"max_steps={STEPS}")
    ):
        assert code == 0, f"worker {index} failed:\n{log[-4000:]}"
        assert f"resuming from the checkpoint of step {FIRST_STEPS} in {uri}" in log, log[-4000:]
        assert f"all 2 replicas resume from step {FIRST_STEPS}" in log, log[-4000:]
        assert f"step {STEPS}/{STEPS}" in log and f"step {EVERY}/" not in log, log[-4000:]
    metadata = json.loads((second[0] / "train_metadata.json").read_text())
    assert metadata["resumed_from_step"] == FIRST_STEPS and metadata["steps"] == STEPS
    assert metadata["history"][0]["step"] == EVERY  # the first run's curve came with the checkpoint
    assert marker_step(uri) == STEPS

    for index, (code, log) in enumerate(
        run_workers(train_shards, second, "--set", f"max_steps={STEPS + EVERY}")
    ):
        assert code == 1, f"worker {index} did not refuse:\n{log[-4000:]}"
        assert (
            f"the workers would resume from different steps (per replica, in worker order: [{STEPS}, 0]); "
            f"without --checkpoint-uri a multi-worker run cannot resume"
        ) in log, log[-4000:]


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
        (container,) = [
            c for c in spec["template"]["spec"]["containers"] if c["name"] == "tensorflow"
        ]
        repository, _, tag = container["image"].rpartition(":")
        assert repository == images.GPU_IMAGE.rpartition(":")[0] and tag == "TAG", (
            role
        )  # the user fills in TAG
        assert container["command"] == ["python", "-m", "components.train"], role
        args = parser.parse_args(
            container["args"]
        )  # an unknown flag or a missing required one: SystemExit
        assert (REPO / args.config).is_file(), args.config
        assert args.expect_gpus == int(container["resources"]["limits"]["nvidia.com/gpu"]), role
        assert args.output and args.data
        # Restarted pods resume only from the bucket (every worker reads it), so a restarting job needs one.
        assert spec["restartPolicy"] in ("OnFailure", "ExitCode", "Always", "Never"), role
        if spec["restartPolicy"] != "Never":
            assert args.checkpoint_uri.startswith("gs://"), role


def test_the_tfjob_workers_share_one_output_and_data_volume():
    """Every worker reads the same shards and the chief's model must outlive its pod: a shared claim."""
    for role, spec in tfjob_replica_specs().items():
        pod = spec["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "tensorflow"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert claims and all(name in mounts for name in claims), role
        assert shm and mounts[shm[0]["name"]] == "/dev/shm", role
        args = train_cli_parser().parse_args(container["args"])
        for path in [args.output, *args.data]:
            assert any(path.startswith(mounts[name] + "/") for name in claims), (role, path)
