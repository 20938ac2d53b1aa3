"""Submits the compiled pipeline (pipeline.yaml) as a run on a Kubeflow Pipelines cluster.

Takes    the KFP API endpoint, an experiment name, `name=value` pipeline arguments, a pipeline root.
Does     checks every argument against the parameters pipeline.yaml declares, and refuses a storage URI
         of a scheme its parameter does not take, a local-path `source`, `publish_uri` or `checkpoint_uri`
         (a pod cannot see this machine's disk), and an s3:// URI with no credentials to go with it
         (pipeline/cluster.py check_storage_parameters), before any network call;
         then creates the run with kfp.Client (with a bearer token on multi-user Kubeflow); an unreachable
         or refusing endpoint is a clear error.
         Every value that can be checked without data is checked too (pipeline/preflight.py).
Writes   nothing locally; prints the run's id and its URL in the KFP UI.
"""

import logging
from pathlib import Path

import yaml

from pipeline import preflight
from pipeline.cluster import ClusterContractError, check_storage_parameters
from pipeline.params import ParameterError, declared_defaults, declared_parameters, parse_params
from pose.files import storage

log = logging.getLogger("pipeline.submit")

DEFAULT_PACKAGE = Path(__file__).resolve().parent.parent / "pipeline.yaml"
DEFAULT_EXPERIMENT = "pose-estimation"


class SubmitError(RuntimeError):
    """The run could not be created: bad arguments, a missing package, or a cluster that does not answer."""


def load_package(package: str | Path) -> dict:
    """The pipeline spec (first YAML document) of a compiled package."""
    path = Path(package)
    if not path.is_file():
        raise SubmitError(
            f"{path}: no compiled pipeline here (write it with `python -m pipeline compile`)"
        )
    try:
        spec = next(yaml.safe_load_all(path.read_text()))
    except (yaml.YAMLError, StopIteration) as error:
        raise SubmitError(f"{path}: not a compiled pipeline: {error}") from error
    if not isinstance(spec, dict) or "root" not in spec:
        raise SubmitError(f"{path}: not a compiled pipeline (no 'root' DAG)")
    return spec


def submit(
    host: str,
    params: list[str] = (),
    experiment: str = DEFAULT_EXPERIMENT,
    pipeline_root: str | None = None,
    package: str | Path = DEFAULT_PACKAGE,
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool | None = None,
    token: str | None = None,
) -> dict:
    """Creates a run; returns {"run_id", "url", "arguments"}.

    `enable_caching` None keeps each step's compiled setting (CACHED_STEPS in pipeline/dag.py);
    False is `submit --no-cache`. `token`: a
    bearer token for the KFP API (multi-user Kubeflow behind an auth proxy), kfp.Client's existing_token.
    """
    spec = load_package(package)
    arguments = parse_params(list(params), declared_parameters(spec))
    try:
        check_storage_parameters(
            {**declared_defaults(spec), **arguments}, "checked before submission", on_cluster=True
        )
    except ClusterContractError as error:
        raise SubmitError(f"--param {error}") from None
    try:
        preflight.check_arguments(arguments)
    except ParameterError as error:
        raise SubmitError(str(error)) from None
    _check_executor_inputs(spec, arguments)
    if pipeline_root is not None and storage.kind_of(pipeline_root) not in storage.OBJECT_SCHEMES:
        raise SubmitError(
            f"--pipeline-root {pipeline_root!r}: expected "
            f"{', '.join(s + '://' for s in storage.OBJECT_SCHEMES)}"
        )

    import kfp

    client_options = {"host": host}
    if namespace:
        client_options["namespace"] = namespace
    if token:
        client_options["existing_token"] = token
    try:
        client = kfp.Client(**client_options)
    except (
        Exception
    ) as error:  # the client's health check: connection refused, DNS, TLS, HTTP errors
        raise SubmitError(f"cannot reach the KFP API at {host}: {_reason(error)}") from error
    try:
        result = client.create_run_from_pipeline_package(
            **create_run_arguments(
                package, arguments, experiment, pipeline_root, run_name, namespace, enable_caching
            )
        )
    except Exception as error:
        raise SubmitError(f"KFP at {host} refused the run: {_reason(error)}") from error
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    log.info("created run %s in experiment %r: %s", result.run_id, experiment, url)
    return {"run_id": result.run_id, "url": url, "arguments": arguments}


def _check_executor_inputs(spec: dict, arguments: dict) -> None:
    """Refuses a run one of whose pods could not start: each task's executor input is one argv
    string (docs/CLUSTER.md, "How many shards"), and string parameters such as a `config` given as
    YAML text go into it whole. Sized by the backend model with this run's values."""
    from pipeline.backend import IR, rules

    values = {**declared_defaults(spec), **arguments}
    over = rules.executor_inputs_over_the_limit(
        IR(spec).with_arguments(arguments), int(values.get("num_shards", 1))
    )
    if over:
        longest = sorted(
            ((len(str(v)), k) for k, v in arguments.items() if isinstance(v, str)), reverse=True
        )[:3]
        raise SubmitError(
            "on a KFP cluster "
            + ", ".join(f"{path}'s executor input would be {size:,} bytes" for path, size in over)
            + f", over Linux's {rules.MAX_ARG_STRLEN:,}-byte limit on one argument: its pod could "
            f"not start (the longest string parameters: "
            + ", ".join(f"{name} {length:,} characters" for length, name in longest)
            + "); give `config` as the path of a file in the image, or fewer num_shards"
        )


def create_run_arguments(
    package,
    arguments: dict,
    experiment: str,
    pipeline_root: str | None = None,
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool | None = None,
) -> dict:
    """The keyword arguments of kfp.Client.create_run_from_pipeline_package for this run.
    enable_caching: None keeps each step's compiled setting; False (`submit --no-cache`) runs every
    step afresh, train included (kfp.Client turns caching off on every root task; the shard tasks
    inside the loops then miss, their input dataset_info being new: docs/CLUSTER.md, "Reruns")."""
    return {
        "pipeline_file": str(package),
        "arguments": arguments,
        "run_name": run_name,
        "experiment_name": experiment,
        "namespace": namespace,
        "pipeline_root": pipeline_root,
        "enable_caching": enable_caching,
    }


def _reason(error: Exception) -> str:
    """The innermost cause, which names what actually failed (e.g. 'Connection refused')."""
    while error.__cause__ is not None or getattr(error, "reason", None) is not None:
        inner = error.__cause__ or error.reason
        if not isinstance(inner, Exception):
            break
        error = inner
    return f"{type(error).__name__}: {error}"
