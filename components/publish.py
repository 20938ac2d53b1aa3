"""publish: the chosen TFLite model, its metadata, the evaluation report and a model card -> a bucket prefix.

Takes    a tflite output folder (`<model>_<variant>.tflite` + `.json`), evaluate's report (report.html) and
         results (results.json, or the folder holding it), a destination (`gs://`, `s3://` or
         `minio://bucket/prefix`, or a local folder), and the variant to publish (`fp16`, ... or
         `best`: the highest PCK of the set, then the smallest).
Does     stages the files and a model card written from results.json (model, data, figures,
         agreement with the seed on real photographs, intended use, limitations), then uploads them;
         `published.json` (what was published, with sha256) goes last, so a reader that finds it knows
         every other file is complete.
Writes   at the destination: the .tflite, its .json, report.html, results.json, MODEL_CARD.md, the web demo
         (demo/, pose.web_demo.page_files: a static host of the destination serves a working demo), published.json.
         The KFP component's `published` artifact is the staged copy of exactly those files.
"""

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from components import cli
from pose import web_demo
from pose.evaluation import results as results_schema
from pose.files import integrity
from pose.files.atomic import atomic_file
from pose.files.uris import UriError, check_uri, local_path
from pose.models import contract, metadata

log = logging.getLogger("publish")

MANIFEST = "published.json"
LOCK_NAME = ".publish.lock"  # on object stores; local folders use pose.files.writer_lock
# An older lock object is a publish that died (no object store drops it for us).
PUBLISH_LOCK_SECONDS = 3600
MODEL_CARD = "MODEL_CARD.md"
# Written before a publish replaces anything, removed once it is done: the files it vouches for if it
# fails part way (published.json is removed first, so that nothing vouches for a mixed set).
PENDING = ".publish-pending.json"
# The largest file publish writes is the web demo's runtime (about 10 MB) or a model (a few MB).
MAX_PUBLISHED_BYTES = 256 * 1024 * 1024


class PublishError(ValueError):
    """Missing or inconsistent inputs, or a destination that cannot be written; the message names which."""


def publish(
    models_dir: str,
    report_path: str,
    results_path: str,
    destination: str,
    variant: str,
    staging_dir: str | None = None,
    move_aside: bool = False,
) -> dict:
    """Publishes one variant to `destination`; returns the manifest (also written as published.json).

    `staging_dir` keeps the staged files (the KFP component's output artifact); by default a temporary
    folder is used and removed. A destination file of a name publish writes that no previous manifest
    of ours vouches for is the user's: refused, or with `move_aside` renamed to
    `<name>.before-publish-<UTC time>` first (_foreign_files).
    """
    from pose.files import steplog

    with steplog.step(
        "publish",
        models=models_dir,
        report=report_path,
        results=results_path,
        destination=destination,
        variant=variant,
    ) as wrote:
        results = _read_results(Path(results_path))
        model_file = _choose_model(Path(models_dir), variant, results)
        integrity.verify_tflite(model_file)
        report_file = _file_in(Path(report_path), "report.html", "report")
        with _staging(staging_dir) as staged:
            for source in (model_file, metadata.path_for(model_file), report_file):
                shutil.copyfile(source, staged / source.name)
            if report_file.name != "report.html":
                (staged / report_file.name).rename(staged / "report.html")
            results_schema.write(staged / results_schema.FILE_NAME, results)
            (staged / MODEL_CARD).write_text(model_card(results, model_file.stem, destination))
            for source, name in web_demo.page_files():
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, staged / name)
            manifest = {
                "model": model_file.stem,
                "variant": model_file.stem.rsplit("_", 1)[-1],
                "destination": destination.rstrip("/"),
                "published_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "files": {
                    name: {"bytes": p.stat().st_size, "sha256": integrity.sha256(p)}
                    for name, p in _staged_files(staged)
                },
            }
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
            uris = _upload(staged, destination, manifest["files"], move_aside)
        manifest["uris"] = uris
        wrote.update(model=model_file.name, files=len(uris), destination=destination)
    return manifest


def _read_results(path: Path) -> results_schema.Results:
    try:
        return results_schema.read(path)
    except results_schema.ResultsError as error:
        raise PublishError(str(error)) from error


def _file_in(path: Path, name: str, what: str) -> Path:
    """`path` itself, or `path/name` when path is a folder (a KFP artifact folder)."""
    found = path / name if path.is_dir() else path
    if not found.is_file():
        raise PublishError(f"{what}: {found} does not exist")
    return found


def _choose_model(models_dir: Path, variant: str, results: dict) -> Path:
    available = {p.stem.rsplit("_", 1)[-1]: p for p in sorted(models_dir.glob("*.tflite"))}
    if not available:
        raise PublishError(
            f"{models_dir}: no .tflite models (expected the tflite step's output folder)"
        )
    if variant == "best":
        scored = [
            (-results["models"][p.stem]["pckh"], p.stat().st_size, p)
            for p in available.values()
            if p.stem in results["models"]
        ]
        if not scored:
            raise PublishError(
                f"variant 'best': none of {sorted(p.name for p in available.values())} has "
                f"figures in results.json (it has {sorted(results['models'])})"
            )
        model = min(scored)[2]
    elif variant in available:
        model = available[variant]
    else:
        raise PublishError(
            f"variant {variant!r}: {models_dir} has {', '.join(sorted(available))} (or use 'best')"
        )
    if model.stem not in results["models"]:
        raise PublishError(
            f"{model.name}: results.json has no figures for {model.stem!r} "
            f"(it has {', '.join(sorted(results['models']))}); evaluate and publish disagree"
        )
    if not metadata.path_for(model).is_file():
        raise PublishError(
            f"{metadata.path_for(model)}: missing; apps need it to read {model.name}"
        )
    try:
        metadata.read(metadata.path_for(model))
    except metadata.MetadataError as error:
        raise PublishError(f"{error}; apps need it to read {model.name}") from error
    return model


class _staging:
    def __init__(self, folder: str | None):
        self.folder, self.temporary = folder, folder is None

    def __enter__(self) -> Path:
        if self.temporary:
            self.folder = tempfile.mkdtemp(prefix="publish-")
        path = Path(self.folder)
        if path.exists() and any(path.iterdir()):
            raise PublishError(f"staging folder {path} is not empty")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __exit__(self, *exc):
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


def _upload(
    staged: Path, destination: str, staged_files: dict, move_aside: bool = False
) -> list[str]:
    """All or nothing for readers: the destination's published.json is removed first, every other staged file
    is uploaded, published.json goes last; then the files the previous manifest listed and this one does not
    are removed. A failure part way leaves no manifest, so none vouches for files that have changed.
    `staged_files`: the new manifest's files ({name: {bytes, sha256}}), which the pending list names.

    Publish touches only its own (issue 21): one publish per destination at a time (a lock, see
    _LocalDestination.lock and _GcsDestination.lock); a previous published.json that is not this
    destination's publish manifest stops it before anything changes; a stale file is removed only
    when its bytes are still those the previous manifest recorded (so publish wrote them), never
    through a link."""
    files = sorted(_staged_files(staged), key=lambda named: (named[0] == MANIFEST, named[0]))
    base = destination.rstrip("/")
    try:
        check_uri(destination, "destination")
    except UriError as error:
        raise PublishError(str(error)) from None
    if "\\" in base:
        # Stores and clients disagree on a backslash (some write it as a separator): the manifest
        # would name keys other than those written, and a later publish find them foreign.
        raise PublishError(
            f"destination {destination!r}: a backslash in the prefix; use / between its parts"
        )
    from pose.files import storage

    if storage.is_object_uri(destination):
        store = _ObjectDestination(base)
    elif (folder := local_path(destination)) is None:
        raise PublishError(
            f"destination {destination!r}: expected gs://, s3:// or minio://bucket/prefix, "
            f"or a local folder"
        )
    else:
        store = _LocalDestination(folder)
    with store.lock():
        previous = _previous_manifest(store, base)
        # What publish itself may find there: the files the previous manifest lists, and those of a
        # publish that failed part way (it removed the manifest first; its pending list says what
        # it was writing).
        vouched = _vouched(previous, _pending_files(store, base))
        try:
            foreign = _foreign_files(store, [name for name, _ in files], vouched)
        except (OSError, ValueError) as error:  # StorageError is an OSError
            raise PublishError(
                f"{destination}: could not read what is there before writing (nothing was "
                f"changed): {error}"
            ) from error
        if foreign and not move_aside:
            shown = ", ".join(f"{base}/{name}" for name in foreign[:5])
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise PublishError(
                f"{destination}: {shown}{more} would be replaced, and no {MANIFEST} of a publish "
                "here vouches for it (not written by publish, or changed since): nothing was changed; "
                "publish to another prefix, or pass --move-aside to rename such files to "
                "<name>.before-publish-<time> first"
            )
        pending = _vouched({name: entry["sha256"] for name, entry in staged_files.items()}, vouched)
        try:
            for name in foreign:
                aside = f"{name}.before-publish-{_now_stamp()}"
                store.move(name, aside)
                log.warning("%s/%s: not publish's: moved aside to %s/%s", base, name, base, aside)
            store.put_bytes(
                PENDING,
                json.dumps(
                    {"destination": base, "files": {n: sorted(v) for n, v in pending.items()}}
                ).encode(),
            )
            store.remove(MANIFEST)
            written = [store.put(name, p) for name, p in files]
            for stray in sorted(set(vouched) - {name for name, _ in files}):
                if any(store.holds(stray, sha256) for sha256 in vouched[stray]):
                    store.remove(stray)  # publish wrote it, under an earlier manifest
                else:
                    log.warning(
                        "%s/%s: listed by the previous %s but changed since, a link or "
                        "not a plain name: left in place",
                        base,
                        stray,
                        MANIFEST,
                    )
            store.remove(PENDING)
        except (OSError, ValueError) as error:
            raise PublishError(
                f"{destination}: upload failed, so no {MANIFEST} is there (the "
                "files may be "
                f"partly replaced; a publish to it again replaces them): {error}"
            ) from error
    return written


def _vouched(first: dict, second: dict) -> dict[str, set[str]]:
    """{name: the sha256s publish wrote under it} from {name: sha256 or a set of them} mappings."""
    merged: dict[str, set[str]] = {}
    for mapping in (first, second):
        for name, sums in mapping.items():
            merged.setdefault(name, set()).update({sums} if isinstance(sums, str) else sums)
    return merged


def _pending_files(store, base: str) -> dict[str, set[str]]:
    """The files a publish that failed part way was writing (its PENDING list), {} when there is
    none; a list publish cannot read vouches for nothing."""
    raw = store.read(PENDING)
    if raw is None:
        return {}
    try:
        pending = json.loads(raw)
        files = pending["files"]
        if pending.get("destination") != base or not isinstance(files, dict):
            raise ValueError("not this destination's")
        return {
            name: {s for s in sums if isinstance(s, str)}
            for name, sums in files.items()
            if isinstance(name, str) and isinstance(sums, list)
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("%s/%s: unreadable (%s): vouches for nothing", base, PENDING, error)
        return {}


def _foreign_files(store, names: list[str], vouched: dict[str, set[str]]) -> list[str]:
    """The names publish is about to write that the destination already holds with bytes no
    manifest of ours vouches for (not listed, or listed with other bytes): the user's files. The
    manifest itself is judged by _previous_manifest."""
    return [
        name
        for name in names
        if name != MANIFEST
        and store.exists(name)
        and not any(store.holds(name, sha256) for sha256 in vouched.get(name, ()))
    ]


def _now_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _previous_manifest(store, base: str) -> dict:
    """{name: sha256} of the files the destination's previous published.json lists ({} when there is
    none); PublishError, before anything is changed, when it is not this destination's publish
    manifest."""
    raw = store.read(MANIFEST)
    if raw is None:
        return {}
    where = f"{base}/{MANIFEST}"
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise PublishError(
            f"{where}: exists but is not a readable publish manifest ({error}); "
            "nothing was "
            "changed: move it away, or publish elsewhere"
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()
    ):
        raise PublishError(
            f"{where}: exists but is not a publish manifest (a JSON "
            f"{type(manifest).__name__} "
            "without a 'files' object of sha256s); nothing was changed: move it "
            "away, or publish "
            "elsewhere"
        )
    if manifest.get("destination") != base:
        raise PublishError(
            f"{where}: was written for {manifest.get('destination')!r}, not "
            f"{base!r} (copied "
            "here, or not by publish); nothing was changed: the files it lists may "
            "not be "
            "publish's to replace; move it away, or publish elsewhere"
        )
    return {name: entry["sha256"] for name, entry in files.items()}


def _plain_name(name: str) -> bool:
    """A name below the destination: relative, no `..`, `.` or empty segments."""
    return (
        bool(name)
        and "\\" not in name
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


class _ObjectDestination:
    """A gs://, s3:// or minio:// prefix, through pose.files.storage (one client for the whole
    publish)."""

    def __init__(self, base: str):
        from pose.files import storage

        self.base, self.storage = base, storage
        self.store = storage.store_for(base + "/")

    def read(self, name: str) -> bytes | None:
        return self.storage.read_bytes(f"{self.base}/{name}", self.store)

    def remove(self, name: str) -> None:
        self.storage.delete([f"{self.base}/{name}"], self.store)

    def exists(self, name: str) -> bool:
        return self.storage.stat(f"{self.base}/{name}", self.store) is not None

    def put_bytes(self, name: str, data: bytes) -> None:
        self.storage.write_bytes(f"{self.base}/{name}", data, self.store)

    def move(self, name: str, new_name: str) -> None:
        data = self.read(name)
        if data is not None:
            self.storage.write_bytes(f"{self.base}/{new_name}", data, self.store)
            self.remove(name)

    def holds(self, name: str, sha256: str) -> bool:
        """Whether the object `name` holds the bytes of that sha256 (object names have no links)."""
        if not _plain_name(name):
            return False
        data = self.read(name)
        if data is not None and web_demo.published_encoding(name) and data[:2] == b"\x1f\x8b":
            # put() stored it gzipped (Content-Encoding: gzip); the manifest hashes the file itself.
            # Some clients hand back the stored bytes, some decode them: compare the decoded ones,
            # no more of them than a published file can have.
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflate.decompress(data, MAX_PUBLISHED_BYTES + 1)
        return data is not None and hashlib.sha256(data).hexdigest() == sha256

    @contextlib.contextmanager
    def lock(self):
        """One publish per prefix: the lock object <prefix>/.publish.lock
        (pose.files.object_lock: created only when absent, so that the store alone decides which of
        two publishes holds it; one older than PUBLISH_LOCK_SECONDS is a publish that died and is
        taken over; the release deletes only this publish's version)."""
        from pose.files.object_lock import LockBusy, ObjectLock

        lock = ObjectLock(
            f"{self.base}/{LOCK_NAME}",
            "publish",
            self.base,
            "wait for it to end, or publish elsewhere",
            stale_seconds=PUBLISH_LOCK_SECONDS,
        )
        try:
            lock.take()
        except LockBusy as error:
            raise PublishError(str(error)) from None
        except self.storage.StorageError as error:  # no bucket, no permission: nothing was changed
            raise PublishError(
                f"{self.base}: upload failed before any file was written (the lock "
                f"object {LOCK_NAME} could not be written): {error}"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def put(self, name: str, path: Path) -> str:
        """The demo's runtime goes gzipped with Content-Encoding: gzip: the bucket sends it so to
        browsers (2.9 MB instead of 9.7 MB) and unpacks it for clients that do not accept gzip.
        Every file carries the content type its name implies, so that a static host of the bucket
        serves a working page."""
        uri = f"{self.base}/{name}"
        encoding = web_demo.published_encoding(name)
        if encoding is None:
            self.storage.upload_file(str(path), uri, self.store)
        else:
            self.storage.write_bytes(
                uri, web_demo.gzip_bytes(path.read_bytes()), self.store, content_encoding=encoding
            )
        return uri


class _LocalDestination:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        path = self.folder / name
        return path.exists() or path.is_symlink()

    def put_bytes(self, name: str, data: bytes) -> None:
        with atomic_file(self.folder / name) as tmp:
            Path(tmp).write_bytes(data)

    def move(self, name: str, new_name: str) -> None:
        os.replace(self.folder / name, self.folder / new_name)

    def holds(self, name: str, sha256: str) -> bool:
        """Whether folder/name is a plain file reached through no link and holds the bytes of that
        sha256."""
        path = self.folder / name
        if not _plain_name(name) or path.is_symlink() or not path.is_file():
            return False
        if os.path.realpath(path) != os.path.join(os.path.realpath(self.folder), *name.split("/")):
            return False  # a folder on the way is a link: the file is not the destination's
        return integrity.sha256(path) == sha256

    def lock(self):
        """One publish per folder at a time (pose.files.writer_lock: dies with its holder)."""
        from pose.files.writer_lock import OutputBusy, exclusive_writer

        @contextlib.contextmanager
        def held():
            try:
                with exclusive_writer(self.folder, "publish"):
                    yield
            except OutputBusy as error:
                raise PublishError(str(error)) from None

        return held()

    def put(self, name: str, path: Path) -> str:
        (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.folder / name) as tmp:
            shutil.copyfile(path, tmp)
        return str(self.folder / name)


def _staged_files(staged: Path) -> list[tuple[str, Path]]:
    """(path relative to the staging folder, file) of every staged file, sub-folders (demo/) included."""
    return [(p.relative_to(staged).as_posix(), p) for p in sorted(staged.rglob("*")) if p.is_file()]


def _contract(meta: dict) -> dict:
    return contract.from_metadata(
        meta, "the model's metadata", metadata.keypoint_set_of(meta, "the model's metadata")
    )


def model_card(results: dict, model_name: str, destination: str) -> str:
    """A short Markdown model card, from evaluate's results.json."""
    ours = results["models"][model_name]
    meta = ours.get("metadata", {})
    settings = results.get("settings", {})
    size = meta.get("input_size", "?")
    keypoint_set = metadata.keypoint_set_of(meta, "the model's metadata")
    pck_name = settings.get("pck_name", keypoint_set.pck_name)
    lines = [
        f"# Model card: {model_name}",
        "",
        "## Model",
        f"- Architecture: {_architecture(meta.get('model', model_name))}, TFLite variant `{meta.get('variant', '?')}`.",
        f"- File: `{ours.get('file', model_name + '.tflite')}` ({ours['size_bytes'] / 1e6:.2f} MB), "
        f"metadata in `{model_name}.json`; published to `{destination.rstrip('/')}`.",
        f"- Try it in a browser: [web demo]({web_demo.published_url(model_name + '.tflite')}) (camera or a picture; "
        f"runs on the device with LiteRT.js, from a static host of this folder).",
        f"- Input `{meta.get('input_name', 'image')}`: {size}x{size}x3, {meta.get('normalisation', 'RGB / 255')}. "
        f"Output `{meta.get('output_name', '?')}`: {meta.get('output_size', '?')}x{meta.get('output_size', '?')}"
        f"x{meta.get('num_keypoints', keypoint_set.num_keypoints)} heatmaps (stride {meta.get('output_stride', '?')}).",
        f"- Keypoints (the `{keypoint_set.name}` set, {keypoint_set.num_keypoints} joints), in channel order: "
        f"{', '.join(_contract(meta)['channel_order'])}. Swap partners, skeleton and OKS sigmas: `keypoint_set` "
        f"in `{model_name}.json`.",
        f"- Contract: `{_contract(meta)['name']}` (input pixels `{_contract(meta)['pixels']}`: "
        f"{contract.IN_WORDS[_contract(meta)['name']]}). The `contract` entry of `{model_name}.json` says the same.",
        "",
        "## Data",
        f"- Trained on person-centred crops of the `{keypoint_set.name}` keypoint set "
        f"({keypoint_set.num_keypoints} joints); evaluated on "
        f"{settings.get('num_people', '?')} people of the validation split "
        f"(heatmap refinement `{settings.get('refine', '?')}`, "
        f"flip test {'on' if settings.get('flip_test') else 'off'}).",
        "",
        "## Figures",
        "",
        f"| variant | {pck_name} | OKS AP | latency, 1 thread (ms) | latency vs the seed's | size (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, model in sorted(results["models"].items()):
        vs_seed = model.get("vs_seed") or {}
        speed = f"x{vs_seed['latency_1_thread']:.2f}" if vs_seed else "n/a"
        lines.append(
            f"| {'**' + name + '**' if name == model_name else name} | {100 * model['pckh']:.1f} | "
            f"{model['ap']:.3f} | {model['latency']['1']['median_ms']:.2f} | "
            f"{speed} | "
            f"{model['size_bytes'] / 1e6:.2f} |"
        )
    for name, anchor in sorted(results.get("anchors", {}).items()):
        pckh = f"{100 * anchor['pckh']:.1f}" if anchor.get("pckh") is not None else "not measured"
        ap = f"{anchor['ap']:.3f}" if anchor.get("ap") is not None else "not measured"
        # the ratios are against the seed's models only; BlazePose is beside them, of no family of ours
        ratio = "x1.00" if results_schema.is_seed(anchor) else "n/a"
        lines.append(
            f"| {results_schema.anchor_label(name, anchor)} | {pckh} | {ap} | "
            f"{anchor['latency']['1']['median_ms']:.2f} | {ratio} | {anchor['size_bytes'] / 1e6:.2f} |"
        )
    per_joint = ours.get("pckh_per_joint", {})
    if per_joint:
        lines += [
            "",
            f"{pck_name} per joint ({model_name}): "
            + ", ".join(
                f"{joint} {100 * value:.1f}" if value is not None else f"{joint} n/a"
                for joint, value in per_joint.items()
            ),
        ]
    lines += _photographs_section(results.get("photos"), model_name)
    lines += [
        "",
        "Latency is measured with LiteRT (XNNPACK) on the CPU of the machine that ran the evaluation, not on "
        "a phone; the ratio against the seed's released model, timed in the same run, is the portable figure.",
        "",
        "## Intended use",
        "- Single-person 2D pose estimation on a phone or other edge device: one person roughly centred in "
        "the input crop, e.g. fitness and gesture apps built for the seed's (PoseEstimationForMobile) models, "
        "which load this file unchanged when its contract is `seed` (same tensor names, layout, pixels and channel "
        "order).",
        "- Decode each heatmap's peak (argmax, optionally refined); the .json beside the model gives the "
        "mapping from heatmap to input pixels and the flip pairs.",
        "",
        "## Limitations",
        "- One person per crop: several people, or a person far from the centre, need a detector first.",
        "- 14 AI Challenger joints only (no face, hands or feet), 2D only.",
        "- Accuracy holds for the data it was evaluated on. A model trained from scratch on the synthetic "
        "demo set (`synthetic://`) only shows that the pipeline works and is not meant for real images; "
        "the real-photograph agreement above says how much of the seed's skill a fine-tuned one kept.",
        "- Quantised variants (int8) trade accuracy for size and speed: compare their rows above before choosing.",
        "- Not evaluated for fairness across people, clothing, lighting or camera types; do not use it for "
        "decisions about people (identification, surveillance, medical assessment).",
        "",
    ]
    return "\n".join(lines)


def _photographs_section(section: dict | None, model_name: str) -> list[str]:
    """The card's "Real photographs" lines, from results.json's "photos" (pose.evaluation.photos): how far
    each variant agrees with the seed's released CPM on real pictures, which the synthetic validation
    split cannot show."""
    lines = ["", "## Real photographs", ""]
    if not section or not section.get("pictures"):
        return lines + [
            "Not measured: the evaluation had no photographs or no seed CPM to compare with, so nothing "
            "here says how the model does on real pictures."
        ]
    pictures = section["pictures"]
    threshold = section.get("threshold", "?")
    lines += [
        f"Agreement with the seed's released CPM (`{section.get('reference', '?')}`, trained on real AI "
        f"Challenger photographs) on {len(pictures)} public-domain or CC0 photographs "
        f"({', '.join(p['file'] for p in pictures)}): PCK@{threshold} of the person's size, taking the "
        'seed\'s keypoints as reference. "found joints" counts only the joints the seed finds (peak '
        f"score >= {section.get('found_score', '?')}); all 14 also counts joints outside the picture, "
        "where the seed's positions are guesses. There is no ground truth: this shows whether the model "
        "still finds people in real pictures, not its accuracy on them.",
        "",
        "| variant | agreement, 14 joints | agreement, found joints |",
        "| --- | --- | --- |",
    ]
    found = section.get("agreement_found", {})
    for name, value in sorted(section.get("agreement", {}).items()):
        shown = f"**{name}**" if name == model_name else name
        found_value = f"{found[name]:.3f}" if found.get(name) is not None else "n/a"
        value = "n/a (no photograph judged)" if value is None else f"{value:.3f}"
        lines.append(f"| {shown} | {value} | {found_value} |")
    per_picture = [
        f"{p['file']} {p['models'][model_name]['agreement']:.2f} / "
        f"{p['models'][model_name].get('agreement_found', float('nan')):.2f}"
        for p in pictures
        if model_name in p.get("models", {})
    ]
    if per_picture:
        lines += [
            "",
            f"Per photograph ({model_name}, 14 joints / found): " + ", ".join(per_picture),
        ]
    return lines


def _architecture(model: str) -> str:
    from pose.models import networks

    try:
        return f"{networks.identity(model).title} (`{model}`)"
    except networks.UnknownModel:
        return f"`{model}`"


def main(argv=None) -> int:
    arguments = cli.parser("publish", __doc__)
    arguments.add_argument(
        "--models", required=True, help="tflite output folder (<model>_<variant>.tflite + .json)"
    )
    arguments.add_argument(
        "--report", required=True, help="evaluate's report.html (or the folder holding it)"
    )
    arguments.add_argument(
        "--results", required=True, help="evaluate's results.json (or the folder holding it)"
    )
    arguments.add_argument(
        "--destination",
        required=True,
        help="gs://, s3:// or minio://bucket/prefix, or a local folder",
    )
    arguments.add_argument(
        "--variant", default="fp16", help="fp32, fp16, int8-dynamic, int8, or best (default fp16)"
    )
    arguments.add_argument(
        "--move-aside",
        action="store_true",
        help="rename destination files publish would replace but did not write to "
        "<name>.before-publish-<time> (default: refuse)",
    )
    return cli.run(
        "publish",
        arguments,
        lambda args: print(
            json.dumps(
                publish(
                    args.models,
                    args.report,
                    args.results,
                    args.destination,
                    args.variant,
                    move_aside=args.move_aside,
                )["uris"],
                indent=2,
            )
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
