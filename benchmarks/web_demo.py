"""The web demo's goals: in-browser latency (LiteRT.js, WASM, 1 thread) of a .tflite against LiteRT Python on
this machine in the same run, and the weight of the page and runtime without the model.

    .venv/bin/python benchmarks/web_demo.py [--model anchors/pefm-cpm-192.tflite] [--runs 50]

Latency: Python is pose.models.tflite_runtime.latency (one invoke, XNNPACK, 1 thread); the browser is the page's
?benchmark=N mode in Debian's headless Chromium (tests/browser.py): model.run alone (median_ms), and a whole
model step of the page with the input tensor's creation and the heatmaps' read-back (frame_median_ms), after
5 warm-up runs. Python runs before and after the browser, so a
change of load during the run shows. Size: what the same Chromium transferred for the page and runtime (not
the model nor its .json) from `python -m pipeline demo`'s server, which sends them gzip-encoded (DevTools
Network: encodedDataLength on the wire, decoded bytes unpacked); and the files of web/build/ a browser can load
(the page, LiteRT.js and one of its two single-thread WASM builds), as they are and as their gzip copies.
"""

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.demo import serving
from pose import web_demo
from pose.models import tflite_runtime
from tests.browser import chromium

DEFAULT_MODEL = str(Path(__file__).resolve().parent.parent / "anchors" / "pefm-cpm-192.tflite")
# The two single-thread builds LiteRT.js chooses between; a browser loads one of them.
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_compat_internal")


def browser_run(model: str, runs: int) -> tuple[dict, dict]:
    """(the page's latency figures, what it transferred for the page and runtime) in one Chromium."""
    with serving(model) as url, chromium() as browser:
        browser.record_network()
        browser.open(f"{url}&benchmark={runs}&accelerator=wasm")
        browser.wait_for(
            "window.poseDemo && ['done', 'error'].includes(window.poseDemo.phase)", timeout=600
        )
        state = browser.evaluate("window.poseDemo")
        if state["error"]:
            raise RuntimeError(state["error"])
        model_name = Path(model).stem
        page = [t for t in browser.transfers() if model_name not in t["url"].split("?")[0]]
        transferred = {
            "files": sorted(t["url"].split("?")[0].split("/", 3)[-1] for t in page),
            "gzip_encoded_files": sum(t["encoding"] == "gzip" for t in page),
            "wire_bytes": sum(t["wire_bytes"] for t in page),
            "unpacked_bytes": sum(t["body_bytes"] for t in page),
        }
        return {
            **state["benchmark"],
            "browser": browser.call("Browser.getVersion")["product"],
        }, transferred


def page_weight() -> dict:
    """Bytes of the built page a browser can load, with each of the two WASM builds: as they are, and as sent
    gzipped (the build's gzip copies; a file without one goes as it is)."""
    files = [source for source, _ in web_demo.page_files()]
    weights = {}
    for loaded in WASM_BUILDS:
        unused = [name for name in WASM_BUILDS if name != loaded]
        chosen = [p for p in files if not any(p.name.startswith(name + ".") for name in unused)]
        weights[loaded] = {
            "files": len(chosen),
            "bytes": sum(p.stat().st_size for p in chosen),
            "gzip_bytes": sum((web_demo.gzip_copy(p) or p).stat().st_size for p in chosen),
        }
    worst = max(weights.values(), key=lambda w: w["bytes"])
    return {
        "per_wasm_build": weights,
        "loaded_bytes": worst["bytes"],
        "loaded_gzip_bytes": worst["gzip_bytes"],
        "build_folder_bytes": sum(p.stat().st_size for p in files),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="an fp32 .tflite (default: the seed's released CPM)"
    )
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    load_before = os.getloadavg()
    python_before = tflite_runtime.latency(args.model, num_threads=1, runs=args.runs)
    browser, transferred = browser_run(args.model, args.runs)
    python_after = tflite_runtime.latency(args.model, num_threads=1, runs=args.runs)
    python_ms = min(python_before["median_ms"], python_after["median_ms"])
    weight = page_weight()
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "model": args.model,
        "python_litert_1_thread_ms": {"before": python_before, "after": python_after},
        "browser_wasm_1_thread_ms": browser,
        "browser_vs_python": browser["median_ms"] / python_ms,
        "goal_latency_met": browser["median_ms"] <= 2 * python_ms,
        "page_transferred": transferred,
        "page_weight": weight,
        # Judged on what the browser transfers (a phone's download); the unpacked figure is reported beside it.
        "goal_size_met_transferred": transferred["wire_bytes"] <= 5_000_000,
        "size_unpacked_under_5mb": transferred["unpacked_bytes"] <= 5_000_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
