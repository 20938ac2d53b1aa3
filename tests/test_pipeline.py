"""The pipeline: the checked-in pipeline.yaml is a fresh compile, its IR holds what a cluster needs, and the
command line fails clearly (a failed local step, a bad --param, an unreachable cluster)."""

import builtins
import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline import images, params
from pipeline.__main__ import main
from pipeline.compile import stable_header
from pipeline.submit import SubmitError, submit
from tests.conftest import REPO, load_pipeline_yaml

CHECKED_IN = REPO / "pipeline.yaml"
SPLITS = ("train", "valid")
STEP_EXECUTORS = {
    "cluster-settings": "exec-cluster-settings-op",
    "source-version": "exec-source-version-op",
    "download": "exec-download-op",
    "convert": "exec-convert-op",
    "fanout": "exec-pack-uris-op",
    "shard": "exec-shard-op",
    "train": "exec-train-op",
    "freeze": "exec-freeze-op",
    "tflite": "exec-tflite-op",
    "evaluate": "exec-evaluate-op",
    "publish": "exec-publish-op",
}


def all_tasks(pipeline_spec):
    """{display name: (task spec, the DAG holding it)} over the root and every sub-DAG."""
    dags = {"root": pipeline_spec["root"], **pipeline_spec["components"]}
    return {
        task["taskInfo"]["name"]: (task, name)
        for name, component in dags.items()
        for task in component.get("dag", {}).get("tasks", {}).values()
    }


def test_checked_in_pipeline_yaml_is_a_fresh_compile(compiled, compiled_package):
    assert CHECKED_IN.is_file(), "pipeline.yaml is missing: run `python -m pipeline compile`"
    assert load_pipeline_yaml(CHECKED_IN) == compiled, (
        "pipeline.yaml is stale: run `python -m pipeline compile` and commit it"
    )
    # byte for byte, comments included: a recompile of an unchanged tree must not show up as a diff
    assert CHECKED_IN.read_text() == compiled_package.read_text()


def test_the_package_header_lists_dict_defaults_with_sorted_keys():
    shuffled = (
        "# Inputs:\n"
        "#    gpu_tolerations: list [Default: [{'operator': 'Exists', 'key': 'k', 'effect': 'E'}]]\n"
        "#    gpu_node_selector: dict [Default: {'b': {'z': 1.0, 'a': [2.0]}, 'a': ''}]\n"
        "#    source: str [Default: 'synthetic://2000']\n"
        "components:\n"
        "  x: {'operator': 'Exists', 'key': 'k'}\n"
    )
    assert stable_header(shuffled) == (
        "# Inputs:\n"
        "#    gpu_tolerations: list [Default: [{'effect': 'E', 'key': 'k', 'operator': 'Exists'}]]\n"
        "#    gpu_node_selector: dict [Default: {'a': '', 'b': {'a': [2.0], 'z': 1.0}}]\n"
        "#    source: str [Default: 'synthetic://2000']\n"
        "components:\n"
        "  x: {'operator': 'Exists', 'key': 'k'}\n"
    )


# The steps that never import TensorFlow run in pose-slim (pipeline/images.py).
SLIM_EXECUTORS = {
    "exec-download-op",
    "exec-convert-op",
    "exec-pack-uris-op",
    "exec-pack-uris-op-2",
    "exec-publish-op",
    "exec-cluster-settings-op",
    "exec-source-version-op",
}


def test_every_step_runs_in_its_image(compiled):
    executors = compiled[0]["deploymentSpec"]["executors"]
    assert set(STEP_EXECUTORS.values()) | {
        "exec-shard-op-2",
        "exec-pack-uris-op-2",
        "exec-importer",
        "exec-importer-2",
    } == set(executors)
    for name, executor in executors.items():
        if "importer" in executor:
            continue
        expected = (
            images.GPU_IMAGE
            if name == "exec-train-op"
            else images.SLIM_IMAGE
            if name in SLIM_EXECUTORS
            else images.CPU_IMAGE
        )
        assert executor["container"]["image"] == expected, name


def test_shards_fan_out_over_packs_with_parallel_for_and_are_collected(compiled):
    pipeline_spec, _ = compiled
    tasks = all_tasks(pipeline_spec)
    loops = {
        task["parameterIterator"]["items"]["inputParameter"]: task
        for task, _ in tasks.values()
        if "parameterIterator" in task
    }
    fanout = {
        split: tasks[f"fanout-{split}"][0]["componentRef"]["name"].removeprefix("comp-")
        for split in SPLITS
    }
    assert set(loops) == {f"pipelinechannel--{fanout[split]}-Output" for split in SPLITS}
    for split in SPLITS:
        loop = loops[f"pipelinechannel--{fanout[split]}-Output"]
        assert loop["iteratorPolicy"]["parallelismLimit"] > 1
        loop_dag = loop["componentRef"]["name"]
        shard, shard_dag = tasks[f"shard-{split}"]
        pack, pack_dag = tasks["importer" if split == "train" else "importer-2"]
        assert shard_dag == pack_dag == loop_dag
        # The shard task's only artifact is the imported pack; the importer takes the loop item as it is
        # (the backend's importer reads the parent DAG's input parameter and applies no selector).
        (pack_key,) = [
            key
            for key, task in pipeline_spec["components"][loop_dag]["dag"]["tasks"].items()
            if task is pack
        ]
        assert shard["inputs"]["artifacts"]["coco"] == {
            "taskOutputArtifact": {"producerTask": pack_key, "outputArtifactKey": "artifact"}
        }
        # Its other input is convert's small dataset_info (the cache-hit coupling, pipeline/dag.py).
        assert set(shard["inputs"]["artifacts"]) == {"coco", "dataset_info"}
        # The importer's display name is its task key: the backend records importers under it.
        assert pack["taskInfo"]["name"] == pack_key
        assert pack["inputs"]["parameters"]["uri"] == {
            "componentInputParameter": f"pipelinechannel--{fanout[split]}-Output-loop-item"
        }
    for consumer, inputs in {
        "train": ("train_shards", "valid_shards"),
        "tflite": ("representative",),
        "evaluate": ("valid_shards",),
    }.items():
        for name in inputs:
            source = tasks[consumer][0]["inputs"]["artifacts"][name]["taskOutputArtifact"]
            split = "train" if name in ("train_shards", "representative") else "valid"
            assert (
                source["producerTask"]
                == loops[f"pipelinechannel--{fanout[split]}-Output"]["taskInfo"]["name"]
            ), (consumer, name)
            assert pipeline_spec["components"][tasks[consumer][0]["componentRef"]["name"]][
                "inputDefinitions"
            ]["artifacts"][name]["isArtifactList"]


def test_every_step_but_publishing_and_the_source_version_is_cached(compiled):
    tasks = all_tasks(compiled[0])
    cached = {
        name: task.get("cachingOptions", {}).get("enableCache", False)
        for name, (task, _) in tasks.items()
        if "cachingOptions" in task
    }
    assert cached == {
        "cluster-settings": True,
        "source-version": False,
        "download": True,
        "convert": True,
        "fanout-train": True,
        "fanout-valid": True,
        "shard-train": True,
        "shard-valid": True,
        "importer": True,
        "importer-2": True,
        "train": True,
        "freeze": True,
        "tflite": True,
        "evaluate": True,
        "publish": False,
    }


def test_publish_runs_only_when_a_destination_is_given(compiled):
    tasks = all_tasks(compiled[0])
    publish_dag = tasks["publish"][1]
    (condition,) = [
        task for task, _ in tasks.values() if task["componentRef"]["name"] == publish_dag
    ]
    assert (
        condition["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--publish_uri'] != ''"
    )


def test_compile_sets_the_image_tag(tmp_path):
    output = tmp_path / "tagged.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSE_IMAGE_")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "compile",
            "--output",
            str(output),
            "--image-tag",
            "9.9.9-rc1",
            "--registry",
            "registry.example.com/pose",
        ],
        check=True,
        cwd=REPO,
        env=env,
        capture_output=True,
    )
    executors = load_pipeline_yaml(output)[0]["deploymentSpec"]["executors"]
    assert (
        executors["exec-train-op"]["container"]["image"]
        == "registry.example.com/pose/pose-gpu:9.9.9-rc1"
    )
    assert (
        executors["exec-download-op"]["container"]["image"]
        == "registry.example.com/pose/pose-slim:9.9.9-rc1"
    )
    assert (
        executors["exec-evaluate-op"]["container"]["image"]
        == "registry.example.com/pose/pose-cpu:9.9.9-rc1"
    )


def test_compile_tags_the_images_by_their_content_by_default(compiled):
    executors = compiled[0]["deploymentSpec"]["executors"]
    assert images.content_tag() == images.TAG
    assert (
        executors["exec-train-op"]["container"]["image"]
        == f"ghcr.io/pose-pipeline/pose-gpu:{images.content_tag()}"
    )


def run_with_a_source_without_images(tmp_path, capsys):
    """`pipeline run` on a source that holds no image: download fails, the run stops, and its error
    comes again at the end, as the step wrote it. (A source that is not there at all is refused
    before any task: tests/test_preflight_forms.py.)"""
    empty = tmp_path / "empty-release"
    empty.mkdir()
    code = main(
        [
            "run",
            "--source",
            str(empty),
            "--config",
            "experiments/tiny.yaml",
            "--pipeline-root",
            str(tmp_path / "runs"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    # download, the first task to look inside the source, names what is wrong with it
    assert "step 'download' failed" in captured.err
    assert "---- last lines of the failed step 'download' ----" in captured.err
    tail = captured.err.split("---- last lines")[1].splitlines()
    assert any(str(empty) in line and "yielded no images" in line for line in tail)
    assert "train" not in {line.split()[0] for line in captured.out.splitlines() if line.strip()}


def test_a_failed_step_stops_the_run_with_its_error_on_screen(tmp_path, capsys, cli_logging):
    run_with_a_source_without_images(tmp_path, capsys)


@pytest.fixture()
def print_left_indented():
    """What a kfp.local ParallelFor run without pipeline/kfp_local_patches.one_task_at_a_time leaves in
    the process about every other time: two tasks' print swaps undone out of order (the first to start
    ends first), so print stays indented. The suite's test of the ingest DAG did this, and the next
    `pipeline run` lost its failed step's last lines."""
    from kfp.local import logging_utils

    original = builtins.print
    first, second = logging_utils.indented_print(), logging_utils.indented_print()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert builtins.print is not original
    yield
    builtins.print = original


def test_a_failed_step_shows_its_error_in_a_process_where_kfp_left_print_indented(
    tmp_path, capsys, cli_logging, print_left_indented
):
    run_with_a_source_without_images(tmp_path, capsys)


def test_params_are_typed_by_the_pipeline_and_unknown_names_are_named(compiled):
    declared = params.declared_parameters(compiled[0])
    parsed = params.parse_params(
        [
            "num_shards=8",
            "single_person=true",
            'gpu_node_selector={"pool": "l4"}',
            "gpu_tolerations=[]",
            "source=gs://bucket/aic.zip",
        ],
        declared,
    )
    assert parsed == {
        "num_shards": 8,
        "single_person": True,
        "gpu_node_selector": {"pool": "l4"},
        "gpu_tolerations": [],
        "source": "gs://bucket/aic.zip",
    }
    with pytest.raises(
        params.ParameterError,
        match="no parameter 'num_shard'; it has allow_cpu, checkpoint_uri, config, "
        "export_contract, flip_test, gcs_secret",
    ):
        params.parse_params(["num_shard=8"], declared)
    with pytest.raises(
        params.ParameterError, match=r"num_shards='eight': not a valid NUMBER_INTEGER"
    ):
        params.parse_params(["num_shards=eight"], declared)
    with pytest.raises(
        params.ParameterError, match="gpu_node_selector='\\[1\\]': not a valid STRUCT"
    ):
        params.parse_params(["gpu_node_selector=[1]"], declared)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_to_an_unreachable_cluster_fails_quickly_and_clearly():
    host = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(
        SubmitError, match=rf"cannot reach the KFP API at {host}: .*(refused|Failed to establish)"
    ):
        submit(host, params=["num_shards=2"])
    assert time.monotonic() - started < 30


def test_submit_checks_arguments_before_contacting_the_cluster(capsys, tmp_path, cli_logging):
    host = f"http://127.0.0.1:{closed_port()}"
    assert main(["submit", "--host", host, "--param", "num_shard=2"]) == 1
    assert "no parameter 'num_shard'" in capsys.readouterr().err
    assert main(["submit", "--host", host, "--pipeline-root", "/tmp/outputs"]) == 1
    assert "expected gs://, s3://, minio://" in capsys.readouterr().err
    with pytest.raises(SubmitError, match="no compiled pipeline here"):
        submit(host, package=tmp_path / "missing.yaml")
    with pytest.raises(SystemExit):
        main(["submit", "--param", "num_shards=2"])  # --host is required


def test_docker_runner_without_an_engine_says_so_before_any_step(
    tmp_path, capsys, cli_logging, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")  # an engine nobody runs
    code = main(["run", "--runner", "docker", "--pipeline-root", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert code != 0
    assert "--runner docker: no docker engine answers" in captured.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("raw"))


def test_train_is_retried_and_resumes_from_checkpoint_uri(compiled):
    """A preempted train pod is retried (Argo retries the pod; the new one starts with an empty output
    folder), and checkpoint_uri reaches train so that the retry resumes from the bucket."""
    pipeline_spec, _ = compiled
    train, _ = all_tasks(pipeline_spec)["train"]
    # Argo counts maxDuration from the first attempt's start: a week holds 4 attempts of a day
    # (tests/test_backend_model.py checks it with Argo's rule).
    assert train["retryPolicy"] == {
        "maxRetryCount": 3,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "604800s",
    }
    assert train["inputs"]["parameters"]["checkpoint_uri"] == {
        "componentInputParameter": "checkpoint_uri"
    }
    assert (
        pipeline_spec["root"]["inputDefinitions"]["parameters"]["checkpoint_uri"]["defaultValue"]
        == ""
    )
