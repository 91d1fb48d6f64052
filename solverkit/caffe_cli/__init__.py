"""Caffe's command-line tools (``caffe``, ``convert_imageset``, ``convert_mnist_data``, …),
installed with the package under Caffe's names: thin front-ends over solverkit's library
that take Caffe's arguments in gflags' syntax and write Caffe's files and log.

``run_tool(program, body, argv)`` is what every tool's ``main`` calls: it runs ``body(argv)``
and turns the ways a tool ends into exit statuses — a command-line mistake (gflags') 1, a
user's mistake in a file or its data 2 (one message naming the file, no traceback), a
non-finite result 1.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from ..errors import NonFiniteError, SolverkitError
from ..runs import os_error
from .flags import FlagError, HelpRequested


def run_tool(program: str, body, argv: list[str] | None = None) -> int:
    """Run ``body(argv)`` as the tool ``program``; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    root = logging.getLogger("solverkit")      # a tool's glog handler is undone when it ends
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return int(body(argv) or 0)
    except HelpRequested as done:
        print(done.text)
        return done.status
    except FlagError as err:
        print(err, file=sys.stderr)
        return 1
    except SolverkitError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"{program}: failed: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{program}: error: {os_error(err, 'read or write a file')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        root.propagate = saved[2]
