"""The backend model (pipeline/backend) on the IR before issue 18, on the compiled IR of today, and
on small
hand-made IRs that trigger each rule once; what a rerun reuses; `submit --no-cache`; the bounds
refused before anything runs. Fast: no TensorFlow, no cluster (the model is the cluster's rules,
from its source).
"""

import copy
import inspect
import subprocess
import sys

import pytest
import yaml

from pipeline import cluster
from pipeline.backend import IR, cache_key_inputs, check, rules
from pipeline.compile import CompileError, check_backend
from pipeline.dag import LONGEST_ATTEMPT_S, MAX_LOOP_ITEMS
from pipeline.params import ParameterError, parse_params
from pipeline.submit import create_run_arguments
from pose.data import packs
from tests.conftest import REPO

BEFORE = REPO / "tests" / "fixtures" / "pipeline-before-issue-18.yaml"
NOW = REPO / "pipeline.yaml"  # test_pipeline checks it is a fresh compile


def load(path) -> IR:
    return IR.load(path)


# ---- the IR before issue 18: findings 1 to 4
# ---------------------------------------------------------


def test_before_issue_18_the_importers_are_looked_up_under_a_name_they_were_not_recorded_under():
    findings = check(load(BEFORE), 2).by_rule("recorded_names")
    assert [f.task for f in findings] == ["for-loop-1/importer", "for-loop-2/importer-2"]
    assert "on 2.14.0, 2.15.0, 2.16.0, 2.17.0" in findings[0].message
    assert "recorded as 'pack-train_{for-loop-1 dag id}_idx_0'" in findings[0].message
    assert 'cannot find producer task "importer_{for-loop-1 dag id}_idx_0"' in findings[0].message


def test_before_issue_18_a_mix_of_cache_hits_leaves_a_shard_in_a_bucket_the_launcher_did_not_open():
    findings = check(load(BEFORE), 2).by_rule("buckets_under_caching")
    assert sorted((f.task, f.message.split("[")[0]) for f in findings) == [
        ("evaluate-op", "valid_shards"),
        ("tflite-op", "representative"),
        ("train-op", "train_shards"),
        ("train-op", "valid_shards"),
    ]
    assert all(
        "failed to get bucket when downloading input artifact" in f.message for f in findings
    )


def test_before_issue_18_train_cannot_start_at_90_shards_nor_at_the_4096_it_allowed():
    for shards in (90, 4096):
        (train,) = [
            f
            for f in check(load(BEFORE), shards).by_rule("executor_input_size")
            if f.task == "train-op"
        ]
        assert (
            "over Linux's 131,072-byte limit on one argument: the pod cannot start" in train.message
        )
    sizes = {
        n.task: int(n.text.split(" bytes")[0].replace(",", ""))
        for n in check(load(BEFORE), 80).notes
        if n.rule == "executor_input_size"
    }
    assert sizes["train-op"] > rules.MAX_ARG_STRLEN > sizes["tflite-op"]  # 2N artifacts against N


def test_before_issue_18_train_is_never_retried_after_ten_minutes():
    (finding,) = check(load(BEFORE), 2).by_rule("retries")
    assert finding.task == "train-op"
    assert "backoff max duration 600 s counts from the first attempt's start" in finding.message


# ---- the IR of today: none
# -----------------------------------------------------------------------------


def test_the_compiled_pipeline_passes_every_rule_at_the_largest_num_shards():
    report = check(load(NOW), MAX_LOOP_ITEMS, LONGEST_ATTEMPT_S)
    assert report.findings == []
    assert MAX_LOOP_ITEMS == packs.MAX_SHARDS
    sizes = {
        n.task: int(n.text.split(" bytes")[0].replace(",", ""))
        for n in report.notes
        if n.rule == "executor_input_size"
    }
    assert max(sizes.values()) == sizes["train-op"] <= rules.ARG_MARGIN * rules.MAX_ARG_STRLEN


def test_the_model_covers_every_task_and_every_input():
    ir = load(NOW)
    spec = yaml.safe_load(NOW.read_text().split("\n---\n")[0])
    keys = {
        key
        for component in [spec["root"], *spec["components"].values()]
        for key in component.get("dag", {}).get("tasks", {})
    }
    assert {task.key for task in ir.tasks} == keys
    notes = check(ir, MAX_LOOP_ITEMS, LONGEST_ATTEMPT_S).notes
    named = {n.task for n in notes if n.rule == "recorded_names"}
    assert named == {task.path for task in ir.tasks}
    for task in ir.tasks:  # every input resolves to where it comes from
        assert len(ir.direct_sources(task)) >= len(
            task.spec.get("inputs", {}).get("parameters", {})
        )
    sized = {n.task for n in notes if n.rule == "executor_input_size"}
    assert sized == {t.path for t in ir.executing() if t.kind == "container"}


def test_collected_inputs_are_in_iteration_order():
    notes = [n for n in check(load(NOW), MAX_LOOP_ITEMS).notes if n.rule == "collected_inputs"]
    train = {n.text.split(":")[0]: n.text for n in notes if n.task == "train-op"}
    assert (
        "element i = output 'shards' of for-loop-1/shard-op in iteration i of for-loop-1"
        in train["train_shards"]
    )
    assert "of for-loop-2/shard-op-2 in iteration i of for-loop-2" in train["valid_shards"]


def test_compile_refuses_an_ir_the_model_rejects(tmp_path):
    with pytest.raises(
        CompileError, match=r"the KFP backend model rejects the compiled pipeline \(7 findings"
    ):
        check_backend(BEFORE)
    check_backend(NOW)


# ---- reruns: what the cache reuses
# ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changed", ["tflite_variants", "latency_runs", "flip_test", "publish_uri", "publish_variant"]
)
def test_changing_only_a_later_step_s_parameter_does_not_retrain(changed):
    ir = load(NOW)
    (train,) = [t for t in ir.executing() if t.display_name == "train"]
    key = cache_key_inputs(ir, train)
    assert key["cacheable"] and changed not in key["run_parameters"]
    assert {"config", "overrides", "num_shards", "source"} <= key["run_parameters"]
    for task in ir.upstream_tasks(train) | {train}:
        if not task.component.get("outputDefinitions", {}).get("artifacts"):
            continue  # source-version: never cached, but a value made afresh keeps its keys' value
        assert cache_key_inputs(ir, task)["cacheable"], task.path
    (freeze,) = [t for t in ir.executing() if t.display_name == "freeze"]
    assert changed not in cache_key_inputs(ir, freeze)["run_parameters"]


def test_no_cache_runs_every_step_afresh():
    """kfp.Client's own override (client.py _override_caching_options) touches root tasks only; the
    shard
    tasks inside the loops still miss, because their key holds convert's dataset_info, made
    afresh."""
    from google.protobuf import json_format
    from kfp.client import client
    from kfp.pipeline_spec import pipeline_spec_pb2

    pipeline_spec, platform_spec = yaml.safe_load_all(NOW.read_text())
    proto = json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec())
    client._override_caching_options(proto, False)
    ir = IR(json_format.MessageToDict(proto), platform_spec)
    for task in ir.executing():
        if task.kind == "container":
            assert not cache_key_inputs(ir, task)["cacheable"], task.path


def test_submit_no_cache_asks_kfp_for_a_run_without_caching():
    from kfp import Client

    arguments = create_run_arguments(NOW, {"num_shards": 4}, "pose", enable_caching=False)
    assert arguments["enable_caching"] is False and arguments["pipeline_file"] == str(NOW)
    assert create_run_arguments(NOW, {}, "pose")["enable_caching"] is None
    assert set(arguments) <= set(
        inspect.signature(Client.create_run_from_pipeline_package).parameters
    )
    usage = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", "--help"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "--no-cache" in usage


# ---- bounds refused before anything runs
# ---------------------------------------------------------------


def test_num_shards_above_the_bound_is_refused_naming_the_parameter():
    declared = {"num_shards": "NUMBER_INTEGER", "gcs_secret": "STRING"}
    assert parse_params([f"num_shards={packs.MAX_SHARDS}"], declared) == {
        "num_shards": packs.MAX_SHARDS
    }
    with pytest.raises(ParameterError, match=r"--param num_shards=33: expected 1 to 32.*128 KiB"):
        parse_params(["num_shards=33"], declared)
    with pytest.raises(packs.PackError, match=r"num_shards=33: expected an integer from 1 to 32"):
        packs.check_num_shards(33)


@pytest.mark.parametrize("name", ["gcs.credentials", "x" * 64, "Upper", "-dash"])
@pytest.mark.parametrize(
    "parameter, volume, none",
    [
        ("gcs_secret", cluster.gcs_secret_volume, cluster.NO_GCS_SECRET),
        ("s3_secret", cluster.s3_secret_volume, cluster.NO_S3_SECRET),
    ],
)
def test_a_secret_the_driver_cannot_name_a_volume_after_is_refused_early(
    name, parameter, volume, none
):
    with pytest.raises(
        ParameterError, match=rf"--param {parameter}=.*volume name must be at most 63 characters"
    ):
        parse_params([f"{parameter}={name}"], {parameter: "STRING"})
    with pytest.raises(
        cluster.ClusterContractError, match=rf"^{parameter}="
    ):  # and in the cluster-settings task, for `kfp run create`
        volume(name)
    assert volume("") == none
    assert volume("my-credentials") == "my-credentials"


def test_submit_refuses_a_config_text_that_would_keep_trains_pod_from_starting():
    """A `config` given as YAML text goes whole into train's executor input, one argv string: the
    compiled defaults keep half of Linux's limit free at 32 shards, a long text (here a valid config
    with 100 KB of comments, under the config's own 1 MiB bound) does not. Sized with the run's own
    values before any network call; the ordinary config text passes at 32 shards."""
    from pipeline.submit import SubmitError, submit

    config = (REPO / "experiments" / "local.yaml").read_text()
    long_config = config + "\n# " + "x" * 100_000 + "\n"
    with pytest.raises(
        SubmitError,
        match=r"train-op's executor input would be [\d,]+ bytes, over Linux's 131,072-byte limit "
        r".*config 10\d,\d{3} characters",
    ):
        submit("http://127.0.0.1:9", params=[f"config={long_config}", "num_shards=32"])
    ir = IR.load(REPO / "pipeline.yaml")
    fits = ir.with_arguments({"config": config, "num_shards": 32})
    assert rules.executor_inputs_over_the_limit(fits, 32) == []
    assert rules.executor_inputs_over_the_limit(ir.with_arguments({"config": long_config}), 32)


# ---- each rule on a hand-made IR
# ----------------------------------------------------------------------


def _ir(
    tasks: dict,
    components: dict,
    executors: dict,
    parameters: dict | None = None,
    platform: dict | None = None,
) -> IR:
    spec = {
        "root": {"dag": {"tasks": tasks}, "inputDefinitions": {"parameters": parameters or {}}},
        "components": components,
        "deploymentSpec": {"executors": executors},
    }
    return IR(
        spec, {"platforms": {"kubernetes": {"deploymentSpec": {"executors": platform or {}}}}}
    )


def _container(name: str, inputs: dict | None = None, outputs: dict | None = None, resources=None):
    component = {
        "executorLabel": f"exec-{name}",
        "inputDefinitions": inputs or {},
        "outputDefinitions": outputs or {},
    }
    return component, {"container": {"image": "i", "resources": resources or {}}}


DATASET = {"artifactType": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}}


def _loop_ir(anchor: bool, caching: bool = True, importer_name: str = "importer") -> IR:
    """make -> loop over a list parameter (importer -> work) -> use (collects work's outputs)."""
    make, make_exec = _container(
        "make",
        outputs={
            "artifacts": {"info": DATASET},
            "parameters": {"items": {"parameterType": "LIST"}},
        },
    )
    work_inputs = {"artifacts": {"data": DATASET, **({"info": DATASET} if anchor else {})}}
    work, work_exec = _container(
        "work", inputs=work_inputs, outputs={"artifacts": {"out": DATASET}}
    )
    use_inputs = {
        "artifacts": {
            "all": {**DATASET, "isArtifactList": True},
            **({"info": DATASET} if anchor else {}),
        }
    }
    use, use_exec = _container("use", inputs=use_inputs)
    cache = {"enableCache": caching}
    work_task_inputs = {
        "data": {
            "taskOutputArtifact": {"producerTask": "importer", "outputArtifactKey": "artifact"}
        }
    }
    if anchor:
        work_task_inputs["info"] = {"componentInputArtifact": "pipelinechannel--make-info"}
    loop = {
        "dag": {
            "tasks": {
                "importer": {
                    "taskInfo": {"name": importer_name},
                    "componentRef": {"name": "comp-importer"},
                    "inputs": {"parameters": {"uri": {"componentInputParameter": "item"}}},
                },
                "work": {
                    "taskInfo": {"name": "work"},
                    "componentRef": {"name": "comp-work"},
                    "cachingOptions": cache,
                    "inputs": {"artifacts": work_task_inputs},
                },
            },
            "outputs": {
                "artifacts": {
                    "work-out": {
                        "artifactSelectors": [
                            {"producerSubtask": "work", "outputArtifactKey": "out"}
                        ]
                    }
                }
            },
        },
        "inputDefinitions": {
            "parameters": {"items": {"parameterType": "LIST"}, "item": {"parameterType": "STRING"}}
        },
    }
    loop_inputs = {
        "parameters": {
            "items": {
                "taskOutputParameter": {"producerTask": "make", "outputParameterKey": "items"}
            }
        }
    }
    if anchor:
        loop_inputs["artifacts"] = {
            "pipelinechannel--make-info": {
                "taskOutputArtifact": {"producerTask": "make", "outputArtifactKey": "info"}
            }
        }
    use_task_inputs = {
        "all": {
            "taskOutputArtifact": {"producerTask": "for-loop-1", "outputArtifactKey": "work-out"}
        }
    }
    if anchor:
        use_task_inputs["info"] = {
            "taskOutputArtifact": {"producerTask": "make", "outputArtifactKey": "info"}
        }
    tasks = {
        "make": {
            "taskInfo": {"name": "make"},
            "componentRef": {"name": "comp-make"},
            "cachingOptions": cache,
        },
        "for-loop-1": {
            "taskInfo": {"name": "for-loop-1"},
            "componentRef": {"name": "comp-for-loop-1"},
            "inputs": loop_inputs,
            "parameterIterator": {"itemInput": "item", "items": {"inputParameter": "items"}},
        },
        "use": {
            "taskInfo": {"name": "use"},
            "componentRef": {"name": "comp-use"},
            "cachingOptions": cache,
            "inputs": {"artifacts": use_task_inputs},
        },
    }
    importer = {
        "executorLabel": "exec-importer",
        "outputDefinitions": {"artifacts": {"artifact": DATASET}},
        "inputDefinitions": {"parameters": {"uri": {"parameterType": "STRING"}}},
    }
    return _ir(
        tasks,
        {
            "comp-make": make,
            "comp-work": work,
            "comp-use": use,
            "comp-for-loop-1": loop,
            "comp-importer": importer,
        },
        {
            "exec-make": make_exec,
            "exec-work": work_exec,
            "exec-use": use_exec,
            "exec-importer": {
                "importer": {"artifactUri": {"runtimeParameter": "uri"}, "reimport": False}
            },
        },
    )


def test_rule_recorded_names_on_an_importer_with_a_display_name():
    assert rules.recorded_names(_loop_ir(anchor=True))[0] == []
    (finding,) = rules.recorded_names(_loop_ir(anchor=True, importer_name="fetch"))[0]
    assert (
        finding.task == "for-loop-1/importer"
        and "'fetch_{for-loop-1 dag id}_idx_0'" in finding.message
    )


def test_rule_buckets_under_caching_wants_an_input_that_is_a_cache_hit_whenever_an_element_is():
    (finding,) = rules.buckets_under_caching(_loop_ir(anchor=False))[0]
    assert finding.task == "use" and finding.message.startswith(
        "all[k] comes from iteration k of for-loop-1/work"
    )
    assert rules.buckets_under_caching(_loop_ir(anchor=True))[0] == []
    findings, notes = rules.buckets_under_caching(_loop_ir(anchor=False, caching=False))
    assert findings == [] and "never a cache hit" in notes[0].text


def test_rule_executor_input_size_counts_every_collected_artifact():
    ir = _loop_ir(anchor=True)
    assert rules.executor_input_size(ir, 64)[0] == []
    (finding,) = rules.executor_input_size(ir, 100)[0]  # 100 artifacts of ~0.87 KB
    assert finding.task == "use" and "more than 50%" in finding.message
    (finding,) = rules.executor_input_size(ir, 160)[0]
    assert "the pod cannot start (E2BIG)" in finding.message


def _retried(policy: dict) -> IR:
    ir = _loop_ir(anchor=True)
    ir.spec["root"]["dag"]["tasks"]["use"]["retryPolicy"] = policy
    return IR(ir.spec)


def test_rule_retries_counts_the_window_from_the_first_attempt_and_wants_a_whole_factor():
    week = {
        "maxRetryCount": 3,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "604800s",
    }
    findings, notes = rules.retries(_retried(week), {"use": 24 * 3600})
    assert findings == [] and any(
        "2.17.0: retryPolicy OnError" in n.text and "NOT retried" in n.text for n in notes
    )
    (finding,) = rules.retries(_retried({**week, "backoffMaxDuration": "3600s"}))[0]
    assert "an attempt that fails after 3,600 s is never retried" in finding.message
    (finding,) = rules.retries(_retried({**week, "backoffFactor": 1.5}))[0]
    assert "not a whole number" in finding.message


def test_rule_pod_spec_parameters_reads_resources_secrets_and_selectors_as_the_driver_does():
    component, executor = _container(
        "job",
        inputs={"parameters": {"pipelinechannel--count": {"parameterType": "NUMBER_INTEGER"}}},
        resources={
            "accelerator": {
                "resourceCount": "{{$.inputs.parameters['pipelinechannel--count']}}",
                "type": "gpu",
            }
        },
    )
    tasks = {
        "job": {
            "taskInfo": {"name": "job"},
            "componentRef": {"name": "comp-job"},
            "inputs": {
                "parameters": {"pipelinechannel--count": {"componentInputParameter": "count"}}
            },
        }
    }
    parameters = {
        "count": {"parameterType": "NUMBER_INTEGER", "defaultValue": 1.0},
        "secret": {"parameterType": "STRING", "defaultValue": "my.secret"},
        "selector": {"parameterType": "LIST", "defaultValue": []},
    }
    platform = {
        "exec-job": {
            "secretAsVolume": [
                {"secretNameParameter": {"componentInputParameter": "secret"}, "mountPath": "/s"}
            ],
            "nodeSelector": {"nodeSelectorJson": {"componentInputParameter": "selector"}},
        }
    }
    findings, _ = rules.pod_spec_parameters(
        _ir(tasks, {"comp-job": component}, {"exec-job": executor}, parameters, platform)
    )
    messages = sorted(f.message for f in findings)
    assert len(messages) == 3
    assert "nodeSelectorJson reads a LIST" in messages[0]
    assert "reads pipelinechannel--count, a NUMBER_INTEGER, with GetStringValue()" in messages[1]
    assert "secretAsVolume name 'my.secret'" in messages[2]


def test_rule_importer_uris_come_from_the_parent_dag_only():
    ir = _loop_ir(anchor=True)
    assert rules.importer_uris(ir)[0] == []
    spec = copy.deepcopy(ir.spec)
    spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["importer"]["inputs"]["parameters"][
        "uri"
    ] = {"taskOutputParameter": {"producerTask": "work", "outputParameterKey": "uri"}}
    (finding,) = rules.importer_uris(IR(spec))[0]
    assert "parent DAG does not have input parameter" in finding.message
