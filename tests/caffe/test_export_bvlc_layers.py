"""The recurrent layers and BVLC's other types export to ``.caffemodel`` + deploy
``.prototxt`` under Caffe's message names, and read back the same."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit.caffe import export_caffe, net_to_prototxt
from solverkit.caffe.names import block_name
from solverkit.spec.net import load_net_spec

# LayerParameter's message fields for these types, as caffe.proto numbers them
CAFFE_BLOCKS = {"RNN": ("recurrent_param", 146), "LSTM": ("recurrent_param", 146),
                "Threshold": ("threshold_param", 128), "SPP": ("spp_param", 132),
                "Im2col": ("convolution_param", 106), "HDF5Data": ("hdf5_data_param", 112),
                "HDF5Output": ("hdf5_output_param", 113),
                "WindowData": ("window_data_param", 129)}


@pytest.mark.parametrize("type_name", sorted(CAFFE_BLOCKS))
def test_block_names_are_caffes(type_name):
    assert block_name(type_name) == CAFFE_BLOCKS[type_name][0]


DEPLOY = """\
name: "seq"
input: "x"  input_shape { dim: 4 dim: 2 dim: 3 }
input: "cont"  input_shape { dim: 4 dim: 2 }
input: "xs"  input_shape { dim: 2 dim: 5 }
input: "img"  input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h"
        recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o"
        recurrent_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "step" type: "Threshold" bottom: "h" top: "s" threshold_param { threshold: 0.1 } }
layer { name: "spp" type: "SPP" bottom: "img" top: "p" spp_param { pyramid_height: 2 pool: AVE } }
layer { name: "cols" type: "Im2col" bottom: "img" top: "c"
        convolution_param { kernel_size: 3 stride: 2 } }
"""


def test_caffemodel_and_prototxt_round_trip(tmp_path):
    net = sk.Net(DEPLOY, phase="TEST", seed=1)
    caffemodel, prototxt = export_caffe(load_net_spec(DEPLOY), net, tmp_path / "seq.caffemodel")
    text = prototxt.read_text()
    for block in ("recurrent_param {", "threshold_param {", "spp_param {", "pool: AVE",
                  "convolution_param {"):
        assert block in text
    assert load_net_spec(text).to_dict() == load_net_spec(DEPLOY).to_dict()
    again = sk.Net(prototxt, phase="TEST", seed=99)
    assert again.load(caffemodel) == []
    for name in ("lstm", "rnn"):
        for mine, theirs in zip(net.params[name], again.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 2, 3)), "cont": np.ones((4, 2)),
             "xs": rng.standard_normal((2, 5)), "img": rng.standard_normal((1, 2, 6, 6))}
    first, second = net.forward(**feeds), again.forward(**feeds)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_recurrent_param_is_written_under_its_caffe_name():
    spec = load_net_spec(DEPLOY)
    assert "recurrent_param {\n    num_output: 3" in net_to_prototxt(spec)
