"""pycaffe's ``Net`` and solvers over solverkit's ``Net`` and ``Solver``.

``net.blobs[name]`` and ``net.params[layer][i]`` are solverkit's own Blobs: their
``.data`` and ``.diff`` are the arrays the layers compute in, so an edit is seen by the next
forward and a view taken earlier follows later forwards (an array is replaced only when
its shape changes). ``forward``/``backward`` return those arrays, not copies, as pycaffe.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from itertools import zip_longest

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

import solverkit
from solverkit.caffe.prototxt import net_text_source, solver_text_source
from solverkit.caffe.weights import encode_caffemodel
from solverkit.layers.memory import MemoryData
from solverkit.layers.python import Phase
from solverkit.layers.python import Python as PythonLayerType
from solverkit.files import require_regular, write_atomic
from solverkit.snapshot import load_model

from . import _runtime


def _check_file(path):
    if isinstance(path, Message):       # a caffe_pb2 message instead of its file
        return path
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RuntimeError(f"Could not open file {path}")
    return str(require_regular(path, what="Caffe file"))


def _net_spec(path):
    """The net of a file (Caffe's text format unless the name says YAML or JSON) or of a
    ``caffe_pb2.NetParameter``."""
    if isinstance(path, Message):
        return solverkit.load_net_spec(net_text_source(text_format.MessageToString(path)))
    if os.fspath(path).lower().endswith((".yaml", ".yml", ".json")):
        return solverkit.load_net_spec(path)
    return solverkit.load_net_spec(net_text_source(path))


def _solver_spec(path, overrides=None):
    if isinstance(path, Message):
        return solverkit.load_solver_spec(
            solver_text_source(text_format.MessageToString(path)), overrides)
    if os.fspath(path).lower().endswith((".yaml", ".yml", ".json")):
        return solverkit.load_solver_spec(path, overrides)
    return solverkit.load_solver_spec(solver_text_source(path), overrides)


def _phase_name(phase) -> str:
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return phase.upper()
    try:
        return Phase(int(phase)).name
    except (TypeError, ValueError):
        raise TypeError(f"phase must be caffe.TRAIN or caffe.TEST, not {phase!r}") from None


class Net:
    """``Net(network_file, phase, level=0, stages=None, weights=None)`` or the older
    ``Net(network_file, weights, phase)``: a net for one phase with pycaffe's interface.
    ``network_file`` may also be a ``caffe_pb2.NetParameter``."""

    def __init__(self, network_file, *args, level: int = 0, stages=None, weights=None,
                 phase=None):
        if args and isinstance(args[0], (str, os.PathLike)):    # Net(file, weights, phase)
            if len(args) != 2 or phase is not None or weights is not None:
                raise TypeError("Net(network_file, weights, phase) takes exactly these three")
            weights, phase = args
        elif args:
            if len(args) > 1 or phase is not None:
                raise TypeError("Net(network_file, phase, level=0, stages=None, weights=None)")
            phase = args[0]
        if phase is None:
            raise TypeError("Net() needs a phase: caffe.TRAIN or caffe.TEST")
        seed = _runtime.random_seed()
        net = solverkit.Net(_net_spec(_check_file(network_file)), phase=_phase_name(phase),
                            level=int(level), stages=tuple(stages or ()), seed=seed)
        self._attach(net)
        if weights is not None:
            self.copy_from(_check_file(weights))

    @classmethod
    def _wrapping(cls, net: solverkit.Net) -> Net:
        """The pycaffe view of a solverkit Net (a solver's nets)."""
        obj = cls.__new__(cls)
        obj._attach(net)
        return obj

    def _attach(self, net: solverkit.Net) -> None:
        self._net = net
        self._layer_names = [layer.name for layer in net.layers]
        self._blob_names = list(net.blobs)
        self._hooks = {"before_forward": [], "after_forward": [], "before_backward": [],
                       "after_backward": []}
        self._input_shapes = self._current_input_shapes()

    # ------------------------------------------------------------ what the net holds
    @property
    def layers(self) -> list:
        """The layers in order; a Python layer is the object of its own class."""
        return [layer.python if isinstance(layer, PythonLayerType) else layer
                for layer in self._net.layers]

    @property
    def blobs(self) -> OrderedDict:
        return OrderedDict(self._net.blobs)

    @property
    def params(self) -> OrderedDict:
        return OrderedDict((layer.name, layer.blobs) for layer in self._net.layers
                           if len(layer.blobs) > 0)

    @property
    def layer_dict(self) -> OrderedDict:
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def blob_loss_weights(self) -> OrderedDict:
        weights = {blob.name: weight for blob, weight in self._net.loss_weights}
        return OrderedDict((name, weights.get(name, 0.0)) for name in self._blob_names)

    @property
    def inputs(self) -> list[str]:
        return list(self._net.input_blobs)

    @property
    def outputs(self) -> list[str]:
        """The blobs no layer reads, in name order (Caffe keeps them in a sorted set)."""
        return sorted(self._net.outputs)

    @property
    def top_names(self) -> OrderedDict:
        return OrderedDict((spec.name, list(spec.top)) for spec in self._net.layer_specs)

    @property
    def bottom_names(self) -> OrderedDict:
        return OrderedDict((spec.name, list(spec.bottom)) for spec in self._net.layer_specs)

    @property
    def name(self) -> str:
        return self._net.name

    @property
    def phase(self) -> Phase:
        return Phase[self._net.phase]

    # ------------------------------------------------------------ running
    def _current_input_shapes(self) -> list[tuple]:
        return [blob.shape for blob in self._net.input_blobs.values()]

    def reshape(self) -> None:
        """Carry the input blobs' shapes through every layer."""
        self._net.reshape()
        self._input_shapes = self._current_input_shapes()

    def _forward(self, start: int, end: int) -> None:
        if self._current_input_shapes() != self._input_shapes:    # blobs[...].reshape(...)
            self.reshape()
        if not (self._hooks["before_forward"] or self._hooks["after_forward"]):
            self._net.forward_from_to(start, end)
            return
        for position in range(start, end + 1):
            for hook in self._hooks["before_forward"]:
                hook(position)
            self._net.forward_from_to(position, position)
            for hook in self._hooks["after_forward"]:
                hook(position)

    def _backward(self, start: int, end: int) -> None:
        if not (self._hooks["before_backward"] or self._hooks["after_backward"]):
            self._net.backward_from_to(start, end)
            return
        for position in range(start, end - 1, -1):
            for hook in self._hooks["before_backward"]:
                hook(position)
            self._net.backward_from_to(position, position)
            for hook in self._hooks["after_backward"]:
                hook(position)

    def forward(self, blobs=None, start=None, end=None, **kwargs) -> dict:
        """Run layers ``start..end`` (names; default all) after copying ``kwargs`` into the
        input blobs; returns ``{blob: its data array}`` for the outputs (or ``end``'s tops)
        and ``blobs``."""
        blobs = list(blobs or [])
        start_ind = self._layer_names.index(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_names.index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self._layer_names) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise Exception("Input blob arguments do not match net inputs.")
            for name, value in kwargs.items():
                blob = self._net.blobs[name]
                if np.shape(value)[0] != blob.shape[0]:
                    raise Exception("Input is not batch sized")
                blob.data[...] = value
        self._forward(start_ind, end_ind)
        return {name: self._net.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs) -> dict:
        """Backpropagate from layer ``start`` down to ``end`` (default: all), after copying
        ``kwargs`` into the outputs' diffs (loss tops start from their loss weight); returns
        ``{blob: its diff array}`` for the inputs (or ``end``'s bottoms) and ``diffs``."""
        diffs = list(diffs or [])
        start_ind = self._layer_names.index(start) if start is not None \
            else len(self._layer_names) - 1
        if end is not None:
            end_ind = self._layer_names.index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise Exception("Top diff arguments do not match net outputs.")
            for name, value in kwargs.items():
                if np.shape(value)[0] != self._net.blobs[name].shape[0]:
                    raise Exception("Diff is not batch sized")
        for blob, weight in self._net.loss_weights:     # Caffe keeps these in the loss tops
            if blob.name not in kwargs:
                blob.diff[...] = weight
        for name, value in kwargs.items():
            self._net.blobs[name].diff[...] = value
        self._backward(start_ind, end_ind)
        return {name: self._net.blobs[name].diff for name in outputs}

    def _batch(self, blobs: dict):
        """``blobs`` cut into batches of the net's batch size, the last one padded with zeros."""
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self._net.blobs.values())).shape[0]
        for i in range(0, num - num % batch_size, batch_size):
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        remainder = num % batch_size
        if remainder:
            padded = {}
            for name in blobs:
                values = np.asarray(blobs[name])
                padding = np.zeros((batch_size - remainder,) + values.shape[1:])
                padded[name] = np.concatenate([values[-remainder:], padding])
            yield padded

    def forward_all(self, blobs=None, **kwargs) -> dict:
        """Forward over any number of samples, a batch at a time; outputs stacked."""
        all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
        for batch in self._batch(kwargs):
            for out, values in self.forward(blobs=blobs, **batch).items():
                all_outs[out].extend(values.copy())
        all_outs = {out: np.asarray(values) for out, values in all_outs.items()}
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            all_outs = {out: values[:-pad] for out, values in all_outs.items()}
        return all_outs

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """Forward and backward over any number of samples; ``(outputs, input diffs)``."""
        all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
        all_diffs = {diff: [] for diff in set(self.inputs + (diffs or []))}
        forward_batches = self._batch({n: kwargs[n] for n in self.inputs if n in kwargs})
        backward_batches = self._batch({n: kwargs[n] for n in self.outputs if n in kwargs})
        for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
            for out, values in self.forward(blobs=blobs, **fb).items():
                all_outs[out].extend(values.copy())
            for diff, values in self.backward(diffs=diffs, **bb).items():
                all_diffs[diff].extend(values.copy())
        all_outs = {out: np.asarray(v) for out, v in all_outs.items()}
        all_diffs = {diff: np.asarray(v) for diff, v in all_diffs.items()}
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            all_outs = {out: v[:-pad] for out, v in all_outs.items()}
            all_diffs = {diff: v[:-pad] for diff, v in all_diffs.items()}
        return all_outs, all_diffs

    def set_input_arrays(self, data, labels) -> None:
        """Hand ``data`` (N, C, H, W) float32 and ``labels`` (N,) to the net's first layer, a
        MemoryData layer; N must be a multiple of its batch size. The arrays are kept."""
        layer = self._net.layers[0] if self._net.layers else None
        if not isinstance(layer, MemoryData):
            raise RuntimeError("set_input_arrays may only be called if the first layer is a "
                               "MemoryDataLayer")
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        _check_array(data, "data array", *layer.sample_shape)
        _check_array(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise RuntimeError("data and labels must have the same first dimension")
        if data.shape[0] % layer.params.batch_size:
            raise RuntimeError("first dimensions of input arrays must be a multiple of batch "
                               "size")
        layer.set_arrays(data, labels)

    def clear_param_diffs(self) -> None:
        for layer in self._net.layers:
            for blob in layer.blobs:
                blob.diff[...] = 0

    # ------------------------------------------------------------ weights
    def copy_from(self, path) -> None:
        """Copy weights from a ``.caffemodel`` (or an ``.h5``, or solverkit's model file) into
        the layers of the same name; layers the file lacks keep theirs, as Caffe."""
        path = os.fspath(path)
        if path.endswith((".h5", ".hdf5")):
            self.load_hdf5(path)
            return
        load_model(self._net, _check_file(path), allow_missing=True)

    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter Blobs for every layer of the same name."""
        self._net.share_params_with(other._net)

    def save(self, path) -> None:
        """Write the parameters as a ``.caffemodel`` (a binary NetParameter)."""
        layers = [(spec.name, spec.type, list(spec.bottom), list(spec.top),
                   [np.asarray(b.data, dtype=np.float32) for b in layer.blobs])
                  for layer, spec in zip(self._net.layers, self._net.layer_specs)]
        write_atomic(path, encode_caffemodel(self._net.name, layers),
                     operation="write the weights")

    def save_hdf5(self, path) -> None:
        """Caffe's HDF5 weights: ``data/<layer>/<index>`` and ``diff/<layer>/<index>``."""
        h5py = _h5py()
        with h5py.File(path, "w") as f:     # h5py writes in place, as Caffe does
            data, diff = f.create_group("data"), f.create_group("diff")
            for name, blobs in self.params.items():
                for group, attr in ((data, "data"), (diff, "diff")):
                    layer_group = group.create_group(name)
                    for j, blob in enumerate(blobs):
                        layer_group.create_dataset(str(j), data=getattr(blob, attr))

    def load_hdf5(self, path) -> None:
        h5py = _h5py()
        with h5py.File(_check_file(path), "r") as f:
            data = f["data"]
            for name, blobs in self.params.items():
                if name not in data:
                    continue
                group = data[name]
                if len(group) != len(blobs):
                    raise RuntimeError(f"Incompatible number of blobs for layer {name}")
                for j, blob in enumerate(blobs):
                    stored = group[str(j)]
                    if tuple(stored.shape) != blob.shape:
                        raise RuntimeError(f"Cannot copy param {j} weights from layer '{name}';"
                                           f" shape mismatch. Source param shape is "
                                           f"{tuple(stored.shape)}; target param shape is "
                                           f"{blob.shape}")
                    blob.data[...] = stored[()]

    # ------------------------------------------------------------ hooks
    def before_forward(self, run) -> None:
        """``run(layer_index)`` before each layer's forward."""
        self._hooks["before_forward"].append(run)

    def after_forward(self, run) -> None:
        self._hooks["after_forward"].append(run)

    def before_backward(self, run) -> None:
        self._hooks["before_backward"].append(run)

    def after_backward(self, run) -> None:
        self._hooks["after_backward"].append(run)

    def __repr__(self) -> str:
        return f"caffe.Net({self._net.name!r}, phase={self._net.phase})"


def _check_array(array, name: str, channels: int, height: int, width: int) -> None:
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise RuntimeError(f"{name} must be C contiguous")
    if array.ndim != 4:
        raise RuntimeError(f"{name} must be 4-d")
    if array.dtype != np.float32:
        raise RuntimeError(f"{name} must be float32")
    for axis, want, what in ((1, channels, "number of channels"), (2, height, "height"),
                             (3, width, "width")):
        if array.shape[axis] != want:
            raise RuntimeError(f"{name} has wrong {what}")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("HDF5 weights need h5py: pip install 'solverkit[hdf5]'") from None
    return h5py


# ---------------------------------------------------------------------------- solvers
class _Callback(solverkit.Callback):
    """pycaffe's ``add_callback(on_start, on_gradients_ready)`` as a solverkit callback:
    as in Caffe, ``on_start`` before every iteration's forward passes, and
    ``on_gradients_ready`` after its backward passes, before the update."""

    def __init__(self, on_start, on_gradients_ready):
        super().__init__()
        self._start = on_start
        self._ready = on_gradients_ready

    def on_iteration_start(self, it):
        self._start()

    def before_update(self, it):
        self._ready()


class Solver:
    """A solver from a solver prototxt (or YAML): ``.net``, ``.test_nets``, ``.iter``,
    ``step(n)``, ``solve()``, ``snapshot()``, ``restore()``. The subclasses fix the type."""

    type: str | None = None

    def __init__(self, solver_file):
        spec = _solver_spec(_check_file(solver_file))
        overrides = []
        if self.type is not None and spec.type != self.type:
            overrides.append(f"type={self.type}")
        if "snapshot_format" not in spec.model_fields_set:
            overrides.append("snapshot_format=BINARYPROTO")     # Caffe's own files
        if overrides:
            spec = _solver_spec(solver_file, overrides)
        # pycaffe reads any blob's diff after a step, as Caffe keeps them all
        self._solver = solverkit.Solver(spec, progress=False, keep_diffs=True)
        self._net = Net._wrapping(self._solver.net)
        self._wrapped_test_nets = None

    @property
    def net(self) -> Net:
        return self._net

    @property
    def test_nets(self) -> list[Net]:
        if self._wrapped_test_nets is None:
            nets = self._solver.test_nets if self._solver.test_plans else []
            self._wrapped_test_nets = [Net._wrapping(net) for net in nets]
        return self._wrapped_test_nets

    @property
    def iter(self) -> int:
        return self._solver.iter

    @property
    def param(self):
        """The solver's settings (``max_iter``, ``base_lr``, ``display``, ...)."""
        return self._solver.spec

    @property
    def lr(self) -> float:
        return self._solver.rate()

    def step(self, iters: int) -> None:
        self._solver.step(int(iters))

    def solve(self, resume_file=None) -> None:
        if resume_file is not None:
            self.restore(resume_file)
        self._solver.solve()

    def restore(self, state_file) -> None:
        self._solver.restore(_check_file(state_file))

    def snapshot(self) -> None:
        self._solver.snapshot()

    def apply_update(self) -> None:
        """One update from the diffs the parameters hold now, at the current iteration's
        rate; the iteration count stays (``step`` counts)."""
        self._solver.updater.update(self._solver.rate(), self._solver.iter)

    def share_weights(self, net: Net) -> None:
        net.share_with(self._net)

    def add_callback(self, on_start, on_gradients_ready) -> None:
        self._solver.add_callback(_Callback(on_start, on_gradients_ready))


class SGDSolver(Solver):
    type = "SGD"


class NesterovSolver(Solver):
    type = "Nesterov"


class AdaGradSolver(Solver):
    type = "AdaGrad"


class RMSPropSolver(Solver):
    type = "RMSProp"


class AdaDeltaSolver(Solver):
    type = "AdaDelta"


class AdamSolver(Solver):
    type = "Adam"


def get_solver(solver_file) -> Solver:
    """The solver of the type the file names."""
    return Solver(solver_file)
