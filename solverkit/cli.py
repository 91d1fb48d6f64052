"""The ``solverkit`` command: argparse sub-commands, each a module in ``solverkit.commands``.

Thin on purpose: parse, call the library, print. A user mistake (``SolverkitError``)
prints one message and exits 2 (``--debug`` shows the traceback); a non-finite loss
exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import re
import sys
import traceback

import numpy as np

from . import backends, parallel
from .errors import NonFiniteError, SolverkitError, did_you_mean

# sub-command -> module in solverkit.commands (each has add_arguments(parser) and run(args))
COMMANDS = {
    "train": "train",
    "test": "test",
    "time": "time",
    "check": "check",
    "draw": "draw",
    "plot": "plot",
    "schema": "schema",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a user error (exit 2, one line)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise SolverkitError(f"{self.prog}: {message}{_argparse_hint(self, message)}")


def _argparse_hint(parser: argparse.ArgumentParser, message: str) -> str:
    """A did-you-mean for a mistyped sub-command, choice or option in an argparse message."""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        return did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
    unknown = re.search(r"unrecognized arguments: (\S+)", message)
    if unknown:
        options, parsers = set(), [parser]
        while parsers:                    # the options of every sub-command too
            for action in parsers.pop()._actions:
                options.update(action.option_strings)
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
        return did_you_mean(unknown.group(1), options)
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="solverkit", description="Caffe-style deep learning on numpy.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(f"solverkit.commands.{module_name}") is None:
            continue
        module = importlib.import_module(f"solverkit.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        command = sub.add_parser(name, help=doc[0] if doc else None,
                                 description=(module.__doc__ or "").strip())
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of user errors too")
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bar, warnings only")
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        backends.check_choices()    # a wrong SOLVERKIT_BLAS/SOLVERKIT_CONV: before any work
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(message)s", stream=sys.stdout, force=True)
        # a non-finite loss is reported once, naming the layer: numpy's own floating-point
        # warnings would only repeat it, without saying where
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return int(args.run(args) or 0)
    except SolverkitError as err:
        if debug:       # the traceback, but still a user error's status
            traceback.print_exc()
        print(f"solverkit: error: {err}", file=sys.stderr)
        return parallel.abort_if_distributed(2)     # under mpirun: every rank ends
    except NonFiniteError as err:
        if debug:
            traceback.print_exc()
        print(f"solverkit: training failed: {err}", file=sys.stderr)
        return parallel.abort_if_distributed(1)
    except KeyboardInterrupt:
        print("solverkit: interrupted", file=sys.stderr)
        return parallel.abort_if_distributed(130)


if __name__ == "__main__":
    sys.exit(main())
