"""solverkit predict and solverkit export, run as a user runs them (subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit.data.sources import load_source

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
LENET = CONFIGS / "digits" / "lenet_net.yaml"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def solverkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> Path:
    """A LeNet trained briefly on the digits (100 iterations, about 2 s)."""
    folder = tmp_path_factory.mktemp("lenet")
    run = solverkit("train", "--quiet", "--solver", CONFIGS / "digits" / "lenet_solver.yaml",
                    "--set", "max_iter=100", "test_interval=0", "base_lr=0.05",
                    f"snapshot_prefix={folder}/lenet", cwd=folder)
    assert run.returncode == 0, run.stderr
    return folder / "lenet_iter_100.model.npz"


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The 360 test digits as 8-bit gray PNGs (0..16 scaled to 0..255), their pixels, labels."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("pngs")
    test = load_source("builtin:digits/test")
    pixels = np.rint(test.data[:, 0].astype(np.float64) * 255 / 16).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image, "L").save(folder / f"digit_{i:03d}.png")
    return folder, pixels, test.labels.astype(int)


def _json_classes(stdout: str) -> tuple[list[str], list[int]]:
    predictions = json.loads(stdout)["predictions"]
    return ([p["input"] for p in predictions], [p["top"][0]["class"] for p in predictions])


@pytest.mark.slow
def test_png_digits_get_the_classes_of_net_forward_and_the_accuracy_of_solverkit_test(
        lenet, digit_pngs):
    folder, pixels, labels = digit_pngs
    run = solverkit("predict", "--net", LENET, "--weights", lenet, folder, "--top-k", "1",
                    "--format", "json")
    assert run.returncode == 0, run.stderr
    names, classes = _json_classes(run.stdout)
    assert names == [str(folder / f"digit_{i:03d}.png") for i in range(360)]    # sorted
    # net.forward on the PNGs' pixels mapped back onto the digits' 0..16, TEST transform
    net = sk.Net(sk.deploy_net(LENET), phase="TEST")
    net.load(lenet, allow_extra=True)
    x = (pixels[:, None].astype(np.float32) * np.float32(16 / 255)) * np.float32(0.0625)
    expected = net.forward(data=x)["prob"].argmax(axis=1)
    assert classes == expected.tolist()
    tested = solverkit("test", "--net", LENET, "--weights", lenet)
    assert tested.returncode == 0, tested.stderr
    accuracy = float(re.search(r"accuracy = (\S+)", tested.stdout).group(1))
    assert accuracy > 0.9
    assert np.mean(np.array(classes) == labels) == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow
def test_arrays_csv_rows_formats_labels_and_output_file(lenet, tmp_path):
    test = load_source("builtin:digits/test")
    np.save(tmp_path / "one.npy", test.data[0])
    np.savez(tmp_path / "many.npz", x=test.data[1:4])
    np.savetxt(tmp_path / "rows.csv", test.data[4:6].reshape(2, -1), delimiter=",", fmt="%d")
    inputs = [tmp_path / "one.npy", tmp_path / "many.npz", tmp_path / "rows.csv"]
    labels = tmp_path / "words.txt"
    labels.write_text("".join(f"digit {d}\n" for d in range(10)))
    run = solverkit("predict", "--net", LENET, "--weights", lenet, *inputs, "--top-k", "3",
                    "--labels", labels, "--format", "json", "--batch-size", "2")
    assert run.returncode == 0, run.stderr
    predictions = json.loads(run.stdout)["predictions"]
    assert [p["input"] for p in predictions] == [
        str(inputs[0]), *(f"{inputs[1]}[{i}]" for i in range(3)),
        *(f"{inputs[2]}[{i}]" for i in range(2))]
    net = sk.Net(sk.deploy_net(LENET), phase="TEST")
    net.load(lenet, allow_extra=True)
    prob = net.forward(data=test.data[:6].astype(np.float32) * 0.0625)["prob"]
    for p, row in zip(predictions, prob):
        order = np.argsort(-row)[:3]
        assert [t["class"] for t in p["top"]] == order.tolist()
        assert [t["label"] for t in p["top"]] == [f"digit {c}" for c in order]
        np.testing.assert_allclose([t["prob"] for t in p["top"]], row[order], rtol=1e-5)

    as_csv = solverkit("predict", "--net", LENET, "--weights", lenet, *inputs, "--top-k", "2",
                       "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 12 and rows[0]["rank"] == "1" and rows[1]["rank"] == "2"
    assert [int(r["class"]) for r in rows[::2]] == prob.argmax(axis=1).tolist()
    table = solverkit("predict", "--net", LENET, "--weights", lenet, inputs[0], "--top-k", "1",
                      "--labels", labels)
    assert table.returncode == 0
    assert table.stdout.splitlines() == [
        str(inputs[0]), f"  {prob[0].max():.4f}  {prob[0].argmax():>4}  digit {prob[0].argmax()}"]

    out = tmp_path / "result.json"
    first = solverkit("predict", "--net", LENET, "--weights", lenet, inputs[0], "--format",
                      "json", "-o", out)
    assert first.returncode == 0 and first.stdout == ""
    assert json.loads(out.read_text())["predictions"][0]["input"] == str(inputs[0])
    again = solverkit("predict", "--net", LENET, "--weights", lenet, inputs[0], "-o", out)
    assert again.returncode == 2 and "--force" in again.stderr
    assert json.loads(out.read_text())          # untouched


@pytest.mark.slow
def test_user_mistakes_exit_2_with_a_message(lenet, tmp_path):
    base = ("predict", "--net", LENET, "--weights", lenet)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5)))
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    cases = [
        ((broken,), "broken.png"),
        ((tmp_path / "missing.png",), "missing.png' does not exist"),
        ((tmp_path / "wrong.npy",), "takes samples of shape (1, 8, 8)"),
        ((tmp_path / "wrong.npy", "--top-k", "0"), "--top-k"),
    ]
    for args, message in cases:
        run = solverkit(*base, *args)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr and "Traceback" not in run.stderr
    np.save(tmp_path / "ok.npy", np.zeros((1, 8, 8)))
    run = solverkit(*base, tmp_path / "ok.npy", "--labels", short)
    assert run.returncode == 2 and "names 2 classes" in run.stderr
    run = solverkit("predict", "--net", CONFIGS / "digits" / "mlp_net.yaml", "--weights", lenet,
                    tmp_path / "ok.npy")
    assert run.returncode == 2 and "layer 'ip1'" in run.stderr and "shape" in run.stderr


def test_non_finite_output_exits_1_naming_the_layer(tmp_path):
    net = sk.Net(sk.deploy_net(LENET), phase="TEST")
    net.params["ip2"][1].data[3] = np.nan
    weights = tmp_path / "inf.model.npz"
    net.save(weights)
    np.save(tmp_path / "x.npy", np.ones((1, 8, 8)))
    run = solverkit("predict", "--net", LENET, "--weights", weights, tmp_path / "x.npy")
    assert run.returncode == 1, run.stderr
    assert "non-finite" in run.stderr and "layer 'ip2'" in run.stderr


@pytest.mark.slow
def test_export_onnx_runs_in_onnxruntime_like_the_net(lenet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "lenet.onnx"
    run = solverkit("export", "--net", LENET, "--weights", lenet, "-o", out)
    assert run.returncode == 0, run.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    assert [o.name for o in session.get_outputs()] == ["prob"]
    net = sk.Net(sk.deploy_net(LENET), phase="TEST")
    net.load(lenet, allow_extra=True)
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"data": x})[0], net.forward(data=x)["prob"],
                               rtol=1e-5, atol=1e-6)
    again = solverkit("export", "--net", LENET, "--weights", lenet, "-o", out)
    assert again.returncode == 2 and "--force" in again.stderr
    assert solverkit("export", "--net", LENET, "--weights", lenet, "-o", out,
                     "--force").returncode == 0
    unknown = solverkit("export", "--net", LENET, "--weights", lenet, "-o", tmp_path / "m.pt")
    assert unknown.returncode == 2 and ".onnx" in unknown.stderr


def test_export_of_a_layer_without_onnx_mapping_names_it(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "name: n\nlayers:\n"
        "  - {name: in, type: Input, top: x, shape: [[1, 1, 4, 4]]}\n"
        "  - {name: pool, type: Pooling, bottom: x, top: [p, mask], kernel_size: 2, "
        "stride: 2}\n")
    net = sk.Net(spec, phase="TEST")
    weights = tmp_path / "w.model.npz"
    net.save(weights)
    run = solverkit("export", "--net", spec, "--weights", weights, "-o", tmp_path / "n.onnx")
    assert run.returncode == 2 and "layer 'pool'" in run.stderr and "mask" in run.stderr


def test_caffemodel_export_without_the_caffe_module_says_so(lenet, tmp_path):
    try:
        from solverkit.caffe import export_caffe  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("solverkit.caffe is present: .caffemodel export is tested with it")
    run = solverkit("export", "--net", LENET, "--weights", lenet, "-o", tmp_path / "m.caffemodel")
    assert run.returncode == 2 and "caffemodel" in run.stderr


def test_colour_images_get_the_cifar_nets_channel_order_resize_and_mean(tmp_path):
    from example_data import example_spec
    from PIL import Image

    from solverkit.data.images import resize_bilinear
    config = example_spec(CONFIGS / "cifar10" / "cifar10_quick_net.yaml", tmp_path)
    net = sk.Net(sk.deploy_net(config), phase="TEST", seed=1)
    rng = np.random.default_rng(0)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.normal(size=blob.shape) * 0.05
    weights = tmp_path / "w.model.npz"
    net.save(weights)
    images = {"same.png": rng.integers(0, 256, (32, 32, 3)),
              "large.bmp": rng.integers(0, 256, (40, 48, 3))}
    expected = []
    for name, rgb in images.items():
        Image.fromarray(rgb.astype(np.uint8), "RGB").save(tmp_path / name)
        chw = resize_bilinear(rgb.transpose(2, 0, 1).astype(np.float32), 32, 32)
        chw -= np.array([125.3, 123.0, 113.9], np.float32)[:, None, None]
        expected.append(net.forward(data=chw[None])["prob"][0])
    run = solverkit("predict", "--net", config, "--weights", weights,
                    *(tmp_path / name for name in images), "--top-k", "10", "--format", "json")
    assert run.returncode == 0, run.stderr
    for p, want in zip(json.loads(run.stdout)["predictions"], expected):
        got = np.zeros(10)
        for t in p["top"]:
            got[t["class"]] = t["prob"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_invert_turns_dark_ink_on_paper_into_the_digits_light_strokes(lenet, digit_pngs,
                                                                      tmp_path):
    from PIL import Image
    folder, pixels, _ = digit_pngs
    for i in range(5):          # the same digits, as ink on paper and four times larger
        paper = Image.fromarray(255 - pixels[i], "L").resize((32, 32), Image.NEAREST)
        paper.save(tmp_path / f"paper_{i}.png")
    light = solverkit("predict", "--net", LENET, "--weights", lenet, *sorted(folder.iterdir())[:5],
                      "--top-k", "1", "--format", "json")
    paper = solverkit("predict", "--net", LENET, "--weights", lenet, "--invert",
                      *(tmp_path / f"paper_{i}.png" for i in range(5)), "--top-k", "1",
                      "--format", "json")
    assert paper.returncode == 0, paper.stderr
    assert _json_classes(paper.stdout)[1] == _json_classes(light.stdout)[1]
