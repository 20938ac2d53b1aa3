"""fanout: the list of shard indices the shard step fans out over.

Takes    the number of shards, a pipeline parameter.
Does     turns it into [0, 1, ..., N-1]: `dsl.ParallelFor` iterates over a list, and a list built from a
         run-time parameter must come from a task (a Python `range` would fix the fan-out at compile time).
Writes   the list as the task's output parameter.
"""
import argparse
import json
from typing import List

from kfp import dsl

from components.images import CPU_IMAGE
from pose import steplog

MAX_SHARDS = 4096


class FanoutError(ValueError):
    """The requested number of shards is not usable."""


def shard_indices(num_shards: int) -> list[int]:
    """[0, ..., num_shards - 1]; refuses counts below 1 or above MAX_SHARDS."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= MAX_SHARDS:
        raise FanoutError(f"num_shards={num_shards!r}: expected an integer from 1 to {MAX_SHARDS}")
    return list(range(num_shards))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def shard_indices_op(num_shards: int) -> List[int]:
    from components.fanout import shard_indices

    return shard_indices(num_shards)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m components.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-shards", type=int, required=True)
    args = parser.parse_args(argv)
    steplog.setup()
    with steplog.step("fanout", num_shards=args.num_shards) as wrote:
        indices = shard_indices(args.num_shards)
        wrote.update(indices=len(indices))
    print(json.dumps(indices))


if __name__ == "__main__":
    main()
