"""One face for the tests that run the same behaviour against gs:// (fake-gcs-server) and s3://
(SeaweedFS): the `object_store` fixture of tests/conftest.py yields one of these. Each reads and
writes
through its store's own client, not through pose.files.storage, so a test checks pose.files.storage
against the
server rather than against itself."""


class GcsTestStore:
    scheme = "gs"

    def __init__(self):
        from pose.files.storage_gcs import gcs_client

        self.client = gcs_client()

    def make_bucket(self, name: str) -> str:
        """A bucket, empty (fake-gcs-server starts empty for every test)."""
        from tests.gcs import make_bucket

        make_bucket(name)
        return name

    def _blob(self, uri: str):
        from pose.files.storage import split_object_uri

        _, bucket, key = split_object_uri(uri)
        return self.client.bucket(bucket).blob(key)

    def put(self, uri: str, data: bytes) -> None:
        self._blob(uri).upload_from_string(data)

    def get(self, uri: str) -> bytes:
        return self._blob(uri).download_as_bytes(raw_download=True)

    def exists(self, uri: str) -> bool:
        return self._blob(uri).exists()

    def headers(self, uri: str) -> tuple[str, str | None]:
        """(Content-Type, Content-Encoding) as stored."""
        from pose.files.storage import split_object_uri

        _, bucket, key = split_object_uri(uri)
        blob = self.client.bucket(bucket).get_blob(key)
        return blob.content_type, blob.content_encoding

    def names(self, prefix_uri: str) -> list[str]:
        from pose.files.storage import split_object_uri

        _, bucket, prefix = split_object_uri(prefix_uri.rstrip("/") + "/")
        return sorted(b.name[len(prefix) :] for b in self.client.list_blobs(bucket, prefix=prefix))


class S3TestStore:
    scheme = "s3"

    def __init__(self):
        from tests.s3 import client

        self.client = client()

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        return bucket, key

    def make_bucket(self, name: str) -> str:
        """A bucket, emptied: the SeaweedFS server lives for the whole session, the test wants a
        fresh one."""
        from tests.s3 import make_bucket

        make_bucket(name)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                self.client.delete_object(Bucket=name, Key=item["Key"])
        return name

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = self._split(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, uri: str) -> bytes:
        bucket, key = self._split(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def exists(self, uri: str) -> bool:
        bucket, key = self._split(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def headers(self, uri: str) -> tuple[str, str | None]:
        bucket, key = self._split(uri)
        head = self.client.head_object(Bucket=bucket, Key=key)
        return head.get("ContentType"), head.get("ContentEncoding")

    def names(self, prefix_uri: str) -> list[str]:
        bucket, prefix = self._split(prefix_uri.rstrip("/") + "/")
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            found += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
        return sorted(found)
