"""What the commands show a person about a net or a run: ``check``'s summary table
(``summary``), the layer graph (``graph``) and its values (``values``) that ``draw`` writes,
per-layer timing for ``time`` (``timing``), training curves for ``plot`` (``plot``).

The commands are thin wrappers around these functions; each returns text, data or a figure
and prints nothing.
"""
