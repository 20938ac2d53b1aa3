"""The keypoint set: which joints a data set labels and a model predicts, as data (MMPose's metainfo).

A `KeypointSet` holds the joint names in channel order, the left/right swap partners (and the flip
index derived from them), the skeleton drawn between joints, the OKS sigmas, the joint weights of
the loss, how PCK is normalised (a head segment where the set has one, else the person's box) and,
for AI Challenger only, the seed's output channel order. Every module that needs any of these
receives a set; this module and the preset files beside it (`keypoint_sets/*.yaml`) are the only
places that spell joint names, counts or sigmas.

A set comes from a preset name (`aic`, the default; `coco`; `crowdpose`; `mpii`; `blazepose`), from
a YAML file of the presets' form, or from a COCO-format file's `categories[0]` (`from_coco_category`).
It travels as JSON (`to_json` / `from_json`): convert writes it into the data set's info, and the
shards, the training config, the model's .json and the report carry it on.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

PRESETS_DIR = Path(__file__).with_name("keypoint_sets")
DEFAULT = "aic"
AUTO = "auto"  # the pipeline parameter's value for "the set the data names"

# How many joints a set may have: enough for a whole-body skeleton, few enough that a hostile file
# cannot make the networks or the records allocate from its claim.
MAX_KEYPOINTS = 256
MAX_NAME_LENGTH = 64
# A joint's sigma where no preset knows the name and the data gives none: MMPose's mean COCO sigma.
FALLBACK_SIGMA = 0.072

PCK_HEAD = "head"
PCK_BOX = "box"

_SIDES = (
    (re.compile(r"^left([_\- ]?)(.+)$"), "right"),
    (re.compile(r"^right([_\- ]?)(.+)$"), "left"),
    (re.compile(r"^l([_\- ])(.+)$"), "r"),
    (re.compile(r"^r([_\- ])(.+)$"), "l"),
    (re.compile(r"^Left([_\- ]?)(.+)$"), "Right"),
    (re.compile(r"^Right([_\- ]?)(.+)$"), "Left"),
    (re.compile(r"^(.+?)([_\- ])left$"), "right"),
    (re.compile(r"^(.+?)([_\- ])right$"), "left"),
)
# Names of the two ends of a head segment, in the spellings data sets use (top, bottom).
_HEAD_SEGMENTS = (
    ("head_top", "neck"),
    ("top_head", "neck"),
    ("head", "neck"),
    ("head_top", "upper_neck"),
)


class KeypointSetError(ValueError):
    """A keypoint set that cannot be used: names the source and what is wrong."""


@dataclass(frozen=True)
class KeypointSet:
    name: str
    names: tuple[str, ...]
    swap_pairs: tuple[tuple[int, int], ...]  # (a, b) with a < b: a horizontal flip swaps them
    skeleton: tuple[tuple[int, int], ...]  # limbs for drawing, 0-based
    sigmas: tuple[float, ...]
    joint_weights: tuple[float, ...]
    head: tuple[int, int] | None  # PCKh's head segment (top, bottom); None: PCK of the box
    seed_order: tuple[int, ...] | None = None  # the seed's output channels, as indices of `names`

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def flip_index(self) -> tuple[int, ...]:
        """flip_index[k] is the joint that k becomes after a horizontal flip."""
        index = list(range(self.num_keypoints))
        for a, b in self.swap_pairs:
            index[a], index[b] = b, a
        return tuple(index)

    @property
    def pck(self) -> str:
        return PCK_HEAD if self.head is not None else PCK_BOX

    @property
    def pck_name(self) -> str:
        """The accuracy figure this set is judged by, as reports name it."""
        return "PCKh@0.5" if self.head is not None else "PCK@0.2"

    @property
    def pck_threshold(self) -> float:
        return 0.5 if self.head is not None else 0.2

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeypointSetError(
                f"keypoint set {self.name!r} has no joint {name!r}; it has {', '.join(self.names)}"
            ) from None

    def side(self, name: str) -> int:
        """+1 for a joint of the person's right side, -1 left, 0 neither, as its name says."""
        return side_of(name)

    def shared_with(self, other: "KeypointSet") -> list[tuple[int, int]]:
        """(index here, index in other) of the joints both sets name alike, in this set's order."""
        theirs = {name: i for i, name in enumerate(other.names)}
        return [(i, theirs[name]) for i, name in enumerate(self.names) if name in theirs]

    def subset(self, indices) -> "KeypointSet":
        """The set restricted to the joints at `indices` (in that order): what a model of another
        set is scored on. Swap pairs, limbs and the head segment survive where both ends do."""
        indices = list(indices)
        new = {old: i for i, old in enumerate(indices)}
        head = self.head if self.head and all(j in new for j in self.head) else None
        return KeypointSet(
            f"{self.name}[{len(indices)} joints]",
            tuple(self.names[i] for i in indices),
            tuple(
                sorted(
                    (min(new[a], new[b]), max(new[a], new[b]))
                    for a, b in self.swap_pairs
                    if a in new and b in new
                )
            ),
            tuple((new[a], new[b]) for a, b in self.skeleton if a in new and b in new),
            tuple(self.sigmas[i] for i in indices),
            tuple(self.joint_weights[i] for i in indices),
            (new[head[0]], new[head[1]]) if head else None,
        )

    def same_joints(self, other: "KeypointSet") -> bool:
        return self.names == other.names and self.swap_pairs == other.swap_pairs

    def coco_category(self) -> dict:
        """The `categories` entry of a COCO keypoint file (COCO counts skeleton joints from 1)."""
        return {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }

    def to_json(self) -> dict:
        """The whole set as plain JSON by joint name: what the data set's info, the model's .json and
        the web page carry."""
        values = {
            "name": self.name,
            "keypoints": list(self.names),
            "swap": {self.names[a]: self.names[b] for a, b in self.swap_pairs}
            | {self.names[b]: self.names[a] for a, b in self.swap_pairs},
            "skeleton": [[self.names[a], self.names[b]] for a, b in self.skeleton],
            "sigmas": list(self.sigmas),
            "joint_weights": list(self.joint_weights),
            "pck": {PCK_HEAD: [self.names[i] for i in self.head]} if self.head else PCK_BOX,
        }
        if self.seed_order is not None:
            values["seed_order"] = [self.names[i] for i in self.seed_order]
        return values


def from_json(values, source: str = "keypoint set") -> KeypointSet:
    """A set from its JSON or YAML form (the presets' form, `to_json`'s output), every field checked.
    Without a `swap` field the partners are those the names imply (partner_by_name)."""
    if not isinstance(values, dict):
        raise KeypointSetError(f"{source}: expected a mapping, got {type(values).__name__}")
    unknown = set(values) - {
        "name",
        "keypoints",
        "swap",
        "skeleton",
        "sigmas",
        "joint_weights",
        "pck",
        "seed_order",
    }
    if unknown:
        raise KeypointSetError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    names = _names(values.get("keypoints"), source)
    position = {name: i for i, name in enumerate(names)}

    def joint(name, where):
        if not isinstance(name, str) or name not in position:
            raise KeypointSetError(
                f"{source}: {where} names {name!r}, which is not one of the keypoints"
            )
        return position[name]

    if "swap" in values:
        swap = values["swap"] or {}
    else:  # left out: the partners the names imply, as for a COCO file's joints (`swap: {}` for none)
        swap = {n: p for n in names if (p := partner_by_name(n, names)) is not None}
    if not isinstance(swap, dict):
        raise KeypointSetError(
            f"{source}: swap must map a joint to its partner, got {type(swap).__name__}"
        )
    pairs = set()
    for a, b in swap.items():
        i, j = joint(a, "swap"), joint(b, f"swap of {a!r}")
        if i == j:
            raise KeypointSetError(f"{source}: swap maps {a!r} to itself")
        if swap.get(b) != a:
            raise KeypointSetError(
                f"{source}: swap partners are not symmetric: {a!r} -> {b!r}, but {b!r} -> {swap.get(b)!r}"
            )
        pairs.add((min(i, j), max(i, j)))
    skeleton_values = values.get("skeleton") or []
    if not isinstance(skeleton_values, list):
        raise KeypointSetError(f"{source}: skeleton must be a list of [joint, joint] edges")
    skeleton = []
    for number, edge in enumerate(skeleton_values):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise KeypointSetError(
                f"{source}: skeleton edge {number} is {edge!r}, expected [joint, joint]"
            )
        skeleton.append(
            (joint(edge[0], f"skeleton edge {number}"), joint(edge[1], f"skeleton edge {number}"))
        )
    sigmas = _per_joint(values.get("sigmas"), "sigmas", names, source, default=None)
    weights = _per_joint(values.get("joint_weights"), "joint_weights", names, source, default=1.0)
    pck = values.get("pck", PCK_BOX)
    if pck == PCK_BOX:
        head = None
    elif (
        isinstance(pck, dict)
        and set(pck) == {PCK_HEAD}
        and isinstance(pck[PCK_HEAD], list)
        and len(pck[PCK_HEAD]) == 2
    ):
        head = (
            joint(pck[PCK_HEAD][0], "pck's head segment"),
            joint(pck[PCK_HEAD][1], "pck's head segment"),
        )
        if head[0] == head[1]:
            raise KeypointSetError(
                f"{source}: pck's head segment joins {pck[PCK_HEAD][0]!r} to itself"
            )
    else:
        raise KeypointSetError(
            f'{source}: pck is {pck!r}; expected "box" or {{head: [top, bottom]}}'
        )
    seed_order = None
    if values.get("seed_order") is not None:
        order = values["seed_order"]
        if not isinstance(order, list) or sorted(joint(n, "seed_order") for n in order) != list(
            range(len(names))
        ):
            raise KeypointSetError(f"{source}: seed_order must name every keypoint once")
        seed_order = tuple(position[n] for n in order)
    name = values.get("name", Path(source).stem)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise KeypointSetError(f"{source}: name {name!r} is not a short string")
    return KeypointSet(
        name, names, tuple(sorted(pairs)), tuple(skeleton), sigmas, weights, head, seed_order
    )


def recorded_in(values: dict, source: str) -> KeypointSet:
    """The set a record (a shard index, train_metadata.json, a model's .json) holds under
    "keypoint_set"; one written before sets were data holds none and is of the default set."""
    if "keypoint_set" not in values:
        return default()
    return from_json(values["keypoint_set"], f"{source}: keypoint_set")


def _names(values, source: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise KeypointSetError(f"{source}: keypoints must be a non-empty list of names")
    if len(values) > MAX_KEYPOINTS:
        raise KeypointSetError(
            f"{source}: {len(values)} keypoints; at most {MAX_KEYPOINTS} are supported"
        )
    seen = set()
    for i, name in enumerate(values):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise KeypointSetError(
                f"{source}: keypoint {i} is {name!r}, expected a name of 1-{MAX_NAME_LENGTH} characters"
            )
        if name in seen:
            raise KeypointSetError(f"{source}: keypoint name {name!r} repeats (keypoint {i})")
        seen.add(name)
    return tuple(values)


def _per_joint(values, field, names, source, default):
    if values is None:
        if default is None:
            return tuple(_known_sigma(name) for name in names)
        return (float(default),) * len(names)
    if not isinstance(values, (list, tuple)) or len(values) != len(names):
        count = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise KeypointSetError(f"{source}: {field} has {count} values for {len(names)} keypoints")
    out = []
    for name, value in zip(names, values):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise KeypointSetError(
                f"{source}: {field} of {name!r} is {value!r}, expected a positive number"
            )
        out.append(float(value))
    return tuple(out)


def _known_sigma(name: str) -> float:
    for preset_name in ("coco", "blazepose", "crowdpose", "mpii", "aic"):
        known = preset(preset_name)
        if name in known.names:
            return known.sigmas[known.index(name)]
    return FALLBACK_SIGMA


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))


_PRESETS: dict[str, KeypointSet] = {}


def preset(name: str = DEFAULT) -> KeypointSet:
    if name not in _PRESETS:
        path = PRESETS_DIR / f"{name}.yaml"
        if not re.fullmatch(r"[a-z0-9_]+", name or "") or not path.is_file():
            raise KeypointSetError(
                f"unknown keypoint set {name!r}; the presets are {', '.join(preset_names())}, "
                "or give a YAML file"
            )
        _PRESETS[name] = read_yaml(path)
    return _PRESETS[name]


def default() -> KeypointSet:
    return preset(DEFAULT)


# A set's YAML file is a few kilobytes; a bound keeps a hostile one from costing memory.
MAX_YAML_BYTES = 1 << 20


def read_yaml(path) -> KeypointSet:
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise KeypointSetError(
                f"{path}: {size} bytes; a keypoint set's YAML file is at most {MAX_YAML_BYTES}"
            )
        values = yaml.safe_load(path.read_text())
    except OSError as error:
        raise KeypointSetError(f"{path}: cannot be read ({error.strerror or error})") from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise KeypointSetError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    return from_json(values, str(path))


def load(spec: str) -> KeypointSet:
    """A preset's name or a local YAML file's path (the pipeline's `keypoints` parameter, once a
    remote file has been fetched)."""
    if spec.endswith((".yaml", ".yml")):
        return read_yaml(spec)
    return preset(spec)


def side_of(name: str) -> int:
    """+1 right, -1 left, 0 neither, by the spellings partner_by_name knows."""
    for pattern, other in _SIDES:
        if pattern.match(name):
            return -1 if other.lower().startswith("r") else 1
    return 0


def partner_by_name(name: str, names) -> str | None:
    """The left/right partner a joint's name implies (left_x/right_x, l_x/r_x, LeftX/RightX, x_left/x_right)."""
    for pattern, other in _SIDES:
        match = pattern.match(name)
        if match:
            if pattern.pattern.startswith("^(.+?)"):
                candidate = f"{match.group(1)}{match.group(2)}{other}"
            else:
                candidate = f"{other}{match.group(1)}{match.group(2)}"
            if candidate in names and candidate != name:
                return candidate
    return None


def from_coco_category(category, source: str, name: str | None = None) -> KeypointSet:
    """The set a COCO-format file names: `categories[0]`'s keypoints and skeleton (1-based, as COCO
    writes it), swap partners from the names, sigmas from a preset that names the joint alike. A
    file whose joints are exactly a preset's (same names, same order) is that preset."""
    if not isinstance(category, dict):
        raise KeypointSetError(f"{source}: categories[0] is not an object")
    names = _names(category.get("keypoints"), f"{source}: categories[0]")
    for preset_name in preset_names():
        known = preset(preset_name)
        if known.names == names:
            return known
    skeleton = []
    for number, edge in enumerate(category.get("skeleton") or []):
        if (
            not isinstance(edge, (list, tuple))
            or len(edge) != 2
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= len(names)
                for v in edge
            )
        ):
            raise KeypointSetError(
                f"{source}: categories[0].skeleton edge {number} is {edge!r}: expected two joint "
                f"numbers from 1 to {len(names)} (COCO counts from 1)"
            )
        skeleton.append([names[edge[0] - 1], names[edge[1] - 1]])
    swap = {n: p for n in names if (p := partner_by_name(n, names))}
    head = next(
        ([top, bottom] for top, bottom in _HEAD_SEGMENTS if top in names and bottom in names), None
    )
    return from_json(
        {
            "name": name or str(category.get("name") or "custom")[:MAX_NAME_LENGTH],
            "keypoints": list(names),
            "swap": swap,
            "skeleton": skeleton,
            "pck": {PCK_HEAD: head} if head else PCK_BOX,
        },
        source,
    )
