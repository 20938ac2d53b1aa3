"""Where a keypoint data set's files lie, found at any depth below convert's input, and which reader
reads each.

  official  AI Challenger's archives: keypoint_{train,validation}_annotations_*.json beside
            keypoint_{train,validation}_images_*/ (pose.data.aic_release.AIC_LAYOUT)
  seed      the seed's copy: ai_challenger_{train,valid}.json beside train/ and valid/
  coco2017  annotations/person_keypoints_{train,val}2017.json with train2017/, val2017/ beside
            annotations/ (CrowdPose and others laid out as COCO too)
  export    one file per subset, person_keypoints_<subset>.json: CVAT writes annotations/ and
            images/<subset>/ (also images/ alone, or the subset folder beside the file)
  label_studio  Label Studio's COCO export: result.json beside images/ (file names images/<name>)

A subset named train or training (a year may follow) is the train split, val, valid or validation
the valid split. A data set with one subset only (any name, or train without a valid subset) gives
both splits: valid_fraction of its images, by image id (pose.data.sources.coco.valid_image_ids).
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

from pose.data import aic_release
from pose.data import keypoints as kp
from pose.data.sources.checks import ConvertError

SPLITS = ("train", "valid")
AIC_LAYOUTS = ("official", "seed")
_EXPORT_FILE = re.compile(r"person_keypoints_(.+)\.json")
_LABEL_STUDIO_FILE = "result.json"
_TRAIN_SUBSET = re.compile(r"(train|training)(\d{4})?")
_VALID_SUBSET = re.compile(r"(val|valid|validation)(\d{4})?")
# Image folders a COCO-format layout keeps beside its annotations: never worth listing in the walk.
_COCO_IMAGE_FOLDER = re.compile(r"(train|val|test|valid|validation)\d{4}|images")
OFFICIAL_LAYOUT = {
    split: (annotations, images)
    for split, (_, annotations, images) in aic_release.AIC_LAYOUT.items()
}


class Source(NamedTuple):
    layout: str  # official, seed, coco2017, export, label_studio
    annotations: Path
    images: Path  # the folder file names are relative to
    select: str | None = None  # one subset for both splits: which side of valid_fraction this is


def split_of_subset(subset: str) -> str | None:
    if _TRAIN_SUBSET.fullmatch(subset):
        return "train"
    if _VALID_SUBSET.fullmatch(subset):
        return "valid"
    return None


def find_sources(input_dir: Path) -> dict:
    """{split: Source} for the one data set below input_dir; ConvertError naming what is missing,
    repeated or mixed."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ConvertError(f"input {input_dir} is not a folder")
    found = []  # (split or None, Source)
    aic_image_folders = {images for _, images in OFFICIAL_LAYOUT.values()}
    for folder, subfolders, files in os.walk(input_dir):
        here = Path(folder)
        for split, (name, images) in OFFICIAL_LAYOUT.items():
            if name in files:
                found.append((split, Source("official", here / name, here / images)))
        for split, (name, images) in aic_release.SEED_LAYOUT.items():
            if name in files:
                found.append((split, Source("seed", here / name, here / images)))
        for name in files:
            match = _EXPORT_FILE.fullmatch(name)
            if match:
                subset = match.group(1)
                found.append((split_of_subset(subset), _export_source(here, name, subset)))
        if _LABEL_STUDIO_FILE in files and (here / "images").is_dir():
            found.append((None, Source("label_studio", here / _LABEL_STUDIO_FILE, here)))
        # Listing 200,000 image names to find nothing there would dominate the walk.
        seed_here = {images for name, images in aic_release.SEED_LAYOUT.values() if name in files}
        coco_here = (
            "annotations" in subfolders
            or any(_EXPORT_FILE.fullmatch(n) for n in files)
            or (_LABEL_STUDIO_FILE in files)
        )
        subfolders[:] = sorted(
            d
            for d in subfolders
            if d not in aic_image_folders
            and d not in seed_here
            and not (coco_here and _COCO_IMAGE_FOLDER.fullmatch(d))
        )
    return _choose(found, input_dir)


def _export_source(folder: Path, name: str, subset: str) -> Source:
    root = folder.parent if folder.name == "annotations" else folder
    for layout, images in (
        ("coco2017", root / subset),
        ("export", root / "images" / subset),
        ("export", root / "images"),
    ):
        if images.is_dir():
            return Source(layout, folder / name, images)
    return Source("export", folder / name, root / "images" / subset)


def _choose(found: list, input_dir: Path) -> dict:
    if not found:
        expected = "; or ".join(
            [
                " or ".join(
                    f"{layout[split][0]} with {layout[split][1]}/"
                    for layout in (OFFICIAL_LAYOUT, aic_release.SEED_LAYOUT)
                    for split in SPLITS
                ),
                "annotations/person_keypoints_<subset>.json with <subset>/ or images/<subset>/",
                f"Label Studio's {_LABEL_STUDIO_FILE} with images/",
            ]
        )
        raise ConvertError(f"no keypoint data set below {input_dir}: expected {expected}")
    families = {"AIC" if source.layout in AIC_LAYOUTS else "COCO-format" for _, source in found}
    if len(families) > 1:
        raise ConvertError(
            f"both AIC and COCO-format annotation files below {input_dir}: "
            f"{', '.join(str(source.annotations) for _, source in found)}; pass the folder of one data set"
        )
    by_split = {split: [s for where, s in found if where == split] for split in SPLITS}
    unsplit = [s for where, s in found if where is None]
    aic = families == {"AIC"}
    for split in SPLITS:
        if len(by_split[split]) > 1:
            raise ConvertError(
                f"{len(by_split[split])} {split} annotation files below {input_dir}: "
                f"{', '.join(str(s.annotations) for s in by_split[split])}; pass the folder of one data set"
            )
    if aic or (by_split["train"] and by_split["valid"] and not unsplit):
        sources = {}
        for split in SPLITS:
            if not by_split[split]:
                names = " or ".join(
                    f"{layout[split][0]} with {layout[split][1]}/"
                    for layout in (OFFICIAL_LAYOUT, aic_release.SEED_LAYOUT)
                )
                raise ConvertError(f"no {split} split below {input_dir}: expected {names}")
            sources[split] = by_split[split][0]
    else:
        single = unsplit + by_split["train"] + by_split["valid"]
        if len(single) > 1:
            raise ConvertError(
                f"{len(single)} annotation files below {input_dir} and no train/valid pair among them: "
                f"{', '.join(str(s.annotations) for s in single)}; pass the folder of one data set, "
                "or name its subsets train and val"
            )
        only = single[0]
        sources = {split: only._replace(select=split) for split in SPLITS}
    for source in sources.values():
        if not source.images.is_dir():
            raise ConvertError(
                f"{source.annotations}: no image folder {source.images.name}/ where this layout "
                f"keeps it ({source.images})"
            )
    return sources


def requested_keypoint_set(spec: str | None):
    """None for auto (the set the data names), else the preset or YAML file (a local path or file://,
    gs://, s3://, minio:// or https:// URI, fetched by pose.data.keypoint_files) the spec names."""
    if spec is None or spec == kp.AUTO:
        return None
    import tempfile

    from pose.data import keypoint_files
    from pose.files import uris

    local = uris.local_path(spec)
    if local is None and (
        not keypoint_files.is_remote(spec) or not spec.endswith((".yaml", ".yml"))
    ):
        raise ConvertError(
            f"--keypoints {spec}: expected auto, a preset ({', '.join(kp.preset_names())}) or a "
            "YAML file's path or gs://, s3://, minio://, https:// URI"
        )
    try:
        if local is not None and spec.endswith((".yaml", ".yml")):
            return kp.read_yaml(local)
        if local is None:
            with tempfile.TemporaryDirectory() as folder:
                try:
                    fetched = keypoint_files.local_spec(spec, folder)
                except kp.KeypointSetError as error:
                    raise ConvertError(f"--keypoints {error}") from None
                return kp.read_yaml(fetched)
        return kp.load(spec)
    except kp.KeypointSetError as error:
        raise ConvertError(f"--keypoints {spec}: {error}") from None


def open_records(
    source: Source, requested, min_keypoints: int, valid_fraction: float, skipped: dict
):
    """(the keypoint set, an iterator of (index, image_id, Record or Bad)) for one split's source.
    requested: the set --keypoints names, or None for the data's own; it must name the data's joints."""
    from pose.data.sources import aic, coco, seed

    if source.layout in AIC_LAYOUTS:
        data_set = kp.default()
        keypoint_set = _agreeing(data_set, requested, source, "AI Challenger data labels")
        reader = aic.read_records if source.layout == "official" else seed.read_records
        return keypoint_set, reader(source, keypoint_set, min_keypoints, skipped)
    loaded = coco.CocoFile(source.annotations)
    keypoint_set = _agreeing(
        loaded.keypoint_set, requested, source, "the file's categories[0] names"
    )
    records = coco.read_records(
        loaded, source, keypoint_set, min_keypoints, skipped, source.select, valid_fraction
    )
    return keypoint_set, records


def _agreeing(data_set, requested, source: Source, what: str):
    if requested is None:
        return data_set
    if requested.names != data_set.names:
        raise ConvertError(
            f"{source.annotations}: {what} the keypoints {', '.join(data_set.names)} "
            f"({data_set.num_keypoints}); the keypoint set {requested.name!r} given names "
            f"{', '.join(requested.names)} ({requested.num_keypoints}): it must name the same joints "
            "in the same order"
        )
    return requested


def image_folder_split(folder: Path) -> str | None:
    """The split a folder of images holds, by its name in the layouts above (download's counts):
    AIC's image folders, train2017/ and val2017/, images/<subset>/."""
    for split, (_, images) in OFFICIAL_LAYOUT.items():
        if folder.name == images:
            return split
    if _COCO_IMAGE_FOLDER.fullmatch(folder.name) or folder.parent.name == "images":
        return split_of_subset(folder.name)
    return None
