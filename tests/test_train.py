"""train: it learns on the synthetic set, its config is checked, it resumes, it runs on two devices."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pose.training.config import ConfigError, load_config, parse_overrides
from tests.conftest import REPO, TINY_CONFIG

# The smallest network that still has every part: for the wiring tests, not for accuracy.
WIRING = {
    "input_size": 64,
    "width": 0.35,
    "num_stages": 1,
    "batch_size": 4,
    "checkpoint_every": 2,
    "log_every": 1,
    "summary_every": 2,
    "pred_image_on_tensorboard": False,
}


@pytest.mark.slow
def test_it_learns(trained_model):
    """The shared tiny model (conftest, experiments/tiny.yaml): loss falls, and PCKh@0.5 on the valid
    split ends far above the same network's before training (history step 0)."""
    metadata = json.loads((trained_model / "train_metadata.json").read_text())
    losses = [entry["loss"] for entry in metadata["history"] if "loss" in entry]
    assert losses[-1] < 0.6 * losses[0], losses
    untrained = metadata["history"][0]
    assert untrained["step"] == 0 and metadata["history"][-1]["pckh"] == metadata["pckh"]
    assert metadata["pckh"] >= 0.2 and metadata["pckh"] >= untrained["pckh"] + 0.15, (
        metadata["pckh"],
        untrained,
    )

    config = load_config(trained_model / "config.yaml")
    assert metadata["steps"] == config.max_steps and metadata["images_per_second"] > 0
    assert {"model", "input_size", "output_stride", "num_keypoints", "epochs", "final_loss"} <= set(
        metadata
    )
    assert (trained_model / "model.keras").is_file()
    assert any((trained_model / "checkpoints").glob("ckpt-*.index"))
    assert any(
        path.stat().st_size > 0 for path in (trained_model / "logs").glob("events.out.tfevents.*")
    )


def test_config_errors_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mv2_cpm\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'learning_rate'"):
        load_config(str(bad))
    bad.write_text("model: mv2_cpm\nbatch_size: eight\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'batch_size' must be int, got str"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="overrides.*'max_steps' must be int or null, got float"):
        load_config(str(TINY_CONFIG), {"max_steps": 2.5})
    with pytest.raises(ConfigError, match="mv2_hourglass has output stride 4"):
        load_config("model: mv2_hourglass\nscale: 2\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config("experiments/no_such_config.yaml")
    with pytest.raises(ConfigError, match="'stage_kernel_size' = 4: must be odd"):
        load_config(str(TINY_CONFIG), {"stage_kernel_size": 4})
    with pytest.raises(
        ConfigError, match="'stage_expansion' = 3: mv2_hourglass has no such option"
    ):
        load_config("model: mv2_hourglass\nstage_expansion: 3\n")


def test_cpm_structure_options_reach_the_network():
    config = load_config(str(TINY_CONFIG), {"stage_kernel_size": 5, "backbone_expansion": 4})
    assert config.architecture_options() == {
        "backbone_expansion": 4,
        "stage_expansion": None,
        "stage_channels": None,
        "stage_kernel_size": 5,
        "seed_layers": False,
    }
    assert load_config("model: mv2_hourglass\n").architecture_options() == {"seed_layers": False}


def test_seed_keys_and_overrides():
    seed_cfg = load_config(
        textwrap.dedent("""\
        model: mv2_cpm
        batchsize: 5
        input_width: 224
        input_height: 224
        n_kpoints: 14
        scale: 2
        decay_step: 20000
        per_saved_model_step: 2000
        per_update_tensorboard_step: 500
        modelpath: /root/hdd/trained/mv2_cpm/models
    """)
    )
    assert (
        seed_cfg.batch_size,
        seed_cfg.input_size,
        seed_cfg.decay_steps,
        seed_cfg.checkpoint_every,
        seed_cfg.summary_every,
    ) == (5, 224, 20000, 2000, 500)
    assert seed_cfg.resolved().width == 0.75 and seed_cfg.resolved().num_stages == 6
    assert parse_overrides("lr=0.01,augmentation={scale: [0.9, 1.1]},width=null") == {
        "lr": 0.01,
        "augmentation": {"scale": [0.9, 1.1]},
        "width": None,
    }
    assert (
        parse_overrides('{"max_steps": 3}') == parse_overrides(["max_steps=3"]) == {"max_steps": 3}
    )
    for name in (
        "mv2_cpm_192",
        "mv2_cpm_192_tiny",
        "mv2_hourglass_192",
        "local",
        "local_scratch",
        "tiny",
    ):
        load_config(f"experiments/{name}.yaml")
    local_text = (
        REPO / "experiments" / "local.yaml"
    ).read_text()  # the pipeline passes configs outside the image as text
    assert len(local_text) > 255 and load_config(local_text) == load_config(
        "experiments/local.yaml"
    )
    one_line = (
        "{model: mv2_cpm, warmup_steps: 10, batch_size: 16, sigma: 6.0, shuffle_buffer: 1024, seed: 0, "
        "decay_rate: 0.95, decay_steps: 10000, staircase: true, max_epoch: 1000, checkpoint_every: 2000, "
        "keep_checkpoints: 3, log_every: 100, summary_every: 500, eval_every: 0, lr: 0.002}"
    )  # no key twice
    assert len(one_line) > 255 and load_config(one_line).lr == 0.002


@pytest.mark.slow
def test_two_devices_then_resume_on_one(train_shards, tmp_path):
    """Two logical CPUs under MirroredStrategy (a subprocess: devices are fixed when TF starts) train
    3 steps with a checkpoint every 2; then, like a preempted pod that comes back on other hardware,
    one device resumes from step 3, optimizer state included, and stops at step 5."""
    output = tmp_path / "model"
    first_overrides = {**WIRING, "max_steps": 3}
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from components.train import train
        overrides = {first_overrides!r}
        print(json.dumps(train({str(TINY_CONFIG)!r}, [{str(train_shards)!r}], {str(output)!r}, overrides=overrides)))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads(result.stdout.strip().splitlines()[-1])
    assert first["replicas"] == 2 and first["global_batch_size"] == 2 * WIRING["batch_size"]
    assert first["steps"] == 3

    from components.train import train

    second = train(
        str(TINY_CONFIG), [str(train_shards)], str(output), overrides={**WIRING, "max_steps": 5}
    )
    assert second["resumed_from_step"] == 3 and second["steps"] == 5 and second["replicas"] == 1
    assert [entry["step"] for entry in second["history"]] == [1, 2, 3, 4, 5]
    assert json.loads((output / "train_metadata.json").read_text())["steps"] == 5


def test_the_time_budget_counts_earlier_runs():
    from pose.training.budget import TimeBudget, duration

    assert not TimeBudget(None, spent_before=1e6).spent()
    spent = TimeBudget(5.0, spent_before=301.0)  # the earlier runs used up the five minutes
    assert spent.spent() and spent.elapsed() >= 301.0
    fresh = TimeBudget(5.0, spent_before=150.0)
    assert not fresh.spent() and 150.0 <= fresh.elapsed() < 180.0
    assert (duration(3725), duration(184), duration(float("nan"))) == ("1h02m", "3m04s", "?")
