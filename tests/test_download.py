"""download: every source kind against real servers (fake-gcs-server and SeaweedFS for gs:// and s3://,
http.server), and each bad input's message."""

import functools
import hashlib
import http.server
import io
import json
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from components.download import DownloadError, download
from pose.data.aic_release import AIC_LAYOUT
from pose.data.synthetic import render_release

NUM_TRAIN = 12  # valid = 8
TRAIN_JSON = Path(AIC_LAYOUT["train"][0]) / AIC_LAYOUT["train"][1]
VALID_JSON = Path(AIC_LAYOUT["valid"][0]) / AIC_LAYOUT["valid"][1]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("release")
    render_release(str(folder), NUM_TRAIN, 8, 3)
    return folder


@pytest.fixture(scope="module")
def release_zip(release, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archives") / "ai_challenger_keypoint.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        for file in sorted(release.rglob("*")):
            bundle.write(file, file.relative_to(release).as_posix())
    return path


@pytest.fixture(scope="module")
def http_root(release, tmp_path_factory):
    """A real HTTP server on 127.0.0.1 serving a .tar.gz of the release; yields (base URL, folder)."""
    root = tmp_path_factory.mktemp("http")
    with tarfile.open(root / "release.tar.gz", "w:gz") as bundle:
        bundle.add(release, arcname="aic")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_release(output: Path, original: Path, summary: dict, below: str = "") -> None:
    for annotation in (TRAIN_JSON, VALID_JSON):
        assert (output / below / annotation).read_bytes() == (original / annotation).read_bytes()
    assert summary["images_train"] == NUM_TRAIN and summary["images_valid"] == 8
    assert not list(output.parent.glob(f".{output.name}.tmp-*"))


def _assert_nothing_written(output: Path) -> None:
    assert not output.exists() or not any(output.iterdir())
    assert not list(output.parent.glob(f".{output.name}.tmp-*"))


# ---------------------------------------------------------------------------------------------
# Sources


def test_synthetic_source_renders_the_official_layout(tmp_path):
    output = tmp_path / "raw"
    output.mkdir()  # KFP creates the artifact folder before the step runs
    summary = download("synthetic://10?seed=4", str(output))
    assert (
        summary["images_train"] == 10
        and summary["images_valid"] == 8
        and summary["synthetic_seed"] == 4
    )
    records = json.loads((output / TRAIN_JSON).read_text())
    assert len(records) == 10 and summary["people_train"] == sum(
        len(r["human_annotations"]) for r in records
    )


def test_synthetic_coco_layout_and_its_image_counts(tmp_path):
    summary = download("synthetic://10?seed=4&layout=coco", str(tmp_path / "raw"))
    assert (summary["images_train"], summary["images_valid"]) == (10, 8)
    assert summary["synthetic_layout"] == "coco"
    data = json.loads((tmp_path / "raw/annotations/person_keypoints_train2017.json").read_text())
    assert len(data["images"]) == 10 and summary["people_train"] == len(data["annotations"])
    assert len(data["categories"][0]["keypoints"]) == 17
    with pytest.raises(DownloadError, match=r"layout is 'mpii'"):
        download("synthetic://10?layout=mpii", str(tmp_path / "other"))


def test_coco_format_image_folders_are_counted_by_split(tmp_path):
    """COCO 2017's train2017/ and val2017/, CVAT's images/<subset>/ (download sees no annotation)."""
    for folder in (
        "coco/train2017",
        "coco/val2017",
        "cvat/images/train",
        "cvat/images/validation",
        "other",
    ):
        (tmp_path / "source" / folder).mkdir(parents=True)
        (tmp_path / "source" / folder / "a.jpg").write_bytes(b"\xff\xd8")
    summary = download(str(tmp_path / "source"), str(tmp_path / "raw"))
    assert (summary["images"], summary["images_train"], summary["images_valid"]) == (5, 2, 2)


def test_bucket_zip_with_checksum(object_store, release, release_zip, tmp_path):
    base = f"{object_store.scheme}://{object_store.make_bucket('releases')}"
    object_store.put(f"{base}/aic/release.zip", release_zip.read_bytes())
    output = tmp_path / "raw"
    summary = download(f"{base}/aic/release.zip", str(output), sha256=_sha256(release_zip))
    _assert_release(output, release, summary)
    assert not list(output.rglob(".download-*"))


def test_what_was_versioned_is_what_is_read(object_store, release_zip, tmp_path):
    """An object replaced after the run's source-version task (or download's own stat) looked at
    it: download refuses, naming both versions, instead of recording the new bytes under the old
    version (the cache key); a GET pinned to stat's version is refused by the store itself
    (ifGenerationMatch, If-Match)."""
    from pose.files import storage

    uri = f"{object_store.scheme}://{object_store.make_bucket('releases')}/pinned/release.zip"
    object_store.put(uri, release_zip.read_bytes())
    looked_at = storage.stat(uri)
    recorded = storage.source_version(uri)
    object_store.put(uri, release_zip.read_bytes() + b"\0")  # replaced: new bytes, new version

    with pytest.raises(
        DownloadError, match=r"replaced since this run's source-version task read it"
    ):
        download(uri, str(tmp_path / "raw"), expected_version=recorded)
    assert not (tmp_path / "raw").exists()  # nothing half-written where convert would read
    with pytest.raises(
        storage.StorageError, match=r"replaced \(or deleted\) since it was looked at"
    ):
        storage.read_into(uri, io.BytesIO(), version=looked_at.version)
    current = io.BytesIO()
    storage.read_into(uri, current, version=storage.stat(uri).version)
    assert current.getvalue() == release_zip.read_bytes() + b"\0"
    download(uri, str(tmp_path / "again"), expected_version=storage.source_version(uri))


def test_bucket_prefix_downloads_every_object(object_store, release, tmp_path):
    base = f"{object_store.scheme}://{object_store.make_bucket('releases')}"
    files = [p for p in sorted(release.rglob("*")) if p.is_file()]
    for path in files:
        object_store.put(f"{base}/tree/{path.relative_to(release).as_posix()}", path.read_bytes())
    assert len(files) == NUM_TRAIN + 8 + 2
    output = tmp_path / "raw"
    _assert_release(output, release, download(f"{base}/tree", str(output)))


def test_http_tar_gz(http_root, release, tmp_path):
    base, _ = http_root
    output = tmp_path / "raw"
    summary = download(f"{base}/release.tar.gz", str(output))
    _assert_release(output, release, summary, below="aic")


def test_local_path_and_file_uri(release, release_zip, tmp_path):
    from_zip = tmp_path / "from_zip"
    _assert_release(
        from_zip,
        release,
        download(str(release_zip), str(from_zip), sha256=_sha256(release_zip).upper()),
    )
    from_uri = tmp_path / "from_uri"
    _assert_release(from_uri, release, download(release_zip.as_uri(), str(from_uri)))
    from_folder = tmp_path / "from_folder"
    _assert_release(from_folder, release, download(str(release), str(from_folder)))
    assert release_zip.exists()  # a local source is never consumed


def test_cli(tmp_path):
    output = tmp_path / "raw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.download",
            "--source",
            "synthetic://8?seed=1",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert "done in" in result.stderr and "images_train=8" in result.stderr
    assert len(list(output.rglob("*.jpg"))) == 16


# ---------------------------------------------------------------------------------------------
# Bad inputs: each fails with a message naming what is wrong, and leaves nothing at output


def test_wrong_sha256_names_both_digests_and_leaves_nothing(release_zip, tmp_path):
    output = tmp_path / "raw"
    output.mkdir()
    wrong = "0" * 64
    with pytest.raises(DownloadError) as error:
        download(str(release_zip), str(output), sha256=wrong)
    message = str(error.value)
    assert str(release_zip) in message and "sha256 mismatch" in message
    assert wrong in message and _sha256(release_zip) in message
    _assert_nothing_written(output)


def test_malformed_sha256_is_refused(release_zip, tmp_path):
    with pytest.raises(DownloadError, match="64 hex digits"):
        download(str(release_zip), str(tmp_path / "raw"), sha256="abc")


def test_truncated_zip(release_zip, tmp_path):
    broken = tmp_path / "broken.zip"
    data = release_zip.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    output = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"broken\.zip.*truncated or corrupt"):
        download(str(broken), str(output))
    _assert_nothing_written(output)


def test_truncated_tar_gz_over_http(http_root, tmp_path):
    base, root = http_root
    data = (root / "release.tar.gz").read_bytes()
    (root / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    output = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"cut\.tar\.gz.*truncated or corrupt"):
        download(f"{base}/cut.tar.gz", str(output))
    _assert_nothing_written(output)


@pytest.mark.parametrize(
    "member", ["../escape.txt", "/tmp/absolute-escape.txt", "aic/../../escape.txt"]
)
def test_zip_slip_is_refused(tmp_path, member):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("aic/ok.txt", "fine")
        bundle.writestr(zipfile.ZipInfo(member), "evil")
    output = tmp_path / "out" / "raw"
    with pytest.raises(DownloadError) as error:
        download(str(archive), str(output))
    assert (
        "slip.zip" in str(error.value)
        and repr(member) in str(error.value)
        and "escapes" in str(error.value)
    )
    _assert_nothing_written(output)
    assert not list(tmp_path.rglob("*escape.txt"))


def test_zip_symlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("aic/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "../../etc/passwd")
    output = tmp_path / "raw"
    with pytest.raises(
        DownloadError,
        match=r"link\.zip: refusing member 'aic/passwd': a link to '\.\./\.\./etc/passwd'",
    ):
        download(str(archive), str(output))
    _assert_nothing_written(output)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "absolute"])
def test_tar_members_pointing_out_are_refused(tmp_path, kind):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as bundle:
        member = tarfile.TarInfo("aic/evil")
        if kind == "absolute":
            member = tarfile.TarInfo("/tmp/absolute-evil")
            member.size = 4
            bundle.addfile(member, io.BytesIO(b"evil"))
        else:
            member.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            member.linkname = "../../outside" if kind == "symlink" else "/etc/passwd"
            bundle.addfile(member)
    output = tmp_path / "raw"
    with pytest.raises(DownloadError) as error:
        download(str(archive), str(output))
    assert "links.tar" in str(error.value) and "escapes the output folder" in str(error.value)
    assert "evil" in str(error.value)
    _assert_nothing_written(output)


def test_missing_object_and_bucket(object_store, tmp_path):
    base = f"{object_store.scheme}://{object_store.make_bucket('releases')}"
    output = tmp_path / "raw"
    with pytest.raises(DownloadError, match=rf"{base}/missing/release\.zip: no such object"):
        download(f"{base}/missing/release.zip", str(output))
    with pytest.raises(
        DownloadError,
        match=rf"{object_store.scheme}://no-such-bucket/x\.zip: bucket "
        r"'no-such-bucket' does not exist",
    ):
        download(f"{object_store.scheme}://no-such-bucket/x.zip", str(output))
    _assert_nothing_written(output)


def test_http_404(http_root, tmp_path):
    base, _ = http_root
    output = tmp_path / "raw"
    with pytest.raises(DownloadError, match=rf"{base}/missing\.zip: HTTP 404"):
        download(f"{base}/missing.zip", str(output))
    _assert_nothing_written(output)


def test_other_bad_sources(tmp_path):
    output = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"/no/such/path: no such file or folder"):
        download("/no/such/path", str(output))
    with pytest.raises(DownloadError, match=r"ftp://host/x: unsupported scheme"):
        download("ftp://host/x", str(output))
    with pytest.raises(DownloadError, match=r"synthetic://many: expected synthetic://N"):
        download("synthetic://many", str(output))
    _assert_nothing_written(output)
    (output / "keep.txt").parent.mkdir()
    (output / "keep.txt").write_text("someone else's")
    with pytest.raises(DownloadError, match="not an empty folder"):
        download("synthetic://8", str(output))
    assert (output / "keep.txt").read_text() == "someone else's"
