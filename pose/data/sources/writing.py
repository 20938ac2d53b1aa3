"""What convert writes its output with: images hard-linked (or copied) by a thread pool, and COCO
files encoded in slices."""

import concurrent.futures
import json
import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("convert")

IMAGE_CHUNK = 256  # images per thread-pool task: one future per image costs more than checking it
JSON_SLICE = 10_000  # list items encoded at a time
IMAGE_THREADS = 8  # image checks wait on file reads (slow on network disks), not on the CPU


class ImagePlacer:
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


def map_in_chunks(function, items: list, label: str) -> list:
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


def write_json(path: Path, content: dict) -> None:
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
