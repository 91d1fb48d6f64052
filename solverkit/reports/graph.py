"""The layer graph of a net in Graphviz DOT: layers are boxes, blobs are labelled edges.

An edge runs from the layer that last wrote a blob to each layer that reads it, labelled
with the blob's name and shape, so an in-place layer (``bottom == top``) sits on the chain
between the blob's producer and its readers. A blob no layer reads (a net output) ends in
an ellipse of its own. ``dot`` (Graphviz) renders the text when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, did_you_mean
from ..net import Net
from .summary import format_shape

DOT_SUFFIXES = (".dot", ".gv")
RENDERED_SUFFIXES = (".svg", ".png", ".pdf", ".jpg", ".jpeg", ".gif", ".ps", ".eps")


def _quote(text: str) -> str:
    """A DOT string literal (ids and labels alike)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class Edge:
    """A blob flowing from one layer (or an output node) to another."""

    source: str
    target: str
    blob: str
    shape: tuple[int, ...]


def net_edges(net: Net) -> list[Edge]:
    """Every producer -> reader edge of ``net`` in file order; outputs go to ``output:<blob>``."""
    producer: dict[str, str] = {}
    edges = []
    for lspec in net.layer_specs:
        for name in lspec.bottom:
            edges.append(Edge(producer[name], lspec.name, name, net.blobs[name].shape))
        for name in lspec.top:
            producer[name] = lspec.name
    for name in net.outputs:
        edges.append(Edge(producer[name], f"output:{name}", name, net.blobs[name].shape))
    return edges


def net_to_dot(net: Net, rankdir: str = "TB") -> str:
    """The DOT text of ``net``'s graph (one phase; the net is built, so shapes are known)."""
    lines = [f"digraph {_quote(f'{net.name} ({net.phase})')} {{",
             f"  rankdir={rankdir};",
             ('  node [shape=box, style="rounded,filled", fillcolor="#dbe8f5", '
              'fontname="Helvetica"];'),
             '  edge [fontname="Helvetica", fontsize=10];']
    for layer, lspec in zip(net.layers, net.layer_specs):
        count = sum(blob.count for blob in layer.blobs)
        label = f"{layer.name}\n{lspec.type}" + (f"\n{count:,} params" if count else "")
        color = ("#e2f0d9" if not lspec.bottom else            # data sources
                 "#fbe5d6" if layer.is_loss or not layer.has_backward else "#dbe8f5")
        lines.append(f"  {_quote(layer.name)} [label={_quote(label)}, fillcolor={_quote(color)}];")
    for name in net.outputs:
        lines.append(f"  {_quote('output:' + name)} [label={_quote(name)}, shape=ellipse, "
                     f'style=solid];')
    for edge in net_edges(net):
        label = f"{edge.blob}\n{format_shape(edge.shape)}"
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class DrawResult:
    """What ``write_graph`` wrote: the file, and whether Graphviz rendered it."""

    path: Path
    rendered: bool
    note: str = ""


def write_graph(net: Net, path, dot_program: str | None = "dot",
                text: str | None = None) -> DrawResult:
    """Write ``net``'s graph to ``path``: DOT text for ``.dot``/``.gv``, else rendered by
    Graphviz in the format of the suffix. Without ``dot`` on the PATH, the DOT text goes
    to ``path`` with the suffix ``.dot`` and ``note`` says how to render it. ``text``: other
    DOT text to write than the plain graph's (``draw --values``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DOT_SUFFIXES + RENDERED_SUFFIXES:
        choices = DOT_SUFFIXES + RENDERED_SUFFIXES
        raise ConfigError(f"cannot tell the format from the suffix '{path.suffix}'"
                          f"{did_you_mean(suffix, choices)}; use one of {', '.join(choices)}",
                          file=str(path), field="-o")
    text = net_to_dot(net) if text is None else text
    if not path.parent.exists():
        raise ConfigError("the output folder does not exist", file=str(path.parent), field="-o")
    if suffix in DOT_SUFFIXES:
        path.write_text(text, encoding="utf-8")
        return DrawResult(path, rendered=False)
    program = shutil.which(dot_program) if dot_program else None
    if program is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text, encoding="utf-8")
        return DrawResult(dot_path, rendered=False, note=(
            f"Graphviz is not installed (no 'dot' program), so {path} was not rendered; "
            f"wrote the graph as DOT to {dot_path}. Install Graphviz (Debian/Ubuntu: "
            f"'apt-get install graphviz', macOS: 'brew install graphviz') and run "
            f"'dot -T{suffix[1:]} {dot_path} -o {path}', or draw again."))
    done = subprocess.run([program, f"-T{suffix[1:]}", "-o", str(path)], input=text,
                          text=True, capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"Graphviz could not render the graph: {done.stderr.strip()}",
                          file=str(path))
    return DrawResult(path, rendered=True)
