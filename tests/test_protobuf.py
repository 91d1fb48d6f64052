"""The wire-format codec against the protobuf package, and its limits on hostile input."""

from __future__ import annotations

import numpy as np
import pytest
from protobuf_oracle import build

from solverkit import protobuf as pb
from solverkit.errors import DataError

SCALARS = ["int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "float",
           "double", "fixed32", "fixed64", "sfixed32", "sfixed64"]


def schemas(packed: bool):
    inner = pb.Message("Inner", [pb.Field(1, "name", "string"),
                                 pb.Field(2, "values", "int32", repeated=True, packed=packed)])
    fields = [pb.Field(i + 1, f"s_{k}", k) for i, k in enumerate(SCALARS)]
    fields += [pb.Field(i + 21, f"r_{k}", k, repeated=True, packed=packed)
               for i, k in enumerate(SCALARS)]
    fields += [pb.Field(40, "text", "string"), pb.Field(41, "blob", "bytes"),
               pb.Field(42, "inner", "message", message=inner),
               pb.Field(43, "inners", "message", repeated=True, message=inner),
               pb.Field(44, "texts", "string", repeated=True)]
    ours = pb.Message("Outer", fields)
    oracle = build({
        "Inner": [(1, "name", "string", "optional", None),
                  (2, "values", "int32", "repeated", packed)],
        "Outer": [(f.number, f.name, f.kind, "repeated" if f.repeated else "optional",
                   packed if f.kind != "message" else "Inner") for f in fields],
    })
    return ours, oracle["Outer"]


def random_values(kind, rng, n):
    lo, hi = {"int32": (-2**31, 2**31), "int64": (-2**63, 2**63), "uint32": (0, 2**32),
              "uint64": (0, 2**64), "sint32": (-2**31, 2**31), "sint64": (-2**63, 2**63),
              "fixed32": (0, 2**32), "fixed64": (0, 2**64), "sfixed32": (-2**31, 2**31),
              "sfixed64": (-2**63, 2**63)}.get(kind, (0, 2))
    if kind == "bool":
        return [bool(v) for v in rng.integers(0, 2, n)]
    if kind in ("float", "double"):
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)
        return [float(np.float32(v)) if kind == "float" else float(v) for v in values]
    # edges included: extremes and small magnitudes whose varints are short
    edges = [lo, hi - 1, 0, 1] + ([-1] if lo < 0 else [])
    span = hi - lo
    return edges + [lo + int(a) * span // 2**32 + int(b) % max(span // 2**32, 1)
                    for a, b in rng.integers(0, 2**32, (n, 2), dtype=np.uint64)]


@pytest.mark.parametrize("packed", [False, True])
def test_decode_agrees_with_protobuf_package(packed, rng):
    ours, Oracle = schemas(packed)
    message = Oracle()
    expected = {}
    for kind in SCALARS:
        value = random_values(kind, rng, 1)[-1]
        setattr(message, f"s_{kind}", value)
        expected[f"s_{kind}"] = value
        values = random_values(kind, rng, 50)
        getattr(message, f"r_{kind}").extend(values)
        expected[f"r_{kind}"] = values
    message.text = "négatif ∑"
    message.blob = bytes(range(256))
    message.inner.name = "in"
    message.inner.values.extend([-5, 7, 2**31 - 1])
    for i in range(3):
        item = message.inners.add()
        item.name = f"n{i}"
    message.texts.extend(["a", "", "c"])
    decoded = pb.decode(message.SerializeToString(), ours)
    for name, value in expected.items():
        got = decoded[name]
        if isinstance(value, list):
            assert [type(value[0])(v) for v in got.tolist()] == value, name
        else:
            assert got == value, name
    assert decoded["text"] == "négatif ∑" and decoded["blob"] == bytes(range(256))
    assert decoded["inner"]["name"] == "in"
    assert decoded["inner"]["values"].tolist() == [-5, 7, 2**31 - 1]
    assert [m["name"] for m in decoded["inners"]] == ["n0", "n1", "n2"]
    assert decoded["texts"] == ["a", "", "c"]
    # and back: our encoding parses in the protobuf package to the same message
    again = Oracle.FromString(pb.encode(decoded, ours))
    assert again == message
    if packed:                                   # packed encodings are byte-identical too
        assert pb.encode(decoded, ours) == message.SerializeToString(deterministic=True)


def test_negative_int32_is_ten_bytes_and_zigzag_is_short():
    writer = pb.Writer().varint(1, -1, "int32")
    assert writer.getvalue() == b"\x08" + b"\xff" * 9 + b"\x01"
    assert pb.Writer().varint(1, -1, "sint32").getvalue() == b"\x08\x01"
    assert pb.decode(writer.getvalue(), pb.Message("M", [pb.Field(1, "v", "int32")])) == {"v": -1}


def test_unknown_fields_are_skipped():
    data = (pb.Writer().varint(9, 300).fixed64(10, 1.5).bytes(11, b"xyz").fixed32(12, 2.0)
            .varint(1, 7).getvalue())
    assert pb.decode(data, pb.Message("M", [pb.Field(1, "v", "int32")])) == {"v": 7}
    assert [n for n, _, _ in pb.iter_fields(data)] == [9, 10, 11, 12, 1]


def test_long_unpacked_float_run_decodes_at_once(rng):
    values = rng.standard_normal(100_000).astype(np.float32)
    ours = pb.Message("M", [pb.Field(5, "data", "float", repeated=True),
                            pb.Field(1, "n", "int32")])
    Oracle = build({"M": [(5, "data", "float", "repeated", False),
                          (1, "n", "int32", "optional", None)]})["M"]
    message = Oracle(data=values.tolist(), n=3)
    data = message.SerializeToString()
    # interleave another field inside the run: both halves must be found
    split = 2 + 5 * 40_000                      # after the 2 bytes of n, 40000 floats in
    data = data[:split] + b"\x08\x03" + data[split:]
    decoded = pb.decode(data, ours)
    np.testing.assert_array_equal(decoded["data"], values)
    assert decoded["n"] == 3


BROKEN = {
    "truncated varint": b"\x08\xff",
    "truncated length": b"\x12\x05ab",
    "truncated fixed32": b"\x1d\x00\x00",
    "varint too long": b"\x08" + b"\xff" * 10 + b"\x01",
    "group wire type": b"\x0b",
    "field number zero": b"\x00\x01",
    "wrong wire type": b"\x0d\x00\x00\x00\x00",
    "bad utf-8": b"\x12\x02\xff\xfe",
    "packed not multiple": b"\x1a\x03abc",
    "truncated packed varint": b"\x22\x01\xff",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_malformed_input_is_a_data_error_naming_the_file(name):
    schema = pb.Message("M", [pb.Field(1, "v", "int32"), pb.Field(2, "s", "string"),
                              pb.Field(3, "f", "float", repeated=True),
                              pb.Field(4, "p", "int64", repeated=True)])
    with pytest.raises(DataError) as err:
        pb.decode(BROKEN[name], schema, file="weights.caffemodel")
    assert "weights.caffemodel" in str(err.value)
    assert "protobuf" in str(err.value)


def test_limits_on_depth_size_and_count():
    node = pb.Message("Node")
    node.add(pb.Field(1, "child", "message", message=node))
    data = b""
    for _ in range(40):
        data = pb.Writer().message(1, data).getvalue()
    with pytest.raises(DataError, match="nested deeper than 32"):
        pb.decode(data, node, file="deep.bin")
    assert pb.decode(data, node, limits=pb.Limits(max_depth=64))["child"]["child"]
    with pytest.raises(DataError, match="exceeds the limit"):
        pb.decode(b"\x08\x01" * 10, node, limits=pb.Limits(max_bytes=8))
    floats = pb.Message("F", [pb.Field(1, "x", "float", repeated=True)])
    packed = pb.Writer().packed(1, np.zeros(100), "float").getvalue()
    with pytest.raises(DataError, match="more than 50 elements"):
        pb.decode(packed, floats, limits=pb.Limits(max_repeated=50))
    unpacked = b"".join(pb.Writer().fixed32(1, 0.0).getvalue() for _ in range(100))
    with pytest.raises(DataError, match="more than 50 elements"):
        pb.decode(unpacked, floats, limits=pb.Limits(max_repeated=50))


def test_truncation_anywhere_never_escapes_as_another_error(rng):
    ours, Oracle = schemas(True)
    message = Oracle(s_int32=-3, text="hello", r_float=[1.0, 2.0, 3.0], r_int64=[-1, 5])
    message.inner.values.extend([1, 2, 3])
    data = message.SerializeToString()
    for cut in range(len(data)):
        try:
            pb.decode(data[:cut], ours)
        except DataError:
            pass
    for _ in range(300):                        # random byte flips: a DataError or a dict
        corrupt = bytearray(data)
        corrupt[rng.integers(len(corrupt))] = rng.integers(256)
        try:
            assert isinstance(pb.decode(bytes(corrupt), ours), dict)
        except DataError:
            pass


def test_unpacked_varints_are_bounded_one_by_one():
    schema = pb.Message("M", [pb.Field(1, "v", "int64", repeated=True)])
    data = b"".join(pb.Writer().varint(1, -i).getvalue() for i in range(100))
    assert pb.decode(data, schema)["v"].tolist() == [-i for i in range(100)]
    with pytest.raises(DataError, match="more than 50 unpacked varints"):
        pb.decode(data, schema, limits=pb.Limits(max_unpacked_varints=50))
