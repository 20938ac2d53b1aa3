"""publish: the chosen TFLite model, its metadata, the evaluation report and a model card -> a bucket prefix.

Takes    a tflite output folder (`<model>_<variant>.tflite` + `.json`), evaluate's report (report.html) and
         results (results.json, or the folder holding it), a destination (`gs://`, `s3://` or
         `minio://bucket/prefix`, or a local folder), and the variant to publish (`fp16`, ... or
         `best`: the highest PCKh@0.5, then the smallest).
Does     stages the files and a model card written from results.json (model, data, figures, intended use,
         limitations), then uploads them; `published.json` (what was published, with sha256) goes last, so a
         reader that finds it knows every other file is complete.
Writes   at the destination: the .tflite, its .json, report.html, results.json, MODEL_CARD.md, the web demo
         (demo/, pose.web_demo.page_files: a static host of the destination serves a working demo), published.json.
         The KFP component's `published` artifact is the staged copy of exactly those files.
"""
import datetime
import json
import logging
import shutil
import tempfile
from pathlib import Path


from components import cli
from pose import web_demo
from pose.data import keypoints
from pose.models import contract, metadata
from pose.evaluation import results as results_schema
from pose.files import integrity
from pose.files.uris import local_path
from pose.files.atomic import atomic_file

log = logging.getLogger("publish")

MANIFEST = "published.json"
MODEL_CARD = "MODEL_CARD.md"


class PublishError(ValueError):
    """Missing or inconsistent inputs, or a destination that cannot be written; the message names which."""


def publish(models_dir: str, report_path: str, results_path: str, destination: str, variant: str,
            staging_dir: str | None = None) -> dict:
    """Publishes one variant to `destination`; returns the manifest (also written as published.json).

    `staging_dir` keeps the staged files (the KFP component's output artifact); by default a temporary
    folder is used and removed.
    """
    from pose.files import steplog

    with steplog.step("publish", models=models_dir, report=report_path, results=results_path,
                      destination=destination, variant=variant) as wrote:
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
                "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "files": {name: {"bytes": p.stat().st_size, "sha256": integrity.sha256(p)}
                          for name, p in _staged_files(staged)},
            }
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
            uris = _upload(staged, destination)
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
        raise PublishError(f"{models_dir}: no .tflite models (expected the tflite step's output folder)")
    if variant == "best":
        scored = [(-results["models"][p.stem]["pckh"], p.stat().st_size, p)
                  for p in available.values() if p.stem in results["models"]]
        if not scored:
            raise PublishError(f"variant 'best': none of {sorted(p.name for p in available.values())} has "
                               f"figures in results.json (it has {sorted(results['models'])})")
        model = min(scored)[2]
    elif variant in available:
        model = available[variant]
    else:
        raise PublishError(f"variant {variant!r}: {models_dir} has {', '.join(sorted(available))} (or use 'best')")
    if model.stem not in results["models"]:
        raise PublishError(f"{model.name}: results.json has no figures for {model.stem!r} "
                           f"(it has {', '.join(sorted(results['models']))}); evaluate and publish disagree")
    if not metadata.path_for(model).is_file():
        raise PublishError(f"{metadata.path_for(model)}: missing; apps need it to read {model.name}")
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


def _upload(staged: Path, destination: str) -> list[str]:
    """All or nothing for readers: the destination's published.json is removed first, every other staged file
    is uploaded, published.json goes last; then the files the previous manifest listed and this one does not
    are removed. A failure part way leaves no manifest, so none vouches for files that have changed."""
    files = sorted(_staged_files(staged), key=lambda named: (named[0] == MANIFEST, named[0]))
    base = destination.rstrip("/")
    from pose.files import storage

    if storage.is_object_uri(destination):
        store = _ObjectDestination(base)
    elif (folder := local_path(destination)) is None:
        raise PublishError(f"destination {destination!r}: expected gs://, s3:// or minio://bucket/prefix, "
                           f"or a local folder")
    else:
        store = _LocalDestination(folder)
    try:
        previous = store.read(MANIFEST)
        store.remove(MANIFEST)
        written = [store.put(name, p) for name, p in files]
        old_files = set(json.loads(previous).get("files", {})) if previous else set()
        for stray in sorted(old_files - {name for name, _ in files}):
            if stray.startswith("/") or "\\" in stray or ".." in stray.split("/"):
                continue  # a manifest names files below the destination; anything else was not written by publish
            store.remove(stray)  # publish wrote it, under the previous manifest
    except (OSError, ValueError) as error:
        raise PublishError(f"{destination}: upload failed, so no {MANIFEST} is there (the files may be partly "
                           f"replaced): {error}") from error
    return written


class _ObjectDestination:
    """A gs://, s3:// or minio:// prefix, through pose.files.storage (one client for the whole publish)."""

    def __init__(self, base: str):
        from pose.files import storage

        self.base, self.storage = base, storage
        self.store = storage.store_for(base + "/")

    def read(self, name: str) -> bytes | None:
        return self.storage.read_bytes(f"{self.base}/{name}", self.store)

    def remove(self, name: str) -> None:
        self.storage.delete([f"{self.base}/{name}"], self.store)

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
            self.storage.write_bytes(uri, web_demo.gzip_bytes(path.read_bytes()), self.store,
                                     content_encoding=encoding)
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

    def put(self, name: str, path: Path) -> str:
        (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.folder / name) as tmp:
            shutil.copyfile(path, tmp)
        return str(self.folder / name)


def _staged_files(staged: Path) -> list[tuple[str, Path]]:
    """(path relative to the staging folder, file) of every staged file, sub-folders (demo/) included."""
    return [(p.relative_to(staged).as_posix(), p) for p in sorted(staged.rglob("*")) if p.is_file()]


def _contract(meta: dict) -> dict:
    return contract.from_metadata(meta, "the model's metadata")


def model_card(results: dict, model_name: str, destination: str) -> str:
    """A short Markdown model card, from evaluate's results.json."""
    ours = results["models"][model_name]
    meta = ours.get("metadata", {})
    settings = results.get("settings", {})
    size = meta.get("input_size", "?")
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
        f"x{meta.get('num_keypoints', keypoints.NUM_KEYPOINTS)} heatmaps (stride {meta.get('output_stride', '?')}).",
        f"- Keypoints, in channel order: {', '.join(_contract(meta)['channel_order'])}.",
        f"- Contract: `{_contract(meta)['name']}` (input pixels `{_contract(meta)['pixels']}`: "
        f"{contract.IN_WORDS[_contract(meta)['name']]}). The `contract` entry of `{model_name}.json` says the same.",
        "",
        "## Data",
        f"- Trained on person-centred crops in the AI Challenger keypoint format (14 joints); evaluated on "
        f"{settings.get('num_people', '?')} people of the validation split "
        f"(heatmap refinement `{settings.get('refine', '?')}`, flip test {'on' if settings.get('flip_test') else 'off'}).",
        "",
        "## Figures",
        "",
        "| variant | PCKh@0.5 | OKS AP | latency, 1 thread (ms) | latency vs the seed's | size (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, model in sorted(results["models"].items()):
        vs_seed = model.get("vs_seed") or {}
        lines.append(f"| {'**' + name + '**' if name == model_name else name} | {100 * model['pckh']:.1f} | "
                     f"{model['ap']:.3f} | {model['latency']['1']['median_ms']:.2f} | "
                     f"{'x%.2f' % vs_seed['latency_1_thread'] if vs_seed else 'n/a'} | "
                     f"{model['size_bytes'] / 1e6:.2f} |")
    for name, anchor in sorted(results.get("anchors", {}).items()):
        pckh = f"{100 * anchor['pckh']:.1f}" if anchor.get("pckh") is not None else "not measured"
        ap = f"{anchor['ap']:.3f}" if anchor.get("ap") is not None else "not measured"
        lines.append(f"| seed: {name} | {pckh} | {ap} | {anchor['latency']['1']['median_ms']:.2f} | "
                     f"x1.00 | {anchor['size_bytes'] / 1e6:.2f} |")
    per_joint = ours.get("pckh_per_joint", {})
    if per_joint:
        lines += ["", f"PCKh@0.5 per joint ({model_name}): " + ", ".join(
            f"{joint} {100 * value:.1f}" if value is not None else f"{joint} n/a" for joint, value in per_joint.items())]
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
        "- Accuracy holds for the data it was evaluated on; a model trained on the synthetic demo set "
        "(`synthetic://`) only shows that the pipeline works and is not meant for real images.",
        "- Quantised variants (int8) trade accuracy for size and speed: compare their rows above before choosing.",
        "- Not evaluated for fairness across people, clothing, lighting or camera types; do not use it for "
        "decisions about people (identification, surveillance, medical assessment).",
        "",
    ]
    return "\n".join(lines)


def _architecture(model: str) -> str:
    from pose.models import networks

    try:
        return f"{networks.identity(model).title} (`{model}`)"
    except networks.UnknownModel:
        return f"`{model}`"


def main(argv=None) -> int:
    arguments = cli.parser("publish", __doc__)
    arguments.add_argument("--models", required=True, help="tflite output folder (<model>_<variant>.tflite + .json)")
    arguments.add_argument("--report", required=True, help="evaluate's report.html (or the folder holding it)")
    arguments.add_argument("--results", required=True, help="evaluate's results.json (or the folder holding it)")
    arguments.add_argument("--destination", required=True, help="gs://, s3:// or minio://bucket/prefix, or a local folder")
    arguments.add_argument("--variant", default="fp16", help="fp32, fp16, int8-dynamic, int8, or best (default fp16)")
    return cli.run("publish", arguments, lambda args: print(json.dumps(publish(
        args.models, args.report, args.results, args.destination, args.variant)["uris"], indent=2)), argv)


if __name__ == "__main__":
    raise SystemExit(main())
