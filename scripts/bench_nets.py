"""Real-size ImageNet nets for ``scripts/bench.py``, written as solverkit net dicts.

Each function returns the TRAIN net: a ``Data`` layer (tops ``data``, ``label``; the
benchmark fills in its source and batch size), the net, and ``SoftmaxWithLoss`` on the
1000-way classifier ``fc8``/``loss3/classifier``/``fc1000``. ``solverkit.deploy_net`` turns
it into the deploy form (``Input`` in place of the data layer, ``Softmax`` ``prob`` in place
of the loss). The layers follow the nets' published architectures:

- ``caffenet``: the reference CaffeNet (AlexNet with pooling before LRN), 227×227 input:
  conv1 96 11×11/4, relu, pool 3/2, LRN 5; conv2 256 5×5 pad 2 group 2, relu, pool, LRN;
  conv3 384 3×3 pad 1; conv4 384 3×3 pad 1 group 2; conv5 256 3×3 pad 1 group 2, pool;
  fc6 4096, relu, dropout; fc7 4096, relu, dropout; fc8 1000.
- ``googlenet``: GoogLeNet (Inception v1), 224×224: a 7×7/2 stem, LRNs, nine inception
  modules (1×1, 3×3 reduce + 3×3, 5×5 reduce + 5×5, 3×3 max pool + 1×1 projection, joined
  by ``Concat``), average pooling, dropout 0.4, the 1000-way classifier. Only the main
  classifier is built (the two auxiliary classifiers of the training net are left out, so
  that the TRAIN and deploy forms compute the same thing).
- ``resnet50``: ResNet-50, 224×224: conv1 64 7×7/2 + BatchNorm + Scale + ReLU, max pool
  3/2, then 3, 4, 6, 3 bottleneck blocks (1×1, 3×3, 1×1 ×4 channels; each convolution
  without bias and followed by BatchNorm + Scale; the first block of a stage has a
  projection shortcut, 1×1 with the stage's stride, which is on the first 1×1), joined by
  ``Eltwise`` SUM and ReLU; average pooling; fc1000.

The last average pooling of GoogLeNet and ResNet-50 (7×7 on a 7×7 map at 224×224) is
written as global pooling, the same computation at 224×224, so that the nets also run at
the small resolutions a smoke test uses.
"""

from __future__ import annotations

CLASSES = 1000


def _data() -> dict:
    return {"name": "data", "type": "Data", "top": ["data", "label"], "batch_size": 1}


def _loss(bottom: str) -> dict:
    return {"name": "loss", "type": "SoftmaxWithLoss", "bottom": [bottom, "label"],
            "top": "loss"}


def _conv(name, bottom, num_output, kernel, *, stride=1, pad=0, group=1, bias=True,
          weight_filler=None, bias_value=0.0, top=None) -> dict:
    layer = {"name": name, "type": "Convolution", "bottom": bottom, "top": top or name,
             "num_output": num_output, "kernel_size": kernel, "stride": stride, "pad": pad,
             "weight_filler": weight_filler or {"type": "xavier"}}
    if group != 1:
        layer["group"] = group
    if bias:
        layer["bias_filler"] = {"type": "constant", "value": bias_value}
        layer["param"] = [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]
    else:
        layer["bias_term"] = False
        layer["param"] = [{"lr_mult": 1, "decay_mult": 1}]
    return layer


def _relu(name, blob) -> dict:
    return {"name": name, "type": "ReLU", "bottom": blob, "top": blob}


def _pool(name, bottom, pool, kernel=3, stride=2, pad=0) -> dict:
    return {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pool": pool,
            "kernel_size": kernel, "stride": stride, "pad": pad}


def _lrn(name, bottom) -> dict:
    return {"name": name, "type": "LRN", "bottom": bottom, "top": name, "local_size": 5,
            "alpha": 0.0001, "beta": 0.75}


def _fc(name, bottom, num_output, weight_filler, bias_value=0.0) -> dict:
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name,
            "num_output": num_output, "weight_filler": weight_filler,
            "bias_filler": {"type": "constant", "value": bias_value},
            "param": [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]}


def _dropout(name, blob, ratio) -> dict:
    return {"name": name, "type": "Dropout", "bottom": blob, "top": blob,
            "dropout_ratio": ratio}


def caffenet() -> dict:
    """The reference CaffeNet, 227×227×3 input, 1000 classes."""
    g01, g005 = {"type": "gaussian", "std": 0.01}, {"type": "gaussian", "std": 0.005}
    layers = [
        _data(),
        _conv("conv1", "data", 96, 11, stride=4, weight_filler=g01), _relu("relu1", "conv1"),
        _pool("pool1", "conv1", "MAX"), _lrn("norm1", "pool1"),
        _conv("conv2", "norm1", 256, 5, pad=2, group=2, weight_filler=g01, bias_value=1.0),
        _relu("relu2", "conv2"), _pool("pool2", "conv2", "MAX"), _lrn("norm2", "pool2"),
        _conv("conv3", "norm2", 384, 3, pad=1, weight_filler=g01), _relu("relu3", "conv3"),
        _conv("conv4", "conv3", 384, 3, pad=1, group=2, weight_filler=g01, bias_value=1.0),
        _relu("relu4", "conv4"),
        _conv("conv5", "conv4", 256, 3, pad=1, group=2, weight_filler=g01, bias_value=1.0),
        _relu("relu5", "conv5"), _pool("pool5", "conv5", "MAX"),
        _fc("fc6", "pool5", 4096, g005, 1.0), _relu("relu6", "fc6"), _dropout("drop6", "fc6", 0.5),
        _fc("fc7", "fc6", 4096, g005, 1.0), _relu("relu7", "fc7"), _dropout("drop7", "fc7", 0.5),
        _fc("fc8", "fc7", CLASSES, g01), _loss("fc8"),
    ]
    return {"name": "CaffeNet", "layers": layers}


# GoogLeNet's inception modules: name -> (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj)
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _inception(name: str, bottom: str) -> tuple[list[dict], str]:
    n1, r3, n3, r5, n5, proj = INCEPTION[name]
    p = f"inception_{name}/"
    layers = [
        _conv(p + "1x1", bottom, n1, 1, bias_value=0.2), _relu(p + "relu_1x1", p + "1x1"),
        _conv(p + "3x3_reduce", bottom, r3, 1, bias_value=0.2),
        _relu(p + "relu_3x3_reduce", p + "3x3_reduce"),
        _conv(p + "3x3", p + "3x3_reduce", n3, 3, pad=1, bias_value=0.2),
        _relu(p + "relu_3x3", p + "3x3"),
        _conv(p + "5x5_reduce", bottom, r5, 1, bias_value=0.2),
        _relu(p + "relu_5x5_reduce", p + "5x5_reduce"),
        _conv(p + "5x5", p + "5x5_reduce", n5, 5, pad=2, bias_value=0.2),
        _relu(p + "relu_5x5", p + "5x5"),
        _pool(p + "pool", bottom, "MAX", 3, 1, 1),
        _conv(p + "pool_proj", p + "pool", proj, 1, bias_value=0.2),
        _relu(p + "relu_pool_proj", p + "pool_proj"),
        {"name": p + "output", "type": "Concat", "top": p + "output",
         "bottom": [p + "1x1", p + "3x3", p + "5x5", p + "pool_proj"]},
    ]
    return layers, p + "output"


def googlenet() -> dict:
    """GoogLeNet with its main classifier, 224×224×3 input, 1000 classes."""
    layers = [
        _data(),
        _conv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3, bias_value=0.2),
        _relu("conv1/relu_7x7", "conv1/7x7_s2"),
        _pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX"), _lrn("pool1/norm1", "pool1/3x3_s2"),
        _conv("conv2/3x3_reduce", "pool1/norm1", 64, 1, bias_value=0.2),
        _relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce"),
        _conv("conv2/3x3", "conv2/3x3_reduce", 192, 3, pad=1, bias_value=0.2),
        _relu("conv2/relu_3x3", "conv2/3x3"), _lrn("conv2/norm2", "conv2/3x3"),
        _pool("pool2/3x3_s2", "conv2/norm2", "MAX"),
    ]
    blob = "pool2/3x3_s2"
    for name in INCEPTION:
        if name == "4a":
            layers.append(_pool("pool3/3x3_s2", blob, "MAX"))
            blob = "pool3/3x3_s2"
        elif name == "5a":
            layers.append(_pool("pool4/3x3_s2", blob, "MAX"))
            blob = "pool4/3x3_s2"
        module, blob = _inception(name, blob)
        layers += module
    layers += [
        {"name": "pool5/7x7_s1", "type": "Pooling", "bottom": blob, "top": "pool5/7x7_s1",
         "pool": "AVE", "global_pooling": True},
        _dropout("pool5/drop_7x7_s1", "pool5/7x7_s1", 0.4),
        _fc("loss3/classifier", "pool5/7x7_s1", CLASSES, {"type": "xavier"}),
        _loss("loss3/classifier"),
    ]
    return {"name": "GoogleNet", "layers": layers}


def _conv_bn(name: str, bottom: str, num_output: int, kernel: int, *, stride=1, pad=0,
             relu=True) -> list[dict]:
    """Convolution without bias, BatchNorm (its three statistics blobs) and Scale (γ, β),
    in place on the convolution's top; and ReLU."""
    suffix = name[3:] if name.startswith("res") else "_" + name   # bn2a_branch1, bn_conv1
    layers = [
        _conv(name, bottom, num_output, kernel, stride=stride, pad=pad, bias=False,
              weight_filler={"type": "msra"}),
        {"name": "bn" + suffix, "type": "BatchNorm", "bottom": name, "top": name,
         "param": [{"lr_mult": 0}, {"lr_mult": 0}, {"lr_mult": 0}]},
        {"name": "scale" + suffix, "type": "Scale", "bottom": name, "top": name,
         "bias_term": True},
    ]
    if relu:
        layers.append(_relu(name + "_relu", name))
    return layers


def _bottleneck(stage: int, block: str, bottom: str, width: int, stride: int,
                project: bool) -> tuple[list[dict], str]:
    tag = f"{stage}{block}"
    layers = []
    if project:
        layers += _conv_bn(f"res{tag}_branch1", bottom, 4 * width, 1, stride=stride, relu=False)
        shortcut = f"res{tag}_branch1"
    else:
        shortcut = bottom
    layers += _conv_bn(f"res{tag}_branch2a", bottom, width, 1, stride=stride)
    layers += _conv_bn(f"res{tag}_branch2b", f"res{tag}_branch2a", width, 3, pad=1)
    layers += _conv_bn(f"res{tag}_branch2c", f"res{tag}_branch2b", 4 * width, 1, relu=False)
    layers += [{"name": f"res{tag}", "type": "Eltwise", "operation": "SUM",
                "bottom": [shortcut, f"res{tag}_branch2c"], "top": f"res{tag}"},
               _relu(f"res{tag}_relu", f"res{tag}")]
    return layers, f"res{tag}"


def resnet50() -> dict:
    """ResNet-50, 224×224×3 input, 1000 classes."""
    layers = [_data(), *_conv_bn("conv1", "data", 64, 7, stride=2, pad=3),
              _pool("pool1", "conv1", "MAX")]
    blob = "pool1"
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=2):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 2 else 1
            module, blob = _bottleneck(stage, "abcdef"[b], blob, width, stride, project=b == 0)
            layers += module
    layers += [{"name": "pool5", "type": "Pooling", "bottom": blob, "top": "pool5",
                "pool": "AVE", "global_pooling": True},
               _fc("fc1000", "pool5", CLASSES, {"type": "msra"}), _loss("fc1000")]
    return {"name": "ResNet-50", "layers": layers}


# net name -> (function, input side in pixels)
NETS = {"caffenet": (caffenet, 227), "googlenet": (googlenet, 224), "resnet50": (resnet50, 224)}
