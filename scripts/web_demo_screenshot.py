#!/usr/bin/env python3
"""Screenshots the web demo's still-image mode on one real photograph (docs/web-demo.jpg).

    .venv/bin/python scripts/web_demo_screenshot.py \
        --model runs/<run>/tflite-op/tflite_models/mv2_cpm_fp16.tflite \
        --picture photos/cameraman.jpg --output docs/web-demo.jpg

Serves the model as `python -m pipeline demo --pictures photos` does (pipeline.demo.serving), opens
`index.html?model=...&image=pictures/<name>&accelerator=wasm` in headless Chromium
(tests/browser.py; install it with `bash web/install_chromium.sh`), waits until the page has drawn
the keypoints, and writes the screenshot as JPEG. Prints the page's keypoints beside Python LiteRT's
(pose.evaluation.photos.reference_keypoints).
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DONE = "window.poseDemo && ['done', 'error'].includes(window.poseDemo.phase)"


def main() -> int:
    import cv2
    import numpy as np

    from pipeline.demo import serving
    from pose.evaluation import photos
    from tests.browser import chromium

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a .tflite (its .json beside it, or a seed release)"
    )
    parser.add_argument(
        "--picture", required=True, help="a picture in a folder served at pictures/"
    )
    parser.add_argument("--output", required=True, help="the screenshot (.jpg)")
    args = parser.parse_args()
    picture = Path(args.picture)
    with serving(args.model, pictures=str(picture.parent)) as url, chromium() as browser:
        browser.open(f"{url}&image=pictures/{picture.name}&accelerator=wasm")
        browser.wait_for(DONE)
        state = browser.evaluate("window.poseDemo")
        if state["error"]:
            print(f"web_demo_screenshot: the page failed: {state['error']}", file=sys.stderr)
            return 1
        shown = json.loads(browser.evaluate("document.getElementById('keypoints').textContent"))
        png = Path(args.output).with_suffix(".png")
        browser.screenshot(png)
    image = cv2.imread(str(png))
    png.unlink()
    cv2.imwrite(args.output, image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    expected = photos.reference_keypoints(args.model, str(picture))
    difference = np.abs(
        np.array(shown["keypoints"])[:, :2] - np.array(expected["keypoints"])[:, :2]
    )
    print(
        f"wrote {args.output}; page vs Python LiteRT: largest difference "
        f"{difference.max() / expected['scale']:.3f} input pixels"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
