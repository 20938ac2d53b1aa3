"""COCO-format keypoint files (COCO Keypoints 1.0): COCO 2017, CrowdPose, CVAT's and Label Studio's
exports, and the seed's copy of AIC.

A file names its keypoint set in categories[0] (keypoints in order, skeleton 1-based); each
annotation of that category is a person: keypoints [x, y, v] * K (v 0 unlabelled, 1 hidden, 2
visible), bbox [x, y, w, h], iscrowd. Crowd annotations and people with fewer than min_keypoints
labelled joints are left out and counted. Label Studio may write a person's box and keypoints as two
annotations: a keypoint annotation without a box is merged into the smallest box-only annotation of
its image that holds all its labelled joints; what stays unmatched is counted.

Where a file is a data set's only subset, valid_image_ids picks its validation images: a fixed
fraction of them, chosen by a hash of the image id, so that the same file always splits alike.
"""

import hashlib
import logging
import posixpath
from pathlib import Path

from pose.data import keypoints as kp
from pose.data.sources.checks import (
    COCO_VISIBILITY_CODES,
    OUTSIDE_TOLERANCE_PX,
    Bad,
    ConvertError,
    Person,
    Record,
    all_finite,
    check_coco_box,
    check_keypoints,
    check_plain_name,
    labelled_joints,
    load_coco_json,
)

log = logging.getLogger(__name__)


class CocoFile:
    """A loaded COCO-format file and the keypoint set its categories[0] names."""

    def __init__(self, path: Path, keypoint_set=None):
        """keypoint_set: the set the layout labels (the seed's copy of AIC), categories[0] unread."""
        self.path = path
        data = load_coco_json(path)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)
        ):
            raise ConvertError(
                f"{path}: expected a COCO object with 'images' and 'annotations' lists"
            )
        self.data, self.category_id = data, None
        if keypoint_set is not None:
            self.keypoint_set = keypoint_set
            return
        categories = data.get("categories")
        if not isinstance(categories, list) or not categories:
            raise ConvertError(
                f"{path}: no categories: a COCO keypoint file names its joints in categories[0]"
            )
        try:
            self.keypoint_set = kp.from_coco_category(categories[0], str(path))
        except kp.KeypointSetError as error:
            raise ConvertError(str(error)) from None
        self.category_id = categories[0].get("id")


def valid_image_ids(image_ids, fraction: float) -> set:
    """round(fraction * n) of the ids (at least one of two or more when fraction > 0), those whose
    SHA-1 comes first: deterministic, and the same image stays on its side as a file grows."""
    ids = list(image_ids)
    if fraction <= 0 or len(ids) < 2:
        return set()
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    ranked = sorted(ids, key=lambda i: (hashlib.sha1(str(i).encode()).digest(), str(i)))
    return set(ranked[:count])


def read_records(
    coco: CocoFile,
    source,
    keypoint_set,
    min_keypoints: int,
    skipped: dict,
    select: str | None = None,
    valid_fraction: float = 0.0,
    flat: bool = False,
):
    """Yields (index, image_id, Record or Bad) per image. select "train" or "valid" keeps that side
    of valid_image_ids(valid_fraction). An image is source.images / file_name, or with `flat`
    source.images / the file name's last part (the seed's names carry a folder prefix); its name in
    the output is the file name's last part."""
    names, path = keypoint_set.names, coco.path
    by_image = {}
    for number, annotation in enumerate(coco.data["annotations"]):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise ConvertError(f"{path}: annotation {number} has no image_id")
        if (
            coco.category_id is not None
            and annotation.get("category_id", coco.category_id) != coco.category_id
        ):
            skipped["other_category"] += 1
            continue
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    coco.data["annotations"] = None
    images = coco.data["images"]
    chosen = None
    if select is not None:
        valid = valid_image_ids(
            (image.get("id") for image in images if isinstance(image, dict)), valid_fraction
        )
        chosen = (
            (lambda image_id: image_id in valid)
            if select == "valid"
            else (lambda image_id: image_id not in valid)
        )
    for index in range(len(images)):
        image, images[index] = images[index], None
        image_id = image.get("id") if isinstance(image, dict) else None
        if chosen is not None and not chosen(image_id):
            by_image.pop(image_id, None)
            continue
        try:
            if not isinstance(image, dict):
                raise Bad(f"expected a JSON object, got a {type(image).__name__}")
            if image_id is None or isinstance(image_id, (bool, float, list, dict)):
                raise Bad(f"id {image_id!r} is not an integer or a string")
            file_name = image.get("file_name")
            relative = _relative_image_path(file_name)
            name = posixpath.basename(relative)
            check_plain_name(name, "file_name")
            if flat:
                relative = name
            claimed = _claimed_size(image)
            people = _people(by_image.pop(image_id, []), names, min_keypoints, skipped)
            yield (
                index,
                image_id,
                Record(index, image_id, str(source.images / relative), name, people, claimed),
            )
        except Bad as bad:
            by_image.pop(image_id, None)
            yield index, image_id, bad
    if by_image:
        log.warning(
            "%s: dropped %d annotations of image ids not in 'images'",
            path,
            sum(map(len, by_image.values())),
        )


def _claimed_size(image: dict):
    """(width, height) the image entry says, None where it says none; Bad for a size that is no
    positive finite number (convert reads the size from the picture, but a file claiming Infinity
    or -5 is broken)."""
    width, height = image.get("width"), image.get("height")
    if width is None and height is None:
        return None
    for what, value in (("width", width), ("height", height)):
        if value is not None and not (
            type(value) in (int, float) and all_finite((value,)) and value > 0
        ):
            raise Bad(f"image {what} {value!r} is not a positive finite number")
    return (width, height) if width is not None and height is not None else None


def _relative_image_path(file_name) -> str:
    if not isinstance(file_name, str) or not file_name:
        raise Bad("no file_name string")
    relative = file_name.replace("\\", "/")
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise Bad(
            f"file_name {file_name!r} is not a relative path below the image folder (no '/' at the "
            "start, no '.' or '..' parts)"
        )
    return relative


def _people(annotations, names, min_keypoints, skipped) -> list:
    people, boxes_only, keypoints_only = [], [], []
    for annotation in annotations:
        human = f"annotation {annotation.get('id')}"
        if annotation.get("iscrowd"):
            skipped["crowd"] += 1
            continue
        area = annotation.get("area")
        if area is not None and not (
            type(area) in (int, float) and all_finite((area,)) and area >= 0
        ):
            raise Bad(f"area {area!r} is not a finite number >= 0", human)
        values = annotation.get("keypoints")
        box = annotation.get("bbox")
        if values is None or values == []:
            if box is None or box == []:
                raise Bad("has neither keypoints nor a bbox", human)
            boxes_only.append((human, check_coco_box(box, human)))
            continue
        values = check_keypoints(values, names, COCO_VISIBILITY_CODES, human)
        if box is None or box == []:
            keypoints_only.append((human, values))
        else:
            people.append(Person(human, values, check_coco_box(box, human)))
    if keypoints_only:
        people += _merge(keypoints_only, boxes_only, skipped)
    elif boxes_only:
        skipped["unmatched_boxes"] += len(boxes_only)
    kept = [person for person in people if labelled_joints(person.keypoints) >= min_keypoints]
    skipped["too_few_keypoints"] += len(people) - len(kept)
    return kept


def _merge(keypoints_only, boxes_only, skipped) -> list:
    """Each keypoint annotation into the smallest free box that holds all its labelled joints."""
    free = sorted(
        boxes_only, key=lambda item: (item[1][2] - item[1][0]) * (item[1][3] - item[1][1])
    )
    tolerance = OUTSIDE_TOLERANCE_PX
    merged = []
    for human, values in keypoints_only:
        joints = [(x, y) for x, y, v in zip(values[0::3], values[1::3], values[2::3]) if v != 0]
        for position, (box_human, (x1, y1, x2, y2)) in enumerate(free):
            if joints and all(
                x1 - tolerance <= x <= x2 + tolerance and y1 - tolerance <= y <= y2 + tolerance
                for x, y in joints
            ):
                merged.append(Person(f"{human} in {box_human}", values, [x1, y1, x2, y2]))
                del free[position]
                break
        else:
            skipped["unmatched_keypoints"] += 1
    skipped["unmatched_boxes"] += len(free)
    return merged
