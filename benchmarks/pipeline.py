"""The whole pipeline's figures for BENCHMARKS.md, from the summary.json a `python -m pipeline run` wrote.

    python3 dev.py run                                  # the run being measured
    .venv/bin/python benchmarks/pipeline.py             # its time per step and headline figures, as Markdown
    .venv/bin/python benchmarks/pipeline.py runs/pose-estimation-for-mobile-<timestamp>/summary.json

Goal: the README's main command finishes in <= 20 minutes on the 2-core dev machine with PCKh@0.5 >= 0.85
on the synthetic valid split (every variant is shown; the goal is met when the fp32 model meets it).
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 20 * 60
GOAL_PCKH = 0.85


def latest_summary(root: Path) -> Path:
    summaries = sorted(root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        raise SystemExit(f"no summary.json under {root}: run `python3 dev.py run` first")
    return summaries[-1]


def markdown(summary: dict) -> str:
    lines = ["| step | tasks | wall s | task s |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {s['step']} | {s['tasks']} | {s['wall_s']:.1f} | {s['task_s']:.1f} |"
        for s in summary["steps"]
    ]
    lines.append(
        f"| **whole run** | | **{summary['seconds']:.1f}** ({summary['seconds'] / 60:.1f} min) | |"
    )
    headline = summary["headline"]
    lines += [
        "",
        f"Valid split: {headline['people']} people. Latency: LiteRT, 1 thread, median.",
        "",
        "| model | PCKh@0.5 | OKS AP | latency ms | vs seed | size MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in headline["models"].items():
        ratio = f"x{m['latency_vs_seed']:.2f}" if m["latency_vs_seed"] else "n/a"
        lines.append(
            f"| {name} | {100 * m['pckh']:.1f} | {m['ap']:.3f} | {m['latency_ms']:.2f} | {ratio} | "
            f"{m['size_mb']:.2f} |"
        )
    for name, m in headline["seed"].items():
        lines.append(f"| seed {name} | | | {m['latency_ms']:.2f} | x1.00 | {m['size_mb']:.2f} |")
    fp32 = [m["pckh"] for name, m in headline["models"].items() if name.endswith("_fp32")]
    met_time = summary["seconds"] <= GOAL_SECONDS
    met_pckh = bool(fp32) and fp32[0] >= GOAL_PCKH
    lines += [
        "",
        f"Goal <= {GOAL_SECONDS // 60} min: {'met' if met_time else 'NOT met'}; "
        f"PCKh@0.5 (fp32) >= {GOAL_PCKH}: {'met' if met_pckh else 'NOT met'}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "summary", nargs="?", help="a run's summary.json (default: the latest under runs/)"
    )
    args = parser.parse_args(argv)
    path = Path(args.summary) if args.summary else latest_summary(REPO / "runs")
    print(f"<!-- {path} -->")
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
