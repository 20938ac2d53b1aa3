"""evaluate: accuracy, latency and size of every .tflite variant, beside the seed's released models.

Takes    a tflite output folder (`*.tflite`, each with its .json), validation shard folders, and the
         seed's models (the repository's `anchors/`, or --anchors / POSE_ANCHORS_DIR) and the real
         photographs (the repository's `photos/`, or --photos).
Does     runs each model, ours and the seed's, in LiteRT over the validation people, each fed in its own
         model contract (the `contract` of its .json, pose.models.metadata; the seed's files have no
         .json and are "seed", their stride read from the tensor shapes),
         heatmaps brought back to the keypoint set's order (optional flip test), decodes the heatmaps
         (DARK or quarter-offset sub-pixel refinement), maps keypoints back to original image pixels and
         scores the set's PCK (PCKh@0.5 on its head segment, else PCK@0.2 of the box; a model of
         another set, the seed's among them, on the joints both name) and OKS AP through pycocotools
         with the set's sigmas;
         times every model and every seed model in the same run (median / p90, 1 and all threads,
         LiteRT with XNNPACK and with its builtin kernels; the faster counts; each measurement time-boxed,
         LATENCY_SECONDS).
Writes   `results.json` (everything) and `report.html` (table, per-joint bars, gallery), atomically;
         the KFP component also logs the headline figures as Metrics.

`python -m components.evaluate predict --model X.tflite --image IN --output OUT.png` draws the
predicted skeleton on any image (letterboxed to the model's input): the desktop twin of the seed's app.
"""

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from components import cli
from pose.codec import DEFAULT_REFINE, REFINE_MODES
from pose.evaluation import results as results_file

log = logging.getLogger("evaluate")

REPO = Path(__file__).resolve().parent.parent
BATCH_SIZE = 16
# Time box of one latency measurement (one model, runtime and thread count): up to --latency-runs runs,
# fewer when they take longer than this (at least tflite_runtime.MIN_TIMED_RUNS). Full int8 on the
# builtin kernels with all threads took 2.5 s an invoke on the loaded 2-core machine: 55 invokes
# were over two minutes of the main job for a figure no app would pick.
LATENCY_SECONDS = 10.0
# Prediction keys of the anchors (the seed's models and BlazePose), apart from ours.
ANCHOR_PREFIX = "seed:"
PREDICT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class EvaluationError(ValueError):
    """Unusable models or data: names the file or folder and what is wrong."""


def evaluate(
    models_dir: str,
    data_dirs: list[str],
    output_dir: str,
    anchors_dir: str | None = None,
    flip_test: bool = False,
    refine: str = DEFAULT_REFINE,
    latency_runs: int = 50,
    gallery_size: int = 12,
    photos_dir: str | None = None,
    data_source: str | None = None,
) -> dict:
    """Evaluates every .tflite in `models_dir` on `data_dirs` and on the real photographs of `photos_dir`
    (default: the repository's photos/; "" for none); writes results.json and report.html to `output_dir`
    and returns the results dict. `data_source`: where the validation people came from (the
    pipeline's source URI, e.g. synthetic://N), recorded in settings.data and named atop the report;
    None where the caller does not know it (the KFP component today)."""
    from pose.data import records, shard_index
    from pose.evaluation import report
    from pose.files import outputs, steplog
    from pose.files.atomic import atomic_directory

    if refine not in REFINE_MODES:
        raise EvaluationError(f"refine must be one of {REFINE_MODES}, not {refine!r}")
    if latency_runs < 1:
        raise EvaluationError(
            f"--latency-runs {latency_runs}: at least 1 timed run per model is needed"
        )
    if gallery_size < 0:
        raise EvaluationError(f"--gallery-size {gallery_size}: must not be negative")
    anchors_dir = resolve_anchors_dir(anchors_dir)
    photos_dir = _resolve_photos_dir(photos_dir)
    outputs.check_output("evaluate", output_dir, [models_dir, *data_dirs, anchors_dir])
    with steplog.step(
        "evaluate",
        models=models_dir,
        data=data_dirs,
        output=output_dir,
        anchors=anchors_dir,
        refine=refine,
        flip_test=flip_test,
    ) as wrote:
        models = _open_models(Path(models_dir))
        anchors = (
            {path.stem: open_model(path) for path in sorted(anchors_dir.glob("*.tflite"))}
            if anchors_dir
            else {}
        )
        merged_index = shard_index.read(data_dirs)
        data_set = shard_index.keypoint_set(merged_index)
        _check_keypoint_sets(models, anchors, data_set, data_dirs)
        predicted = {**models, **{ANCHOR_PREFIX + name: anchor for name, anchor in anchors.items()}}
        with records.named_shard_errors(merged_index["files"]):
            predictions, truth, gallery = _predict_validation(
                predicted,
                data_dirs,
                refine,
                flip_test,
                gallery_size,
                gallery_candidates=list(models),
            )
        results = {
            "settings": {
                "models_dir": str(models_dir),
                "data_dirs": [str(d) for d in data_dirs],
                "anchors_dir": str(anchors_dir) if anchors_dir else None,
                "refine": refine,
                "flip_test": flip_test,
                "latency_runs": latency_runs,
                "all_threads": _all_threads(),
                "num_people": len(truth["image_id"]),
                "gallery_model": gallery["model"],
                "keypoint_set": data_set.to_json(),
                "pck_name": data_set.pck_name,
                "data": data_description(data_dirs, merged_index, data_source),
            },
            "models": {},
            "anchors": {},
        }
        for name, model in models.items():
            results["models"][name] = {
                "file": model["path"].name,
                "metadata": model["metadata"],
                **_accuracy(predictions[name], truth, data_set, model["keypoint_set"]),
                **_speed_and_size(model["path"], latency_runs),
            }
        for name, anchor in anchors.items():
            results["anchors"][name] = {
                "file": str(anchor["path"]),
                "release": anchor["release"],
                "metadata": anchor["metadata"],
                **_accuracy(
                    predictions[ANCHOR_PREFIX + name], truth, data_set, anchor["keypoint_set"]
                ),
                **_speed_and_size(anchor["path"], latency_runs),
            }
        _compare_with_seed(results)
        results["photos"], photo_panels = _photographs(
            photos_dir, models, anchors, gallery["model"]
        )

        with atomic_directory(output_dir, step="evaluate") as tmp:
            results_file.write(tmp / results_file.FILE_NAME, results)
            (tmp / "report.html").write_text(
                report.render(results, gallery["images"], photo_panels)
            )
        for name, model in results["models"].items():
            log.info(
                "%s: %s %.1f, AP %.3f, %.2f ms (1 thread), %.2f MB, runtime %s%s",
                name,
                model["pck_name"],
                100 * model["pckh"],
                model["ap"],
                model["latency"]["1"]["median_ms"],
                model["size_bytes"] / 1e6,
                model["latency"]["runtime"],
                (
                    f", latency x{model['vs_seed']['latency_1_thread']:.2f} of the seed's"
                    + (
                        ""
                        if model["vs_seed"]["same_input_size"]
                        else f" (not like with like: {model['vs_seed']['input_size']} px against "
                        f"{model['vs_seed']['seed_input_size']} px)"
                    )
                )
                if model["vs_seed"]
                else "",
            )
        if results["photos"]:
            log.info(
                "real photographs (%d, agreement = PCK@%.1f against the seed's %s): %s",
                len(results["photos"]["pictures"]),
                results["photos"]["threshold"],
                results["photos"]["reference"],
                ", ".join(
                    f"{name} {'n/a' if value is None else f'{value:.2f}'}"
                    for name, value in results["photos"]["agreement"].items()
                ),
            )
        for name, anchor in results["anchors"].items():
            log.info(
                "%s %s: %s %.1f (%d joints), AP %.3f, %.2f ms (1 thread), %.2f MB",
                anchor["release"]["source"],
                name,
                anchor["pck_name"],
                100 * anchor["pckh"],
                anchor["joints_scored"],
                anchor["ap"],
                anchor["latency"]["1"]["median_ms"],
                anchor["size_bytes"] / 1e6,
            )
        wrote.update(
            results=f"{output_dir}/results.json",
            report=f"{output_dir}/report.html",
            models=len(models),
            people=len(truth["image_id"]),
        )
    return results


def resolve_anchors_dir(anchors_dir: str | None) -> Path | None:
    """--anchors, else $POSE_ANCHORS_DIR, else the repository's anchors/ when it exists, else None (skipped)."""
    chosen = anchors_dir or os.environ.get("POSE_ANCHORS_DIR")
    if chosen:
        if not Path(chosen).is_dir():
            raise EvaluationError(f"anchors folder {chosen} does not exist")
        return Path(chosen)
    default = REPO / "anchors"
    if default.is_dir():
        return default
    log.warning(
        "no seed models to compare with (%s missing, POSE_ANCHORS_DIR unset): skipping anchors",
        default,
    )
    return None


def data_description(data_dirs: list, merged_index: dict, source: str | None) -> dict:
    """settings.data: what the validation people are, for the report's opening line (results.Data)."""
    from pose.evaluation.report import shown_path
    from pose.files.uris import without_credentials

    return {
        "source": without_credentials(str(source)) if source else source,
        "synthetic": bool(source) and str(source).startswith("synthetic://"),
        "folders": [shown_path(d) for d in data_dirs],
        "split": merged_index["split"],
        "keypoint_set": merged_index["keypoint_set"]["name"],
        "num_examples": merged_index["num_examples"],
    }


def _resolve_photos_dir(photos_dir: str | None) -> Path | None:
    """--photos, else the repository's photos/ when it exists; "" (or no folder): no photographs."""
    from pose.evaluation import photos

    if photos_dir == "":
        return None
    if photos_dir is None:
        return photos.DEFAULT_FOLDER if photos.DEFAULT_FOLDER.is_dir() else None
    if not Path(photos_dir).is_dir():
        raise EvaluationError(f"photographs folder {photos_dir} does not exist")
    return Path(photos_dir)


def _photographs(photos_dir: Path | None, models: dict, anchors: dict, drawn_model: str):
    """results.json's "photos" section and the report's side-by-side panels: every model of ours on the real
    photographs beside the seed's released CPM (pose.evaluation.photos). (None, []) without photographs or without the
    seed's CPM to compare with."""
    from pose.evaluation import photos
    from pose.models import networks

    reference = networks.identity("mv2_cpm").seed_release
    if (
        photos_dir is None
        or reference not in anchors
        or not results_file.is_seed(anchors[reference])
    ):
        log.info(
            "real photographs: skipped (%s)",
            "no photographs folder"
            if photos_dir is None
            else f"no seed model {reference} to compare with",
        )
        return None, []
    try:
        return photos.evaluate(models, reference, anchors[reference], photos_dir, drawn_model)
    except photos.PhotoError as error:
        raise EvaluationError(str(error)) from error


def _open_models(models_dir: Path) -> dict:
    """name -> open_model(path) for every .tflite in the folder."""
    paths = sorted(models_dir.glob("*.tflite"))
    if not paths:
        raise EvaluationError(f"{models_dir}: no .tflite models")
    return {path.stem: open_model(path) for path in paths}


def open_model(path: Path) -> dict:
    """{path, interpreter, metadata, contract, input_size, heatmap_size} of a .tflite, checking shapes. The metadata
    is its .json; without one it is one of the seed's released files (seed contract, shapes give the stride)."""
    from pose.files import integrity
    from pose.models import metadata, tflite_runtime

    integrity.verify_tflite(path)
    # every core for predicting (timing loads its own interpreters): the seed's 192 px files are the slow part
    # (a file that is not TFLite is named here)
    interpreter = tflite_runtime.load(path, num_threads=tflite_runtime.all_threads())
    if not path.with_suffix(".json").is_file():
        _check_seed_release(path, path.with_suffix(".json").name)  # before anything runs it
    _, height, width, channels = tflite_runtime.input_shape(interpreter)
    try:
        out_shape = tflite_runtime.output_shape(interpreter)
    except tflite_runtime.NoHeatmapOutput as error:
        raise EvaluationError(f"{path}: {error}") from error
    if height != width or channels != 3 or len(out_shape) != 4:
        raise EvaluationError(
            f"{path}: input {[height, width, channels]} / output {list(out_shape)}, expected a "
            "square RGB image in and [1, h, w, K] heatmaps out"
        )
    try:
        model_metadata = metadata.of_model_file(path, interpreter)
    except metadata.MetadataError as error:
        raise EvaluationError(str(error)) from error
    if model_metadata.input_size != height:
        raise EvaluationError(
            f"{path}: size mismatch: the model takes {height}x{width} but "
            f"{metadata.path_for(path).name} says input_size "
            f"{model_metadata.input_size}"
        )
    beside = metadata.path_for(path)
    # the claims as written (the reader derives some fields, e.g. the stride, from others)
    claims = json.loads(beside.read_text()) if beside.is_file() else model_metadata.to_json()
    _check_claims(path, beside.name, claims if isinstance(claims, dict) else {}, height, out_shape)
    if (
        model_metadata.num_keypoints != model_metadata.keypoint_set.num_keypoints
        or model_metadata.heatmap_channels != out_shape[-1]
    ):
        raise EvaluationError(
            f"{path}: {beside.name} names {model_metadata.keypoint_set.num_keypoints} joints in its "
            f"keypoint set, but the model outputs {out_shape[-1]} heatmaps"
        )
    # a seed release's contract is vouched for by its checksum; a set without the seed's order has
    # one contract only
    if beside.is_file() and model_metadata.keypoint_set.seed_order is not None:
        _check_contract(path, beside.name, interpreter, height, out_shape, model_metadata.contract)
    return {
        "path": path,
        "interpreter": interpreter,
        "metadata": model_metadata.to_json(),
        "contract": model_metadata.contract,
        "keypoint_set": model_metadata.keypoint_set,
        "input_size": height,
        "heatmap_size": out_shape[1],
        "release": release(model_metadata, beside.is_file()),
    }


def release(model_metadata, has_json: bool) -> dict:
    """Whose model an anchor is, for results.json and whoever lists anchors: the seed's (a released
    file without a .json, vouched for by SHA256SUMS) or the `release` its .json names
    (pose.models.metadata; BlazePose's: source "blazepose"); `source` "ours" for a .json without one."""

    if not has_json:
        return {
            "source": results_file.SEED_SOURCE,
            "title": f"the seed's {model_metadata.model} (PoseEstimationForMobile)",
        }
    declared = model_metadata.extra.get("release")
    if isinstance(declared, dict) and declared.get("source"):
        return {"title": str(declared["source"]), **declared}
    return {"source": "ours", "title": model_metadata.model}


def _check_claims(path: Path, meta_name: str, metadata: dict, input_size: int, out_shape) -> None:
    """A model's .json is a claim: its input size, heatmap size, stride and keypoint count must be
    the model's own (issue 21: a .json claiming stride 4 and 17 keypoints for a 14-channel model was
    copied into results.json)."""
    heatmap = int(out_shape[1])
    actual = {
        "input_size": input_size,
        "output_size": heatmap,
        # a model whose heatmaps hold more than the set's joints says so (heatmap_channels)
        "heatmap_channels" if "heatmap_channels" in metadata else "num_keypoints": int(
            out_shape[-1]
        ),
        "output_stride": input_size / heatmap,
    }
    for key, value in actual.items():
        claimed = metadata.get(key)
        if claimed is None:
            continue
        number = isinstance(claimed, (int, float)) and not isinstance(claimed, bool)
        if not number or abs(claimed - value) > 1e-6:
            raise EvaluationError(
                f"{path}: {meta_name} says {key} {claimed!r}, but the model has "
                f"{value:g} "
                f"(input {input_size}x{input_size}, heatmaps "
                f"{heatmap}x{heatmap}x{out_shape[-1]}): "
                "the .json does not describe this model"
            )


def _check_contract(
    path: Path, meta_name: str, interpreter, input_size: int, out_shape, claimed: dict
) -> None:
    """The contract a .json claims against what the model does: one run per contract on a rendered
    figure with known keypoints (pose.evaluation.contract_check, which states the rule). Issue 21:
    the seed's CPM under a .json claiming `aic` scored 0.0 with no warning."""
    from pose.evaluation import contract_check, photos

    scores = contract_check.fits(interpreter, input_size, input_size / int(out_shape[1]))
    shown = ", ".join(f"{name} {score:.2f}" for name, score in scores.items())
    log.info(
        "%s: contract %r checked on a rendered figure (PCK@%g per contract: %s)",
        path.name,
        claimed["name"],
        photos.THRESHOLD,
        shown,
    )
    follows = contract_check.better_fit(scores, claimed["name"])
    if follows is not None:
        raise EvaluationError(
            f"{path}: {meta_name} says contract {claimed['name']!r}, but the model follows "
            f"{follows!r}: on a rendered figure with known keypoints it finds "
            f"{scores[follows]:.0%} of the joints fed as {follows!r} and "
            f"{scores[claimed['name']]:.0%} as {claimed['name']!r} (PCK@"
            f"{photos.THRESHOLD:g}); write contract {follows!r} in {meta_name}"
        )


def seed_release_checksums() -> dict:
    """{sha256: file name} of the seed's released .tflite files (the repository's anchors/SHA256SUMS,
    which the images carry as $POSE_ANCHORS_DIR/SHA256SUMS). SHA256SUMS pins every shipped anchor; one
    with a .json beside it (BlazePose's) is another's release, not the seed's."""
    candidates = [REPO / "anchors" / "SHA256SUMS"]
    if os.environ.get("POSE_ANCHORS_DIR"):
        candidates.append(Path(os.environ["POSE_ANCHORS_DIR"]) / "SHA256SUMS")
    for candidate in candidates:
        if candidate.is_file():
            listed = [line.split() for line in candidate.read_text().splitlines() if line.strip()]
            return {
                fields[0]: fields[-1]
                for fields in listed
                if not (candidate.parent / fields[-1]).with_suffix(".json").is_file()
            }
    return {}


def _check_seed_release(path: Path, meta_name: str) -> None:
    """A .tflite without a .json is read in the seed's contract only when it is one of the seed's
    releases, byte for byte (issue 21: a seed file with 4 KB of flipped bytes scored 16.1 instead of
    98.2, unnoticed)."""
    from pose.files import integrity

    digest = integrity.sha256(path)
    known = seed_release_checksums()
    if digest not in known:
        raise EvaluationError(
            f"{path}: no {meta_name} beside it, and its sha256 {digest} is none "
            "of the seed's "
            "released files "
            f"({', '.join(sorted(known.values())) or 'no SHA256SUMS found'}): "
            "a damaged seed file, or a model whose contract nobody stated (give "
            "its .json)"
        )


def _check_keypoint_sets(models: dict, anchors: dict, data_set, data_dirs) -> None:
    """Ours must predict the data's joints; an anchor is scored on the joints it shares by name."""
    for model in models.values():
        if not model["keypoint_set"].same_joints(data_set):
            raise EvaluationError(
                f"{model['path']}: predicts the keypoint set {model['keypoint_set'].name!r} "
                f"({model['keypoint_set'].num_keypoints} joints), but the shards of "
                f"{', '.join(map(str, data_dirs))} hold {data_set.name!r} ({data_set.num_keypoints})"
            )
    for name, anchor in anchors.items():
        shared = data_set.shared_with(anchor["keypoint_set"])
        if not shared:
            raise EvaluationError(
                f"{anchor['path']}: shares no joint (by name) with the data's keypoint set "
                f"{data_set.name!r}: remove it from the anchors folder"
            )
        log.info(
            "anchor %s: scored on the %d joints it shares with %r: %s",
            name,
            len(shared),
            data_set.name,
            ", ".join(data_set.names[i] for i, _ in shared),
        )


def run_in_contract(model: dict, images):
    """Heatmaps in the order of the model's keypoint set for training-pipeline images (RGB in
    [0, 1]), the model fed in its own contract."""
    from pose.models import contract, tflite_runtime

    heatmaps = tflite_runtime.run(
        model["interpreter"], contract.from_training_images(images, model["contract"])
    )
    return contract.to_set_order(
        joint_channels(heatmaps, model), model["contract"], model["keypoint_set"]
    )


def joint_channels(heatmaps, model: dict):
    """The heatmaps of the set's joints of an open_model's output (pose.models.metadata.joint_heatmaps:
    BlazePose's first 33 of 39 channels, logits made scores)."""
    from pose.models import metadata

    return metadata.joint_heatmaps(heatmaps, model["metadata"])


def _predict_validation(
    models: dict,
    data_dirs: list[str],
    refine: str,
    flip_test: bool,
    gallery_size: int,
    gallery_candidates: list[str],
):
    """Runs every model over the validation people once; returns (predictions {name: {keypoints, scores}} in
    original pixels, truth arrays, gallery {model, images})."""
    import numpy as np
    from tqdm import tqdm

    from pose import codec
    from pose.data import inputs, shard_index
    from pose.files import integrity

    index = shard_index.read(data_dirs)
    data_set = shard_index.keypoint_set(index)
    integrity.verify_shards(data_dirs)
    if index["split"] != "valid":
        log.warning(
            "evaluating on shards of split %r (%s), not on validation shards: the figures do not measure "
            "generalisation",
            index["split"],
            ", ".join(map(str, data_dirs)),
        )
    if index["num_examples"] == 0:
        raise EvaluationError(
            f"{', '.join(map(str, data_dirs))}: the shards hold no people to evaluate"
        )
    gallery_model = next(
        (n for n in gallery_candidates if n.endswith("_fp32")), gallery_candidates[0]
    )
    predictions = {name: {"keypoints": [], "scores": []} for name in models}
    truth = {key: [] for key in ("keypoints", "visibility", "bbox", "image_id")}
    gallery = {"model": gallery_model, "images": []}
    codecs = {
        name: codec.HeatmapCodec.for_heatmaps(m["input_size"], m["heatmap_size"], refine=refine)
        for name, m in models.items()
    }
    started = time.perf_counter()
    for size in sorted({m["input_size"] for m in models.values()}):
        sized = {name: m for name, m in models.items() if m["input_size"] == size}
        first_pass = not truth["image_id"]
        batches = inputs.evaluation_dataset([str(d) for d in data_dirs], size, BATCH_SIZE)
        for batch in tqdm(
            batches,
            total=math.ceil(index["num_examples"] / BATCH_SIZE),
            unit="batch",
            desc=f"evaluate {size}px x {len(sized)} models",
            mininterval=5,
        ):
            batch = {key: value.numpy() for key, value in batch.items()}
            if first_pass:
                truth["keypoints"].append(batch["original_keypoints"])
                truth["visibility"].append(batch["visibility"])
                truth["bbox"].append(batch["bbox"])
                truth["image_id"].append(batch["image_id"])
            for name, model in sized.items():
                predict = lambda images, m=model: run_in_contract(m, images)  # noqa: E731
                heatmaps = (
                    codec.flip_test(predict, batch["image"], model["keypoint_set"].flip_index)
                    if flip_test
                    else predict(batch["image"])
                )
                in_input, scores = codecs[name].decode_to_input(heatmaps)
                predictions[name]["keypoints"].append(
                    input_to_original(in_input, batch["to_original"])
                )
                predictions[name]["scores"].append(scores)
                if name == gallery_model and len(gallery["images"]) < gallery_size:
                    gallery["images"].extend(
                        _gallery_images(
                            batch,
                            in_input,
                            gallery_size - len(gallery["images"]),
                            data_set.skeleton,
                        )
                    )
    truth = {key: np.concatenate(value) for key, value in truth.items()}
    if len(truth["image_id"]) == 0:
        raise EvaluationError(
            f"{', '.join(map(str, data_dirs))}: the shards hold no people to evaluate"
        )
    elapsed = time.perf_counter() - started
    log.info(
        "predicted %d people with %d models in %.1fs (%.1f people/s per model)",
        len(truth["image_id"]),
        len(models),
        elapsed,
        len(truth["image_id"]) * len(models) / max(elapsed, 1e-9),
    )
    return (
        {name: {k: np.concatenate(v) for k, v in p.items()} for name, p in predictions.items()},
        truth,
        gallery,
    )


def input_to_original(points, to_original):
    """Input pixels [N, K, 2] -> original image pixels with the per-person affine to_original [N, 2, 3]."""
    import numpy as np

    return np.einsum("nij,nkj->nki", to_original[:, :, :2], points) + to_original[:, None, :, 2]


def _gallery_images(
    batch: dict, predicted_input, count: int, skeleton, scale: int = 2
) -> list[str]:
    import cv2
    import numpy as np

    from pose.evaluation import report

    uris = []
    for image, true_points, visibility, points in zip(
        batch["image"][:count], batch["keypoints"], batch["visibility"], predicted_input
    ):
        canvas = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        report.draw_skeleton(
            canvas, (true_points + 0.5) * scale - 0.5, visibility > 0, report.TRUE_COLOUR, skeleton
        )
        report.draw_skeleton(
            canvas, (points + 0.5) * scale - 0.5, None, report.PREDICTED_COLOUR, skeleton
        )
        uris.append(report.jpeg_data_uri(canvas))
    return uris


def _accuracy(prediction: dict, truth: dict, data_set, model_set) -> dict:
    """PCK (the set's: PCKh@0.5 or PCK@0.2 of the box) and OKS AP with the set's sigmas, on the joints
    the model's set shares with the data's (all of them for our models); `pckh` keeps its name in
    results.json whichever PCK it is (`pck_name` says)."""
    from pose.evaluation import metrics

    shared = data_set.shared_with(model_set)
    data_joints, model_joints = [i for i, _ in shared], [j for _, j in shared]
    scored = data_set if len(shared) == data_set.num_keypoints else data_set.subset(data_joints)
    points = prediction["keypoints"][:, model_joints]
    scores = prediction["scores"][:, model_joints]
    truth_points = truth["keypoints"][:, data_joints]
    visibility = truth["visibility"][:, data_joints]
    mean, per_joint = metrics.pck(
        points, truth_points, visibility > 0, scored, truth["bbox"][:, 2:].max(axis=-1)
    )
    ap = metrics.oks_ap(
        points, scores, truth_points, visibility, truth["bbox"], truth["image_id"], scored
    )
    by_name = dict(zip(scored.names, per_joint))
    return {
        "pckh": mean,
        "pck_name": scored.pck_name,
        "joints_scored": len(shared),
        "pckh_per_joint": {
            name: (
                None
                if name not in by_name or by_name[name] != by_name[name]
                else float(by_name[name])
            )
            for name in data_set.names
        },
        **ap,
    }


def _all_threads() -> int:
    from pose.models import tflite_runtime

    return tflite_runtime.all_threads()


def _speed_and_size(path: Path, runs: int) -> dict:
    """File size and latency with each LiteRT runtime; `latency` is the runtime faster at 1 thread, which
    is what an app would pick (ours and the seed's alike)."""
    from pose.models import tflite_runtime

    by_runtime = {
        runtime: {
            threads: tflite_runtime.latency(
                path, count, runs, runtime=runtime, max_seconds=LATENCY_SECONDS
            )
            for threads, count in (("1", 1), ("all", _all_threads()))
        }
        for runtime in tflite_runtime.RUNTIMES
    }
    best = min(by_runtime, key=lambda runtime: by_runtime[runtime]["1"]["median_ms"])
    return {
        "size_bytes": path.stat().st_size,
        "latency": {**by_runtime[best], "runtime": best},
        "latency_by_runtime": by_runtime,
    }


def _family(name: str) -> str | None:
    from pose.models import networks

    try:
        return networks.identity(name).family
    except networks.UnknownModel:
        return None


def _compare_with_seed(results: dict) -> None:
    """Adds vs_seed (ours / the seed's model of the same family: latency at 1 and all threads, size); None
    for a model of no known family or without the seed's model of its family."""
    # the seed's models only: BlazePose is of no family of ours
    anchors = {
        _family(name): anchor
        for name, anchor in results["anchors"].items()
        if results_file.is_seed(anchor)
    }
    anchors.pop(None, None)
    for name, model in results["models"].items():
        anchor = anchors.get(_family(model["metadata"].get("model", name)))
        if anchor is None:
            model["vs_seed"] = None
            continue
        size, seed_size = model["metadata"].get("input_size"), anchor["metadata"]["input_size"]
        model["vs_seed"] = {
            "seed_model": next(n for n, a in results["anchors"].items() if a is anchor),
            # latency scales with pixels: a ratio across input sizes is not like with like
            "input_size": size,
            "seed_input_size": seed_size,
            "same_input_size": size == seed_size,
            "latency_1_thread": model["latency"]["1"]["median_ms"]
            / anchor["latency"]["1"]["median_ms"],
            "latency_all_threads": model["latency"]["all"]["median_ms"]
            / anchor["latency"]["all"]["median_ms"],
            "size": model["size_bytes"] / anchor["size_bytes"],
            "pckh_points": 100 * (model["pckh"] - anchor["pckh"]),
            "ap": model["ap"] - anchor["ap"],
        }


def predict(
    model_path: str,
    image_path: str,
    output_path: str,
    refine: str = DEFAULT_REFINE,
    min_score: float = 0.1,
) -> dict:
    """Draws the predicted skeleton on `image_path` (the whole image letterboxed to the model input) into
    `output_path`; returns {"keypoints": [[x, y], ...] in image pixels, "scores": [...]}."""
    import cv2
    import numpy as np

    from pose.codec import HeatmapCodec
    from pose.evaluation import report
    from pose.files.atomic import atomic_file
    from pose.models import contract, tflite_runtime

    suffix = Path(output_path).suffix.lower()
    if suffix not in PREDICT_SUFFIXES:
        raise EvaluationError(
            f"{output_path}: cannot write a {suffix or 'suffix-less'} file; name an image "
            f"({', '.join(PREDICT_SUFFIXES)})"
        )
    model = open_model(Path(model_path))
    size = model["input_size"]
    from pose.data import pixels

    try:
        image = pixels.read_picture(image_path)
    except (OSError, pixels.PictureTooLarge) as error:
        raise EvaluationError(f"{image_path}: cannot read the image: {error}") from None
    except pixels.UnreadablePicture:
        raise EvaluationError(f"{image_path}: cannot read the image") from None
    height, width = image.shape[:2]
    scale = size / max(height, width)
    # Pixel centres map as x_in = scale * (x + 0.5) - 0.5, the image centred in the square input.
    shift_x = 0.5 * scale - 0.5 + (size - scale * width) / 2
    shift_y = 0.5 * scale - 0.5 + (size - scale * height) / 2
    to_input = np.array([[scale, 0, shift_x], [0, scale, shift_y]], dtype=np.float64)
    letterboxed = cv2.warpAffine(
        image, to_input, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    heatmaps = contract.to_set_order(
        joint_channels(
            tflite_runtime.run(
                model["interpreter"], contract.model_input(letterboxed[None], model["contract"])
            ),
            model,
        ),
        model["contract"],
        model["keypoint_set"],
    )
    in_input, scores = HeatmapCodec.for_heatmaps(
        size, heatmaps.shape[1], refine=refine
    ).decode_to_input(heatmaps)
    points = (in_input[0] - to_input[:, 2]) / scale
    report.draw_skeleton(
        image,
        points,
        scores[0] >= min_score,
        report.PREDICTED_COLOUR,
        model["keypoint_set"].skeleton,
        thickness=max(2, round(max(height, width) / 200)),
    )
    output_path = Path(output_path)
    with atomic_file(output_path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise EvaluationError(f"{output_path}: cannot write the image")
    log.info(
        "wrote %s: %d of %d joints above score %.2f",
        output_path,
        int((scores[0] >= min_score).sum()),
        scores.shape[1],
        min_score,
    )
    return {"keypoints": points.tolist(), "scores": scores[0].tolist()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        arguments = cli.parser("evaluate predict", "Draw the predicted skeleton on an image.")
        arguments.add_argument("--model", required=True, help=".tflite model")
        arguments.add_argument(
            "--image",
            required=True,
            help="a JPEG or PNG picture (at most pose.data.pixels.max_image_pixels() pixels)",
        )
        arguments.add_argument("--output", required=True, help="output image (.png)")
        arguments.add_argument("--refine", choices=REFINE_MODES, default=DEFAULT_REFINE)
        arguments.add_argument(
            "--min-score",
            type=float,
            default=0.1,
            help="joints below this peak score are not drawn",
        )
        return cli.run(
            "predict",
            arguments,
            lambda args: predict(
                args.model, args.image, args.output, refine=args.refine, min_score=args.min_score
            ),
            argv[1:],
        )
    arguments = cli.parser("evaluate", __doc__)
    arguments.add_argument(
        "--models", required=True, help="tflite output folder (*.tflite and their .json)"
    )
    arguments.add_argument(
        "--data", action="append", required=True, help="validation shard folder (repeatable)"
    )
    arguments.add_argument(
        "--output", required=True, help="folder for results.json and report.html"
    )
    arguments.add_argument(
        "--anchors",
        help="seed models folder (default: $POSE_ANCHORS_DIR, else the repository's anchors/)",
    )
    arguments.add_argument(
        "--flip-test", action="store_true", help="average with the prediction on the mirrored image"
    )
    arguments.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default=DEFAULT_REFINE,
        help="sub-pixel heatmap refinement",
    )
    arguments.add_argument(
        "--latency-runs",
        type=int,
        default=50,
        help="timed runs per model, runtime and thread count (fewer past a 10 s time box, at least 5)",
    )
    arguments.add_argument("--gallery-size", type=int, default=12)
    arguments.add_argument(
        "--photos",
        help="folder of real photographs to draw ours and the seed's keypoints on "
        '(default: the repository\'s photos/; "" for none)',
    )
    arguments.add_argument(
        "--source",
        help="where the validation people came from (the data URI, e.g. synthetic://200), named "
        "atop the report",
    )
    return cli.run(
        "evaluate",
        arguments,
        lambda args: evaluate(
            args.models,
            args.data,
            args.output,
            anchors_dir=args.anchors,
            flip_test=args.flip_test,
            refine=args.refine,
            latency_runs=args.latency_runs,
            gallery_size=args.gallery_size,
            photos_dir=args.photos,
            data_source=args.source,
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
