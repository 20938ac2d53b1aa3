"""The web demo in a real headless Chromium: still-image mode against Python LiteRT, camera mode on Chromium's
fake camera, the messages for bad input, the command line, and the page as publish uploads it.

Screenshots of each mode are kept in test-artifacts/web/ (gitignored).
"""

import functools
import gzip
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.demo import serving
from pose import web_demo
from pose.data import keypoints, synthetic
from pose.evaluation import photos as web_reference  # the page's Python twin
from pose.models import contract
from tests.browser import chromium
from tests.conftest import ANCHORS, REPO

AIC = keypoints.preset("aic")
COCO = keypoints.preset("coco")

ARTIFACTS = REPO / "test-artifacts" / "web"
NUM_PICTURES = 4
OUR_INPUT_SIZE = 64
# Tolerance of the issue: the page's keypoints equal Python's within 1 pixel at the model's input scale.
TOLERANCE_INPUT_PIXELS = 1.0

DONE = "window.poseDemo && ['done', 'error'].includes(window.poseDemo.phase)"


@pytest.fixture(scope="module")
def page():
    return web_demo.build()


@pytest.fixture(scope="module")
def browser(page):
    with chromium() as started:
        yield started


def person_crops(count: int, seed: int = 11) -> list[np.ndarray]:
    """The first person of `count` rendered validation images, cut out with a margin (various aspect ratios)."""
    crops = []
    for index in range(count):
        image, persons = synthetic.render_image(np.random.default_rng([seed, 1, index]))
        x1, y1, x2, y2 = persons[0]["box"]
        cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * (x2 - x1), 0.58 * (y2 - y1)
        height, width = image.shape[:2]
        crops.append(
            image[
                max(0, int(cy - half_h)) : min(height, int(cy + half_h)),
                max(0, int(cx - half_w)) : min(width, int(cx + half_w)),
            ]
        )
    return crops


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """PNG person crops: lossless, so the browser and cv2 decode the same pixels."""
    folder = tmp_path_factory.mktemp("pictures")
    for index, crop in enumerate(person_crops(NUM_PICTURES)):
        cv2.imwrite(str(folder / f"person_{index}.png"), crop)
    return folder


@pytest.fixture(scope="module")
def our_model(tmp_path_factory) -> Path:
    """A small net through the real freeze and tflite steps: an fp32 .tflite of ours with the step's .json,
    of COCO's 17 keypoints (the seed's files are AIC's 14): the page takes names and skeleton from it."""
    from components.freeze import freeze
    from components.tflite import convert_to_tflite
    from tests.tiny_models import build_tiny_pose_model, save_as_train_output

    folder = tmp_path_factory.mktemp("ours")
    trained = save_as_train_output(
        build_tiny_pose_model(OUR_INPUT_SIZE, COCO.num_keypoints),
        folder / "train",
        keypoint_set=COCO,
    )
    freeze(str(trained), str(folder / "frozen"))
    convert_to_tflite(str(folder / "frozen"), str(folder / "tflite"), variants=["fp32"])
    [model] = (folder / "tflite").glob("*.tflite")
    return model


def models(our_model) -> dict:
    return {
        "seed-cpm": ANCHORS / "pefm-cpm-192.tflite",
        "seed-hourglass": ANCHORS / "pefm-hourglass-192.tflite",
        "ours": our_model,
    }


def page_result(browser, url: str) -> dict:
    browser.open(url)
    browser.wait_for(DONE)
    state = browser.evaluate("window.poseDemo")
    assert state["error"] is None, state["error"]
    return json.loads(browser.evaluate("document.getElementById('keypoints').textContent"))


@pytest.mark.parametrize("name", ["seed-cpm", "seed-hourglass", "ours"])
def test_still_image_keypoints_equal_python_litert(name, browser, pictures, our_model):
    model = models(our_model)[name]
    metadata = web_demo.model_metadata(model)
    worst = 0.0
    with serving(str(model), pictures=str(pictures)) as url:
        for index, picture in enumerate(sorted(pictures.glob("*.png"))):
            shown = page_result(browser, f"{url}&image=pictures/{picture.name}&accelerator=wasm")
            if index == 0:
                browser.screenshot(ARTIFACTS / f"still-image-{name}.png")
            expected = web_reference.reference_keypoints(str(model), str(picture), metadata)
            shown_set = COCO if name == "ours" else AIC
            assert shown["order"] == list(shown_set.names)
            page_points, python_points = (
                np.array(shown["keypoints"]),
                np.array(expected["keypoints"]),
            )
            assert page_points.shape == (shown_set.num_keypoints, 3)
            in_input_pixels = np.abs(page_points[:, :2] - python_points[:, :2]) / expected["scale"]
            worst = max(worst, float(in_input_pixels.max()))
            assert in_input_pixels.max() <= TOLERANCE_INPUT_PIXELS, (
                f"{picture.name}: page and Python differ by {in_input_pixels.max():.2f} input pixels "
                f"at {shown_set.names[int(in_input_pixels.max(axis=1).argmax())]}"
            )
            np.testing.assert_allclose(page_points[:, 2], python_points[:, 2], atol=1e-3)
    print(f"{name}: largest page-Python difference {worst:.5f} input pixels")


def test_a_picture_with_exif_orientation_is_read_as_stored_as_python_reads_it(
    browser, tmp_path, our_model
):
    """One EXIF rule everywhere: a JPEG whose EXIF says "turn by 90 degrees" (orientation 6) is run
    on its stored pixels by the page, as by every step in Python (annotations are of the stored
    pixels): the page's keypoints are Python's, in the stored picture's frame."""
    from tests.test_hostile_annotations import with_orientation

    crop = person_crops(1, seed=31)[0]
    assert crop.shape[0] != crop.shape[1]  # a turn would show in the frame's size
    stored = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "turned.jpg").write_bytes(with_orientation(stored, 6))
    metadata = web_demo.model_metadata(our_model)
    with serving(str(our_model), pictures=str(folder)) as url:
        shown = page_result(browser, f"{url}&image=pictures/turned.jpg&accelerator=wasm")
        size = browser.evaluate(
            "[document.getElementById('view').width, document.getElementById('view').height]"
        )
    assert size == [crop.shape[1], crop.shape[0]]  # the stored frame, not the turned one
    expected = web_reference.reference_keypoints(
        str(our_model), str(folder / "turned.jpg"), metadata
    )
    difference = np.abs(
        np.array(shown["keypoints"])[:, :2] - np.array(expected["keypoints"])[:, :2]
    )
    assert difference.max() / expected["scale"] <= TOLERANCE_INPUT_PIXELS


def page_transfers(transfers: list[dict]) -> list[dict]:
    """The page's and runtime's responses: not the model (model/, *.tflite, its .json) nor the pictures."""
    return [
        t
        for t in transfers
        if not any(
            part in t["url"].split("?")[0]
            for part in ("/model/", "/pictures/", ".tflite", ".json", ".png")
        )
    ]


def test_the_demo_server_sends_the_runtime_gzipped_and_the_page_still_works(browser, pictures):
    """What a browser transfers for the page and runtime, against what it unpacks; one WASM build is loaded."""
    model, picture = ANCHORS / "pefm-cpm-192.tflite", sorted(pictures.glob("*.png"))[0]
    with serving(str(model), pictures=str(pictures)) as url:
        browser.record_network()
        shown = page_result(browser, f"{url}&image=pictures/{picture.name}&accelerator=wasm")
        transfers = page_transfers(browser.transfers())
    expected = web_reference.reference_keypoints(str(model), str(picture))
    difference = np.abs(
        np.array(shown["keypoints"])[:, :2] - np.array(expected["keypoints"])[:, :2]
    )
    assert difference.max() / expected["scale"] <= TOLERANCE_INPUT_PIXELS
    build = web_demo.build()
    [wasm] = [
        t for t in transfers if t["url"].endswith(".wasm")
    ]  # LiteRT.js fetches one of the two builds
    assert wasm["url"].endswith("/wasm/litert_wasm_internal.wasm")  # Chromium has relaxed SIMD
    raw = (build / "wasm" / "litert_wasm_internal.wasm").stat().st_size
    assert (
        wasm["encoding"] == "gzip" and wasm["body_bytes"] == raw and wasm["wire_bytes"] < raw / 2
    ), wasm
    for transfer in transfers:
        assert transfer["status"] == 200, transfer
        assert transfer["encoding"] == "gzip", (
            transfer
        )  # every page file the page loads is one sent gzipped
    wire, unpacked = (
        sum(t["wire_bytes"] for t in transfers),
        sum(t["body_bytes"] for t in transfers),
    )
    print(
        f"page and runtime: {len(transfers)} files, {wire} bytes on the wire, {unpacked} unpacked"
    )
    assert wire < unpacked / 2


def write_y4m(
    path: Path, frames: list[np.ndarray], width: int = 640, height: int = 480, repeat: int = 15
) -> Path:
    """A YUV4MPEG2 4:2:0 clip (the format Chromium's fake camera reads): each BGR frame letterboxed, `repeat` times."""
    with open(path, "wb") as clip:
        clip.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            scale = min(width / frame.shape[1], height / frame.shape[0])
            resized = cv2.resize(
                frame,
                (int(frame.shape[1] * scale), int(frame.shape[0] * scale)),
                interpolation=cv2.INTER_AREA,
            )
            canvas = np.zeros((height, width, 3), np.uint8)
            top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
            canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
            planes = cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes()
            for _ in range(repeat):
                clip.write(b"FRAME\n" + planes)
    return path


def test_camera_mode_on_chromiums_fake_camera(page, tmp_path):
    clip = write_y4m(tmp_path / "clip.y4m", person_crops(3, seed=23))
    with (
        serving(str(ANCHORS / "pefm-cpm-192.tflite")) as url,
        chromium(
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}",
        ) as browser,
    ):
        browser.open(f"{url}&accelerator=wasm")
        browser.wait_for(
            "window.poseDemo && (window.poseDemo.frames >= 5 || window.poseDemo.phase === 'error')"
        )
        state = browser.evaluate("window.poseDemo")
        assert state["error"] is None, state["error"]
        browser.screenshot(ARTIFACTS / "camera.png")
        assert state["mode"] == "camera" and state["fps"] > 0 and state["modelMs"] > 0
        shown = json.loads(browser.evaluate("document.getElementById('keypoints').textContent"))
        points = np.array(shown["keypoints"])
        assert shown["order"] == list(AIC.names) and points.shape == (
            AIC.num_keypoints,
            3,
        )
        # In the video's pixels, inside the centre square the model saw (480 x 480 of the 640 x 480 clip).
        assert (points[:, 0] >= 80 - 1).all() and (points[:, 0] <= 560).all()
        assert (points[:, 1] >= -1).all() and (points[:, 1] <= 480).all()
        stats = browser.evaluate("document.getElementById('stats').textContent")
        assert "frames/s" in stats and "model" in stats
        # The smoothing switch: off and on again, frames keep coming.
        frames = state["frames"]
        browser.evaluate("document.getElementById('smoothing').click()")
        browser.wait_for(f"window.poseDemo.frames >= {frames + 3}")
        assert browser.evaluate("document.getElementById('smoothing').checked") is False


def shown_message(browser, url: str) -> str:
    browser.open(url)
    browser.wait_for("window.poseDemo && window.poseDemo.phase === 'error'")
    assert browser.evaluate("document.getElementById('message').hidden") is False
    return browser.evaluate("document.getElementById('message').textContent")


def test_a_model_url_that_fails_says_so(browser):
    with serving(str(ANCHORS / "pefm-cpm-192.tflite")) as url:
        base = url.split("?")[0]
        message = shown_message(browser, f"{base}?model=model/missing.tflite")
        assert "Could not load the model description (.json)" in message and "HTTP 404" in message
        assert "missing.json" in message
        message = shown_message(browser, f"{base}")
        assert "No model given" in message


def test_a_json_without_contract_says_what_is_missing(browser, our_model, tmp_path):
    old = tmp_path / "old_fp32.tflite"
    shutil.copyfile(our_model, old)
    metadata = json.loads(our_model.with_suffix(".json").read_text())
    del metadata["contract"]
    old.with_suffix(".json").write_text(json.dumps(metadata))
    with serving(str(old)) as url:
        message = shown_message(browser, f"{url}&image=nothing.png")
    assert 'has no "contract"' in message and "old_fp32.json" in message
    browser.screenshot(ARTIFACTS / "message-no-contract.png")
    # The server served the .json as it is: no contract invented for a model that has a .json.
    assert "contract" not in web_demo.model_metadata(old)


def test_a_refused_camera_offers_still_image_mode(page):
    camera = (
        "--use-fake-device-for-media-stream",
    )  # a camera exists; its permission is denied below
    with serving(str(ANCHORS / "pefm-cpm-192.tflite")) as url, chromium(*camera) as browser:
        browser.call("Browser.setPermission", permission={"name": "camera"}, setting="denied")
        message = shown_message(browser, f"{url}&accelerator=wasm")
        assert (
            "Camera access was refused (NotAllowedError" in message
            and "Still-image mode" in message
        )
        assert browser.evaluate("document.getElementById('still-image-offer').hidden") is False
        browser.screenshot(ARTIFACTS / "camera-refused.png")


def test_no_camera_at_all_offers_still_image_mode_too(browser):
    with serving(str(ANCHORS / "pefm-cpm-192.tflite")) as url:
        message = shown_message(browser, f"{url}&accelerator=wasm")
    assert "No camera was found (NotFoundError" in message and "Still-image mode" in message
    assert browser.evaluate("document.getElementById('still-image-offer').hidden") is False


def test_demo_command_prints_the_url_and_serves_the_seed_contract(page):
    import urllib.request

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "demo",
            "--model",
            str(ANCHORS / "pefm-cpm-192.tflite"),
            "--port",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(
            "?model=model/pefm-cpm-192.tflite"
        ), url
        base = url.split("index.html")[0]
        with urllib.request.urlopen(base + "model/pefm-cpm-192.json", timeout=10) as response:
            metadata = json.load(response)
        assert metadata["contract"] == contract.describe("seed")
        assert (metadata["input_size"], metadata["output_stride"]) == (192, 2)
        raw = (web_demo.build() / "wasm" / "litert_wasm_internal.wasm").read_bytes()
        with urllib.request.urlopen(
            base + "wasm/litert_wasm_internal.wasm", timeout=10
        ) as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert (
                response.headers["Content-Encoding"] is None and response.read() == raw
            )  # gzip not asked for
        gzip_asked = urllib.request.Request(
            base + "wasm/litert_wasm_internal.wasm", headers={"Accept-Encoding": "br, gzip;q=0.8"}
        )
        with urllib.request.urlopen(gzip_asked, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.headers["Content-Encoding"] == "gzip"
            wire = response.read()
        assert len(wire) < len(raw) / 2 and gzip.decompress(wire) == raw
        refused = urllib.request.Request(
            base + "app.js", headers={"Accept-Encoding": "gzip;q=0, identity"}
        )
        with urllib.request.urlopen(refused, timeout=10) as response:
            assert response.headers["Content-Encoding"] is None
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_demo_command_with_a_missing_model_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--model", str(tmp_path / "nope.tflite")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"--model {tmp_path / 'nope.tflite'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_published_page_works_from_a_plain_static_host(browser, our_model, pictures, tmp_path):
    """What publish uploads, served by a static file server that knows nothing of models: the demo runs."""
    published = tmp_path / "bucket" / "pose" / "v1"
    published.mkdir(parents=True)
    for source in (our_model, our_model.with_suffix(".json")):
        shutil.copyfile(source, published / source.name)
    for source, name in web_demo.page_files():
        (published / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, published / name)
    picture = sorted(pictures.glob("*.png"))[0]
    shutil.copyfile(picture, published / picture.name)

    class StaticHost(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(StaticHost, directory=str(tmp_path / "bucket"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        link = web_demo.published_url(our_model.name)
        shown = page_result(
            browser,
            f"http://127.0.0.1:{server.server_address[1]}/pose/v1/{link}"
            f"&image=../{picture.name}&accelerator=wasm",
        )
    finally:
        server.shutdown()
        server.server_close()
    expected = web_reference.reference_keypoints(str(our_model), str(picture))
    difference = np.abs(
        np.array(shown["keypoints"])[:, :2] - np.array(expected["keypoints"])[:, :2]
    )
    assert difference.max() / expected["scale"] <= TOLERANCE_INPUT_PIXELS


def test_one_euro_filter_steadies_a_still_joint_and_follows_a_moving_one(browser):
    """The smoothing switch's filter (web/pose.js), run in the page: less shake, little lag."""
    with serving(str(ANCHORS / "pefm-cpm-192.tflite")) as url:
        browser.open(url.split("?")[0])
        figures = browser.evaluate("""import('./pose.js').then(({OneEuroFilter}) => {
            let seed = 1;
            const noise = () => { seed = (seed * 16807) % 2147483647; return (seed / 2147483647 - 0.5) * 6; };
            const still = new OneEuroFilter(), moving = new OneEuroFilter();
            let rawShake = 0, smoothShake = 0, previousRaw = 100, previousSmooth = 100, lag = 0;
            for (let frame = 0; frame < 300; frame++) {
              const t = frame / 30, raw = 100 + noise(), smooth = still.filter(raw, t);
              if (frame > 30) {
                rawShake += Math.abs(raw - previousRaw);
                smoothShake += Math.abs(smooth - previousSmooth);
              }
              previousRaw = raw; previousSmooth = smooth;
              const target = 300 * t;  // 300 pixels a second across the picture
              lag = Math.abs(moving.filter(target, t) - target);
            }
            return {rawShake, smoothShake, lag};
        })""")
    print(
        f"one-euro: shake {figures['rawShake']:.0f} -> {figures['smoothShake']:.0f} px, lag {figures['lag']:.1f} px"
    )
    assert figures["smoothShake"] < figures["rawShake"] / 3, figures
    assert figures["lag"] < 30, figures  # a tenth of a second of movement at most
