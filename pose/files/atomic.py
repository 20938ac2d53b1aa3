"""Outputs appear at once: a step writes into a temporary sibling, then renames it over the real name."""

import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path

from pose.files import outputs


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, step: str | None = None):
    """Yields a temporary folder beside `path`; on success it replaces `path` (an existing folder
    there, e.g. the empty one KFP creates for an output artifact, is removed), on failure it is
    deleted. `step` leaves that step's marker inside (pose.files.outputs), so that its next run may
    replace the folder; a step checks its output with pose.files.outputs.check_output before it
    starts. Another process building the same `path` meanwhile is refused
    (pose.files.writer_lock.OutputBusy)."""
    from pose.files.writer_lock import exclusive_writer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer at a time (pose/files/writer_lock.py)
    with exclusive_writer(path, step or "a step"):
        remove_stale_siblings(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        tmp.chmod(0o755)
        try:
            yield tmp
            if step:
                outputs.mark(tmp, step)
            if path.is_dir():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_siblings(path: Path) -> list[Path]:
    """Removes the temporary siblings (`.<name>.tmp-<pid>-*`, `.<name>.old-<pid>`) that a killed run of a step
    (kill -9, a preempted pod) left beside `path`, unless the process that made them still runs. Returns them."""
    removed = []
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*"):
        kind, _, rest = sibling.name[len(path.name) + 2 :].partition("-")
        if kind not in ("tmp", "old"):
            continue
        pid = rest.split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(
            missing_ok=True
        )
        removed.append(sibling)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yields a temporary path beside `path`, with the same suffix (Keras and OpenCV choose the format by it);
    on success it replaces `path`, on failure it is deleted."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces the file `path` with `text` whole: a reader sees the old content or the new."""
    with atomic_file(path) as temporary:
        temporary.write_text(text)
