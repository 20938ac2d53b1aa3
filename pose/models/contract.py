"""The model contract: what pixels an exported model takes and in which order its heatmap channels come.

Two contracts exist:
- "seed" (the default export for the `aic` keypoint set): the seed's released files' contract, so
  apps built for them load ours unchanged. Input float32 BGR 0..255, not normalised (the seed reads
  images with cv2 and only casts them); output channels in the seed's order (the `aic` set's
  `seed_order`). Only a keypoint set that has a seed order (AI Challenger's) can be exported so.
- "aic": what the networks train on, for any keypoint set (the name stays, as the `export_contract`
  parameter spells it). Input float32 RGB / 255; output channels in the keypoint set's order.

Training always works in the "aic" contract; export puts the conversion inside the graph
(`graph_input_to_training` / `graph_output_from_training`). Every `<model>.json` records its contract
(`describe`) beside its keypoint set, and readers get it back with `from_metadata`. Heatmap pixel
(x, y) maps to input pixel `(x + 0.5) * output_stride - 0.5` in both.
"""

import numpy as np

from pose.data import keypoints

SEED = "seed"
AIC = "aic"
NAMES = (SEED, AIC)
# The export_contract parameter's default: the seed's contract where the keypoint set has the seed's
# order (AIC's), else the training contract (resolve).
AUTO = "auto"
CHOICES = (AUTO, *NAMES)
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
    AIC: "float32 RGB / 255; output channels in the keypoint set's order",
}


class ContractError(ValueError):
    """An unknown contract name, or a model's metadata whose contract is malformed."""


def check(name: str) -> str:
    if name not in NAMES:
        raise ContractError(f"unknown model contract {name!r}; expected one of {', '.join(NAMES)}")
    return name


def check_choice(name: str) -> str:
    """An export_contract parameter's value: a contract or `auto`."""
    if name not in CHOICES:
        raise ContractError(
            f"unknown model contract {name!r}; expected one of {', '.join(CHOICES)}"
        )
    return name


def resolve(name: str, keypoint_set: keypoints.KeypointSet) -> str:
    """The contract an export_contract value means for `keypoint_set`."""
    if check_choice(name) == AUTO:
        return SEED if keypoint_set.seed_order is not None else AIC
    return check_for_set(name, keypoint_set)


def check_for_set(name: str, keypoint_set: keypoints.KeypointSet) -> str:
    """A contract that `keypoint_set` can be exported in: the seed's needs the seed's channel order."""
    check(name)
    if name == SEED and keypoint_set.seed_order is None:
        raise ContractError(
            f"export_contract=seed is the seed's channel order of the aic keypoint set; the keypoint "
            f"set {keypoint_set.name!r} has none: use export_contract=aic"
        )
    return name


def channels(name: str, keypoint_set: keypoints.KeypointSet) -> tuple[int, ...]:
    """The output channels of contract `name` as indices of the keypoint set's joints."""
    check_for_set(name, keypoint_set)
    if name == SEED:
        return keypoint_set.seed_order
    return tuple(range(keypoint_set.num_keypoints))


def describe(name: str, keypoint_set: keypoints.KeypointSet | None = None) -> dict:
    """The `contract` entry of a model's .json."""
    keypoint_set = keypoint_set or keypoints.default()
    return {
        "name": check_for_set(name, keypoint_set),
        "pixels": PIXELS[name],
        "channel_order": [keypoint_set.names[index] for index in channels(name, keypoint_set)],
    }


def from_metadata(
    metadata: dict,
    source: str = "model metadata",
    keypoint_set: keypoints.KeypointSet | None = None,
) -> dict:
    """The contract a model's .json declares, checked against its keypoint set (pose.models.metadata
    reads the set and the rest; a .json without a set is of the `aic` set, as every file before sets
    were data)."""
    declared = metadata.get("contract")
    keypoint_set = keypoint_set or keypoints.default()
    if declared is None:
        raise ContractError(
            f'{source} has no "contract" (pixel format and output channel order); '
            f"write it as the tflite step does: {describe(DEFAULT)}"
        )
    if not isinstance(declared, dict) or declared.get("name") not in NAMES:
        raise ContractError(f"{source}: contract {declared!r} is not one of {', '.join(NAMES)}")
    try:
        expected = describe(declared["name"], keypoint_set)
    except ContractError as error:
        raise ContractError(f"{source}: {error}") from error
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


def to_set_order(heatmaps: np.ndarray, contract, keypoint_set: keypoints.KeypointSet) -> np.ndarray:
    """Heatmaps [..., K] with channels in `contract`'s order -> channels in the keypoint set's order."""
    inverse = np.argsort(channels(_name(contract), keypoint_set))
    return np.asarray(heatmaps)[..., inverse]


def graph_input_to_training(image, contract):
    """Inside an exported graph: the contract's input tensor -> what the network trained on (RGB / 255)."""
    import tensorflow as tf

    if _name(contract) == SEED:
        return tf.reverse(image, axis=[-1]) * (1.0 / 255.0)
    return image


def graph_output_from_training(heatmaps, contract, keypoint_set: keypoints.KeypointSet):
    """Inside an exported graph: heatmaps in the keypoint set's order -> the contract's channel order."""
    import tensorflow as tf

    if _name(contract) == SEED:
        return tf.gather(heatmaps, list(channels(SEED, keypoint_set)), axis=-1)
    return heatmaps


def flip_pairs(contract, keypoint_set: keypoints.KeypointSet) -> list[list[int]]:
    """Left/right channel pairs (0-based output channel indices) in `contract`'s channel order."""
    position = {
        joint: channel for channel, joint in enumerate(channels(_name(contract), keypoint_set))
    }
    return [sorted([position[a], position[b]]) for a, b in keypoint_set.swap_pairs]
