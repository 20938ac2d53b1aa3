"""One writer at a time per output: a lock that dies with its holder.

Issue 21: two `components.train` runs into one `--output` both exited 0, their checkpoints
interleaved, and a third run resumed from the mix. `exclusive_writer(path, step)` takes an exclusive
`fcntl.flock` on `.<name>.lock` beside `path` for as long as the step writes it; a second process
asking for the same path is refused at once (OutputBusy) with the holder's step, pid, host and start
time. The kernel drops the lock when its holder exits, however it exits (kill -9 included), so a
crashed run never blocks the next one. The holder removes the lock file while it still holds it, and
a process that locked a file since removed tries again, so no stale lock file stays beside the
output and two holders never coexist.

Within one process the lock is re-entrant (a step that holds its output may call code that takes it
again, e.g. pose.files.atomic.atomic_directory). flock works on local file systems and on NFSv4; on a KFP
cluster every task has its own output path, so it matters for people sharing a folder.
"""

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

_held: dict[str, int] = {}  # lock path -> depth, in this process
_guard = threading.Lock()


class OutputBusy(RuntimeError):
    """Another live process is writing this output; the message names it."""


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_writer(path: str | os.PathLike, step: str):
    """Holds the writer lock of `path` for the block; OutputBusy when another process holds it."""
    lock = lock_path(path)
    key = str(lock)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "step": step,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            ).encode(),
            0,
        )
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[key]
            lock.unlink(missing_ok=True)  # while still held: no one else can hold this inode now
    finally:
        os.close(fd)  # releases the lock


def _acquire(lock: Path, path) -> int:
    """An fd holding the flock of the file now at `lock`. A file unlinked by its holder between our
    open and our flock is not the lock any more: then try again with the new one."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise OutputBusy(
                f"{Path(path)}: another process is writing it ({holder}; "
                f"lock {lock}); "
                "wait for it to end, or choose another output"
            ) from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _describe(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (
            f"{holder['step']} as pid {holder['pid']} on {holder['host']}, "
            f"since {holder['started']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a holder that has not written its name yet"
