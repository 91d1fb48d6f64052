"""Caffe's own files as an outside check: with ``SOLVERKIT_BVLC_CAFFE`` naming a checkout of
BVLC Caffe, every prototxt of its ``examples/`` and ``models/`` converts with
``import-caffe`` without the data files it names (converting never opens them) and the
YAML loads back, and every field of a layer's message in its ``caffe.proto`` is accepted.
Caffe's files are not part of this repository; without a checkout those tests skip.
An HDF5 net written here converts without its data and runs with it, always."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.caffe.prototxt import prototxt_kind
from solverkit.cli import main
from solverkit.registry import layer_class
from solverkit.spec.net import load_net_spec
from solverkit.spec.solver import load_solver_spec

BVLC = Path(os.environ.get("SOLVERKIT_BVLC_CAFFE", "/nonexistent"))
FILES = sorted([*BVLC.glob("examples/**/*.prototxt"), *BVLC.glob("models/**/*.prototxt")])
needs_caffe = pytest.mark.skipif(not (BVLC / "src/caffe/proto/caffe.proto").is_file(),
                                 reason="set SOLVERKIT_BVLC_CAFFE to a BVLC Caffe checkout")
HDF5_NET = """name: "hdf5_net"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "examples/hdf5_classification/data/train.txt" batch_size: 10 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "examples/hdf5_classification/data/test.txt" batch_size: 10 } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1" bottom: "label" top: "loss" }
"""
# Caffe types another part of solverkit provides (the Python layer comes with pycaffe)
ELSEWHERE = {"Python"}


def caffe_types(text: str) -> set[str]:
    return set(re.findall(r"""^\s*type:\s*["']([A-Z]\w*)["']""", text, re.MULTILINE))


@needs_caffe
def test_all_54_files_are_there():
    assert len(FILES) == 54


@needs_caffe
@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(BVLC)) for p in FILES])
def test_import_caffe_converts_the_file_without_its_data(tmp_path, path, caplog):
    text = path.read_text()
    waiting = set()
    for name in caffe_types(text) if prototxt_kind(path) == "net" else ():
        try:
            layer_class(name)
        except sk.ConfigError:
            waiting.add(name)
    if waiting:
        assert waiting <= ELSEWHERE, f"unknown Caffe types {waiting}"
        pytest.skip(f"uses {', '.join(sorted(waiting))}, provided with pycaffe")
    copy = tmp_path / path.name            # alone in a folder: no data file beside it
    shutil.copy(path, copy)
    out = tmp_path / "out.yaml"
    assert main(["import-caffe", str(copy), "-o", str(out)]) == 0
    converted = yaml.safe_load(out.read_text())
    if "layers" in converted:
        spec = load_net_spec(out)
        assert len(spec.layers) >= 1
    else:
        load_solver_spec(out)


def test_the_hdf5_example_converts_on_the_command_line_and_runs_with_its_data(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "examples" / "hdf5_classification"
    folder.mkdir(parents=True)
    (folder / "train_val.prototxt").write_text(HDF5_NET)
    result = subprocess.run([sys.executable, "-m", "solverkit", "import-caffe",
                             "examples/hdf5_classification/train_val.prototxt", "-o", "n.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # now with the data, where Caffe's file names it (from Caffe's root folder)
    data = folder / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    with h5py.File(data / "train.h5", "w") as f:
        f["data"], f["label"] = x, y
    (data / "train.txt").write_text("examples/hdf5_classification/data/train.h5\n")
    (data / "test.txt").write_text("examples/hdf5_classification/data/train.h5\n")
    net = sk.Net(tmp_path / "n.yaml", phase="TRAIN", seed=0)
    assert net.layer("data").type == "HDF5Data"
    net.forward()
    batch = net.blobs["data"].shape[0]
    np.testing.assert_array_equal(net.blobs["data"].data, x[np.arange(batch) % 20])
    np.testing.assert_array_equal(net.blobs["label"].data, y[np.arange(batch) % 20])


# ---------------------------------------------------------------- every field Caffe accepts

def caffe_messages() -> tuple[dict[str, list[str]], dict[str, str]]:
    """caffe.proto's messages (their own fields) and LayerParameter's ``*_param`` → message."""
    text = re.sub(r"//[^\n]*", "", (BVLC / "src/caffe/proto/caffe.proto").read_text())
    messages = {}
    for match in re.finditer(r"message (\w+) \{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        body = re.sub(r"(enum|message) \w+ \{[^{}]*\}", "", text[match.end():end - 1])
        messages[match.group(1)] = re.findall(
            r"(?:optional|repeated|required)\s+[\w.]+\s+(\w+)\s*=", body)
    blocks = dict((name, kind) for kind, name in
                  re.findall(r"optional (\w+) (\w+_param) = \d+;", text))
    return messages, blocks


# Fields the converter itself maps elsewhere (Caffe's own upgrade moves them too)
MOVED = {("data_param", f) for f in ("scale", "mean_file", "crop_size", "mirror")} | \
    {("image_data_param", f) for f in ("scale", "mean_file", "crop_size", "mirror")} | \
    {("window_data_param", f) for f in ("scale", "mean_file", "crop_size", "mirror")} | \
    {("dummy_data_param", f) for f in ("num", "channels", "height", "width")} | \
    {("data_param", "backend")}


@needs_caffe
def test_every_field_of_a_layers_caffe_message_is_accepted():
    from solverkit.caffe.names import LOSS_FIELDS, blocks_of
    from solverkit.caffe.prototxt import IGNORED_LAYER_FIELDS
    from solverkit.layers.data import TransformSpec
    from solverkit.registry import layer_types
    messages, blocks = caffe_messages()
    refused, checked = [], 0
    for type_name, cls in sorted(layer_types().items()):
        for block in blocks_of(type_name):
            if block not in blocks:
                continue                        # a type of ours, or one Caffe gives no message
            for field in messages[blocks[block]]:
                checked += 1
                if block == "transform_param":
                    accepted = field in TransformSpec.model_fields
                elif block == "loss_param":
                    accepted = field in LOSS_FIELDS       # used, or noted as Caffe ignores it
                else:
                    accepted = (field in cls.Params.model_fields
                                or field in IGNORED_LAYER_FIELDS or (block, field) in MOVED)
                if not accepted:
                    refused.append(f"{type_name}.{block}.{field}")
    assert checked > 250
    assert refused == []
