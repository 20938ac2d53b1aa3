"""The training config: a dataclass with a default for every key, read from YAML.

`load_config(source, overrides)` takes a YAML file path (or YAML text, as a KFP parameter may pass
it), applies `key=value` overrides, and checks every key: an unknown key or a value of the wrong
type is a ConfigError naming the key and where it came from.

The seed's cfg keys (PoseEstimationForMobile, training/experiments/*.cfg) are accepted with their
meaning: `batchsize`, `n_kpoints`, `input_width`/`input_height`, `scale`, `decay_step`,
`per_saved_model_step`, `per_update_tensorboard_step` are other names for keys below; its path and
process keys (`datapath`, `modelpath`, ...) are supplied by the pipeline instead and only logged.
"""

import dataclasses
import json
import logging
import math
import os
import re
import types
import typing
from pathlib import Path

import yaml

from pose.models import networks

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]  # pose/training/config.py -> the repository


class ConfigError(ValueError):
    """A config key that is unknown, of the wrong type or out of range; the message names it."""


@dataclasses.dataclass
class TrainConfig:
    # Network (pose.models.networks.build_model); None = the seed's setting for the model.
    model: str = "mv2_cpm"
    input_size: int = networks.INPUT_SIZE
    width: float | None = None
    num_stages: int | None = None
    num_keypoints: int | None = None  # None: one per joint of the shards' keypoint set
    output_stride: int | None = (
        None  # fixed by the model; set only to check it (the seed's `scale`)
    )
    batch_norm_momentum: float = 0.99
    # CPM structure (mv2_cpm only; None = the seed's training code: 6, 4, 32 x width, 7). The seed's released
    # CPM file is width 0.5 with 4, 3, 24, 7 (experiments/mv2_cpm_192_tiny.yaml); see pose/models/networks/mv2_cpm.py.
    backbone_expansion: int | None = None  # MobileNetV2 expansion of the backbone's blocks
    stage_expansion: int | None = None  # expansion of each stage's second and third block
    stage_channels: int | None = None  # channels of the stage blocks
    stage_kernel_size: int | None = None  # depthwise kernel of stages 1.. (stage 0 is 3x3); odd
    # Both models: the seed's activations and TF1 resizing, as its released files have them
    # (pose/models/networks/blocks.py).
    seed_layers: bool = False
    # Warm start: weights from a seed's released .tflite or an earlier run's model.keras (pose.models.warm_start).
    init_from: str | None = None
    # Fine-tuning. frozen_layers: a regular expression; layers whose name it matches (re.match) keep their
    # weights (e.g. "Conv2d_0|MobilenetV2_" holds the backbone). batch_norm_frozen: every batch norm normalises
    # with its moving statistics while training (Keras' inference mode; gamma and beta still train): the
    # released files' folded, identity batch norms would otherwise normalise by each batch's statistics and
    # no longer compute what the file computes.
    frozen_layers: str | None = None
    batch_norm_frozen: bool = False
    # Data (pose.data.inputs.training_dataset).
    batch_size: int = 16  # per replica: global batch = batch_size x replicas
    sigma: float = 6.0  # Gaussian sigma of the target heatmaps, in input pixels
    augment: bool = True
    augmentation: dict = dataclasses.field(
        default_factory=dict
    )  # pose.data.inputs.Augmentation fields
    shuffle_buffer: int = 1024
    seed: int = 0  # initial weights, data order, augmentation (pose.training.reproducibility)
    num_train_samples: int | None = None  # examples per epoch; None = the shards' index
    # Optimisation: Adam; the seed's exponential decay, or cosine (over the planned steps: max_steps or
    # max_epoch, whichever ends first), or constant; linear warm-up over warmup_steps
    # (pose.training.learning_rate).
    lr: float = 1e-3
    lr_schedule: str = "exponential"
    decay_rate: float = 0.95
    decay_steps: int = 10000
    staircase: bool = True
    warmup_steps: int = 0
    max_epoch: int = 1000
    max_steps: int | None = None  # stop after this many steps (and at max_epoch, whichever first)
    # A safety stop, not the schedule: a run it stops before its steps says so (and train_metadata's
    # stopped_by_time_budget); the model is defined by its steps (pose.training.budget).
    max_minutes: float | None = None
    # Devices.
    mixed_precision: bool | None = None  # None = on when training on GPUs
    jit_compile: bool = False  # XLA for the forward and backward pass
    visible_devices: str | None = None  # the seed's GPU list, e.g. "0, 1, 2"; None = all
    # TensorFlow's op determinism (pose.training.reproducibility); None = on when training on GPUs,
    # whose default kernels are not deterministic (the CPU's are).
    deterministic_ops: bool | None = None
    # Bookkeeping.
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3
    log_every: int = 100
    summary_every: int = 500
    eval_every: int = 0  # PCKh on the valid shards every N steps; 0 = at the end only
    pred_image_on_tensorboard: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with the model's defaults filled in (width, num_stages, output_stride, mixed_precision
        stays None until the devices are known)."""
        return dataclasses.replace(
            self,
            width=networks.default_width(self.model) if self.width is None else self.width,
            num_stages=networks.default_stages(self.model)
            if self.num_stages is None
            else self.num_stages,
            output_stride=networks.output_stride(self.model),
        )

    def architecture_options(self) -> dict:
        """The structure options to pass to pose.models.networks.build_model (None = the model's default)."""
        return {key: getattr(self, key) for key in networks.architecture_options(self.model)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


# The seed's cfg names for our keys.
SEED_ALIASES = {
    "batchsize": "batch_size",
    "n_kpoints": "num_keypoints",
    "scale": "output_stride",
    "decay_step": "decay_steps",
    "per_saved_model_step": "checkpoint_every",
    "per_update_tensorboard_step": "summary_every",
}
# Seed keys the pipeline supplies in other ways: accepted, logged, not used.
SEED_SUPPLIED = {
    "datapath": "the --data shard folders",
    "imgpath": "the --data shard folders",
    "modelpath": "the --output folder",
    "logpath": "the --output folder (logs/)",
    "checkpoint": "automatic resume from the --output folder's checkpoints/",
    "multiprocessing_num": "tf.data autotuning",
    "identify_occlusion": "nothing (occluded joints are trained as labelled)",
}
LR_SCHEDULES = ("exponential", "cosine", "constant")
# TrainConfig has a field of each name
CPM_OPTIONS = tuple(
    key for key in networks.architecture_options("mv2_cpm") if key not in networks.COMMON_OPTIONS
)


# What a config may be before it is built (issue 21: a few lines of nested aliases expanded to 4.8
# GB). Configs are a few dozen keys; nothing real needs anchors, aliases or merge keys, so they are
# refused at the parser, before any node is built, and the document is capped in bytes and nodes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 10_000
MAX_CONFIG_DEPTH = 32
# Size-like keys, bounded so that one batch's input (batch_size x input_size^2 x 3 float32) stays
# under MAX_BATCH_INPUT_BYTES and nothing asks for more than the largest reasonable model (a refused
# config costs nothing; a segfault at 4.1 GB after a start-up does).
MAX_BATCH_INPUT_BYTES = 4 << 30
SIZE_LIMITS = {
    "batch_size": 4096,
    "input_size": 1024,
    "width": 4.0,
    "num_stages": 16,
    "num_keypoints": 256,
    "backbone_expansion": 64,
    "stage_expansion": 64,
    "stage_channels": 4096,
    "stage_kernel_size": 31,
    "shuffle_buffer": 100_000,
    "keep_checkpoints": 1000,
    "num_train_samples": 10**9,
    "max_epoch": 10**6,
    "max_steps": 10**9,
    "decay_steps": 10**9,
    "warmup_steps": 10**9,
    "checkpoint_every": 10**9,
    "log_every": 10**9,
    "summary_every": 10**9,
    "eval_every": 10**9,
    "seed": 2**31 - 1,
}


class _ConfigLoader(yaml.SafeLoader):
    """YAML as users write it: `1e-3` is a number (YAML 1.1 wants `1.0e-3`), and a key given twice
    in one mapping is an error instead of the last one silently winning. Anchors, aliases and merge
    keys are refused, and at most MAX_CONFIG_NODES nodes are composed (see MAX_CONFIG_NODES)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            alias = isinstance(event, yaml.AliasEvent)
            what = f"alias *{event.anchor}" if alias else f"anchor &{event.anchor}"
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML {what}: anchors and "
                "aliases are not "
                "accepted in a config (they can expand a few lines to gigabytes); "
                "write the "
                "values out"
            )
        self._nodes = getattr(self, "_nodes", 0) + 1
        if self._nodes > MAX_CONFIG_NODES:
            raise ConfigError(
                f"more than {MAX_CONFIG_NODES:,} YAML nodes; a config is a few dozen keys"
            )
        self._depth = getattr(self, "_depth", 0) + 1
        # before Python's recursion limit ends it in a RecursionError
        if self._depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML nested more than {MAX_CONFIG_DEPTH} deep"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: YAML merge key '<<' is "
                    "not accepted "
                    "in a config; write the keys out"
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str):
    """YAML text -> Python values, read the way config files are (see _ConfigLoader)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{len(text):,} characters, more than the {MAX_CONFIG_BYTES:,} a config may have"
        )
    return yaml.load(text, Loader=_ConfigLoader)


def yaml_problem(error: Exception) -> str:
    """A YAML error as one line: where (yaml's problem_mark, 1-based) and what, and what was being
    parsed, instead of yaml's several lines that repeat the text with a caret under it."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return " ".join(str(error).split())
    line = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and start is not None:
        line += f" ({context} from line {start.line + 1}, column {start.column + 1})"
    return " ".join(line.split())


def load_config(
    source: str | os.PathLike | None = None, overrides: dict | None = None
) -> TrainConfig:
    """source: a YAML file (absolute, relative to the working folder or to the repository), YAML text,
    or None for the defaults. overrides: {key: value} applied on top (see parse_overrides)."""
    values, origin = {}, "defaults"
    if source is not None and str(source).strip():
        path = _find_file(str(source))
        if path is not None:
            origin = f"config file {path}"
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"{origin}: {path.stat().st_size:,} bytes, more than the "
                    f"{MAX_CONFIG_BYTES:,} a config may have"
                )
            text = path.read_text()
        elif (
            "\n" in str(source)
            or ":" in str(source)
            and not str(source).endswith((".yaml", ".yml"))
        ):
            origin, text = "config text", str(source)
        else:
            raise ConfigError(f"config file {source} not found (looked in {looked_in()})")
        try:
            values = read_yaml(text) or {}
        except ConfigError as error:
            raise ConfigError(f"{origin}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{origin}: not valid YAML: {yaml_problem(error)}") from error
        if not isinstance(values, dict):
            raise ConfigError(
                f"{origin}: expected a mapping of keys to values, got {type(values).__name__}"
            )
    config = _apply(TrainConfig(), values, origin)
    if overrides:
        config = _apply(config, overrides, "overrides")
    return config


def parse_overrides(text: str | list[str] | None) -> dict:
    """`key=value,key=value` (values read as YAML: 3, 0.5, true, null, [1, 2]), a JSON object, or a
    list of `key=value` strings (the CLI's repeated --set) -> dict."""
    if not text:
        return {}
    if isinstance(text, str) and text.strip().startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"overrides: not a valid JSON object: {error}") from error
        return dict(values)
    items = _split_top_level(text) if isinstance(text, str) else list(text)
    values = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"overrides: {item!r} is not key=value")
        try:
            values[key.strip()] = read_yaml(value) if value.strip() else None
        except (yaml.YAMLError, ConfigError) as error:
            raise ConfigError(
                f"overrides: the value of {key.strip()!r} is not valid YAML: {yaml_problem(error)}"
            ) from error
    return values


def _split_top_level(text: str) -> list[str]:
    """Splits on commas outside brackets and braces, so `scale=[0.9, 1.1],lr=0.01` is two items."""
    items, depth, current = [], 0, []
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    return items + ["".join(current)]


def looked_in() -> str:
    """Where a relative file name is looked for (the working folder, then the repository), each once:
    the two are one folder when the command runs at the repository's root."""
    folders = [Path.cwd(), REPO]
    if folders[0].resolve() == folders[1].resolve():
        return str(folders[1])
    return f"{folders[0]} and {folders[1]}"


def _find_file(source: str) -> Path | None:
    if "\n" in source:  # YAML text, and too long a "name" for the file system to be asked about
        return None
    for candidate in (Path(source), REPO / source):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # e.g. ENAMETOOLONG: one line of YAML text, not a path
            return None
    return None


def _apply(config: TrainConfig, values: dict, origin: str) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    changes, spelled = {}, {}
    width, height = values.get("input_width"), values.get("input_height")
    if width is not None or height is not None:
        if width is not None and height is not None and width != height:
            raise ConfigError(
                f"{origin}: input_width {width} and input_height {height} differ; "
                "the networks take square inputs"
            )
        values = {**values, "input_size": width if width is not None else height}
    for key, value in values.items():
        if key in ("input_width", "input_height"):
            continue
        if key in SEED_SUPPLIED:
            log.info(
                "%s: seed key %r is ignored here: the pipeline uses %s",
                origin,
                key,
                SEED_SUPPLIED[key],
            )
            continue
        name = SEED_ALIASES.get(key, key)
        if name not in hints:
            raise ConfigError(
                f"{origin}: unknown key {key!r}; known keys: {', '.join(hints)} "
                f"(and the seed's {', '.join(sorted(SEED_ALIASES))})"
            )
        if name in changes:  # `batchsize` and `batch_size`, in either order
            raise ConfigError(f"{origin}: {spelled[name]!r} and {key!r} are the same key; give one")
        spelled[name] = key
        changes[name] = _checked(name, value, hints[name], origin)
    config = dataclasses.replace(config, **changes)
    _check_ranges(config, origin)
    return config


def _checked(key: str, value, hint, origin: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if (
            kind is not type(None)
            and isinstance(value, kind)
            and not (kind is int and isinstance(value, bool))
        ):
            return value
    expected = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(
        f"{origin}: key {key!r} must be {expected}, got {type(value).__name__} {value!r}"
    )


def _check_ranges(config: TrainConfig, origin: str) -> None:
    def fail(key, why):
        raise ConfigError(f"{origin}: key {key!r} = {getattr(config, key)!r}: {why}")

    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            fail(field.name, "must be a finite number")
    for name, value in (config.augmentation or {}).items():
        if any(
            isinstance(v, float) and not math.isfinite(v)
            for v in (value if isinstance(value, (list, tuple)) else [value])
        ):
            fail("augmentation", f"{name} must be finite")
    if config.model not in networks.ARCHITECTURES:
        fail("model", f"expected one of {sorted(networks.ARCHITECTURES)}")
    if config.input_size <= 0 or config.input_size % 32:
        fail("input_size", "must be a positive multiple of 32")
    if config.output_stride is not None and config.output_stride != networks.output_stride(
        config.model
    ):
        fail(
            "output_stride",
            f"{config.model} has output stride {networks.output_stride(config.model)} "
            "(the seed's `scale`)",
        )
    if config.lr_schedule not in LR_SCHEDULES:
        fail("lr_schedule", f"expected one of {LR_SCHEDULES}")
    for key in (
        "batch_size",
        "decay_steps",
        "max_epoch",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "summary_every",
    ):
        if getattr(config, key) <= 0:
            fail(key, "must be positive")
    for key in (
        "width",
        "num_stages",
        "num_keypoints",
        "max_minutes",
        "num_train_samples",
        *CPM_OPTIONS,
    ):
        if getattr(config, key) is not None and getattr(config, key) <= 0:
            fail(key, "must be positive")
    if config.max_steps is not None and config.max_steps < 0:
        fail(
            "max_steps",
            "must not be negative (0 writes the initial, e.g. warm-started, model untrained)",
        )
    for key in CPM_OPTIONS:
        if getattr(config, key) is not None and key not in networks.architecture_options(
            config.model
        ):
            fail(key, f"{config.model} has no such option (it is for mv2_cpm)")
    if config.stage_kernel_size is not None and config.stage_kernel_size % 2 == 0:
        fail("stage_kernel_size", "must be odd (a centred depthwise kernel)")
    if config.frozen_layers is not None:
        try:
            re.compile(config.frozen_layers)
        except re.error as error:
            fail("frozen_layers", f"not a regular expression: {error}")
    if config.lr <= 0 or config.sigma <= 0:
        fail("lr" if config.lr <= 0 else "sigma", "must be positive")
    for key, limit in SIZE_LIMITS.items():
        if getattr(config, key) is not None and getattr(config, key) > limit:
            fail(key, f"must be at most {limit:,}")
    batch_bytes = config.batch_size * config.input_size**2 * 3 * 4
    if batch_bytes > MAX_BATCH_INPUT_BYTES:
        fail(
            "batch_size",
            f"a batch of {config.batch_size} x {config.input_size}^2 x 3 float32 "
            "inputs is "
            f"{batch_bytes / 2**30:.1f} GiB, over the "
            f"{MAX_BATCH_INPUT_BYTES >> 30} GiB bound",
        )
    # Targets must reach every joint: a Gaussian of sigma >= stride / 2 is >= exp(-1) at the nearest
    # heatmap cell (at most stride / sqrt(2) away); narrower ones vanish between cells (sigma: 1e-30
    # trained on all-zero targets). One wider than the input is flat: no peak to learn.
    stride = networks.output_stride(config.model)
    if not stride / 2 <= config.sigma <= config.input_size:
        fail(
            "sigma",
            f"must be between half the output stride ({stride / 2:g} input pixels; "
            "narrower targets "
            f"vanish between heatmap cells) and input_size ({config.input_size})",
        )
    for key in ("eval_every", "warmup_steps", "shuffle_buffer", "seed"):
        if getattr(config, key) < 0:
            fail(key, "must not be negative")
    if config.decay_rate <= 0:
        fail(
            "decay_rate",
            "must be positive (the learning rate is lr x decay_rate ^ (step / decay_steps))",
        )
    if not 0 <= config.batch_norm_momentum < 1:
        fail("batch_norm_momentum", "must be in [0, 1)")
    from pose.data.inputs import Augmentation

    try:
        Augmentation.from_dict(config.augmentation)
    except (TypeError, ValueError) as error:
        fail("augmentation", str(error))
