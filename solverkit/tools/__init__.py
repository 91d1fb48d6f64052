"""Tools for people: a net's summary table, its graph, per-layer timing, training curves.

The ``check``, ``draw``, ``time`` and ``plot`` commands are thin wrappers around these
functions; each returns text, data or a figure and prints nothing.
"""
