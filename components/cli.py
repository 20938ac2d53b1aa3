"""The one command-line convention of every step (`python -m components.<step>`).

A step's `main()` builds its argparse parser with `parser()` and hands it to `run()` with a function of the
parsed arguments. `run()` sets up the step log, and turns any failure into one line on stderr that names
the step and what is wrong, with exit code 1; `--verbose` adds the traceback. Exit codes: 0 done,
1 failed, 2 bad command line (argparse), 130 interrupted.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable

from pose.files import steplog

# Errors raised by the project's own code carry a message written for the user; anything else (a library's
# exception) is named by its type too, since its message alone may not say what kind of failure it was.
_PROJECT_PACKAGES = ("components", "pose", "pipeline", "__main__")  # __main__: the step run with -m


def parser(step: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m components.{step}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run(
    step: str,
    arguments: argparse.ArgumentParser,
    work: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
) -> int:
    """Parses `argv`, runs `work(args)` and returns the exit code."""
    arguments.add_argument(
        "--verbose", action="store_true", help="on an error, also show its traceback"
    )
    args = arguments.parse_args(argv)
    steplog.setup()
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", "2"
    )  # TensorFlow's C++ start-up chatter hides the step's log
    try:
        work(args)
    except KeyboardInterrupt:
        print(f"{step}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.verbose:
            logging.getLogger(step).exception("traceback")
        print(f"{step}: error: {describe(error)}", file=sys.stderr)
        return 1
    return 0


def describe(error: BaseException) -> str:
    """The error as one line."""
    message = " ".join(str(error).split()) or "(no message)"
    if type(error).__module__.split(".")[0] in _PROJECT_PACKAGES:
        return message
    return f"{type(error).__name__}: {message}"
