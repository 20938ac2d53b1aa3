"""publish: a real evaluation of real .tflite files, uploaded to a real fake-gcs-server and a real
SeaweedFS (S3) on 127.0.0.1."""

import gzip
import hashlib
import json
import os

import pytest

from components.publish import MANIFEST, MODEL_CARD, PublishError, publish
from pose import web_demo
from pose.data import keypoints, synthetic
from pose.evaluation import photos as web_reference  # the page's Python twin
from pose.models import contract
from tests.gcs import fake_gcs, make_bucket
from tests.tiny_models import build_tiny_pose_model

INPUT_SIZE = 64


@pytest.fixture(scope="module")
def evaluated(valid_shards, tmp_path_factory):
    """Two variants of a tiny model in the tflite step's layout, evaluated by the real evaluate step."""
    import tensorflow as tf

    from components.evaluate import evaluate

    models = tmp_path_factory.mktemp("publish") / "tflite"
    models.mkdir()
    import keras

    # Batch 1, as the freeze step fixes it: LiteRT.js (the web demo) runs no model with a batch of -1.
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), batch_size=1, name="image")
    keras_model = keras.Model(image, build_tiny_pose_model(INPUT_SIZE)(image))
    for variant in ("fp32", "fp16"):
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        if variant == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        (models / f"mv2_cpm_{variant}.tflite").write_bytes(converter.convert())
        (models / f"mv2_cpm_{variant}.json").write_text(
            json.dumps(
                {
                    "model": "mv2_cpm",
                    "variant": variant,
                    "input_size": INPUT_SIZE,
                    "output_size": INPUT_SIZE // 2,
                    "output_stride": 2,
                    "num_keypoints": 14,
                    "input_name": "image",
                    "output_name": "stage_1_out",
                    "contract": contract.describe(contract.SEED),
                    "keypoint_set": keypoints.preset("aic").to_json(),
                }
            )
        )  # what the tflite step writes by default
    evaluation = models.parent / "evaluation"
    evaluate(str(models), [str(valid_shards)], str(evaluation), latency_runs=1, gallery_size=1)
    return models, evaluation


@pytest.fixture()
def bucket():
    with fake_gcs():
        yield make_bucket("models")


def test_publishes_the_variant_its_metadata_report_results_and_card(
    evaluated, object_store, tmp_path
):
    models, evaluation = evaluated
    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/pose/v1"
    manifest = publish(
        str(models),
        str(evaluation / "report.html"),
        str(evaluation),
        base + "/",
        "fp16",
        staging_dir=str(tmp_path / "staged"),
    )

    names = {
        "mv2_cpm_fp16.tflite",
        "mv2_cpm_fp16.json",
        "report.html",
        "results.json",
        MODEL_CARD,
        MANIFEST,
        *(name for _, name in web_demo.page_files()),
    }
    assert set(object_store.names(base)) == names
    assert manifest["uris"][-1] == f"{base}/{MANIFEST}"  # the completion marker goes last
    tflite = object_store.get(f"{base}/mv2_cpm_fp16.tflite")
    assert tflite == (models / "mv2_cpm_fp16.tflite").read_bytes()
    uploaded_manifest = json.loads(object_store.get(f"{base}/{MANIFEST}"))
    assert (
        uploaded_manifest["files"]["mv2_cpm_fp16.tflite"]["sha256"]
        == hashlib.sha256(tflite).hexdigest()
    )
    assert (manifest["model"], manifest["variant"]) == ("mv2_cpm_fp16", "fp16")
    assert sorted(
        p.relative_to(tmp_path / "staged").as_posix()
        for p in (tmp_path / "staged").rglob("*")
        if p.is_file()
    ) == sorted(names)

    card = object_store.get(f"{base}/{MODEL_CARD}").decode()
    results = json.loads((evaluation / "results.json").read_text())
    pckh = 100 * results["models"]["mv2_cpm_fp16"]["pckh"]
    for section in ("## Model", "## Data", "## Figures", "## Intended use", "## Limitations"):
        assert section in card
    assert f"| **mv2_cpm_fp16** | {pckh:.1f} |" in card and "| mv2_cpm_fp32 |" in card
    assert f"{results['settings']['num_people']} people" in card
    assert (
        "Contract: `seed` (input pixels `bgr_0_255`" in card
    )  # the fixture's .json names the default export's
    assert "in channel order: head_top, neck, right_shoulder, right_elbow" in card
    # issue 22: the card shows how far each variant agrees with the seed's CPM on the real photographs
    photographs = results["photos"]
    assert "## Real photographs" in card
    for name, agreement in photographs["agreement"].items():
        found = photographs["agreement_found"][name]
        shown = f"**{name}**" if name == "mv2_cpm_fp16" else name
        assert f"| {shown} | {agreement:.3f} | {found:.3f} |" in card
    assert all(picture["file"] in card for picture in photographs["pictures"])
    # The web demo beside the model, linked from the card, with the types a static host must serve it with.
    assert f"({web_demo.published_url('mv2_cpm_fp16.tflite')})" in card
    assert object_store.headers(f"{base}/demo/wasm/litert_wasm_internal.wasm") == (
        "application/wasm",
        "gzip",
    )
    assert object_store.headers(f"{base}/demo/app.js")[0] == "text/javascript"
    assert object_store.headers(f"{base}/demo/index.html")[0] == "text/html"
    # The runtime is stored gzipped (Content-Encoding: gzip); readers get the bytes the manifest vouches for.
    stored = object_store.get(f"{base}/demo/wasm/litert_wasm_internal.wasm")
    raw = (web_demo.build() / "wasm" / "litert_wasm_internal.wasm").read_bytes()
    assert len(stored) < len(raw) / 2 and gzip.decompress(stored) == raw
    assert (
        uploaded_manifest["files"]["demo/wasm/litert_wasm_internal.wasm"]["sha256"]
        == hashlib.sha256(raw).hexdigest()
    )
    assert object_store.headers(f"{base}/mv2_cpm_fp16.tflite")[1] is None  # the model goes as it is


def test_best_picks_the_highest_pckh(evaluated, tmp_path):
    models, evaluation = evaluated
    results = json.loads((evaluation / "results.json").read_text())
    best = max(results["models"], key=lambda name: results["models"][name]["pckh"])
    manifest = publish(str(models), str(evaluation), str(evaluation), str(tmp_path / "out"), "best")
    assert (
        manifest["model"] == best == json.loads((tmp_path / "out" / MANIFEST).read_text())["model"]
    )


def test_a_card_without_photographs_says_real_pictures_were_not_measured(evaluated):
    from components.publish import model_card

    _, evaluation = evaluated
    results = json.loads((evaluation / "results.json").read_text())
    card = model_card({**results, "photos": None}, "mv2_cpm_fp16", "gs://models/pose")
    assert "## Real photographs\n\nNot measured" in card


def test_an_unknown_variant_names_the_ones_there_are(evaluated, tmp_path):
    models, evaluation = evaluated
    with pytest.raises(PublishError, match=r"variant 'int8': .* has fp16, fp32"):
        publish(str(models), str(evaluation), str(evaluation), str(tmp_path / "out"), "int8")
    assert not (tmp_path / "out").exists()


def test_a_missing_bucket_is_a_clear_error(evaluated, object_store):
    models, evaluation = evaluated
    destination = f"{object_store.scheme}://no-such-bucket/pose"
    with pytest.raises(
        PublishError, match=f"{destination}: upload failed.*bucket 'no-such-bucket' does not exist"
    ):
        publish(str(models), str(evaluation), str(evaluation), destination, "fp32")


def test_results_that_are_not_evaluate_output_are_refused(evaluated, tmp_path):
    models, evaluation = evaluated
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(PublishError, match=r"results.json: no 'models'"):
        publish(
            str(models),
            str(evaluation),
            str(tmp_path / "results.json"),
            str(tmp_path / "out"),
            "fp32",
        )


def test_the_published_demo_runs_from_the_bucket_with_the_runtime_gzipped(
    evaluated, bucket, tmp_path
):
    """Chromium opens the demo on the bucket itself (fake-gcs-server's path-style host, as a static host of the
    bucket serves it): the runtime comes gzip-encoded, is unpacked, and the page shows the model's keypoints."""
    import cv2
    import numpy as np

    from tests.browser import chromium
    from tests.gcs import upload_bytes

    models, evaluation = evaluated
    publish(str(models), str(evaluation), str(evaluation), "gs://models/pose/v1", "fp32")
    picture, _ = synthetic.render_image(np.random.default_rng(5))
    cv2.imwrite(str(tmp_path / "picture.png"), picture)
    upload_bytes("gs://models/pose/v1/picture.png", (tmp_path / "picture.png").read_bytes())
    port = os.environ["STORAGE_EMULATOR_HOST"].rsplit(":", 1)[1]
    # fake-gcs-server answers path-style requests (/bucket/object) addressed to storage.googleapis.com.
    with chromium(f"--host-resolver-rules=MAP storage.googleapis.com 127.0.0.1:{port}") as browser:
        browser.record_network()
        browser.open(
            f"http://storage.googleapis.com/models/pose/v1/{web_demo.published_url('mv2_cpm_fp32.tflite')}"
            f"&image=../picture.png&accelerator=wasm"
        )
        browser.wait_for("window.poseDemo && ['done', 'error'].includes(window.poseDemo.phase)")
        state = browser.evaluate("window.poseDemo")
        transfers = browser.transfers()
    assert state["error"] is None, state["error"]
    expected = web_reference.reference_keypoints(
        str(models / "mv2_cpm_fp32.tflite"), str(tmp_path / "picture.png")
    )
    difference = np.abs(
        np.array(state["keypoints"]["keypoints"])[:, :2] - np.array(expected["keypoints"])[:, :2]
    )
    assert (
        difference.max() / expected["scale"] <= 1.0
    )  # the web demo's tolerance: 1 pixel at the input scale
    [wasm] = [t for t in transfers if t["url"].endswith(".wasm")]
    raw = (web_demo.build() / "wasm" / "litert_wasm_internal.wasm").stat().st_size
    assert wasm["status"] == 200 and wasm["encoding"] == "gzip", wasm
    assert wasm["body_bytes"] == raw and wasm["wire_bytes"] < raw / 2, wasm
