"""fanout: the lists the shard step fans out over.

Takes    the number of shards, a pipeline parameter, and the URI of convert's packed output.
Does     turns them into the URIs of the packs, one list per split (pose/data/packs.py names them):
         `<coco uri>/packs/train-00000-of-00016`, ... A shard task gets its pack through `dsl.importer`
         from that URI, so KFP copies only that pack into its pod (docs/ARTIFACTS.md says why).
         `dsl.ParallelFor` iterates over a list, and a list built from a run-time parameter must come from
         a task (a Python `range` would fix the fan-out at compile time). Without a URI, [0, 1, ..., N-1].
Writes   the lists as the task's output parameters.

    python -m components.fanout --num-shards 16 [--coco-uri gs://bucket/root/.../coco --split train]
"""

import json

from components import cli
from pose.data import packs
from pose.files import steplog

MAX_SHARDS = packs.MAX_SHARDS


class FanoutError(ValueError):
    """The requested number of shards or the URI is not usable."""


def _checked(num_shards) -> int:
    try:
        return packs.check_num_shards(num_shards)
    except packs.PackError as error:
        raise FanoutError(str(error)) from None


def shard_indices(num_shards: int) -> list[int]:
    """[0, ..., num_shards - 1]; refuses counts below 1 or above MAX_SHARDS."""
    with steplog.step("fanout", num_shards=num_shards) as wrote:
        _checked(num_shards)
        wrote.update(indices=num_shards)
    return list(range(num_shards))


def pack_uris(coco_uri: str, num_shards: int) -> dict[str, list[str]]:
    """{split: [URI of pack 0, ..., pack N-1]} under convert's packed output at coco_uri."""
    with steplog.step("fanout", coco_uri=coco_uri, num_shards=num_shards) as wrote:
        _checked(num_shards)
        if not coco_uri or coco_uri != coco_uri.strip():
            raise FanoutError(f"coco_uri {coco_uri!r}: expected the URI of convert's output")
        base = coco_uri.rstrip("/")
        uris = {
            split: [
                f"{base}/{packs.pack_path(split, index, num_shards)}" for index in range(num_shards)
            ]
            for split in ("train", "valid")
        }
        wrote.update(packs=sum(map(len, uris.values())))
    return uris


def main(argv=None) -> int:
    arguments = cli.parser("fanout", __doc__)
    arguments.add_argument("--num-shards", type=int, required=True)
    arguments.add_argument(
        "--coco-uri", default="", help="convert's packed output: print its pack URIs"
    )
    arguments.add_argument(
        "--split",
        choices=("train", "valid"),
        default=None,
        help="with --coco-uri, only this split's pack URIs",
    )

    def run(args):
        if not args.coco_uri:
            return print(json.dumps(shard_indices(args.num_shards)))
        uris = pack_uris(args.coco_uri, args.num_shards)
        print(json.dumps(uris[args.split] if args.split else uris))

    return cli.run("fanout", arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
