"""Export a trained net: ``export_model(net_spec, weights, path)``, the format from the suffix.

Each format is a registered exporter (see ``formats``): ``.onnx`` (the ``onnx`` extra; see
``onnx_model``) and ``.caffemodel`` (Caffe's weights, and the deploy net beside it as
``.prototxt``; see ``caffemodel``), plus any a plugin registers. A train/test net is turned
into its deploy form first (``solverkit.deploy``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..deploy import derive_deployment
from ..errors import ConfigError
from ..net import Net
from ..spec.net import load_net_spec
from .formats import Exporter, exporter_for, exporters, register_exporter

from . import caffemodel, onnx_model  # noqa: F401  isort: skip  (registers the built-in formats)

__all__ = ["Exporter", "export_model", "exporter_for", "exporters", "load_deploy_net",
           "register_exporter", "write_output"]


def load_deploy_net(spec, weights) -> tuple[Net, object]:
    """The TEST net of ``spec``'s deploy form with ``weights`` loaded, and its Deployment."""
    deployment = derive_deployment(spec)
    net = Net(deployment.spec, phase="TEST", seed=0)
    net.load(weights, allow_extra=True)         # TRAIN-only and loss layers' weights may be there
    return net, deployment


def export_model(spec, weights, path, *, force: bool = False) -> list[str]:
    """Write the deploy net of ``spec`` with ``weights`` to ``path`` in the format its suffix
    names; the files written. Existing files are replaced only with ``force``."""
    path = Path(path)
    spec = load_net_spec(spec)          # imports the spec's plugins, whose exporters count too
    exporter = exporter_for(path)
    for output in exporter.outputs(path):
        if output.exists() and not force:
            raise ConfigError(f"'{output}' exists; pass --force to overwrite it")
    exporter.check_available()          # a missing extra is reported before any work
    net, _ = load_deploy_net(spec, weights)
    try:
        return [str(p) for p in exporter.write(net, path)]
    finally:
        net.close()


def write_output(path, data: bytes, *, force: bool = False) -> str:
    """Write ``data`` to ``path`` atomically (a temporary file renamed); an existing file
    is replaced only with ``force``, so a user's results are never overwritten unasked."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"'{path}' exists; pass --force to overwrite it")
    if not path.parent.exists():
        raise ConfigError(f"folder '{path.parent}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path)
