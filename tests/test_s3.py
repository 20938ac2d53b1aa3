"""s3:// and minio:// beyond what the tests shared with gs:// cover (test_download, test_publish,
test_train_resume, test_multiworker, test_reliability run those against both stores): the failures a
user meets first, each one clear line within the network bounds; credentials the KFP way; the source
version that download's cache key follows, and a cached rerun of the real DAG that follows it; the
storage parameters checked before anything runs. All against a real SeaweedFS (tests/s3.py)."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pipeline import cluster
from pose.files import storage
from tests.conftest import REPO
from tests.s3 import SECRET_KEY, make_bucket


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _zip_bytes(files: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["wrong credentials", "missing bucket", "unreachable endpoint"])
def test_a_failure_is_one_clear_line_within_the_network_bounds(seaweedfs, tmp_path, case):
    """The download CLI, as a pod runs it: exit 1, one last line naming the URI and what is wrong
    (never
    the secret), well within POSE_NETWORK_TIMEOUT x attempts."""
    make_bucket("releases")
    env = {**os.environ, "POSE_NETWORK_TIMEOUT": "3", "POSE_NETWORK_RETRY": "6"}
    source = "s3://releases/aic.zip"
    if case == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        expected = (
            f"download: error: {source}: {seaweedfs.endpoint} refused the credentials (403; "
            f"credentials "
            f"from env): check the access key and secret, and that they may use bucket 'releases'"
        )
    elif case == "missing bucket":
        source = "s3://no-such-bucket/aic.zip"
        expected = (
            f"download: error: {source}: bucket 'no-such-bucket' does not exist at "
            f"{seaweedfs.endpoint}"
        )
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_closed_port()}"
        expected = (
            f"download: error: {source}: S3 endpoint {env['AWS_ENDPOINT_URL']} unreachable after 2 "
            f"attempt(s) of at most 3 s (POSE_NETWORK_TIMEOUT, POSE_NETWORK_RETRY): "
            f"EndpointConnectionError"
        )
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.download",
            "--source",
            source,
            "--output",
            str(tmp_path / "raw"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == expected
    assert (
        SECRET_KEY not in done.stderr + done.stdout
        and "not-the-secret" not in done.stderr + done.stdout
    )
    assert (
        seconds < 60
    )  # 2 attempts of 3 s, backoff and the interpreter's start, on a loaded machine
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_an_endpoint_that_accepts_and_never_answers_is_given_up_within_the_stated_bound(
    monkeypatch,
):
    """The whole of a call, attempts and botocore's waits between them, within POSE_NETWORK_RETRY
    plus one POSE_NETWORK_TIMEOUT: with 1 s and 8 s, 3 attempts (at worst 1 + 1 + 1 + 2 + 1 = 6 s),
    where 9 attempts and their backoff took 40 s and more."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    threading.Thread(
        target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)], daemon=True
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("POSE_NETWORK_TIMEOUT", "1")
    monkeypatch.setenv("POSE_NETWORK_RETRY", "8")
    started = time.monotonic()
    with pytest.raises(
        storage.StorageError, match=r"unreachable after 3 attempt\(s\) of at most 1 s"
    ):
        storage.stat("s3://bucket/object")
    seconds = time.monotonic() - started
    listener.close()
    assert len(held) == 3
    assert seconds < 8 + 1 + 5  # the bound, and room for a loaded machine


def test_minio_scheme_is_the_same_store(seaweedfs, tmp_path):
    """minio:// (KFP's default pipeline root scheme) names the same buckets as s3://."""
    make_bucket("releases")
    storage.write_text("minio://releases/notes/a.json", '{"a": 1}')
    assert storage.read_text("s3://releases/notes/a.json") == '{"a": 1}'
    assert storage.list_names("minio://releases/notes") == ["a.json"]


def test_source_version_follows_the_data(seaweedfs, tmp_path):
    """What download's cache key follows: the same for an unchanged object, new for a replaced one,
    for an
    archive, a prefix, and a local file; nothing for synthetic://."""
    make_bucket("releases")
    storage.write_bytes("s3://releases/v/aic.zip", _zip_bytes({"a.txt": "one"}))
    first = storage.source_version("s3://releases/v/aic.zip")
    assert first and storage.source_version("s3://releases/v/aic.zip") == first
    storage.write_bytes("s3://releases/v/aic.zip", _zip_bytes({"a.txt": "two"}))
    assert storage.source_version("s3://releases/v/aic.zip") != first

    storage.write_bytes("s3://releases/tree/x/1.jpg", b"1")
    folder = storage.source_version("s3://releases/tree")
    assert storage.source_version("s3://releases/tree/") == folder
    storage.write_bytes("s3://releases/tree/x/2.jpg", b"2")
    assert storage.source_version("s3://releases/tree") != folder
    with pytest.raises(
        storage.StorageError, match="s3://releases/none: no such object, and no objects"
    ):
        storage.source_version("s3://releases/none")

    local = tmp_path / "aic.zip"
    local.write_bytes(b"1")
    version = storage.source_version(str(local))
    os.utime(local, ns=(1, 1))
    assert storage.source_version(str(local)) != version
    assert storage.source_version("synthetic://200?seed=3") == ""


# The tasks the real DAG runs before convert; the cache test stops it there (download's output is
# all it looks at, and convert onwards would cost minutes).
_UP_TO_DOWNLOAD = ("cluster-settings-op", "source-version-op", "download-op")


@contextlib.contextmanager
def _stopped_after_download(ran: list):
    """kfp.local runs the pipeline's tasks up to download as they are, records each one it runs
    (a cache hit runs none) with its outputs in `ran`, and fails convert without running it, which
    ends the run."""
    from kfp.local import status

    from pipeline.kfp_local_patches import around_each_task

    def up_to_download(run_task):
        def run_or_stop(*args, **kwargs):
            task = kwargs["component_name"].removeprefix("comp-")
            if task not in _UP_TO_DOWNLOAD:
                return {}, status.Status.FAILURE
            outputs, task_status = run_task(*args, **kwargs)
            ran.append((task, outputs))
            return outputs, task_status

        return run_or_stop

    with around_each_task(up_to_download):
        yield


def test_a_cached_rerun_downloads_again_only_when_the_object_was_replaced(seaweedfs, tmp_path):
    """The cache follows the data, as `pipeline run --cache` runs it: the real DAG under kfp.local's
    cache (keyed, like the backend's, on a task's inputs), three runs on one s3:// URI. Unchanged
    object: source-version runs (never cached) and gives the same version, download is a cache hit.
    Replaced object (same URI, new bytes): a new version, and download runs again and fetches
    them."""
    from pipeline.local import LocalRunError, run_local

    make_bucket("releases")
    source = "s3://releases/cache/aic.zip"

    def run() -> dict:
        ran = []
        with (
            _stopped_after_download(ran),
            pytest.raises(LocalRunError, match=r"step 'convert' failed"),
        ):
            run_local(source=source, pipeline_root=str(tmp_path / "runs"), cache=True)
        return dict(ran)

    # Download counts pictures by their names: a name is all a picture needs here.
    storage.write_bytes(source, _zip_bytes({"a.jpg": "one"}))
    first = run()
    assert set(first) == set(_UP_TO_DOWNLOAD)
    assert first["source-version-op"]["Output"].startswith("s3:")
    raw = Path(first["download-op"]["raw"].path)
    assert (raw / "a.jpg").read_text() == "one"

    unchanged = run()
    assert set(unchanged) == {"source-version-op"}  # download (and cluster-settings): cache hits
    assert unchanged["source-version-op"]["Output"] == first["source-version-op"]["Output"]

    storage.write_bytes(source, _zip_bytes({"a.jpg": "two"}))
    replaced = run()
    assert set(replaced) == {"source-version-op", "download-op"}
    assert replaced["source-version-op"]["Output"] != first["source-version-op"]["Output"]
    assert (Path(replaced["download-op"]["raw"].path) / "a.jpg").read_text() == "two"
    assert (raw / "a.jpg").read_text() == "one"  # the first run's artifact is left as it was


def test_the_settings_and_the_mounted_secret_become_the_aws_environment(tmp_path, monkeypatch):
    """What a pod's op does with the run's S3 parameters and KFP's secret layout (accesskey,
    secretkey)."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "POSE_S3_PATH_STYLE",
    ):
        monkeypatch.delenv(name, raising=False)
    mount = tmp_path / "s3"
    mount.mkdir()
    (mount / "accesskey").write_text("the-key\n")
    (mount / "secretkey").write_text("the-secret\n")
    monkeypatch.setattr(cluster, "S3_SECRET_MOUNT", str(mount))
    settings = cluster.s3_settings(
        cluster.DEFAULT_S3_ENDPOINT, cluster.DEFAULT_S3_REGION, True, False
    )
    assert "secret" not in settings
    cluster.use_s3_settings(settings)
    assert os.environ["AWS_ENDPOINT_URL"] == "http://seaweedfs.kubeflow:9000"
    assert os.environ["AWS_REGION"] == "minio" and os.environ["POSE_S3_PATH_STYLE"] == "true"
    assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == (
        "the-key",
        "the-secret",
    )
    # AWS: no endpoint, no region, no secret: the pod's own (IRSA) environment stays as it is.
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setattr(cluster, "S3_SECRET_MOUNT", str(tmp_path / "absent"))
    cluster.use_s3_settings(cluster.s3_settings("", "", True, True))
    assert "AWS_ENDPOINT_URL" not in os.environ and os.environ["AWS_REGION"] == "eu-west-1"
    assert (
        json.loads(cluster.s3_settings("s3.example.com", "x", False, True))["endpoint_url"]
        == "https://s3.example.com"
    )
    # a scheme, when given, says whether TLS is used; only an explicit contradiction is refused
    assert json.loads(cluster.s3_settings("http://x:9000", "", True, False))["endpoint_url"] == (
        "http://x:9000"
    )
    assert json.loads(cluster.s3_settings("https://x", "", True, False))["endpoint_url"] == (
        "https://x"
    )
    with pytest.raises(
        cluster.ClusterContractError, match="s3_endpoint='http://x:9000': says http://, but s3_tls"
    ):
        cluster.s3_settings("http://x:9000", "", True, True)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            {"source": "ftp://host/aic.zip"},
            r"source='ftp://host/aic.zip' has the unsupported scheme 'ftp'; "
            r"source takes gs://, s3://, minio://, http://, https://",
        ),
        (
            {"publish_uri": "https://host/models"},
            r"publish_uri='https://host/models' has the unsupported scheme",
        ),
        (
            {"checkpoint_uri": "s3:///no-bucket"},
            r"checkpoint_uri='s3:///no-bucket': no bucket; expected a URI with a bucket",
        ),
        (
            {"s3_endpoint": "http://seaweedfs.kubeflow:9000/path"},
            r"s3_endpoint='http://seaweedfs.kubeflow:9000/path': a path after the host",
        ),
        (
            {"publish_uri": "s3://models/pose", "s3_secret": ""},
            r"publish_uri='s3://models/pose' needs S3 "
            r"credentials, but s3_secret is empty",
        ),
    ],
)
def test_submit_refuses_storage_parameters_before_any_network_call(arguments, message):
    from pipeline.submit import SubmitError, submit

    params = [f"{name}={value}" for name, value in arguments.items()]
    with pytest.raises(SubmitError, match=message):
        submit(
            "http://127.0.0.1:9", params=params
        )  # nothing listens there: a network call would fail otherwise


def test_minio_uris_pass_every_check_made_before_submission():
    """minio:// is KFP's own scheme for its store: the storage check and the parameter check (the
    two that submit and `pipeline run` make before any task) take it for all three parameters."""
    from pipeline import preflight
    from pipeline.cluster import check_storage_parameters

    arguments = {
        "source": "minio://mlpipeline/aic/release.zip",
        "publish_uri": "minio://mlpipeline/models/pose",
        "checkpoint_uri": "minio://mlpipeline/checkpoints/pose",
    }
    check_storage_parameters(
        {**preflight.default_arguments(), **arguments}, "test", on_cluster=True
    )
    checked = preflight.check_arguments(arguments)
    assert {name: checked[name] for name in arguments} == arguments


def test_a_local_run_without_s3_credentials_is_refused_before_any_task(tmp_path, monkeypatch):
    from pipeline.local import LocalRunError, run_local

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(
        LocalRunError, match=r"publish_uri='s3://models/pose': no S3 credentials here"
    ):
        run_local(pipeline_root=str(tmp_path / "runs"), params={"publish_uri": "s3://models/pose"})
    assert not (tmp_path / "runs").exists()


def test_the_compiled_pipeline_defaults_to_kfps_store_and_feeds_the_source_version_to_download():
    """pipeline.yaml as the backend reads it: the S3 parameters default to what KFP's launcher uses
    (the
    mounts are checked in tests/test_cluster.py); source-version never cached; its output among
    download's
    input parameters, which the backend's cache key holds (kubeflow/pipelines 2.17.0,
    backend/src/v2/cacheutils/cache.go GenerateCacheKey: InputParameterValues)."""
    import yaml

    documents = list(yaml.safe_load_all((REPO / "pipeline.yaml").read_text()))
    spec = documents[0]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["s3_secret"]["defaultValue"] == "mlpipeline-minio-artifact"
    assert parameters["s3_endpoint"]["defaultValue"] == "seaweedfs.kubeflow:9000"
    assert parameters["s3_region"]["defaultValue"] == "minio"
    assert (
        parameters["s3_path_style"]["defaultValue"] is True
        and parameters["s3_tls"]["defaultValue"] is False
    )
    tasks = spec["root"]["dag"]["tasks"]
    version = tasks["source-version-op"]
    assert not version["cachingOptions"].get("enableCache")
    download = tasks["download-op"]
    assert download["cachingOptions"]["enableCache"] is True
    assert download["inputs"]["parameters"]["source_version"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "source-version-op",
    }


def test_an_https_source_is_versioned_by_its_etag_or_last_modified(tmp_path):
    """A real http.server: it sends Last-Modified (no ETag), which moves when the file is
    replaced."""
    import functools
    import http.server
    import threading

    (tmp_path / "aic.zip").write_bytes(b"one")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/aic.zip"
        first = storage.source_version(url)
        assert first.startswith("last-modified:") and storage.source_version(url) == first
        os.utime(tmp_path / "aic.zip", (1, 1))
        assert storage.source_version(url) != first
        with pytest.raises(storage.StorageError, match=r"/missing\.zip: HTTP 404"):
            storage.source_version(url.replace("aic.zip", "missing.zip"))
    finally:
        server.shutdown()
        server.server_close()
