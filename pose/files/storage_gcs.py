"""gs://bucket/key through google-cloud-storage: the gs backend of pose.files.storage (which
callers use; this
module is not called by steps directly).

Credentials: with `STORAGE_EMULATOR_HOST` set (tests, a local fake-gcs-server) anonymous, otherwise
the default credentials of the pod or laptop (GOOGLE_APPLICATION_CREDENTIALS, Workload Identity,
gcloud).
Every call waits at most POSE_NETWORK_TIMEOUT per request and retries transient failures for at most
POSE_NETWORK_RETRY seconds (google-cloud-storage's own default is 120 s).
"""

import contextlib
import os

from pose.files.storage import (
    ClientStore,
    ObjectInfo,
    StorageError,
    network_retry,
    network_timeout,
    replaced_while_read,
)


def gcs_options() -> dict:
    """timeout= and retry= for every google-cloud-storage call."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = network_retry()
    retry = (
        DEFAULT_RETRY.with_timeout(deadline)
        if hasattr(DEFAULT_RETRY, "with_timeout")
        else DEFAULT_RETRY.with_deadline(deadline)
    )
    return {"timeout": network_timeout(), "retry": retry if deadline else None}


@contextlib.contextmanager
def gcs_errors(uri: str):
    """Turns google-cloud-storage's and the network's failures into a StorageError naming `uri`."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.RetryError as error:
        raise StorageError(
            f"{uri}: gave up after {network_retry():g} s of retries "
            f"(POSE_NETWORK_RETRY): {error.cause or error}"
        ) from None
    except (
        exceptions.ServerError,
        exceptions.TooManyRequests,
        ConnectionError,
        TimeoutError,
    ) as error:
        raise StorageError(
            f"{uri}: storage unreachable or failing: {type(error).__name__}: {error}"
        ) from None
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        raise  # the caller's answer: no such object, a condition that did not hold
    except exceptions.GoogleAPICallError as error:  # no permission, a refused name
        raise StorageError(f"{uri}: {error}") from None
    except Exception as error:
        module = type(error).__module__
        if module.startswith(("requests", "urllib3", "google.auth")):
            raise StorageError(
                f"{uri}: storage unreachable: {type(error).__name__}: {error}"
            ) from None
        raise


def gcs_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test"),
            credentials=AnonymousCredentials(),
        )
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client()
    except DefaultCredentialsError as error:
        raise StorageError(
            f"no Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS, use a "
            f"workload identity, or STORAGE_EMULATOR_HOST for an emulator): {error}"
        ) from None


def credentials_problem() -> str | None:
    """Why gs:// cannot be used from here, or None (checked before a local run starts)."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        return (
            "no Google Cloud credentials here (set GOOGLE_APPLICATION_CREDENTIALS, run "
            "`gcloud auth "
            "application-default login`, or set STORAGE_EMULATOR_HOST for an emulator)"
        )
    return None


class GcsStore(ClientStore):
    """pose.files.storage's backend interface for gs:// (see pose.files.storage.ObjectStore)."""

    def __init__(self, scheme: str = "gs"):
        super().__init__(scheme)

    def make_client(self):
        return gcs_client()

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        from google.api_core import exceptions

        try:
            with gcs_errors(self._uri(bucket, key)):
                blob = self.client.bucket(bucket).get_blob(key, **gcs_options())
        except exceptions.NotFound:  # the bucket itself is missing
            return None
        return None if blob is None else ObjectInfo(blob.name, blob.size, str(blob.generation))

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        from google.api_core import exceptions

        try:
            with gcs_errors(self._uri(bucket, prefix.rstrip("/"))):
                return [
                    ObjectInfo(b.name, b.size, str(b.generation))
                    for b in self.client.list_blobs(bucket, prefix=prefix, **gcs_options())
                ]
        except exceptions.NotFound:
            raise StorageError(
                f"{self._uri(bucket, prefix.rstrip('/'))}: bucket {bucket!r} does not exist"
            ) from None

    def read_into(self, bucket: str, key: str, writer, version: str | None = None) -> None:
        from google.api_core import exceptions

        # The generation named in the GET (that generation's bytes, or 404 once it is replaced on a
        # bucket that keeps none), and ifGenerationMatch besides (412): fake-gcs-server, which the
        # tests run, honours the first only.
        generation = None if version is None else int(version)
        pinned = {} if version is None else {"if_generation_match": generation}
        try:
            with gcs_errors(self._uri(bucket, key)):
                self.client.bucket(bucket).blob(key, generation=generation).download_to_file(
                    writer, **pinned, **gcs_options()
                )
        except exceptions.NotFound:
            if version is not None:
                raise StorageError(replaced_while_read(self._uri(bucket, key), version)) from None
            raise StorageError(f"{self._uri(bucket, key)}: no such object") from None
        except exceptions.PreconditionFailed:
            raise StorageError(replaced_while_read(self._uri(bucket, key), version)) from None

    def _writing(self, bucket: str, key: str):
        """gcs_errors, and a missing bucket (an upload's only NotFound) named as such."""
        from google.api_core import exceptions

        @contextlib.contextmanager
        def translate():
            try:
                with gcs_errors(self._uri(bucket, key)):
                    yield
            except exceptions.NotFound:
                raise StorageError(
                    f"{self._uri(bucket, key)}: bucket {bucket!r} does not exist"
                ) from None

        return translate()

    def upload(
        self, bucket: str, key: str, path: str, content_type: str, content_encoding: str | None
    ):
        with self._writing(bucket, key):
            blob = self.client.bucket(bucket).blob(key)
            blob.content_encoding = content_encoding
            blob.upload_from_filename(str(path), content_type=content_type, **gcs_options())

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str, content_encoding: str | None
    ) -> None:
        with self._writing(bucket, key):
            blob = self.client.bucket(bucket).blob(key)
            blob.content_encoding = content_encoding
            blob.upload_from_string(data, content_type=content_type, **gcs_options())

    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        from google.api_core import exceptions

        try:
            with gcs_errors(self._uri(bucket, key)):
                return self.client.bucket(bucket).blob(key).download_as_bytes(**gcs_options())
        except exceptions.NotFound:
            return None

    def delete(self, bucket: str, key: str) -> None:
        from google.api_core import exceptions

        try:
            with gcs_errors(self._uri(bucket, key)):
                self.client.bucket(bucket).blob(key).delete(**gcs_options())
        except exceptions.NotFound:
            pass

    def bucket_exists(self, bucket: str) -> bool:
        with gcs_errors(f"gs://{bucket}"):
            return self.client.bucket(bucket).exists(**gcs_options())

    def get_versioned(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """The bytes of the generation that get_blob saw (ifGenerationMatch): when the object is
        replaced between the two requests, both are read again."""
        from google.api_core import exceptions

        for _ in range(5):
            try:
                with gcs_errors(self._uri(bucket, key)):
                    blob = self.client.bucket(bucket).get_blob(key, **gcs_options())
                    if blob is None:
                        return None
                    data = blob.download_as_bytes(
                        if_generation_match=blob.generation, **gcs_options()
                    )
                return data, str(blob.generation)
            except exceptions.NotFound:
                return None
            except exceptions.PreconditionFailed:
                continue
        raise StorageError(f"{self._uri(bucket, key)}: replaced on every one of 5 reads")

    def put_if(
        self, bucket: str, key: str, data: bytes, content_type: str, version: str | None
    ) -> str | None:
        """ifGenerationMatch: 0 (absent) or the generation read. google-cloud-storage retries a
        conditional upload (it is idempotent); a retry of one that did land answers 412, which the
        caller tells from a lost race by reading the object back."""
        from google.api_core import exceptions

        try:
            with self._writing(bucket, key):
                blob = self.client.bucket(bucket).blob(key)
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=0 if version is None else int(version),
                    **gcs_options(),
                )
        except exceptions.PreconditionFailed:
            return None
        return str(blob.generation)

    def delete_if(self, bucket: str, key: str, version: str) -> bool:
        from google.api_core import exceptions

        try:
            with gcs_errors(self._uri(bucket, key)):
                self.client.bucket(bucket).blob(key).delete(
                    if_generation_match=int(version), **gcs_options()
                )
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return False
        return True
