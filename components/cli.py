"""The one command-line convention of every step (`python -m components.<step>`).

A step's `main()` builds its argparse parser with `parser()` and hands it to `run()` with a function of the
parsed arguments. `run()` sets up the step log, and turns any failure into one line on stderr that names
the step and what is wrong, with exit code 1; `--verbose` adds the traceback. Exit codes: 0 done,
1 failed, 2 bad command line (argparse), 130 interrupted.

`Parser` is the project's argparse parser (the steps' and `python -m pipeline`'s): options are never
abbreviated (`--num-shard` is refused, not taken for `--num-shards`), and an unknown option is the error
reported, before any missing required one, with the closest real option: `unrecognized argument --ouput;
did you mean --output?`.
"""

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Callable

from pose.files import steplog

# Errors raised by the project's own code carry a message written for the user; anything else (a library's
# exception) is named by its type too, since its message alone may not say what kind of failure it was.
PROJECT_PACKAGES = ("components", "pose", "pipeline", "__main__")  # __main__: the step run with -m


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser without abbreviations, that names an unknown option and the closest real
    one. Its parse_known_args refuses unknown options too (it returns only unknown positionals), so that
    a subcommand's parser (add_subparsers makes them of this class) reports its own mistyped options."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)
        self._arg_strings: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._arg_strings = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if self._unknown_options(extras):
            self.error(self._unknown_message(self._unknown_options(extras)))
        return namespace, extras

    def error(self, message: str):
        # argparse checks required options before it reports unknown ones: `--ouput x` would be
        # "the following arguments are required: --output", hiding the typo. A parser with subcommands
        # leaves their options to them, so only one without looks at every argument itself.
        unknown = [] if self._subparsers is not None else self._unknown_options(self._arg_strings)
        if unknown and not message.startswith("unrecognized argument"):
            message = self._unknown_message(unknown)
        super().error(message)

    def _unknown_options(self, arg_strings: list[str]) -> list[str]:
        unknown = []
        for arg in arg_strings:
            if arg == "--":
                break
            if not arg.startswith(tuple(self.prefix_chars)) or len(arg) < 2:
                continue
            if self._negative_number_matcher.match(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in self._option_string_actions:
                continue
            if not arg.startswith(2 * arg[0]) and arg[:2] in self._option_string_actions:
                continue  # a short option with its value attached: -n5
            unknown.append(arg)
        return unknown

    def _unknown_message(self, unknown: list[str]) -> str:
        options = [option for option in self._option_string_actions if option.startswith("--")]
        named = []
        for arg in unknown:
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1)
            named.append(f"{arg}; did you mean {close[0]}?" if close else arg)
        if len(named) == 1:
            return f"unrecognized argument {named[0]}"
        return "unrecognized arguments " + ", ".join(named)


def parser(step: str, description: str | None) -> Parser:
    return Parser(
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
    if type(error).__module__.split(".")[0] in PROJECT_PACKAGES:
        return message
    return f"{type(error).__name__}: {message}"
