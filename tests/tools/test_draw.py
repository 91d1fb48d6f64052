"""`solverkit draw`: the DOT text, parsed back, holds every layer and every blob edge."""

import json
import re
import shutil
import subprocess

import pytest

from solverkit.cli import main
from solverkit.net import Net
from solverkit.reports.graph import write_graph

NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[label="((?:[^"\\]|\\.)*)"', re.MULTILINE)
EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[label="((?:[^"\\]|\\.)*)"\]',
                  re.MULTILINE)


def parse_dot(text: str):
    nodes = {name: label.split("\\n") for name, label in NODE.findall(text)}
    edges = {(a, b, label) for a, b, label in EDGE.findall(text)}
    return nodes, edges


def test_dot_has_every_layer_and_blob_edge(shared_file, tmp_path, capsys):
    out = tmp_path / "net.dot"
    assert main(["draw", "--net", str(shared_file), "-o", str(out)]) == 0
    nodes, edges = parse_dot(out.read_text())
    layers = {"input": "Input", "left": "InnerProduct", "right": "InnerProduct",
              "sum": "Eltwise", "act": "TanH", "loss": "EuclideanLoss", "l1": "L1Loss"}
    for name, type_name in layers.items():
        assert nodes[name][:2] == [name, type_name]
    assert set(nodes) == set(layers) | {"output:loss", "output:l1"}
    expected = {("input", "left", "a\\n4x6"), ("input", "right", "b\\n4x6"),
                ("left", "sum", "left\\n4x5"), ("right", "sum", "right\\n4x5"),
                ("sum", "act", "sum\\n4x5"),
                ("act", "loss", "act\\n4x5"), ("act", "l1", "act\\n4x5"),     # fan-out
                ("input", "loss", "target\\n4x5"), ("input", "l1", "target\\n4x5"),
                ("loss", "output:loss", "loss\\nscalar"), ("l1", "output:l1", "l1\\nscalar")}
    assert edges == expected


def test_in_place_layer_sits_on_the_chain_and_phase_selects_layers(mlp_file, tmp_path):
    out = tmp_path / "net.gv"
    assert main(["draw", "--net", str(mlp_file), "-o", str(out), "--phase", "TEST"]) == 0
    nodes, edges = parse_dot(out.read_text())
    assert "accuracy" in nodes
    assert ("ip1", "relu1", "ip1\\n8x16") in edges
    assert ("relu1", "ip2", "ip1\\n8x16") in edges         # readers see the ReLU's version
    assert ("ip1", "ip2", "ip1\\n8x16") not in edges
    main(["draw", "--net", str(mlp_file), "-o", str(out)])
    assert "accuracy" not in parse_dot(out.read_text())[0]   # TRAIN by default


def test_without_graphviz_the_dot_file_is_written_with_a_note(mlp_file, tmp_path):
    net = Net(mlp_file, seed=0)
    result = write_graph(net, tmp_path / "net.png", dot_program="no-such-graphviz-program")
    assert not result.rendered and result.path == tmp_path / "net.dot"
    assert not (tmp_path / "net.png").exists()
    assert "apt-get install graphviz" in result.note and "dot -Tpng" in result.note
    assert parse_dot(result.path.read_text())[0]["ip1"][:2] == ["ip1", "InnerProduct"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_dot_back(shared_file, tmp_path):
    out = tmp_path / "net.dot"
    main(["draw", "--net", str(shared_file), "-o", str(out)])
    done = subprocess.run(["dot", "-Tjson", str(out)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    names = {node["name"] for node in graph["objects"]}
    assert {"input", "left", "right", "sum", "act", "loss", "l1"} <= names
    assert len(graph["edges"]) == len(parse_dot(out.read_text())[1]) == 11


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_renders_png_and_svg(mlp_file, tmp_path):
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml")):
        out = tmp_path / f"net{suffix}"
        assert main(["draw", "--net", str(mlp_file), "-o", str(out)]) == 0
        assert out.read_bytes().startswith(magic) and out.stat().st_size > 1000
