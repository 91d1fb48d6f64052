"""Plot training curves from CSV logs: train outputs (raw and smoothed), each test output,
and the learning rate; several logs overlay (needs the 'plot' extra: matplotlib).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..reports.plot import plot_logs, read_log, save_figure


def add_arguments(parser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG.csv",
                        help="training logs (<snapshot_prefix>_log.csv); several overlay")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="curves.png (or .svg, .pdf)")
    parser.add_argument("--smooth", type=int, default=None, metavar="N",
                        help="moving-average window of the train curves "
                             "(default: 2%% of the iterations)")


def run(args) -> int:
    if args.smooth is not None and args.smooth < 1:
        raise ConfigError(f"must be at least 1, got {args.smooth}", field="--smooth")
    logs = [read_log(path) for path in args.logs]
    path = save_figure(plot_logs(logs, smooth=args.smooth), args.output)
    print(f"wrote {path}")
    return 0
