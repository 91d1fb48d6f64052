"""Time a net: per-layer forward and backward milliseconds and the total, as `caffe time`.

Input layers get random data of their shapes (class labels as integers in range);
Data layers read their sources as in training.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..net import Net
from ..reports.timing import format_timing, time_net
from . import add_state_arguments, stages_of


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET.yaml", help="the net spec")
    parser.add_argument("--iterations", type=int, default=50, metavar="K",
                        help="timed forward-backward passes (default 50)")
    parser.add_argument("--warmup", type=int, default=5, metavar="K",
                        help="untimed passes first (default 5)")
    add_state_arguments(parser)
    parser.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                        help="which phase's net to time (default TRAIN)")


def run(args) -> int:
    if args.iterations < 1:
        raise ConfigError(f"must be at least 1, got {args.iterations}", field="--iterations")
    if args.warmup < 0:
        raise ConfigError(f"must be 0 or more, got {args.warmup}", field="--warmup")
    net = Net(args.net, phase=args.phase, seed=0, stages=stages_of(args), level=args.level or 0)
    try:
        report = time_net(net, iterations=args.iterations, warmup=args.warmup)
    finally:
        net.close()
    print(format_timing(report))
    return 0
