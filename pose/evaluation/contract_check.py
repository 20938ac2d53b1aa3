"""Whether a model does what its .json's contract says: one rendered figure with known keypoints.

A model's `.json` names its contract (pose.models.contract: the pixels it takes, the order of its
heatmap channels). Shapes can be checked against the model's tensors; the contract cannot: a model
that takes BGR 0..255 (seed) fed RGB / 255 (aic) still runs, and scores 0.0 with no word of why
(issue 21: the seed's CPM under a `.json` claiming `aic`).

Only a model of the `aic` keypoint set has two contracts to tell apart (the seed's order exists for
it alone), so only such a model is checked. It is run once per contract on one picture whose
keypoints are known: a figure the
synthetic renderer (pose.data.synthetic) draws from a fixed seed, padded to a square and resized to
the model's input as the web demo does (pose.evaluation.photos.square_input). Each contract's fit is
PCK@0.2 over its joints (pose.evaluation.photos.agreement: within 0.2 x the longer side of the
joints' extent), the heatmaps read in that contract's channel order.

The rule: another contract fits clearly better than the claimed one when it finds at least FITS of
the joints and MARGIN more than the claimed one does. Then the claim is wrong, and evaluate stops:
every figure it would compute under the claim is meaningless, and publish would ship the wrong
`.json` to apps. A model that fits no contract (untrained, or trained on something else) is no
evidence against its claim, and passes.
"""

import functools

import numpy as np

from pose.data import keypoints
from pose.models import contract

# The rendered figure: one person, every joint in the picture and unoccluded (checked in
# tests/test_reliability.py); the seed's CPM finds all 14 of them in the seed contract, none in aic.
FIGURE_SEED = 11
FITS = 0.5  # a contract the model follows finds at least half the joints...
MARGIN = 0.3  # ...and clearly more than the claimed one


@functools.cache
def known_figure() -> tuple[np.ndarray, np.ndarray]:
    """(BGR uint8 picture, [K, 2] joint positions of the `aic` set), rendered once per process."""
    from pose.data import synthetic

    picture, persons = synthetic.render_image(np.random.default_rng(FIGURE_SEED))
    values = np.asarray(persons[0]["keypoints"], np.float64).reshape(-1, 3)
    return picture, values[:, :2]


def fit(interpreter, input_size: int, output_stride: float, name: str) -> float:
    """PCK@photos.THRESHOLD of the model on the known figure, fed and read in contract `name`."""
    from pose.codec import HeatmapCodec
    from pose.evaluation import photos
    from pose.models import tflite_runtime

    picture, truth = known_figure()
    image, square = photos.square_input(picture, input_size)
    heatmaps = tflite_runtime.run(interpreter, contract.model_input(image, name)[None])
    heatmaps = contract.to_set_order(heatmaps, name, keypoints.default())
    codec = HeatmapCodec(input_size, output_stride, refine="quarter")
    found, _ = codec.decode_to_input(heatmaps)
    in_picture = (found[0] + 0.5) * (square["side"] / input_size) - 0.5
    in_picture -= np.array([square["left"], square["top"]])
    return photos.agreement(in_picture, truth)


def fits(interpreter, input_size: int, output_stride: float) -> dict:
    """{contract name: PCK} for every contract pose.models.contract knows."""
    return {name: fit(interpreter, input_size, output_stride, name) for name in contract.NAMES}


def better_fit(scores: dict, claimed: str) -> str | None:
    """The contract that fits clearly better than `claimed` (the module's rule), or None."""
    best = max((name for name in scores if name != claimed), key=scores.get, default=None)
    if best is not None and scores[best] >= FITS and scores[best] - scores[claimed] >= MARGIN:
        return best
    return None
