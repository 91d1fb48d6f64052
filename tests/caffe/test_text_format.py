"""The protobuf text parser: every form Caffe's files use, and errors with line and column."""

from __future__ import annotations

import math

import pytest

from solverkit.caffe.text import parse_text
from solverkit.errors import ConfigError

TEXT = r"""
# a comment line
name: "Le\"Net\x41"   # trailing comment
name2: 'single \'quoted\'' " joined"
layer {
  type: "Convolution"
  convolution_param { kernel_size: 3 kernel_size: 5 pad: -1 }
}
layer: { pool: MAX, on: true; off: false }
angle < value: 1.5e-3 big: 2E+2 f: 3.5f hex: 0x1F neg: -.5 nan: nan ninf: -inf >
dims: [1, 2, 3]
shapes: [{ dim: 1 }, { dim: 2 }]
"""


def test_every_form_parses():
    msg = parse_text(TEXT, "t.prototxt")
    assert msg.keys() == ["name", "name2", "layer", "angle", "dims", "shapes"]
    assert msg.first("name").value.value == 'Le"NetA'
    assert msg.first("name2").value.value == "single 'quoted' joined"
    first, second = msg.all("layer")
    assert first.line == 5 and first.col == 1
    conv = first.value.first("convolution_param").value
    assert [e.value.value for e in conv.all("kernel_size")] == [3, 5]
    assert conv.first("pad").value.value == -1
    assert [(e.key, e.value.value) for e in second.value.entries] == [
        ("pool", "MAX"), ("on", "true"), ("off", "false")]
    angle = {e.key: e.value.value for e in msg.first("angle").value.entries}
    assert angle["value"] == 1.5e-3 and angle["big"] == 200.0 and angle["f"] == 3.5
    assert angle["hex"] == 31 and angle["neg"] == -0.5
    assert math.isnan(angle["nan"]) and angle["ninf"] == -math.inf
    assert [e.value.value for e in msg.all("dims")] == [1, 2, 3]
    assert [e.value.first("dim").value.value for e in msg.all("shapes")] == [1, 2]


@pytest.mark.parametrize("text, line, col, words", [
    ('layer {\n  name: "a"\n', 3, 1, "'}' missing"),
    ('a: "open\n', 1, 4, "string not closed"),
    ("a: 1\nb 2\n", 2, 3, "expected ':' or '{' after 'b'"),
    ("a: 1\n  }\n", 2, 3, "expected a field name, found '}'"),
    ("a: [1, 2\nb: 3", 2, 1, "expected ',' or ']'"),
    ("a: @\n", 1, 4, "unexpected character '@'"),
    ('a: "\\q"', 1, 4, "unknown escape"),
    ("a: }", 1, 4, "expected a value for 'a'"),
])
def test_syntax_errors_name_line_and_column(text, line, col, words):
    with pytest.raises(ConfigError) as err:
        parse_text(text, "bad.prototxt")
    message = str(err.value)
    assert message.startswith(f"bad.prototxt:{line}: prototxt syntax error at column {col}:")
    assert words in message


def test_bounds_on_depth_and_size():
    deep = "a { " * 70 + "}" * 70
    with pytest.raises(ConfigError, match="nested deeper than 64"):
        parse_text(deep)
    assert parse_text(deep, max_depth=80).first("a") is not None
    with pytest.raises(ConfigError, match="exceeds the limit"):
        parse_text("a: 1\n" * 100, max_bytes=50)


LAYER = """layer {
  name: "conv%d"
  type: "Convolution"
  bottom: "data"
  top: "conv%d"
  param { lr_mult: 1 decay_mult: 1 }
  convolution_param {
    num_output: 64
    kernel_size: 3 pad: 1 stride: 1
    weight_filler { type: "gaussian" std: 0.01 }
    bias_filler { type: "constant" value: 0.2 }
  }
}
"""
SHAPES = {          # a net as people write them, and the densest fields the syntax allows
    "layers": lambda n: "".join(LAYER % (i, i) for i in range(n // 280)),
    "a long list": lambda n: "dim: [" + "1," * (n // 2) + "1]\n",
    "empty messages": lambda n: "a{}" * (n // 3),
    "one field a line": lambda n: "input_shape {\n" + "dim: 7\n" * (n // 7) + "}\n",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_parse_takes_memory_proportional_to_the_text(shape):
    import tracemalloc
    text = SHAPES[shape](128 * 1024)
    tracemalloc.start()
    try:
        message = parse_text(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * len(text), (shape, peak / len(text))
    assert message.entries              # the fields are all there, made when asked for
    if shape == "layers":
        last = message.all("layer")[-1].value
        assert last.first("name").value.value == f"conv{len(message.all('layer')) - 1}"
        filler = last.first("convolution_param").value.first("weight_filler").value
        assert filler.first("std").value.value == 0.01 and filler.line > 1000
