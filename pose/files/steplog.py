"""Logging for steps: one format everywhere, and the read / wrote / took summary each step ends with."""

import contextlib
import logging
import sys
import time


def setup(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


@contextlib.contextmanager
def step(name: str, **inputs):
    """Logs what a step reads when it starts and how long it took when it ends.

    Yields a dict: put what the step wrote into it, and it is logged at the end.
    """
    log = logging.getLogger(name)
    log.info("start: %s", ", ".join(f"{k}={v}" for k, v in inputs.items()))
    wrote: dict = {}
    started = time.perf_counter()
    yield wrote
    elapsed = time.perf_counter() - started
    log.info("done in %.1fs: wrote %s", elapsed, ", ".join(f"{k}={v}" for k, v in wrote.items()))
