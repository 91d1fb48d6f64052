"""RNN, LSTM and LSTMUnit: against a step-by-step numpy reference written from Caffe's unrolled
nets, gradient checks through time, torch's LSTM/RNN with the gate order mapped, and Caffe's
blob layout read from a ``.caffemodel`` written with the ``protobuf`` package."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError
from solverkit.gradient_check import check_layer_gradients, layer_net

T, N, I, H, S = 4, 3, 5, 2, 3     # steps, streams, input features, hidden units, static features


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_lstm(x, cont, w_xc, b_c, w_hc, h0, c0, x_static=None, w_static=None):
    """Caffe's LSTM, written out one stream and one step at a time (gates i, f, o, g)."""
    steps, streams = cont.shape
    hidden = w_hc.shape[1]
    h_out = np.zeros((steps, streams, hidden))
    h_last, c_last = h0.copy(), c0.copy()
    for n in range(streams):
        h, c = h0[n], c0[n]
        for t in range(steps):
            z = w_xc @ x[t, n].ravel() + b_c + w_hc @ (cont[t, n] * h)
            if x_static is not None:
                z = z + w_static @ x_static[n].ravel()
            i = sigmoid(z[0:hidden])
            f = sigmoid(z[hidden:2 * hidden])
            o = sigmoid(z[2 * hidden:3 * hidden])
            g = np.tanh(z[3 * hidden:])
            c = cont[t, n] * f * c + i * g
            h = o * np.tanh(c)
            h_out[t, n] = h
        h_last[n], c_last[n] = h, c
    return h_out, h_last, c_last


def reference_rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, h0, x_static=None, w_static=None):
    """Caffe's RNN one stream and one step at a time: h = tanh(...), o = tanh(W_ho h + b_o)."""
    steps, streams = cont.shape
    out = np.zeros((steps, streams, w_ho.shape[0]))
    h_last = h0.copy()
    for n in range(streams):
        h = h0[n]
        for t in range(steps):
            a = w_xh @ x[t, n].ravel() + b_h + w_hh @ (cont[t, n] * h)
            if x_static is not None:
                a = a + w_static @ x_static[n].ravel()
            h = np.tanh(a)
            out[t, n] = np.tanh(w_ho @ h + b_o)
        h_last[n] = h
    return out, h_last


def cont_markers():
    cont = np.ones((T, N))
    cont[0] = 0
    cont[2, 1] = 0          # stream 1 starts a new sequence at step 2
    return cont


def recurrent_layer(kind, *, static=False, expose=False, **fields):
    bottom = ["x", "cont"] + (["xs"] if static else [])
    top = ["y"]
    if expose:
        bottom += ["h0", "c0"] if kind == "LSTM" else ["h0"]
        top += ["hT", "cT"] if kind == "LSTM" else ["hT"]
    return {"name": "rec", "type": kind, "bottom": bottom, "top": top, "num_output": H,
            "weight_filler": {"type": "uniform", "min": -0.5, "max": 0.5},
            "bias_filler": {"type": "uniform", "min": -0.5, "max": 0.5},
            "expose_hidden": expose, **fields}


def inputs(rng, kind, *, static=False, expose=False):
    values = {"x": rng.standard_normal((T, N, I)), "cont": cont_markers()}
    if static:
        values["xs"] = rng.standard_normal((N, S))
    if expose:
        values["h0"] = rng.standard_normal((1, N, H)) * 0.5
        if kind == "LSTM":
            values["c0"] = rng.standard_normal((1, N, H)) * 0.5
    return values


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("expose", [False, True])
def test_lstm_forward_matches_the_reference(rng, static, expose):
    values = inputs(rng, "LSTM", static=static, expose=expose)
    net = layer_net(recurrent_layer("LSTM", static=static, expose=expose), values)
    blobs = [b.data for b in net.params["rec"]]
    assert [b.shape for b in blobs] == [(4 * H, I), (4 * H,)] + \
        ([(4 * H, S)] if static else []) + [(4 * H, H)]
    net.forward()
    zeros = np.zeros((N, H))
    h0 = values["h0"][0] if expose else zeros
    c0 = values["c0"][0] if expose else zeros
    w_static = blobs[2] if static else None
    h, h_last, c_last = reference_lstm(values["x"], values["cont"], blobs[0], blobs[1],
                                       blobs[-1], h0, c0, values.get("xs"), w_static)
    np.testing.assert_allclose(net.blobs["y"].data, h, rtol=1e-12, atol=1e-12)
    if expose:
        np.testing.assert_allclose(net.blobs["hT"].data[0], h_last, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(net.blobs["cT"].data[0], c_last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("expose", [False, True])
def test_rnn_forward_matches_the_reference(rng, static, expose):
    values = inputs(rng, "RNN", static=static, expose=expose)
    net = layer_net(recurrent_layer("RNN", static=static, expose=expose), values)
    blobs = [b.data for b in net.params["rec"]]
    assert [b.shape for b in blobs] == [(H, I), (H,)] + ([(H, S)] if static else []) + \
        [(H, H), (H, H), (H,)]
    net.forward()
    h0 = values["h0"][0] if expose else np.zeros((N, H))
    offset = 1 if static else 0
    out, h_last = reference_rnn(values["x"], values["cont"], blobs[0], blobs[1],
                                blobs[2 + offset], blobs[3 + offset], blobs[4 + offset], h0,
                                values.get("xs"), blobs[2] if static else None)
    np.testing.assert_allclose(net.blobs["y"].data, out, rtol=1e-12, atol=1e-12)
    if expose:
        np.testing.assert_allclose(net.blobs["hT"].data[0], h_last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, True)])
def test_gradients_through_time(rng, kind, static, expose):
    values = inputs(rng, kind, static=static, expose=expose)
    worst = check_layer_gradients(recurrent_layer(kind, static=static, expose=expose), values)
    expected = {"input:x", "param:rec/0", "param:rec/1"} | ({"input:xs"} if static else set()) \
        | ({"input:h0"} if expose else set()) | ({"input:c0"} if expose and kind == "LSTM"
                                                  else set())
    assert expected <= set(worst)
    assert "input:cont" not in worst


def test_the_state_carries_to_the_next_forward_unless_cont_resets_it(rng):
    values = inputs(rng, "LSTM")
    values["cont"] = np.ones((T, N))
    net = layer_net(recurrent_layer("LSTM"), values)
    first = net.forward()["y"]
    second = net.forward()["y"]
    assert not np.allclose(first, second)      # the second pass starts from the first's h_T
    blobs = [b.data for b in net.params["rec"]]
    h_first, h_last, c_last = reference_lstm(values["x"], values["cont"], *blobs,
                                             np.zeros((N, H)), np.zeros((N, H)))
    h_second, _, _ = reference_lstm(values["x"], values["cont"], *blobs, h_last, c_last)
    np.testing.assert_allclose(second, h_second, rtol=1e-12, atol=1e-12)
    values["cont"][0] = 0
    net.set_input("cont", values["cont"])
    np.testing.assert_allclose(net.forward()["y"], first * 0 + reference_lstm(
        values["x"], values["cont"], *blobs, np.zeros((N, H)), np.zeros((N, H)))[0],
        rtol=1e-12, atol=1e-12)


def test_lstm_unit_matches_the_reference_and_its_gradients(rng):
    c_prev = rng.standard_normal((1, N, H))
    gate_input = rng.standard_normal((1, N, 4 * H))
    cont = np.array([[1.0, 0.0, 1.0]])
    layer = {"name": "unit", "type": "LSTMUnit", "bottom": ["c_prev", "x", "cont"],
             "top": ["c", "h"]}
    values = {"c_prev": c_prev, "x": gate_input, "cont": cont}
    net = layer_net(layer, values)
    net.forward()
    for n in range(N):
        z = gate_input[0, n]
        i, f, o = sigmoid(z[:H]), sigmoid(z[H:2 * H]), sigmoid(z[2 * H:3 * H])
        c = cont[0, n] * f * c_prev[0, n] + i * np.tanh(z[3 * H:])
        np.testing.assert_allclose(net.blobs["c"].data[0, n], c, rtol=1e-12)
        np.testing.assert_allclose(net.blobs["h"].data[0, n], o * np.tanh(c), rtol=1e-12)
    worst = check_layer_gradients(layer, values)
    assert {"input:c_prev", "input:x"} == set(worst)


def test_wrong_bottoms_and_shapes_name_the_layer(rng):
    values = inputs(rng, "LSTM")
    with pytest.raises(ConfigError, match="rec.*cont"):
        layer_net(recurrent_layer("LSTM"), {**values, "cont": np.ones((T, N + 1))})
    with pytest.raises(ConfigError, match="rec.*4 or 5 bottoms"):
        layer_net({**recurrent_layer("LSTM"), "expose_hidden": True}, values)
    with pytest.raises(ConfigError, match="num_output"):
        layer_net({**recurrent_layer("RNN"), "num_output": 0}, values)


# ---------------------------------------------------------------- torch

def test_lstm_and_rnn_against_torch(rng):
    torch = pytest.importorskip("torch")
    values = inputs(rng, "LSTM", expose=True)
    values["cont"] = np.ones((T, N))             # torch has no markers: one sequence
    net = layer_net(recurrent_layer("LSTM", expose=True), values)
    net.forward()
    w_xc, b_c, w_hc = (b.data for b in net.params["rec"])
    lstm = torch.nn.LSTM(I, H, dtype=torch.float64)
    # Caffe's rows are gates i, f, o, g; torch's are i, f, g, o
    order = np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H),
                            np.arange(2 * H, 3 * H)])
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(w_xc[order]))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w_hc[order]))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b_c[order]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(values["x"]).requires_grad_()
    h0 = torch.from_numpy(values["h0"]).requires_grad_()
    c0 = torch.from_numpy(values["c0"]).requires_grad_()
    out, (h_t, c_t) = lstm(x, (h0, c0))
    np.testing.assert_allclose(net.blobs["y"].data, out.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(net.blobs["cT"].data, c_t.detach().numpy(), rtol=1e-10)
    seed = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(seed))
    net.clear_param_diffs()
    net.backward(y=seed, hT=np.zeros((1, N, H)), cT=np.zeros((1, N, H)))
    np.testing.assert_allclose(net.blobs["x"].diff, x.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.blobs["h0"].diff, h0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.blobs["c0"].diff, c0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.params["rec"][0].diff[order],
                               lstm.weight_ih_l0.grad.numpy(), rtol=1e-9, atol=1e-12)

    # Caffe's RNN output is tanh(W_ho h + b_o) on top of torch's tanh RNN's hidden state
    values = inputs(rng, "RNN")
    values["cont"] = np.ones((T, N))
    net = layer_net(recurrent_layer("RNN"), values)
    net.forward()
    w_xh, b_h, w_hh, w_ho, b_o = (b.data for b in net.params["rec"])
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh", dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w_xh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(w_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_h))
        rnn.bias_hh_l0.zero_()
    hidden, _ = rnn(torch.from_numpy(values["x"]))
    expected = np.tanh(hidden.detach().numpy() @ w_ho.T + b_o)
    np.testing.assert_allclose(net.blobs["y"].data, expected, rtol=1e-10)


# ---------------------------------------------------------------- Caffe's blob layout

LSTM_NET = """\
name: "seq"
input: "x"  input_shape { dim: 4 dim: 3 dim: 5 }
input: "cont"  input_shape { dim: 4 dim: 3 }
input: "xs"  input_shape { dim: 3 dim: 3 }
layer { name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h"
        recurrent_param { num_output: 2 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
"""


def test_a_caffemodel_in_caffes_blob_layout_loads(tmp_path, rng):
    protobuf_oracle = pytest.importorskip("protobuf_oracle")
    pb = protobuf_oracle.build({
        "BlobShape": [(1, "dim", "int64", "repeated", True)],
        "BlobProto": [(7, "shape", "message", "optional", "BlobShape"),
                      (5, "data", "float", "repeated", True)],
        "LayerParameter": [(1, "name", "string", "optional", None),
                           (2, "type", "string", "optional", None),
                           (3, "bottom", "string", "repeated", None),
                           (4, "top", "string", "repeated", None),
                           (7, "blobs", "message", "repeated", "BlobProto")],
        "NetParameter": [(1, "name", "string", "optional", None),
                         (100, "layer", "message", "repeated", "LayerParameter")],
    })
    # Caffe's LSTM blobs: W_xc (4H x I), b_c (4H), W_xc_static (4H x S), W_hc (4H x H)
    arrays = [rng.standard_normal((4 * H, I)), rng.standard_normal(4 * H),
              rng.standard_normal((4 * H, S)), rng.standard_normal((4 * H, H))]
    arrays = [a.astype(np.float32) for a in arrays]
    message = pb["NetParameter"](name="seq")
    layer = message.layer.add(name="lstm1", type="LSTM", bottom=["x", "cont", "xs"], top=["h"])
    for array in arrays:
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.ravel().tolist())
    path = tmp_path / "seq.caffemodel"
    path.write_bytes(message.SerializeToString())
    net = sk.Net(LSTM_NET, phase="TEST", seed=0)
    assert net.load(path) == []
    for blob, array in zip(net.params["lstm1"], arrays):
        np.testing.assert_array_equal(blob.data, array)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    xs = rng.standard_normal((N, S)).astype(np.float32)
    cont = cont_markers().astype(np.float32)
    h = net.forward(x=x, cont=cont, xs=xs)["h"]
    zeros = np.zeros((N, H))
    expected, _, _ = reference_lstm(x, cont, arrays[0], arrays[1], arrays[3], zeros, zeros,
                                    xs, arrays[2])
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)
