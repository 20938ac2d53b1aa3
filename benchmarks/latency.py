"""Latency and size of our CPM (and hourglass) at 192 against the seed's released TFLite models.

Builds our networks with the seed's settings (random weights: speed and size do not depend on them),
runs them through the real freeze and tflite steps (int8 calibrated on a small synthetic shard set),
then times every model and the seed's models in LiteRT in the same run, interleaved, over several
repetitions, so the ratios compare like with like on a noisy shared machine.

    .venv/bin/python benchmarks/latency.py [--models mv2_cpm,mv2_hourglass] [--cpm-width 0.5] [--runs 50] [--repeats 3]
                                           [--cpm-config experiments/mv2_cpm_192_tiny.yaml] [--cpm-stage-kernels 7,5]

Every model is timed with LiteRT's XNNPACK delegate and with its builtin kernels; a model's latency is the
faster of the two (an app picks its runtime), the seed's models included. The seed's released CPM file has
width 0.5 (its first convolution has 16 filters = 32 x 0.5; 0.75 is its training code's default,
experiments/mv2_cpm_192.yaml),
so the CPM is built at 0.5 to compare like with like. `--cpm-config` takes the CPM's width and structure
options from a training config instead (experiments/mv2_cpm_192_tiny.yaml: the released file's structure,
layer for layer); `--cpm-stage-kernels 7,5` builds one CPM per stage kernel size (labelled `mv2_cpm-k5_...`
for all but the first), to compare in the same run.

Goals (issue 5): CPM float32 latency <= 1.0x the seed CPM's (1 thread) and size no larger;
CPM int8 latency <= 0.5x the seed CPM's.
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pose.models.networks import IDENTITIES  # noqa: E402  (after the path is set)

SEED_MODELS = {name: identity.seed_release + ".tflite" for name, identity in IDENTITIES.items()}


def cpm_builds(cpm_width: float, cpm_config: str | None, stage_kernels: list[int]) -> dict:
    """{label: (width, structure options)} of the CPMs to build, one per stage kernel size."""
    width, options = cpm_width, {}
    if cpm_config:
        from pose.training.config import load_config

        config = load_config(cpm_config)
        width, options = (
            config.width if config.width is not None else cpm_width,
            config.architecture_options(),
        )
    return {
        ("mv2_cpm" if index == 0 else f"mv2_cpm-k{kernel}"): (
            width,
            {**options, "stage_kernel_size": kernel},
        )
        for index, kernel in enumerate(stage_kernels)
    }


def build_models(
    names: list[str],
    work: Path,
    cpm_width: float,
    cpm_config: str | None = None,
    stage_kernels: tuple[int, ...] = (7,),
) -> dict:
    """{label: tflite output folder} for our models at 192 with the seed's width and stages."""
    from components.convert import convert
    from components.download import download
    from components.freeze import freeze
    from components.shard import shard
    from components.tflite import convert_to_tflite
    from pose.models.networks import build_model

    download("synthetic://16?seed=3", str(work / "raw"))
    convert(str(work / "raw"), str(work / "coco"))
    shard(str(work / "coco"), str(work / "shards"), split="train", num_shards=1)
    builds = {}
    for name in names:
        builds.update(
            cpm_builds(cpm_width, cpm_config, list(stage_kernels))
            if name == "mv2_cpm"
            else {name: (None, {})}
        )
    folders = {}
    for label, (width, options) in builds.items():
        name = label.split("-")[0]
        model = build_model(name, 192, width=width, **options)
        (work / label).mkdir()
        model.save(work / label / "model.keras")
        (work / label / "train_metadata.json").write_text(
            f'{{"model": "{name}", "input_size": 192}}'
        )
        freeze(str(work / label), str(work / f"{label}-frozen"))
        convert_to_tflite(
            str(work / f"{label}-frozen"),
            str(work / f"{label}-tflite"),
            ["fp32", "fp16", "int8-dynamic", "int8"],
            representative_dirs=[str(work / "shards")],
            num_representative=16,
        )
        folders[label] = work / f"{label}-tflite"
        print(f"{label}: width {width}, {options}", flush=True)
    return folders


def main() -> None:
    import numpy as np

    from pose.models import tflite_runtime

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mv2_cpm,mv2_hourglass")
    parser.add_argument(
        "--cpm-width", type=float, default=0.5, help="the released seed CPM's width is 0.5"
    )
    parser.add_argument(
        "--cpm-config",
        help="training config giving the CPM's width and structure options, e.g. "
        "experiments/mv2_cpm_192_tiny.yaml (the released file's structure)",
    )
    parser.add_argument(
        "--cpm-stage-kernels",
        default="7",
        help="comma-separated stage kernel sizes: one CPM each (the seed's is 7)",
    )
    parser.add_argument("--anchors", default=str(REPO / "anchors"))
    parser.add_argument(
        "--runs", type=int, default=50, help="timed invokes per measurement, after warm-up"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved repetitions of every measurement"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [n.strip() for n in args.models.split(",")]
    threads = sorted({1, tflite_runtime.all_threads()})

    with tempfile.TemporaryDirectory() as tmp:
        kernels = tuple(int(k) for k in args.cpm_stage_kernels.split(","))
        folders = build_models(names, Path(tmp), args.cpm_width, args.cpm_config, kernels)
        candidates = {"seed " + SEED_MODELS[n]: Path(args.anchors) / SEED_MODELS[n] for n in names}
        for label, folder in folders.items():
            # Files are <model>_<variant>.tflite; rows are <label>_<variant>, to tell CPM structures apart.
            model_name = label.split("-")[0]
            candidates.update(
                {
                    f"{label}_{path.stem[len(model_name) + 1 :]}": path
                    for path in sorted(folder.glob("*.tflite"))
                }
            )
        # timings[model][runtime][threads] = [median of each repetition]
        timings = {
            model: {r: {t: [] for t in threads} for r in tflite_runtime.RUNTIMES}
            for model in candidates
        }
        for _repeat in range(args.repeats):
            for t in threads:
                for runtime in tflite_runtime.RUNTIMES:
                    for model, path in candidates.items():
                        timings[model][runtime][t].append(
                            tflite_runtime.latency(path, t, runs=args.runs, runtime=runtime)[
                                "median_ms"
                            ]
                        )
        best_runtime = {
            model: min(tflite_runtime.RUNTIMES, key=lambda r: np.median(timings[model][r][1]))
            for model in candidates
        }
        medians = {model: timings[model][best_runtime[model]] for model in candidates}
        sizes = {model: path.stat().st_size for model, path in candidates.items()}

    print(
        f"\nLiteRT {args.runs} runs x {args.repeats} repetitions, threads {threads}, os.cpu_count()="
        f"{os.cpu_count()}; median of the per-repetition medians; ratio = ours / the seed's of the same family;"
        " runtime = the faster at 1 thread (xnnpack / builtin; the other's 1-thread ms in brackets)"
    )
    header = f"{'model':28s} {'size MB':>8s} {'size x':>7s} {'runtime':>18s}" + "".join(
        f" {f'{t}T ms':>8s} {f'{t}T x':>7s} {f'{t}T x range':>12s}" for t in threads
    )
    print(header)
    for model in candidates:
        family = next(n for n in names if model.startswith(n) or SEED_MODELS[n] in model)
        seed = "seed " + SEED_MODELS[family]
        other = next(r for r in tflite_runtime.RUNTIMES if r != best_runtime[model])
        runtime = f"{best_runtime[model]} ({np.median(timings[model][other][1]):.0f})"
        row = f"{model:28s} {sizes[model] / 1e6:8.2f} {sizes[model] / sizes[seed]:7.2f} {runtime:>18s}"
        for t in threads:
            ratios = np.array(medians[model][t]) / np.array(medians[seed][t])
            row += f" {np.median(medians[model][t]):8.2f} {np.median(ratios):7.2f}"
            row += f" {ratios.min():5.2f}-{ratios.max():<5.2f}"
        print(row)
    if "mv2_cpm" in names:
        seed = "seed " + SEED_MODELS["mv2_cpm"]

        def ratio(model):
            return float(np.median(np.array(medians[model][1]) / np.array(medians[seed][1])))

        for label in (label for label in folders if label.startswith("mv2_cpm")):
            fp32, int8 = f"{label}_fp32", f"{label}_int8"
            print(f"\nGoals (1 thread, {label}):")
            print(
                f"  fp32 latency ratio {ratio(fp32):.2f} (goal <= 1.0): {'met' if ratio(fp32) <= 1.0 else 'MISSED'}"
            )
            print(
                f"  fp32 size ratio {sizes[fp32] / sizes[seed]:.3f} (goal <= 1.0): "
                f"{'met' if sizes[fp32] <= sizes[seed] else 'MISSED'}"
            )
            print(
                f"  int8 latency ratio {ratio(int8):.2f} (goal <= 0.5): {'met' if ratio(int8) <= 0.5 else 'MISSED'}"
            )


if __name__ == "__main__":
    main()
