"""`name=value` pipeline arguments from the command line, typed by the pipeline's own parameter declarations.

Both `run` and `submit` use this, so one spelling works everywhere: `num_shards=8`, `single_person=true`,
`gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}`, `gpu_tolerations=[]`.
"""

import json

from pipeline.cluster import ClusterContractError, check_secret_name
from pose.data.packs import MAX_SHARDS


class ParameterError(ValueError):
    """A command-line pipeline argument names no parameter, or its value does not fit the parameter's type."""


def declared_parameters(pipeline_spec: dict) -> dict:
    """{name: parameterType} of the pipeline's run parameters, from its IR as a dict (pipeline.yaml)."""
    parameters = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: spec["parameterType"] for name, spec in parameters.items()}


def declared_defaults(pipeline_spec: dict) -> dict:
    """{name: default value} of the run parameters that have one, from the IR as a dict."""
    parameters = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {
        name: spec["defaultValue"] for name, spec in parameters.items() if "defaultValue" in spec
    }


def parse_params(pairs: list[str], declared: dict) -> dict:
    """["name=value", ...] -> {name: typed value}; errors name the argument and what is wrong with it."""
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--param {pair!r}: expected name=value")
        if name not in declared:
            raise ParameterError(
                f"--param {pair!r}: the pipeline has no parameter {name!r}; "
                f"it has {', '.join(sorted(declared))}"
            )
        arguments[name] = _typed(name, text, declared[name])
    check_arguments(arguments)
    return arguments


def check_arguments(arguments: dict) -> None:
    """The bounds a KFP cluster sets on some arguments, checked before anything runs (also on the
    compiled defaults): num_shards up to MAX_SHARDS (docs/CLUSTER.md, "How many shards"); a
    gcs_secret the driver can name a volume after."""
    shards = arguments.get("num_shards")  # an IR default or a JSON number may be a float (2.0)
    if shards is not None and (
        isinstance(shards, bool)
        or not isinstance(shards, (int, float))
        or shards != int(shards)
        or not 1 <= shards <= MAX_SHARDS
    ):
        raise ParameterError(
            f"--param num_shards={shards!r}: expected 1 to {MAX_SHARDS}; with more, train's "
            f"executor input (one artifact per shard, inlined) nears Linux's 128 KiB limit on one "
            f'command-line argument on a KFP cluster (docs/CLUSTER.md, "How many shards")'
        )
    for parameter in ("gcs_secret", "s3_secret"):
        if isinstance(arguments.get(parameter), str):
            try:
                check_secret_name(arguments[parameter], parameter)
            except ClusterContractError as error:
                raise ParameterError(f"--param {error}") from None


def _typed(name: str, text: str, parameter_type: str):
    try:
        if parameter_type == "STRING":
            return text
        if parameter_type == "NUMBER_INTEGER":
            return int(text)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text)
        if parameter_type == "BOOLEAN":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        value = json.loads(text)
        expected = {"STRUCT": dict, "LIST": list}[parameter_type]
        if not isinstance(value, expected):
            raise ValueError(f"expected a JSON {'object' if expected is dict else 'array'}")
        return value
    except (ValueError, KeyError) as error:
        raise ParameterError(
            f"--param {name}={text!r}: not a valid {parameter_type} ({error})"
        ) from error
