"""fanout: the list of shard indices the shard step fans out over.

Takes    the number of shards, a pipeline parameter.
Does     turns it into [0, 1, ..., N-1]: `dsl.ParallelFor` iterates over a list, and a list built from a
         run-time parameter must come from a task (a Python `range` would fix the fan-out at compile time).
Writes   the list as the task's output parameter.
"""
import json

from components import cli
from pose import steplog

MAX_SHARDS = 4096


class FanoutError(ValueError):
    """The requested number of shards is not usable."""


def shard_indices(num_shards: int) -> list[int]:
    """[0, ..., num_shards - 1]; refuses counts below 1 or above MAX_SHARDS."""
    with steplog.step("fanout", num_shards=num_shards) as wrote:
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= MAX_SHARDS:
            raise FanoutError(f"num_shards={num_shards!r}: expected an integer from 1 to {MAX_SHARDS}")
        wrote.update(indices=num_shards)
    return list(range(num_shards))


def main(argv=None) -> int:
    arguments = cli.parser("fanout", __doc__)
    arguments.add_argument("--num-shards", type=int, required=True)
    return cli.run("fanout", arguments, lambda args: print(json.dumps(shard_indices(args.num_shards))), argv)


if __name__ == "__main__":
    raise SystemExit(main())
