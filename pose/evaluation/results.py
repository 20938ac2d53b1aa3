"""results.json: every figure evaluate measured, and the one schema its readers share.

evaluate writes it (`write`); publish, `python -m pipeline run`'s summary and the KFP Metrics artifact
read it (`read`, `metric_figures`). The layout is documented in docs/ARTIFACTS.md ("evaluate"):

    {"settings": Settings, "models": {"<model>_<variant>": ModelResult, ...},
     "anchors": {"<anchor>": AnchorResult, ...}, "photos": Photos or null}

The anchors are the seed's released models and any outside model shipped beside them (BlazePose GHUM
full); each says whose it is in `release` (`anchor_source`, `anchor_label`; a results.json written
before outside anchors has none, and its anchors are the seed's).

"photos" (pose.evaluation.photos) was added later: a results.json without it reads as one with "photos": null.

Only NumPy-free JSON types are written: NumPy scalars and paths are converted on the way out.
"""

import json
from pathlib import Path
from typing import TypedDict

FILE_NAME = "results.json"


class Latency(TypedDict):
    threads: int
    runs: int
    runtime: str  # "xnnpack" or "builtin" (pose.models.tflite_runtime.RUNTIMES)
    median_ms: float
    p90_ms: float


class Data(TypedDict):
    """What the validation people are (evaluate.data_description), named atop the report."""

    source: (
        str | None
    )  # the data URI (synthetic://N, gs://..., a folder); None: not passed to evaluate
    synthetic: bool  # rendered figures (synthetic://), not photographs
    folders: list[str]  # the shard folders' last path parts (no machine paths)
    split: str  # the shard index's split ("valid")
    keypoint_set: str  # the set's name ("aic", "coco")
    num_examples: int  # the people in the shards (the index's count)


class Settings(TypedDict):
    models_dir: str
    data_dirs: list[str]
    anchors_dir: str | None
    refine: str  # pose.codec refine mode used to decode
    flip_test: bool
    latency_runs: int
    all_threads: int  # the thread count of the "all" latency
    num_people: int  # validation people scored
    gallery_model: str  # the model drawn in the report's gallery
    keypoint_set: (
        dict  # the validation shards' keypoint set (pose.data.keypoints.KeypointSet.to_json)
    )
    pck_name: (
        str  # what "pckh" is for that set: "PCKh@0.5", or "PCK@0.2" (of the box) without a head
    )
    data: Data  # added later: a results.json without it names its data_dirs' last parts only


class SeedComparison(TypedDict):
    seed_model: str  # the anchors' key of the seed model of the same family
    input_size: int | None
    seed_input_size: int
    same_input_size: bool  # latency scales with pixels: a ratio across sizes is not like with like
    latency_1_thread: float  # ours / the seed's
    latency_all_threads: float
    size: float
    pckh_points: float  # 100 x (ours - the seed's)
    ap: float  # ours - the seed's


class ModelResult(TypedDict):
    file: str  # the .tflite's name
    metadata: dict  # the .json beside it
    pckh: float  # the set's PCK (pck_name), 0..1
    pck_name: str  # "PCKh@0.5", or "PCK@0.2" of the box for a set (or shared joints) without a head
    joints_scored: int  # the set's joints (a seed model: those it shares with the set, by name)
    pckh_per_joint: dict[str, float | None]  # joint name -> PCK, None where no joint counted
    ap: float  # OKS AP (pycocotools, the set's sigmas) and its companions
    ap50: float
    ap75: float
    ar: float
    size_bytes: int
    latency: dict  # {"1": Latency, "all": Latency, "runtime": the faster runtime}
    latency_by_runtime: dict  # runtime -> {"1": Latency, "all": Latency}
    vs_seed: SeedComparison | None  # None: no seed model of its family was evaluated


class Release(TypedDict):
    source: str  # "seed" (SEED_SOURCE) for the seed's released models, "blazepose" for BlazePose
    title: str  # in words, for people


class AnchorResult(TypedDict):
    """An anchor, evaluated like ours: a seed release (its metadata: the seed contract, sizes read from
    the model) or an outside model with its .json (BlazePose: release.source "blazepose")."""

    file: str
    release: Release
    metadata: dict
    pckh: float
    pck_name: str
    joints_scored: int  # those it shares with the data's set, by name
    pckh_per_joint: dict[str, float | None]
    ap: float
    ap50: float
    ap75: float
    ar: float
    size_bytes: int
    latency: dict
    latency_by_runtime: dict


class PhotoModel(TypedDict):
    keypoints: list[
        list[float]
    ]  # [K] x [x, y, score] in the picture's pixels, the model's set's order
    agreement: float  # PCK@threshold against the reference, over the joints both name, 0..1
    agreement_found: float  # the same over the joints the reference finds (score >= found_score)
    joints_compared: int  # the joints the model's set shares with the reference's, by name


class Picture(TypedDict):
    file: str  # its name in the photographs folder
    reference_keypoints: list[list[float]]  # the seed's CPM: [14] x [x, y, score], AIC order
    person_size: float  # pixels: the longer side of the reference keypoints' box
    picture_side: int  # pixels: the picture's longer side (added later; absent in older files)
    # why the picture cannot judge a model (photos.not_judged), None when it can; such a picture is
    # left out of the means (added later: absent means judged)
    not_judged: str | None
    models: dict[str, PhotoModel]


class Photos(TypedDict):
    """Real photographs (pose.evaluation.photos): ours beside the seed's released CPM, which is the reference."""

    folder: str
    reference: str  # the anchors' key of the reference (the seed's CPM)
    threshold: float  # agreement = PCK@threshold of the person's size
    box: str  # how the person's size is taken
    found_score: float  # reference joints below this score are not found
    drawn_model: str | None  # the model drawn beside the reference in the report
    pictures: list[Picture]
    # model -> mean agreement over the pictures judged (None: none is)
    agreement: dict[str, float | None]
    agreement_found: dict[str, float | None]  # model -> mean agreement_found over those pictures
    # model -> the joints its set shares with the reference's, by name
    joints_compared: dict[str, int]


class Results(TypedDict):
    settings: Settings
    models: dict[str, ModelResult]
    anchors: dict[str, AnchorResult]
    photos: Photos | None  # None: no photographs, or no seed CPM to compare with


SEED_SOURCE = "seed"


def anchor_source(anchor: dict) -> str:
    """Whose model an anchor is: "seed" for the seed's releases, else its release's source."""
    return (anchor.get("release") or {}).get("source") or SEED_SOURCE


def is_seed(anchor: dict) -> bool:
    """One of the seed's released models: the only anchors "vs seed" ratios and the photographs'
    reference are taken against."""
    return anchor_source(anchor) == SEED_SOURCE


def anchor_label(name: str, anchor: dict) -> str:
    """How tables list an anchor: "seed: pefm-cpm-192", "blazepose: blazepose-full-256"."""
    return f"{anchor_source(anchor)}: {name}"


def anchor_metric_name(name: str, anchor: dict) -> str:
    """An anchor's prefix among the KFP Metrics, apart from ours: "seed_pefm-cpm-192"."""
    return f"{anchor_source(anchor)}_{name}"


class ResultsError(ValueError):
    """A results.json that is missing, not JSON, or not evaluate's layout; the message names the file."""


def validate(results, source: str) -> Results:
    """`results` if it has evaluate's layout, else ResultsError naming `source` and what is missing."""
    if (
        not isinstance(results, dict)
        or not isinstance(results.get("models"), dict)
        or not results["models"]
    ):
        raise ResultsError(
            f"{source}: no 'models' with evaluation figures (expected evaluate's {FILE_NAME})"
        )
    for name, model in results["models"].items():
        missing = [key for key in ("pckh", "ap", "size_bytes", "latency") if key not in model]
        if missing or "median_ms" not in model["latency"].get("1", {}):
            raise ResultsError(
                f"{source}: model {name!r} lacks {', '.join(missing) or 'latency at 1 thread'}"
            )
    if not isinstance(results.get("anchors", {}), dict):
        raise ResultsError(f"{source}: 'anchors' is not an object")
    photos = results.get("photos")
    if photos is not None and not (
        isinstance(photos, dict)
        and isinstance(photos.get("agreement"), dict)
        and isinstance(photos.get("pictures"), list)
    ):
        raise ResultsError(f"{source}: 'photos' lacks 'pictures' or 'agreement'")
    return results


def read(path) -> Results:
    """Reads and validates `path`: a results.json, or a folder holding one (a KFP artifact folder)."""
    path = Path(path)
    found = path / FILE_NAME if path.is_dir() else path
    if not found.is_file():
        raise ResultsError(f"results: {found} does not exist")
    try:
        results = json.loads(found.read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"{found}: not valid JSON ({error})") from error
    return validate(results, str(found))


def dumps(results: Results) -> str:
    return json.dumps(validate(results, "results to write"), indent=2, default=_json_default)


def write(path, results: Results) -> Path:
    """Writes `results` to `path` (a file name, or a folder to hold results.json); the caller makes it
    atomic (evaluate writes into its atomic_directory)."""
    path = Path(path)
    target = path / FILE_NAME if path.is_dir() else path
    target.write_text(dumps(results))
    return target


def metric_figures(results: Results) -> dict[str, float]:
    """The headline figures as KFP Metrics: per model PCKh@0.5 (percent), OKS AP / AP50 / AP75, latency at
    one thread (ms), size (MB), the latency ratio against the seed's model when there is one, and the
    agreement with the seed's CPM on the real photographs when they were measured; per anchor (the
    seed's and BlazePose, anchor_metric_name) its PCK, OKS AP and latency at one thread."""
    figures = {}
    for name, model in results["models"].items():
        figures[f"{name}_pckh"] = round(100 * model["pckh"], 2)
        for key in ("ap", "ap50", "ap75"):
            figures[f"{name}_{key}"] = round(model[key], 4)
        figures[f"{name}_latency_ms"] = round(model["latency"]["1"]["median_ms"], 3)
        figures[f"{name}_size_mb"] = round(model["size_bytes"] / 1e6, 3)
        if model["vs_seed"]:
            figures[f"{name}_latency_vs_seed"] = round(model["vs_seed"]["latency_1_thread"], 3)
    for name, anchor in results.get("anchors", {}).items():
        prefix = anchor_metric_name(name, anchor)
        if anchor.get("pckh") is not None:
            figures[f"{prefix}_pckh"] = round(100 * anchor["pckh"], 2)
        if anchor.get("ap") is not None:
            figures[f"{prefix}_ap"] = round(anchor["ap"], 4)
        figures[f"{prefix}_latency_ms"] = round(anchor["latency"]["1"]["median_ms"], 3)
    photos = results.get("photos") or {}
    for name, value in (photos.get("agreement") or {}).items():
        if value is not None:
            figures[f"{name}_photo_agreement"] = round(value, 3)
    for name, value in (photos.get("agreement_found") or {}).items():
        if value is not None:
            figures[f"{name}_photo_agreement_found"] = round(value, 3)
    return figures


def _json_default(value):
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
