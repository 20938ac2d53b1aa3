"""Issue 21, finding 5: reproducible training. The same config, data and seed give the same weights,
bit for bit, on one machine: a run of a few hundred steps on two threads, and a run on the two-device
strategy (pose/training/reproducibility.py). A model is defined by its steps: the time budget only
stops a run, and says so (pose/training/budget.py).

Each pair of runs trains at the same time, in two processes (devices and thread counts are fixed when
TensorFlow starts), so that their timings differ as much as the machine makes them: nothing that
depends on the clock or on which thread finishes first may reach the weights. The configs are the
smallest the config allows (32 px input, width 0.35, one stage, batch 2) on the shared synthetic
shards; a cosine schedule and a max_minutes far beyond the run, which until issue 21 annealed the
schedule by the clock.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO, TINY_CONFIG

SMALLEST = {
    "input_size": 32,
    "width": 0.35,
    "num_stages": 1,
    "batch_size": 2,
    "lr_schedule": "cosine",
    "warmup_steps": 0,
    "max_minutes": 10.0,  # a safety stop far beyond the run; it must not shape the schedule
    "checkpoint_every": 1000,
    "log_every": 100,
    "summary_every": 1000,
    "pred_image_on_tensorboard": False,
}
THREADS = 2


def _train_twice_at_once(shards, tmp_path, overrides: dict, devices: int) -> list[dict]:
    """Two identical trainings in two processes started together, each with THREADS inter- and
    intra-op threads (what TensorFlow takes on a 2-core machine, set so on any machine) and
    `devices` logical CPUs (MirroredStrategy over them when 2). Returns their train_metadata."""
    script = textwrap.dedent(f"""
        import json, sys, tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads({THREADS})
        tf.config.threading.set_intra_op_parallelism_threads({THREADS})
        if {devices} > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * {devices})
        from components.train import train
        metadata = train({str(TINY_CONFIG)!r}, [{str(shards)!r}], sys.argv[1], overrides={overrides!r})
        print(json.dumps(metadata))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / name)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    results = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _assert_same_weights(first_dir, second_dir) -> int:
    """Every weight of the two model.keras files equal bit for bit; returns how many there are."""
    import keras

    first = keras.models.load_model(first_dir / "model.keras", compile=False)
    second = keras.models.load_model(second_dir / "model.keras", compile=False)
    differing = {
        a.path: float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(first.weights, second.weights, strict=True)
        if a.numpy().tobytes() != b.numpy().tobytes()
    }
    assert not differing, f"{len(differing)} of {len(first.weights)} weights differ: {differing}"
    return len(first.weights)


@pytest.mark.slow
def test_same_seed_same_weights_after_300_steps_on_two_threads(train_shards, tmp_path):
    overrides = {**SMALLEST, "max_steps": 300}
    first, second = _train_twice_at_once(train_shards, tmp_path, overrides, devices=1)
    for metadata in (first, second):
        assert metadata["steps"] == metadata["planned_steps"] == 300
        assert metadata["replicas"] == 1 and metadata["seed"] == 0
        assert not metadata["stopped_by_time_budget"]
    assert first["final_loss"] == second["final_loss"]
    assert _assert_same_weights(tmp_path / "first", tmp_path / "second") > 50


@pytest.mark.slow
def test_same_seed_same_weights_on_two_devices(train_shards, tmp_path):
    """MirroredStrategy over two logical CPUs: the replicas' gradients are summed across devices
    every step, in an order that must not depend on which replica finishes first."""
    overrides = {**SMALLEST, "max_steps": 50}
    first, second = _train_twice_at_once(train_shards, tmp_path, overrides, devices=2)
    for metadata in (first, second):
        assert metadata["replicas"] == 2 and metadata["steps"] == 50
    assert first["final_loss"] == second["final_loss"]
    _assert_same_weights(tmp_path / "first", tmp_path / "second")


def test_a_time_budget_that_stops_a_run_says_so(train_shards, tmp_path, caplog):
    """max_minutes is a safety stop: a run it ends before its planned steps warns that the model is
    not the one its config defines, and train_metadata.json records it, with the seed."""
    from components.train import train

    overrides = {**SMALLEST, "max_steps": 300, "max_minutes": 1e-4, "seed": 3}
    with caplog.at_level(logging.WARNING, logger="train"):
        metadata = train(
            str(TINY_CONFIG), [str(train_shards)], str(tmp_path / "model"), overrides=overrides
        )
    assert metadata["stopped_by_time_budget"] and metadata["seed"] == 3
    assert metadata["steps"] < metadata["planned_steps"] == 300
    written = json.loads((tmp_path / "model" / "train_metadata.json").read_text())
    assert written["stopped_by_time_budget"] and written["seed"] == 3
    assert "stopped early, so this is not the model its config defines" in caplog.text


@pytest.mark.parametrize("name", ["local", "local_scratch"])
def test_the_local_configs_are_defined_by_their_steps(name):
    """The main job's configs: their length is max_steps, and their schedule a function of steps
    that ends where the config says, whatever the clock (before issue 21 local_scratch's cosine
    annealed over max_minutes: 1,512 steps on one machine, 2,781 on a faster one)."""
    from pose.training.config import load_config
    from pose.training.learning_rate import learning_rate

    config = load_config(str(REPO / "experiments" / f"{name}.yaml"))
    assert config.max_steps, f"{name}.yaml: its length must be max_steps"
    assert config.seed == 0
    end = learning_rate(config, config.max_steps, config.max_steps)
    if config.lr_schedule == "cosine":
        assert end == pytest.approx(config.lr / 100)
    assert learning_rate(config, config.max_steps // 2, config.max_steps) >= end
