#!/usr/bin/env python3
"""A docker engine for building and running the project's images where none runs yet (CI, dev machines).

    python3 scripts/docker_engine.py up      # engine + stand-in base image; prints DOCKER_HOST=...
    python3 scripts/docker_engine.py down    # stops the engine, if this script started it

`up` uses an engine that already answers at $DOCKER_HOST or at this script's socket
(/tmp/pose-docker/docker.sock). Otherwise, as root, it installs Debian's docker.io and debootstrap,
starts dockerd on that socket (overlay2, no iptables, no bridge: containers use --network host) and
waits for it. Then it builds the stand-in base image once: no public registry is reachable here, so
`python:3.11.7-slim-bookworm` cannot be pulled; a debootstrap of Debian bookworm (CPython 3.11, the
lock's interpreter) with python/pip on PATH and the host's CA bundle takes its place
(`--build-arg BASE_IMAGE=...`). Every step is skipped when its result is already there, and `down`
stops only a dockerd this script started (its pid file says so).

The last line `up` prints is `DOCKER_HOST=unix://...`; `eval "$(... up | tail -1)"` or export it.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATE = Path(os.environ.get("POSE_DOCKER_DIR", "/tmp/pose-docker"))
SOCKET = STATE / "docker.sock"
PID_FILE = STATE / "dockerd.pid"  # written by this script's dockerd only: what `down` may stop
LOG_FILE = STATE / "dockerd.log"
STAND_IN_BASE = "pose-stand-in/python:3.11-bookworm"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
START_TIMEOUT_S = 60


class EngineUnavailable(RuntimeError):
    """No engine answers and this machine cannot start one (not root, no apt-get)."""


def log(message: str) -> None:
    print(f"[docker-engine] {message}", file=sys.stderr, flush=True)


def _answers(host: str) -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, DOCKER_HOST=host),
        timeout=30,
    )
    return probe.returncode == 0 and bool(probe.stdout.strip())


def running_engine() -> str | None:
    """The DOCKER_HOST of an engine that answers now ($DOCKER_HOST first, then this script's socket)."""
    for host in filter(None, [os.environ.get("DOCKER_HOST"), f"unix://{SOCKET}"]):
        if _answers(host):
            return host
    return None


def _install_packages() -> None:
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineUnavailable(
            "no docker engine answers, and installing one needs root and apt-get (Debian's "
            "docker.io and debootstrap); start an engine and set DOCKER_HOST, or run "
            "`python3 scripts/docker_engine.py up` as root"
        )
    log("installing docker.io and debootstrap (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _start_dockerd() -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    if (
        PID_FILE.exists()
    ):  # a dockerd of ours that no longer answers: stop it before starting another
        stop()
    log(f"starting dockerd on {SOCKET} (log: {LOG_FILE})")
    with open(LOG_FILE, "ab") as log_file:
        process = subprocess.Popen(
            [
                "dockerd",
                "--storage-driver=overlay2",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--data-root",
                str(STATE / "root"),
                "--exec-root",
                str(STATE / "exec"),
                "--pidfile",
                str(STATE / "exec.pid"),
                "-H",
                f"unix://{SOCKET}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    PID_FILE.write_text(str(process.pid))
    host = f"unix://{SOCKET}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            PID_FILE.unlink(missing_ok=True)
            raise EngineUnavailable(
                f"dockerd exited with status {process.returncode}; its log: {LOG_FILE}"
            )
        if SOCKET.exists() and _answers(host):
            return host
        time.sleep(0.5)
    raise EngineUnavailable(
        f"dockerd did not answer on {SOCKET} within {START_TIMEOUT_S} s; its log: {LOG_FILE}"
    )


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses on this machine for bookworm (deb822 .sources or one-line sources.list)."""
    sources = (
        sorted(apt_dir.glob("sources.list.d/*.sources"))
        + sorted(apt_dir.glob("sources.list.d/*.list"))
        + [apt_dir / "sources.list"]
    )
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and DEBIAN_SUITE in suites.group(1).split():
                return uris.group(1)
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", text, re.M):
            if match.group(2) == DEBIAN_SUITE:
                return match.group(1)
    return DEFAULT_MIRROR


def _image_exists(host: str, name: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", name],
            capture_output=True,
            env=dict(os.environ, DOCKER_HOST=host),
        ).returncode
        == 0
    )


def build_stand_in_base(host: str) -> str:
    """Debian bookworm's CPython 3.11 laid out as python:3.11-slim is, imported as STAND_IN_BASE (once)."""
    if _image_exists(host, STAND_IN_BASE):
        return STAND_IN_BASE
    if os.geteuid() != 0:
        raise EngineUnavailable(
            f"the stand-in base image {STAND_IN_BASE} is missing and debootstrap needs root"
        )
    _install_packages()
    mirror = debian_mirror()
    log(
        f"building the stand-in base image {STAND_IN_BASE} (debootstrap {DEBIAN_SUITE} from {mirror})"
    )
    with tempfile.TemporaryDirectory(prefix="base-", dir=STATE) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                DEBIAN_SUITE,
                str(root),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
            link = root / "usr/local/bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for cache in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            shutil.rmtree(root / cache, ignore_errors=True)
            (root / cache).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "--change", 'CMD ["python3"]', "-", STAND_IN_BASE],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
            env=dict(os.environ, DOCKER_HOST=host),
        )
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
    return STAND_IN_BASE


def up() -> str:
    """An engine that answers, with the stand-in base image in it; returns its DOCKER_HOST."""
    host = running_engine()
    if host is None:
        _install_packages()
        host = _start_dockerd()
    build_stand_in_base(host)
    return host


def stop() -> bool:
    """Stops the dockerd this script started (and nothing else); True when one was stopped."""
    if not PID_FILE.exists():
        return False
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        PID_FILE.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.3)
    PID_FILE.unlink(missing_ok=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("command", choices=("up", "down"))
    args = parser.parse_args()
    try:
        if args.command == "up":
            print(f"DOCKER_HOST={up()}")
        else:
            log(
                "stopped the dockerd this script started"
                if stop()
                else "no dockerd of this script's runs"
            )
    except (EngineUnavailable, subprocess.CalledProcessError) as error:
        print(f"docker_engine: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
