"""One plugin module that extends every registry from outside the package, as a user
writes it: a data file format, an exporter, an update rule, an lr policy, a callback named
in the solver spec, and a layer with its ONNX converter. Net and solver specs list it
under ``plugins``."""

import numpy as np

from solverkit import (
    Callback,
    Layer,
    LayerParams,
    UpdateRule,
    register_callback,
    register_exporter,
    register_layer,
    register_policy,
    register_source_format,
    register_update,
)
from solverkit.export.onnx_model import register_onnx


@register_source_format("tsv", suffixes=[".tsv"])   # Data layer: `source: train.tsv`
def read_tsv(path, params):                         # params: the Data layer's fields
    a = np.loadtxt(path, delimiter="\t", dtype=np.float32, ndmin=2)
    return a[:, :-1], a[:, -1]                      # samples first: data, labels


@register_exporter("shapes", suffixes=[".shapes"])  # solverkit export ... -o model.shapes
def export_shapes(net, path):                       # net: the deploy Net, weights loaded;
    with open(path, "w") as f:                      # path: written, then moved into place
        for name, blobs in net.params.items():      # noqa: FURB122  (as SPEC §14 writes it)
            f.write(f"{name} {[list(b.data.shape) for b in blobs]}\n")


@register_update("ScaledSign")                      # solver spec: type: ScaledSign
class ScaledSign(UpdateRule):
    """W -= lr · scale · sign(g)."""

    class Params(UpdateRule.Params):
        scale: float = 1.0

    def step(self, param, state, lr, t):
        param.data -= lr * self.params.scale * np.sign(param.diff)


@register_policy("quartering")                     # solver spec: lr_policy: quartering
def quartering(base_lr, it, params):
    return base_lr * 0.25 ** (it // params.stepsize)


@register_layer("Doubled")                         # a layer type with its own ONNX converter
class Doubled(Layer):
    """y = 2 · x."""

    class Params(LayerParams):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        np.multiply(bottom[0].data, 2, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff


@register_onnx("Doubled")
def doubled_to_onnx(graph, info):
    graph.node("Mul", [info.bottoms[0], graph.const(2.0, f"{info.name}_two")], info.tops[0],
               hint=info.name)


@register_callback("CountTestRounds")              # solver spec: callbacks: [{type: ...}]
class CountTestRounds(Callback):
    """Counts the test rounds (every ``every``-th one); the count is in every solver state."""

    class Params(Callback.Params):                  # this callback's own fields
        every: int = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)           # self.params: the validated Params
        self.count = 0
        self.seen = 0

    def on_test_end(self, it, outputs):
        self.seen += 1
        if self.seen % self.params.every == 0:
            self.count += 1

    def get_state(self):                            # saved in every solver state
        return {"count": self.count, "seen": self.seen}

    def set_state(self, state):                     # restored on --resume
        self.count, self.seen = state["count"], state["seen"]
