"""Compiles the pipeline function to the KFP IR package (pipeline.yaml) that clusters run.

Images are chosen at compile time: pipeline/images.py reads POSE_IMAGE_REGISTRY and POSE_IMAGE_TAG
when it is first imported, so `compile_pipeline` sets them before importing the DAG.
"""

import ast
import os
import re
import sys
from pathlib import Path

from pose.files.atomic import atomic_file

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "pipeline.yaml"


class CompileError(RuntimeError):
    """The pipeline could not be compiled as asked, or the backend model rejects the result."""


def compile_pipeline(
    output: str | Path = DEFAULT_OUTPUT, image_tag: str | None = None, registry: str | None = None
) -> Path:
    """Writes the compiled pipeline to `output` (atomically) and returns its path."""
    wanted = {"POSE_IMAGE_TAG": image_tag, "POSE_IMAGE_REGISTRY": registry}
    if "pipeline.images" in sys.modules:
        from pipeline import images

        current = {"POSE_IMAGE_TAG": images.TAG, "POSE_IMAGE_REGISTRY": images.REGISTRY}
        clashes = [
            f"{k}={v!r} (already imported as {current[k]!r})"
            for k, v in wanted.items()
            if v is not None and v != current[k]
        ]
        if clashes:
            raise CompileError(
                f"images were already chosen in this process: {', '.join(clashes)}; "
                f"compile in a fresh process (python -m pipeline compile)"
            )
    os.environ.update({k: v for k, v in wanted.items() if v is not None})

    from kfp import compiler

    from pipeline import preflight
    from pipeline.dag import pose_pipeline

    _check_defaults(pose_pipeline)
    _preflight_defaults(preflight.default_arguments())
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as tmp:
        compiler.Compiler().compile(pose_pipeline, package_path=str(tmp))
        tmp.write_text(stable_header(tmp.read_text()))
        check_backend(tmp)
    return output


_HEADER_DEFAULT = re.compile(r"^(#    \w+: \w+ \[Default: )(.*)(\])$")


def stable_header(package_text: str) -> str:
    """kfp writes each default into the package's comment header from a protobuf Struct, whose map
    iterates in a per-process order, so a dict default came out with its keys shuffled from one
    compile to the next. Rewrites those comment lines with every dict's keys sorted."""

    def sorted_keys(value):
        if isinstance(value, dict):
            return {key: sorted_keys(value[key]) for key in sorted(value)}
        if isinstance(value, list):
            return [sorted_keys(item) for item in value]
        return value

    lines = package_text.split("\n")
    for number, line in enumerate(lines):
        if not line.startswith("#"):
            break  # the header ends at the first line of YAML
        match = _HEADER_DEFAULT.match(line)
        if match:
            default = ast.literal_eval(match.group(2))
            lines[number] = f"{match.group(1)}{sorted_keys(default)!r}{match.group(3)}"
    return "\n".join(lines)


def _check_defaults(pipeline) -> None:
    """The storage parameters' defaults are what a run gets when it gives none: they must pass the
    checks `submit` makes (pipeline/cluster.py check_storage_parameters)."""
    from google.protobuf import json_format

    from pipeline.cluster import ClusterContractError, check_storage_parameters
    from pipeline.params import declared_defaults

    try:
        check_storage_parameters(
            declared_defaults(json_format.MessageToDict(pipeline.pipeline_spec)),
            "a default of pipeline/dag.py",
            on_cluster=True,
        )
    except ClusterContractError as error:
        raise CompileError(str(error)) from None


def check_backend(package: str | Path) -> None:
    """Runs the backend model (pipeline/backend) on a compiled package; fails, listing every
    finding, when a KFP backend (2.14.0 to 2.17.0) would reject or mishandle it."""
    from pipeline.backend import IR, check
    from pipeline.dag import LONGEST_ATTEMPT_S, MAX_LOOP_ITEMS
    from pipeline.params import ParameterError, check_arguments

    ir = IR.load(package)
    defaults = {name: spec.get("defaultValue") for name, spec in ir.root_parameters().items()}
    try:
        check_arguments({name: value for name, value in defaults.items() if value is not None})
    except ParameterError as error:
        raise CompileError(f"a default of the pipeline is out of bounds: {error}") from None
    findings = check(ir, MAX_LOOP_ITEMS, LONGEST_ATTEMPT_S).findings
    if findings:
        listed = "\n  ".join(str(finding) for finding in findings)
        raise CompileError(
            f"the KFP backend model rejects the compiled pipeline ({len(findings)} "
            f"findings; docs/CLUSTER.md explains each rule):\n  {listed}"
        )


_CHECK = """
import json, sys
from pipeline import preflight
from pipeline.params import ParameterError
try:
    preflight.check_arguments(json.loads(sys.argv[1]))
except ParameterError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"""


def _preflight_defaults(defaults: dict) -> None:
    """The defaults a run gets for every parameter not given, checked by pipeline/preflight.py in a child
    process: the checks import the steps and TensorFlow, which compiling must not
    (tests/test_structure.py)."""
    import json
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _CHECK, json.dumps(defaults)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if result.returncode:
        lines = result.stderr.strip().splitlines() or ["(no message)"]
        raise CompileError(f"the pipeline's default {lines[-1]}")
