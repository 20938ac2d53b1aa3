"""Latency and size of our CPM (and hourglass) at 192 against the seed's released TFLite models.

Builds our networks with the seed's settings (random weights: speed and size do not depend on them),
runs them through the real freeze and tflite steps (int8 calibrated on a small synthetic shard set),
then times every model and the seed's models in LiteRT in the same run, interleaved, over several
repetitions, so the ratios compare like with like on a noisy shared machine.

    .venv/bin/python benchmarks/latency.py [--models mv2_cpm,mv2_hourglass] [--cpm-width 0.5] [--runs 50] [--repeats 3]

Every model is timed with LiteRT's XNNPACK delegate and with its builtin kernels; a model's latency is the
faster of the two (an app picks its runtime), the seed's models included. The seed's released CPM file has
width 0.5 (its first convolution has 16 filters = 32 x 0.5; DESIGN.md's 0.75 is its training default),
so the CPM is built at 0.5 to compare like with like.

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

SEED_MODELS = {"mv2_cpm": "pefm-cpm-192.tflite", "mv2_hourglass": "pefm-hourglass-192.tflite"}


def build_models(names: list[str], work: Path, cpm_width: float) -> dict:
    """{name: tflite output folder} for our models at 192 with the seed's width and stages."""
    from components.convert import convert
    from components.download import download
    from components.freeze import freeze
    from components.shard import shard
    from components.tflite import convert_to_tflite
    from pose.networks import build_model

    download("synthetic://16?seed=3", str(work / "raw"))
    convert(str(work / "raw"), str(work / "coco"))
    shard(str(work / "coco"), str(work / "shards"), split="train", num_shards=1)
    folders = {}
    for name in names:
        model = build_model(name, 192, width=cpm_width if name == "mv2_cpm" else None)
        (work / name).mkdir()
        model.save(work / name / "model.keras")
        (work / name / "train_metadata.json").write_text(f'{{"model": "{name}", "input_size": 192}}')
        freeze(str(work / name), str(work / f"{name}-frozen"))
        convert_to_tflite(str(work / f"{name}-frozen"), str(work / f"{name}-tflite"),
                          ["fp32", "fp16", "int8-dynamic", "int8"], representative_dirs=[str(work / "shards")],
                          num_representative=16)
        folders[name] = work / f"{name}-tflite"
    return folders


def main() -> None:
    import numpy as np

    from pose import tflite_runtime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mv2_cpm,mv2_hourglass")
    parser.add_argument("--cpm-width", type=float, default=0.5, help="the released seed CPM's width is 0.5")
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--runs", type=int, default=50, help="timed invokes per measurement, after warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [n.strip() for n in args.models.split(",")]
    threads = sorted({1, tflite_runtime.all_threads()})

    with tempfile.TemporaryDirectory() as tmp:
        folders = build_models(names, Path(tmp), args.cpm_width)
        candidates = {"seed " + SEED_MODELS[n]: Path(args.anchors) / SEED_MODELS[n] for n in names}
        for name, folder in folders.items():
            candidates.update({path.stem: path for path in sorted(folder.glob("*.tflite"))})
        # timings[model][runtime][threads] = [median of each repetition]
        timings = {model: {r: {t: [] for t in threads} for r in tflite_runtime.RUNTIMES} for model in candidates}
        for repeat in range(args.repeats):
            for t in threads:
                for runtime in tflite_runtime.RUNTIMES:
                    for model, path in candidates.items():
                        timings[model][runtime][t].append(
                            tflite_runtime.latency(path, t, runs=args.runs, runtime=runtime)["median_ms"])
        best_runtime = {model: min(tflite_runtime.RUNTIMES, key=lambda r: np.median(timings[model][r][1]))
                        for model in candidates}
        medians = {model: timings[model][best_runtime[model]] for model in candidates}
        sizes = {model: path.stat().st_size for model, path in candidates.items()}

    print(f"\nLiteRT {args.runs} runs x {args.repeats} repetitions, threads {threads}, os.cpu_count()="
          f"{os.cpu_count()}; median of the per-repetition medians; ratio = ours / the seed's of the same family;"
          " runtime = the faster at 1 thread (xnnpack / builtin; the other's 1-thread ms in brackets)")
    header = f"{'model':28s} {'size MB':>8s} {'size x':>7s} {'runtime':>18s}" + "".join(
        f" {f'{t}T ms':>8s} {f'{t}T x':>7s} {f'{t}T x range':>12s}" for t in threads)
    print(header)
    for model in candidates:
        family = next(n for n in names if model.startswith(n) or SEED_MODELS[n] in model)
        seed = "seed " + SEED_MODELS[family]
        other = next(r for r in tflite_runtime.RUNTIMES if r != best_runtime[model])
        runtime = f"{best_runtime[model]} ({np.median(timings[model][other][1]):.0f})"
        row = f"{model:28s} {sizes[model] / 1e6:8.2f} {sizes[model] / sizes[seed]:7.2f} {runtime:>18s}"
        for t in threads:
            ratios = np.array(medians[model][t]) / np.array(medians[seed][t])
            row += f" {np.median(medians[model][t]):8.2f} {np.median(ratios):7.2f} {ratios.min():5.2f}-{ratios.max():<5.2f}"
        print(row)
    if "mv2_cpm" in names:
        seed = "seed " + SEED_MODELS["mv2_cpm"]

        def ratio(model):
            return float(np.median(np.array(medians[model][1]) / np.array(medians[seed][1])))

        print("\nGoals (1 thread, CPM):")
        print(f"  fp32 latency ratio {ratio('mv2_cpm_fp32'):.2f} (goal <= 1.0): "
              f"{'met' if ratio('mv2_cpm_fp32') <= 1.0 else 'MISSED'}")
        print(f"  fp32 size ratio {sizes['mv2_cpm_fp32'] / sizes[seed]:.2f} (goal <= 1.0): "
              f"{'met' if sizes['mv2_cpm_fp32'] <= sizes[seed] else 'MISSED'}")
        print(f"  int8 latency ratio {ratio('mv2_cpm_int8'):.2f} (goal <= 0.5): "
              f"{'met' if ratio('mv2_cpm_int8') <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
