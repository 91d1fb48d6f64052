"""One module per ``solverkit`` sub-command: ``add_arguments(parser)`` and ``run(args)``."""
