"""What one shard task reads: the bytes under its input artifact, with per-shard packs and without.

Measures a packed convert output (convert --num-shards N, or made here from synthetic://N), then projects
to a release of a given size from the layout: a pack holds 1/N of its split's images (round-robin over
image ids) and that shard's annotations; without packs every shard task (2 x N of them) reads all of it.

    python -m benchmarks.shard_reads [--source synthetic://400] [--num-shards 4]
        [--aic-images 210000,30000] [--aic-people 378374,70356] [--aic-gb 20] [--aic-shards 16]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from pose.data import packs

SPLITS = ("train", "valid")


def tree_bytes(folder) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )


def measure(coco: Path, num_shards: int) -> dict:
    out = {"whole_bytes": tree_bytes(coco)}
    for split in SPLITS:
        sizes, image_bytes, annotation_bytes, images, people = [], 0, 0, 0, 0
        for index in range(num_shards):
            folder = coco / packs.pack_path(split, index, num_shards)
            info = packs.read_pack_info(folder)
            sizes.append(tree_bytes(folder))
            image_bytes += tree_bytes(folder / "images")
            annotation_bytes += (
                (folder / "annotations" / f"person_keypoints_{split}.json").stat().st_size
            )
            images, people = images + info["images"], people + info["people"]
        out[split] = {
            "pack_bytes": sizes,
            "images": images,
            "people": people,
            "bytes_per_image": image_bytes / max(images, 1),
            "annotation_bytes_per_person": annotation_bytes / max(people, 1),
        }
    return out


def project(
    measured: dict, images: list[int], people: list[int], gigabytes: float, num_shards: int
) -> dict:
    """Per shard task at the given scale: images and their bytes (the release's bytes split by image
    count), plus annotations at the measured bytes per person."""
    total_images = sum(images)
    result = {}
    for split, count, persons in zip(SPLITS, images, people):
        image_bytes = gigabytes * 1e9 * count / total_images / num_shards
        annotation_bytes = measured[split]["annotation_bytes_per_person"] * persons / num_shards
        result[split] = {
            "images_per_task": count / num_shards,
            "gb_per_task": (image_bytes + annotation_bytes) / 1e9,
        }
    all_annotations = sum(
        measured[s]["annotation_bytes_per_person"] * p for s, p in zip(SPLITS, people)
    )
    whole = gigabytes * 1e9 + all_annotations
    result["before"] = {"gb_per_task": whole / 1e9, "gb_all_tasks": 2 * num_shards * whole / 1e9}
    result["after"] = {"gb_all_tasks": (gigabytes * 1e9 + all_annotations) / 1e9}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--coco", help="a packed convert output (else one is made from --source)")
    parser.add_argument("--source", default="synthetic://400?seed=1")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument(
        "--aic-images", default="210000,30000", help="train,valid images at the projected scale"
    )
    parser.add_argument(
        "--aic-people", default="378374,70356", help="train,valid people at the projected scale"
    )
    parser.add_argument(
        "--aic-gb", type=float, default=20.0, help="JPEG bytes of both splits, in GB"
    )
    parser.add_argument("--aic-shards", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        coco = Path(args.coco) if args.coco else Path(tmp) / "coco"
        if not args.coco:
            from components.convert import convert
            from components.download import download

            download(args.source, f"{tmp}/raw")
            convert(f"{tmp}/raw", str(coco), num_shards=args.num_shards)
        measured = measure(coco, args.num_shards)
    projected = project(
        measured,
        [int(v) for v in args.aic_images.split(",")],
        [int(v) for v in args.aic_people.split(",")],
        args.aic_gb,
        args.aic_shards,
    )
    print(json.dumps({"measured": measured, "projected": projected}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
