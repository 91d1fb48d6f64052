"""Numeric gradient checking (float64, central differences), for every layer with a backward.

The objective is ``L = Σ loss_weight·loss + Σ_outputs ⟨r_o, output_o⟩`` with fixed random
``r_o``, so every output's gradient is exercised. ``backward`` must give ``∂L/∂x`` for every
Input blob that receives a gradient and ``∂L/∂W`` for every parameter; both are compared
with ``(L(x+ε) − L(x−ε)) / 2ε``. Random layers (Dropout) are re-seeded before each forward
so the perturbed passes see the same mask.
"""

from __future__ import annotations

import copy

import numpy as np

from .layers.base import DataLayer
from .net import Net
from .spec.net import load_net_spec


class GradientMismatch(AssertionError):
    """Analytic and numeric gradients differ beyond tolerance."""


def _objective(net: Net, rng_states: dict, projections: dict[str, np.ndarray]) -> float:
    for name, gen in net.random_generators().items():
        gen.bit_generator.state = rng_states[name]
    net.forward()
    total = net.loss
    for name, r in projections.items():
        total += float(np.sum(r * net.blobs[name].data))
    return total


def check_net_gradients(net: Net, *, eps: float = 1e-5, rtol: float = 1e-4,
                        atol: float = 1e-7, seed: int = 0, check_params: bool = True,
                        max_elements: int | None = None) -> dict[str, float]:
    """Compare ``net.backward`` with central differences; raise ``GradientMismatch`` if off.

    Inputs are whatever the Input blobs hold. Returns the worst relative error per checked
    array (``"input:<blob>"`` / ``"param:<layer>/<index>"``), so callers can assert on it.
    ``max_elements`` checks a random subset of each array's elements (big arrays).
    """
    assert net.dtype == np.float64, "gradient checks need a float64 net (dtype: float64)"
    rng = np.random.default_rng(seed)
    rng_states = {name: copy.deepcopy(g.bit_generator.state)
                  for name, g in net.random_generators().items()}
    loss_blobs = {blob.name for blob, _ in net.loss_weights}
    projections = {name: rng.standard_normal(net.blobs[name].shape)
                   for name in net.outputs if name not in loss_blobs}

    _objective(net, rng_states, projections)
    net.clear_param_diffs()
    net.backward(**projections)

    targets = []   # (label, data array, analytic gradient)
    for position, layer in enumerate(net.layers):
        if not (isinstance(layer, DataLayer) and layer.fed_by_user):
            continue
        for blob in net.tops[position]:
            if _receives_gradient(net, blob):
                targets.append((f"input:{blob.name}", blob.data, blob.diff.copy()))
    if check_params:
        seen = set()
        for layer in net.layers:
            for j, blob in enumerate(layer.blobs):
                if id(blob) in seen or not layer.param_propagate_down[j]:
                    continue
                seen.add(id(blob))
                targets.append((f"param:{layer.name}/{j}", blob.data, blob.diff.copy()))
    assert targets, "nothing to check: no input receives a gradient and no parameter learns"

    worst = {}
    for label, data, analytic in targets:
        flat = data.reshape(-1)
        indices = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            indices = rng.choice(flat.size, max_elements, replace=False)
        numeric = np.empty(len(indices))
        for k, i in enumerate(indices):
            keep = flat[i]
            flat[i] = keep + eps
            plus = _objective(net, rng_states, projections)
            flat[i] = keep - eps
            minus = _objective(net, rng_states, projections)
            flat[i] = keep
            numeric[k] = (plus - minus) / (2 * eps)
        got = analytic.reshape(-1)[indices]
        error = np.abs(got - numeric)
        scale = np.maximum(np.abs(got), np.abs(numeric))
        bad = error > atol + rtol * scale
        worst[label] = float(np.max(error / np.maximum(scale, atol))) if len(error) else 0.0
        if np.any(bad):
            k = int(np.argmax(error - rtol * scale))
            raise GradientMismatch(
                f"{label}: element {int(indices[k])} analytic {got[k]:.8g} vs numeric "
                f"{numeric[k]:.8g} ({int(bad.sum())} of {len(indices)} elements off)")
    _objective(net, rng_states, projections)
    return worst


def _receives_gradient(net: Net, blob) -> bool:
    for position, bottoms in enumerate(net.bottoms):
        for b, flag in zip(bottoms, net.bottom_need_backward[position]):
            if flag and (b is blob or getattr(b, "_source", None) is blob):
                return True
    return False


def layer_net(layer: dict, inputs: dict[str, np.ndarray], *, extra_layers=(),
              seed: int = 0, phase: str = "TRAIN") -> Net:
    """A float64 net ``Input(inputs) -> layer [-> extra_layers]`` with the inputs filled in.

    ``layer`` is one YAML-style layer entry (name, type, bottom, top, fields); ``inputs``
    maps each Input blob name to its value (labels included).
    """
    names = list(inputs)
    spec = {
        "name": f"check_{layer.get('type', 'layer')}",
        "dtype": "float64",
        "layers": [{"name": "input", "type": "Input", "top": names,
                    "shape": [list(np.shape(inputs[n])) for n in names]},
                   layer, *extra_layers],
    }
    net = Net(load_net_spec(spec), phase=phase, seed=seed)
    for name, value in inputs.items():
        net.set_input(name, value)
    net.reshape()
    return net


def check_layer_gradients(layer: dict, inputs: dict[str, np.ndarray], **kwargs) -> dict:
    """``check_net_gradients`` on ``layer_net(layer, inputs)``; see both."""
    build = {k: kwargs.pop(k) for k in ("extra_layers", "seed", "phase") if k in kwargs}
    return check_net_gradients(layer_net(layer, inputs, **build), **kwargs)
