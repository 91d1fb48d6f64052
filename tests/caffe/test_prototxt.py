"""Caffe's own text files read as specs: each builds with the shapes Caffe computes."""

from __future__ import annotations

import caffe_texts as caffe
import numpy as np
import pytest

import solverkit as sk
from solverkit.caffe.messages import encode_blobproto, encode_datum
from solverkit.caffe.prototxt import net_text_source, solver_text_source
from solverkit.spec import SolverSpec, load_net_spec, load_solver_spec


def shapes(net) -> dict[str, tuple]:
    return {name: tuple(blob.shape) for name, blob in net.blobs.items()}


def param_shapes(net) -> dict[str, list[tuple]]:
    return {layer.name: [tuple(b.shape) for b in layer.blobs] for layer in net.layers
            if layer.blobs}


def write_npz(path, shape, count, rng):
    x = rng.integers(0, 256, (count, *shape)).astype(np.float32)
    np.savez(path, x=x, y=rng.integers(0, 10, count))


def test_lenet_train_test_and_solver(tmp_path, monkeypatch, rng):
    """examples/mnist as Caffe ships it, run from the Caffe root (paths from there)."""
    root = tmp_path / "caffe"
    folder = root / "examples" / "mnist"
    folder.mkdir(parents=True)
    (folder / "lenet_train_test.prototxt").write_text(caffe.LENET)
    (folder / "lenet_solver.prototxt").write_text(caffe.LENET_SOLVER)
    write_npz(root / "mnist_train.npz", (1, 28, 28), 64, rng)
    write_npz(root / "mnist_test.npz", (1, 28, 28), 100, rng)
    monkeypatch.chdir(root)
    train = sk.Net("examples/mnist/lenet_train_test.prototxt", phase="TRAIN", seed=0)
    assert shapes(train) == {
        "data": (64, 1, 28, 28), "label": (64,), "conv1": (64, 20, 24, 24),
        "pool1": (64, 20, 12, 12), "conv2": (64, 50, 8, 8), "pool2": (64, 50, 4, 4),
        "ip1": (64, 500), "ip2": (64, 10), "loss": ()}
    assert param_shapes(train)["ip1"] == [(500, 800), (500,)]
    assert [p.lr_mult for p in train.spec.layers[2].param] == [1, 2]
    test = sk.Net("examples/mnist/lenet_train_test.prototxt", phase="TEST", seed=0)
    assert shapes(test)["data"] == (100, 1, 28, 28) and shapes(test)["accuracy"] == ()
    assert test.layer("mnist").params.transform.scale == 0.00390625

    solver = sk.Solver("examples/mnist/lenet_solver.prototxt")
    spec = solver.spec
    assert (spec.type, spec.lr_policy, spec.base_lr, spec.gamma, spec.power) == (
        "SGD", "inv", 0.01, 0.0001, 0.75)
    assert (spec.test_iter, spec.test_interval, spec.max_iter, spec.snapshot) == (
        100, 500, 10000, 5000)
    assert spec.snapshot_prefix == "examples/mnist/lenet"
    # the net path is Caffe's (from the root): found from the cwd, not the solver's folder
    assert solver.net_source.resolve() == (folder / "lenet_train_test.prototxt").resolve()
    assert shapes(solver.net) == shapes(train)


def test_cifar10_quick_with_a_binaryproto_mean(tmp_path, rng):
    (tmp_path / "cifar10_quick_train_test.prototxt").write_text(caffe.CIFAR10_QUICK)
    (tmp_path / "cifar10_quick_solver.prototxt").write_text(caffe.CIFAR10_QUICK_SOLVER)
    write_npz(tmp_path / "cifar10_train.npz", (3, 32, 32), 100, rng)
    write_npz(tmp_path / "cifar10_test.npz", (3, 32, 32), 100, rng)
    mean = rng.uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(encode_blobproto(mean, legacy=True))
    solver = sk.Solver(tmp_path / "cifar10_quick_solver.prototxt")
    assert shapes(solver.net) == {
        "data": (100, 3, 32, 32), "label": (100,), "conv1": (100, 32, 32, 32),
        "pool1": (100, 32, 16, 16), "conv2": (100, 32, 16, 16), "pool2": (100, 32, 8, 8),
        "conv3": (100, 64, 8, 8), "pool3": (100, 64, 4, 4), "ip1": (100, 64),
        "ip2": (100, 10), "loss": ()}
    assert [layer.params.pool for layer in solver.net.spec.layers
            if layer.type == "Pooling"] == ["MAX", "AVE", "AVE"]
    assert (solver.spec.lr_policy, solver.spec.weight_decay, solver.spec.max_iter) == (
        "fixed", 0.004, 4000)
    # the mean is subtracted as Caffe does: one batch equals (x - mean) of its samples
    solver.net.forward()
    data = np.load(tmp_path / "cifar10_train.npz")["x"]
    np.testing.assert_allclose(solver.net.blobs["data"].data, data - mean, rtol=1e-6)


@pytest.mark.slow
def test_alexnet_deploy_shapes():
    net = sk.Net(caffe.ALEXNET_DEPLOY, phase="TEST", seed=0)
    got = shapes(net)
    assert got["data"] == (10, 3, 227, 227) and got["conv1"] == (10, 96, 55, 55)
    assert got["pool1"] == (10, 96, 27, 27) and got["conv2"] == (10, 256, 27, 27)
    assert got["pool2"] == (10, 256, 13, 13) and got["conv5"] == (10, 256, 13, 13)
    assert got["pool5"] == (10, 256, 6, 6) and got["fc6"] == (10, 4096)
    assert got["prob"] == (10, 1000)
    params = param_shapes(net)
    assert params["conv2"] == [(256, 48, 5, 5), (256,)]          # group 2 halves the inputs
    assert params["conv4"] == [(384, 192, 3, 3), (384,)]
    assert params["fc6"] == [(4096, 256 * 6 * 6), (4096,)]
    norm = net.layer("norm1").params
    assert (norm.local_size, norm.alpha, norm.beta) == (5, 0.0001, 0.75)
    assert net.spec.layers[1].param[1].decay_mult == 0


def test_inception_block_concat_and_ceil_average_pooling():
    net = sk.Net(caffe.INCEPTION, phase="TEST", seed=0)
    got = shapes(net)
    assert got["inception_3a/1x1"] == (10, 64, 28, 28)
    assert got["inception_3a/3x3"] == (10, 128, 28, 28)
    assert got["inception_3a/5x5"] == (10, 32, 28, 28)
    assert got["inception_3a/pool"] == (10, 192, 28, 28)
    assert got["inception_3a/output"] == (10, 256, 28, 28)
    assert got["loss1/ave_pool"] == (10, 256, 9, 9)        # ceil((28 - 5) / 3) + 1
    assert got["prob"] == (10, 1000)
    assert net.spec.layers[0].type == "Input" and net.spec.layers[0].top == ["data"]


def test_v1_net_with_enum_types_is_upgraded(rng):
    net = sk.Net(caffe.LENET_V1, phase="TRAIN", seed=0)
    layers = {layer.name: layer for layer in net.spec.layers}
    assert [layer.type for layer in net.spec.layers] == [
        "Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "InnerProduct",
        "SoftmaxWithLoss"]
    assert layers["input"].params.shape == [[64, 1, 28, 28], [64, 1, 1, 1]]
    assert [(p.lr_mult, p.decay_mult) for p in layers["conv1"].param] == [(1, 1), (2, 0)]
    assert [p.lr_mult for p in layers["ip1"].param] == [1, 2]
    assert shapes(net)["pool1"] == (64, 20, 12, 12) and shapes(net)["ip2"] == (64, 10)
    # the sparse gaussian filler: about 15 of the 500 outputs of each input are non-zero
    weights = net.layer("ip1").blobs[0].data
    assert 0.02 < np.mean(weights != 0) < 0.04
    assert layers["ip1"].params.weight_filler.sparse == 15


def test_a_solver_embedding_two_v1_test_nets(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(caffe.SOLVER_V1_TWO_TESTS)
    raw = solver_text_source(path).raw
    assert raw["type"] == "Nesterov"                   # solver_type: NESTEROV upgraded
    assert raw["test_iter"] == [2, 3]
    assert raw["test_state"] == [{"stage": ["val"]}, {"stage": ["other"], "level": 1}]
    assert raw["train_state"] == {}                    # TRAIN: the training net's own phase
    assert "gamma" in raw and "power" not in raw      # step does not use power (Caffe ignores it)
    assert "solver_mode" not in raw and "device_id" not in raw
    train = sk.Net(raw["train_net_param"], phase="TRAIN", seed=0)
    assert shapes(train) == {"data": (16, 1, 28, 28), "label": (16, 1, 1, 1),
                             "ip1": (16, 10), "loss": ()}
    assert [p.lr_mult for p in train.spec.layers[1].param] == [1, 2]
    for net_raw, batch, state, has_accuracy in zip(
            raw["test_net_param"], (8, 4), raw["test_state"], (True, False)):
        net = sk.Net(net_raw, phase="TEST", stages=tuple(state["stage"]),
                     level=state.get("level", 0), seed=0)
        assert shapes(net)["data"] == (batch, 1, 28, 28)
        assert ("accuracy" in net.blobs) == has_accuracy
        net.forward()
        assert np.all(net.blobs["label"].data == 1)    # the constant filler, once
        first = net.blobs["data"].data.copy()
        net.forward()                                  # the gaussian one, every forward
        assert not np.array_equal(first, net.blobs["data"].data)
    if "test_net_param" in SolverSpec.model_fields:    # the solver fields for several nets
        spec = load_solver_spec(path)
        assert spec.type == "Nesterov"


def test_solver_type_names_the_update_rule(tmp_path):
    (tmp_path / "net.prototxt").write_text(caffe.LENET_V1)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nmax_iter: 10\nsolver_type: ADAGRAD\n'
        'lr_policy: "fixed"\nrandom_seed: 3\n')
    solver = sk.Solver(tmp_path / "solver.prototxt")
    assert solver.spec.type == "AdaGrad" and solver.spec.delta == 1e-8
    assert type(solver.updater.rule).__name__ == "AdaGrad"


def test_detection_by_content_and_plain_yaml_still_yaml(tmp_path):
    caffe_net = tmp_path / "net.txt"                   # no .prototxt suffix
    caffe_net.write_text(caffe.INCEPTION)
    assert load_net_spec(caffe_net).layers[-1].name == "prob"
    solver = tmp_path / "solver.cfg"
    solver.write_text('net: "net.txt"\nbase_lr: 0.1\nmax_iter: 1\ntest_iter: 1\n'
                      'test_iter: 2\n')              # a key given twice: protobuf text
    assert solver_text_source(solver).raw["test_iter"] == [1, 2]
    yaml_net = tmp_path / "net.yaml"
    yaml_net.write_text("name: y\nlayers:\n  - {name: in, type: Input, top: x, "
                        "shape: [[2, 3]]}\n")
    assert load_net_spec(yaml_net).name == "y"


def test_lines_of_mistakes_point_into_the_prototxt(tmp_path):
    text = caffe.LENET.replace("num_output: 500", "num_output: 0")
    path = tmp_path / "lenet.prototxt"
    path.write_text(text)
    line = text.splitlines().index("    num_output: 0") + 1
    with pytest.raises(sk.ConfigError) as err:
        load_net_spec(path)
    assert str(err.value).startswith(f"{path}:{line}: layer 'ip1' (#6): field 'num_output'")
    text = caffe.LENET.replace("scale: 0.00390625", "scale: 0.00390625\n    force_colour: true", 1)
    path.write_text(text)
    line = text.splitlines().index("    force_colour: true") + 1
    with pytest.raises(sk.ConfigError) as err:
        load_net_spec(path)
    assert str(err.value).startswith(f"{path}:{line}: layer 'mnist' (#0): field "
                                     "'transform.force_colour': unknown field")
    with pytest.raises(sk.ConfigError, match="'pooling_param' does not apply to a Convolution"):
        net_text_source(caffe.LENET.replace("convolution_param {\n    num_output: 20",
                                            "pooling_param {\n    pool: MAX", 1))


def test_hdf5_data_reads_the_listed_files(tmp_path, rng):
    """examples/hdf5_classification: HDF5Data's source lists .h5 files; tops name datasets."""
    h5py = pytest.importorskip("h5py")
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = (np.arange(12) % 2).astype(np.float32)
    for i in range(2):
        with h5py.File(tmp_path / f"part{i}.h5", "w") as f:
            f["data"], f["label"] = x[6 * i:6 * i + 6], y[6 * i:6 * i + 6]
    (tmp_path / "train.txt").write_text("part0.h5\npart1.h5\n")
    (tmp_path / "net.prototxt").write_text("""\
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "train.txt" batch_size: 12 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")
    net = sk.Net(tmp_path / "net.prototxt", seed=0)
    assert net.spec.layers[0].type == "HDF5Data"
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, x)
    np.testing.assert_array_equal(net.blobs["label"].data, y)


@pytest.mark.parametrize("name", ["LENET", "CIFAR10_QUICK", "ALEXNET_DEPLOY", "INCEPTION",
                                  "LENET_V1"])
def test_our_specs_written_as_caffe_text_read_back_the_same(name):
    from solverkit.caffe import net_to_prototxt
    spec = load_net_spec(getattr(caffe, name))
    text = net_to_prototxt(spec)
    assert "layers {" not in text and "_param {" in text       # today's format, nested params
    assert load_net_spec(text).to_dict() == spec.to_dict()


def test_data_layer_reads_a_caffe_lmdb(tmp_path, rng):
    """examples/mnist's Data layer as written: data_param { source backend: LMDB }."""
    lmdb = pytest.importorskip("lmdb")
    pixels = rng.integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    env = lmdb.open(str(tmp_path / "mnist_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, image in enumerate(pixels):
            txn.put(f"{i:08d}".encode(), encode_datum(image, label=i % 10))
    env.close()
    (tmp_path / "net.prototxt").write_text(
        caffe.LENET.replace("mnist_train.npz", "mnist_train_lmdb").replace("batch_size: 64",
                                                                           "batch_size: 6"))
    net = sk.Net(tmp_path / "net.prototxt", phase="TRAIN", seed=0)
    assert net.layer("mnist").params.backend == "LMDB"
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, pixels * 0.00390625, rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["label"].data, np.arange(6) % 10)
    net.close()


def test_image_data_layer_from_a_prototxt(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
            tmp_path / f"im{i}.png")
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png {i}\n" for i in range(3)))
    (tmp_path / "net.prototxt").write_text("""\
layer {
  name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { mirror: false crop_size: 7 mean_value: 104 mean_value: 117 mean_value: 123 }
  image_data_param { source: "list.txt" batch_size: 3 new_height: 9 new_width: 8 root_folder: "" }
}
""")
    net = sk.Net(tmp_path / "net.prototxt", phase="TEST", seed=0)
    assert net.blobs["data"].shape == (3, 3, 7, 7)
    assert net.layer("data").params.transform.mean_value == [104, 117, 123]
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2])
    net.close()


def test_transform_param_on_a_layer_that_reads_none_is_ignored_as_caffe_does(tmp_path):
    path = tmp_path / "dummy.prototxt"
    path.write_text('''name: "t"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  dummy_data_param { shape { dim: 2 dim: 1 dim: 4 dim: 4 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 } }
''')
    net = sk.Net(str(path))
    assert net.blobs["ip"].data.shape == (2, 3)
    # a block of another type's message is still a mistake
    path.write_text(path.read_text().replace("transform_param", "pooling_param"))
    with pytest.raises(sk.ConfigError, match="'pooling_param' does not apply to a DummyData"):
        sk.Net(str(path))
