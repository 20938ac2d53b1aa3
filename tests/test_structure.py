"""The layering: step modules are plain Python with one CLI convention, KFP lives in pipeline/."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = (
    "download",
    "convert",
    "fanout",
    "shard",
    "train",
    "freeze",
    "tflite",
    "evaluate",
    "publish",
)


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_compiling_the_pipeline_imports_neither_tensorflow_nor_the_steps(tmp_path):
    modules = _modules_after(
        f"from pipeline.compile import compile_pipeline\n"
        f"compile_pipeline({str(tmp_path / 'p.yaml')!r})"
    )
    assert (tmp_path / "p.yaml").is_file()
    assert "tensorflow" not in modules and "keras" not in modules
    assert not [m for m in modules if m.startswith("components.")]


@pytest.mark.parametrize("step", STEPS)
def test_step_modules_do_not_import_kfp(step):
    modules = _modules_after(f"import components.{step}")
    assert not [m for m in modules if m == "kfp" or m.startswith("kfp.")]


def test_every_step_cli_ends_a_failure_in_one_line_with_exit_code_1(tmp_path):
    missing = tmp_path / "absent"
    cases = {
        "download": ["--source", str(missing), "--output", str(tmp_path / "raw")],
        "convert": ["--input", str(missing), "--output", str(tmp_path / "coco")],
        "fanout": ["--num-shards", "0"],
        "freeze": ["--model", str(missing), "--output", str(tmp_path / "frozen")],
        "publish": [
            "--models",
            str(missing),
            "--report",
            str(missing),
            "--results",
            str(missing),
            "--destination",
            str(tmp_path / "out"),
        ],
    }
    for step, args in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", f"components.{step}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1, (step, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"{step}: error: "), (step, done.stderr)
        assert "Traceback" not in done.stderr, (step, done.stderr)


def test_verbose_adds_the_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "components.fanout", "--num-shards", "0", "--verbose"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.strip().splitlines()[-1].startswith(
        "fanout: error: num_shards=0"
    )


def test_a_library_error_is_named_by_its_type():
    from components import cli

    assert cli.describe(KeyError("x")) == "KeyError: 'x'"
    assert (
        cli.describe(importlib.import_module("components.fanout").FanoutError("bad\n  count"))
        == "bad count"
    )


def test_fanout_and_shard_log_their_summary_from_the_plain_function(caplog):
    import logging

    from components.fanout import shard_indices

    with caplog.at_level(logging.INFO):
        assert shard_indices(3) == [0, 1, 2]
    assert any(
        "done in" in record.getMessage() for record in caplog.records if record.name == "fanout"
    )


def test_the_kfp_components_spell_the_steps_defaults():
    """A KFP body runs as its function's source alone, so pipeline/ops.py must write defaults as
    literals; they are the owners' values."""
    import inspect

    from pipeline import ops
    from pose.codec import DEFAULT_REFINE
    from pose.models import contract

    def default(op, name):
        return inspect.signature(op.python_func).parameters[name].default

    assert default(ops.freeze_op, "export_contract") == contract.AUTO
    assert default(ops.evaluate_op, "refine") == DEFAULT_REFINE
    assert (
        default(ops.shard_op, "crop_size") == importlib.import_module("components.shard").CROP_SIZE
    )
