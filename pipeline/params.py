"""`name=value` pipeline arguments from the command line, typed by the pipeline's own parameter declarations.

Both `run` and `submit` use this, so one spelling works everywhere: `num_shards=8`, `single_person=true`,
`gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}`, `gpu_tolerations=[]`.
"""
import json


class ParameterError(ValueError):
    """A command-line pipeline argument names no parameter, or its value does not fit the parameter's type."""


def declared_parameters(pipeline_spec: dict) -> dict:
    """{name: parameterType} of the pipeline's run parameters, from its IR as a dict (pipeline.yaml)."""
    parameters = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: spec["parameterType"] for name, spec in parameters.items()}


def declared_defaults(pipeline_spec: dict) -> dict:
    """{name: default value} of the run parameters that have one, from the IR as a dict."""
    parameters = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: spec["defaultValue"] for name, spec in parameters.items() if "defaultValue" in spec}


def parse_params(pairs: list[str], declared: dict) -> dict:
    """["name=value", ...] -> {name: typed value}; errors name the argument and what is wrong with it."""
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--param {pair!r}: expected name=value")
        if name not in declared:
            raise ParameterError(f"--param {pair!r}: the pipeline has no parameter {name!r}; "
                                 f"it has {', '.join(sorted(declared))}")
        arguments[name] = _typed(name, text, declared[name])
    return arguments


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
        raise ParameterError(f"--param {name}={text!r}: not a valid {parameter_type} ({error})") from error
