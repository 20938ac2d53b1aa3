"""Preemption-safe training against real object stores (fake-gcs-server for gs://, SeaweedFS for
s3://): train is killed (SIGKILL) once its first checkpoints are in the bucket, started again in an
emptied folder (a new pod of the same task), and resumes from the bucket's newest checkpoint; a
config of another model structure (in the bucket or in the local folder) is refused with both
named."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pose.files.remote_checkpoints import MARKER
from pose.files.storage import read_text
from tests.conftest import REPO, TINY_CONFIG

STEPS, EVERY = 15, 3


def train_command(shards, output, uri):
    return [
        sys.executable,
        "-m",
        "components.train",
        "--config",
        str(TINY_CONFIG),
        "--data",
        str(shards),
        "--output",
        str(output),
        "--checkpoint-uri",
        uri,
        "--set",
        f"max_steps={STEPS}",
        "--set",
        f"checkpoint_every={EVERY}",
        "--set",
        f"log_every={EVERY}",
        "--set",
        "summary_every=1000",
        "--set",
        "pred_image_on_tensorboard=false",
        "--set",
        "keep_checkpoints=2",
    ]


def marker_step(uri) -> int:
    text = read_text(f"{uri}/{MARKER}")
    return -1 if text is None else json.loads(text)["step"]


@pytest.mark.slow
# On S3 only, the store KFP ships: the kill and the resume are the checkpoint manifest's (one marker
# naming complete files), the same code for both stores; a gs:// bucket's checkpoints are read back
# and fallen back from in test_checkpoints.py, written in test_e2e.py, and locked in test_reliability.py.
@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_killed_training_resumes_from_the_bucket_in_a_fresh_folder(
    object_store, train_shards, tmp_path
):
    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/run-1"
    log_file = tmp_path / "first.log"
    with open(log_file, "w") as log:
        first = subprocess.Popen(
            train_command(train_shards, tmp_path / "pod", uri),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 600
    try:
        while marker_step(uri) < 2 * EVERY:  # two checkpoints have reached the bucket
            assert first.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint reached the bucket"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(60)
    assert first.returncode == -signal.SIGKILL
    saved = marker_step(uri)
    assert saved < STEPS, "the first run finished before it was killed"
    logged = [int(s) for s in re.findall(r"step (\d+)/\d+", log_file.read_text())]
    assert max(logged) - saved <= EVERY  # at most one checkpoint interval lost
    # The bucket holds only complete checkpoints, the newest keep_checkpoints of them.
    names = object_store.names(uri)
    marker = json.loads(object_store.get(f"{uri}/{MARKER}"))
    assert set(marker["files"]) <= set(names)
    assert len({n.split(".")[0] for n in names if n.startswith("ckpt-")}) <= 3

    # A retry of the KFP task: the same output path (the driver resolved it once), on an empty disk.
    # The killed attempt's lock on the prefix is still fresh; being this training's own, it is taken
    # over at once rather than after LOCK_STALE_SECONDS.
    shutil.rmtree(tmp_path / "pod")
    second = subprocess.run(
        train_command(train_shards, tmp_path / "pod", uri),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "held by an earlier attempt of this same training" in second.stderr
    assert f"resuming from the checkpoint of step {saved} in {uri}" in second.stderr
    metadata = json.loads((tmp_path / "pod" / "train_metadata.json").read_text())
    assert metadata["resumed_from_step"] == saved and metadata["steps"] == STEPS
    # The curve starts where the first pod's began: its history came with the checkpoint.
    assert metadata["history"][0]["step"] == EVERY and metadata["history"][-1]["step"] == STEPS
    assert marker_step(uri) == STEPS


@pytest.mark.slow
def test_a_checkpoint_of_another_model_structure_is_refused_naming_both(
    object_store, train_shards, tmp_path
):
    from components.train import TrainError, train

    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/other"
    object_store.put(
        f"{uri}/{MARKER}",
        json.dumps(
            {"step": 6, "files": [], "fingerprint": {"model": "mv2_hourglass", "input_size": 192}}
        ).encode(),
    )
    with pytest.raises(
        TrainError,
        match=rf"{uri}: its checkpoint \(step 6\) was written for "
        r"\{'input_size': 192, .*'model': 'mv2_hourglass'.*\}, but the config "
        r".*tiny.yaml gives \{'input_size': 96, .*'model': 'mv2_cpm'",
    ):
        train(
            str(TINY_CONFIG),
            [str(train_shards)],
            str(tmp_path / "model"),
            overrides={"max_steps": 2},
            checkpoint_uri=uri,
        )
    assert not (tmp_path / "model" / "model.keras").exists()


@pytest.mark.slow
def test_a_missing_bucket_is_named_before_training(object_store, train_shards, tmp_path):
    from components.train import train
    from pose.files.storage import StorageError

    uri = f"{object_store.scheme}://no-such-bucket/run-1"
    with pytest.raises(
        StorageError,
        match=rf"^{uri}: bucket 'no-such-bucket' does not exist \(or these credentials cannot",
    ):
        train(
            str(TINY_CONFIG),
            [str(train_shards)],
            str(tmp_path / "model"),
            overrides={"max_steps": 2},
            checkpoint_uri=uri,
        )
    assert not (tmp_path / "model" / "model.keras").exists()


@pytest.mark.slow
def test_a_local_folder_of_another_model_structure_is_refused_naming_both(train_shards, tmp_path):
    from components.train import TrainError, train
    from pose.files import outputs

    checkpoints = tmp_path / "model" / "checkpoints"
    checkpoints.mkdir(parents=True)
    outputs.mark(tmp_path / "model", "train")  # a train output: train resumes in it
    (checkpoints / "ckpt-4.index").write_bytes(b"")
    (checkpoints / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n'
    )
    (checkpoints / "fingerprint.json").write_text(
        json.dumps({"model": "mv2_cpm", "input_size": 192})
    )
    with pytest.raises(
        TrainError,
        match=r"model/checkpoints: its checkpoint \(step 4\) was written for "
        r"\{'input_size': 192.*\}, but the config .*tiny.yaml gives "
        r"\{'input_size': 96",
    ):
        train(
            str(TINY_CONFIG),
            [str(train_shards)],
            str(tmp_path / "model"),
            overrides={"max_steps": 2},
        )
