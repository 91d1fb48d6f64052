"""One module per ``solverkit`` sub-command: ``add_arguments(parser)`` and ``run(args)``."""


def add_state_arguments(parser) -> None:
    """``--stage`` and ``--level``: the net state (Caffe's NetState) layers are chosen by."""
    parser.add_argument("--stage", dest="stages", action="append", default=[], metavar="NAME",
                        help="a net stage (repeatable, or comma-separated): layers whose "
                             "include/exclude rules name stages are chosen by them")
    parser.add_argument("--level", type=int, default=None, metavar="N",
                        help="the net level (default 0) for min_level/max_level rules")


def stages_of(args) -> tuple[str, ...]:
    """The ``--stage`` names, commas split."""
    return tuple(name for text in args.stages for name in text.split(",") if name)
