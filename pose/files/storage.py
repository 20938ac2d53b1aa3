"""Object storage and URL helpers shared by the steps that read or write outside the pipeline root
(download, publish, train's checkpoints).

gs:// goes through google-cloud-storage: with `STORAGE_EMULATOR_HOST` set (tests, a local
fake-gcs-server) anonymously, otherwise with the default credentials of the pod or laptop.

Network waits are bounded, so that an unreachable endpoint ends in one clear error within half a minute:
  POSE_NETWORK_TIMEOUT   seconds one request (or one read of an http download) may wait (default 10)
  POSE_NETWORK_RETRY     seconds a gs:// call keeps retrying transient failures (default 20)
  POSE_HTTP_RETRIES      further attempts to connect to an http(s) source (default 1)
"""
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from pose.files import uris
from pose.files.atomic import atomic_file

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class StorageError(OSError):
    """A URI that cannot be read or written; the message names it."""


def _setting(name: str, default: float) -> float:
    text = os.environ.get(name)
    try:
        value = float(text) if text else default
    except ValueError:
        raise StorageError(f"{name}={text!r}: expected a number of seconds") from None
    if not value >= 0:
        raise StorageError(f"{name}={text!r}: must not be negative")
    return value


def network_timeout() -> float:
    return _setting("POSE_NETWORK_TIMEOUT", 10.0)


def gcs_options() -> dict:
    """timeout= and retry= for every google-cloud-storage call (its defaults retry for 120 s)."""
    from google.api_core import retry as retries
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = _setting("POSE_NETWORK_RETRY", 20.0)
    retry = DEFAULT_RETRY.with_timeout(deadline) if hasattr(DEFAULT_RETRY, "with_timeout") \
        else DEFAULT_RETRY.with_deadline(deadline)
    return {"timeout": network_timeout(), "retry": retry if deadline else None}


def gcs_errors(uri: str):
    """Turns google-cloud-storage's and the network's failures into a StorageError naming `uri`."""
    import contextlib

    @contextlib.contextmanager
    def translate():
        from google.api_core import exceptions

        try:
            yield
        except exceptions.RetryError as error:
            raise StorageError(f"{uri}: gave up after {_setting('POSE_NETWORK_RETRY', 20.0):g} s of retries "
                               f"(POSE_NETWORK_RETRY): {error.cause or error}") from None
        except (exceptions.ServerError, exceptions.TooManyRequests, ConnectionError, TimeoutError) as error:
            raise StorageError(f"{uri}: storage unreachable or failing: {type(error).__name__}: {error}") from None
        except Exception as error:  # noqa: BLE001 - requests' and google-auth's transport errors
            module = type(error).__module__
            if module.startswith(("requests", "urllib3", "google.auth")):
                raise StorageError(f"{uri}: storage unreachable: {type(error).__name__}: {error}") from None
            raise

    return translate()


def split_gs_uri(uri: str) -> tuple[str, str]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://") or uri[len("gs://")] == "/":
        raise StorageError(f"{uri}: not a gs://bucket/path URI")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    return bucket, prefix


def gcs_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test"),
                              credentials=AnonymousCredentials())
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client()
    except DefaultCredentialsError as error:
        raise StorageError(f"no Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS, use a workload "
                           f"identity, or STORAGE_EMULATOR_HOST for an emulator): {error}") from None


def gs_object(uri: str, client=None):
    """The blob named exactly by uri, or None when no such object exists (it may be a prefix)."""
    bucket, name = split_gs_uri(uri)
    if not name or name.endswith("/"):
        return None
    from google.api_core import exceptions

    try:
        with gcs_errors(uri):
            return (client or gcs_client()).bucket(bucket).get_blob(name, **gcs_options())
    except exceptions.NotFound:  # the bucket itself is missing
        return None
    except exceptions.GoogleAPICallError as error:
        raise StorageError(f"{uri}: {error}") from error


def download_gs(uri: str, dest_dir: str) -> list[str]:
    """Downloads the object at uri, or every object under the prefix uri/, into dest_dir (keeping the
    paths below the prefix). Returns the local paths."""
    client = gcs_client()
    blob = gs_object(uri, client)
    dest = Path(dest_dir)
    if blob is not None:
        target = dest / Path(blob.name).name
        with open(target, "wb") as out:
            copy_gs_object(blob, out, uri)
        return [str(target)]
    bucket, prefix = split_gs_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    from google.api_core import exceptions

    try:
        with gcs_errors(uri):
            blobs = [b for b in client.list_blobs(bucket, prefix=prefix, **gcs_options()) if not b.name.endswith("/")]
    except exceptions.NotFound:
        raise StorageError(f"{uri}: bucket {bucket!r} does not exist") from None
    if not blobs:
        raise StorageError(f"{uri}: no such object, and no objects under the prefix")
    paths = []
    with tqdm(total=sum(b.size or 0 for b in blobs), unit="B", unit_scale=True, desc=uri, mininterval=1) as bar:
        for blob in blobs:
            target = dest / blob.name[len(prefix):]
            if not uris.is_inside(target, dest):
                raise StorageError(f"{uri}: object {blob.name!r} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with gcs_errors(f"gs://{bucket}/{blob.name}"):
                blob.download_to_filename(str(target), **gcs_options())
            bar.update(blob.size or 0)
            paths.append(str(target))
    log.info("downloaded %d objects (%d bytes) from %s", len(paths), bar.n, uri)
    return paths


def copy_gs_object(blob, writer, uri: str) -> None:
    """Streams one object into a file-like writer."""
    from google.api_core import exceptions

    try:
        with gcs_errors(uri):
            blob.download_to_file(writer, **gcs_options())
    except exceptions.NotFound:
        raise StorageError(f"{uri}: no such object") from None


def open_http(url: str, timeout: float | None = None):
    """Opens an http(s) URL for streaming; the response has .length (None when the server sends none).
    Each socket operation, reads included, waits at most `timeout` (POSE_NETWORK_TIMEOUT) seconds; a failed
    connection is tried again POSE_HTTP_RETRIES times."""
    timeout = network_timeout() if timeout is None else timeout
    attempts = 1 + int(_setting("POSE_HTTP_RETRIES", 1))
    for attempt in range(1, attempts + 1):
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "pose-pipeline"}),
                                          timeout=timeout)
        except urllib.error.HTTPError as error:
            raise StorageError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            if attempt == attempts:
                what = (f"no answer within {timeout:g} s (POSE_NETWORK_TIMEOUT)" if isinstance(reason, TimeoutError)
                        else f"cannot connect ({reason})")
                raise StorageError(f"{url}: {what}, after {attempts} attempt(s)") from None
            log.warning("%s: %s; trying again (%d of %d)", url, reason, attempt + 1, attempts)


def upload_file(local_path: str, gs_uri: str, client=None) -> str:
    bucket, name = split_gs_uri(gs_uri)
    if not name or name.endswith("/"):
        raise StorageError(f"{gs_uri}: an upload needs an object name, not a bucket or prefix")
    with gcs_errors(gs_uri):
        (client or gcs_client()).bucket(bucket).blob(name).upload_from_filename(str(local_path), **gcs_options())
    return gs_uri


# ---- small objects by name (train's checkpoint mirror: pose/files/remote_checkpoints.py) ----------------

def _api_errors():
    from google.api_core import exceptions

    return exceptions


def bucket_exists(bucket: str, client=None) -> bool:
    exceptions = _api_errors()
    try:
        return (client or gcs_client()).bucket(bucket).exists()
    except exceptions.GoogleAPICallError as error:
        raise StorageError(f"gs://{bucket}: {error}") from error


def list_names(gs_prefix: str, client=None) -> list[str]:
    """Names (relative to gs_prefix/) of the objects under gs_prefix/; [] when there are none."""
    bucket, prefix = split_gs_uri(gs_prefix)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    exceptions = _api_errors()
    try:
        with gcs_errors(gs_prefix):
            return sorted(b.name[len(prefix):]
                          for b in (client or gcs_client()).list_blobs(bucket, prefix=prefix, **gcs_options()))
    except exceptions.NotFound:
        raise StorageError(f"{gs_prefix}: bucket {bucket!r} does not exist") from None
    except exceptions.GoogleAPICallError as error:
        raise StorageError(f"{gs_prefix}: {error}") from error


def read_text(gs_uri: str, client=None) -> str | None:
    """The object's text, or None when there is no such object."""
    blob = gs_object(gs_uri, client)
    if blob is None:
        return None
    with gcs_errors(gs_uri):
        return blob.download_as_bytes(**gcs_options()).decode()


def write_text(gs_uri: str, text: str, client=None) -> str:
    """One object, replaced whole: a reader sees the old text or the new, never a mix."""
    bucket, name = split_gs_uri(gs_uri)
    exceptions = _api_errors()
    try:
        with gcs_errors(gs_uri):
            (client or gcs_client()).bucket(bucket).blob(name).upload_from_string(
                text.encode(), content_type="application/json", **gcs_options())
    except exceptions.GoogleAPICallError as error:
        raise StorageError(f"{gs_uri}: {error}") from error
    return gs_uri


def download_file(gs_uri: str, local_path: str, client=None) -> str:
    """The object at gs_uri into local_path (through a temporary name beside it)."""

    blob = gs_object(gs_uri, client)
    if blob is None:
        raise StorageError(f"{gs_uri}: no such object")
    with atomic_file(local_path) as temporary, gcs_errors(gs_uri):
        blob.download_to_filename(str(temporary), **gcs_options())
    return local_path


def delete(gs_uris: list[str], client=None) -> None:
    """Deletes the objects; ones already gone are no error."""
    client = client or gcs_client()
    exceptions = _api_errors()
    for uri in gs_uris:
        bucket, name = split_gs_uri(uri)
        try:
            with gcs_errors(uri):
                client.bucket(bucket).blob(name).delete(**gcs_options())
        except exceptions.NotFound:
            pass
