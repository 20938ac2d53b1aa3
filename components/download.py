"""download: fetch a keypoint data set (AIC's release, or COCO-format) into a folder, or render a synthetic one.

Takes a source URI:
  https://... / http://...   a file, streamed
  gs://bucket/path           an object, or every object under a prefix (google-cloud-storage;
                             STORAGE_EMULATOR_HOST selects an emulator)
  s3://bucket/path           the same on any S3 server (AWS, SeaweedFS, MinIO): AWS_ENDPOINT_URL,
  minio://bucket/path        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION as for every S3 tool
  /local/path, file:///path  a file or a folder
  synthetic://N[?seed=S][&layout=aic|coco]
                             a rendered data set: N train, max(N // 5, 8) validation images, in
                             AIC's release layout (aic) or COCO 2017's with its 17 joints (coco)
A file that is a .zip, .tar, .tar.gz/.tgz archive is extracted (so are archives at the top of a folder
or prefix), after its SHA-256 is checked when one is given. Members that would land outside the output
(absolute paths, `..`, links pointing out) stop the step.

Writes the release as extracted (docs/ARTIFACTS.md, download -> raw), all or nothing: the work happens
in a temporary sibling folder (pose.files.atomic), renamed to `output` at the end and removed on failure.
An existing `output` must be an empty folder (as KFP creates it).
"""

import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.parse
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from components import cli
from pose.files import outputs, steplog, storage, uris
from pose.files.atomic import atomic_directory

log = logging.getLogger("download")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
STAGING_PREFIX = ".download-"  # a fetched file waiting for its checksum and extraction
# What an archive may expand to (issue 21: a 3 MB gzip or zip expanding to 3 GiB filled the disk):
# at most MAX_EXPANSION_RATIO times its own size, at least MIN_EXTRACTED_BYTES (tiny archives of
# headers and zero padding), never more than MAX_EXTRACTED_BYTES (the AIC release is about 25 GB);
# the environment variables POSE_MAX_EXPANSION_RATIO and POSE_MAX_EXTRACTED_BYTES change them. The
# AIC zips hold JPEGs and expand about 1.05x. A zip is refused from its declared sizes before
# anything is written (zipfile writes no more than a member declares); a tar is counted member by
# member as it is read (a gzip's own size field can lie) and refused before the member that would
# pass the bound.
MAX_EXPANSION_RATIO = 100
MIN_EXTRACTED_BYTES = 64 << 20
MAX_EXTRACTED_BYTES = 64 << 30
# synthetic://N renders N train and max(N // 5, 8) valid images of ~40 KB: at most 250,000 (more
# than the AIC release's 210,000 train images), seeds as numpy takes them.
MAX_SYNTHETIC_IMAGES = 250_000
MAX_SYNTHETIC_SEED = 2**32 - 1
# aic: AIC's official release (the default); coco: COCO's 17 joints in the COCO 2017 layout.
SYNTHETIC_LAYOUTS = ("aic", "coco")


class DownloadError(ValueError):
    """A source that cannot be fetched or is not what it claims to be; the message names it."""


def download(
    source: str,
    output: str,
    sha256: str | None = None,
    allow_no_images: bool = False,
    expected_version: str = "",
) -> dict:
    """Fetches `source` into the folder `output`; returns counts (images, bytes, ...) for the metadata.
    A source that yields no image is an error unless `allow_no_images`. `expected_version`: the
    source-version task's storage.source_version of an object source (the run's cache key), which
    the object must still have: bytes of another version are never recorded under it."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise DownloadError(f"{source}: --sha256 must be 64 hex digits, got {sha256!r}")
    if Path(output).exists() and not (Path(output).is_dir() and not any(Path(output).iterdir())):
        raise DownloadError(f"{output}: output already exists and is not an empty folder")
    local_source = uris.local_path(source)
    if local_source is not None:
        outputs.check_output("download", output, [local_source])
    with steplog.step("download", source=source, output=output, sha256=sha256 or "-") as wrote:
        with atomic_directory(output) as partial:
            summary = _fetch(
                source, partial, sha256.strip().lower() if sha256 else None, expected_version
            )
            counts = count_release(str(partial))
            if not counts["images"] and not allow_no_images:
                raise DownloadError(
                    f"{source}: yielded no images ({counts['files']} files, {counts['bytes']} bytes; "
                    f"expected {', '.join(IMAGE_SUFFIXES)} files); pass --allow-no-images to keep it"
                )
        summary.update(counts, source=source)
        wrote.update(summary)
    return summary


def _fetch(source: str, dest: Path, sha256: str | None, expected_version: str = "") -> dict:
    parsed = urllib.parse.urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme == "synthetic":
        return _render_synthetic(source, parsed, dest, sha256)
    try:
        if scheme in ("http", "https"):
            response = storage.open_http(source)
            name = _file_name(parsed.path)
            with response:
                digest = _stream_to(
                    dest / (STAGING_PREFIX + name), response.read, response.length, source
                )
            _unpack(dest / (STAGING_PREFIX + name), name, dest, source, digest, sha256)
        elif storage.is_object_uri(source):
            try:
                uris.check_uri(source, "source")  # gs://b/a/../x: a key, not the folder above
            except uris.UriError as error:
                raise DownloadError(str(error)) from None
            info = storage.stat(source)
            if info is None:
                _refuse_checksum_for_folder(source, sha256)
                storage.download_prefix(source, str(dest))
                _unpack_archives_in(dest, source)
            else:
                seen = storage.object_version(source, info)
                if expected_version and seen != expected_version:
                    raise DownloadError(
                        f"{source}: replaced since this run's source-version task read it "
                        f"({expected_version} then, {seen} now): the run's cache key names the "
                        "old bytes; run again"
                    )
                name = _file_name(info.key)
                staged = dest / (STAGING_PREFIX + name)
                with open(staged, "wb") as out:
                    writer = _DigestingWriter(out, info.size, source)
                    storage.read_into(source, writer, version=info.version)  # stat's bytes only
                    writer.close()
                _unpack(staged, name, dest, source, writer.hexdigest(), sha256)
        elif uris.is_local(source):
            _fetch_local(source, uris.local_path(source), dest, sha256)
        else:
            raise DownloadError(
                f"{source}: unsupported scheme {scheme!r}; expected https, http, gs, s3, minio, "
                f"file or synthetic"
            )
    except storage.StorageError as error:
        raise DownloadError(str(error) if source in str(error) else f"{source}: {error}") from None
    except (
        TimeoutError,
        ConnectionError,
    ) as error:  # a read that stalled or broke off mid-transfer
        raise DownloadError(
            f"{source}: the transfer stalled or broke off ({type(error).__name__}: {error}; "
            f"each read waits at most {storage.network_timeout():g} s, POSE_NETWORK_TIMEOUT)"
        ) from None
    return {}


def _render_synthetic(source: str, parsed, dest: Path, sha256: str | None) -> dict:
    from pose.data.synthetic import render_release

    if sha256:
        raise DownloadError(
            f"{source}: --sha256 applies to a downloaded file, not to a synthetic release"
        )
    num_train, seed, layout = synthetic_parameters(source)
    if layout == "coco":
        from pose.data import keypoints
        from pose.data.synthetic import render_coco

        rendered = render_coco(
            str(dest), num_train, max(num_train // 5, 8), seed, keypoints.preset("coco")
        )
    else:
        rendered = render_release(str(dest), num_train, max(num_train // 5, 8), seed)
    return {
        "synthetic_seed": seed,
        "synthetic_layout": layout,
        "people_train": rendered["train_people"],
        "people_valid": rendered["valid_people"],
    }


def synthetic_parameters(source: str) -> tuple[int, int, str]:
    """(N, seed, layout) of `synthetic://N[?seed=S][&layout=aic|coco]`; DownloadError naming what is
    wrong, before anything is rendered (also called by the pipeline's parameter check)."""
    parsed = urllib.parse.urlparse(source)
    usage = (
        f"{source}: expected synthetic://N[?seed=S][&layout={'|'.join(SYNTHETIC_LAYOUTS)}] "
        f"with 1 <= N <= {MAX_SYNTHETIC_IMAGES:,} "
        "and "
        f"0 <= S <= {MAX_SYNTHETIC_SEED:,}"
    )
    try:
        query = urllib.parse.parse_qs(
            parsed.query, keep_blank_values=True, strict_parsing=bool(parsed.query)
        )
    except ValueError:
        raise DownloadError(f"{usage}; the query {parsed.query!r} is not key=value") from None
    if set(query) - {"seed", "layout"} or any(len(values) > 1 for values in query.values()):
        raise DownloadError(f"{usage}; got the query {parsed.query!r}")
    try:
        num_train = int(parsed.netloc)
        seed = int(query.get("seed", ["0"])[0])
    except ValueError:
        raise DownloadError(f"{usage}; N and S must be whole numbers") from None
    if not 1 <= num_train <= MAX_SYNTHETIC_IMAGES:
        raise DownloadError(f"{usage}; N is {num_train:,}")
    if not 0 <= seed <= MAX_SYNTHETIC_SEED:
        raise DownloadError(f"{usage}; S is {seed}")
    if parsed.path not in ("", "/") or parsed.fragment:
        raise DownloadError(f"{usage}; got a path or fragment after N")
    layout = query.get("layout", [SYNTHETIC_LAYOUTS[0]])[0]
    if layout not in SYNTHETIC_LAYOUTS:
        raise DownloadError(f"{usage}; layout is {layout!r}")
    return num_train, seed, layout


def _fetch_local(source: str, path: Path, dest: Path, sha256: str | None) -> None:
    if path.is_dir():
        _refuse_checksum_for_folder(source, sha256)
        # Hard links: a local release can be tens of GB, and artifacts are never modified in place.
        shutil.copytree(path, dest, dirs_exist_ok=True, copy_function=_link_or_copy)
        _unpack_archives_in(dest, source)
    elif path.is_file():
        digest = None
        if sha256:
            with open(path, "rb") as handle:
                digest = _stream_to(None, handle.read, path.stat().st_size, source)
        _unpack(path, path.name, dest, source, digest, sha256, keep_source=True)
    else:
        raise DownloadError(f"{source}: no such file or folder")


def _refuse_checksum_for_folder(source: str, sha256: str | None) -> None:
    if sha256:
        raise DownloadError(f"{source}: is a folder or prefix; --sha256 applies to a single file")


def _file_name(url_path: str) -> str:
    return Path(urllib.parse.unquote(url_path)).name or "download"


# ---------------------------------------------------------------------------------------------
# Streaming with a progress bar and a running SHA-256


class _DigestingWriter:
    """A file-like writer that hashes and counts what passes through it."""

    def __init__(self, out, total: int | None, label: str):
        self.out, self.digest = out, hashlib.sha256()
        self.bar = tqdm(
            total=total, unit="B", unit_scale=True, desc=label, mininterval=1, leave=False
        )

    def write(self, data) -> int:
        if self.out is not None:
            self.out.write(data)
        self.digest.update(data)
        self.bar.update(len(data))
        return len(data)

    def close(self) -> None:
        self.bar.close()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _stream_to(target: Path | None, read, total: int | None, label: str) -> str:
    """Copies read() chunks into target (or only hashes them when target is None); returns the SHA-256."""
    with open(target, "wb") if target else contextlib.nullcontext() as out:
        writer = _DigestingWriter(out, total, label)
        while chunk := read(storage.CHUNK):
            writer.write(chunk)
        writer.close()
    if total is not None and writer.bar.n != total:
        raise DownloadError(f"{label}: transfer ended after {writer.bar.n} of {total} bytes")
    log.info("read %d bytes from %s", writer.bar.n, label)
    return writer.hexdigest()


# ---------------------------------------------------------------------------------------------
# Checksums and archives


def _unpack(
    path: Path,
    name: str,
    dest: Path,
    source: str,
    digest: str | None,
    sha256: str | None,
    keep_source: bool = False,
) -> None:
    """Verifies the file's digest, then extracts it into dest if it is an archive, else places it there."""
    if sha256 and digest != sha256:
        raise DownloadError(f"{source}: sha256 mismatch: expected {sha256}, got {digest}")
    if path.stat().st_size == 0:
        raise DownloadError(f"{source}: is an empty file (0 bytes)")
    kind = _archive_kind(path, name)
    if kind:
        _extract(path, kind, dest, f"{source} ({name})" if name not in source else source)
        if not keep_source:
            path.unlink()
    elif keep_source:
        _link_or_copy(path, dest / name)
    else:
        os.replace(path, dest / name)


def _unpack_archives_in(folder: Path, source: str) -> None:
    """A release folder or prefix may hold the official zips: extract those found at its top."""
    for path in sorted(folder.iterdir()):
        kind = path.is_file() and _archive_kind(path, path.name, sniff=False)
        if kind:
            _extract(path, kind, folder, f"{source} ({path.name})")
            path.unlink()


def _archive_kind(path: Path, name: str, sniff: bool = True) -> str | None:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if sniff and zipfile.is_zipfile(path):
        return "zip"
    if sniff and lower.endswith((".gz", ".bz2", ".xz")) and tarfile.is_tarfile(path):
        return "tar"
    return None


def expansion_limit(archive_bytes: int) -> int:
    """How many bytes an archive of `archive_bytes` may expand to (see MAX_EXPANSION_RATIO)."""
    ratio = _number_from_environment("POSE_MAX_EXPANSION_RATIO", MAX_EXPANSION_RATIO)
    cap = _number_from_environment("POSE_MAX_EXTRACTED_BYTES", MAX_EXTRACTED_BYTES)
    return int(min(max(ratio * archive_bytes, MIN_EXTRACTED_BYTES), cap))


def _number_from_environment(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise DownloadError(f"{name}={text!r} is not a number") from None
    if not value > 0:
        raise DownloadError(f"{name}={text!r} must be positive")
    return value


def _refuse_expansion(label: str, archive: Path, total: int, limit: int, name: str) -> None:
    raise DownloadError(
        f"{label}: refusing to extract: its members expand to more than {limit:,} bytes (at "
        f"member {name!r}, "
        f"{total:,} bytes so far) from a {archive.stat().st_size:,}-byte archive (a decompression "
        "bomb?); the "
        f"bound is POSE_MAX_EXPANSION_RATIO (default {MAX_EXPANSION_RATIO}) x its size, at least "
        f"{MIN_EXTRACTED_BYTES >> 20} MiB, at most POSE_MAX_EXTRACTED_BYTES (default "
        f"{MAX_EXTRACTED_BYTES >> 30} GiB)"
    )


def _extract(archive: Path, kind: str, dest: Path, label: str) -> None:
    count, total, limit = 0, 0, expansion_limit(archive.stat().st_size)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                members = bundle.infolist()
                for member in members:  # all checked before any is written
                    _check_zip_member(bundle, member, dest, label)
                    total += member.file_size
                    if total > limit:
                        _refuse_expansion(label, archive, total, limit, member.filename)
                for member in tqdm(
                    members, desc=f"extract {archive.name}", unit="file", mininterval=1, leave=False
                ):
                    bundle.extract(member, dest)
                    count += 1
        else:
            with tarfile.open(archive, "r:*") as bundle:
                for member in tqdm(
                    bundle, desc=f"extract {archive.name}", unit="file", mininterval=1, leave=False
                ):
                    _check_member_name(member.name, dest, label)
                    total += member.size
                    if total > limit:
                        _refuse_expansion(label, archive, total, limit, member.name)
                    # The "data" filter also refuses links out of dest and device files.
                    bundle.extract(member, dest, filter="data")
                    count += 1
                _check_tar_end(bundle, label, count)
    except tarfile.FilterError as error:
        raise DownloadError(
            f"{label}: refusing member {error.tarinfo.name!r}: it escapes the output folder "
            f"({error})"
        ) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DownloadError(
            f"{label}: not a readable {kind} archive, truncated or corrupt ({error})"
        ) from None
    log.info("extracted %d members from %s", count, label)


def _check_tar_end(bundle: tarfile.TarFile, label: str, count: int) -> None:
    """A tar ends with zero blocks; tarfile accepts an archive cut at a member boundary as a shorter one."""
    bundle.fileobj.seek(bundle.offset)
    end = bundle.fileobj.read(tarfile.BLOCKSIZE)
    if len(end) < tarfile.BLOCKSIZE or any(end):
        raise DownloadError(
            f"{label}: the tar archive ends early, after {count} members without its end-of-archive "
            "blocks (truncated download?)"
        )


def _check_member_name(name: str, dest: Path, label: str) -> None:
    """Absolute names are refused even though extractors would strip the slash: the archive is not what it claims."""
    if (
        name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z]:", name)
        or not uris.is_inside(dest / name, dest)
    ):
        raise DownloadError(f"{label}: refusing member {name!r}: it escapes the output folder")


def _check_zip_member(
    bundle: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path, label: str
) -> None:
    name = member.filename
    _check_member_name(name, dest, label)
    if stat.S_ISLNK(member.external_attr >> 16):
        target = bundle.read(member).decode(errors="replace")
        if os.path.isabs(target) or not uris.is_inside((dest / name).parent / target, dest):
            raise DownloadError(
                f"{label}: refusing member {name!r}: a link to {target!r} outside the output folder"
            )


def _link_or_copy(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------
# Output


def count_release(folder: str) -> dict:
    """Images per split (by the image folder names of AIC's release and of the COCO-format layouts,
    pose.data.sources.layouts) and the total size, for the metadata."""
    from pose.data.sources.layouts import image_folder_split

    counts = {"images": 0, "images_train": 0, "images_valid": 0, "bytes": 0, "files": 0}
    for path in Path(folder).rglob("*"):
        if not path.is_file():
            continue
        counts["files"] += 1
        counts["bytes"] += path.stat().st_size
        if path.suffix.lower() in IMAGE_SUFFIXES:
            counts["images"] += 1
            split = image_folder_split(path.parent)
            if split:
                counts[f"images_{split}"] += 1
    return counts


def main(argv=None) -> int:
    arguments = cli.parser("download", __doc__)
    arguments.add_argument(
        "--source",
        required=True,
        help="https://, http://, gs://, s3://, minio://, a local path, file:// or "
        "synthetic://N[?seed=S]",
    )
    arguments.add_argument(
        "--output", required=True, help="folder to create (must not exist, or be empty)"
    )
    arguments.add_argument(
        "--sha256", default=None, help="expected SHA-256 (hex) of a single-file source"
    )
    arguments.add_argument(
        "--allow-no-images", action="store_true", help="keep a source that holds no image"
    )
    return cli.run(
        "download",
        arguments,
        lambda args: download(
            args.source, args.output, args.sha256, allow_no_images=args.allow_no_images
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
