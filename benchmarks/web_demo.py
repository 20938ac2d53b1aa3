"""The web demo's goals: in-browser latency (LiteRT.js, WASM, 1 thread) of a .tflite against LiteRT Python on
this machine in the same run, and the weight of the page and runtime without the model.

    .venv/bin/python benchmarks/web_demo.py [--model /work/shared/anchors/pefm-cpm-192.tflite] [--runs 50]

Latency: Python is pose.tflite_runtime.latency (one invoke, XNNPACK, 1 thread); the browser is the page's
?benchmark=N mode in Debian's headless Chromium (tests/browser.py): model.run alone (median_ms), and a whole
model step of the page with the input tensor's creation and the heatmaps' read-back (frame_median_ms), after
5 warm-up runs. Python runs before and after the browser, so a
change of load during the run shows. Size: the files of web/build/ a browser loads (the page, LiteRT.js and
one of its two single-thread WASM builds), raw and gzip -9 (what a host that compresses sends).
"""
import argparse
import datetime
import gzip
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.demo import serving  # noqa: E402
from pose import tflite_runtime, web_demo  # noqa: E402
from tests.browser import chromium  # noqa: E402

DEFAULT_MODEL = "/work/shared/anchors/pefm-cpm-192.tflite"
# The two single-thread builds LiteRT.js chooses between; a browser loads one of them.
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_compat_internal")


def browser_latency(model: str, runs: int) -> dict:
    with serving(model) as url, chromium() as browser:
        browser.open(f"{url}&benchmark={runs}&accelerator=wasm")
        browser.wait_for("window.poseDemo && ['done', 'error'].includes(window.poseDemo.phase)", timeout=600)
        state = browser.evaluate("window.poseDemo")
        if state["error"]:
            raise RuntimeError(state["error"])
        return {**state["benchmark"], "browser": browser.call("Browser.getVersion")["product"]}


def page_weight() -> dict:
    """Bytes of the built page a browser loads, with the larger of the two WASM builds (worst case)."""
    build = web_demo.build()
    files = [p for p in build.rglob("*") if p.is_file()]
    weights = {}
    for loaded in WASM_BUILDS:
        unused = [name for name in WASM_BUILDS if name != loaded]
        chosen = [p for p in files if not any(p.name.startswith(name + ".") for name in unused)]
        weights[loaded] = {"files": len(chosen), "bytes": sum(p.stat().st_size for p in chosen),
                           "gzip_bytes": sum(len(gzip.compress(p.read_bytes(), 9)) for p in chosen)}
    worst = max(weights.values(), key=lambda w: w["bytes"])
    return {"per_wasm_build": weights, "loaded_bytes": worst["bytes"], "loaded_gzip_bytes": worst["gzip_bytes"],
            "build_folder_bytes": sum(p.stat().st_size for p in files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="an fp32 .tflite (default: the seed's released CPM)")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    load_before = os.getloadavg()
    python_before = tflite_runtime.latency(args.model, num_threads=1, runs=args.runs)
    browser = browser_latency(args.model, args.runs)
    python_after = tflite_runtime.latency(args.model, num_threads=1, runs=args.runs)
    python_ms = min(python_before["median_ms"], python_after["median_ms"])
    weight = page_weight()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "model": args.model,
        "python_litert_1_thread_ms": {"before": python_before, "after": python_after},
        "browser_wasm_1_thread_ms": browser,
        "browser_vs_python": browser["median_ms"] / python_ms,
        "goal_latency_met": browser["median_ms"] <= 2 * python_ms,
        "page_weight": weight,
        "goal_size_met_raw": weight["loaded_bytes"] <= 5_000_000,
        "goal_size_met_gzip": weight["loaded_gzip_bytes"] <= 5_000_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
