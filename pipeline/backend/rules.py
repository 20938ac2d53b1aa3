"""The backend's rules, one function each, applied to every task and every input of a compiled IR.

Each rule names the code it models: kubeflow/pipelines at tags 2.14.0 and 2.17.0 (2.15.0 and 2.16.0
read too where they differ), and Argo Workflows v3.6.7 (deployed by KFP 2.14; 2.15 and 2.16 deploy
v3.7.3) and v4.0.5 (deployed by 2.17). Paths are under kubeflow/pipelines' backend/src/v2/ unless
they start with "argo:". Line numbers are those of the named tag. A rule returns `Finding`s (the
pipeline fails or misbehaves on a backend) and `Note`s (what the backend does, for docs/CLUSTER.md
and the tests)."""

from __future__ import annotations

import dataclasses
import json
import re

from pipeline.backend.ir import IR, Source, Task

VERSIONS = ("2.14.0", "2.15.0", "2.16.0", "2.17.0")

# Linux: one argv or envp string may not exceed MAX_ARG_STRLEN = 32 pages
# (include/uapi/linux/binfmts.h), 131,072 bytes with 4 KiB pages, terminating NUL included; execve
# fails with E2BIG beyond it.
MAX_ARG_STRLEN = 32 * 4096
# The margin the pipeline keeps under it at its maximum fan-out: executor inputs stay below half.
ARG_MARGIN = 0.5

# What an input artifact looks like in --executor_input when the driver resolved it from ML Metadata
# (metadata/converter.go toRuntimeArtifact: name = MLMD id, every property and custom property into
# metadata; metadata/client.go RecordArtifact adds display_name and store_session_info, the JSON of
# the store's session: config/env.go getDefaultMinioSessionInfo; SeaweedFS on 2.15+ answers the same
# way).
SESSION_INFO = {
    "Provider": "minio",
    "Params": {
        "accessKeyKey": "accesskey",
        "disableSSL": "true",
        "endpoint": "seaweedfs.kubeflow.svc.cluster.local:9000",
        "fromEnv": "false",
        "maxRetries": "5",
        "region": "minio",
        "secretKeyKey": "secretkey",
        "secretName": "mlpipeline-minio-artifact",
    },
}
RUN_UUID = "0b5c1f9e-3d4a-4c8e-9a51-7f2d6e8b9c10"
PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
# The metadata a step of this project writes on an output artifact: scalar fields only
# (pipeline/ops.py).
USER_METADATA_BYTES = 256
# A string parameter whose value comes from a task (a URI, a secret name): realistic upper size.
TASK_STRING_BYTES = 256

# An attempt of a retried task is assumed to run at most this long (override per display name or
# key).
DEFAULT_LONGEST_ATTEMPT_S = 24 * 3600

DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
PLACEHOLDER = re.compile(
    r"\{\{\$\.inputs\.parameters\['(.+?)'\]\}\}"
)  # driver/util.go inputPipelineChannelPattern


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str
    task: str
    message: str

    def __str__(self):
        return f"[{self.rule}] {self.task}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Note:
    rule: str
    task: str
    text: str


def _finding(rule, task: Task, message: str) -> Finding:
    return Finding(rule.__name__, task.path, message)


# ---- 1. the name an execution is recorded under, and the key its consumers look it up by
# --------------


def recorded_names(ir: IR, iterations: int = 2):
    """SOURCES: component/importer_launcher.go ImportLauncher.Execute, `TaskName: l.task
    .GetTaskInfo().GetName()` (2.14.0 l.123, 2.17.0 l.136): an importer's execution is
    recorded under its display name; the compiler passes importers no --task_name
    (compiler/argocompiler/importer.go importerTask, addImporterTemplate). Container tasks get
    `--task_name` = the task key (argocompiler/container.go containerDriverTask, 2.14.0 l.198,
    2.17.0 l.203); DAG tasks too (argocompiler/dag.go dagDriverTask, 2.14.0 l.564, 2.17.0 l.582),
    except a ParallelFor's own drivers before 2.16.0, which fall back to the display name
    (driver/dag.go DAG, `taskName = opts.Task.GetTaskInfo().GetName()`, 2.14.0 l.101; #12808 passes
    the key from 2.16.0). Consumers look a producer up by its key, `<key>_<dag id>`, plus `_idx_<i>`
    inside an iteration (driver/resolve.go resolveUpstreamArtifacts, InferIndexedTaskName, 2.14.0
    l.654/l.1062, 2.17.0 l.700/l.1158; "cannot find producer task" 2.14.0 l.686, 2.17.0 l.732), in
    the map metadata/client.go GetExecutionsInDAG builds from the recorded names (2.14.0 l.827,
    2.17.0 l.983; GetTaskNameWithDagID, GetParallelForTaskName)."""
    findings, notes = [], []
    for task in ir.tasks:
        dag = f"{{{'/'.join(task.dag) or 'root'} dag id}}"
        suffixes = [f"_idx_{i}" for i in range(iterations)] if task.loops else [""]
        failing = []
        for version in VERSIONS:
            name = recorded_name(task, version)
            for suffix in suffixes:
                notes.append(
                    Note(
                        "recorded_names",
                        task.path,
                        f"{version}: recorded {name}_{dag}{suffix}, "
                        f"looked up as {task.key}_{dag}{suffix}",
                    )
                )
            if name != task.key and _has_consumers(ir, task):
                failing.append(version)
        if failing:
            looked_up, recorded = (
                f"{task.key}_{dag}{suffixes[0]}",
                f"{recorded_name(task, failing[0])}_{dag}{suffixes[0]}",
            )
            findings.append(
                _finding(
                    recorded_names,
                    task,
                    (
                        f"on {', '.join(failing)} its execution is recorded as {recorded!r} "
                        f"(display name {task.display_name!r}) but consumers look up "
                        f"{looked_up!r}, and so on for every iteration: they fail with 'cannot "
                        f'find producer task "{looked_up}"\''
                    ),
                )
            )
    return findings, notes


def recorded_name(task: Task, version: str) -> str:
    if task.kind == "importer":
        return task.display_name
    if task.kind == "dag" and task.is_iterator and version < "2.16.0":
        return task.display_name or task.key
    return task.key


def _has_consumers(ir: IR, producer: Task) -> bool:
    for task in ir.tasks:
        if task.dag != producer.dag:
            continue
        for kind in ("artifacts", "parameters"):
            for spec in task.spec.get("inputs", {}).get(kind, {}).values():
                output = spec.get("taskOutputArtifact") or spec.get("taskOutputParameter")
                if output and output.get("producerTask") == producer.key:
                    return True
    if producer.dag:  # a DAG's outputs select from its subtasks
        outputs = ir.task(producer.dag[:-1], producer.dag[-1]).component["dag"].get("outputs", {})
        for selectors in outputs.get("artifacts", {}).values():
            if any(s["producerSubtask"] == producer.key for s in selectors["artifactSelectors"]):
                return True
    return False


# ---- 2. collected inputs and their order
# ---------------------------------------------------------------


def collected_inputs(ir: IR, max_loop_items: int):
    """SOURCES: driver/resolve.go CollectInputs (2.14.0 l.821, 2.17.0 l.869): breadth-first from the
    ParallelFor's DAG execution, queueing its iterations `for i := range iteration_count` in index
    order, so element i of a collected list is iteration i's output (the i-th item of the loop's
    list)."""
    findings, notes = [], []
    for task in ir.executing():
        for name in task.spec.get("inputs", {}).get("artifacts", {}):
            for source in ir.artifact_sources(task, name):
                if source.collected_over is not None:
                    notes.append(
                        Note(
                            "collected_inputs",
                            task.path,
                            (
                                f"{name}: up to {max_loop_items} artifacts, element i = output "
                                f"{source.output!r} of {source.task.path} in iteration i of "
                                f"{source.collected_over.path}"
                            ),
                        )
                    )
    return findings, notes


# ---- 3. the size of --executor_input
# -----------------------------------------------------------------


def executor_input_size(ir: IR, max_loop_items: int):
    """SOURCES: driver/driver.go initPodSpecPatch puts the whole executor input JSON in the
    launcher's argv (`"--executor_input", string(executorInputJSON)`, 2.14.0 l.192, 2.17.0 l.326),
    and component/launcher_v2.go compileCmdAndArgs substitutes it for `{{$}}` in the component's
    arguments (2.14.0 l.716, 2.17.0 l.1051): each is one argv string, refused by execve over
    MAX_ARG_STRLEN. Every input artifact is there with its URI and all its metadata
    (metadata/converter.go toRuntimeArtifact, metadata/client.go RecordArtifact: display_name,
    store_session_info)."""
    findings, notes = [], []
    for task in ir.executing():
        if task.kind != "container":
            continue
        size = executor_input_bytes(ir, task, max_loop_items)
        notes.append(
            Note(
                "executor_input_size",
                task.path,
                f"{size:,} bytes at {max_loop_items} loop items ({size / MAX_ARG_STRLEN:.0%} of "
                f"MAX_ARG_STRLEN)",
            )
        )
        if size >= MAX_ARG_STRLEN:
            findings.append(
                _finding(
                    executor_input_size,
                    task,
                    (
                        f"its --executor_input is {size:,} bytes at {max_loop_items} loop items, "
                        f"over Linux's {MAX_ARG_STRLEN:,}-byte limit on one argument: the pod "
                        "cannot start (E2BIG)"
                    ),
                )
            )
        elif size > ARG_MARGIN * MAX_ARG_STRLEN:
            findings.append(
                _finding(
                    executor_input_size,
                    task,
                    (
                        f"its --executor_input is {size:,} bytes at {max_loop_items} loop items, "
                        f"more than {ARG_MARGIN:.0%} of Linux's {MAX_ARG_STRLEN:,}-byte limit on "
                        "one argument"
                    ),
                )
            )
    return findings, notes


def executor_inputs_over_the_limit(ir: IR, loop_items: int) -> list[tuple[str, int]]:
    """[(task path, bytes)] of the containers whose executor input, as executor_input_size
    builds it for this IR's parameter values, reaches MAX_ARG_STRLEN: the pods that could not
    start. For one run's arguments (IR.with_arguments), whose strings are exact: the compiled
    defaults keep ARG_MARGIN, but a long `config` text eats into it."""
    over = []
    for task in ir.executing():
        if task.kind == "container":
            size = executor_input_bytes(ir, task, loop_items)
            if size >= MAX_ARG_STRLEN:
                over.append((task.path, size))
    return over


def executor_input_bytes(ir: IR, task: Task, loop_items: int) -> int:
    """The size of `task`'s --executor_input JSON as the driver writes it, at `loop_items`."""
    return len(json.dumps(_executor_input(ir, task, loop_items), separators=(",", ":")))


def realistic_artifact(task_key: str, output: str, schema: str = "system.Dataset") -> dict:
    """A RuntimeArtifact as the driver resolves it from ML Metadata, at realistic sizes."""
    uri = f"{PIPELINE_ROOT}/pose-estimation-for-mobile/{RUN_UUID}/{task_key}/{RUN_UUID}/{output}"
    return {
        "name": "123456789",
        "type": {"schemaTitle": schema, "schemaVersion": "0.0.1"},
        "uri": uri,
        "metadata": {
            "display_name": output,
            "store_session_info": json.dumps(SESSION_INFO),
            "user": "x" * USER_METADATA_BYTES,
        },
    }


def _executor_input(ir: IR, task: Task, max_loop_items: int) -> dict:
    parameters, artifacts = {}, {}
    for name, spec in task.component.get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in task.spec.get("inputs", {}).get("parameters", {}):
            continue
        parameters[name] = _realistic_value(
            ir, ir.parameter_source(task, name), spec["parameterType"]
        )
    for name in task.spec.get("inputs", {}).get("artifacts", {}):
        elements = []
        for source in ir.artifact_sources(task, name):
            count = max_loop_items if source.collected_over is not None else 1
            key = source.task.key if source.task else "importer"
            elements += [realistic_artifact(key, source.output)] * count
        artifacts[name] = {"artifacts": elements}
    outputs = task.component.get("outputDefinitions", {})
    output_artifacts = {
        name: {"artifacts": [dict(realistic_artifact(task.key, name), name="", metadata={})]}
        for name in outputs.get("artifacts", {})
    }
    output_parameters = {
        name: {"outputFile": f"/tmp/kfp/outputs/{name}"} for name in outputs.get("parameters", {})
    }
    return {
        "inputs": {"parameterValues": parameters, "artifacts": artifacts},
        "outputs": {
            "artifacts": output_artifacts,
            "parameters": output_parameters,
            "outputFile": "/tmp/kfp_outputs/output_metadata.json",
        },
    }


def _realistic_value(ir: IR, source: Source, parameter_type: str):
    if source.kind == "constant" and source.collected_over is None:
        return source.value
    if source.kind == "root" and source.collected_over is None:
        return ir.root_parameters().get(source.name, {}).get("defaultValue", "")
    if parameter_type in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
        return 123456789
    if parameter_type == "BOOLEAN":
        return False
    return "u" * TASK_STRING_BYTES


# ---- 4. which buckets the launcher opens, with any mix of cache hits
# ----------------------------------


def buckets_under_caching(ir: IR):
    """SOURCES: component/launcher_v2.go fetchNonDefaultBuckets opens a bucket for an input artifact
    outside this run's prefix (<pipeline root>/<pipeline>/<run id>, metadata/client.go GetPipeline)
    only for element [0] of each input's list (`artifact := artifactList.Artifacts[0]`, "TODO:
    Support multiple artifacts", 2.14.0 l.684, 2.17.0 l.1019), keyed by scheme and bucket;
    downloadArtifacts then fails for any other element outside the prefix whose bucket was not
    opened ("failed to get bucket when downloading input artifact", 2.14.0 l.653, 2.17.0 l.988). A
    cache hit hands on the earlier run's artifacts (driver/cache.go reuseCachedOutputs), so they lie
    under that run's prefix. A task can be a cache hit only if its cache key is unchanged
    (cacheutils/cache.go GenerateCacheKey, 2.14.0 l.174, 2.17.0 l.173: input artifacts by MLMD id,
    so an artifact made afresh in this run means a miss).

    For every collected input: if iteration k's producer can be a cache hit while iteration 0's is
    not, element k lies outside this run's prefix and element 0 inside it; that works only when
    another input of the same task, whose producer is then necessarily a cache hit too, has its
    element [0] outside the prefix (same bucket: the pipeline root's, as long as the root is not
    changed between runs)."""
    findings, notes = [], []
    for task in ir.executing():
        inputs = task.spec.get("inputs", {}).get("artifacts", {})
        for name in inputs:
            for source in ir.artifact_sources(task, name):
                if source.collected_over is None:
                    continue
                if source.task.kind == "importer":
                    findings.append(
                        _finding(
                            buckets_under_caching,
                            task,
                            (
                                f"{name} collects imported artifacts from {source.task.path}: "
                                "their URIs can lie in any bucket, and the launcher opens only "
                                "element [0]'s"
                            ),
                        )
                    )
                    continue
                forced = _forced_cache_hits(ir, source.task)
                if forced is None:
                    notes.append(
                        Note(
                            "buckets_under_caching",
                            task.path,
                            (
                                f"{name}: {source.task.path} is never a cache hit, so every "
                                "element lies under this run's prefix"
                            ),
                        )
                    )
                    continue
                anchors = [
                    other
                    for other in inputs
                    if other != name and _anchored(ir, task, other, forced)
                ]
                if anchors:
                    notes.append(
                        Note(
                            "buckets_under_caching",
                            task.path,
                            (
                                f"{name}: when iteration k of {source.task.path} is a cache hit, "
                                "so is "
                                f"{', '.join(sorted(t.path for t in forced if not t.loops))}; "
                                f"input {anchors[0]}[0] is then outside this run's prefix and "
                                "opens the bucket for every element"
                            ),
                        )
                    )
                else:
                    findings.append(
                        _finding(
                            buckets_under_caching,
                            task,
                            (
                                f"{name}[k] comes from iteration k of {source.task.path}, which "
                                "can be a cache hit of an earlier run while iteration 0 runs "
                                "afresh: element k is then outside this run's prefix, and the "
                                "launcher, which opens a bucket only for element [0], fails with "
                                f"'failed to get bucket when downloading input artifact {name}'"
                            ),
                        )
                    )
    return findings, notes


def _forced_cache_hits(ir: IR, task: Task) -> set | None:
    """The tasks that must be cache hits for `task` to be one (its artifact producers, transitively:
    an artifact made afresh has a new MLMD id, so the consumer's cache key changes); None if it
    never can."""
    forced, stack = {task}, [task]
    while stack:
        current = stack.pop()
        if not current.caching:
            return None
        for name in current.spec.get("inputs", {}).get("artifacts", {}):
            for source in ir.artifact_sources(current, name):
                producer = source.task
                if producer is not None and producer.kind == "container" and producer not in forced:
                    forced.add(producer)
                    stack.append(producer)
    return forced


def _anchored(ir: IR, task: Task, name: str, forced: set) -> bool:
    sources = ir.artifact_sources(task, name)
    return (
        len(sources) == 1
        and sources[0].collected_over is None
        and sources[0].task is not None
        and sources[0].task.kind == "container"
        and sources[0].task in forced
    )


# ---- 5. retries, as Argo runs them
# -------------------------------------------------------------------

# The policy a KFP retryStrategy ends up with, on each release's stock manifests.
ARGO_RETRY_POLICY = {
    "2.14.0": (
        "OnFailure",
        "Argo v3.6.7 RetryPolicyActual default (l.2072; no templateDefaults in KFP's manifests)",
    ),
    "2.15.0": (
        "OnFailure",
        "Argo v3.7.3 RetryPolicyActual default (l.2166; no templateDefaults in KFP's manifests)",
    ),
    "2.16.0": (
        "OnFailure",
        "Argo v3.7.3 RetryPolicyActual default (l.2166; no templateDefaults in KFP's manifests)",
    ),
    "2.17.0": (
        "OnError",
        "manifests/kustomize/third-party/argo/base/workflow-controller-configmap-patch.yaml "
        "workflowDefaults.spec.templateDefaults.retryStrategy.retryPolicy, merged into every "
        "template (argo: workflow/controller/operator.go mergedTemplateDefaultsInto)",
    ),
}


def retries(ir: IR, longest_attempt_s: dict | None = None):
    """SOURCES: compiler/argocompiler/container.go getTaskRetryStrategyFromInput (2.14.0 l.666,
    2.17.0 l.667) makes the IR's retryPolicy an Argo retryStrategy {limit, backoff{duration, factor,
    maxDuration}} and sets no retryPolicy; getTaskRetryParametersWithValues (2.14.0 l.613, 2.17.0
    l.614) passes the durations as whole seconds. argo: workflow/controller/operator.go
    processNodeRetries (v3.6.7 l.957, v4.0.5 l.978): maxDuration counts from the first attempt's
    start (`firstChildNode.StartedAt.Add`, v3.6.7 l.1005, v4.0.5 l.1037); past it no retry starts
    ("Max duration limit exceeded"), and every retry pod gets that instant as its deadline
    (`opts.executionDeadline = maxDurationDeadline`, v3.6.7 l.1048, v4.0.5 l.1095); the backoff
    factor is read with intstr.Int32 (v3.6.7 l.1023, v4.0.5 l.1055), which refuses a non-integer;
    the policy is RetryPolicyActual (pkg/apis/workflow/v1alpha1/ workflow_types.go, v3.6.7 l.2072,
    v4.0.5 l.2295): OnFailure unless set, and only OnFailure/Always retry a Failed node (a non-zero
    exit, an evicted or shut-down pod)."""
    findings, notes = [], []
    for task in ir.executing():
        policy = task.spec.get("retryPolicy")
        if not policy:
            continue
        count = int(policy.get("maxRetryCount", 0))
        base = _seconds(policy.get("backoffDuration", "0s"))
        factor = float(policy.get("backoffFactor", 2.0))
        window = _seconds(policy.get("backoffMaxDuration", "3600s"))
        longest = longest_attempt_s or {}
        attempt = longest.get(task.display_name, longest.get(task.key, DEFAULT_LONGEST_ATTEMPT_S))
        waits = [base * factor**k for k in range(count)]
        needed = (count + 1) * attempt + sum(waits)
        notes.append(
            Note(
                "retries",
                task.path,
                (
                    f"{count} retries, waits {', '.join(f'{w:.0f} s' for w in waits)}; every retry "
                    f"must start, and is killed, by first start + {window:,.0f} s; {count + 1} "
                    f"attempts of up to {attempt:,} s and the waits need {needed:,.0f} s"
                ),
            )
        )
        for version, (name, where) in ARGO_RETRY_POLICY.items():
            retried = "retried" if name in ("OnFailure", "Always") else "NOT retried"
            notes.append(
                Note(
                    "retries",
                    task.path,
                    (
                        f"{version}: retryPolicy {name} ({where}): a non-zero exit is {retried}; "
                        "the IR cannot set a policy (pipeline_spec.proto RetryPolicy has none)"
                    ),
                )
            )
        if factor != int(factor):
            findings.append(
                _finding(
                    retries,
                    task,
                    (
                        f"backoff factor {factor} is not a whole number: Argo's intstr.Int32 "
                        "refuses it and the retry errors instead of waiting"
                    ),
                )
            )
        if window < needed:
            findings.append(
                _finding(
                    retries,
                    task,
                    (
                        f"backoff max duration {window:,.0f} s counts from the first attempt's "
                        f"start: an attempt that fails after {window:,.0f} s is never retried, and "
                        f"a retry is killed at first start + {window:,.0f} s, while {count + 1} "
                        f"attempts of up to {attempt:,} s need {needed:,.0f} s"
                    ),
                )
            )
    return findings, notes


def _seconds(text: str) -> float:
    return float(str(text).rstrip("s"))


# ---- 6. parameters read by the driver for the pod spec and conditions
# ---------------------------------


def pod_spec_parameters(ir: IR):
    """SOURCES: driver/resolve.go resolvePodSpecInputRuntimeParameter (2.14.0 l.770, 2.17.0 l.818)
    reads a resource placeholder with `val.GetStringValue()`: "" for a number, and then no limit is
    set (driver/driver.go initPodSpecPatch, 2.14.0 l.155, 2.17.0 l.246). driver/k8s.go
    extendPodSpecPatch (2.14.0 l.109, 2.17.0 l.131): a secret
    name with resolveInputParameterStr (driver/resolve.go 2.14.0 l.455, 2.17.0 l.501: a non-empty
    string, else the task fails), used as the volume's name too (`Name: secretName`, 2.14.0 l.257,
    2.17.0 l.322), so a name with '.' or over 63 characters makes an invalid pod; a node selector
    with resolveK8sJsonParameter (`GetStructValue()`, 2.14.0 l.157, 2.17.0 l.199); tolerations as a
    struct or a list (2.14.0 l.190, 2.17.0 l.247). A condition is CEL over the executor input's
    parameter values (driver/dag.go DAG, 2.14.0 l.82-84, 2.17.0 l.84-86; expression/expression.go
    Expr.Condition, l.134 in both); argocompiler/dag.go `task` refuses a condition on an importer
    task ("triggerPolicy.condition on importer task is not supported", 2.14.0 l.326, 2.17.0 l.341)."""
    findings, notes = [], []
    for task in ir.executing():
        if task.kind == "importer":
            continue
        resources = ir.executors[task.executor_label]["container"].get("resources", {})
        fields = {k: v for k, v in resources.items() if isinstance(v, str)}
        fields.update(
            {
                f"accelerator.{k}": v
                for k, v in resources.get("accelerator", {}).items()
                if isinstance(v, str)
            }
        )
        for field, value in fields.items():
            match = PLACEHOLDER.fullmatch(value)
            if not match:
                continue
            parameter_type = _value_type(ir, task, ir.parameter_source(task, match.group(1)))
            notes.append(
                Note(
                    "pod_spec_parameters",
                    task.path,
                    f"resources {field}: GetStringValue() of {match.group(1)} ({parameter_type})",
                )
            )
            if parameter_type != "STRING":
                findings.append(
                    _finding(
                        pod_spec_parameters,
                        task,
                        (
                            f"resource field {field} reads {match.group(1)}, a {parameter_type}, "
                            "with GetStringValue(): "
                            f'it resolves to "" and the pod gets no such limit'
                        ),
                    )
                )
        platform = ir.platform.get(task.executor_label, {})
        for kind in ("secretAsVolume", "secretAsEnv"):
            for entry in platform.get(kind, []):
                if "secretNameParameter" in entry:
                    findings += _check_secret_name(
                        ir, task, kind, entry["secretNameParameter"], notes
                    )
                elif (
                    "secretName" in entry
                    and not DNS_1123_LABEL.fullmatch(entry["secretName"])
                    and kind == "secretAsVolume"
                ):
                    findings.append(
                        _finding(
                            pod_spec_parameters,
                            task,
                            (
                                f"secret {entry['secretName']!r} becomes a volume name, which must "
                                "be a DNS-1123 label"
                            ),
                        )
                    )
        selector = platform.get("nodeSelector", {}).get("nodeSelectorJson")
        if selector:
            findings += _check_json(ir, task, "nodeSelectorJson", selector, {"STRUCT"}, notes)
        for toleration in platform.get("tolerations", []):
            if "tolerationJson" in toleration:
                findings += _check_json(
                    ir,
                    task,
                    "tolerationJson",
                    toleration["tolerationJson"],
                    {"STRUCT", "LIST"},
                    notes,
                )
    for task in ir.tasks:
        condition = task.spec.get("triggerPolicy", {}).get("condition")
        if not condition:
            continue
        if task.kind == "importer":
            findings.append(
                _finding(
                    pod_spec_parameters,
                    task,
                    "an importer task cannot have a condition (argocompiler/dag.go task)",
                )
            )
        for name in re.findall(r"parameter_values\['(.+?)'\]", condition):
            known = name in task.spec.get("inputs", {}).get("parameters", {})
            notes.append(
                Note("pod_spec_parameters", task.path, f"condition {condition!r}: CEL reads {name}")
            )
            if not known:
                findings.append(
                    _finding(pod_spec_parameters, task, f"condition reads {name}, not an input")
                )
    return findings, notes


def _resolved(ir: IR, task: Task, spec: dict, how: str, notes: list) -> tuple:
    """(source, parameter type) of a pod-spec parameter; notes `how` the driver resolves it."""
    source = ir._parameter_spec_source(task.dag, spec)
    parameter_type = _value_type(ir, task, source)
    notes.append(
        Note("pod_spec_parameters", task.path, f"{how} of {_describe(source)} ({parameter_type})")
    )
    return source, parameter_type


def _check_secret_name(ir: IR, task: Task, kind: str, spec: dict, notes: list) -> list:
    source, parameter_type = _resolved(
        ir, task, spec, f"{kind} name: resolveInputParameterStr", notes
    )
    findings = []
    if parameter_type != "STRING":
        findings.append(
            _finding(
                pod_spec_parameters,
                task,
                f"{kind} name is a {parameter_type}: the driver wants a non-empty string",
            )
        )
    value = _known_value(ir, source)
    if isinstance(value, str) and (
        not value
        or (kind == "secretAsVolume" and not DNS_1123_LABEL.fullmatch(value) or len(value) > 63)
    ):
        findings.append(
            _finding(
                pod_spec_parameters,
                task,
                (
                    f'{kind} name {value!r}: the driver fails on "" and names the volume after the '
                    f"secret, which must be a DNS-1123 label (no '.', at most 63 characters)"
                ),
            )
        )
    return findings


def _check_json(ir: IR, task: Task, field: str, spec: dict, allowed: set, notes: list) -> list:
    source, parameter_type = _resolved(ir, task, spec, f"{field}: resolveK8sJsonParameter", notes)
    if parameter_type not in allowed:
        return [
            _finding(
                pod_spec_parameters,
                task,
                f"{field} reads a {parameter_type}; the driver wants "
                f"{' or '.join(sorted(allowed))}",
            )
        ]
    return []


def _value_type(ir: IR, task: Task, source: Source) -> str:
    if source.collected_over is not None:
        return "LIST ITEM"
    if source.kind == "root":
        return ir.root_parameters().get(source.name, {}).get("parameterType", "?")
    if source.kind == "task":
        outputs = source.task.component.get("outputDefinitions", {}).get("parameters", {})
        return outputs.get(source.output, {}).get("parameterType", "?")
    return {
        str: "STRING",
        bool: "BOOLEAN",
        int: "NUMBER_INTEGER",
        float: "NUMBER_DOUBLE",
        dict: "STRUCT",
        list: "LIST",
    }.get(type(source.value), "?")


def _known_value(ir: IR, source: Source):
    if source.kind == "constant":
        return source.value
    if source.kind == "root":
        return ir.root_parameters().get(source.name, {}).get("defaultValue")
    return None


def _describe(source: Source) -> str:
    if source.kind == "task":
        return f"output {source.output} of {source.task.path}"
    return f"run parameter {source.name}" if source.kind == "root" else f"constant {source.value!r}"


# ---- 7. importers
# ------------------------------------------------------------------------------------


def importer_uris(ir: IR):
    """SOURCES: component/importer_launcher.go ImportSpecToMLMDArtifact (2.14.0 l.174, 2.17.0
    l.187): a runtime URI is read from the parent DAG's input parameters only
    (`GetComponentInputParameter()`), so it must be a DAG input (a run parameter, a loop item),
    never a sibling task's output; with reimport false, metadata/client.go FindMatchedArtifact
    (2.14.0 l.1147, 2.17.0 l.1303; called from importer_launcher.go 2.14.0 l.164, 2.17.0 l.177)
    gives the same MLMD artifact for the same URI, so consumers' cache keys hold."""
    findings, notes = [], []
    for task in ir.executing():
        if task.kind != "importer":
            continue
        importer = ir.executors[task.executor_label]["importer"]
        parameter = importer.get("artifactUri", {}).get("runtimeParameter")
        if parameter:
            spec = task.spec["inputs"]["parameters"][parameter]
            if "componentInputParameter" not in spec:
                findings.append(
                    _finding(
                        importer_uris,
                        task,
                        (
                            f"its URI comes from {spec}, but the importer reads only its DAG's "
                            "input parameters: 'parent DAG does not have input parameter'"
                        ),
                    )
                )
        notes.append(
            Note("importer_uris", task.path, f"reimport={importer.get('reimport', False)}")
        )
    return findings, notes


# ---- cache keys (not a failure rule: what a rerun reuses)
# -------------------------------------------


def cache_key_inputs(ir: IR, task: Task) -> dict:
    """What decides whether `task` is a cache hit (cacheutils/cache.go GenerateCacheKey: input
    artifacts by MLMD id, input parameter values, output parameter types, command, args and image;
    driver/cache.go getFingerPrint, 2.14.0 l.79, 2.17.0 l.83). Returns {"cacheable": the task and
    every task that makes its input artifacts have caching on, "run_parameters": the run parameters
    that reach the key, transitively}."""
    parameters, seen, stack = set(), set(), [task]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for source in ir.direct_sources(current):
            if source.kind == "root":
                parameters.add(source.name)
            elif source.kind == "task":
                stack.append(source.task)
    # A parameter made afresh keeps its value; an artifact made afresh gets a new MLMD id, a new
    # key.
    cacheable = task.kind != "container" or _forced_cache_hits(ir, task) is not None
    importers = {
        s.task
        for t in (_forced_cache_hits(ir, task) or {task})
        for name in t.spec.get("inputs", {}).get("artifacts", {})
        for s in ir.artifact_sources(t, name)
        if s.task is not None and s.task.kind == "importer"
    }
    if any(ir.executors[i.executor_label]["importer"].get("reimport") for i in importers):
        cacheable = False
    return {"cacheable": cacheable, "run_parameters": parameters}


RULES = (
    recorded_names,
    collected_inputs,
    executor_input_size,
    buckets_under_caching,
    retries,
    pod_spec_parameters,
    importer_uris,
)
