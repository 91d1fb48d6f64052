"""The ``.caffemodel`` exporter: Caffe's weights, and the deploy net beside them as
``.prototxt`` (both written atomically by ``solverkit.caffe.export_caffe``)."""

from __future__ import annotations

from pathlib import Path

from ..caffe import export_caffe
from .formats import Exporter, register_exporter


@register_exporter("caffemodel", suffixes=[".caffemodel"])
class CaffeExporter(Exporter):
    """Caffe's ``.caffemodel`` (a NetParameter with the blobs) plus its deploy ``.prototxt``."""

    def outputs(self, path: Path) -> list[Path]:
        return [path, path.with_suffix(".prototxt")]

    def write(self, net, path: Path) -> list[Path]:
        return list(export_caffe(net.spec, net, path))
