"""A solverkit net dict run in PyTorch, layer by layer, for ``scripts/bench.py``.

``GraphModel(spec, input_shapes)`` builds one torch module per layer of the net (any DAG
of the layer types below) and runs them in the spec's order over a dict of named blobs,
as solverkit's ``Net`` does; in-place layers simply rebind their top's name. The Caffe
semantics each translation keeps:

- Convolution: group, stride, pad, dilation, bias_term; weights (O, C/group, kh, kw) alike.
- Pooling MAX/AVE: Caffe rounds output sizes up (``ceil_mode``; its AVE divisor counts
  the padded window as torch's ``count_include_pad`` does); ``global_pooling``.
- LRN ACROSS_CHANNELS: ``x / (k + alpha/n · Σ x²)^beta`` over n channels, which is
  ``torch.nn.LocalResponseNorm(n, alpha, beta, k)``.
- InnerProduct: flattens from axis 1. Dropout: ``torch.nn.Dropout`` (off in ``eval()``).
- Concat (axis 1), Eltwise SUM (coefficients 1), ReLU, Softmax (axis 1).
- BatchNorm: Caffe keeps three blobs (mean sum, variance sum, scale factor); torch's running
  statistics are the sums divided by the factor. A BatchNorm followed directly by a Scale
  on its top becomes one ``BatchNorm2d`` with ``affine`` (as a PyTorch user writes it);
  in training both normalise with the batch's biased variance.
- SoftmaxWithLoss: ``cross_entropy`` (mean over the batch), the model's return value.

``copy_weights_from(net)`` takes solverkit's current blobs, so that both frameworks start
from the same weights; ``param_groups(base_lr, weight_decay)`` gives the optimizer the same
per-blob ``lr_mult``/``decay_mult``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def _pair(lspec: dict, key: str, default: int) -> tuple[int, int]:
    value = lspec.get(key, default)
    value = value if value is not None else default
    if isinstance(value, (list, tuple)):
        return (value[0], value[-1])
    h, w = lspec.get(f"{key}_h"), lspec.get(f"{key}_w")
    return (h if h is not None else value, w if w is not None else value)


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


class Pool(nn.Module):
    def __init__(self, lspec: dict):
        super().__init__()
        self.max = lspec.get("pool", "MAX") == "MAX"
        self.global_pooling = lspec.get("global_pooling", False)
        if not self.global_pooling:
            kernel = _pair(lspec, "kernel_size", 1)
            stride = _pair(lspec, "stride", 1)
            pad = _pair(lspec, "pad", 0)
            self.pool = (nn.MaxPool2d(kernel, stride, pad, ceil_mode=True) if self.max else
                         nn.AvgPool2d(kernel, stride, pad, ceil_mode=True,
                                      count_include_pad=True))

    def forward(self, x):
        if self.global_pooling:
            return x.amax(dim=(2, 3), keepdim=True) if self.max else x.mean(dim=(2, 3),
                                                                             keepdim=True)
        return self.pool(x)


class Linear(nn.Linear):
    def forward(self, x):
        return super().forward(x.flatten(1))


class GraphModel(nn.Module):
    """The net ``spec`` (a solverkit net dict whose data layer's tops are named in
    ``input_shapes``) as a torch module: ``model(inputs)`` -> dict of its output blobs
    (``loss`` for a SoftmaxWithLoss, ``prob`` for a Softmax named so)."""

    def __init__(self, spec: dict, input_shapes: dict):
        super().__init__()
        self.steps = []                 # (layer name, kind, bottoms, tops)
        self.layer = nn.ModuleDict()
        self.fused = {}                 # Scale layer name -> the BatchNorm it was merged into
        self.lr_mults = {}              # layer name -> [(lr_mult, decay_mult) per blob]
        probe = {name: torch.zeros((1, *shape[1:])) for name, shape in input_shapes.items()}
        layers = [l for l in spec["layers"] if _names(l.get("top")) and
                  not set(_names(l.get("top"))) <= set(input_shapes)]
        for i, lspec in enumerate(layers):
            kind, name = lspec["type"], lspec["name"]
            bottoms, tops = _names(lspec.get("bottom")), _names(lspec.get("top"))
            if kind == "Scale" and name in self.fused:
                continue
            module = self._module(lspec, kind, probe[bottoms[0]] if bottoms else None)
            if kind == "BatchNorm":
                following = layers[i + 1] if i + 1 < len(layers) else None
                if (following and following["type"] == "Scale"
                        and _names(following["bottom"]) == tops):
                    module = nn.BatchNorm2d(probe[bottoms[0]].shape[1], eps=lspec.get("eps", 1e-5),
                                            affine=True)
                    if not following.get("bias_term", False):
                        module.bias.requires_grad_(False)
                    self.fused[following["name"]] = name
                    self.lr_mults[name] = [(1.0, 1.0)] * 2
            if module is not None:
                self.layer[self._key(name)] = module
                mults = lspec.get("param", [])
                if kind in ("Convolution", "InnerProduct"):
                    self.lr_mults[name] = [
                        (m.get("lr_mult", 1.0), m.get("decay_mult", 1.0))
                        for m in (mults + [{}, {}])[:2]]
            self.steps.append((name, kind, bottoms, tops))
            if kind != "SoftmaxWithLoss":
                with torch.no_grad():
                    out = self._run(name, kind, [probe[b] for b in bottoms], eval_probe=True)
                for top in tops:
                    probe[top] = out

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "_").replace("/", "__")

    def _module(self, lspec: dict, kind: str, x) -> nn.Module | None:
        if kind == "Convolution":
            return nn.Conv2d(x.shape[1], lspec["num_output"], _pair(lspec, "kernel_size", 1),
                             stride=_pair(lspec, "stride", 1), padding=_pair(lspec, "pad", 0),
                             dilation=_pair(lspec, "dilation", 1), groups=lspec.get("group", 1),
                             bias=lspec.get("bias_term", True))
        if kind == "Pooling":
            return Pool(lspec)
        if kind == "LRN":
            if lspec.get("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
                raise ValueError("no PyTorch translation for LRN WITHIN_CHANNEL")
            return nn.LocalResponseNorm(lspec.get("local_size", 5), lspec.get("alpha", 1.0),
                                        lspec.get("beta", 0.75), lspec.get("k", 1.0))
        if kind == "InnerProduct":
            return Linear(x[0].numel(), lspec["num_output"], bias=lspec.get("bias_term", True))
        if kind == "Dropout":
            return nn.Dropout(lspec.get("dropout_ratio", 0.5))
        if kind == "BatchNorm":
            return nn.BatchNorm2d(x.shape[1], eps=lspec.get("eps", 1e-5), affine=False)
        if kind == "Scale":
            return None                 # a Scale not after a BatchNorm: not in these nets
        if kind in ("ReLU", "Concat", "Eltwise", "Softmax", "SoftmaxWithLoss"):
            if kind == "Eltwise" and (lspec.get("operation", "SUM") != "SUM"
                                      or lspec.get("coeff")):
                raise ValueError("no PyTorch translation for Eltwise other than plain SUM")
            return None
        raise ValueError(f"no PyTorch translation for layer type {kind}")

    def _run(self, name, kind, xs, eval_probe=False):
        if kind == "ReLU":
            return functional.relu(xs[0])
        if kind == "Concat":
            return torch.cat(xs, dim=1)
        if kind == "Eltwise":
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        if kind == "Softmax":
            return torch.softmax(xs[0], dim=1)
        if kind == "SoftmaxWithLoss":
            return functional.cross_entropy(xs[0], xs[1].long())
        module = self.layer[self._key(name)]
        if eval_probe and isinstance(module, (nn.BatchNorm2d, nn.Dropout)):
            return xs[0]                # shapes only; no statistics updated by the probe
        return module(xs[0])

    def forward(self, inputs: dict) -> dict:
        blobs = dict(inputs)
        for name, kind, bottoms, tops in self.steps:
            out = self._run(name, kind, [blobs[b] for b in bottoms])
            for top in tops:
                blobs[top] = out
        return blobs

    def copy_weights_from(self, net) -> None:
        """solverkit's current blobs into the torch modules (the same layouts)."""
        with torch.no_grad():
            for name, kind, _, _ in self.steps:
                key = self._key(name)
                if key not in self.layer:
                    continue
                module = self.layer[key]
                blobs = [torch.from_numpy(b.data.copy()) for b in net.params.get(name, [])]
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    module.weight.copy_(blobs[0].reshape(module.weight.shape))
                    if module.bias is not None:
                        module.bias.copy_(blobs[1].reshape(module.bias.shape))
                elif isinstance(module, nn.BatchNorm2d):
                    factor = float(blobs[2].reshape(-1)[0])
                    factor = 1.0 / factor if factor != 0 else 0.0
                    module.running_mean.copy_(blobs[0] * factor)
                    module.running_var.copy_(blobs[1] * factor)
                    scale = next((s for s, b in self.fused.items() if b == name), None)
                    if scale is not None:
                        gamma_beta = [torch.from_numpy(b.data.copy()) for b in net.params[scale]]
                        module.weight.copy_(gamma_beta[0].reshape(-1))
                        if len(gamma_beta) > 1:
                            module.bias.copy_(gamma_beta[1].reshape(-1))
                        else:
                            module.bias.zero_()

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups with each blob's lr_mult and decay_mult, as solverkit applies."""
        groups = {}
        for name, mults in self.lr_mults.items():
            module = self.layer[self._key(name)]
            tensors = [module.weight, module.bias]
            for tensor, (lr, decay) in zip(tensors, mults):
                if tensor is not None and tensor.requires_grad:
                    groups.setdefault((lr, decay), []).append(tensor)
        return [{"params": params, "lr": base_lr * lr, "weight_decay": weight_decay * decay}
                for (lr, decay), params in groups.items()]
