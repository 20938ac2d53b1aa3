"""A model's metadata: freeze's model_info.json and the `<model>_<variant>.json` beside each .tflite
(docs/ARTIFACTS.md), which apps, evaluate, publish and the web demo (web/pose.js `readContract`) read.

One builder (`ModelMetadata.build`), one reader (`read`, or `of_model_file` for a .tflite, which
also covers the seed's released files: they came without a .json, so theirs is the seed contract with
the sizes read from the tensors).

Fields every model's .json has:
  model           the network's name (train's `model`, e.g. "mv2_cpm"; pose.models.networks.identity
                  reads it), or for a seed release the file's stem ("pefm-cpm-192")
  input_size      the square input's side, in pixels
  output_size     the heatmaps' side
  output_stride   input pixels per heatmap pixel: an integer (web/app.js checks
                  output_size x output_stride == input_size)
  num_keypoints   heatmap channels
  keypoint_set    the whole keypoint set (pose.data.keypoints.KeypointSet.to_json: names in
                  channel order, swap partners, skeleton, sigmas, how PCK is normalised), so that
                  apps and the web page need nothing else; a .json without one is of the `aic` set
  contract        {name, pixels, channel_order} (pose.models.contract.describe)
  input_name, output_name   the graph's tensor names (the seed's files: output_name only)
Exports add normalisation, keypoints, flip_pairs (contract_fields) and what each step measured.

Fields only a model released by others has (anchors/blazepose-full-256.json):
  heatmap_channels  the heatmap output's channels when it has more than the set's joints: its first
                    num_keypoints channels are the set's joints in order, the rest are not joints and
                    readers drop them (BlazePose: 39, of which the first 33 are its landmarks). The
                    heatmap output itself is picked by shape (pose.models.tflite_runtime.heatmap_output)
  heatmap_activation  "sigmoid" when the heatmaps are logits (BlazePose's), applied before decoding
                    (joint_heatmaps); absent: they are scores already
  release           who released it: {source, title, version, url}; evaluate names an anchor by it
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pose.data import keypoints
from pose.models import contract

log = logging.getLogger("metadata")

SUFFIX = ".json"  # beside the .tflite: <model>_<variant>.json
FREEZE_FILE = "model_info.json"


class MetadataError(ValueError):
    """A model's .json that is missing, not JSON, or lacks what a reader needs; names the file."""


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    input_size: int
    output_size: int
    num_keypoints: int
    contract: dict
    keypoint_set: keypoints.KeypointSet
    input_name: str | None = None
    output_name: str | None = None
    extra: dict = field(
        default_factory=dict
    )  # the rest of the file: exports' descriptions, figures

    @property
    def output_stride(self) -> int:
        return self.input_size // self.output_size

    @property
    def heatmap_channels(self) -> int:
        """The heatmap output's channels, of which the first num_keypoints are the set's joints."""
        return int(self.extra.get("heatmap_channels", self.num_keypoints))

    @classmethod
    def build(
        cls,
        model: str,
        input_size: int,
        output_size: int,
        num_keypoints: int,
        contract_name: str,
        keypoint_set: keypoints.KeypointSet,
        input_name: str | None = None,
        output_name: str | None = None,
        **extra,
    ) -> "ModelMetadata":
        """The one builder. Exports pass **contract_fields(contract_name, keypoint_set) among `extra`."""
        if int(num_keypoints) != keypoint_set.num_keypoints:
            raise MetadataError(
                f"{model}: {num_keypoints} heatmaps, but the keypoint set {keypoint_set.name!r} has "
                f"{keypoint_set.num_keypoints} joints"
            )
        input_size, output_size = int(input_size), int(output_size)
        if output_size < 1 or input_size % output_size:
            raise MetadataError(
                f"{model}: input {input_size} is not a whole number of heatmap "
                f"pixels ({output_size})"
            )
        return cls(
            model,
            input_size,
            output_size,
            int(num_keypoints),
            contract.describe(contract_name, keypoint_set),
            keypoint_set,
            input_name,
            output_name,
            dict(extra),
        )

    def to_json(self) -> dict:
        names = {
            k: v
            for k, v in (("input_name", self.input_name), ("output_name", self.output_name))
            if v is not None
        }
        return {
            "model": self.model,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "output_stride": self.output_stride,
            "num_keypoints": self.num_keypoints,
            **names,
            "contract": self.contract,
            "keypoint_set": self.keypoint_set.to_json(),
            **self.extra,
        }

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))


def contract_fields(contract_name: str, keypoint_set: keypoints.KeypointSet) -> dict:
    """What an export adds about its contract for people and apps: the pixels in words, the output
    channels' joint names in order, the left/right channel pairs and the skeleton between output
    channels (web/pose.js draws it)."""
    order = contract.channels(contract_name, keypoint_set)
    position = {joint: channel for channel, joint in enumerate(order)}
    return {
        "normalisation": contract.PIXEL_DESCRIPTIONS[contract.PIXELS[contract_name]],
        "keypoints": contract.describe(contract_name, keypoint_set)["channel_order"],
        "flip_pairs": contract.flip_pairs(contract_name, keypoint_set),
        "skeleton": [[position[a], position[b]] for a, b in keypoint_set.skeleton],
    }


ACTIVATIONS = ("sigmoid",)


def joint_heatmaps(heatmaps, values: dict):
    """A model's heatmap output [..., heatmap_channels] -> the set's joints' heatmaps [..., num_keypoints]:
    its first num_keypoints channels (all of them but for a model whose .json says heatmap_channels), with
    its heatmap_activation applied (a .json's `values`, as to_json writes them)."""
    import numpy as np

    heatmaps = np.asarray(heatmaps)[..., : int(values["num_keypoints"])]
    if values.get("heatmap_activation") == "sigmoid":
        heatmaps = 1.0 / (1.0 + np.exp(-heatmaps.astype(np.float32)))
    return heatmaps


def keypoint_set_of(values: dict, source: str) -> keypoints.KeypointSet:
    """The keypoint set a model's .json records; files written before sets were data are `aic`."""
    try:
        return keypoints.recorded_in(values, source)
    except keypoints.KeypointSetError as error:
        raise MetadataError(str(error)) from error


def path_for(model_path: Path) -> Path:
    """The .json beside a .tflite."""
    return Path(model_path).with_suffix(SUFFIX)


def read_json(path: Path) -> dict:
    """The file as it is (the web demo serves it so, and the page says what is missing)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise MetadataError(f"{path}: cannot be read ({error})") from error
    except json.JSONDecodeError as error:
        raise MetadataError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise MetadataError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values


def from_json(values: dict, source: str) -> ModelMetadata:
    """The one reader: checks the fields every reader needs and the contract
    (pose.models.contract.from_metadata), naming `source` in any error."""
    missing = [k for k in ("input_size", "contract") if k not in values]
    if missing:
        raise MetadataError(f"{source}: missing {', '.join(missing)}")
    keypoint_set = keypoint_set_of(values, source)
    try:
        declared = contract.from_metadata(values, source, keypoint_set)
        input_size = int(values["input_size"])
        output_size = int(values.get("output_size") or input_size // int(values["output_stride"]))
    except contract.ContractError as error:
        raise MetadataError(str(error)) from error
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise MetadataError(
            f"{source}: input_size / output_size / output_stride unusable ({error!r})"
        ) from error
    channels = values.get("heatmap_channels")
    if channels is not None and (
        isinstance(channels, bool)
        or not isinstance(channels, int)
        or channels < keypoint_set.num_keypoints
    ):
        raise MetadataError(
            f"{source}: heatmap_channels {channels!r} is not a whole number of channels holding the "
            f"keypoint set's {keypoint_set.num_keypoints} joints first"
        )
    if values.get("heatmap_activation", ACTIVATIONS[0]) not in ACTIVATIONS:
        raise MetadataError(
            f"{source}: heatmap_activation {values['heatmap_activation']!r} is not one of "
            f"{', '.join(ACTIVATIONS)}"
        )
    known = {
        "model",
        "input_size",
        "output_size",
        "output_stride",
        "num_keypoints",
        "contract",
        "keypoint_set",
        "input_name",
        "output_name",
    }
    return ModelMetadata(
        str(values.get("model", Path(source).stem)),
        input_size,
        output_size,
        int(values.get("num_keypoints", len(declared["channel_order"]))),
        declared,
        keypoint_set,
        values.get("input_name"),
        values.get("output_name"),
        {k: v for k, v in values.items() if k not in known},
    )


def read(path: Path) -> ModelMetadata:
    return from_json(read_json(path), str(path))


def seed_release(model_path: Path, interpreter=None) -> ModelMetadata:
    """The metadata of one of the seed's released .tflite files, which come without a .json: the seed
    contract, the sizes and output name read from the model."""
    from pose.models import tflite_runtime

    interpreter = interpreter or tflite_runtime.load(model_path)
    _, input_size, _, _ = tflite_runtime.input_shape(interpreter)
    _, output_size, _, channels = tflite_runtime.output_shape(interpreter)
    seed_set = keypoints.default()
    expected = seed_set.num_keypoints
    if channels != expected or input_size % output_size:
        raise MetadataError(
            f"{model_path}: no {path_for(model_path).name} beside it, and its shapes "
            f"(input {input_size}, output {output_size}x{output_size}x{channels}) are "
            f"not a seed release's; write its .json"
        )
    return ModelMetadata.build(
        Path(model_path).stem,
        input_size,
        output_size,
        channels,
        contract.SEED,
        seed_set,
        output_name=tflite_runtime.heatmap_output(interpreter)["name"],
    )


def of_model_file(model_path: Path, interpreter=None) -> ModelMetadata:
    """The .json beside `model_path`, or for the seed's .json-less files seed_release()."""
    beside = path_for(model_path)
    if beside.is_file():
        return read(beside)
    log.info(
        "%s: no %s beside it: read as one of the seed's released files (seed contract)",
        model_path,
        beside.name,
    )
    return seed_release(model_path, interpreter)
