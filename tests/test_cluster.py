"""What a KFP cluster does with the compiled pipeline that kfp.local does not show: the pod spec the KFP
driver builds from pipeline.yaml (GPU limit, /dev/shm, requests and limits, node selector, the GCS secret),
and the run-time rules of the cluster contract (local paths refused, the token for multi-user Kubeflow,
train refusing to run on the CPU when it asked for GPUs).

The driver's resolution is reimplemented here from kubeflow/pipelines' backend (the same in tags 2.14.0 and
2.17.0): driver/util.go isInputParameterChannel / extractInputParameterFromChannel, driver/resolve.go
resolvePodSpecInputRuntimeParameter, driver/driver.go's accelerator and getPodResource branches.
"""

import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from google.protobuf import json_format, struct_pb2

from pipeline import cluster
from pipeline.__main__ import main
from pipeline.dag import RESOURCES, SHM_SIZE
from pipeline.submit import SubmitError, submit
from tests.conftest import REPO
from tests.test_pipeline import all_tasks, closed_port

# driver/util.go: inputPipelineChannelPattern
INPUT_PIPELINE_CHANNEL = re.compile(r"\$.inputs.parameters\['(.+?)'\]")


# ---- the driver, as written in Go ---------------------------------------------------------------------


def pb_value(value) -> struct_pb2.Value:
    """A parameter value as the driver holds it: a google.protobuf.Value (JSON number, string, ...)."""
    return json_format.ParseDict(value, struct_pb2.Value())


def resolve_pod_spec_input_runtime_parameter(parameter_value: str, parameter_values: dict) -> str:
    """resolve.go resolvePodSpecInputRuntimeParameter: a placeholder becomes the executor input's value
    *as a string* (val.GetStringValue(): "" for a number, a bool, a struct); anything else is a constant."""
    match = INPUT_PIPELINE_CHANNEL.search(
        parameter_value
    )  # Go's FindStringSubmatch: the leftmost match
    if match is None:  # isInputParameterChannel: len(match) == 2
        return parameter_value
    name = match.group(1)
    if name not in parameter_values:
        raise KeyError("executorInput did not contain container Image input parameter")
    return parameter_values[name].string_value  # proto3 oneof: "" unless the value is a string


def pod_limits_and_requests(resources: dict, parameter_values: dict) -> tuple[dict, dict]:
    """driver.go initPodSpecPatch: the container's limits and requests from the executor's resources."""
    limits, requests = {}, {}
    for field, target, key in (
        ("resourceCpuLimit", limits, "cpu"),
        ("resourceMemoryLimit", limits, "memory"),
        ("resourceCpuRequest", requests, "cpu"),
        ("resourceMemoryRequest", requests, "memory"),
    ):
        if resources.get(field):  # getPodResource: the string form wins over the float one
            target[key] = resolve_pod_spec_input_runtime_parameter(
                resources[field], parameter_values
            )
    accelerator = resources.get("accelerator")
    if accelerator is not None:
        accelerator_type = (
            resolve_pod_spec_input_runtime_parameter(accelerator["resourceType"], parameter_values)
            if accelerator.get("resourceType")
            else accelerator.get("type", "")
        )
        accelerator_count = ""
        if accelerator.get("resourceCount"):
            accelerator_count = resolve_pod_spec_input_runtime_parameter(
                accelerator["resourceCount"], parameter_values
            )
        elif accelerator.get("count", 0) > 0:
            accelerator_count = str(accelerator["count"])
        if accelerator_type and accelerator_count:  # otherwise no accelerator limit at all
            limits[accelerator_type] = accelerator_count
    return limits, requests


def quantity(text: str) -> float:
    """A Kubernetes quantity in base units (CPU cores, bytes)."""
    units = {
        "m": 1e-3,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
    }
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    return float(number) * units.get(unit, 1)


# ---- what the pipeline feeds the driver ------------------------------------------------------------------


def run_value_from_kfp_cli(text: str):
    """`kfp run create ... name=text`: the kfp CLI's own parsing (json.loads first: "2" is an int)."""
    from kfp.cli.utils import parsing

    return parsing.parse_parameter_value(text)


def settings_outputs(pipeline_spec, gpu_count, gcs_secret: str = "gcs-credentials") -> dict:
    """The cluster-settings task's output parameters for these inputs: its compiled container command run
    here as the launcher runs it in the pod (executor input JSON in, executor_output.json out)."""
    container = pipeline_spec["deploymentSpec"]["executors"]["exec-cluster-settings-op"][
        "container"
    ]
    outputs = pipeline_spec["components"]["comp-cluster-settings-op"]["outputDefinitions"][
        "parameters"
    ]
    folder = Path(tempfile.mkdtemp(prefix="cluster-settings-"))
    executor_input = {
        "inputs": {"parameterValues": {"gpu_count": gpu_count, "gcs_secret": gcs_secret}},
        "outputs": {
            "parameters": {name: {"outputFile": str(folder / name)} for name in outputs},
            "outputFile": str(folder / "executor_output.json"),
        },
    }
    arguments = [a.replace("{{$}}", json.dumps(executor_input)) for a in container["args"]]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        container["command"] + arguments, check=True, cwd=REPO, env=env, capture_output=True
    )
    return json.loads((folder / "executor_output.json").read_text())["parameterValues"]


def train_executor_parameters(pipeline_spec, run_arguments: dict, settings: dict) -> dict:
    """The train task's executor-input parameter values as the driver's resolveInputs builds them:
    componentInputParameter -> the run's value (defaults from the IR), taskOutputParameter -> the producer's
    output (here only the cluster-settings task feeds train parameters), runtimeValue -> the constant."""
    task, _ = all_tasks(pipeline_spec)["train"]
    declared = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    run_values = {name: spec.get("defaultValue") for name, spec in declared.items()} | run_arguments
    values = {}
    for name, spec in task["inputs"]["parameters"].items():
        if "componentInputParameter" in spec:
            values[name] = pb_value(run_values[spec["componentInputParameter"]])
        elif "taskOutputParameter" in spec:
            output = spec["taskOutputParameter"]
            assert output["producerTask"] == "cluster-settings-op", output
            values[name] = pb_value(settings[output["outputParameterKey"]])
        else:
            values[name] = pb_value(spec["runtimeValue"]["constant"])
    return values


def train_pod_limits(pipeline_spec, run_arguments: dict) -> dict:
    declared = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    gpu_count = run_arguments.get("gpu_count", declared["gpu_count"]["defaultValue"])
    parameters = train_executor_parameters(
        pipeline_spec, run_arguments, settings_outputs(pipeline_spec, gpu_count)
    )
    resources = pipeline_spec["deploymentSpec"]["executors"]["exec-train-op"]["container"][
        "resources"
    ]
    return pod_limits_and_requests(resources, parameters)[0]


# ---- 1. GPUs really requested ------------------------------------------------------------------------


def test_the_driver_reads_a_number_parameter_in_a_resource_field_as_no_value():
    """Why the count goes through a task: the pipeline's gpu_count is a number, whichever way it arrives."""
    count = "{{$.inputs.parameters['pipelinechannel--gpu_count']}}"
    assert (
        resolve_pod_spec_input_runtime_parameter(
            count, {"pipelinechannel--gpu_count": pb_value(1.0)}
        )
        == ""
    )
    assert run_value_from_kfp_cli("2") == 2
    assert (
        resolve_pod_spec_input_runtime_parameter(
            count, {"pipelinechannel--gpu_count": pb_value(run_value_from_kfp_cli("2"))}
        )
        == ""
    )
    assert (
        resolve_pod_spec_input_runtime_parameter(
            count, {"pipelinechannel--gpu_count": pb_value("2")}
        )
        == "2"
    )
    assert resolve_pod_spec_input_runtime_parameter("nvidia.com/gpu", {}) == "nvidia.com/gpu"


def test_train_gets_one_gpu_by_default(compiled):
    assert train_pod_limits(compiled[0], {})["nvidia.com/gpu"] == "1"


def test_train_gets_the_gpus_of_kfp_run_create_gpu_count_2(compiled):
    limits = train_pod_limits(compiled[0], {"gpu_count": run_value_from_kfp_cli("2")})
    assert limits["nvidia.com/gpu"] == "2"
    limits = train_pod_limits(
        compiled[0], {"gpu_count": run_value_from_kfp_cli("0"), "gpu_type": "amd.com/gpu"}
    )
    assert limits == {"amd.com/gpu": "0", "cpu": "7", "memory": "28Gi"}


def test_train_waits_for_the_task_that_names_its_gpu_count(compiled):
    """Argo orders tasks by dependentTasks only; the compiler does not add a producer used in a resource field."""
    pipeline_spec, _ = compiled
    tasks = all_tasks(pipeline_spec)
    train, _ = tasks["train"]
    settings, _ = tasks["cluster-settings"]
    assert "cluster-settings-op" in train["dependentTasks"]
    assert settings["inputs"]["parameters"]["gpu_count"] == {"componentInputParameter": "gpu_count"}
    outputs = pipeline_spec["components"]["comp-cluster-settings-op"]["outputDefinitions"][
        "parameters"
    ]
    assert outputs["accelerator_count"]["parameterType"] == "STRING"


def test_the_settings_task_refuses_a_negative_gpu_count():
    with pytest.raises(cluster.ClusterContractError, match="gpu_count=-1"):
        cluster.accelerator_count(-1)
    assert cluster.accelerator_count(2.0) == "2"  # a JSON number as a float
    with pytest.raises(cluster.ClusterContractError, match="gpu_count=17: .* from 0 to 16"):
        cluster.accelerator_count(cluster.MAX_GPUS_PER_NODE + 1)  # more than a node has


def test_train_fails_without_the_gpus_it_asked_for_unless_cpu_is_allowed(tmp_path, capsys, caplog):
    import tensorflow as tf

    from components import train
    from pose.training import distribution

    assert not tf.config.list_logical_devices("GPU"), "this test expects a machine without a GPU"
    with pytest.raises(
        train.TrainError,
        match=r"1 GPU\(s\) were requested, but TensorFlow sees none.*allow_cpu=true",
    ):
        distribution.check_gpus(1, allow_cpu=False)
    distribution.check_gpus(0, allow_cpu=False)
    with caplog.at_level("WARNING", logger="train"):
        distribution.check_gpus(2, allow_cpu=True)
    assert "training on the CPU (allow_cpu)" in caplog.text

    args = [
        "--config",
        str(REPO / "experiments" / "tiny.yaml"),
        "--data",
        str(tmp_path / "shards"),
        "--output",
        str(tmp_path / "model"),
        "--expect-gpus",
        "1",
    ]
    assert train.main(args) == 1
    assert (
        "train: error: 1 GPU(s) were requested, but TensorFlow sees none" in capsys.readouterr().err
    )
    assert not (tmp_path / "model").exists()


def test_clusters_insist_on_gpus_and_local_runs_allow_cpu(compiled, tmp_path, capsys, cli_logging):
    declared = compiled[0]["root"]["inputDefinitions"]["parameters"]
    assert declared["allow_cpu"]["defaultValue"] is False
    train, _ = all_tasks(compiled[0])["train"]
    assert train["inputs"]["parameters"]["allow_cpu"] == {"componentInputParameter": "allow_cpu"}
    assert train["inputs"]["parameters"]["gpu_count"] == {"componentInputParameter": "gpu_count"}

    # `python -m pipeline run` says so, first thing (then preflight refuses the missing source).
    assert (
        main(
            [
                "run",
                "--source",
                str(tmp_path / "missing.zip"),
                "--pipeline-root",
                str(tmp_path / "runs"),
            ]
        )
        == 1
    )
    assert "allow_cpu=true for this local run" in capsys.readouterr().err


# ---- 2. /dev/shm ---------------------------------------------------------------------------------------


def test_train_has_dev_shm_in_memory_within_its_memory_limit(compiled):
    kubernetes = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (shm,) = [
        mount
        for mount in kubernetes["exec-train-op"]["emptyDirMounts"]
        if mount["mountPath"] == "/dev/shm"
    ]
    assert shm["medium"] == "Memory" and shm["sizeLimit"] == SHM_SIZE
    assert quantity(shm["sizeLimit"]) < quantity(RESOURCES["train"].memory_limit)
    assert all(
        "emptyDirMounts" not in e for name, e in kubernetes.items() if name != "exec-train-op"
    )


# ---- 3. resources that schedule ------------------------------------------------------------------------


def test_every_step_has_requests_and_limits_and_train_fits_a_one_gpu_node(compiled):
    executors = compiled[0]["deploymentSpec"]["executors"]
    containers = {
        name: executor["container"]
        for name, executor in executors.items()
        if "container" in executor
    }
    # The pack importers run in the backend's own driver, not in a pod of ours: they have no container spec.
    assert set(executors) - set(containers) == {
        name for name, e in executors.items() if "importer" in e
    }
    for name, container in containers.items():
        cpu_and_memory = {k: v for k, v in container["resources"].items() if k != "accelerator"}
        limits, requests = pod_limits_and_requests(cpu_and_memory, {})
        assert set(limits) >= {"cpu", "memory"} and set(requests) == {"cpu", "memory"}, name
        for key in ("cpu", "memory"):
            assert quantity(limits[key]) >= quantity(requests[key]), (name, key)
    limits, requests = pod_limits_and_requests(
        {
            k: v
            for k, v in executors["exec-train-op"]["container"]["resources"].items()
            if k != "accelerator"
        },
        {},
    )
    assert quantity(requests["cpu"]) <= 7 and quantity(requests["memory"]) <= 28 * 2**30


def test_readme_resource_table_is_the_compiled_one(compiled):
    """README's table of requests and limits, row by row, against what the driver puts in each pod."""
    rows = re.findall(
        r"^ *\| `([a-z-]+)` \| (\S+) \| (\S+) \| (\S+) \| (\S+) \|$",
        cluster_section(),
        re.MULTILINE,
    )
    table = {step: row for step, *row in rows}
    tasks = all_tasks(compiled[0])
    executors = compiled[0]["deploymentSpec"]["executors"]
    assert set(table) == set(RESOURCES)
    for step, (cpu, memory, cpu_limit, memory_limit) in table.items():
        task, _ = (
            tasks[step] if step in tasks else tasks[f"{step}-train"]
        )  # shard-train, fanout-train
        executor = compiled[0]["components"][task["componentRef"]["name"]]["executorLabel"]
        resources = {
            k: v
            for k, v in executors[executor]["container"]["resources"].items()
            if k != "accelerator"
        }
        limits, requests = pod_limits_and_requests(resources, {})
        assert (requests["cpu"], requests["memory"], limits["cpu"], limits["memory"]) == (
            cpu,
            memory,
            cpu_limit,
            memory_limit,
        ), step


# ---- 6. the cluster contract ---------------------------------------------------------------------------


def test_the_gpu_node_selector_is_empty_by_default_and_tolerations_are_json(compiled):
    pipeline_spec, platform_spec = compiled
    declared = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert declared["gpu_node_selector"]["defaultValue"] == {}
    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train-op"
    ]
    assert kubernetes["nodeSelector"] == {
        "nodeSelectorJson": {"componentInputParameter": "gpu_node_selector"}
    }
    assert kubernetes["tolerations"] == [
        {"tolerationJson": {"componentInputParameter": "gpu_tolerations"}}
    ]


def test_the_secret_volumes_never_have_an_empty_name_and_no_secret_env_is_needed(compiled):
    """k8s.go resolves secretNameParameter with resolveInputParameterStr, which fails the task on "": each
    name (the GCS secret's, the S3 one's) comes from the settings task, which turns "" into a secret nobody
    creates; the volumes are optional. Every step that touches a bucket mounts both."""
    pipeline_spec, platform_spec = compiled
    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = all_tasks(pipeline_spec)
    assert "cluster-settings-op" in tasks["download"][0]["dependentTasks"]
    # source-version asks the store about the source; convert reads a keypoint-set YAML that may sit in a
    # bucket; train touches storage too: its checkpoints.
    storage_steps = (
        ("source-version", "exec-source-version-op"),
        ("download", "exec-download-op"),
        ("convert", "exec-convert-op"),
        ("train", "exec-train-op"),
        ("publish", "exec-publish-op"),
    )
    for step, executor in storage_steps:
        volumes = {v["mountPath"]: v for v in kubernetes[executor]["secretAsVolume"]}
        assert set(volumes) == {cluster.GCS_SECRET_MOUNT, cluster.S3_SECRET_MOUNT}, step
        assert "secretAsEnv" not in kubernetes[executor]
        for mount, output in (
            (cluster.GCS_SECRET_MOUNT, "gcs_secret_volume"),
            (cluster.S3_SECRET_MOUNT, "s3_secret_volume"),
        ):
            assert volumes[mount]["optional"] is True
            name = volumes[mount]["secretNameParameter"]
            if (
                "componentInputParameter" in name
            ):  # publish sits in the dsl.If sub-DAG: follow its input
                (condition,) = [
                    t for t, _ in tasks.values() if t["componentRef"]["name"] == tasks[step][1]
                ]
                name = condition["inputs"]["parameters"][name["componentInputParameter"]]
            assert name["taskOutputParameter"] == {
                "producerTask": "cluster-settings-op",
                "outputParameterKey": output,
            }, (step, mount)
    assert not any(
        "secretAsEnv" in e or "secretAsVolume" in e
        for name, e in kubernetes.items()
        if name not in dict(storage_steps).values()
    )


def test_an_empty_gcs_secret_becomes_a_name_the_driver_accepts(compiled):
    assert settings_outputs(compiled[0], 1, "")["gcs_secret_volume"] == cluster.NO_GCS_SECRET
    assert settings_outputs(compiled[0], 1, "my-key")["gcs_secret_volume"] == "my-key"


def test_a_mounted_key_file_becomes_the_google_credentials(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "GCS_SECRET_MOUNT", str(tmp_path))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    cluster.use_mounted_gcs_key()  # an empty (optional, missing secret) mount: ambient credentials stay
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
    (tmp_path / cluster.GCS_KEY_FILE).write_text("{}")
    cluster.use_mounted_gcs_key()
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == str(tmp_path / cluster.GCS_KEY_FILE)


@pytest.mark.parametrize(
    "argument",
    [
        "source=/data/aic",
        "source=file:///data/aic.zip",
        "publish_uri=./models",
        "publish_uri=/mnt/models",
        "checkpoint_uri=/mnt/checkpoints",
    ],
)
def test_submit_refuses_local_paths_before_contacting_the_cluster(argument):
    host = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(
        SubmitError, match=rf"--param {argument.split('=')[0]}=.* is a local path.*its own pod"
    ):
        submit(host, params=[argument])


def test_submit_accepts_remote_sources():
    host = f"http://127.0.0.1:{closed_port()}"
    for argument in (
        "source=gs://bucket/aic/",
        "source=https://example.com/aic.zip",
        "source=synthetic://50",
        "publish_uri=gs://bucket/models",
        "publish_uri=",
        "checkpoint_uri=gs://bucket/ckpt",
        "checkpoint_uri=",
    ):
        with pytest.raises(
            SubmitError, match="cannot reach the KFP API"
        ):  # past the check, to the network
            submit(host, params=[argument])


def test_download_and_publish_refuse_local_paths_in_a_kfp_pod_only(monkeypatch, tmp_path):
    from pipeline.ops import download_op, publish_op

    monkeypatch.setenv(cluster.KFP_POD_ENV, "pose-estimation-for-mobile-abc12-download-op")
    with pytest.raises(cluster.ClusterContractError, match=r"source='/data/aic' is a local path"):
        download_op.python_func(source="/data/aic", sha256="", raw=None)
    with pytest.raises(
        cluster.ClusterContractError, match=r"publish_uri='/mnt/models' is a local path"
    ):
        publish_op.python_func(
            tflite_models=None,
            report=None,
            results=None,
            destination="/mnt/models",
            variant="fp16",
            published=None,
        )
    monkeypatch.delenv(cluster.KFP_POD_ENV)
    assert (
        not cluster.on_kfp_cluster()
    )  # kfp.local: local paths are fine (the README's local examples)


class _RecordingKfpApi(http.server.BaseHTTPRequestHandler):
    """A KFP API endpoint that answers healthz and refuses everything else, recording each request's headers."""

    seen: list = []

    def _answer(self):
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization")))
        healthz = self.path.startswith("/apis/v2beta1/healthz")
        body = json.dumps(
            {"multi_user": True} if healthz else {"error": "denied", "code": 7}
        ).encode()
        self.send_response(200 if healthz else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_submit_sends_the_token_as_a_bearer_token():
    """The KFP API server reads `Authorization: Bearer <token>` (backend/src/apiserver/auth/auth.go,
    GetAuthenticators: TokenReviewAuthenticator with common.AuthorizationBearerTokenPrefix)."""
    _RecordingKfpApi.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(SubmitError, match="refused the run"):
            submit(host, params=["num_shards=2"], namespace="team-pose", token="tok-123")
    finally:
        server.shutdown()
        server.server_close()
    assert _RecordingKfpApi.seen, "kfp.Client sent nothing"
    assert {auth for _, _, auth in _RecordingKfpApi.seen} == {"Bearer tok-123"}


# ---- the README says what the IR does -------------------------------------------------------------------


def cluster_section() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## On a cluster") :]
    return section[: section.index("\n## ", 3)]


def test_readme_states_the_minimum_backend_and_the_cluster_rules():
    section = cluster_section()
    for needed in (
        "KFP ≥ 2.14",
        "allow_cpu",
        "/dev/shm",
        "RESOURCES",
        "gpu_node_selector",
        "`{}`",
        "gcs_secret",
        cluster.NO_GCS_SECRET,
        "--token",
        "local path",
        "docs/CLUSTER.md",
    ):
        assert needed in section, needed
