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
import shutil
import sys
import textwrap
import traceback

import numpy as np

from . import compute_libraries, parallel
from .errors import NonFiniteError, SolverkitError, did_you_mean, size_refusal

# sub-command -> module in solverkit.commands (each has add_arguments(parser) and run(args))
COMMANDS = {
    "train": "train",
    "test": "test",
    "time": "time",
    "check": "check",
    "draw": "draw",
    "plot": "plot",
    "schema": "schema",
    "import-caffe": "import_caffe",
    "convert-imageset": "convert_imageset",
    "compute-image-mean": "compute_image_mean",
    "predict": "predict",
    "export": "export",
    "sweep": "sweep",
    "caffe-build-links": "caffe_build_links",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a user error (exit 2, one line)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        # "solverkit: error: " leads every message; a sub-command's parser names itself
        command = self.prog.removeprefix("solverkit").strip()
        raise SolverkitError(f"{f'{command}: ' if command else ''}{message}"
                             f"{_argparse_hint(self, message)}")


def _argparse_hint(parser: argparse.ArgumentParser, message: str) -> str:
    """A did-you-mean for a mistyped sub-command, choice or option in an argparse message."""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        return did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
    unknown = re.search(r"unrecognized arguments: (\S+)(?: (\S+))?", message)
    if unknown and _takes_set(parser):
        key, _, value = unknown.group(1).lstrip("-").replace("-", "_").partition("=")
        value = value or (unknown.group(2) or "")
        from .spec.solver import SolverSpec
        if key in SolverSpec.model_fields and value and not value.startswith("-"):
            return f" (solver fields are set with --set: --set {key}={value})"
        if key in SolverSpec.model_fields:
            return f" (solver fields are set with --set: --set {key}=VALUE)"
    if unknown:
        options, parsers = set(), [parser]
        while parsers:                    # the options of every sub-command too
            for action in parsers.pop()._actions:
                options.update(action.option_strings)
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
        return did_you_mean(unknown.group(1), options)
    return ""


def _plain(text: str) -> str:
    """Docstring text as a terminal shows it: no reST back-ticks (``code`` plain,
    `name` quoted)."""
    return re.sub(r"`([^`]+)`", r"'\1'", re.sub(r"``([^`]+)``", r"\1", text))


def _command_texts(doc: str) -> tuple[str | None, str | None]:
    """A command module's docstring -> (one-line summary for the command list, description).

    The summary is the first paragraph up to its first full stop or semicolon (and before
    a usage line after a colon); the description keeps the docstring's paragraphs, each
    re-wrapped to the terminal's width.
    """
    paragraphs = [" ".join(_plain(part).split()) for part in doc.strip().split("\n\n")]
    paragraphs = [part for part in paragraphs if part]
    if not paragraphs:
        return None, None
    summary = re.split(r"(?<=[a-z0-9)])\.(?:\s|$)|;\s|:\s+(?=solverkit\s)", paragraphs[0])[0]
    width = max(40, min(shutil.get_terminal_size().columns, 100) - 2)
    description = "\n\n".join(textwrap.fill(part, width) for part in paragraphs)
    return summary.rstrip(". "), description


def _takes_set(parser: argparse.ArgumentParser) -> bool:
    """Whether the command being parsed has --set (the top parser looks at its sub-command)."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            given = [a for a in getattr(parser, "argv", ()) if a in action.choices]
            parsers += [action.choices[given[0]]] if given else []
    return any("--set" in action.option_strings for p in parsers for action in p._actions)


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
        summary, description = _command_texts(module.__doc__ or "")
        command = sub.add_parser(name, help=summary, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser()
        parser.argv = argv          # for hints about the sub-command given
        args = parser.parse_args(argv)
        command = args.command
        compute_libraries.check_choices()    # a wrong SOLVERKIT_BLAS/SOLVERKIT_CONV: before any work
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
        failed = {None: "training failed", "train": "training failed",
                  "test": "testing failed"}.get(command, f"{command} failed")
        print(f"solverkit: {failed}: {err}", file=sys.stderr)
        return parallel.abort_if_distributed(1)
    except OSError as err:      # the file system refused (full, read-only): not a bug
        if debug:
            traceback.print_exc()
        from .runs import os_error
        print(f"solverkit: error: {os_error(err, 'read or write a file')}", file=sys.stderr)
        return parallel.abort_if_distributed(2)
    except MemoryError as err:
        if debug:
            traceback.print_exc()
        print(f"solverkit: error: not enough memory: {size_refusal(err)} (smaller batches or "
              f"layers need less)", file=sys.stderr)
        return parallel.abort_if_distributed(2)
    except KeyboardInterrupt:
        print("solverkit: interrupted", file=sys.stderr)
        return parallel.abort_if_distributed(130)


if __name__ == "__main__":
    sys.exit(main())
