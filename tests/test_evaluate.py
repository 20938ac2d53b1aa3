"""evaluate: accuracy, latency and the report on the real chain; clear errors; predict draws a PNG."""

import json

import cv2
import numpy as np
import pytest

from components.evaluate import EvaluationError, evaluate, input_to_original, predict
from pose.data import keypoints
from pose.evaluation import results as results_file
from pose.models import contract
from pose.models.tflite_runtime import NotTFLiteError
from tests.conftest import ANCHORS
from tests.tiny_models import build_tiny_pose_model

AIC = keypoints.preset("aic")


@pytest.fixture(scope="module")
def evaluated(tflite_models, valid_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation") / "evaluation"
    anchors = str(ANCHORS) if ANCHORS.is_dir() else None
    results = evaluate(
        str(tflite_models),
        [str(valid_shards)],
        str(out),
        anchors_dir=anchors,
        flip_test=True,
        refine="dark",
        latency_runs=3,
        gallery_size=4,
    )
    return results, out


def test_results_cover_every_variant_and_the_seed_models(evaluated):
    results, out = evaluated
    assert (
        json.loads((out / "results.json").read_text())["models"].keys() == results["models"].keys()
    )
    assert {name.rsplit("_", 1)[-1] for name in results["models"]} == {
        "fp32",
        "fp16",
        "int8-dynamic",
        "int8",
    }
    assert results["settings"]["num_people"] > 0
    for model in results["models"].values():
        assert 0.0 <= model["pckh"] <= 1.0 and -1.0 <= model["ap"] <= 1.0
        assert set(model["pckh_per_joint"]) >= {"head_top", "neck", "left_ankle"}
        for threads in ("1", "all"):
            assert 0 < model["latency"][threads]["median_ms"] <= model["latency"][threads]["p90_ms"]
    if ANCHORS.is_dir():
        assert set(results["anchors"]) >= {
            "pefm-cpm-192",
            "pefm-hourglass-192",
            "blazepose-full-256",
        }
        for model in results["models"].values():
            assert model["vs_seed"]["latency_1_thread"] > 0 and model["vs_seed"]["size"] > 0
            assert model["vs_seed"]["same_input_size"] == (model["metadata"]["input_size"] == 192)
            assert model["vs_seed"]["seed_model"].startswith("pefm-")  # never BlazePose
        for name, anchor in results["anchors"].items():  # scored on the same people
            assert 0.0 <= anchor["pckh"] <= 1.0 and -1.0 <= anchor["ap"] <= 1.0
            assert anchor["latency"]["1"]["median_ms"] > 0 and anchor["size_bytes"] > 0
            if name.startswith("pefm-"):  # the seed's, fed in the seed's contract
                assert anchor["release"]["source"] == "seed"
                assert anchor["metadata"]["contract"]["name"] == "seed"
                assert anchor["joints_scored"] == 14
        blazepose = results["anchors"]["blazepose-full-256"]
        assert blazepose["release"]["source"] == "blazepose"
        assert blazepose["metadata"]["contract"]["pixels"] == "rgb_0_1"
        assert blazepose["metadata"]["output_stride"] == 4
        assert blazepose["joints_scored"] == 12  # AIC's limbs: not head top and neck
        assert blazepose["pckh_per_joint"]["head_top"] is None
        assert blazepose["pckh_per_joint"]["left_ankle"] is not None
        assert "blazepose_blazepose-full-256_pckh" in results_file.metric_figures(results)
        assert "seed_pefm-cpm-192_latency_ms" in results_file.metric_figures(results)
        assert results["anchors"]["pefm-cpm-192"]["metadata"]["output_stride"] == 2
        assert results["anchors"]["pefm-hourglass-192"]["metadata"]["output_stride"] == 4


def test_html_report_holds_the_table_bars_and_gallery(evaluated):
    results, out = evaluated
    page = (out / "report.html").read_text()
    assert "<table>" in page and "PCKh@0.5" in page and 'class="bar"' in page
    assert all(name in page for name in results["models"])
    # the gallery's 4, and one side-by-side picture per real photograph (when the seed's CPM is there)
    assert page.count("data:image/jpeg;base64,") == 4 + len(
        (results["photos"] or {}).get("pictures", [])
    )
    assert "http://" not in page and "https://" not in page  # self-contained
    if ANCHORS.is_dir():  # the seed's and BlazePose, each named as whose it is
        assert "seed: pefm-cpm-192" in page and "blazepose: blazepose-full-256" in page


def test_real_photographs_show_ours_beside_the_seed_in_results_and_report(evaluated):
    from pose.evaluation import photos
    from pose.evaluation import results as results_file

    results, out = evaluated
    if not ANCHORS.is_dir():
        assert results["photos"] is None
        return
    section = results_file.read(out)["photos"]
    assert section == json.loads(json.dumps(results["photos"]))
    assert [p["file"] for p in section["pictures"]] == [
        p.name for p in photos.find(photos.DEFAULT_FOLDER)
    ]
    assert len(section["pictures"]) >= 3
    assert (section["reference"], section["threshold"], section["drawn_model"]) == (
        "pefm-cpm-192",
        0.2,
        results["settings"]["gallery_model"],
    )
    for picture in section["pictures"]:
        assert len(picture["reference_keypoints"]) == 14 and picture["person_size"] > 10
        assert picture["models"].keys() == results["models"].keys()
        for model in picture["models"].values():
            assert len(model["keypoints"]) == 14 and 0.0 <= model["agreement"] <= 1.0
            assert 0.0 <= model["agreement_found"] <= 1.0
    for name, value in section["agreement"].items():
        assert value == pytest.approx(
            np.mean(
                [
                    p["models"][name]["agreement"]
                    for p in section["pictures"]
                    if not p["not_judged"]  # photos.not_judged: left out of the means
                ]
            )
        )
        assert results_file.metric_figures(results)[f"{name}_photo_agreement"] == round(value, 3)
    page = (out / "report.html").read_text()
    assert "Real photographs" in page and all(p["file"] in page for p in section["pictures"])


def test_input_to_original_reproduces_the_original_keypoints(valid_shards):
    from pose.data import inputs

    batch = {
        k: v.numpy()
        for k, v in next(iter(inputs.evaluation_dataset([str(valid_shards)], 96, 8))).items()
    }
    labelled = batch["visibility"] > 0
    mapped = input_to_original(batch["keypoints"], batch["to_original"])
    assert np.abs(mapped - batch["original_keypoints"])[labelled].max() < 0.01


def _tiny_tflite(path, num_keypoints=14, input_size=64):
    import tensorflow as tf

    from pose.models.metadata import ModelMetadata

    converter = tf.lite.TFLiteConverter.from_keras_model(
        build_tiny_pose_model(input_size, num_keypoints)
    )
    path.write_bytes(converter.convert())
    # Its .json states the contract: a .tflite without one must be a seed release, byte for byte.
    keypoint_set = AIC if num_keypoints == AIC.num_keypoints else keypoints.preset("coco")
    ModelMetadata.build(
        path.stem,
        input_size,
        input_size // 2,
        num_keypoints,
        contract.resolve("auto", keypoint_set),
        keypoint_set,
    ).write(path.with_suffix(".json"))
    return path


def test_a_file_that_is_not_tflite_is_a_clear_error(tmp_path, valid_shards):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken_fp32.tflite").write_bytes(
        b"PK\x03\x04 this is a zip, not a model"
    )
    with pytest.raises(NotTFLiteError, match="broken_fp32.tflite: not a TFLite model"):
        evaluate(
            str(tmp_path / "models"), [str(valid_shards)], str(tmp_path / "out"), latency_runs=1
        )
    assert not (tmp_path / "out").exists()


def test_shards_with_no_people_are_a_clear_error(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    _tiny_tflite(models / "tiny_fp32.tflite")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "valid-00000-of-00001.tfrecord").write_bytes(b"")
    (empty / "index.json").write_text(
        json.dumps(
            {
                "split": "valid",
                "num_shards": 1,
                "crop_size": 256,
                "shards": {"valid-00000-of-00001.tfrecord": 0},
                "num_examples": 0,
            }
        )
    )
    with pytest.raises(EvaluationError, match="no people"):
        evaluate(str(models), [str(empty)], str(tmp_path / "out"), latency_runs=1)


def test_a_size_mismatch_between_model_and_data_is_a_clear_error(tmp_path, valid_shards):
    models = tmp_path / "models"
    models.mkdir()
    _tiny_tflite(models / "coco17_fp32.tflite", num_keypoints=17)
    with pytest.raises(
        EvaluationError,
        match=r"coco17_fp32.tflite: predicts the keypoint set 'coco' \(17 joints\), but the "
        r"shards of .* hold 'aic' \(14\)",
    ):
        evaluate(str(models), [str(valid_shards)], str(tmp_path / "out"), latency_runs=1)
    (models / "coco17_fp32.tflite").unlink()
    _tiny_tflite(models / "tiny_fp32.tflite")
    (models / "tiny_fp32.json").write_text(
        json.dumps({"input_size": 192, "output_stride": 2, "contract": contract.describe("aic")})
    )
    with pytest.raises(EvaluationError, match="size mismatch: the model takes 64x64"):
        evaluate(str(models), [str(valid_shards)], str(tmp_path / "out"), latency_runs=1)


def test_predict_draws_the_skeleton_on_any_image(tmp_path):
    model = _tiny_tflite(tmp_path / "tiny_fp32.tflite")
    image = np.full((90, 160, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "in.jpg"), image)
    result = predict(str(model), str(tmp_path / "in.jpg"), str(tmp_path / "out.png"), min_score=0.0)
    drawn = cv2.imread(str(tmp_path / "out.png"))
    assert drawn.shape == image.shape and np.abs(drawn.astype(int) - 200).max() > 50
    points = np.array(result["keypoints"])
    # letterboxed: the 160 x 90 image sits centred in a 160 x 160 square, padding 35 above and below
    assert points.shape == (14, 2)
    assert np.all(points[:, 0] >= -1) and np.all(points[:, 0] <= 161)
    assert np.all(points[:, 1] >= -36) and np.all(points[:, 1] <= 126)


def test_predict_draws_a_correct_skeleton_with_the_seed_file(tmp_path):
    """The released CPM on the photograph (a head-and-shoulders portrait): head top above the neck, the
    neck above the shoulders, the person's right shoulder on the viewer's left."""
    from tests.test_contract import PHOTO

    anchor = ANCHORS / "pefm-cpm-192.tflite"
    if not anchor.exists():
        pytest.skip(f"{anchor} not present")
    result = predict(str(anchor), str(PHOTO), str(tmp_path / "out.png"))
    points, scores = np.array(result["keypoints"]), np.array(result["scores"])
    head, neck = points[AIC.index("head_top")], points[AIC.index("neck")]
    right, left = points[AIC.index("right_shoulder")], points[AIC.index("left_shoulder")]
    assert (
        scores[
            [
                AIC.index("head_top"),
                AIC.index("neck"),
                AIC.index("right_shoulder"),
                AIC.index("left_shoulder"),
            ]
        ].min()
        > 0.2
    )
    assert head[1] < neck[1] < min(right[1], left[1])
    assert right[0] < neck[0] < left[0]
    assert (
        140 < head[0] < 340 and head[1] < 200
    )  # the face is in the upper middle of the 480 px photograph


def test_predict_feeds_each_model_in_its_contract(tmp_path):
    """The same network exported in both contracts draws the same skeleton."""
    from components.freeze import freeze
    from components.tflite import convert_to_tflite
    from tests.test_contract import PHOTO
    from tests.tiny_models import save_as_train_output

    save_as_train_output(build_tiny_pose_model(64), tmp_path / "model")
    points = {}
    for name in ("seed", "aic"):
        freeze(str(tmp_path / "model"), str(tmp_path / f"frozen_{name}"), export_contract=name)
        convert_to_tflite(str(tmp_path / f"frozen_{name}"), str(tmp_path / name), ["fp32"])
        points[name] = predict(
            str(tmp_path / name / "mv2_cpm_fp32.tflite"), str(PHOTO), str(tmp_path / f"{name}.png")
        )["keypoints"]
    np.testing.assert_allclose(points["seed"], points["aic"], atol=0.05)


def test_train_and_evaluate_measure_the_same_pckh(
    tflite_models, valid_shards, tmp_path, monkeypatch
):
    """The in-loop figure (input pixels, no flip test) and evaluate's (original pixels) decode the same
    predictions with the same codec, so without the flip test they are the same number."""
    import shutil

    from components.evaluate import open_model, run_in_contract
    from pose.codec import HeatmapCodec
    from pose.training.validation import evaluate_pckh

    models = tmp_path / "models"
    models.mkdir()
    fp32 = next(tflite_models.glob("*_fp32.tflite"))
    for path in (fp32, fp32.with_suffix(".json")):
        shutil.copyfile(path, models / path.name)
    (tmp_path / "no-anchors").mkdir()
    monkeypatch.setenv("POSE_ANCHORS_DIR", str(tmp_path / "no-anchors"))
    results = evaluate(
        str(models), [str(valid_shards)], str(tmp_path / "out"), flip_test=False, latency_runs=1
    )

    metadata = json.loads(fp32.with_suffix(".json").read_text())
    model = open_model(fp32)
    in_loop = evaluate_pckh(
        lambda images: run_in_contract(model, images.numpy()),
        [str(valid_shards)],
        HeatmapCodec(metadata["input_size"], metadata["output_stride"]),
    )
    assert 0.0 < in_loop == pytest.approx(results["models"][fp32.stem]["pckh"], abs=1e-9)
