"""A learnable synthetic keypoint data set: AI Challenger's release, or COCO-format files of any set.

`render_release(output_dir, num_train, num_valid, seed)` writes the official AIC layout (names as in
the 2017 archives); `render_coco(..., keypoint_set, layout)` labels the same figures with a keypoint
set's joints (COCO's 17, face parts included, or one's own) in COCO 2017's layout or CVAT's export.
The figures are cartoon humanoids: front-facing, so the person's right is on the image left,
and the right limbs are drawn darker than the left ones and a badge sits on the left chest, so that
a network can tell right from left from pixels. (Training with horizontal flips, which swap the labels,
turns those two cues into noise; the geometric one, right on the image left, survives flips.)
Each image is rendered from its own random stream (seed, split, index), so a release is byte-identical
for a seed and images can be rendered in any order.

Visibility follows AIC: 1 visible, 2 labelled but hidden (by an occluder or another person),
3 outside the image (coordinates 0, 0). Boxes are tight boxes (x1, y1, x2, y2) around each figure's
drawn pixels.
"""

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np

from pose.data import aic_release
from pose.files.atomic import atomic_file

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
MULTI_PERSON_FRACTION = 0.2
OCCLUDER_PROBABILITY = 0.35  # per person
SHIFT = 4  # cv2 sub-pixel bits
ONE = 1 << SHIFT
BACKGROUND_OWNER, OCCLUDER_OWNER = 0, 255

# Pixel noise is cut from one fixed table instead of drawn per image: drawing ~1M normals per image
# would cost more than the rest of the rendering.
# Split into its positive and negative parts so that adding it is two saturating uint8 operations.
_NOISE_SIZE = 704
_noise = np.rint(np.random.default_rng(20170902).normal(0.0, 8.0, (_NOISE_SIZE, _NOISE_SIZE, 3)))
_NOISE_UP, _NOISE_DOWN = (
    np.clip(_noise, 0, 255).astype(np.uint8),
    np.clip(-_noise, 0, 255).astype(np.uint8),
)
del _noise

# ---------------------------------------------------------------------------------------------
# ANATOMY: the body parts the renderer positions, by the names keypoint sets give them. This block is
# the one place outside pose/data/keypoints.py that spells joint names (the renderer must know where
# a shoulder is); what an image is labelled with is a keypoint set's names, looked up here.
# The first fourteen are the limbs' and head's joints, in the order the figures' random draws use.
BODY_PARTS = (
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "head_top",
    "neck",
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
)
(
    RIGHT_SHOULDER,
    RIGHT_ELBOW,
    RIGHT_WRIST,
    LEFT_SHOULDER,
    LEFT_ELBOW,
    LEFT_WRIST,
    RIGHT_HIP,
    RIGHT_KNEE,
    RIGHT_ANKLE,
    LEFT_HIP,
    LEFT_KNEE,
    LEFT_ANKLE,
    HEAD_TOP,
    NECK,
    NOSE,
    LEFT_EYE,
    RIGHT_EYE,
    LEFT_EAR,
    RIGHT_EAR,
) = range(len(BODY_PARTS))
BODY_JOINTS = 14  # drawn limbs and head: what an occluder may cover
# Face parts in the head's frame (fractions of its radii; the figure's right is the image left).
FACE_PARTS = {
    NOSE: (0.0, 0.4),
    LEFT_EYE: (0.38, 0.1),
    RIGHT_EYE: (-0.38, 0.1),
    LEFT_EAR: (0.95, 0.15),
    RIGHT_EAR: (-0.95, 0.15),
}
# END OF ANATOMY
# ---------------------------------------------------------------------------------------------


def body_parts_of(keypoint_set) -> list[int]:
    """The body part each of the set's joints is, in the set's order; SyntheticError for a joint the
    renderer cannot place."""
    missing = [name for name in keypoint_set.names if name not in BODY_PARTS]
    if missing:
        raise SyntheticError(
            f"keypoint set {keypoint_set.name!r}: the renderer cannot place {', '.join(missing)}; "
            f"it draws {', '.join(BODY_PARTS)}"
        )
    return [BODY_PARTS.index(name) for name in keypoint_set.names]


class SyntheticError(ValueError):
    """A synthetic data set that cannot be rendered as asked."""


def render_release(output_dir: str, num_train: int, num_valid: int, seed: int) -> dict:
    """Renders num_train + num_valid images with AIC annotations under output_dir; returns counts."""
    started = time.perf_counter()
    summary = {"seed": seed, "bytes": 0}
    for split, count in (("train", num_train), ("valid", num_valid)):
        release, annotation_name, image_folder = aic_release.AIC_LAYOUT[split]
        image_dir = Path(output_dir) / release / image_folder
        image_dir.mkdir(parents=True, exist_ok=True)
        records, people = [], 0
        for index in range(count):
            image_id = synthetic_image_id(seed, split, index)
            image, persons = render_image(np.random.default_rng([seed, _SPLIT_CODE[split], index]))
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for synthetic image {image_id}")
            (image_dir / f"{image_id}.jpg").write_bytes(jpeg.tobytes())
            summary["bytes"] += len(jpeg)
            records.append(_aic_record(image_id, persons))
            people += len(persons)
            if (index + 1) % 1000 == 0:
                log.info(
                    "%s: rendered %d/%d images (%.0f images/s)",
                    split,
                    index + 1,
                    count,
                    (index + 1) / (time.perf_counter() - started),
                )
        annotation_path = Path(output_dir) / release / annotation_name
        with atomic_file(annotation_path) as temporary:
            temporary.write_text(json.dumps(records))
        summary[f"{split}_images"] = count
        summary[f"{split}_people"] = people
        summary[f"{split}_annotations"] = str(annotation_path)
    log.info(
        "rendered %d + %d images in %.1fs", num_train, num_valid, time.perf_counter() - started
    )
    return summary


_SPLIT_CODE = {"train": 0, "valid": 1}
# layout -> split -> (annotation file, image folder), relative to the output: COCO 2017's, and the
# single-subset export CVAT writes (every image in one subset, "default").
COCO_LAYOUTS = {
    "coco2017": {
        "train": ("annotations/person_keypoints_train2017.json", "train2017"),
        "valid": ("annotations/person_keypoints_val2017.json", "val2017"),
    },
    "cvat": {"default": ("annotations/person_keypoints_default.json", "images/default")},
}


def render_coco(
    output_dir: str,
    num_train: int,
    num_valid: int,
    seed: int,
    keypoint_set,
    layout: str = "coco2017",
) -> dict:
    """Renders the figures render_release draws, labelled with `keypoint_set`'s joints (by name, from
    BODY_PARTS) in a COCO-format layout (COCO_LAYOUTS; cvat puts all num_train + num_valid images in
    its one subset); returns counts as render_release does. Boxes are COCO's [x, y, w, h]."""
    parts = body_parts_of(keypoint_set)
    started = time.perf_counter()
    summary = {"seed": seed, "bytes": 0, "layout": layout}
    splits = COCO_LAYOUTS[layout]
    counts = {"train": num_train, "valid": num_valid}
    if len(splits) == 1:
        counts = {next(iter(splits)): num_train + num_valid}
    for split, (annotation_name, image_folder) in splits.items():
        image_dir = Path(output_dir) / image_folder
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(counts[split]):
            stream = _SPLIT_CODE.get(split, 0)
            image, persons = render_image(np.random.default_rng([seed, stream, index]), parts)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for synthetic image {split} {index}")
            file_name = f"{seed:04d}{stream:02d}{index:06d}.jpg"
            (image_dir / file_name).write_bytes(jpeg.tobytes())
            summary["bytes"] += len(jpeg)
            image_id = len(images) + 1
            height, width = image.shape[:2]
            images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
            for person in persons:
                values = list(person["keypoints"])
                values[2::3] = [aic_release.AIC_TO_COCO_VISIBILITY[v] for v in values[2::3]]
                x1, y1, x2, y2 = person["box"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": values,
                        "num_keypoints": len(parts) - values[2::3].count(0),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        annotation_path = Path(output_dir) / annotation_name
        annotation_path.parent.mkdir(parents=True, exist_ok=True)
        coco = {
            "info": {"description": f"synthetic figures, keypoint set {keypoint_set.name}"},
            "images": images,
            "annotations": annotations,
            "categories": [keypoint_set.coco_category()],
        }
        with atomic_file(annotation_path) as temporary:
            temporary.write_text(json.dumps(coco))
        summary[f"{split}_images"] = len(images)
        summary[f"{split}_people"] = len(annotations)
        summary[f"{split}_annotations"] = str(annotation_path)
    log.info("rendered %s in the %s layout in %.1fs", counts, layout, time.perf_counter() - started)
    return summary


def synthetic_image_id(seed: int, split: str, index: int) -> str:
    """A 40-hex id like the real set's (they are SHA-1 digests too)."""
    return hashlib.sha1(f"synthetic-{seed}-{split}-{index}".encode()).hexdigest()


def _aic_record(image_id: str, persons: list) -> dict:
    return {
        "url": f"https://synthetic.invalid/ai_challenger/{image_id}.jpg",
        "image_id": image_id,
        "keypoint_annotations": {f"human{i + 1}": p["keypoints"] for i, p in enumerate(persons)},
        "human_annotations": {f"human{i + 1}": p["box"] for i, p in enumerate(persons)},
    }


# ---------------------------------------------------------------------------------------------
# One image


def render_image(rng: np.random.Generator, parts=None) -> tuple[np.ndarray, list[dict]]:
    """Returns (BGR uint8 image, persons), each person {"keypoints": [x, y, v] * K, "box": [x1, y1,
    x2, y2]} in AIC visibility codes, K the body parts `parts` names (default: AIC's fourteen)."""
    width, height = (int(v) for v in rng.integers(300, 701, size=2))
    image = _background(rng, height, width)
    # owner[y, x]: which person (1..n) or occluder drew the pixel last; decides visibility code 2.
    owner = np.zeros((height, width), np.uint8)
    num_people = int(rng.integers(2, 4)) if rng.random() < MULTI_PERSON_FRACTION else 1
    figures = _place_figures(rng, num_people, width, height)
    boxes = []
    for person, figure in enumerate(figures, start=1):
        _draw_figure(image, owner, person, figure, rng)
        boxes.append(_mask_box(owner == person))
    for figure in figures:
        if rng.random() < OCCLUDER_PROBABILITY:
            for _ in range(int(rng.integers(1, 3))):
                _draw_occluder(image, owner, figure, rng)
    _finish(image, rng)
    persons = [
        _annotate(figure, box, owner, person, width, height, parts)
        for person, (figure, box) in enumerate(zip(figures, boxes), start=1)
    ]
    return image, persons


def _annotate(figure, box, owner, person, width, height, parts=None) -> dict:
    joints = figure["joints"]
    if parts is not None:
        joints = np.vstack([joints, _face(figure)])[parts]
    joints = np.rint(joints).astype(int)
    values, inside = [], []
    for x, y in joints:
        if 0 <= x < width and 0 <= y < height:
            hidden = owner[y, x] not in (BACKGROUND_OWNER, person)
            values += [int(x), int(y), 2 if hidden else 1]
            inside.append((x, y))
        else:
            values += [0, 0, 3]
    x1, y1, x2, y2 = box
    if inside:  # a joint on the outline may round one pixel off the drawn mask
        xs, ys = zip(*inside)
        x1, y1, x2, y2 = min(x1, *xs), min(y1, *ys), max(x2, *xs), max(y2, *ys)
    return {"keypoints": values, "box": [int(x1), int(y1), int(x2), int(y2)]}


def _face(figure) -> np.ndarray:
    """The face parts where _draw_head draws them, in FACE_PARTS' order."""
    (rx, ry), rotation = figure["head_radii"], _rotation(figure["angle"])
    offsets = np.array([FACE_PARTS[part] for part in sorted(FACE_PARTS)]) * [rx, ry]
    return figure["head_centre"] + offsets @ rotation.T


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:  # the whole figure fell outside the image
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


# ---------------------------------------------------------------------------------------------
# Backgrounds


def _random_colour(rng, low=0, high=256) -> np.ndarray:
    return rng.integers(low, high, size=3).astype(np.float32)


def _background(rng, height: int, width: int) -> np.ndarray:
    """Built from small grids resized up and uint8 operations: full-size float maths is too slow."""
    kind = rng.integers(0, 4)
    if (
        kind == 0
    ):  # linear gradient: bilinear interpolation of a linear ramp between corners is exact
        angle = rng.uniform(0, 2 * np.pi)
        corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float) @ [np.cos(angle), np.sin(angle)]
        ramp = ((corners - corners.min()) / np.ptp(corners)).reshape(2, 2, 1)
        a, b = _random_colour(rng), _random_colour(rng)
        image = cv2.resize(
            (a + ramp * (b - a)).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR
        )
    elif kind == 1:  # smooth colour blobs
        cells = rng.integers(
            0, 256, size=(int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3), dtype=np.uint8
        )
        smooth = cv2.resize(cells, (width // 8, height // 8), interpolation=cv2.INTER_CUBIC)
        image = cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR)
    elif kind == 2:  # stripes or checks, drawn as polygons
        period, angle = rng.uniform(8, 60), rng.uniform(0, np.pi)
        mask = _stripes(height, width, period, angle)
        if rng.random() < 0.5:
            cv2.bitwise_xor(mask, _stripes(height, width, period, angle + np.pi / 2), dst=mask)
        a, b = _random_colour(rng), _random_colour(rng)
        palette = (
            (a + np.linspace(0, 1, 256)[:, None] * (b - a)).astype(np.uint8).reshape(256, 1, 3)
        )
        image = cv2.LUT(cv2.merge([mask, mask, mask]), palette)
    else:  # a flat wall with coarse texture
        texture = rng.normal(
            0, rng.uniform(5, 30), size=(height // 16 + 1, width // 16 + 1, 1)
        ) + _random_colour(rng)
        image = cv2.resize(
            np.clip(texture, 0, 255).astype(np.uint8),
            (width, height),
            interpolation=cv2.INTER_LINEAR,
        )
    for _ in range(int(rng.integers(2, 12))):  # clutter
        _draw_clutter(image, rng)
    return image


def _stripes(height: int, width: int, period: float, angle: float) -> np.ndarray:
    along, across = (
        np.array([np.cos(angle), np.sin(angle)]),
        np.array([-np.sin(angle), np.cos(angle)]),
    )
    reach = np.hypot(width, height)
    centre = np.array([width, height]) / 2
    offsets = np.arange(-reach, reach, period)[:, None, None]
    corners = (
        np.array([0, 0.5, 0.5, 0])[:, None] * period * along
        + np.array([-1, -1, 1, 1])[:, None] * reach * across
    )
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, list(_fixed(centre + offsets * along + corners)), 255, cv2.LINE_AA, SHIFT)
    return mask


def _draw_clutter(image: np.ndarray, rng) -> None:
    height, width = image.shape[:2]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    size = rng.uniform(0.03, 0.25) * min(width, height)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    shape = rng.integers(0, 4)
    if shape == 0:
        cv2.circle(
            image, _fixed_point((cx, cy)), int(size * ONE / 2), colour, -1, cv2.LINE_AA, SHIFT
        )
    elif shape == 1:
        cv2.fillConvexPoly(
            image,
            _fixed(_rectangle(rng, cx, cy, size, size * rng.uniform(0.3, 1.5))),
            colour,
            cv2.LINE_AA,
            SHIFT,
        )
    elif shape == 2:
        points = np.array([cx, cy]) + rng.uniform(-size, size, size=(int(rng.integers(3, 7)), 2))
        cv2.fillPoly(image, [_fixed(points)], colour, cv2.LINE_AA, SHIFT)
    else:
        end = np.array([cx, cy]) + rng.uniform(-2 * size, 2 * size, size=2)
        cv2.line(
            image,
            _fixed_point((cx, cy)),
            _fixed_point(end),
            colour,
            int(rng.integers(1, 6)),
            cv2.LINE_AA,
            SHIFT,
        )


def _rectangle(rng, cx, cy, w, h) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _fixed_point(point) -> tuple[int, int]:
    return round(float(point[0]) * ONE), round(float(point[1]) * ONE)


def _fixed(points) -> np.ndarray:
    return np.rint(np.asarray(points, dtype=np.float64) * ONE).astype(np.int32)


def _finish(image: np.ndarray, rng) -> None:
    """Sensor noise and, sometimes, blur, so that edges are not perfectly clean."""
    height, width = image.shape[:2]
    if rng.random() < 0.3:
        cv2.GaussianBlur(image, (5, 5), rng.uniform(0.5, 1.2), dst=image)
    weaker = int(rng.integers(0, 3))  # noise sigma 8, 4 or 2
    y0, x0 = (
        int(rng.integers(0, _NOISE_SIZE - height + 1)),
        int(rng.integers(0, _NOISE_SIZE - width + 1)),
    )
    window = np.s_[y0 : y0 + height, x0 : x0 + width]
    cv2.add(image, _NOISE_UP[window] >> weaker, dst=image)
    cv2.subtract(image, _NOISE_DOWN[window] >> weaker, dst=image)


# ---------------------------------------------------------------------------------------------
# Figures: a pose in body units (head top at the origin, y down, height to the ankles about 1),
# then scaled, rotated and placed.


def _direction(angle_degrees: float, side: int) -> np.ndarray:
    """Unit vector `angle` degrees away from straight down, towards the figure's side (-1 right = image left)."""
    a = np.radians(angle_degrees)
    return np.array([side * np.sin(a), np.cos(a)])


def _rotation(angle_degrees: float) -> np.ndarray:
    a = np.radians(angle_degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _pose(rng) -> dict:
    """Joints and body part shapes in body units, front view."""
    joints = np.zeros((BODY_JOINTS, 2))
    hip_mid = np.array([0.0, 0.5 + rng.uniform(-0.02, 0.02)])
    hip_half = rng.uniform(0.065, 0.085)
    joints[RIGHT_HIP] = hip_mid + [-hip_half, 0]
    joints[LEFT_HIP] = hip_mid + [hip_half, 0]

    # Upper body in its own frame, then leaned about the hip centre.
    shoulder_half = rng.uniform(0.1, 0.125)
    upper = {
        RIGHT_SHOULDER: np.array([-shoulder_half, 0.2 + rng.uniform(-0.015, 0.015)]),
        LEFT_SHOULDER: np.array([shoulder_half, 0.2 + rng.uniform(-0.015, 0.015)]),
        NECK: np.array([0.0, 0.145]),
    }
    lean = rng.uniform(-12, 12)
    lean_rotation = _rotation(lean)
    for joint, point in upper.items():
        joints[joint] = hip_mid + lean_rotation @ (point - hip_mid)

    head_tilt = lean + rng.uniform(-15, 15)
    head_radii = np.array([0.055, 0.072]) * rng.uniform(0.9, 1.1)
    head_axis = _rotation(head_tilt) @ np.array([0.0, -1.0])
    head_centre = joints[NECK] + head_axis * head_radii[1]
    joints[HEAD_TOP] = head_centre + head_axis * head_radii[1]

    limbs = []  # (start, end, start width, end width, side)
    for side, shoulder, elbow, wrist in (
        (-1, RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST),
        (1, LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST),
    ):
        raise_angle = rng.uniform(-20, 170)
        bend = rng.uniform(-140, 140)
        foreshortening = rng.uniform(0.7, 1.0) if rng.random() < 0.3 else 1.0
        joints[elbow] = joints[shoulder] + 0.165 * foreshortening * _direction(
            raise_angle + side * lean, side
        )
        joints[wrist] = joints[elbow] + 0.145 * _direction(raise_angle + bend + side * lean, side)
        limbs.append((shoulder, elbow, 0.06, 0.05, side))
        limbs.append((elbow, wrist, 0.05, 0.04, side))
    legs = []
    for side, hip, knee, ankle in (
        (-1, RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE),
        (1, LEFT_HIP, LEFT_KNEE, LEFT_ANKLE),
    ):
        spread = rng.uniform(-8, 35)
        bend = rng.uniform(-25, 45)
        foreshortening = rng.uniform(0.6, 1.0) if rng.random() < 0.2 else 1.0
        joints[knee] = joints[hip] + 0.245 * foreshortening * _direction(spread, side)
        joints[ankle] = joints[knee] + 0.235 * _direction(spread + bend, side)
        legs.append((hip, knee, 0.085, 0.065, side))
        legs.append((knee, ankle, 0.065, 0.045, side))

    torso = np.array(
        [
            joints[RIGHT_SHOULDER] + lean_rotation @ [-0.02, -0.015],
            joints[LEFT_SHOULDER] + lean_rotation @ [0.02, -0.015],
            joints[LEFT_HIP] + [0.03, 0.03],
            joints[RIGHT_HIP] + [-0.03, 0.03],
        ]
    )
    badge = joints[LEFT_SHOULDER] + lean_rotation @ [-0.05, 0.07]
    return {
        "joints": joints,
        "limbs": limbs,
        "legs": legs,
        "torso": torso,
        "badge": badge,
        "head_centre": head_centre,
        "head_radii": head_radii,
        "head_tilt": head_tilt,
    }


def _place_figures(rng, num_people: int, width: int, height: int) -> list[dict]:
    """Scales, rotates and places figures; several people get side-by-side slots so they rarely overlap."""
    figures = []
    slot_width = width / num_people
    for slot in range(num_people):
        pose = _pose(rng)
        rotation = _rotation(rng.uniform(-30, 30))
        outline = np.vstack([pose["joints"], pose["torso"]])
        centre = (outline.min(0) + outline.max(0)) / 2
        fraction = rng.uniform(0.35, 0.9) if num_people == 1 else rng.uniform(0.3, 0.6)
        scale = fraction * height
        extent = np.ptp((outline - centre) @ rotation.T, axis=0) + 0.12  # plus limb width and head
        if num_people > 1:  # fit the slot so that people stay apart
            scale = min(scale, 0.95 * slot_width / extent[0])
        half = extent * scale / 2
        low_x, high_x = slot * slot_width + half[0], (slot + 1) * slot_width - half[0]
        low_y, high_y = half[1], height - half[1]
        position = np.array(
            [
                rng.uniform(low_x, high_x) if low_x < high_x else (low_x + high_x) / 2,
                rng.uniform(low_y, high_y) if low_y < high_y else (low_y + high_y) / 2,
            ]
        )
        if num_people == 1 and rng.random() < 0.1:  # walk partly out of the frame
            position += rng.uniform(-0.35, 0.35, size=2) * scale

        def transform(p, r=rotation, c=centre, s=scale, t=position):
            return (np.asarray(p) - c) @ r.T * s + t

        figures.append(
            {
                "scale": scale,
                "angle": pose["head_tilt"] + np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])),
                "joints": transform(pose["joints"]),
                "torso": transform(pose["torso"]),
                "badge": transform(pose["badge"]),
                "head_centre": transform(pose["head_centre"]),
                "head_radii": pose["head_radii"] * scale,
                "limbs": pose["limbs"],
                "legs": pose["legs"],
            }
        )
    return figures


def _palette(rng) -> dict:
    skin = np.array(
        [[60, 80, 120], [90, 130, 190], [140, 180, 230], [170, 200, 240], [40, 60, 90]], float
    )
    shirt, trousers = _random_colour(rng, 70, 256), _random_colour(rng, 40, 230)
    colours = {
        "skin": skin[rng.integers(0, len(skin))] * rng.uniform(0.9, 1.1),
        "hair": _random_colour(rng, 0, 90),
        # The figure's right side is darker: a cue that survives rotation and lets a network
        # tell a right arm from a left arm that crossed over.
        "shirt": {-1: shirt * 0.55, 1: shirt},
        # A vest far from the sleeves' colour, so that an arm in front of the body stands out.
        "torso": (shirt + 128) % 256,
        "trousers": {-1: trousers * 0.55, 1: trousers * 1.1},
        "badge": _random_colour(rng),
        "outline": _random_colour(rng, 0, 50),
    }

    def as_bgr(c):
        return tuple(float(v) for v in np.minimum(c, 255))

    return {
        k: {s: as_bgr(c) for s, c in v.items()} if isinstance(v, dict) else as_bgr(v)
        for k, v in colours.items()
    }


def _segment_polygon(a, b, width_a, width_b) -> list[tuple[float, float]]:
    # Plain floats: this runs ~40 times per image on 2-vectors, where numpy's per-call cost dominates.
    (ax, ay), (bx, by) = a, b
    length = math.hypot(bx - ax, by - ay) or 1e-6
    nx, ny = (ay - by) / length, (bx - ax) / length
    ha, hb = width_a / 2, width_b / 2
    return [
        (ax + nx * ha, ay + ny * ha),
        (bx + nx * hb, by + ny * hb),
        (bx - nx * hb, by - ny * hb),
        (ax - nx * ha, ay - ny * ha),
    ]


def _draw_part(
    image, owner, person, colour, outline_colour, outline, segments=(), circles=(), polygon=None
) -> None:
    """Draws segments (a, b, width at a, width at b) with a round end at b, circles and a polygon, each
    with a dark outline, and marks them in the owner map."""

    def shapes(grow):
        polygons = [
            _fixed(_segment_polygon(a, b, wa + 2 * grow, wb + 2 * grow))
            for a, b, wa, wb in segments
        ]
        discs = [(_fixed_point(b), int((wb / 2 + grow) * ONE)) for a, b, wa, wb in segments]
        discs += [(_fixed_point(centre), int((radius + grow) * ONE)) for centre, radius in circles]
        return polygons, discs

    exact = shapes(0.0)
    for target, fill, (polygons, discs), line in (
        (image, outline_colour, shapes(outline), cv2.LINE_AA),
        (image, colour, exact, cv2.LINE_AA),
        (owner, person, exact, cv2.LINE_8),
    ):
        for points in polygons:
            cv2.fillConvexPoly(target, points, fill, line, SHIFT)
        for centre, radius in discs:
            cv2.circle(target, centre, radius, fill, -1, line, SHIFT)
    if polygon is not None:
        points = _fixed(polygon)
        cv2.fillConvexPoly(image, points, colour, cv2.LINE_AA, SHIFT)
        cv2.polylines(
            image,
            [points],
            True,
            outline_colour,
            max(1, int(round(2 * outline))),
            cv2.LINE_AA,
            SHIFT,
        )
        cv2.fillConvexPoly(owner, points, person, cv2.LINE_8, SHIFT)


def _draw_figure(image, owner, person: int, figure: dict, rng) -> None:
    colours = _palette(rng)
    scale, joints = figure["scale"], figure["joints"]
    outline = max(1.0, 0.006 * scale)
    ink = colours["outline"]

    for start, end, width_a, width_b, side in figure["legs"]:
        _draw_part(
            image,
            owner,
            person,
            colours["trousers"][side],
            ink,
            outline,
            segments=[(joints[start], joints[end], width_a * scale, width_b * scale)],
        )
    for side, ankle in ((-1, RIGHT_ANKLE), (1, LEFT_ANKLE)):
        foot = joints[ankle] + np.array([side * 0.03, 0.015]) * scale
        _draw_part(image, owner, person, ink, ink, 0, circles=[(foot, 0.028 * scale)])
    shoulder_mid = (joints[RIGHT_SHOULDER] + joints[LEFT_SHOULDER]) / 2
    _draw_part(
        image,
        owner,
        person,
        colours["skin"],
        ink,
        outline,
        segments=[(joints[NECK], shoulder_mid, 0.05 * scale, 0.06 * scale)],
    )
    _draw_part(image, owner, person, colours["torso"], ink, outline, polygon=figure["torso"])
    cv2.circle(
        image,
        _fixed_point(figure["badge"]),
        int(0.025 * scale * ONE),
        colours["badge"],
        -1,
        cv2.LINE_AA,
        SHIFT,
    )
    _draw_head(image, owner, person, figure, colours)
    for start, end, width_a, width_b, side in figure["limbs"]:
        _draw_part(
            image,
            owner,
            person,
            colours["shirt"][side],
            ink,
            outline,
            segments=[(joints[start], joints[end], width_a * scale, width_b * scale)],
        )
        if end in (RIGHT_WRIST, LEFT_WRIST):
            _draw_part(
                image,
                owner,
                person,
                colours["skin"],
                ink,
                outline,
                circles=[(joints[end], 0.03 * scale)],
            )


def _draw_head(image, owner, person, figure, colours) -> None:
    centre, (rx, ry), angle = figure["head_centre"], figure["head_radii"], figure["angle"]
    rotation = _rotation(angle)

    def ellipse(target, offset, radii, colour, line=cv2.LINE_AA):
        cv2.ellipse(
            target,
            _fixed_point(centre + rotation @ offset),
            _fixed_point(radii),
            angle,
            0,
            360,
            colour,
            -1,
            line,
            SHIFT,
        )

    outline = max(1.0, 0.006 * figure["scale"])
    ellipse(image, (0, 0), (rx + outline, ry + outline), colours["outline"])
    ellipse(image, (0, 0), (rx, ry), colours["hair"])
    ellipse(
        image, (0, 0.22 * ry), (0.85 * rx, 0.78 * ry), colours["skin"]
    )  # the face, below the hair
    ellipse(owner, (0, 0), (rx, ry), person, cv2.LINE_8)
    for eye_x in (-0.38, 0.38):
        ellipse(image, (eye_x * rx, 0.1 * ry), (0.14 * rx, 0.1 * ry), (30, 30, 30))
    nose = centre + (np.array([[0, 0.15], [-0.14, 0.45], [0.14, 0.45]]) * [rx, ry]) @ rotation.T
    cv2.fillConvexPoly(
        image, _fixed(nose), tuple(0.7 * c for c in colours["skin"]), cv2.LINE_AA, SHIFT
    )
    mouth = centre + (np.array([[-0.3, 0.68], [0.3, 0.68]]) * [rx, ry]) @ rotation.T
    cv2.line(
        image,
        _fixed_point(mouth[0]),
        _fixed_point(mouth[1]),
        (40, 40, 140),
        max(1, int(0.08 * ry)),
        cv2.LINE_AA,
        SHIFT,
    )


def _draw_occluder(image, owner, figure, rng) -> None:
    """A box or blob over one of the figure's joints: whatever joint it covers becomes code 2."""
    target = figure["joints"][rng.integers(0, BODY_JOINTS)]
    size = rng.uniform(0.1, 0.25) * figure["scale"]
    centre = target + rng.uniform(-0.4, 0.4, size=2) * size
    if rng.random() < 0.5:
        polygon = _rectangle(rng, *centre, size, size * rng.uniform(0.5, 1.5))
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=7))
        polygon = centre + (size / 2) * rng.uniform(0.6, 1.0, size=(7, 1)) * np.stack(
            [np.cos(angles), np.sin(angles)], 1
        )
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    cv2.fillPoly(image, [_fixed(polygon)], colour, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(owner, [_fixed(polygon)], OCCLUDER_OWNER, cv2.LINE_8, SHIFT)
