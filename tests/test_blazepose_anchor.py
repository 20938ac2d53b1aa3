"""BlazePose GHUM full, the outside anchor shipped in anchors/: opened as evaluate opens anchors (its .json:
RGB 0..1, heatmaps picked by shape, the first 33 of 39 channels), run on a real photograph."""

from pathlib import Path

import cv2
import numpy as np

from components.evaluate import open_model, run_in_contract, seed_release_checksums
from pose.codec import HeatmapCodec
from pose.data import keypoints
from pose.evaluation.results import is_seed
from pose.models import tflite_runtime
from tests.conftest import ANCHORS

BLAZEPOSE = ANCHORS / "blazepose-full-256.tflite"
PHOTO = (
    Path(__file__).resolve().parent.parent / "photos" / "cameraman.jpg"
)  # standing, to the knees


def _outputs_by_shape(interpreter) -> dict:
    return {
        tuple(int(d) for d in detail["shape"]): interpreter.get_tensor(detail["index"])
        for detail in interpreter.get_output_details()
    }


def test_the_blazepose_anchor_is_read_from_its_json_not_as_a_seed_release():
    model = open_model(BLAZEPOSE)
    assert model["keypoint_set"].name == "blazepose" and model["keypoint_set"].num_keypoints == 33
    assert model["contract"]["pixels"] == "rgb_0_1"
    assert (model["input_size"], model["heatmap_size"]) == (256, 64)
    assert model["metadata"]["output_stride"] == 4 and model["metadata"]["heatmap_channels"] == 39
    assert model["release"]["source"] == "blazepose" and not is_seed(model)
    # picked by shape among its five outputs
    assert tflite_runtime.output_shape(model["interpreter"]) == (1, 64, 64, 39)
    assert len(model["interpreter"].get_output_details()) == 5
    # SHA256SUMS pins it, but it is not one of the seed's files
    assert BLAZEPOSE.name not in seed_release_checksums().values()
    aic, coco = keypoints.preset("aic"), keypoints.preset("coco")
    assert len(coco.shared_with(model["keypoint_set"])) == 17
    assert len(aic.shared_with(model["keypoint_set"])) == 12  # not head top and neck


def test_blazepose_finds_the_person_in_a_real_photograph():
    """Its decoded heatmap joints lie in the crop, and for the limb joints its landmark regression
    calls visible they agree with that regression within 3 heatmap cells."""
    model = open_model(BLAZEPOSE)
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    assert bgr is not None and bgr.shape[0] == bgr.shape[1]  # square already: the whole picture
    rgb = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)[None, ..., ::-1] / 255.0
    heatmaps = run_in_contract(model, rgb.astype(np.float32))
    assert heatmaps.shape == (1, 64, 64, 33) and 0.0 <= heatmaps.min() <= heatmaps.max() <= 1.0
    points, scores = HeatmapCodec.for_heatmaps(256, 64, refine="dark").decode_to_input(heatmaps)
    assert ((points >= 0) & (points < 256)).all()
    outputs = _outputs_by_shape(model["interpreter"])
    assert outputs[(1, 1)][0, 0] > 0.5  # its pose flag: a person is there
    landmarks = outputs[(1, 195)].reshape(39, 5)[:33]  # x, y, z, visibility, presence (input px)
    limbs = [j for _, j in keypoints.preset("aic").shared_with(model["keypoint_set"])]
    visible = [j for j in limbs if landmarks[j, 3] > 3.0]  # a visibility logit, > 0.95
    assert len(visible) >= 4, landmarks[limbs, 3]
    distance = np.linalg.norm(points[0, visible] - landmarks[visible, :2], axis=1)
    assert distance.max() <= 3 * 4, distance
    assert scores[0, visible].min() > 0.3
