"""Object storage and URLs: the one owner of every read and write outside the pipeline root
(download's
source, publish's destination, train's checkpoints). Callers pass URIs; which backend serves one is
decided here, by its scheme, and nowhere else:

  gs://bucket/key                    pose/files/storage_gcs.py (google-cloud-storage)
  s3://bucket/key, minio://bucket/key  pose/files/storage_s3.py (boto3, any S3 server: AWS,
  SeaweedFS, MinIO)
  http://, https://                  here (urllib), read only
  a local path, file://              the file system
  synthetic://N                      rendered by download; nothing is stored behind it

Network waits are bounded, so that an unreachable endpoint ends in one clear error within half a
minute:
  POSE_NETWORK_TIMEOUT   seconds one request (or one read of a download) may wait (default 10)
  POSE_NETWORK_RETRY     seconds a gs:// or s3:// call keeps retrying transient failures (default
  20)
  POSE_HTTP_RETRIES      further attempts to connect to an http(s) source (default 1)
"""

import hashlib
import logging
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple, Protocol

from tqdm import tqdm

from pose.files import uris
from pose.files.atomic import atomic_file

log = logging.getLogger(__name__)
CHUNK = 1 << 20
OBJECT_SCHEMES = uris.OBJECT_SCHEMES
# Every kind of URI a parameter may accept (check_uri's `accepted`): the schemes, and these two.
LOCAL, SYNTHETIC = "local", "synthetic"


class StorageError(OSError):
    """A URI that cannot be read or written; the message names it."""


class ObjectInfo(NamedTuple):
    key: str  # the object's full key (or, from list_objects, its name below the prefix)
    size: int | None
    version: str  # what changes when the object is replaced: a gs generation, an s3 ETag


class ObjectStore(Protocol):
    """What a backend (storage_gcs.py, storage_s3.py beside this) provides; keys are plain
    object names."""

    scheme: str

    def stat(self, bucket: str, key: str) -> ObjectInfo | None: ...
    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]: ...
    def read_into(self, bucket: str, key: str, writer, version: str | None = None) -> None: ...
    def upload(
        self, bucket: str, key: str, path: str, content_type: str, content_encoding: str | None
    ): ...
    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str, content_encoding: str | None
    ) -> None: ...
    def get_bytes(self, bucket: str, key: str) -> bytes | None: ...
    def delete(self, bucket: str, key: str) -> None: ...
    def bucket_exists(self, bucket: str) -> bool: ...
    # Conditional operations (see the functions of the same names below): the store decides
    # alone, in one request, so that of two writers exactly one wins.
    def get_versioned(self, bucket: str, key: str) -> tuple[bytes, str] | None: ...
    def put_if(
        self, bucket: str, key: str, data: bytes, content_type: str, version: str | None
    ) -> str | None: ...
    def delete_if(self, bucket: str, key: str, version: str) -> bool: ...


class ClientStore:
    """What the backends share: their scheme, the client made on first use (`make_client`), and an
    object's URI for messages."""

    def __init__(self, scheme: str):
        self.scheme = scheme
        self._client = None

    def make_client(self):
        raise NotImplementedError

    @property
    def client(self):
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def _uri(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"


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


def network_retry() -> float:
    return _setting("POSE_NETWORK_RETRY", 20.0)


# ---- URIs ----------------------------------------------------------------------------------------


def kind_of(uri: str) -> str:
    """'gs', 's3', 'minio', 'http', 'https', 'synthetic', LOCAL (a path or file://), or another
    scheme."""
    if uris.is_local(uri.strip()):
        return LOCAL
    return urllib.parse.urlparse(uri.strip()).scheme.lower()


def is_object_uri(uri: str) -> bool:
    return kind_of(uri) in OBJECT_SCHEMES


def split_object_uri(uri: str) -> tuple[str, str, str]:
    """'s3://bucket/a/b' -> ('s3', 'bucket', 'a/b'); a StorageError unless it names a bucket of a
    store."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in OBJECT_SCHEMES or not rest or rest.startswith("/"):
        raise StorageError(
            f"{uri}: not a bucket URI (expected "
            f"{', '.join(s + '://bucket/path' for s in OBJECT_SCHEMES)})"
        )
    bucket, _, key = rest.partition("/")
    return scheme.lower(), bucket, key


def check_uri(name: str, uri: str, accepted: tuple[str, ...]) -> None:
    """Refuses a URI whose kind (kind_of) the parameter `name` does not take, naming both."""
    kind = kind_of(uri)
    if kind not in accepted:
        shown = [
            f"{k}://"
            if k not in (LOCAL, SYNTHETIC)
            else ("a local path" if k == LOCAL else "synthetic://N")
            for k in accepted
        ]
        what = "is a local path" if kind == LOCAL else f"has the unsupported scheme {kind!r}"
        raise StorageError(f"{name}={uri!r} {what}; {name} takes {', '.join(shown)}")
    try:  # a bucket for gs://, s3://, minio://, a host for http(s)://: the rule preflight applies
        uris.check_authority(uri, name)
    except uris.UriError as error:
        raise StorageError(str(error)) from None


def credentials_problem(uri: str) -> str | None:
    """Why the URI's store cannot be used from this machine for lack of credentials, or None. Looks
    only
    at where credentials would come from; it sends no request."""
    kind = kind_of(uri)
    if kind == "gs":
        from pose.files import storage_gcs

        return storage_gcs.credentials_problem()
    if kind in ("s3", "minio"):
        from pose.files import storage_s3

        return storage_s3.credentials_problem()
    return None


def store_for(uri: str) -> ObjectStore:
    """A backend for the URI's scheme (it holds one client; reuse it for many calls)."""
    scheme, _, _ = split_object_uri(uri)
    if scheme == "gs":
        from pose.files.storage_gcs import GcsStore

        return GcsStore()
    from pose.files.storage_s3 import S3Store

    return S3Store(scheme)


def _prefix(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


# ---- objects -------------------------------------------------------------------------------------


def stat(uri: str, store: ObjectStore | None = None) -> ObjectInfo | None:
    """The object named exactly by uri, or None when there is no such object (it may be a
    prefix)."""
    _, bucket, key = split_object_uri(uri)
    if not key or key.endswith("/"):
        return None
    return (store or store_for(uri)).stat(bucket, key)


def list_objects(prefix_uri: str, store: ObjectStore | None = None) -> list[ObjectInfo]:
    """The objects under prefix_uri/ (keys relative to it), sorted; [] when there are none."""
    _, bucket, key = split_object_uri(prefix_uri)
    prefix = _prefix(key)
    found = (store or store_for(prefix_uri)).list(bucket, prefix)
    return sorted(
        (info._replace(key=info.key[len(prefix) :]) for info in found), key=lambda i: i.key
    )


def list_names(prefix_uri: str, store: ObjectStore | None = None) -> list[str]:
    return [info.key for info in list_objects(prefix_uri, store)]


def replaced_while_read(uri: str, version: str | None) -> str:
    """The one message for an object replaced between a stat and the read of its bytes."""
    return (
        f"{uri}: replaced (or deleted) since it was looked at (version {version} then): its new bytes "
        "were not read under the old version's name; run again to read the new one"
    )


def read_into(
    uri: str, writer, store: ObjectStore | None = None, version: str | None = None
) -> None:
    """Streams one object into a file-like writer, CHUNK by CHUNK. With `version` (stat's), only
    those bytes: the store refuses the read when the object was replaced since (gs
    ifGenerationMatch, s3 If-Match or the version id), and a StorageError says so."""
    _, bucket, key = split_object_uri(uri)
    (store or store_for(uri)).read_into(bucket, key, writer, version)


def download_file(uri: str, local_path: str, store: ObjectStore | None = None) -> str:
    """The object at uri into local_path (through a temporary name beside it)."""
    with atomic_file(local_path) as temporary, open(temporary, "wb") as out:
        read_into(uri, out, store)
    return local_path


def download_prefix(uri: str, dest_dir: str) -> list[str]:
    """Every object under the prefix uri/ into dest_dir (keeping the paths below the prefix);
    returns the
    local paths."""
    store = store_for(uri)
    dest = Path(dest_dir)
    objects = [o for o in list_objects(uri, store) if o.key and not o.key.endswith("/")]
    if not objects:
        raise StorageError(f"{uri}: no such object, and no objects under the prefix")
    base = uri.rstrip("/")
    paths = []
    with tqdm(
        total=sum(o.size or 0 for o in objects), unit="B", unit_scale=True, desc=uri, mininterval=1
    ) as bar:
        for info in objects:
            target = dest / info.key
            if not uris.is_inside(target, dest):
                raise StorageError(f"{uri}: object {info.key!r} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                read_into(f"{base}/{info.key}", out, store)
            bar.update(info.size or 0)
            paths.append(str(target))
    log.info("downloaded %d objects (%d bytes) from %s", len(paths), bar.n, uri)
    return paths


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def upload_file(
    local_path: str, uri: str, store: ObjectStore | None = None, content_encoding: str | None = None
) -> str:
    """The file as the object uri, with the content type its name implies."""
    _, bucket, key = split_object_uri(uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{uri}: an upload needs an object name, not a bucket or prefix")
    (store or store_for(uri)).upload(
        bucket, key, str(local_path), content_type(key), content_encoding
    )
    return uri


def write_bytes(
    uri: str,
    data: bytes,
    store: ObjectStore | None = None,
    content_type_: str | None = None,
    content_encoding: str | None = None,
) -> str:
    """One object, replaced whole: a reader sees the old bytes or the new, never a mix."""
    _, bucket, key = split_object_uri(uri)
    (store or store_for(uri)).put_bytes(
        bucket, key, data, content_type_ or content_type(key), content_encoding
    )
    return uri


def read_bytes(uri: str, store: ObjectStore | None = None) -> bytes | None:
    """The object's bytes, or None when there is no such object."""
    _, bucket, key = split_object_uri(uri)
    return (store or store_for(uri)).get_bytes(bucket, key)


def read_text(uri: str, store: ObjectStore | None = None) -> str | None:
    data = read_bytes(uri, store)
    return None if data is None else data.decode()


def write_text(uri: str, text: str, store: ObjectStore | None = None) -> str:
    return write_bytes(uri, text.encode(), store, content_type_="application/json")


def delete(uris: list[str], store: ObjectStore | None = None) -> None:
    """Deletes the objects; ones already gone are no error."""
    for uri in uris:
        _, bucket, key = split_object_uri(uri)
        store = store or store_for(uri)
        store.delete(bucket, key)


# ---- conditional writes: what makes a lock object a lock ------------------------------------------
# A version here is the store's own: a gs generation, an s3 ETag as the server sent it. Callers get it
# from these functions and hand it back unchanged.


def read_versioned(uri: str, store: ObjectStore | None = None) -> tuple[bytes, str] | None:
    """(bytes, version) of the object, read in one request (the version is that of these bytes), or
    None when there is no such object."""
    _, bucket, key = split_object_uri(uri)
    return (store or store_for(uri)).get_versioned(bucket, key)


def create_if_absent(uri: str, data: bytes, store: ObjectStore | None = None) -> str | None:
    """Writes the object only when none exists (gs ifGenerationMatch=0, s3 If-None-Match: *);
    returns its version, or None when an object was there (it is left unchanged)."""
    _, bucket, key = split_object_uri(uri)
    return (store or store_for(uri)).put_if(bucket, key, data, content_type(key), None)


def replace_if(uri: str, data: bytes, version: str, store: ObjectStore | None = None) -> str | None:
    """Replaces the object only while it is still `version` (gs ifGenerationMatch, s3 If-Match);
    returns the new version, or None when it has changed or gone since (nothing was written)."""
    _, bucket, key = split_object_uri(uri)
    return (store or store_for(uri)).put_if(bucket, key, data, content_type(key), version)


def delete_if(uri: str, version: str, store: ObjectStore | None = None) -> bool:
    """Deletes the object only while it is still `version`; False when it has changed (it is left
    alone) or is gone."""
    _, bucket, key = split_object_uri(uri)
    return (store or store_for(uri)).delete_if(bucket, key, version)


def bucket_exists(uri: str, store: ObjectStore | None = None) -> bool:
    _, bucket, _ = split_object_uri(uri)
    return (store or store_for(uri)).bucket_exists(bucket)


# ---- versions: what download's cache key follows
# ---------------------------------------------------


def source_version(uri: str) -> str:
    """A string that changes when the data behind a source URI changes, and only then: the object's
    generation (gs) or ETag (s3), or a digest of those of every object under a prefix; an https
    resource's ETag or Last-Modified; a local file's size and mtime (a folder's: of every file
    below it);
    "" for synthetic://N, which the URI alone determines. A StorageError when the source cannot be
    read."""
    kind = kind_of(uri)
    if kind == SYNTHETIC:
        return ""
    if kind in OBJECT_SCHEMES:
        store = store_for(uri)
        info = stat(uri, store)
        if info is not None:
            return object_version(uri, info)
        objects = list_objects(uri, store)
        if not objects:
            raise StorageError(f"{uri}: no such object, and no objects under the prefix")
        return f"{kind}-prefix:" + _digest((o.key, o.version, o.size) for o in objects)
    if kind in ("http", "https"):
        return http_version(uri)
    if kind == LOCAL:
        path = uris.local_path(uri)
        if path.is_file():
            status = path.stat()
            return f"file:{status.st_size}:{status.st_mtime_ns}"
        if path.is_dir():
            return "folder:" + _digest(
                (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(path.rglob("*"))
                if p.is_file()
            )
        raise StorageError(f"{uri}: no such file or folder")
    raise StorageError(f"{uri}: unsupported scheme {kind!r}")


def object_version(uri: str, info: ObjectInfo) -> str:
    """source_version of the single object `uri` that stat described as `info`."""
    return f"{kind_of(uri)}:{info.version}:{info.size}"


def _digest(rows) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(row).encode())
    return digest.hexdigest()[:32]


def http_version(url: str) -> str:
    """The resource's ETag, else its Last-Modified (from a HEAD request); "" when the server sends
    neither
    (download is then cached on the URL alone, as before)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "pose-pipeline"})
    try:
        with urllib.request.urlopen(request, timeout=network_timeout()) as response:
            tag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    except urllib.error.HTTPError as error:
        if error.code in (403, 405, 501):  # servers that answer GET only (presigned URLs...)
            log.warning(
                "%s answers HEAD with HTTP %d: its version is unknown, download is "
                "cached on the URL alone (give sha256 to pin it)",
                url,
                error.code,
            )
            return ""
        raise StorageError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise StorageError(f"{url}: cannot connect ({getattr(error, 'reason', error)})") from None
    if tag:
        return f"etag:{tag}"
    if modified:
        return f"last-modified:{modified}"
    log.warning(
        "%s sends neither ETag nor Last-Modified: a replaced file at this URL is served from "
        "the cache (give sha256 to pin it)",
        url,
    )
    return ""


# ---- http(s) and local paths
# -------------------------------------------------------------------------


def open_http(url: str, timeout: float | None = None):
    """Opens an http(s) URL for streaming; the response has .length (None when the server sends
    none).
    Each socket operation, reads included, waits at most `timeout` (POSE_NETWORK_TIMEOUT) seconds;
    a failed
    connection is tried again POSE_HTTP_RETRIES times."""
    timeout = network_timeout() if timeout is None else timeout
    attempts = 1 + int(_setting("POSE_HTTP_RETRIES", 1))
    for attempt in range(1, attempts + 1):
        try:
            return urllib.request.urlopen(
                urllib.request.Request(url, headers={"User-Agent": "pose-pipeline"}),
                timeout=timeout,
            )
        except urllib.error.HTTPError as error:
            raise StorageError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            if attempt == attempts:
                what = (
                    f"no answer within {timeout:g} s (POSE_NETWORK_TIMEOUT)"
                    if isinstance(reason, TimeoutError)
                    else f"cannot connect ({reason})"
                )
                raise StorageError(f"{url}: {what}, after {attempts} attempt(s)") from None
            log.warning("%s: %s; trying again (%d of %d)", url, reason, attempt + 1, attempts)
