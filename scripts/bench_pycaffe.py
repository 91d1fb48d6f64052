#!/usr/bin/env python3
"""The cost of ``import caffe``'s layer over solverkit: ``caffe.Net.forward()`` against
``solverkit.Net.forward()`` on the deploy form of Caffe's MNIST LeNet at batch 64.

Both nets hold the same weights and the same input. The two calls alternate in rounds
(A then B, then B then A) so load from other processes hits both alike; each round times
``--steps`` forwards of each. Prints the median time per forward of each and their ratio.

    python scripts/bench_pycaffe.py [--rounds 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import caffe
import solverkit as sk

# Caffe's MNIST LeNet in its deploy form (examples/mnist/lenet.prototxt's layers)
LENET = """name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        deploy = Path(folder) / "lenet_deploy.prototxt"
        deploy.write_text(LENET)
        wrapped = caffe.Net(str(deploy), caffe.TEST)
        plain = sk.Net(str(deploy), "TEST")
    name = next(iter(plain.input_blobs))
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    for net_blobs in (wrapped.blobs, plain.blobs):
        net_blobs[name].reshape(x.shape)
        net_blobs[name].data[...] = x
    wrapped.reshape()
    plain.reshape()
    for name_, params in wrapped.params.items():
        for theirs, mine in zip(params, plain.params[name_]):
            theirs.data[...] = mine.data

    def timed(forward) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            forward()
        return (time.perf_counter() - start) / args.steps

    for _ in range(3):                       # warm-up: buffers, BLAS threads, caches
        timed(wrapped.forward), timed(plain.forward)
    samples = {"caffe.Net.forward": [], "solverkit.Net.forward": []}
    for round_ in range(args.rounds):
        order = [("caffe.Net.forward", wrapped.forward), ("solverkit.Net.forward", plain.forward)]
        for label, forward in (order if round_ % 2 == 0 else order[::-1]):
            samples[label].append(timed(forward))
    out = wrapped.forward()
    assert np.allclose(out[wrapped.outputs[0]], plain.forward()[plain.outputs[0]], atol=1e-5)
    medians = {label: statistics.median(values) for label, values in samples.items()}
    for label, value in medians.items():
        print(f"{label:24s} {value * 1e3:8.3f} ms per forward (median of {args.rounds} rounds "
              f"of {args.steps})")
    ratio = medians["caffe.Net.forward"] / medians["solverkit.Net.forward"]
    print(f"ratio caffe/solverkit     {ratio:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
