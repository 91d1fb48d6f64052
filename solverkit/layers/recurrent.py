"""Recurrent layers with Caffe's semantics: ``RNN``, ``LSTM`` and the one-step ``LSTMUnit``.

Shapes are time-major, as Caffe's: the input ``x`` is (T, N, ...) — T time steps of N
independent streams, the trailing axes flattened to I features — and ``cont`` (T, N)
marks whether step t continues the stream's sequence (1) or starts a new one (0: the
state from step t−1 is multiplied by 0). An optional static input ``x_static`` (N, ...)
is added to every step's gate input. Bottoms are ``[x, cont, (x_static), (h_0, (c_0))]``,
tops ``[output, (h_T, (c_T))]``; the hidden-state bottoms and tops exist only with
``expose_hidden``. Without it the layer carries h_T (and c_T) to the next forward as its
h_0 (c_0), zeros at first, as Caffe does; a ``cont`` of 0 at a sequence's first step makes
that carried state irrelevant.

Parameters are stored in Caffe's order, so a Caffe-trained ``.caffemodel`` loads as is:

- LSTM: ``W_xc`` (4H, I), ``b_c`` (4H), [``W_xc_static`` (4H, I_static)], ``W_hc`` (4H, H);
  the 4H rows are the gates in Caffe's order i, f, o, g.
- RNN: ``W_xh`` (H, I), ``b_h`` (H), [``W_xh_static`` (H, I_static)], ``W_hh`` (H, H),
  ``W_ho`` (H, H), ``b_o`` (H).

Backward runs through time. Gradients reach ``x``, ``x_static``, every parameter, and —
with ``expose_hidden`` — ``h_0``/``c_0`` from the diffs of every top including ``h_T``/``c_T``
(Caffe itself stops gradients at the exposed state); ``cont`` takes none.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from .base import Layer, accumulate_matmul, accumulate_sum


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without overflow: ½·tanh(x/2) + ½."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def lstm_cell(gate_input: np.ndarray, c_prev: np.ndarray, cont: np.ndarray):
    """One LSTM step from the gate pre-activations, Caffe's LSTMUnit.

    ``gate_input`` (N, 4H) holds [i', f', o', g'] in this order; ``c_prev`` (N, H);
    ``cont`` (N, 1). ``i, f, o = σ(i', f', o')``, ``g = tanh(g')``,
    ``c = cont·f·c_prev + i·g``, ``h = o·tanh(c)``. Returns ``(gates, c, tanh_c, h)`` with
    ``gates`` (N, 4H) the activated [i, f, o, g].
    """
    hidden = c_prev.shape[-1]
    gates = np.empty_like(gate_input)
    gates[:, :3 * hidden] = _sigmoid(gate_input[:, :3 * hidden])
    np.tanh(gate_input[:, 3 * hidden:], out=gates[:, 3 * hidden:])
    i, f, g = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 3 * hidden:]
    o = gates[:, 2 * hidden:3 * hidden]
    c = cont * f * c_prev + i * g
    tanh_c = np.tanh(c)
    return gates, c, tanh_c, o * tanh_c


def lstm_cell_backward(dh: np.ndarray, dc: np.ndarray, gates: np.ndarray, c_prev: np.ndarray,
                       tanh_c: np.ndarray, cont: np.ndarray):
    """The gradients of :func:`lstm_cell`: ``(d gate_input (N, 4H), d c_prev (N, H))``.

    ``dh``/``dc`` are the diffs arriving at h and c of this step (c's from the next step
    and from outside).
    """
    hidden = c_prev.shape[-1]
    i, f, g = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 3 * hidden:]
    o = gates[:, 2 * hidden:3 * hidden]
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    d_gate_input = np.empty_like(gates)
    d_gate_input[:, :hidden] = dc_total * g * i * (1 - i)
    d_gate_input[:, hidden:2 * hidden] = dc_total * cont * c_prev * f * (1 - f)
    d_gate_input[:, 2 * hidden:3 * hidden] = dh * tanh_c * o * (1 - o)
    d_gate_input[:, 3 * hidden:] = dc_total * i * (1 - g * g)
    return d_gate_input, dc_total * cont * f


class RecurrentParams(LayerParams):
    """Caffe's ``recurrent_param``."""

    num_output: int = Field(gt=0, description="H, the size of the hidden state (and output)")
    weight_filler: FillerSpec | None = None
    bias_filler: FillerSpec | None = None
    debug_info: bool = Field(False, description="accepted; Caffe's per-step log, no effect")
    expose_hidden: bool = Field(False, description="h_0 (c_0) as extra bottoms, h_T (c_T) as "
                                "extra tops")


class RecurrentLayer(Layer):
    """What RNN and LSTM share: bottoms and tops, shapes, the carried state, the inputs' products.

    A subclass names its state blobs (``state_names``), how many gate rows per hidden unit
    its input transform has (``gate_rows``), creates the parameters after the input ones
    (``make_recurrent_params``) and runs ``unroll``/``unroll_backward`` over the steps.
    """

    Params = RecurrentParams
    min_bottoms = 2
    min_tops = 1
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    gate_rows: ClassVar[int] = 1

    # ----- layout of bottoms and tops -----
    def _layout(self, bottom, top) -> None:
        exposed = self.state_names if self.params.expose_hidden else ()
        extra = len(bottom) - 2 - len(exposed)
        if extra not in (0, 1):
            names = "".join(f", {n}_0" for n in exposed)
            raise self.error(f"takes {2 + len(exposed)} or {3 + len(exposed)} bottoms (x, cont, "
                             f"[x_static]{names}), got {len(bottom)}", field="bottom")
        if len(top) != 1 + len(exposed):
            names = "".join(f", {n}_T" for n in exposed)
            raise self.error(f"takes {1 + len(exposed)} tops (output{names}), got {len(top)}",
                             field="expose_hidden")
        self.static_input = extra == 1
        self.hidden_bottoms = list(range(2 + extra, len(bottom)))

    def _shapes(self, bottom):
        x, cont = bottom[0].shape, bottom[1].shape
        if len(x) < 2:
            raise self.error(f"bottom[0] must be (T, N, ...), got shape {list(x)}", field="bottom")
        if tuple(cont) != tuple(x[:2]):
            raise self.error(f"cont (bottom[1]) must be (T, N) = {list(x[:2])}, got {list(cont)}",
                             field="bottom")
        if self.static_input and (len(bottom[2].shape) < 1 or bottom[2].shape[0] != x[1]):
            raise self.error(f"x_static (bottom[2]) must be (N, ...) with N = {x[1]}, got "
                             f"{list(bottom[2].shape)}", field="bottom")
        return x[0], x[1], int(np.prod(x[2:], dtype=np.int64))

    def setup(self, bottom, top):
        self._layout(bottom, top)
        _, _, features = self._shapes(bottom)
        p = self.params
        rows = self.gate_rows * p.num_output
        self.make_param((rows, features), p.weight_filler, "W_x")
        self.make_param((rows,), p.bias_filler, "b")
        if self.static_input:
            static = int(np.prod(bottom[2].shape[1:], dtype=np.int64))
            self.make_param((rows, static), p.weight_filler, "W_x_static")
        self.make_param((rows, p.num_output), p.weight_filler, "W_h")
        self.make_recurrent_params()
        self.carried: list[np.ndarray] | None = None

    def make_recurrent_params(self) -> None:
        """Parameters after the hidden-to-gates one (RNN's output transform)."""

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index != 1          # no gradient for the sequence markers

    def reshape(self, bottom, top):
        steps, streams, _ = self._shapes(bottom)
        hidden = self.params.num_output
        state_shape = (1, streams, hidden)
        for k, index in enumerate(self.hidden_bottoms):
            if tuple(bottom[index].shape) != state_shape:
                raise self.error(f"{self.state_names[k]}_0 (bottom[{index}]) must be "
                                 f"{list(state_shape)}, got {list(bottom[index].shape)}",
                                 field="bottom")
        top[0].reshape((steps, streams, hidden))
        for k in range(1, len(top)):
            top[k].reshape(state_shape)

    # ----- the parts every step uses -----
    @property
    def _w_hidden(self) -> np.ndarray:
        return self.blobs[3 if self.static_input else 2].data

    def _input_products(self, bottom) -> np.ndarray:
        """``W_x·x_t + b [+ W_x_static·x_static]`` for every step at once: (T, N, rows)."""
        x = bottom[0].data
        steps, streams = x.shape[:2]
        w, b = self.blobs[0].data, self.blobs[1].data
        products = (x.reshape(steps * streams, -1) @ w.T).reshape(steps, streams, -1)
        products += b
        if self.static_input:
            static = bottom[2].data.reshape(streams, -1)
            products += static @ self.blobs[2].data.T
        return products

    def _initial_state(self, bottom, streams: int) -> list[np.ndarray]:
        hidden = self.params.num_output
        if self.params.expose_hidden:
            return [bottom[i].data.reshape(streams, hidden) for i in self.hidden_bottoms]
        if self.carried is None or self.carried[0].shape != (streams, hidden):
            self.carried = [np.zeros((streams, hidden), self.dtype) for _ in self.state_names]
        return self.carried

    def forward(self, bottom, top):
        cont = bottom[1].data
        products = self._input_products(bottom)
        initial = self._initial_state(bottom, cont.shape[1])
        self.saved = self.unroll(products, cont[:, :, None].astype(self.dtype), initial)
        output, final = self.outputs(self.saved)
        top[0].data[...] = output
        if self.params.expose_hidden:
            for k, state in enumerate(final):
                top[1 + k].data[...] = state[None]
        else:
            self.carried = [state.copy() for state in final]

    def backward(self, top, propagate_down, bottom):
        cont = bottom[1].data[:, :, None].astype(self.dtype)
        final_diffs = [top[1 + k].diff[0] for k in range(len(top) - 1)]
        d_products, d_initial = self.unroll_backward(top[0].diff, final_diffs, cont, self.saved)
        steps, streams, rows = d_products.shape
        flat = d_products.reshape(steps * streams, rows)
        x = bottom[0].data
        if self.param_propagate_down[0]:
            accumulate_matmul(self.blobs[0], flat.T, x.reshape(steps * streams, -1))
        if self.param_propagate_down[1]:
            accumulate_sum(self.blobs[1], flat, axis=0)
        if propagate_down[0]:
            bottom[0].diff[...] = (flat @ self.blobs[0].data).reshape(x.shape)
        if self.static_input:
            per_stream = d_products.sum(axis=0)
            static = bottom[2].data.reshape(streams, -1)
            if self.param_propagate_down[2]:
                accumulate_matmul(self.blobs[2], per_stream.T, static)
            if propagate_down[2]:
                bottom[2].diff[...] = (per_stream @ self.blobs[2].data).reshape(
                    bottom[2].shape)
        for k, index in enumerate(self.hidden_bottoms):
            if propagate_down[index]:
                bottom[index].diff[...] = d_initial[k][None]

    def _accumulate_hidden_weight(self, d_products: np.ndarray, previous: np.ndarray,
                                  cont: np.ndarray) -> None:
        """``dW_h += Σ_t d_products_tᵀ · (cont_t · h_{t−1})``."""
        index = 3 if self.static_input else 2
        if self.param_propagate_down[index]:
            rows = d_products.shape[-1]
            conted = (cont * previous).reshape(-1, previous.shape[-1])
            accumulate_matmul(self.blobs[index], d_products.reshape(-1, rows).T, conted)

    # ----- what a subclass defines -----
    def unroll(self, products, cont, initial):
        """Run the recurrence over the time steps; returns what ``outputs`` and
        ``unroll_backward`` read."""
        raise NotImplementedError

    def outputs(self, saved):
        """``(top[0] data (T, N, H), [final states (N, H)])`` from what ``unroll`` saved."""
        raise NotImplementedError

    def unroll_backward(self, d_output, final_diffs, cont, saved):
        """``(d products (T, N, rows), [d initial states (N, H)])``; adds parameter diffs."""
        raise NotImplementedError


@register_layer("RNN")
class RNN(RecurrentLayer):
    """Caffe's RNN:
    ``h_t = tanh(W_xh·x_t + b_h [+ W_xh_static·x_static] + W_hh·(cont_t·h_{t−1}))``,
    output ``o_t = tanh(W_ho·h_t + b_o)``. Bottoms x (T, N, ...), cont (T, N), [x_static
    (N, ...)], [h_0 (1, N, H)]; tops o (T, N, H), [h_T (1, N, H)] (h_0/h_T with
    ``expose_hidden``). Blobs in Caffe's order: W_xh (H, I), b_h (H), [W_xh_static
    (H, I_static)], W_hh (H, H), W_ho (H, H), b_o (H). See docs/recurrent.md.
    """

    max_bottoms = 4
    max_tops = 2

    def make_recurrent_params(self):
        p = self.params
        self.make_param((p.num_output, p.num_output), p.weight_filler, "W_ho")
        self.make_param((p.num_output,), p.bias_filler, "b_o")

    def unroll(self, products, cont, initial):
        w_hh = self._w_hidden
        steps = products.shape[0]
        states = np.empty_like(products)
        h = initial[0]
        for t in range(steps):
            h = np.tanh(products[t] + (cont[t] * h) @ w_hh.T)
            states[t] = h
        w_ho, b_o = self.blobs[-2].data, self.blobs[-1].data
        hidden = states.shape[-1]
        output = np.tanh(states.reshape(-1, hidden) @ w_ho.T + b_o)
        return {"h0": initial[0].copy(), "h": states, "o": output.reshape(states.shape)}

    def outputs(self, saved):
        return saved["o"], [saved["h"][-1]]

    def unroll_backward(self, d_output, final_diffs, cont, saved):
        states, output = saved["h"], saved["o"]
        steps, streams, hidden = states.shape
        d_pre_output = (d_output * (1 - output * output)).reshape(-1, hidden)
        if self.param_propagate_down[-2]:
            accumulate_matmul(self.blobs[-2], d_pre_output.T, states.reshape(-1, hidden))
        if self.param_propagate_down[-1]:
            accumulate_sum(self.blobs[-1], d_pre_output, axis=0)
        d_states = (d_pre_output @ self.blobs[-2].data).reshape(states.shape)
        if final_diffs:
            d_states[-1] += final_diffs[0]
        w_hh = self._w_hidden
        d_products = np.empty_like(states)
        carry = np.zeros((streams, hidden), states.dtype)
        for t in range(steps - 1, -1, -1):
            d_pre = (d_states[t] + carry) * (1 - states[t] * states[t])
            d_products[t] = d_pre
            carry = (d_pre @ w_hh) * cont[t]
        previous = np.concatenate([saved["h0"][None], states[:-1]])
        self._accumulate_hidden_weight(d_products, previous, cont)
        return d_products, [carry]


@register_layer("LSTM")
class LSTM(RecurrentLayer):
    """Caffe's LSTM: gate input
    ``W_xc·x_t + b_c [+ W_xc_static·x_static] + W_hc·(cont_t·h_{t−1})``, split as [i, f, o, g] (σ, σ, σ, tanh); ``c_t = cont_t·f·c_{t−1} + i·g``,
    ``h_t = o·tanh(c_t)``. Bottoms x (T, N, ...), cont (T, N), [x_static (N, ...)],
    [h_0, c_0 (1, N, H)]; tops h (T, N, H), [h_T, c_T (1, N, H)] (the states with
    ``expose_hidden``). Blobs in Caffe's order: W_xc (4H, I), b_c (4H), [W_xc_static
    (4H, I_static)], W_hc (4H, H). See docs/recurrent.md.
    """

    max_bottoms = 5
    max_tops = 3
    state_names = ("h", "c")
    gate_rows = 4

    def unroll(self, products, cont, initial):
        w_hc = self._w_hidden
        steps, streams, rows = products.shape
        hidden = rows // 4
        gates = np.empty_like(products)
        cells = np.empty((steps, streams, hidden), products.dtype)
        tanh_cells = np.empty_like(cells)
        states = np.empty_like(cells)
        h, c = initial
        h0, c0 = h.copy(), c.copy()
        for t in range(steps):
            gate_input = products[t] + (cont[t] * h) @ w_hc.T
            gates[t], c, tanh_cells[t], h = lstm_cell(gate_input, c, cont[t])
            cells[t], states[t] = c, h
        return {"h0": h0, "c0": c0, "gates": gates, "c": cells, "tanh_c": tanh_cells,
                "h": states}

    def outputs(self, saved):
        return saved["h"], [saved["h"][-1], saved["c"][-1]]

    def unroll_backward(self, d_output, final_diffs, cont, saved):
        states, cells = saved["h"], saved["c"]
        steps, streams, hidden = states.shape
        w_hc = self._w_hidden
        d_products = np.empty_like(saved["gates"])
        dh_carry = np.zeros((streams, hidden), states.dtype)
        dc_carry = np.zeros_like(dh_carry)
        if final_diffs:
            dh_carry = dh_carry + final_diffs[0]
            dc_carry = dc_carry + final_diffs[1]
        previous_cells = np.concatenate([saved["c0"][None], cells[:-1]])
        for t in range(steps - 1, -1, -1):
            d_gate, dc_carry = lstm_cell_backward(d_output[t] + dh_carry, dc_carry,
                                                  saved["gates"][t], previous_cells[t],
                                                  saved["tanh_c"][t], cont[t])
            d_products[t] = d_gate
            dh_carry = (d_gate @ w_hc) * cont[t]
        previous = np.concatenate([saved["h0"][None], states[:-1]])
        self._accumulate_hidden_weight(d_products, previous, cont)
        return d_products, [dh_carry, dc_carry]


@register_layer("LSTMUnit")
class LSTMUnit(Layer):
    """One LSTM step (Caffe's LSTMUnit): bottoms c_{t−1} (1, N, H), gate input (1, N, 4H) in
    the order [i, f, o, g], cont (1, N); tops c_t (1, N, H), h_t (1, N, H).

    ``c_t = cont·σ(f')·c_{t−1} + σ(i')·tanh(g')``, ``h_t = σ(o')·tanh(c_t)``. No
    parameters; no gradient for cont.
    """

    min_bottoms = max_bottoms = 3
    min_tops = max_tops = 2

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gate_input, cont = (b.shape for b in bottom)
        if len(c_prev) != 3 or c_prev[0] != 1:
            raise self.error(f"bottom[0] (c_prev) must be (1, N, H), got {list(c_prev)}",
                             field="bottom")
        _, streams, hidden = c_prev
        if tuple(gate_input) != (1, streams, 4 * hidden):
            raise self.error(f"bottom[1] (gate input) must be (1, N, 4H) = "
                             f"{[1, streams, 4 * hidden]}, got {list(gate_input)}", field="bottom")
        if tuple(cont) != (1, streams):
            raise self.error(f"bottom[2] (cont) must be (1, N) = {[1, streams]}, got "
                             f"{list(cont)}", field="bottom")
        top[0].reshape(c_prev)
        top[1].reshape(c_prev)

    def forward(self, bottom, top):
        c_prev = bottom[0].data[0]
        cont = bottom[2].data[0][:, None].astype(self.dtype)
        gates, c, tanh_c, h = lstm_cell(bottom[1].data[0], c_prev, cont)
        self.saved = (gates, tanh_c)
        top[0].data[0] = c
        top[1].data[0] = h

    def backward(self, top, propagate_down, bottom):
        gates, tanh_c = self.saved
        cont = bottom[2].data[0][:, None].astype(self.dtype)
        d_gate, dc_prev = lstm_cell_backward(top[1].diff[0], top[0].diff[0], gates,
                                             bottom[0].data[0], tanh_c, cont)
        if propagate_down[0]:
            bottom[0].diff[0] = dc_prev
        if propagate_down[1]:
            bottom[1].diff[0] = d_gate
