#!/usr/bin/env python3
"""Bootstrap the project's virtual environment (.venv) and run the main job, the tests or the pipeline.

    python3 dev.py run     [args for `python -m pipeline run`]
    python3 dev.py test    [args for pytest]
    python3 dev.py lint    [paths; default: the whole tree]   (ruff check, then ruff format --check)
    python3 dev.py compile [args for `python -m pipeline compile`]   (writes pipeline.yaml)
    python3 dev.py submit  [args for `python -m pipeline submit`]    (a run on a KFP cluster)

Needs CPython 3.11 on Linux x86-64 (pyproject.toml's requires-python; the locks pin tensorflow-cpu wheels
for it), and refuses any other in one line before building anything. The environment holds
requirements.lock (what the steps need at run time) and requirements-dev.lock (the test tools); it is
(re)built whenever either lock or pyproject.toml change, so a fresh clone and an old checkout behave the
same.
"""

import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".bootstrap-stamp"
LOCKS = ("requirements.lock", "requirements-dev.lock")
COMMANDS = ("run", "test", "lint", "compile", "submit")
SUPPORTED = "CPython 3.11 on Linux x86-64"
_X86_64 = ("x86_64", "amd64")


def unsupported(version: tuple, implementation: str, system: str, machine: str) -> str | None:
    """The one line refusing an interpreter or platform the locks have no wheels for, else None.
    version: sys.version_info's first three; the rest: platform.python_implementation(), .system(),
    .machine()."""
    if (
        implementation == "CPython"
        and tuple(version[:2]) == (3, 11)
        and system == "Linux"
        and machine.lower() in _X86_64
    ):
        return None
    this = f"{implementation} {'.'.join(str(part) for part in version[:3])} on {system} {machine}"
    return f"dev.py: needs {SUPPORTED} (the locks pin tensorflow-cpu wheels for it); this is {this}"


def _environment_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in (*LOCKS, "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def bootstrap() -> None:
    fingerprint = _environment_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"[dev] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print(f"[dev] installing {' and '.join(LOCKS)} (first run takes a minute or two)", flush=True)
    subprocess.run(pip + [arg for lock in LOCKS for arg in ("-r", str(ROOT / lock))], check=True)
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(fingerprint)


def main() -> int:
    refusal = unsupported(
        tuple(sys.version_info[:3]),
        platform.python_implementation(),
        platform.system(),
        platform.machine(),
    )
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    bootstrap()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if command == "lint":
        # Both checks, so that one run names every finding; their settings are in pyproject.toml.
        ruff = str(VENV / "bin" / "ruff")
        codes = [
            subprocess.run([ruff, *check, *(args or ["."])], cwd=ROOT).returncode
            for check in (["check"], ["format", "--check"])
        ]
        return max(codes)
    if command in ("run", "compile", "submit"):
        argv = [str(PYTHON), "-m", "pipeline", command, *args]
    else:
        argv = [str(PYTHON), "-m", "pytest", *(args or ["tests"])]
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
