"""convert: an AI Challenger keypoint release -> COCO keypoint files, one per split.

Takes  a folder holding, at any depth, the official AIC layout
         keypoint_train_annotations_20170909.json      + keypoint_train_images_20170902/
         keypoint_validation_annotations_20170911.json + keypoint_validation_images_20170911/
       or the seed project's already-converted layout (COCO-style JSON, 14 keypoints)
         ai_challenger_train.json + train/, ai_challenger_valid.json + valid/
Does   checks every record (keypoint list of 42, visibility codes, keypoints inside the image,
       box corners in order, image present and not truncated), keeps AIC joint order, maps AIC
       visibility 1/2/3 to COCO 2/1/0, optionally keeps only single-person images.
Writes annotations/person_keypoints_{train,valid}.json, images/{train,valid}/<aic id>.jpg (hard
       links where possible), rejects.json when --skip-invalid skipped records. With --num-shards N
       the images go into per-shard packs instead of images/: packs/<split>-<iiiii>-of-<nnnnn>/ holds
       one shard's images and annotations (pose/data/packs.py), so that a shard task reads only its share.
       Everything is written to a temporary folder beside <output> and renamed to <output> at the end.

    python -m components.convert --input DIR --output DIR [--single-person] [--skip-invalid] [--num-shards N]
"""

import concurrent.futures
import contextlib
import gc
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from components import cli
from pose.data import aic_release, packs, pixels
from pose.data import keypoints as keypoint_sets
from pose.files import outputs, steplog
from pose.files.atomic import atomic_directory

log = logging.getLogger("convert")
_AIC = keypoint_sets.preset("aic")

SPLITS = ("train", "valid")
# split -> (annotation file, image folder) of the official release (pose.data.keypoints.AIC_LAYOUT), found at any depth.
OFFICIAL_LAYOUT = {
    split: (annotations, images)
    for split, (_, annotations, images) in aic_release.AIC_LAYOUT.items()
}

# A labelled joint a pixel or two past the border is click noise (pulled inside); further out, a bad record.
OUTSIDE_TOLERANCE_PX = 2.0
_NUMBER_TYPES = frozenset((int, float))
# An image id becomes a file name in images/<split>/: a plain name, never a path (no '/', no '..').
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
IMAGE_CHUNK = 256  # images per thread-pool task: one future per image costs more than checking it
JSON_SLICE = 10_000  # list items encoded at a time
IMAGE_THREADS = 8  # image checks wait on file reads (slow on network disks), not on the CPU


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


class _Bad(Exception):
    """What is wrong with a record; the split loop adds where it is (file, index, image_id)."""

    def __init__(self, reason, human=None):
        super().__init__(reason)
        self.reason, self.human = reason, human


class Source(NamedTuple):
    layout: str  # "official" or "seed"
    annotations: Path
    images: Path


class Person(NamedTuple):
    human: str
    keypoints: list  # 42 numbers, AIC visibility codes
    box: list  # x1, y1, x2, y2


class Record(NamedTuple):
    index: int
    image_id: str  # the AIC id (40 hex digits in the real release)
    image_file: str
    people: list


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def convert(
    input_dir: str,
    output_dir: str,
    single_person: bool = False,
    skip_invalid: bool = False,
    num_shards: int | None = None,
    allow_empty: bool = False,
    max_image_pixels: int | None = None,
    keypoints: str = "auto",
    min_keypoints: int = 1,
    valid_fraction: float = 0.1,
) -> dict:
    """Converts the AIC release below input_dir into the COCO layout at output_dir; returns the
    counts. With num_shards, each split's images are written as num_shards packs
    (pose/data/packs.py), not images/. A split left with no image is an error unless `allow_empty`.
    An image whose header claims more than `max_image_pixels` (default
    pose.data.pixels.max_image_pixels()) is an invalid record: no later step decodes it."""
    output = Path(output_dir)
    pixel_limit = pixels.max_image_pixels(max_image_pixels)
    if num_shards is not None:
        packs.check_num_shards(num_shards)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConvertError(f"output {output} exists and is not an empty folder")
    outputs.check_output("convert", output_dir, [input_dir])
    with (
        steplog.step(
            "convert",
            input=input_dir,
            output=output_dir,
            single_person=single_person,
            skip_invalid=skip_invalid,
            num_shards=num_shards,
            max_image_pixels=pixel_limit,
        ) as wrote,
        _without_cyclic_gc(),
    ):
        sources = find_sources(Path(input_dir))
        with atomic_directory(output) as partial:
            (partial / "annotations").mkdir()
            counts, rejects = {}, []
            for split in SPLITS:
                counts.update(
                    _convert_split(
                        split,
                        sources[split],
                        partial,
                        single_person,
                        skip_invalid,
                        rejects,
                        num_shards,
                        pixel_limit,
                    )
                )
                if not counts[f"{split}_people"] and not allow_empty:
                    raise ConvertError(
                        f"{sources[split].annotations}: no {split} image (or no person) left to convert "
                        f"({counts[f'{split}_records']} records, {counts[f'{split}_rejected']} rejected"
                        f"{', only single-person images kept' if single_person else ''}); "
                        "pass --allow-empty to write an empty split"
                    )
            if num_shards:
                counts["num_shards"] = num_shards
            counts["rejected"] = len(rejects)
            if rejects:
                rejects.sort(key=lambda reject: (SPLITS.index(reject["split"]), reject["record"]))
                _write_json(partial / "rejects.json", {"count": len(rejects), "rejects": rejects})
                log.warning(
                    "skipped %d invalid records, listed in %s",
                    len(rejects),
                    output / "rejects.json",
                )
        wrote.update(counts)
    return counts


@contextlib.contextmanager
def _without_cyclic_gc():
    """The step makes millions of containers (JSON records, COCO dicts) and no reference cycles: the cyclic
    collector would rescan the growing heap again and again for nothing (on the full set, 45% of json.load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def find_sources(input_dir: Path) -> dict:
    """Finds each split's annotation file and image folder at any depth below input_dir."""
    if not input_dir.is_dir():
        raise ConvertError(f"input {input_dir} is not a folder")
    wanted = {
        name: (split, "official", images) for split, (name, images) in OFFICIAL_LAYOUT.items()
    }
    wanted.update(
        {name: (split, "seed", images) for split, (name, images) in aic_release.SEED_LAYOUT.items()}
    )
    official_image_folders = {images for _, images in OFFICIAL_LAYOUT.values()}
    found = {split: [] for split in SPLITS}
    for folder, subfolders, files in os.walk(input_dir):
        for name in files:
            if name in wanted:
                split, layout, images = wanted[name]
                found[split].append(Source(layout, Path(folder) / name, Path(folder) / images))
        # Listing 200,000 image names to find nothing there would dominate the walk.
        seed_here = {
            aic_release.SEED_LAYOUT[s][1] for s in SPLITS if aic_release.SEED_LAYOUT[s][0] in files
        }
        subfolders[:] = [
            d for d in subfolders if d not in official_image_folders and d not in seed_here
        ]
    sources = {}
    for split in SPLITS:
        candidates = found[split]
        if not candidates:
            names = " or ".join(
                f"{layout[split][0]} with {layout[split][1]}/"
                for layout in (OFFICIAL_LAYOUT, aic_release.SEED_LAYOUT)
            )
            raise ConvertError(f"no {split} split below {input_dir}: expected {names}")
        if len(candidates) > 1:
            raise ConvertError(
                f"{len(candidates)} {split} annotation files below {input_dir}: "
                f"{', '.join(str(c.annotations) for c in candidates)}; pass the folder of one release"
            )
        source = candidates[0]
        if not source.images.is_dir():
            raise ConvertError(
                f"{source.annotations}: no image folder {source.images.name}/ beside it"
            )
        sources[split] = source
    return sources


def _convert_split(
    split,
    source,
    output,
    single_person,
    skip_invalid,
    rejects,
    num_shards=None,
    pixel_limit=pixels.MAX_IMAGE_PIXELS,
) -> dict:
    started = time.perf_counter()

    def reject(error: InvalidRecord):
        if not skip_invalid:
            raise error
        rejects.append(error.as_reject(split))

    read_records = _official_records if source.layout == "official" else _seed_records
    records, num_read, not_single = [], 0, 0
    seen = {}
    for index, image_id, parsed in read_records(source):
        num_read += 1
        if isinstance(parsed, _Bad):
            reject(InvalidRecord(source.annotations, index, image_id, parsed.reason, parsed.human))
        elif image_id in seen:
            reject(
                InvalidRecord(
                    source.annotations,
                    index,
                    image_id,
                    f"duplicate image_id, first at record {seen[image_id]}",
                )
            )
        else:
            seen[image_id] = index
            if single_person and len(parsed.people) != 1:
                not_single += 1
            else:
                records.append(parsed)
    del seen
    log.info(
        "%s: read %d records from %s in %.1fs",
        split,
        num_read,
        source.annotations,
        time.perf_counter() - started,
    )

    phase = time.perf_counter()
    sizes = _map_in_chunks(image_size, [r.image_file for r in records], f"{split} check images")
    log.info("%s: checked %d images in %.1fs", split, len(records), time.perf_counter() - phase)
    images, annotations, placed = [], [], []
    for record, size in zip(records, sizes):
        try:
            if isinstance(size, _Bad):
                raise size
            width, height = size
            too_large = pixels.too_many_pixels(width, height, pixel_limit)
            if too_large:
                raise _Bad(f"image {record.image_file}: {too_large}")
            people = [_coco_keypoints(person, width, height) for person in record.people]
        except _Bad as bad:
            reject(
                InvalidRecord(
                    source.annotations, record.index, record.image_id, bad.reason, bad.human
                )
            )
            continue
        image_id = len(images) + 1
        file_name = f"{record.image_id}.jpg"
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for person, coco_keypoints in zip(record.people, people):
            x1, y1, x2, y2 = person.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": coco_keypoints,
                    "num_keypoints": _AIC.num_keypoints - coco_keypoints[2::3].count(0),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        placed.append((record.image_file, file_name))
    del records, sizes

    info = {
        "description": f"AI Challenger keypoints ({split}), AIC joint order",
        "source": str(source.annotations),
        "layout": source.layout,
        "single_person": single_person,
    }
    place = _ImagePlacer()
    phase = time.perf_counter()
    if num_shards:
        _write_packs(output, split, num_shards, info, images, annotations, placed, place)
    else:
        image_folder = output / "images" / split
        image_folder.mkdir(parents=True)
        _map_in_chunks(
            place,
            [(source_file, f"{image_folder}/{name}") for source_file, name in placed],
            f"{split} place images",
        )
    log.info(
        "%s: %s %d images in %.1fs",
        split,
        "linked" if place.link else "copied",
        len(placed),
        time.perf_counter() - phase,
    )
    coco = {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": [_AIC.coco_category()],
    }
    _write_json(output / "annotations" / f"person_keypoints_{split}.json", coco)
    elapsed = time.perf_counter() - started
    log.info(
        "%s: wrote %d images, %d people in %.1fs, %.0f records/s",
        split,
        len(images),
        len(annotations),
        elapsed,
        num_read / max(elapsed, 1e-9),
    )
    counts = {
        f"{split}_records": num_read,
        f"{split}_images": len(images),
        f"{split}_people": len(annotations),
        f"{split}_rejected": num_read - len(images) - not_single,
    }
    if single_person:
        counts[f"{split}_not_single_person"] = not_single
    return counts


# ---------------------------------------------------------------------------------------------
# Reading the two layouts: each yields (index, image_id, Record or _Bad)
# ---------------------------------------------------------------------------------------------


def _official_records(source: Source):
    data = _load_json(source.annotations)
    if not isinstance(data, list):
        raise ConvertError(
            f"{source.annotations}: expected a JSON list of records, got a {type(data).__name__}"
        )
    images = str(source.images)  # f-strings: pathlib would cost more than the checks, 200,000 times
    for index in range(len(data)):
        # Dropping each input record once read keeps the peak near one copy of the data set.
        record, data[index] = data[index], None
        image_id = record.get("image_id") if isinstance(record, dict) else None
        try:
            yield index, image_id, _parse_official(index, record, images)
        except _Bad as bad:
            yield index, image_id, bad


def _parse_official(index, record, images: str) -> Record:
    if not isinstance(record, dict):
        raise _Bad(f"expected a JSON object, got a {type(record).__name__}")
    image_id = record.get("image_id")
    if not isinstance(image_id, str) or not image_id:
        raise _Bad("no image_id string")
    _check_image_id(image_id)
    keypoints, boxes = record.get("keypoint_annotations"), record.get("human_annotations")
    for field, value in (("keypoint_annotations", keypoints), ("human_annotations", boxes)):
        if not isinstance(value, dict):
            raise _Bad(f"{field} is missing or not an object")
    if keypoints.keys() != boxes.keys():
        if keypoints.keys() - boxes.keys():
            raise _Bad(
                "has keypoints but no box in human_annotations",
                min(keypoints.keys() - boxes.keys()),
            )
        raise _Bad(
            "has a box but no keypoints in keypoint_annotations",
            min(boxes.keys() - keypoints.keys()),
        )
    people = [
        Person(
            human,
            _check_keypoints(keypoints[human], aic_release.AIC_VISIBILITY_CODES, human),
            _check_box(boxes[human], human),
        )
        for human in keypoints
    ]
    return Record(index, image_id, f"{images}/{image_id}.jpg", people)


def _seed_records(source: Source):
    """The seed's files are COCO already (COCO visibility, xywh boxes); they are read back into AIC terms so
    that one set of checks and one writer serve both layouts."""
    data = _load_json(source.annotations)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ConvertError(
            f"{source.annotations}: expected a COCO object with 'images' and 'annotations' lists"
        )
    by_image = {}
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise ConvertError(f"{source.annotations}: annotation {number} has no image_id")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    images = data["images"]
    for index in range(len(images)):
        image, images[index] = images[index], None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        image_id = Path(file_name).stem if isinstance(file_name, str) else None
        try:
            if image_id is None:
                raise _Bad("no file_name string")
            _check_image_id(image_id)
            people = []
            for annotation in by_image.pop(image.get("id"), []):
                human = f"annotation {annotation.get('id')}"
                coco_keypoints = _check_keypoints(
                    annotation.get("keypoints"), tuple(aic_release.COCO_TO_AIC_VISIBILITY), human
                )
                aic_keypoints = list(coco_keypoints)
                aic_keypoints[2::3] = [
                    aic_release.COCO_TO_AIC_VISIBILITY[v] for v in coco_keypoints[2::3]
                ]
                box = annotation.get("bbox")
                if not isinstance(box, list) or len(box) != 4:
                    raise _Bad(f"bbox {box!r} is not [x, y, width, height]", human)
                x, y, w, h = box
                people.append(Person(human, aic_keypoints, _check_box([x, y, x + w, y + h], human)))
            yield (
                index,
                image_id,
                Record(index, image_id, str(source.images / Path(file_name).name), people),
            )
        except _Bad as bad:
            yield index, image_id, bad
    if by_image:
        log.warning(
            "%s: dropped %d annotations of image ids not in 'images'",
            source.annotations,
            sum(map(len, by_image.values())),
        )


def _load_json(path: Path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ConvertError(
            f"{path}: broken JSON at line {error.lineno}, column {error.colno} "
            f"(char {error.pos}): {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConvertError(f"{path}: not UTF-8 JSON: {error}") from None


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _check_image_id(image_id: str) -> None:
    if not _PLAIN_ID.fullmatch(image_id) or image_id in (".", ".."):
        raise _Bad(
            f"image_id {image_id!r} is not a plain file name (letters, digits, '_', '-', '.'; "
            "no '/' or '..'): it would name a file outside the release's image folder"
        )


def _all_finite(values) -> bool:
    try:
        return math.isfinite(math.fsum(values))
    except (OverflowError, ValueError):  # an integer too large for a float; inf - inf
        return False


def _check_keypoints(values, codes, human) -> list:
    expected = 3 * _AIC.num_keypoints
    if not isinstance(values, list) or len(values) != expected:
        length = len(values) if isinstance(values, list) else type(values).__name__
        raise _Bad(
            f"keypoint list has length {length}, expected {expected} ({_AIC.num_keypoints} joints x [x, y, v])",
            human,
        )
    if (
        set(map(type, values)) <= _NUMBER_TYPES
        and set(values[2::3]) <= set(codes)
        and _all_finite(values)
    ):
        return values  # the common case, checked at C speed; the loop below finds what is wrong
    for joint, (x, y, v) in enumerate(zip(values[0::3], values[1::3], values[2::3])):
        if type(x) not in _NUMBER_TYPES or type(y) not in _NUMBER_TYPES:
            raise _Bad(
                f"joint {joint} ({_AIC.names[joint]}) has non-numeric coordinates {[x, y]!r}", human
            )
        if not _all_finite((x, y)):
            raise _Bad(
                f"joint {joint} ({_AIC.names[joint]}) has coordinates {[x, y]!r}, not finite numbers",
                human,
            )
        if v not in codes or type(v) not in _NUMBER_TYPES:
            raise _Bad(
                f"joint {joint} ({_AIC.names[joint]}) has visibility code {v!r}, "
                f"expected one of {', '.join(map(str, sorted(codes)))}",
                human,
            )
    return values


def _check_box(box, human) -> list:
    if not isinstance(box, list) or len(box) != 4 or not set(map(type, box)) <= _NUMBER_TYPES:
        raise _Bad(f"box {box!r} is not [x1, y1, x2, y2]", human)
    if not _all_finite(box):
        raise _Bad(f"box {box!r} has a coordinate that is not a finite number", human)
    x1, y1, x2, y2 = box
    if x2 < x1:
        raise _Bad(f"box {box} has x2 < x1", human)
    if y2 < y1:
        raise _Bad(f"box {box} has y2 < y1", human)
    return box


def _coco_keypoints(person: Person, width: int, height: int) -> list:
    """AIC [x, y, v]*14 -> COCO [x, y, v]*14: visibility 1/2/3 -> 2/1/0, unlabelled at (0, 0), labelled
    joints a pixel or two past the border pulled inside."""
    values, to_coco = person.keypoints, aic_release.AIC_TO_COCO_VISIBILITY
    xs, ys, codes = values[0::3], values[1::3], values[2::3]
    last_x, last_y = width - 1, height - 1
    if min(xs) >= 0 and max(xs) <= last_x and min(ys) >= 0 and max(ys) <= last_y:
        # The common case at C speed (min/max, map): every joint inside; the loop below handles the rest.
        out = list(values)
        out[2::3] = map(to_coco.__getitem__, codes)
        if 3 in codes:
            for joint, code in enumerate(codes):
                if code == 3:
                    out[3 * joint : 3 * joint + 2] = (0, 0)
        return out
    tolerance = OUTSIDE_TOLERANCE_PX
    out = []
    for joint, (x, y, v) in enumerate(zip(xs, ys, codes)):
        if v == 3:
            out += (0, 0, 0)
        elif -tolerance <= x <= last_x + tolerance and -tolerance <= y <= last_y + tolerance:
            out += (min(max(x, 0), last_x), min(max(y, 0), last_y), to_coco[v])
        else:
            raise _Bad(
                f"joint {joint} ({_AIC.names[joint]}) at ({x}, {y}) is outside the {width}x{height} image",
                person.human,
            )
    return out


_TAIL_BYTES = 4096


def image_size(path: str):
    """(width, height) of a JPEG from its header, or _Bad when missing, not a JPEG, truncated or
    over the pixel limit (pose.data.pixels).

    Walks the header's segments up to the first scan, then looks for the end-of-image marker in the
    file's last 4 KiB: two small reads per image instead of decoding megapixels (os.pread: the buffered
    file object costs more than the reads)."""

    def unreadable(why):
        return _Bad(f"image {path} is unreadable: {why}")

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _Bad(f"image {path} is missing")
    except OSError as error:
        return unreadable(error.strerror or error)
    try:
        end = os.fstat(fd).st_size
        try:
            size, scan = pixels.frame_size(lambda offset, count: os.pread(fd, count, offset), end)
        except pixels.HeaderProblem as problem:
            return unreadable(problem)
        if scan >= end or b"\xff\xd9" not in os.pread(
            fd, _TAIL_BYTES, max(end - _TAIL_BYTES, scan)
        ):
            return unreadable("truncated (no end-of-image marker)")
        return size
    except OSError as error:
        return unreadable(error.strerror or error)
    finally:
        os.close(fd)


def _write_packs(
    output: Path,
    split: str,
    num_shards: int,
    info: dict,
    images: list,
    annotations: list,
    placed: list,
    place,
) -> None:
    """One pack per shard: its images (pose.data.packs.shard_of_images) with their people, and pack.json."""
    shard_of = packs.shard_of_images([image["id"] for image in images], num_shards)
    pack_images = [[] for _ in range(num_shards)]
    pack_people = [[] for _ in range(num_shards)]
    for image in images:
        pack_images[shard_of[image["id"]]].append(image)
    for person in annotations:
        pack_people[shard_of[person["image_id"]]].append(person)
    for index in range(num_shards):
        folder = output / packs.pack_path(split, index, num_shards)
        (folder / "images" / split).mkdir(parents=True)
        (folder / "annotations").mkdir()
        _write_json(
            folder / "annotations" / f"person_keypoints_{split}.json",
            {
                "info": {**info, "shard_index": index, "num_shards": num_shards},
                "images": pack_images[index],
                "annotations": pack_people[index],
                "categories": [_AIC.coco_category()],
            },
        )
        packs.write_pack_info(
            folder, split, index, num_shards, len(pack_images[index]), len(pack_people[index])
        )
    targets = [
        (
            source_file,
            f"{output}/{packs.pack_path(split, shard_of[image['id']], num_shards)}"
            f"/images/{split}/{name}",
        )
        for image, (source_file, name) in zip(images, placed)
    ]
    _map_in_chunks(place, targets, f"{split} place images in {num_shards} packs")


class _ImagePlacer:
    """Hard-links images into the output; copies once linking fails (another file system, no permission)."""

    def __init__(self):
        self.link = True

    def __call__(self, item):
        source, target = item
        if self.link:
            try:
                os.link(source, target)
                return
            except FileExistsError:
                raise
            except OSError as error:
                log.info("cannot hard-link %s (%s): copying images instead", source, error.strerror)
                self.link = False
        shutil.copyfile(source, target)


def _map_in_chunks(function, items: list, label: str) -> list:
    chunks = [items[i : i + IMAGE_CHUNK] for i in range(0, len(items), IMAGE_CHUNK)]
    results = []
    with (
        concurrent.futures.ThreadPoolExecutor(IMAGE_THREADS) as pool,
        tqdm(total=len(items), desc=label, unit="img", mininterval=2, leave=False) as progress,
    ):
        for chunk_results in pool.map(lambda chunk: [function(item) for item in chunk], chunks):
            results += chunk_results
            progress.update(len(chunk_results))
    return results


def _write_json(path: Path, content: dict) -> None:
    """json.dump encodes in pure Python, json.dumps in C (~10x faster); long lists go in slices so that
    the encoded text never has to be held whole."""
    with open(path, "w") as f:
        f.write("{")
        for number, (key, value) in enumerate(content.items()):
            f.write(("," if number else "") + json.dumps(key) + ":")
            if not isinstance(value, list):
                f.write(json.dumps(value, separators=(",", ":")))
                continue
            f.write("[")
            for start in range(0, len(value), JSON_SLICE):
                f.write(
                    ("," if start else "")
                    + json.dumps(value[start : start + JSON_SLICE], separators=(",", ":"))[1:-1]
                )
            f.write("]")
        f.write("}")


# ---------------------------------------------------------------------------------------------
# Command line and KFP component
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    arguments = cli.parser("convert", __doc__)
    arguments.add_argument(
        "--input", required=True, help="folder holding the AIC release (at any depth)"
    )
    arguments.add_argument(
        "--output", required=True, help="output folder (must be absent or empty)"
    )
    arguments.add_argument(
        "--single-person", action="store_true", help="keep only images with exactly one person"
    )
    arguments.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records (listed in rejects.json) instead of stopping",
    )
    arguments.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="write each split's images as N per-shard packs (packs/) instead of images/",
    )
    arguments.add_argument(
        "--allow-empty", action="store_true", help="write a split that has no image left"
    )
    arguments.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="refuse (or with --skip-invalid reject) an image whose header "
        "claims more "
        f"pixels (default ${pixels.ENVIRONMENT} or "
        f"{pixels.MAX_IMAGE_PIXELS:,})",
    )
    return cli.run(
        "convert",
        arguments,
        lambda args: print(
            json.dumps(
                convert(
                    args.input,
                    args.output,
                    single_person=args.single_person,
                    skip_invalid=args.skip_invalid,
                    num_shards=args.num_shards,
                    allow_empty=args.allow_empty,
                    max_image_pixels=args.max_image_pixels,
                )
            )
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
