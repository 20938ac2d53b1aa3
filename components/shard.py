"""shard: COCO keypoints + images -> TFRecord shards, one tf.train.Example per person.

Takes  convert's output: annotations/person_keypoints_<split>.json and images/<split>/; or convert's
       packed output (packs/<split>-<iiiii>-of-<nnnnn>/, convert --num-shards N); or one pack alone
       (what a pipeline shard task gets): then the pack says its split and shard.
Does   deals the images of the split, ordered by image id, round-robin to N shards (pose/data/packs.py: the
       rule convert's packs follow); a shard holds its images' people in annotation-id order; skips
       people with no labelled joint; cuts a square crop around each
       person (the box grown by CROP_MARGIN, centred on the box), shrinks it so its side is at most
       --crop-size, and stores it as JPEG with the keypoints and box in crop pixels and the affine
       crop -> original (layout: pose/data/records.py). With --shard-index it writes only that shard
       (the pipeline fans out one task per shard); without, all shards in parallel threads.
Writes <split>-<iiiii>-of-<nnnnn>.tfrecord and index.json (docs/ARTIFACTS.md); the folder appears
       at once (built beside <output>, then renamed).

    python -m components.shard --input COCO_DIR --output DIR --split train --num-shards 16 [--shard-index 3]
    python -m components.shard --input COCO_DIR/packs/train-00003-of-00016 --output DIR --split train --num-shards 16
"""

import concurrent.futures
import json
import logging
import math
import os
import time
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow as tf

from components import cli
from pose.data import jpeg, packs, pixels, records
from pose.data.shard_index import write as write_index
from pose.data.sources.checks import BOX_MARGIN_FRACTION, box_within_margin
from pose.files import integrity, outputs, steplog
from pose.files.atomic import atomic_directory, atomic_file

log = logging.getLogger("shard")

SPLITS = ("train", "valid")
CROP_SIZE = 512  # default longest side of a stored person crop
CROP_MARGIN = 1.5  # crop side / longer box side: context for scale-down and rotation augmentation
JPEG_QUALITY = 92
# The largest crop side shard cuts, as a multiple of the picture's longer side: a box may reach
# BOX_MARGIN_FRACTION of the picture past each side (convert's bound), so its longer side is at most
# (1 + 2 x that) x the picture's and the crop CROP_MARGIN x that: 3 x, 9 x the picture's pixels at
# most (a 640x480 picture: a 1920 px crop, 11 MB), where a box claiming 1e12 would ask for terabytes.
MAX_CROP_SIDE_FACTOR = CROP_MARGIN * (1 + 2 * BOX_MARGIN_FRACTION)
PROGRESS_EVERY = 500


class ShardError(ValueError):
    """Input the step cannot shard: the message names the file, the record and what is wrong."""


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _finite_numbers(values: list) -> bool:
    try:
        return all(type(v) in (int, float) for v in values) and math.isfinite(math.fsum(values))
    except (OverflowError, ValueError):  # an integer too large for a float; inf - inf
        return False


def _load_people(
    input_dir: str, split: str, num_keypoints: int
) -> tuple[list[dict], dict, list[dict]]:
    """The people with at least one labelled joint, sorted by annotation id; the images by id;
    the people skipped for having none."""
    path = os.path.join(input_dir, "annotations", f"person_keypoints_{split}.json")
    try:
        with open(path) as f:
            coco = json.load(f)
        images = {image["id"]: image for image in coco["images"]}
        annotations = coco["annotations"]
    except RecursionError:
        raise ShardError(
            f"{path}: not a readable COCO keypoint file: JSON nested too deep"
        ) from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ShardError(f"{path}: not a readable COCO keypoint file: {error!r}") from error
    people, skipped = [], []
    for position, person in sorted(enumerate(annotations), key=lambda item: item[1].get("id", -1)):
        where = f"{path}: annotations[{position}] (id {person.get('id')})"
        keypoints = person.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
            raise ShardError(
                f"{where}: expected {3 * num_keypoints} keypoint values ({num_keypoints} joints of "
                f"the data's keypoint set x [x, y, v]), got "
                f"{len(keypoints) if isinstance(keypoints, list) else keypoints!r}"
            )
        if not _finite_numbers(keypoints):
            raise ShardError(
                f"{where}: keypoints hold a value that is not a finite number: {keypoints!r}"
            )
        bbox = person.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not _finite_numbers(bbox)
            or not (bbox[2] > 0 and bbox[3] > 0)
        ):
            raise ShardError(
                f"{where}: bbox must be finite [x, y, w, h] with w, h > 0, got {bbox!r}"
            )
        if person.get("image_id") not in images:
            raise ShardError(f"{where}: image_id {person.get('image_id')!r} is not in 'images'")
        if not any(keypoints[2::3]):
            skipped.append(person)
            continue
        people.append(person)
    return people, images, skipped


def crop_person(image: np.ndarray, bbox, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop centred on the box, side CROP_MARGIN x the longer box side, black outside the
    image, shrunk (area interpolation) to at most crop_size. Returns (crop, 2x3 affine crop -> original)."""
    x, y, w, h = (float(v) for v in bbox)
    side = max(1, math.ceil(max(w, h) * CROP_MARGIN))
    # Integer offsets make the first cut an exact copy; the box centre moves by half a pixel at most.
    left, top = round(x + w / 2 - (side - 1) / 2), round(y + h / 2 - (side - 1) / 2)
    cut = cv2.warpAffine(
        image,
        np.float32([[1, 0, left], [0, 1, top]]),
        (side, side),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    out = min(side, crop_size)
    if out < side:
        cut = cv2.resize(cut, (out, out), interpolation=cv2.INTER_AREA)
    ratio = side / out  # cv2.resize maps output pixel u to input (u + 0.5) * ratio - 0.5
    to_original = np.array(
        [[ratio, 0.0, left + 0.5 * ratio - 0.5], [0.0, ratio, top + 0.5 * ratio - 0.5]]
    )
    return cut, to_original


def _check_crop(person: dict, image_info: dict, shape) -> None:
    """ShardError naming the record when its box lies further past the picture than convert lets
    one (checks.BOX_MARGIN_FRACTION), so that the crop crop_person allocates (side x side x 3 bytes)
    is at most MAX_CROP_SIDE_FACTOR x the picture's longer side a side: a COCO file written by
    another tool, or edited, is checked here before OpenCV allocates from its numbers."""
    height, width = shape[:2]
    x, y, w, h = (float(v) for v in person["bbox"])
    side = max(w, h) * CROP_MARGIN
    bound = MAX_CROP_SIDE_FACTOR * max(width, height)
    if box_within_margin(x, y, x + w, y + h, width, height) and side <= bound:
        return
    raise ShardError(
        f"annotation {person.get('id')} (image id {image_info['id']}, {image_info['file_name']}): "
        f"bbox {person['bbox']!r} reaches more than {BOX_MARGIN_FRACTION:g} of the picture beyond "
        f"the {width}x{height} image, or its crop ({side:.0f} px a side) is over the bound of "
        f"{bound:.0f} px ({MAX_CROP_SIDE_FACTOR:g} x the longer side): not cropped"
    )


def _person_example(person: dict, image_info: dict, image: np.ndarray, crop_size: int) -> bytes:
    _check_crop(person, image_info, image.shape)
    crop, to_original = crop_person(image, person["bbox"], crop_size)
    to_crop = np.linalg.inv(np.vstack([to_original, [0.0, 0.0, 1.0]]))[:2]
    values = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
    visibility = values[:, 2].astype(np.int64)
    keypoints = values[:, :2] @ to_crop[:, :2].T + to_crop[:, 2]
    keypoints[visibility == 0] = 0.0  # unlabelled joints have no position
    x, y, w, h = (float(v) for v in person["bbox"])
    box_corner = to_crop @ np.array([x, y, 1.0])
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ShardError(f"annotation {person['id']}: JPEG encoding of the crop failed")
    return records.make_example(
        len(values),
        image_encoded=jpeg.tobytes(),
        image_file_name=image_info["file_name"],
        image_id=person["image_id"],
        image_original_size=image.shape[:2],
        person_id=person["id"],
        person_keypoints=keypoints,
        person_visibility=visibility,
        person_bbox=[*box_corner, w / to_original[0, 0], h / to_original[1, 1]],
        person_bbox_original=[x, y, w, h],
        crop_size=crop.shape[0],
        crop_to_original=to_original,
    )


def _read_image(input_dir: str, split: str, image_info: dict) -> np.ndarray:
    file_name = image_info["file_name"]
    if (
        not isinstance(file_name, str)
        or os.path.basename(file_name) != file_name
        or file_name in ("", ".", "..")
    ):
        raise ShardError(
            f"{input_dir}: image id {image_info['id']}: file_name {file_name!r} is not a plain file "
            f"name in images/{split}/ (it would read outside the input)"
        )
    path = os.path.join(input_dir, "images", split, file_name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ShardError(
            f"{path}: missing or not a readable image (image id {image_info['id']}): "
            f"{error.strerror}"
        ) from None
    problem = jpeg.problem(data)
    if problem:
        raise ShardError(f"{path}: {problem} (image id {image_info['id']})")
    try:
        pixels.check_picture(data, f"{path} (image id {image_info['id']})")
    except pixels.PictureTooLarge as error:
        raise ShardError(str(error)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), pixels.DECODE_FLAGS)
    if image is None:
        raise ShardError(f"{path}: missing or not a readable image (image id {image_info['id']})")
    expected = (image_info.get("height"), image_info.get("width"))
    if expected != image.shape[:2]:
        turned = ""
        if expected == image.shape[1::-1]:
            orientation = _orientation(data)
            if orientation != 1:
                turned = (
                    f"; it carries EXIF orientation {orientation}: the annotations are of the "
                    "picture as shown turned, but every step reads the stored pixels; re-save it "
                    "with the rotation applied (and no EXIF orientation), then convert again"
                )
        raise ShardError(
            f"{path}: image is {image.shape[0]}x{image.shape[1]} (h x w) but the annotations "
            f"say {expected[0]}x{expected[1]} (image id {image_info['id']}){turned}"
        )
    return image


def _orientation(data: bytes) -> int:
    try:
        return pixels.frame_info(lambda offset, size: data[offset : offset + size], len(data))[2]
    except pixels.HeaderProblem:
        return 1


class _Source(NamedTuple):
    """What one shard is cut from: the COCO folder holding its images, its people, their images."""

    folder: str
    people: list
    images: dict
    skipped: int


def _sources(input_dir: str, split: str, num_shards: int, indices, num_keypoints: int) -> dict:
    """{shard index: _Source} for the wanted shards, from a whole COCO folder, a packed one or one pack."""
    pack = packs.read_pack_info(input_dir)
    if pack is not None:
        wanted = (
            split,
            pack["num_shards"] if num_shards is None else num_shards,
            [pack["shard_index"]] if indices is None else list(indices),
        )
        if wanted != (pack["split"], pack["num_shards"], [pack["shard_index"]]):
            asked = "shards" if indices is None else f"shard {', '.join(map(str, indices))}"
            raise ShardError(
                f"{input_dir}: a pack of {pack['split']} shard {pack['shard_index']} of "
                f"{pack['num_shards']}, but asked for {split} {asked} of {num_shards}"
            )
        people, images, skipped = _load_people(input_dir, split, num_keypoints)
        return {pack["shard_index"]: _Source(input_dir, people, images, len(skipped))}
    if num_shards is None:
        raise ShardError(f"{input_dir}: not a pack, so --num-shards is needed")
    indices = range(num_shards) if indices is None else indices
    packed = os.path.isdir(os.path.join(input_dir, packs.PACKS_DIR))
    if packed and not os.path.isdir(os.path.join(input_dir, "images", split)):
        sources = {}
        for index in indices:
            folder = os.path.join(input_dir, packs.pack_path(split, index, num_shards))
            if packs.read_pack_info(folder) is None:
                found = sorted(os.listdir(os.path.join(input_dir, packs.PACKS_DIR)))
                raise ShardError(
                    f"{input_dir}: no pack {packs.pack_name(split, index, num_shards)} (convert packed "
                    f"it for another --num-shards? packs there: {', '.join(found[:4])}...)"
                )
            sources.update(_sources(folder, split, num_shards, [index], num_keypoints))
        return sources
    people, images, skipped = _load_people(input_dir, split, num_keypoints)
    shard_of = packs.shard_of_images(images, num_shards)
    return {
        index: _Source(
            input_dir,
            [p for p in people if shard_of[p["image_id"]] == index],
            images,
            sum(shard_of[p["image_id"]] == index for p in skipped),
        )
        for index in indices
    }


def _write_shard(
    input_dir: str,
    folder: str,
    split: str,
    index: int,
    num_shards: int,
    people: list[dict],
    images: dict,
    crop_size: int,
) -> tuple[int, dict]:
    """Writes one shard (through a temporary name); returns its record count and checksum."""
    path = os.path.join(folder, shard_name(split, index, num_shards))
    started, cached_id, image = time.perf_counter(), None, None
    with atomic_file(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for count, person in enumerate(people, 1):
            info = images[person["image_id"]]
            if info["id"] != cached_id:  # people of one image are neighbours in id order
                image, cached_id = _read_image(input_dir, split, info), info["id"]
            writer.write(_person_example(person, info, image, crop_size))
            if count % PROGRESS_EVERY == 0:
                log.info(
                    "shard %d: %d/%d people, %.0f/s",
                    index,
                    count,
                    len(people),
                    count / (time.perf_counter() - started),
                )
    return len(people), integrity.file_checksum(path)


def shard(
    input_dir: str,
    output_dir: str,
    split: str,
    num_shards: int | None,
    shard_index: int | None = None,
    crop_size: int = CROP_SIZE,
    allow_empty: bool = False,
) -> dict:
    """Writes the shards of one split (all, or only `shard_index`) and index.json; returns the index.
    From a pack, num_shards and shard_index may be None (the pack's own). A COCO folder with no labelled
    person is an error unless `allow_empty` (one pack of a packed folder may be empty)."""
    if split not in SPLITS:
        raise ShardError(f"split {split!r}: expected one of {SPLITS}")
    if (num_shards is not None and num_shards < 1) or (
        shard_index is not None and not 0 <= shard_index < (num_shards or packs.MAX_SHARDS)
    ):
        raise ShardError(
            f"shard index {shard_index} / num_shards {num_shards}: need 0 <= index < num_shards"
        )
    if crop_size < 16:
        raise ShardError(f"crop_size {crop_size}: too small for a person crop")
    outputs.check_output("shard", output_dir, [input_dir])
    with steplog.step(
        "shard",
        input=input_dir,
        split=split,
        num_shards=num_shards,
        shard_index=shard_index,
        output=output_dir,
    ) as wrote:
        try:
            keypoint_set = packs.read_keypoint_set(input_dir)
        except packs.PackError as error:
            raise ShardError(str(error)) from None
        sources = _sources(
            input_dir,
            split,
            num_shards,
            None if shard_index is None else [shard_index],
            keypoint_set.num_keypoints,
        )
        indices = sorted(sources)
        if (
            not any(source.people for source in sources.values())
            and not allow_empty
            and packs.read_pack_info(input_dir) is None
        ):
            raise ShardError(
                f"{input_dir}: no {split} person with a labelled joint to shard "
                f"({sum(s.skipped for s in sources.values())} unlabelled); pass --allow-empty to write "
                "empty shards"
            )
        num_shards = num_shards or packs.read_pack_info(input_dir)["num_shards"]
        with atomic_directory(output_dir, step="shard") as folder:
            jobs = [
                (
                    sources[i].folder,
                    str(folder),
                    split,
                    i,
                    num_shards,
                    sources[i].people,
                    sources[i].images,
                    crop_size,
                )
                for i in indices
            ]
            # Threads, not processes: the work is JPEG decoding, resizing and encoding in OpenCV, which
            # releases the GIL, and a process would pay TensorFlow's import (seconds) before its first record.
            with concurrent.futures.ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
                written = list(pool.map(lambda job: _write_shard(*job), jobs))
            counts = [count for count, _ in written]
            index = {
                "split": split,
                "num_shards": num_shards,
                "crop_size": crop_size,
                "crop_margin": CROP_MARGIN,
                "shards": {
                    shard_name(split, i, num_shards): count for i, count in zip(indices, counts)
                },
                "num_examples": sum(counts),
                "skipped_unlabelled": sum(sources[i].skipped for i in indices),
                "feature_spec": records.feature_spec_json(keypoint_set.num_keypoints),
                "keypoint_set": keypoint_set.to_json(),
                integrity.CHECKSUMS: {
                    shard_name(split, i, num_shards): checksum
                    for i, (_, checksum) in zip(indices, written)
                },
            }
            write_index(folder, index)
    wrote.update(
        keypoint_set=f"{keypoint_set.name} ({keypoint_set.num_keypoints} joints)",
        shards=len(index["shards"]),
        examples=index["num_examples"],
        skipped_unlabelled=index["skipped_unlabelled"],
    )
    return index


def main(argv=None) -> int:
    arguments = cli.parser("shard", __doc__)
    arguments.add_argument(
        "--input", required=True, help="convert's COCO folder (whole or packed), or one pack"
    )
    arguments.add_argument("--output", required=True, help="folder for the shards and index.json")
    arguments.add_argument("--split", required=True, choices=SPLITS)
    arguments.add_argument(
        "--num-shards", type=int, default=None, help="shards per split (a pack knows its own)"
    )
    arguments.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="write only this shard (0-based); from a pack, its own shard",
    )
    arguments.add_argument(
        "--crop-size", type=int, default=CROP_SIZE, help="longest side of a stored person crop"
    )
    arguments.add_argument(
        "--allow-empty", action="store_true", help="write empty shards for a split with no person"
    )
    return cli.run(
        "shard",
        arguments,
        lambda args: shard(
            args.input,
            args.output,
            args.split,
            args.num_shards,
            args.shard_index,
            args.crop_size,
            allow_empty=args.allow_empty,
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
