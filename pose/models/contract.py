"""The model contract: what pixels an exported model takes and in which order its heatmap channels come.

Two contracts exist:
- "seed" (the default export): the seed's released files' contract, so apps built for them load ours
  unchanged. Input float32 BGR 0..255, not normalised (the seed reads images with cv2 and only casts
  them); output channels head top, neck, right shoulder, ..., left ankle (AIC 13, 14, 1, ..., 12).
- "aic": what the networks train on. Input float32 RGB / 255; output channels in AIC order
  (pose.data.keypoints.NAMES).

Training always works in the "aic" contract; export puts the conversion inside the graph
(`graph_input_to_training` / `graph_output_from_training`). Every `<model>.json` records its contract
(`describe`), and readers get it back with `from_metadata`. Heatmap pixel (x, y) maps to input pixel
`(x + 0.5) * output_stride - 0.5` in both.
"""

import numpy as np

from pose.data import keypoints

SEED = "seed"
AIC = "aic"
NAMES = (SEED, AIC)
DEFAULT = SEED
PIXELS = {SEED: "bgr_0_255", AIC: "rgb_0_1"}
PIXEL_DESCRIPTIONS = {
    "bgr_0_255": "float32 BGR 0..255, not normalised (cv2.imread pixels cast to float)",
    "rgb_0_1": "float32 RGB, pixel / 255.0",
}
# Each contract in words, for people (the model card).
IN_WORDS = {
    SEED: "float32 BGR 0..255, not normalised, as cv2 reads images and the seed's apps feed them; "
    "output channels in the seed's order",
    AIC: "float32 RGB / 255; output channels in AI Challenger order",
}

# The seed's output channels as AIC indices (0-based): head top, neck, then AIC's first twelve.
SEED_CHANNELS = (keypoints.HEAD_TOP, keypoints.NECK, *range(12))
CHANNELS = {SEED: SEED_CHANNELS, AIC: tuple(range(keypoints.NUM_KEYPOINTS))}


class ContractError(ValueError):
    """An unknown contract name, or a model's metadata whose contract is malformed."""


def check(name: str) -> str:
    if name not in NAMES:
        raise ContractError(f"unknown model contract {name!r}; expected one of {', '.join(NAMES)}")
    return name


def describe(name: str) -> dict:
    """The `contract` entry of a model's .json."""
    check(name)
    return {
        "name": name,
        "pixels": PIXELS[name],
        "channel_order": [keypoints.NAMES[index] for index in CHANNELS[name]],
    }


def from_metadata(metadata: dict, source: str = "model metadata") -> dict:
    """The contract a model's .json declares (pose.models.metadata reads the rest)."""
    declared = metadata.get("contract")
    if declared is None:
        raise ContractError(
            f'{source} has no "contract" (pixel format and output channel order); '
            f"write it as the tflite step does: {describe(DEFAULT)}"
        )
    if not isinstance(declared, dict) or declared.get("name") not in NAMES:
        raise ContractError(f"{source}: contract {declared!r} is not one of {', '.join(NAMES)}")
    expected = describe(declared["name"])
    for key in ("pixels", "channel_order"):
        if key in declared and declared[key] != expected[key]:
            raise ContractError(
                f"{source}: contract {declared['name']!r} has {key} {declared[key]!r}, "
                f"expected {expected[key]!r}"
            )
    return expected


def _name(contract) -> str:
    return check(contract["name"] if isinstance(contract, dict) else contract)


def model_input(bgr_uint8: np.ndarray, contract) -> np.ndarray:
    """A photo crop as cv2 reads it (uint8 BGR [..., H, W, 3]) -> the float32 input of a model in `contract`."""
    pixels = np.asarray(bgr_uint8)
    if pixels.shape[-1] != 3:
        raise ContractError(f"expected BGR images [..., H, W, 3], got shape {pixels.shape}")
    if _name(contract) == SEED:
        return pixels.astype(np.float32)
    return pixels[..., ::-1].astype(np.float32) / 255.0


def from_training_images(rgb_0_1: np.ndarray, contract) -> np.ndarray:
    """Images as the input pipeline makes them (float RGB in [0, 1]) -> the input of a model in `contract`."""
    images = np.asarray(rgb_0_1, dtype=np.float32)
    if _name(contract) == SEED:
        return images[..., ::-1] * np.float32(255.0)
    return images


def to_aic_order(heatmaps: np.ndarray, contract) -> np.ndarray:
    """Heatmaps [..., K] with channels in `contract`'s order -> channels in AIC order."""
    order = CHANNELS[_name(contract)]
    inverse = np.argsort(order)
    return np.asarray(heatmaps)[..., inverse]


def graph_input_to_training(image, contract):
    """Inside an exported graph: the contract's input tensor -> what the network trained on (RGB / 255)."""
    import tensorflow as tf

    if _name(contract) == SEED:
        return tf.reverse(image, axis=[-1]) * (1.0 / 255.0)
    return image


def graph_output_from_training(heatmaps, contract):
    """Inside an exported graph: heatmaps in AIC order -> the contract's channel order."""
    import tensorflow as tf

    if _name(contract) == SEED:
        return tf.gather(heatmaps, list(SEED_CHANNELS), axis=-1)
    return heatmaps


def flip_pairs(contract) -> list[list[int]]:
    """Left/right channel pairs (0-based output channel indices) in `contract`'s channel order."""
    position = {aic: channel for channel, aic in enumerate(CHANNELS[_name(contract)])}
    return [sorted([position[right], position[left]]) for right, left in keypoints.FLIP_PAIRS]
