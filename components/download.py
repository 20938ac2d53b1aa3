"""download: fetch an AI Challenger release into a folder, or render a synthetic one.

Takes a source URI: `synthetic://N[?seed=S]` (N train images, max(N // 5, 8) validation images).
Writes the release as extracted (docs/ARTIFACTS.md, download -> raw), atomically: the work happens in
`<output>.partial-<pid>`, renamed to `output` at the end.
"""
import argparse
import logging
import os
import shutil
import urllib.parse
from pathlib import Path

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import CPU_IMAGE
from pose import steplog

log = logging.getLogger("download")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DownloadError(ValueError):
    """A source that cannot be fetched or is not what it claims to be; the message names it."""


def download(source: str, output: str, sha256: str | None = None) -> dict:
    """Fetches `source` into the folder `output`; returns counts (images, bytes, ...) for the metadata."""
    with steplog.step("download", source=source, output=output, sha256=sha256 or "-") as wrote:
        partial = Path(f"{output.rstrip('/')}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            summary = _fetch(source, partial, sha256)
            _publish(partial, Path(output))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        summary.update(count_release(output), source=source)
        wrote.update(summary)
    return summary


def _fetch(source: str, dest: Path, sha256: str | None) -> dict:
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "synthetic":
        return _render_synthetic(source, parsed, dest, sha256)
    raise DownloadError(f"{source}: unsupported source; expected synthetic://N[?seed=S]")


def _render_synthetic(source: str, parsed, dest: Path, sha256: str | None) -> dict:
    from pose.synthetic import render_release

    if sha256:
        raise DownloadError(f"{source}: --sha256 applies to a downloaded file, not to a synthetic release")
    query = urllib.parse.parse_qs(parsed.query)
    try:
        num_train = int(parsed.netloc)
        seed = int(query.get("seed", ["0"])[0])
    except ValueError:
        raise DownloadError(f"{source}: expected synthetic://N[?seed=S] with integers N and S") from None
    if num_train < 1:
        raise DownloadError(f"{source}: N must be at least 1")
    rendered = render_release(str(dest), num_train, max(num_train // 5, 8), seed)
    return {"synthetic_seed": seed, "people_train": rendered["train_people"], "people_valid": rendered["valid_people"]}


def _publish(partial: Path, output: Path) -> None:
    """Renames the finished folder into place; KFP creates the artifact folder beforehand, empty."""
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    elif output.exists():
        raise DownloadError(f"{output}: output already exists and is not an empty folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    os.rename(partial, output)


def count_release(folder: str) -> dict:
    """Images per AIC split (by the official image folder names) and the total size, for the metadata."""
    from pose.synthetic import AIC_LAYOUT

    counts = {"images": 0, "images_train": 0, "images_valid": 0, "bytes": 0, "files": 0}
    image_folders = {layout[2]: split for split, layout in AIC_LAYOUT.items()}
    for path in Path(folder).rglob("*"):
        if not path.is_file():
            continue
        counts["files"] += 1
        counts["bytes"] += path.stat().st_size
        if path.suffix.lower() in IMAGE_SUFFIXES:
            counts["images"] += 1
            split = image_folders.get(path.parent.name)
            if split:
                counts[f"images_{split}"] += 1
    return counts


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def download_op(source: str, sha256: str, raw: Output[Dataset]):
    """Fetches a source URI (https, gs, file, synthetic://N) into the raw AIC dataset; sha256 "" = no check."""
    from components.download import download

    summary = download(source, raw.path, sha256 or None)
    raw.metadata.update(summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="synthetic://N[?seed=S]")
    parser.add_argument("--output", required=True, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of a downloaded file")
    args = parser.parse_args(argv)
    steplog.setup()
    download(args.source, args.output, args.sha256)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
