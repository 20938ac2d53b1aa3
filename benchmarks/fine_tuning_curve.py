"""The fine-tuning curve (issue 22): does fine-tuning the seed's released CPM on rendered figures
keep its skill on real photographs, step by step?

For each setting, trains once from the released CPM (experiments/local.yaml plus the setting's
overrides) with components.train.train, a checkpoint every `--every` steps and none pruned; then
restores the checkpoint of each requested step (step 0: the warm start itself) into a fresh network
and measures, on the same weights:
- PCKh@0.5 on the valid shards: train's own measure (pose.training.validation.evaluate_pckh, the
  codec train uses, no flip test) on the Keras model;
- the agreement with the seed's CPM on the photographs of photos/ (pose.evaluation.photos.agreement,
  over all 14 joints and over the joints the seed finds, min_score=FOUND_SCORE), the Keras model fed
  as pose.evaluation.photos feeds a model (the web demo's still-image mode: padded to a centred
  square, resized bilinearly, decoded with refine="quarter"), in the training contract (RGB / 255,
  AIC channel order) that export later wraps; the seed's keypoints come from its .tflite, as in
  evaluate. Step 0 scores 1.000 on both: the import reproduces the release.

    python benchmarks/fine_tuning_curve.py --data TRAIN_SHARDS... --valid VALID_SHARDS... \\
        --out /tmp/ftcurve [--steps 0 25 50 100 150 200] [--settings default batch16 whole]

Prints a table and writes <out>/fine_tuning_curve.json. A setting's training folder
(<out>/<setting>) is resumed, not redone, when the script runs again.
"""

import argparse
import json
import math
import time
from functools import reduce
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "local.yaml"
REFERENCE = REPO / "anchors" / "pefm-cpm-192.tflite"
# name: (what trains, the overrides of experiments/local.yaml)
SETTINGS = {
    "default": ("last stage (stage_5), lr 1e-4, batch 8", {}),
    "batch16": ("last stage (stage_5), lr 1e-4, batch 16", {"batch_size": 16}),
    "whole": ("the whole network, lr 1e-4, batch 8", {"frozen_layers": None}),
}


def keras_keypoints(predict, input_size: int, stride: float, picture: Path) -> np.ndarray:
    """[14, 3] (x, y, score) in the picture's pixels, AIC order: pose.evaluation.photos's
    reference_keypoints for a Keras network in the training contract."""
    from pose.codec import HeatmapCodec
    from pose.data import keypoints
    from pose.evaluation import photos
    from pose.models import contract

    image, square = photos.square_input(photos.read_picture(picture), input_size)
    # square_input gives float32 BGR 0..255; the network trains on RGB / 255
    image = image[..., ::-1] / np.float32(255.0)
    heatmaps = np.asarray(predict(image[None].astype(np.float32)))
    codec = HeatmapCodec(input_size, stride, refine="quarter")
    in_input, scores = codec.decode_to_input(heatmaps)
    in_picture = (
        (in_input[0] + 0.5) * (square["side"] / input_size)
        - 0.5
        - np.array([square["left"], square["top"]])
    )
    assert contract.channels(contract.AIC, keypoints.default()) == tuple(range(len(scores[0])))
    return np.concatenate([in_picture, scores[0][:, None]], axis=1)


def measure(cfg, model, valid_dirs, references: dict) -> dict:
    from pose.codec import HeatmapCodec
    from pose.evaluation import photos
    from pose.training.validation import evaluate_pckh, final_heatmaps_function

    predict = final_heatmaps_function(model)
    started = time.perf_counter()
    pckh = evaluate_pckh(
        predict, valid_dirs, HeatmapCodec(cfg.input_size, cfg.output_stride, cfg.sigma)
    )
    per_picture = {}
    for picture, seed in references.items():
        ours = keras_keypoints(predict, cfg.input_size, cfg.output_stride, picture)
        per_picture[picture.name] = {
            "agreement": photos.agreement(ours, seed),
            "agreement_found": photos.agreement(ours, seed, min_score=photos.FOUND_SCORE),
        }
    return {
        "pckh": pckh,
        "agreement": float(np.mean([p["agreement"] for p in per_picture.values()])),
        "agreement_found": float(np.mean([p["agreement_found"] for p in per_picture.values()])),
        "pictures": per_picture,
        "measure_seconds": round(time.perf_counter() - started, 1),
    }


def curve(name, data, valid, out: Path, steps, every, references) -> dict:
    import tensorflow as tf

    from components.train import train
    from pose.models import networks, warm_start
    from pose.training.config import load_config

    what, overrides = SETTINGS[name]
    overrides = {
        **overrides,
        "max_steps": max(steps),
        "checkpoint_every": every,
        "keep_checkpoints": 1000,
        "summary_every": 100000,
        "pred_image_on_tensorboard": False,
        "eval_every": 0,
    }
    folder = out / name
    started = time.perf_counter()
    metadata = train(str(CONFIG), data, str(folder), overrides=overrides)
    wall = time.perf_counter() - started
    cfg = load_config(str(CONFIG), overrides).resolved()
    points = []
    for step in steps:
        model = networks.build_from_config(cfg)
        if step == 0:
            warm_start.load_into(model, cfg.init_from, cfg.model, cfg.seed_layers)
        else:
            prefix = folder / "checkpoints" / f"ckpt-{step}"
            tf.train.Checkpoint(model=model).read(str(prefix)).expect_partial()
        point = {"step": step, **measure(cfg, model, valid, references)}
        print(
            f"{name} step {step}: PCKh {point['pckh']:.3f}, agreement {point['agreement']:.3f}, "
            f"found {point['agreement_found']:.3f}",
            flush=True,
        )
        points.append(point)
    return {
        "setting": name,
        "trains": what,
        "overrides": overrides,
        "train_wall_seconds": round(wall, 1),
        "train_seconds": metadata["train_seconds"],
        "images_per_second": metadata["images_per_second"],
        "frozen_layers": metadata["frozen_layers"],
        "points": points,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="train shard folders")
    parser.add_argument("--valid", nargs="+", required=True, help="valid shard folders")
    parser.add_argument("--out", required=True, help="folder for the trainings and the JSON")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 150, 200])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--max-steps",
        nargs="+",
        default=[],
        metavar="SETTING=N",
        help="a shorter curve for a setting, e.g. whole=100",
    )
    args = parser.parse_args(argv)

    from pose.evaluation import photos
    from pose.web_demo import model_metadata

    steps = sorted(set(args.steps))
    every = reduce(math.gcd, [s for s in steps if s])
    limits = {k: int(v) for k, v in (item.split("=", 1) for item in args.max_steps)}
    reference_metadata = model_metadata(REFERENCE)
    references = {
        picture: photos.predict(REFERENCE, reference_metadata, picture)
        for picture in photos.find(photos.DEFAULT_FOLDER)
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.settings:
        own = [s for s in steps if s <= limits.get(name, max(steps))]
        results.append(curve(name, args.data, args.valid, out, own, every, references))
        (out / "fine_tuning_curve.json").write_text(
            json.dumps(
                {
                    "config": str(CONFIG.relative_to(REPO)),
                    "data": args.data,
                    "valid": args.valid,
                    "photographs": [p.name for p in references],
                    "reference": str(REFERENCE.relative_to(REPO)),
                    "results": results,
                },
                indent=2,
            )
        )

    print()
    print("| setting | trains | step | PCKh@0.5 (no flip) | agreement, 14 joints | found joints |")
    print("| --- | --- | --- | --- | --- | --- |")
    for result in results:
        for point in result["points"]:
            print(
                f"| {result['setting']} | {result['trains']} | {point['step']} | "
                f"{point['pckh']:.3f} | {point['agreement']:.3f} | {point['agreement_found']:.3f} |"
            )
    print()
    for result in results:
        print(
            f"{result['setting']}: {result['images_per_second']:.1f} images/s, train "
            f"{result['train_seconds']} s ({result['train_wall_seconds']} s wall with setup)"
        )
    print(f"wrote {out / 'fine_tuning_curve.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
