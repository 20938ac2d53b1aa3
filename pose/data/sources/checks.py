"""What every record read from a source passes, and the shape a reader yields it in.

A reader yields (index, image_id, Record or Bad) for each record of its file; convert adds where a
Bad was found (file, record, image_id) as an InvalidRecord. Keypoints travel in COCO visibility
codes (2 visible, 1 labelled but hidden, 0 unlabelled), [x, y, v] per joint of the keypoint set.
"""

import json
import math
import os
import re
from pathlib import Path
from typing import NamedTuple

from pose.data import pixels

# A labelled joint a pixel or two past the border is click noise (pulled inside); further out, a bad record.
OUTSIDE_TOLERANCE_PX = 2.0
# How far past the picture a box corner may lie, as a fraction of the picture's width (x) or height
# (y) beyond each side. COCO's, AIC's, CVAT's and Label Studio's boxes lie inside the picture (a
# person cut by the frame may be boxed a little past it); half a picture beyond is no box of anyone
# in it, and the bound keeps what shard allocates for a crop (CROP_MARGIN x the longer box side,
# squared) within CROP_MARGIN x (1 + 2 x this) = 3 times the picture's longer side, squared.
BOX_MARGIN_FRACTION = 0.5
# The largest annotation file convert reads, checked from its size before reading a byte. The real
# ones: COCO 2017 train's person_keypoints_train2017.json 238 MB (segmentations are most of it), AI
# Challenger's train file 117 MiB (BENCHMARKS.md). json.load holds about 7 times a file's size
# (117 MiB -> 0.77 GB), so 512 MiB (twice COCO's) bounds the read near 3.5 GB; a larger file is no
# keypoint file of a known data set (COCO's instances_train2017.json, 448 MB, is the wrong file).
MAX_ANNOTATION_BYTES = 512 * 1024 * 1024
COCO_VISIBILITY_CODES = (0, 1, 2)
_NUMBER_TYPES = frozenset((int, float))
# A file name in images/<split>/: a plain name, never a path (no '/', no '..').
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_TAIL_BYTES = 4096


class ConvertError(ValueError):
    """The input cannot be converted: layout not found, broken JSON, output not empty, an invalid record."""


class InvalidRecord(ConvertError):
    """One record is invalid; the message names the file, the record index, its image_id and the person."""

    def __init__(self, file, index, image_id, reason, human=None):
        self.file, self.index, self.image_id, self.reason, self.human = (
            str(file),
            index,
            image_id,
            reason,
            human,
        )
        person = f", {human}" if human else ""
        super().__init__(f"{file}: record {index} (image_id {image_id!r}{person}): {reason}")

    def as_reject(self, split: str) -> dict:
        return {
            "split": split,
            "file": self.file,
            "record": self.index,
            "image_id": self.image_id,
            "human": self.human,
            "reason": self.reason,
        }


class Bad(Exception):
    """What is wrong with a record; convert adds where it is (file, index, image_id)."""

    def __init__(self, reason, human=None):
        super().__init__(reason)
        self.reason, self.human = reason, human


class Person(NamedTuple):
    human: str  # how messages name the person: "human2", "annotation 17"
    keypoints: list  # [x, y, v] * K, COCO visibility codes
    box: list  # x1, y1, x2, y2


class Record(NamedTuple):
    index: int
    image_id: str  # how the source names the image, for messages
    image_file: str  # where the picture is
    output_name: str  # its file name in images/<split>/
    people: list
    claimed_size: tuple | None = None  # (width, height) the annotation file says, where it says one


def load_json(path: Path):
    """A source's annotation file, whole (the one place a source's JSON is read)."""
    return _load_json(path)


def _load_json(path: Path, object_hook=None, limit: int = MAX_ANNOTATION_BYTES):
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ConvertError(
                    f"{path}: {size:,} bytes is over the limit of {limit:,} bytes for an annotation "
                    "file (checks.MAX_ANNOTATION_BYTES; the largest real one, COCO 2017 train's, is "
                    "238 MB): not read"
                )
            return json.load(f, object_hook=object_hook)
    except RecursionError:
        raise ConvertError(
            f"{path}: JSON nested too deep to parse (arrays or objects thousands of levels inside "
            "each other): not an annotation file, whose records nest a few levels"
        ) from None
    except json.JSONDecodeError as error:
        raise ConvertError(
            f"{path}: broken JSON at line {error.lineno}, column {error.colno} "
            f"(char {error.pos}): {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConvertError(f"{path}: not UTF-8 JSON: {error}") from None


def load_coco_json(path: Path):
    """A COCO-format file without its segmentation polygons: they are most of COCO 2017's 240 MB and
    no step uses them; dropping each as its annotation is parsed keeps the peak near the rest."""
    return _load_json(path, _without_segmentation)


def _without_segmentation(values: dict) -> dict:
    values.pop("segmentation", None)
    return values


def check_plain_name(name: str, what: str = "image_id") -> None:
    if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise Bad(
            f"{what} {name!r} is not a plain file name (letters, digits, '_', '-', '.'; "
            "no '/' or '..'): it would name a file outside the image folder"
        )


def all_finite(values) -> bool:
    try:
        return math.isfinite(math.fsum(values))
    except (OverflowError, ValueError):  # an integer too large for a float; inf - inf
        return False


def check_keypoints(values, names, codes, human) -> list:
    """[x, y, v] * len(names): numbers, finite, v one of codes."""
    expected = 3 * len(names)
    if not isinstance(values, list) or len(values) != expected:
        length = len(values) if isinstance(values, list) else type(values).__name__
        raise Bad(
            f"keypoint list has length {length}, expected {expected} "
            f"({len(names)} joints x [x, y, v])",
            human,
        )
    if (
        set(map(type, values)) <= _NUMBER_TYPES
        and set(values[2::3]) <= set(codes)
        and all_finite(values)
    ):
        return values  # the common case, checked at C speed; the loop below finds what is wrong
    for joint, (x, y, v) in enumerate(zip(values[0::3], values[1::3], values[2::3])):
        if type(x) not in _NUMBER_TYPES or type(y) not in _NUMBER_TYPES:
            raise Bad(
                f"joint {joint} ({names[joint]}) has non-numeric coordinates {[x, y]!r}", human
            )
        if not all_finite((x, y)):
            raise Bad(
                f"joint {joint} ({names[joint]}) has coordinates {[x, y]!r}, not finite numbers",
                human,
            )
        if v not in codes or type(v) not in _NUMBER_TYPES:
            raise Bad(
                f"joint {joint} ({names[joint]}) has visibility code {v!r}, "
                f"expected one of {', '.join(map(str, sorted(codes)))}",
                human,
            )
    return values


def check_box(box, human) -> list:
    """[x1, y1, x2, y2] of finite numbers, corners in order."""
    if not isinstance(box, list) or len(box) != 4 or not set(map(type, box)) <= _NUMBER_TYPES:
        raise Bad(f"box {box!r} is not [x1, y1, x2, y2]", human)
    if not all_finite(box):
        raise Bad(f"box {box!r} has a coordinate that is not a finite number", human)
    x1, y1, x2, y2 = box
    if x2 < x1:
        raise Bad(f"box {box} has x2 < x1", human)
    if y2 < y1:
        raise Bad(f"box {box} has y2 < y1", human)
    return box


def check_coco_box(box, human) -> list:
    """A COCO [x, y, width, height] box as [x1, y1, x2, y2]."""
    if not isinstance(box, list) or len(box) != 4:
        raise Bad(f"bbox {box!r} is not [x, y, width, height]", human)
    if not set(map(type, box)) <= _NUMBER_TYPES or not all_finite(box):
        raise Bad(f"bbox {box!r} has a value that is not a finite number", human)
    x, y, w, h = box
    if w < 0 or h < 0:
        raise Bad(f"bbox {box} has a negative width or height", human)
    return [x, y, x + w, y + h]


def labelled_joints(keypoints: list) -> int:
    codes = keypoints[2::3]
    return len(codes) - codes.count(0)


def placed_keypoints(person: Person, width: int, height: int, names) -> list:
    """The keypoints as the output holds them: unlabelled joints at (0, 0), labelled joints a pixel or
    two past the border pulled inside, further out a Bad record."""
    values = person.keypoints
    xs, ys, codes = values[0::3], values[1::3], values[2::3]
    last_x, last_y = width - 1, height - 1
    if min(xs) >= 0 and max(xs) <= last_x and min(ys) >= 0 and max(ys) <= last_y:
        # The common case at C speed (min/max): every joint inside; the loop below handles the rest.
        out = list(values)
        if 0 in codes:
            for joint, code in enumerate(codes):
                if code == 0:
                    out[3 * joint : 3 * joint + 2] = (0, 0)
        return out
    tolerance = OUTSIDE_TOLERANCE_PX
    out = []
    for joint, (x, y, v) in enumerate(zip(xs, ys, codes)):
        if v == 0:
            out += (0, 0, 0)
        elif -tolerance <= x <= last_x + tolerance and -tolerance <= y <= last_y + tolerance:
            out += (min(max(x, 0), last_x), min(max(y, 0), last_y), v)
        else:
            raise Bad(
                f"joint {joint} ({names[joint]}) at ({x}, {y}) is outside the {width}x{height} image",
                person.human,
            )
    return out


def box_within_margin(x1, y1, x2, y2, width: int, height: int) -> bool:
    """Whether no corner of the box lies more than BOX_MARGIN_FRACTION of the picture beyond it: the
    one rule convert (placed_box) and shard (a COCO file another tool wrote) apply."""
    dx, dy = BOX_MARGIN_FRACTION * width, BOX_MARGIN_FRACTION * height
    return -dx <= x1 and x2 <= width + dx and -dy <= y1 and y2 <= height + dy


def placed_box(person: Person, width: int, height: int) -> list:
    """The box, or Bad when a corner lies more than BOX_MARGIN_FRACTION of the picture beyond it
    (a box far outside is no annotation of this picture, and shard would allocate for it)."""
    x1, y1, x2, y2 = person.box
    if box_within_margin(x1, y1, x2, y2, width, height):
        return person.box
    dx, dy = BOX_MARGIN_FRACTION * width, BOX_MARGIN_FRACTION * height
    raise Bad(
        f"box [x1, y1, x2, y2] {[x1, y1, x2, y2]} reaches more than {BOX_MARGIN_FRACTION:g} of the "
        f"picture beyond the {width}x{height} image (x from {-dx:g} to {width + dx:g}, y from "
        f"{-dy:g} to {height + dy:g} allowed)",
        person.human,
    )


# EXIF orientations that turn the picture by 90 degrees (5 to 8: width and height swap on display).
TURNED_ORIENTATIONS = frozenset((5, 6, 7, 8))


def exif_advice(path: str, orientation: int) -> str:
    shown = "turned by 90 degrees" if orientation in TURNED_ORIENTATIONS else "turned or mirrored"
    return (
        f"the picture carries EXIF orientation {orientation} (shown {shown}), but every step "
        "reads its stored pixels, unturned: if the annotations are of the picture as shown, "
        f"re-save {path} with the rotation applied and no EXIF orientation (e.g. `exiftran -ai` "
        "or `mogrify -auto-orient`), so that its stored pixels are what was annotated"
    )


def image_size(path: str):
    """(width, height) of a JPEG from its header, or Bad when missing, not a JPEG or truncated."""
    facts = image_facts(path)
    return facts if isinstance(facts, Bad) else facts[0]


def image_facts(path: str):
    """((width, height), EXIF orientation) of a JPEG from its header, or Bad when missing, not a
    JPEG or truncated.

    Walks the header's segments up to the first scan, then looks for the end-of-image marker in the
    file's last 4 KiB: two small reads per image instead of decoding megapixels (os.pread: the buffered
    file object costs more than the reads)."""

    def unreadable(why):
        return Bad(f"image {path} is unreadable: {why}")

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return Bad(f"image {path} is missing")
    except OSError as error:
        return unreadable(error.strerror or error)
    try:
        end = os.fstat(fd).st_size
        try:
            size, scan, orientation = pixels.frame_info(
                lambda offset, count: os.pread(fd, count, offset), end
            )
        except pixels.HeaderProblem as problem:
            return unreadable(problem)
        if scan >= end or b"\xff\xd9" not in os.pread(
            fd, _TAIL_BYTES, max(end - _TAIL_BYTES, scan)
        ):
            return unreadable("truncated (no end-of-image marker)")
        return size, orientation
    except OSError as error:
        return unreadable(error.strerror or error)
    finally:
        os.close(fd)
