"""The `keypoints` parameter's YAML file, wherever it lies: a local path as it is, a gs://, s3://,
minio:// or https:// file fetched (bounded in size) into a folder, so that convert reads a local file.
Errors (KeypointSetError) start with the URI.
"""

from pathlib import Path

from pose.data import keypoints

REMOTE_SCHEMES = ("gs://", "s3://", "minio://", "https://", "http://")


def is_remote(spec: str) -> bool:
    return spec.startswith(REMOTE_SCHEMES)


def local_spec(spec: str, folder) -> str:
    """`spec` for keypoints.load: unchanged unless it is a remote file, which is fetched into
    `folder` (at most keypoints.MAX_YAML_BYTES) and named by its local path."""
    if not is_remote(spec):
        return spec
    from pose.files import storage

    if spec.startswith(("https://", "http://")):
        with storage.open_http(spec) as response:
            data = response.read(keypoints.MAX_YAML_BYTES + 1)
    else:
        info = storage.stat(spec)
        if info is None:
            raise keypoints.KeypointSetError(f"{spec}: no such object")
        if info.size > keypoints.MAX_YAML_BYTES:
            raise keypoints.KeypointSetError(
                f"{spec}: {info.size} bytes; a keypoint set's YAML file is at most "
                f"{keypoints.MAX_YAML_BYTES}"
            )
        data = storage.read_bytes(spec) or b""
    if len(data) > keypoints.MAX_YAML_BYTES:
        raise keypoints.KeypointSetError(
            f"{spec}: more than {keypoints.MAX_YAML_BYTES} bytes; a keypoint set's YAML "
            "file is a few kilobytes"
        )
    path = Path(folder) / "keypoints.yaml"
    path.write_bytes(data)
    return str(path)
