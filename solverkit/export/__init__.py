"""Export a trained net: ``export_model(net_spec, weights, path)``, the format from the suffix.

Each format is a registered exporter (see ``formats``): ``.onnx`` (the ``onnx`` extra; see
``onnx_model``) and ``.caffemodel`` (Caffe's weights, and the deploy net beside it as
``.prototxt``; see ``caffemodel``), plus any a plugin registers. A train/test net is turned
into its deploy form first (``solverkit.deploy``).
"""

from __future__ import annotations

from pathlib import Path

from ..deploy import derive_deployment
from ..errors import ConfigError
from ..files import check_output, write_atomic
from ..net import Net
from ..spec.net import load_net_spec
from .formats import Exporter, exporter_for, exporters, register_exporter

from . import caffemodel, onnx_model  # noqa: F401  isort: skip  (registers the built-in formats)

__all__ = ["Exporter", "export_model", "exporter_for", "exporters", "load_deploy_net",
           "register_exporter", "write_output"]


def load_deploy_net(spec, weights, outputs_only: bool = False) -> tuple[Net, object]:
    """The TEST net of ``spec``'s deploy form with ``weights`` loaded, and its Deployment;
    with ``outputs_only`` its intermediate blobs share memory (see ``Net``)."""
    deployment = derive_deployment(spec)
    net = Net(deployment.spec, phase="TEST", seed=0, inference=True, outputs_only=outputs_only)
    net.load(weights, allow_extra=True)         # TRAIN-only and loss layers' weights may be there
    return net, deployment


def export_model(spec, weights, path, *, force: bool = False) -> list[str]:
    """Write the deploy net of ``spec`` with ``weights`` to ``path`` in the format its suffix
    names; the files written. An existing file (``path``, or another the format writes
    beside it, such as the ``.prototxt`` of a ``.caffemodel``) is replaced only with
    ``force``, and never when it is ``spec`` or ``weights`` themselves."""
    path = Path(path)
    net_spec = load_net_spec(spec)      # imports the spec's plugins, whose exporters count too
    exporter = exporter_for(path)
    for output in exporter.outputs(path):
        check_output(output, inputs=(spec, weights), force=force, error=ConfigError)
    exporter.check_available()          # a missing extra is reported before any work
    net, _ = load_deploy_net(net_spec, weights)
    try:
        return [str(p) for p in exporter.write(net, path)]
    finally:
        net.close()


def write_output(path, data: bytes, *, force: bool = False, inputs=()) -> str:
    """Write ``data`` to ``path`` atomically; an existing file is replaced only with
    ``force`` (never one of ``inputs``), so a user's results are never overwritten unasked."""
    path = check_output(path, inputs=inputs, force=force, error=ConfigError)
    if not path.parent.exists():
        raise ConfigError(f"folder '{path.parent}' does not exist")
    write_atomic(path, data, operation="write the export")
    return str(path)
