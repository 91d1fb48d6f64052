"""Net spec loading and the errors a user can cause: each names file, layer, field, and
suggests the nearest valid name. Specs are written to files so messages carry a file name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk

HEAD = """name: spec_test
layers:
  - {name: data, type: Input, top: [data, label], shape: [[2, 1, 4, 4], [2]]}
"""


def net_error(write_net, text, name="bad.yaml", cls=sk.ConfigError, **net_kwargs):
    """Build the net from ``text`` written to a file; return the error message it raises."""
    path = write_net(text, name)
    with pytest.raises(cls) as info:
        sk.Net(path, **net_kwargs)
    return info.value, str(info.value)


def assert_located(err, message, file, layer, field, line=None):
    assert file in message, message
    assert f"layer '{layer}'" in message and err.layer == layer, message
    assert f"field '{field}'" in message and err.field == field, message
    if line is not None:
        assert err.line == line and f"{file}:{line}:" in message, message


@pytest.mark.parametrize("layer, field, suggestion", [
    ("""  - name: pool1
    type: Pooling
    bottom: data
    top: pool1
    kernal_size: 2
""", "kernal_size", "kernel_size"),
    ("""  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    num_outptu: 10
""", "num_outptu", "num_output"),
    ("""  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    num_output: 10
    bottoms: data
""", "bottoms", "bottom"),
    ("""  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    num_output: 10
    weight_filler: {type: gaussian, stdd: 0.1}
""", "weight_filler.stdd", "std"),
    ("""  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    num_output: 10
    param: [{lr_mult: 1}, {lr_mul: 2}]
""", "param.lr_mul", "lr_mult"),
])
def test_unknown_field(write_net, layer, field, suggestion):
    err, message = net_error(write_net, HEAD + layer)
    layer_name = layer.split("name: ")[1].split("\n")[0]
    offending = field.split(".")[0]
    line = 4 + next(i for i, text in enumerate(layer.splitlines()) if offending in text)
    assert_located(err, message, "bad.yaml", layer_name, field, line)
    assert f"did you mean '{suggestion}'?" in message


@pytest.mark.parametrize("given, suggestion", [("Convolutoin", "Convolution"),
                                               ("InnerProdcut", "InnerProduct"),
                                               ("relu", "ReLU")])
def test_unknown_type(write_net, given, suggestion):
    err, message = net_error(write_net, HEAD + f"""  - name: layer1
    bottom: data
    type: {given}
    top: out
""")
    assert_located(err, message, "bad.yaml", "layer1", "type", line=6)
    assert f"did you mean '{suggestion}'?" in message and "known types:" in message


def test_missing_bottom(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: relu1, type: ReLU, bottom: dta, top: r}
""")
    assert_located(err, message, "bad.yaml", "relu1", "bottom", line=4)
    assert "'dta' is not a top of any earlier layer" in message
    assert "did you mean 'data'?" in message


def test_bottom_from_a_later_layer_is_missing(write_net):
    """Layers run in file order: reading a top produced further down is an error."""
    err, message = net_error(write_net, HEAD + """  - {name: relu1, type: ReLU, bottom: r2, top: r1}
  - {name: relu2, type: ReLU, bottom: data, top: r2}
""")
    assert_located(err, message, "bad.yaml", "relu1", "bottom")


def test_duplicate_top(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: relu1, type: ReLU, bottom: data, top: r}
  - {name: sig1, type: Sigmoid, bottom: data, top: r}
""")
    assert_located(err, message, "bad.yaml", "sig1", "top", line=5)
    assert "'r' is already produced" in message


def test_duplicate_layer_name(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: act, type: ReLU, bottom: data, top: r}
  - {name: act, type: Sigmoid, bottom: data, top: s}
""")
    assert_located(err, message, "bad.yaml", "act", "name", line=5)


def test_same_name_in_different_phases_is_fine(write_net):
    path = write_net(HEAD + """  - {name: act, type: ReLU, bottom: data, top: r, include: {phase: TRAIN}}
  - {name: act, type: Sigmoid, bottom: data, top: r, include: {phase: TEST}}
""")
    assert sk.Net(path, phase="TEST").layer("act").type == "Sigmoid"


def test_include_phase_typo(write_net):
    err, message = net_error(write_net, HEAD + """  - name: relu1
    type: ReLU
    bottom: data
    top: r
    include: {phase: TRIAN}
""")
    assert_located(err, message, "bad.yaml", "relu1", "include.phase", line=8)
    assert "did you mean 'TRAIN'?" in message


def test_include_and_exclude_together(write_net):
    err, message = net_error(write_net, HEAD + """  - name: relu1
    type: ReLU
    bottom: data
    top: r
    include: {phase: TRAIN}
    exclude: {stage: deploy}
""")
    assert_located(err, message, "bad.yaml", "relu1", "include", line=9)
    assert "not both" in message


def test_rule_field_typo(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: relu1, type: ReLU, bottom: data, top: r, exclude: [{min_levle: 1}]}
""")
    assert_located(err, message, "bad.yaml", "relu1", "exclude.min_levle", line=4)
    assert "did you mean 'min_level'?" in message


def test_eltwise_shapes_differ(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: flat, type: Flatten, bottom: data, top: flat}
  - {name: add, type: Eltwise, bottom: [data, flat], top: sum}
""", cls=sk.ShapeError)
    assert_located(err, message, "bad.yaml", "add", "bottom", line=5)
    assert "(2, 16)" in message and "(2, 1, 4, 4)" in message


def test_concat_mismatch(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: flat, type: Flatten, bottom: data, top: flat, axis: 2}
  - name: cat
    type: Concat
    bottom: [data, flat]
    top: joined
""", cls=sk.ShapeError)
    assert_located(err, message, "bad.yaml", "cat", "bottom", line=7)
    assert "(2, 1, 16)" in message


def test_inner_product_fan_in_after_input_reshape(write_net):
    path = write_net(HEAD + """  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 3}
""", "reshape.yaml")
    net = sk.Net(path)
    net.forward(data=np.zeros((5, 1, 4, 4)), label=np.zeros(5))      # batch size: fine
    with pytest.raises(sk.ShapeError) as info:
        net.forward(data=np.zeros((5, 1, 5, 4)), label=np.zeros(5))
    assert_located(info.value, str(info.value), "reshape.yaml", "ip1", "bottom", line=4)
    assert "20 inputs per sample" in str(info.value)


def test_layer_count_of_bottoms(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: add, type: Eltwise, bottom: data, top: sum}
""")
    assert_located(err, message, "bad.yaml", "add", "bottom")
    assert "at least 2 bottoms, got 1" in message


def test_missing_required_field(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: ip1, type: InnerProduct, bottom: data, top: ip1}
""")
    assert_located(err, message, "bad.yaml", "ip1", "num_output", line=4)
    assert "required" in message


def test_in_place_not_allowed(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: flat, type: Flatten, bottom: data, top: data}
""")
    assert_located(err, message, "bad.yaml", "flat", "top")
    assert "cannot work in place" in message


def test_yaml_syntax_error_has_a_line(write_net):
    err, message = net_error(write_net, HEAD + """  - {name: relu1, type: ReLU, bottom: data, top: r
  - {name: sig, type: Sigmoid}
""")
    assert err.line == 5 and "bad.yaml:5: YAML syntax error" in message
    assert "YAML syntax error" in message


def test_bad_top_level_field(write_net):
    err, message = net_error(write_net, "name: x\ndtyp: float64\nlayers: []\n")
    assert "bad.yaml:2:" in message and err.field == "dtyp"
    assert "did you mean 'dtype'?" in message
    err, message = net_error(write_net, "name: x\ndtype: float16\nlayers: []\n")
    assert "float16" in message and err.field == "dtype"


def test_missing_file():
    with pytest.raises(sk.ConfigError, match="not found") as info:
        sk.Net("does/not/exist.yaml")
    assert "does/not/exist.yaml" in str(info.value)


SPEC_TEXT = """name: three_ways
dtype: float64
layers:
  - {name: input, type: Input, top: x, shape: [[2, 3]]}
  - name: ip
    type: InnerProduct
    bottom: x
    top: y
    num_output: 2
    weight_filler: {type: uniform, min: -1, max: 1}
  - {name: relu, type: ReLU, bottom: y, top: y, negative_slope: 0.1}
"""


def test_loading_from_path_dict_and_text(write_net):
    import yaml

    path = write_net(SPEC_TEXT, "three.yaml")
    sources = [path, str(path), SPEC_TEXT, yaml.safe_load(SPEC_TEXT),
               sk.load_net_spec(SPEC_TEXT)]
    x = np.arange(6.0).reshape(2, 3)
    results = [sk.Net(source, seed=11).forward(x=x)["y"] for source in sources]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    assert results[0].dtype == np.float64 and np.any(results[0] != 0)
    assert sk.Net(path).spec.file == str(path)
    assert sk.load_net_spec(path).base_dir == Path(path).resolve().parent


def test_to_dict_round_trip():
    spec = sk.load_net_spec(SPEC_TEXT)
    again = sk.load_net_spec(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    assert again.layers[2].params.negative_slope == 0.1


def test_message_shape():
    """``file:line: layer 'name' (#index): field 'f': message``."""
    err = sk.ConfigError("unknown field", file="net.yaml", line=3, layer="conv1",
                         layer_index=2, field="kernal_size")
    assert re.fullmatch(r"net\.yaml:3: layer 'conv1' \(#2\): field 'kernal_size': unknown field",
                        str(err))
