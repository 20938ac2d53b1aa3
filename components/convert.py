"""convert: a keypoint data set (AI Challenger, or COCO-format) -> COCO keypoint files, one per split.

Takes  a folder holding, at any depth, one data set in a layout pose/data/sources/layouts.py knows:
       AIC's official archives, the seed's copy of them, COCO 2017 (annotations/person_keypoints_
       {train,val}2017.json + train2017/, val2017/), a single-file export (person_keypoints_<subset>
       .json; CVAT writes annotations/ + images/<subset>/) or Label Studio's (result.json + images/).
Does   checks every record (keypoint list of 3 x the set's joints, visibility codes, keypoints inside
       the image, box corners in order and within half a picture of it, image present and not
       truncated, annotation file at most 512 MiB), keeps the set's joint order,
       writes COCO visibility (AIC's 1/2/3 become 2/1/0), leaves out crowd people and people with fewer
       than --min-keypoints labelled joints (counted), optionally keeps only single-person images. A
       data set with one subset gives --valid-fraction of its images (by image id) to valid.
Writes annotations/person_keypoints_{train,valid}.json, images/{train,valid}/<name>.jpg (hard links
       where possible), keypoint_set.json (the set used), rejects.json when --skip-invalid skipped
       records. With --num-shards N the images go into per-shard packs instead of images/:
       packs/<split>-<iiiii>-of-<nnnnn>/ holds one shard's images, annotations and keypoint_set.json
       (pose/data/packs.py), so that a shard task reads only its share. Everything is written to a
       temporary folder beside <output> and renamed to <output> at the end.

    python -m components.convert --input DIR --output DIR [--keypoints auto|PRESET|FILE.yaml]
        [--min-keypoints 1] [--valid-fraction 0.1] [--single-person] [--skip-invalid] [--num-shards N]
"""

import contextlib
import gc
import json
import logging
import time
from collections import Counter
from pathlib import Path

from components import cli
from pose.data import keypoints as kp
from pose.data import packs, pixels
from pose.data.sources import checks, layouts, writing
from pose.data.sources.checks import Bad, ConvertError, InvalidRecord, image_size
from pose.files import outputs, steplog
from pose.files.atomic import atomic_directory

__all__ = ["ConvertError", "InvalidRecord", "convert", "image_size", "main"]

log = logging.getLogger("convert")

SPLITS = layouts.SPLITS
DEFAULT_VALID_FRACTION = 0.1
# What was left out of a split, counted: counts key -> what the log calls it.
SKIPPED = {
    "crowd": "crowd annotations",
    "too_few_keypoints": "people with too few labelled joints",
    "unmatched_keypoints": "keypoint annotations in no box",
    "unmatched_boxes": "boxes with no keypoints",
    "other_category": "annotations of another category",
}


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
    keypoints: str = kp.AUTO,
    min_keypoints: int = 1,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
) -> dict:
    """Converts the data set below input_dir into the COCO layout at output_dir; returns the counts
    (with "keypoint_set": the set's JSON). keypoints: auto (the set the data names), a preset name
    or a YAML file's path or URI, which must name the data's joints. With num_shards (0 or None: no
    packs), each split's images are written as num_shards packs (pose/data/packs.py), not images/. A
    split left with no image is an error unless `allow_empty`. An image whose header claims more
    than `max_image_pixels` (default pose.data.pixels.max_image_pixels()) is an invalid record."""
    output = Path(output_dir)
    pixel_limit = pixels.max_image_pixels(max_image_pixels)
    num_shards = num_shards or None
    if num_shards is not None:
        packs.check_num_shards(num_shards)
    if isinstance(min_keypoints, bool) or not isinstance(min_keypoints, int) or min_keypoints < 0:
        raise ConvertError(f"min_keypoints={min_keypoints!r}: expected a whole number >= 0")
    if (
        isinstance(valid_fraction, bool)
        or not isinstance(valid_fraction, (int, float))
        or not 0 <= valid_fraction < 1
    ):
        raise ConvertError(
            f"valid_fraction={valid_fraction!r}: expected a number from 0 to below 1"
        )
    requested = layouts.requested_keypoint_set(keypoints)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConvertError(f"output {output} exists and is not an empty folder")
    outputs.check_output("convert", output_dir, [input_dir])
    with (
        steplog.step(
            "convert",
            input=input_dir,
            output=output_dir,
            keypoints=keypoints,
            min_keypoints=min_keypoints,
            valid_fraction=valid_fraction,
            single_person=single_person,
            skip_invalid=skip_invalid,
            num_shards=num_shards,
            max_image_pixels=pixel_limit,
        ) as wrote,
        _without_cyclic_gc(),
    ):
        sources = layouts.find_sources(Path(input_dir))
        with atomic_directory(output) as partial:
            (partial / "annotations").mkdir()
            counts, rejects, used = {}, [], None
            for split in SPLITS:
                split_counts, keypoint_set = _convert_split(
                    split,
                    sources[split],
                    partial,
                    single_person,
                    skip_invalid,
                    rejects,
                    num_shards,
                    pixel_limit,
                    requested,
                    min_keypoints,
                    valid_fraction,
                )
                counts.update(split_counts)
                if used is not None and not used.same_joints(keypoint_set):
                    raise ConvertError(
                        f"{sources[split].annotations}: names the keypoints {', '.join(keypoint_set.names)}, "
                        f"but the train split's are {', '.join(used.names)}"
                    )
                used = keypoint_set
                if not counts[f"{split}_people"] and not allow_empty:
                    raise ConvertError(
                        f"{sources[split].annotations}: no {split} image (or no person) left to convert "
                        f"({counts[f'{split}_records']} records, {counts[f'{split}_rejected']} rejected"
                        f"{', only single-person images kept' if single_person else ''}); "
                        "pass --allow-empty to write an empty split"
                    )
            packs.write_keypoint_set(partial, used)
            if num_shards:
                counts["num_shards"] = num_shards
            counts["rejected"] = len(rejects)
            if rejects:
                rejects.sort(key=lambda reject: (SPLITS.index(reject["split"]), reject["record"]))
                writing.write_json(
                    partial / "rejects.json", {"count": len(rejects), "rejects": rejects}
                )
                log.warning(
                    "skipped %d invalid records, listed in %s",
                    len(rejects),
                    output / "rejects.json",
                )
        log.info(
            "keypoint set %r: %d joints (%s)", used.name, used.num_keypoints, ", ".join(used.names)
        )
        wrote.update(counts, keypoint_set=used.name)
        counts["keypoint_set"] = used.to_json()
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


def _convert_split(
    split,
    source,
    output,
    single_person,
    skip_invalid,
    rejects,
    num_shards,
    pixel_limit,
    requested,
    min_keypoints,
    valid_fraction,
):
    started = time.perf_counter()

    def reject(error: InvalidRecord):
        if not skip_invalid:
            raise error
        rejects.append(error.as_reject(split))

    skipped = Counter()
    keypoint_set, read = layouts.open_records(
        source, requested, min_keypoints, valid_fraction, skipped
    )
    names = keypoint_set.names
    records, num_read, not_single, no_people = [], 0, 0, 0
    seen, seen_names = {}, {}
    for index, image_id, parsed in read:
        num_read += 1
        if isinstance(parsed, Bad):
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
        elif parsed.output_name in seen_names:
            reject(
                InvalidRecord(
                    source.annotations,
                    index,
                    image_id,
                    f"image file name {parsed.output_name!r} repeats, first at record {seen_names[parsed.output_name]}",
                )
            )
        else:
            seen[image_id] = seen_names[parsed.output_name] = index
            if not parsed.people:
                no_people += 1
            elif single_person and len(parsed.people) != 1:
                not_single += 1
            else:
                records.append(parsed)
    del seen, seen_names
    log.info(
        "%s: read %d records from %s (%s layout) in %.1fs",
        split,
        num_read,
        source.annotations,
        source.layout,
        time.perf_counter() - started,
    )
    for key, what in SKIPPED.items():
        if skipped[key]:
            log.info("%s: left out %d %s", split, skipped[key], what)
    if no_people:
        log.info("%s: left out %d images with no person left", split, no_people)

    phase = time.perf_counter()
    sizes = writing.map_in_chunks(
        checks.image_facts, [r.image_file for r in records], f"{split} check images"
    )
    log.info("%s: checked %d images in %.1fs", split, len(records), time.perf_counter() - phase)
    category = keypoint_set.coco_category()
    images, annotations, placed = [], [], []
    oriented, first_oriented = Counter(), None  # EXIF orientation (not 1) -> pictures kept with it
    for record, facts in zip(records, sizes):
        try:
            if isinstance(facts, Bad):
                raise facts
            (width, height), orientation = facts
            too_large = pixels.too_many_pixels(width, height, pixel_limit)
            if too_large:
                raise Bad(f"image {record.image_file}: {too_large}")
            if (
                orientation in checks.TURNED_ORIENTATIONS
                and width != height
                and record.claimed_size == (height, width)
            ):
                raise Bad(
                    f"image {record.image_file} is stored {width}x{height} but the annotations say "
                    f"{height}x{width}, its size as shown turned: "
                    + checks.exif_advice(record.image_file, orientation)
                )
            try:
                people = [
                    checks.placed_keypoints(person, width, height, names)
                    for person in record.people
                ]
                for person in record.people:
                    checks.placed_box(person, width, height)
            except Bad as bad:
                if orientation == 1:
                    raise
                raise Bad(
                    f"{bad.reason}; {checks.exif_advice(record.image_file, orientation)}",
                    bad.human,
                ) from None
        except Bad as bad:
            reject(
                InvalidRecord(
                    source.annotations, record.index, record.image_id, bad.reason, bad.human
                )
            )
            continue
        image_id = len(images) + 1
        file_name = record.output_name
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for person, coco_keypoints in zip(record.people, people):
            x1, y1, x2, y2 = person.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category["id"],
                    "keypoints": coco_keypoints,
                    "num_keypoints": len(names) - coco_keypoints[2::3].count(0),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        placed.append((record.image_file, file_name))
        if orientation != 1:
            oriented[orientation] += 1
            first_oriented = first_oriented or record.image_file
    del records, sizes
    if oriented:
        # A warning, not a refusal: whether the annotations were made on the stored pixels or on
        # the picture as shown cannot be told from a file without sizes (AIC's) or from a 180-degree
        # turn; a turned picture whose file names the shown size is refused above.
        log.warning(
            "%s: %d pictures carry an EXIF orientation other than 1 (%s; first %s): every step reads "
            "the stored pixels unturned, so their annotations must be of the stored pixels; "
            "re-save any annotated as shown with the rotation applied",
            split,
            oriented.total(),
            ", ".join(f"{count} with {value}" for value, count in sorted(oriented.items())),
            first_oriented,
        )

    if source.layout in layouts.AIC_LAYOUTS:
        description = f"AI Challenger keypoints ({split}), AIC joint order"
    else:
        description = f"keypoints ({split}) of {source.annotations.name}, set {keypoint_set.name}"
    info = {
        "description": description,
        "source": str(source.annotations),
        "layout": source.layout,
        "single_person": single_person,
    }
    place = writing.ImagePlacer()
    phase = time.perf_counter()
    if num_shards:
        _write_packs(
            output, split, num_shards, info, images, annotations, placed, place, keypoint_set
        )
    else:
        image_folder = output / "images" / split
        image_folder.mkdir(parents=True)
        writing.map_in_chunks(
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
        "categories": [category],
    }
    writing.write_json(output / "annotations" / f"person_keypoints_{split}.json", coco)
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
        f"{split}_rejected": num_read - len(images) - not_single - no_people,
    }
    if single_person:
        counts[f"{split}_not_single_person"] = not_single
    if no_people:
        counts[f"{split}_images_without_people"] = no_people
    if oriented:
        counts[f"{split}_exif_oriented"] = oriented.total()
    for key in SKIPPED:
        if skipped[key]:
            counts[f"{split}_skipped_{key}"] = skipped[key]
    return counts, keypoint_set


def _write_packs(
    output: Path,
    split: str,
    num_shards: int,
    info: dict,
    images: list,
    annotations: list,
    placed: list,
    place,
    keypoint_set,
) -> None:
    """One pack per shard: its images (pose.data.packs.shard_of_images) with their people, pack.json
    and keypoint_set.json."""
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
        writing.write_json(
            folder / "annotations" / f"person_keypoints_{split}.json",
            {
                "info": {**info, "shard_index": index, "num_shards": num_shards},
                "images": pack_images[index],
                "annotations": pack_people[index],
                "categories": [keypoint_set.coco_category()],
            },
        )
        packs.write_keypoint_set(folder, keypoint_set)
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
    writing.map_in_chunks(place, targets, f"{split} place images in {num_shards} packs")


# ---------------------------------------------------------------------------------------------
# Command line and KFP component
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    arguments = cli.parser("convert", __doc__)
    arguments.add_argument(
        "--input", required=True, help="folder holding the data set (at any depth)"
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
        help="write each split's images as N per-shard packs (packs/) instead of images/ "
        "(0: no packs, as the pipeline passes it)",
    )
    arguments.add_argument(
        "--keypoints",
        default=kp.AUTO,
        help="the keypoint set: auto (the one the data names), a preset "
        f"({', '.join(kp.preset_names())}) or a YAML file's path or URI; it must name the data's joints",
    )
    arguments.add_argument(
        "--min-keypoints",
        type=int,
        default=1,
        help="leave out (and count) people with fewer labelled joints",
    )
    arguments.add_argument(
        "--valid-fraction",
        type=float,
        default=DEFAULT_VALID_FRACTION,
        help="the share of images (by image id) that becomes the valid split, used only when "
        "the data has no validation subset",
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
                    keypoints=args.keypoints,
                    min_keypoints=args.min_keypoints,
                    valid_fraction=args.valid_fraction,
                )
            )
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
