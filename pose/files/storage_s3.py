"""s3://bucket/key and minio://bucket/key through boto3: the S3 backend of pose.files.storage
(which callers
use; this module is not called by steps directly). Any S3 server: AWS, SeaweedFS (what Kubeflow
deploys
since KFP 2.15), MinIO, Ceph.

Configured as every S3 tool is, from the environment:
  AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL   the server, e.g. http://seaweedfs.kubeflow:9000 (unset:
  AWS);
                                           http:// or https:// says whether TLS is used
  AWS_REGION / AWS_DEFAULT_REGION          its region (default us-east-1)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY credentials; unset, boto3's default chain looks further:
                                           AWS_SESSION_TOKEN, IRSA's web identity token, ~/.aws, the
                                           instance or task role
  AWS_CA_BUNDLE                            a CA bundle for a server with a private certificate
  POSE_S3_PATH_STYLE                       true: bucket in the path (http://host/bucket/key), as
  SeaweedFS
                                           and MinIO want; false: virtual-hosted. Default: true
                                           when an
                                           endpoint is set, boto3's choice otherwise (KFP's
                                           forcePathStyle)
On a KFP cluster the steps set these from the run parameters and the mounted secret
(pipeline/cluster.py).
Publish's lock needs a server that honours conditional writes (If-None-Match: * and If-Match on
PutObject, If-Match on DeleteObject; 412 PreconditionFailed): AWS, MinIO, SeaweedFS 4.48 (the tests'
server) do; SeaweedFS 3.96 ignored If-None-Match (its issue 7153), and where a server ignores it two
publishes to one prefix are not kept apart.
Each request waits at most POSE_NETWORK_TIMEOUT seconds; failed requests are retried for about
POSE_NETWORK_RETRY seconds (as attempts: botocore counts attempts, not time).
"""

import contextlib
import os

from pose.files.storage import (
    CHUNK,
    ClientStore,
    ObjectInfo,
    StorageError,
    network_retry,
    network_timeout,
    replaced_while_read,
)

PATH_STYLE_ENV = "POSE_S3_PATH_STYLE"
DEFAULT_REGION = "us-east-1"


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment, with a scheme (https:// when none is given), or
    None."""
    value = (
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    ).strip()
    if not value:
        return None
    return value if "://" in value else f"https://{value}"


def _path_style() -> bool | None:
    text = os.environ.get(PATH_STYLE_ENV, "").strip().lower()
    if not text:
        return True if endpoint_url() else None
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise StorageError(f"{PATH_STYLE_ENV}={text!r}: expected true or false")
    return text in ("true", "1", "yes")


# botocore's standard retry mode waits rand(0, 1) x min(2 ** i, 20) s before retry i + 1 after a
# timeout or a broken connection (botocore/retries/standard.py, ExponentialBackoff: base 2, scale 1 s
# for these, at most 20 s).
BACKOFF_CAP_SECONDS = 20.0


def max_attempts() -> int:
    """Attempts per request such that, at worst (every attempt waits its POSE_NETWORK_TIMEOUT, every
    wait between attempts is botocore's longest), the whole call ends within POSE_NETWORK_RETRY
    plus one POSE_NETWORK_TIMEOUT, as the README promises."""
    timeout, retry = network_timeout(), network_retry()
    budget, attempts, worst = retry + timeout, 1, timeout
    while True:
        another = min(2.0 ** (attempts - 1), BACKOFF_CAP_SECONDS) + timeout  # its wait, then it
        if worst + another > budget:
            return attempts
        worst, attempts = worst + another, attempts + 1


def s3_client():
    import boto3
    from botocore.config import Config

    style = _path_style()
    config = Config(
        connect_timeout=network_timeout(),
        read_timeout=network_timeout(),
        retries={"total_max_attempts": max_attempts(), "mode": "standard"},
        s3={"addressing_style": {True: "path", False: "virtual", None: "auto"}[style]},
        signature_version="s3v4",
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url(), region_name=region, config=config
    )


def where() -> str:
    """The server, for messages: the endpoint, or AWS."""
    return endpoint_url() or "AWS S3"


def credentials_source() -> str | None:
    """Where boto3's chain finds credentials ('env', 'assume-role-with-web-identity', 'iam-role',
    ...), or
    None when it finds none. Never the credentials themselves."""
    import boto3

    credentials = boto3.session.Session().get_credentials()
    return None if credentials is None else getattr(credentials, "method", "found")


def credentials_problem() -> str | None:
    """Why s3:// cannot be used from here, or None (checked before a local run starts)."""
    if credentials_source() is None:
        return (
            "no S3 credentials here (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in "
            "~/.aws, or run where an instance role or IRSA provides them)"
        )
    return None


@contextlib.contextmanager
def s3_errors(uri: str, bucket: str):
    """Turns botocore's failures into one StorageError line naming `uri`, and what to check."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions

    try:
        yield
    except exceptions.NoCredentialsError:
        raise StorageError(
            f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            f"or on a cluster the s3_secret run parameter)"
        ) from None
    except (
        exceptions.EndpointConnectionError,
        exceptions.ConnectTimeoutError,
        exceptions.ReadTimeoutError,
        exceptions.ConnectionClosedError,
    ) as error:
        raise StorageError(
            f"{uri}: S3 endpoint {where()} unreachable after {max_attempts()} attempt(s) "
            f"of at most {network_timeout():g} s (POSE_NETWORK_TIMEOUT, POSE_NETWORK_RETRY): "
            f"{type(error).__name__}"
        ) from None
    except exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            raise StorageError(f"{uri}: bucket {bucket!r} does not exist at {where()}") from None
        if (
            code
            in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
                "InvalidToken",
                "ExpiredToken",
            )
            or status == 403
        ):
            raise StorageError(
                f"{uri}: {where()} refused the credentials ({code or status}; credentials "
                f"from {credentials_source() or 'nowhere'}): check the access key and secret, "
                f"and that they may use bucket {bucket!r}"
            ) from None
        message = error.response.get("Error", {}).get("Message", "")
        raise StorageError(
            f"{uri}: {where()} answered {code or status}: {message}".rstrip(": ")
        ) from None
    except exceptions.BotoCoreError as error:
        raise StorageError(f"{uri}: {type(error).__name__}: {error}") from None
    except (
        S3UploadFailedError
    ) as error:  # boto3's transfer manager wraps what went wrong in one message
        raise StorageError(
            f"{uri}: upload to {where()} failed: {str(error).split(': ', 1)[-1]}"
        ) from None


def _not_found(error) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound")


def _version(etag: str | None, version_id: str | None = None) -> str:
    """ETag (content hash for simple uploads, hash of hashes for multipart), and the version id
    where the
    bucket keeps versions."""
    tag = (etag or "").strip('"')
    return f"{tag}@{version_id}" if version_id and version_id != "null" else tag


class S3Store(ClientStore):
    """pose.files.storage's backend interface for s3:// and minio:// (see
    pose.files.storage.ObjectStore)."""

    def __init__(self, scheme: str = "s3"):
        super().__init__(scheme)

    def make_client(self):
        return s3_client()

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with s3_errors(self._uri(bucket, key), bucket):
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if _not_found(error):  # no such object, or no such bucket (a HEAD has no body)
                    return None
                raise
        return ObjectInfo(
            key, head.get("ContentLength"), _version(head.get("ETag"), head.get("VersionId"))
        )

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found = []
        with s3_errors(self._uri(bucket, prefix.rstrip("/")), bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                found += [
                    ObjectInfo(o["Key"], o.get("Size"), _version(o.get("ETag")))
                    for o in page.get("Contents", [])
                ]
        return found

    def read_into(self, bucket: str, key: str, writer, version: str | None = None) -> None:
        """Streams the object in CHUNK-sized reads: memory stays flat whatever the object's size.
        With `version` (stat's: the ETag, and the version id where the bucket keeps versions), the
        GET names it, so that the bytes are those stat saw."""
        from botocore.exceptions import ClientError

        uri = self._uri(bucket, key)
        pinned = {}
        if version is not None:
            tag, _, version_id = version.partition("@")
            pinned = {"VersionId": version_id} if version_id else {"IfMatch": f'"{tag}"'}
        with s3_errors(uri, bucket):
            try:
                body = self.client.get_object(Bucket=bucket, Key=key, **pinned)["Body"]
            except ClientError as error:
                if _not_found(error) and not pinned.get("VersionId"):
                    raise StorageError(f"{uri}: no such object") from None
                if _condition_failed(error):  # 412 on If-Match, NoSuchVersion on a version id
                    raise StorageError(replaced_while_read(uri, version)) from None
                raise
            with contextlib.closing(body):
                for chunk in body.iter_chunks(CHUNK):
                    writer.write(chunk)

    def upload(
        self, bucket: str, key: str, path: str, content_type: str, content_encoding: str | None
    ):
        """Multipart above 8 MiB (boto3's transfer manager), parts read from the file as they go."""
        extra = {
            "ContentType": content_type,
            **({"ContentEncoding": content_encoding} if content_encoding else {}),
        }
        with s3_errors(self._uri(bucket, key), bucket):
            self.client.upload_file(str(path), bucket, key, ExtraArgs=extra)

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str, content_encoding: str | None
    ) -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        with s3_errors(self._uri(bucket, key), bucket):
            self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, **extra
            )

    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with s3_errors(self._uri(bucket, key), bucket):
            try:
                return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as error:
                if str(error.response.get("Error", {}).get("Code")) == "NoSuchKey":
                    return None
                raise

    def delete(self, bucket: str, key: str) -> None:
        with s3_errors(self._uri(bucket, key), bucket):
            self.client.delete_object(
                Bucket=bucket, Key=key
            )  # S3 answers 204 for a missing key too

    def bucket_exists(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        with s3_errors(f"{self.scheme}://{bucket}", bucket):
            try:
                self.client.head_bucket(Bucket=bucket)
            except ClientError as error:
                if (
                    _not_found(error)
                    or str(error.response.get("Error", {}).get("Code")) == "NoSuchBucket"
                ):
                    return False
                raise
        return True

    def get_versioned(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """One GetObject: the ETag it answers is that of the bytes it sends."""
        from botocore.exceptions import ClientError

        with s3_errors(self._uri(bucket, key), bucket):
            try:
                answer = self.client.get_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if _not_found(error):
                    return None
                raise
            with contextlib.closing(answer["Body"]) as body:
                return body.read(), answer["ETag"]

    def put_if(
        self, bucket: str, key: str, data: bytes, content_type: str, version: str | None
    ) -> str | None:
        """PutObject with If-None-Match: * (absent) or If-Match: <ETag>. 412 PreconditionFailed is a
        condition that did not hold; 409 ConditionalRequestConflict (AWS: another conditional write
        to the key in flight) is this writer losing the race, the same answer; 404 NoSuchKey is
        If-Match on an object that is gone."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with s3_errors(self._uri(bucket, key), bucket):
            try:
                answer = self.client.put_object(
                    Bucket=bucket, Key=key, Body=data, ContentType=content_type, **condition
                )
            except ClientError as error:
                if _condition_failed(error):
                    return None
                raise
        return answer["ETag"]

    def delete_if(self, bucket: str, key: str, version: str) -> bool:
        """DeleteObject with If-Match: <ETag> (SeaweedFS 4.48 honours it). A server that does not
        implement a conditional delete (501) gets a HEAD, then a plain delete while the ETag is
        still `version`: a window of one request, where the condition would leave none."""
        from botocore.exceptions import ClientError

        with s3_errors(self._uri(bucket, key), bucket):
            try:
                self.client.delete_object(Bucket=bucket, Key=key, IfMatch=version)
            except ClientError as error:
                if _condition_failed(error):
                    return False
                if not _not_implemented(error):
                    raise
                current = self.stat(bucket, key)
                if current is None or current.version != version.strip('"'):
                    return False
                self.client.delete_object(Bucket=bucket, Key=key)
        return True


def _condition_failed(error) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (
        code in ("PreconditionFailed", "ConditionalRequestConflict")
        or status in (412, 409)
        or (_not_found(error))
    )


def _not_implemented(error) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return (
        code == "NotImplemented"
        or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501
    )
