"""A new user's first commands: dev.py on an unsupported Python, its compile and submit, mistyped and
abbreviated options, a missing config, and `python -m pipeline` outside .venv."""

import os
import platform
import subprocess
import sys

import pytest

import dev
from components import fanout
from pipeline.__main__ import main as pipeline_main
from pose.training.config import ConfigError, load_config

from .conftest import REPO


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# dev.py


def test_dev_refuses_an_unsupported_python_or_platform_in_one_line():
    assert dev.unsupported((3, 11, 7), "CPython", "Linux", "x86_64") is None
    assert dev.unsupported((3, 12, 1), "CPython", "Darwin", "arm64") == (
        "dev.py: needs CPython 3.11 on Linux x86-64 (the locks pin tensorflow-cpu wheels for it); "
        "this is CPython 3.12.1 on Darwin arm64"
    )
    for refused in (
        ((3, 10, 12), "CPython", "Linux", "x86_64"),
        ((3, 11, 9), "PyPy", "Linux", "x86_64"),
        ((3, 11, 9), "CPython", "Linux", "aarch64"),
        ((3, 11, 9), "CPython", "Windows", "AMD64"),
    ):
        message = dev.unsupported(*refused)
        assert message and "\n" not in message and "needs CPython 3.11 on Linux x86-64" in message


def test_dev_refuses_before_building_anything(monkeypatch, capsys):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(dev, "bootstrap", lambda: pytest.fail("bootstrap ran"))
    monkeypatch.setattr(sys, "argv", ["dev.py", "test"])
    assert dev.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dev.py: needs CPython 3.11 on Linux x86-64")
    assert f"on Darwin {platform.machine()}" in err


@pytest.mark.parametrize("command", ["compile", "submit"])
def test_dev_compile_and_submit_run_the_pipeline_command_in_the_venv(monkeypatch, command):
    ran = []
    monkeypatch.setattr(dev, "bootstrap", lambda: None)
    monkeypatch.setattr(
        dev.subprocess,
        "run",
        lambda argv, **kw: ran.append(argv) or subprocess.CompletedProcess(argv, 0),
    )
    monkeypatch.setattr(sys, "argv", ["dev.py", command, "--host", "http://x"])
    assert dev.main() == 0
    assert ran == [[str(dev.PYTHON), "-m", "pipeline", command, "--host", "http://x"]]
    assert f"python3 dev.py {command}" in dev.__doc__
    assert f"python3 dev.py {command}" in (REPO / "README.md").read_text()


# Mistyped and abbreviated options


def test_a_mistyped_step_option_is_reported_with_the_closest_one():
    result = subprocess.run(
        [sys.executable, "-m", "components.shard", "--ouput", "x", "--split", "train"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m components.shard: error: unrecognized argument --ouput; did you mean --output?"
    )


def test_step_options_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit) as exit_:
        fanout.main(["--num-shard", "3"])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("error: unrecognized argument --num-shard; did you mean --num-shards?")
    )


# Each of these is refused before anything runs; the old parser took an abbreviation (`--out`) for the
# option and ran the command, so none here may be an abbreviation of a command that does real work.
@pytest.mark.parametrize(
    "argv, reported",
    [
        (
            ["compile", "--ouput", "OUT"],
            "compile: error: unrecognized argument --ouput; did you mean --output?",
        ),
        (
            ["compile", "--out", "OUT"],
            "compile: error: unrecognized argument --out; did you mean --output?",
        ),
        (
            ["submit", "--hots", "http://x"],
            "submit: error: unrecognized argument --hots; did you mean --host?",
        ),
        (
            ["run", "--verbsoe"],
            "run: error: unrecognized argument --verbsoe; did you mean --verbose?",
        ),
    ],
)
def test_pipeline_options_mistyped_or_abbreviated(capsys, tmp_path, argv, reported):
    argv = [str(tmp_path / "p.yaml") if arg == "OUT" else arg for arg in argv]
    with pytest.raises(SystemExit) as exit_:
        pipeline_main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m pipeline {reported}"
    assert not (tmp_path / "p.yaml").exists()


# A missing config


def test_a_missing_config_names_the_folder_once_at_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError) as error:
        load_config("no-such-config.yaml")
    assert str(error.value) == f"config file no-such-config.yaml not found (looked in {REPO})"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config("no-such-config.yaml")
    assert f"(looked in {tmp_path} and {REPO})" in str(error.value)


# python -m pipeline outside .venv


def test_missing_dependency_is_one_line_pointing_at_dev_py():
    from pipeline.__main__ import missing_dependency

    message = missing_dependency(ModuleNotFoundError("No module named 'tqdm'", name="tqdm"))
    assert "\n" not in message
    assert "the project's dependencies are missing" in message and "'tqdm'" in message
    assert "python3 dev.py compile" in message and ".venv/bin/python" in message
    assert missing_dependency(ModuleNotFoundError("x", name="pipeline.nothing")) is None


def test_pipeline_compile_outside_the_venv_says_so_in_one_line(tmp_path):
    base = getattr(sys, "_base_executable", None)
    if not base or os.path.realpath(base) == os.path.realpath(sys.executable):
        pytest.skip("not run from a virtual environment: no interpreter without its packages")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if (
        subprocess.run(
            [base, "-s", "-c", "import tqdm, kfp"], env=env, capture_output=True
        ).returncode
        == 0
    ):
        pytest.skip(f"{base} has the project's dependencies")
    result = subprocess.run(
        [base, "-s", "-m", "pipeline", "compile", "--output", str(tmp_path / "p.yaml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "the project's dependencies are missing" in result.stderr
    assert "python3 dev.py compile" in result.stderr
