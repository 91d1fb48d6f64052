"""Export a trained net: ``export_model(net_spec, weights, path)``, the format from the suffix.

``.onnx``: an ONNX model of the deploy net (the ``onnx`` extra; see ``onnx_model``).
``.caffemodel``: Caffe's weights, and the deploy net beside it as ``.prototxt``.
A train/test net is turned into its deploy form first (``solverkit.deploy``).
"""

from __future__ import annotations

from pathlib import Path

from ..deploy import derive_deployment
from ..errors import ConfigError
from ..files import check_output, write_atomic
from ..net import Net

FORMATS = {".onnx": "ONNX", ".caffemodel": "Caffe"}


def load_deploy_net(spec, weights) -> tuple[Net, object]:
    """The TEST net of ``spec``'s deploy form with ``weights`` loaded, and its Deployment."""
    deployment = derive_deployment(spec)
    net = Net(deployment.spec, phase="TEST", seed=0)
    net.load(weights, allow_extra=True)         # TRAIN-only and loss layers' weights may be there
    return net, deployment


def export_model(spec, weights, path, *, force: bool = False) -> list[str]:
    """Write the deploy net of ``spec`` with ``weights`` to ``path``; the files written.
    An existing file (``path``, or the ``.prototxt`` beside a ``.caffemodel``) is replaced
    only with ``force``, and never when it is ``spec`` or ``weights`` themselves."""
    path = Path(path)
    outputs = [path, path.with_suffix(".prototxt")] if path.suffix.lower() == ".caffemodel" \
        else [path]
    for output in outputs:
        check_output(output, inputs=(spec, weights), force=force, error=ConfigError)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"cannot tell the export format from '{path.name}': name the output "
                          f"{' or '.join('*' + s for s in FORMATS)}")
    if suffix == ".onnx":
        from .onnx_model import onnx_modules, to_onnx
        onnx_modules()          # a missing extra is reported before any work
        net, _ = load_deploy_net(spec, weights)
        try:
            return [write_output(path, to_onnx(net).SerializeToString(), force=force)]
        finally:
            net.close()
    try:
        from ..caffe import export_caffe
    except ImportError:
        raise ConfigError("exporting .caffemodel files is not available in this version of "
                          "solverkit; export .onnx instead") from None
    net, deployment = load_deploy_net(spec, weights)
    try:
        return [str(p) for p in export_caffe(deployment.spec, net, path)]
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
