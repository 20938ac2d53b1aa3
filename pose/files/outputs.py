"""The one rule for a step's --output: no step deletes what it did not write (docs/ARTIFACTS.md).

A step may replace its output folder only when that folder is absent, empty (KFP creates output
artifacts so), or a previous output of the same step, which it recognises by the marker file it leaves
inside (`.pose-step`, holding the step's name). An output equal to, inside, or holding one of the step's
inputs is refused: replacing it would delete the input.
"""

import json
from pathlib import Path

from pose.files.uris import is_inside, local_path

MARKER = ".pose-step"


class OutputError(ValueError):
    """An --output the step refuses to replace; the message names it and why."""


def _resolved(path) -> Path | None:
    local = local_path(path)  # None: gs://, http://: never replaced by a step
    return local.resolve() if local is not None else None


def check_output(step: str, output, inputs=()) -> None:
    """Raises OutputError unless `step` may replace `output` (see the module doc). `inputs`: the paths the step
    reads."""
    target = _resolved(output)
    if target is None:
        raise OutputError(f"{output}: --output must be a local folder")
    for source in inputs:
        source_path = _resolved(source) if source else None
        if source_path is None:
            continue
        if is_inside(target, source_path):
            raise OutputError(
                f"{output}: the output is {'the' if target == source_path else 'inside the'} input "
                f"{source}; replacing it would delete the input"
            )
        if is_inside(source_path, target):
            raise OutputError(
                f"{output}: the output holds the input {source}; replacing it would delete the input"
            )
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise OutputError(f"{output}: exists and is not a folder; refusing to replace it")
    if not any(target.iterdir()):
        return
    if written_by(target) == step:
        return
    other = written_by(target)
    raise OutputError(
        f"{output}: exists, is not empty and is not a previous {step} output "
        f"({f'it was written by {other}' if other else f'no {MARKER} marker'}); refusing to replace "
        "it: choose another --output or remove it yourself"
    )


def written_by(folder) -> str | None:
    """The step named by the folder's marker, or None."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None


def mark(folder, step: str) -> None:
    """Leaves the marker in `folder` (the temporary output before its rename)."""
    (Path(folder) / MARKER).write_text(json.dumps({"step": step}) + "\n")
