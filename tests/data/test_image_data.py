"""The ImageData layer: image lists and class folders written by OpenCV (an independent
writer), compared with arrays OpenCV decodes; training on them; resume; bad files."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.data.sources import load_source


def digit_pictures(part: str, count: int, colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """``count`` built-in digits upscaled to 28x28 by OpenCV: uint8 (N, 28, 28[, 3] BGR)."""
    dataset = load_source(f"builtin:digits/{part}")
    small = np.clip(dataset.data[:count, 0].astype(np.int32) * 16, 0, 255).astype(np.uint8)
    big = np.stack([cv2.resize(image, (28, 28), interpolation=cv2.INTER_LINEAR)
                    for image in small])
    if colour:          # a tinted digit on a coloured ground: three different channels
        big = np.stack([255 - big // 2, big, (big.astype(np.int32) * 3 // 4 + 40).astype(
            np.uint8)], axis=-1)
    return big, dataset.labels[:count].astype(np.int64)


def write_images(folder, pictures, labels, suffix: str, layout: str):
    """Write with cv2.imwrite: ``folder/<label>/<i>.<suffix>`` (layout 'folders') or flat
    files plus ``folder/list.txt`` (layout 'list'); returns the source to give ImageData
    and the arrays OpenCV decodes back (N, C, 28, 28)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, decoded = [], []
    flag = cv2.IMREAD_COLOR if pictures.ndim == 4 else cv2.IMREAD_GRAYSCALE
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        if layout == "folders":
            name = f"{label}/{i:04d}{suffix}"
        else:
            name = f"img {i:04d}{suffix}"           # a space in the name, as Caffe allows
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(path), picture)
        lines.append((name, label))
        back = cv2.imread(str(path), flag)
        decoded.append(back.transpose(2, 0, 1) if back.ndim == 3 else back[None])
    if layout == "folders":
        order = sorted(range(len(lines)), key=lambda k: (str(lines[k][1]), lines[k][0]))
        source = str(folder)
    else:
        order = list(range(len(lines)))
        (folder / "list.txt").write_text("".join(f"{n} {lab}\n" for n, lab in lines))
        source = str(folder / "list.txt")
    return source, np.stack(decoded)[order], np.asarray(labels)[order]


def lenet28(train_layer: dict, test_layer: dict, channels: int) -> dict:
    """The digits LeNet for 28x28 inputs (5x5 kernels, no padding), narrowed for speed."""
    def conv(name, bottom, outputs):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
                "num_output": outputs, "kernel_size": 5, "weight_filler": {"type": "xavier"}}

    def pool(name, bottom):
        return {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pool": "MAX",
                "kernel_size": 2, "stride": 2}

    return {"name": "lenet28", "layers": [
        {**train_layer, "name": "digits", "top": ["data", "label"], "include": {"phase": "TRAIN"}},
        {**test_layer, "name": "digits", "top": ["data", "label"], "include": {"phase": "TEST"}},
        conv("conv1", "data", 8), pool("pool1", "conv1"),
        conv("conv2", "pool1", 16), pool("pool2", "conv2"),
        {"name": "ip1", "type": "InnerProduct", "bottom": "pool2", "top": "ip1",
         "num_output": 64, "weight_filler": {"type": "xavier"}},
        {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2",
         "num_output": 10, "weight_filler": {"type": "xavier"}},
        {"name": "accuracy", "type": "Accuracy", "bottom": ["ip2", "label"],
         "top": "accuracy", "include": {"phase": "TEST"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
    ]}


def accuracy_after_training(net: dict, prefix, iters: int = 60) -> float:
    solver = sk.Solver({"type": "Adam", "base_lr": 0.003, "lr_policy": "fixed",
                        "max_iter": iters, "test_interval": iters, "test_initialization": False,
                        "random_seed": 5, "snapshot_after_train": False,
                        "snapshot_prefix": str(prefix)}, net=net, progress=False)
    return solver.solve()["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("suffix,colour,layout", [(".png", False, "folders"),
                                                  (".jpg", False, "list"),
                                                  (".png", True, "list"),
                                                  (".jpg", True, "folders")])
def test_digit_images_train_as_well_as_the_arrays(tmp_path, suffix, colour, layout):
    train_pictures, train_labels = digit_pictures("train", 320, colour)
    test_pictures, test_labels = digit_pictures("test", 360, colour)
    train_source, train_x, train_y = write_images(tmp_path / "train", train_pictures,
                                                  train_labels, suffix, layout)
    test_source, test_x, test_y = write_images(tmp_path / "test", test_pictures, test_labels,
                                               suffix, layout)
    common = {"batch_size": 32, "transform": {"scale": 1 / 256}}
    images = {"type": "ImageData", "is_color": colour, **common}
    from_images = accuracy_after_training(
        lenet28({**images, "source": train_source, "shuffle": True},
                {**images, "source": test_source, "batch_size": 120}, 3 if colour else 1),
        tmp_path / "images")
    arrays = {"type": "Data", **common}
    from_arrays = accuracy_after_training(
        lenet28({**arrays, "source": (train_x, train_y), "shuffle": True},
                {**arrays, "source": (test_x, test_y), "batch_size": 120}, 3 if colour else 1),
        tmp_path / "arrays")
    assert from_arrays > 0.85               # it learned
    if suffix == ".png":        # lossless: Pillow decodes OpenCV's file to the same pixels
        assert from_images == from_arrays
    else:                       # two JPEG decoders may round a pixel differently
        assert abs(from_images - from_arrays) <= 0.01


@pytest.fixture
def gray_list(tmp_path):
    pictures, labels = digit_pictures("train", 30, colour=False)
    return write_images(tmp_path / "imgs", pictures, labels, ".png", "list")


def image_net(layer: dict, phase="TRAIN", seed=0):
    return sk.Net({"name": "images", "layers": [
        {"name": "data", "type": "ImageData", "top": ["data", "label"], **layer}]},
        phase=phase, seed=seed)


def test_list_batches_are_the_decoded_images_in_order(gray_list):
    source, x, y = gray_list
    net = image_net({"source": source, "batch_size": 8, "is_color": False}, phase="TEST")
    try:
        batches = [net.forward() for _ in range(5)]          # 40 samples: wraps after 30
    finally:
        net.close()
    data = np.concatenate([b["data"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    order = np.arange(40) % 30
    np.testing.assert_array_equal(data, x[order].astype(np.float32))
    np.testing.assert_array_equal(labels, y[order])


def test_resize_and_root_folder(tmp_path, gray_list):
    _, x, _ = gray_list
    listing = (tmp_path / "imgs" / "list.txt").read_text()
    (tmp_path / "elsewhere.txt").write_text(listing)
    net = image_net({"source": str(tmp_path / "elsewhere.txt"), "root_folder": str(tmp_path / "imgs"),
                     "batch_size": 4, "new_height": 14, "new_width": 20, "is_color": False},
                    phase="TEST")
    try:
        out = net.forward()["data"]
    finally:
        net.close()
    assert out.shape == (4, 1, 14, 20)
    ref = np.stack([cv2.resize(image[0], (20, 14), interpolation=cv2.INTER_LINEAR)
                    for image in x[:4]])
    assert np.abs(out[:, 0] - ref).max() <= 1


def test_class_names_written_beside_snapshots(tmp_path):
    pictures, labels = digit_pictures("train", 40, colour=False)
    source, _, _ = write_images(tmp_path / "folders", pictures, labels, ".png", "folders")
    layer = {"type": "ImageData", "source": source, "batch_size": 10, "is_color": False,
             "transform": {"scale": 1 / 256}}
    solver = sk.Solver({"base_lr": 0.01, "max_iter": 2, "snapshot_prefix": str(tmp_path / "s")},
                       net=lenet28(layer, layer, 1), progress=False)
    solver.solve()
    names = (tmp_path / "s_labels.txt").read_text().splitlines()
    assert names == sorted({str(v) for v in labels})


@pytest.mark.slow
def test_resume_is_bit_exact_with_shuffled_images(tmp_path, gray_list, resume_matches):
    source, _, _ = gray_list
    layer = {"type": "ImageData", "source": source, "batch_size": 7, "shuffle": True,
             "is_color": False, "transform": {"scale": 1 / 256, "mirror": True}}
    resume_matches(tmp_path, lenet28(layer, {**layer, "shuffle": False}, 1))


# ----------------------------------------------------------------- bad data, via the CLI
def _train_on(tmp_path, layer: dict):
    """``solverkit train`` on a tiny net reading ``layer``; the finished process."""
    net = {"name": "bad", "layers": [
        {"name": "data", "type": "ImageData", "top": ["data", "label"], "batch_size": 4,
         "is_color": False, **layer},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 10},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net))
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump({
        "net": "net.yaml", "base_lr": 0.01, "max_iter": 10, "snapshot_prefix": "out"}))
    return subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver",
                           "solver.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)


def _listing(tmp_path, count=8):
    pictures, labels = digit_pictures("train", count, colour=False)
    write_images(tmp_path / "imgs", pictures, labels, ".png", "list")
    return tmp_path / "imgs" / "list.txt", labels


@pytest.mark.parametrize("case", ["truncated", "not_an_image", "no_label", "bare_path", "missing",
                                  "bad_label", "other_size"])
def test_bad_image_data_exits_2_naming_the_file(tmp_path, case):
    listing, _ = _listing(tmp_path)
    lines = listing.read_text().splitlines()
    target = tmp_path / "imgs" / "img 0003.png"
    expect = ["img 0003.png", "line 4"]
    if case == "truncated":
        target.write_bytes(target.read_bytes()[:60])
        expect.append("truncated or damaged")
    elif case == "not_an_image":
        target.write_text("not pixels")
        expect.append("not an image")
    elif case == "no_label":
        lines[3] = "img 0003.png"          # (the part after the last space is the label)
        expect = ["list.txt", "line 4", "is the label missing?"]
    elif case == "bare_path":
        lines[3] = "img0003.png"
        expect = ["list.txt", "line 4", "has no label"]
    elif case == "missing":
        target.unlink()
        expect.append("does not exist")
    elif case == "bad_label":
        lines[3] = "img 0003.png three"
        expect = ["list.txt", "line 4", "'three' is not a whole number"]
    else:
        assert cv2.imwrite(str(target), np.zeros((5, 5), np.uint8))
        expect = ["img 0003.png", "is 5x5", "new_height"]
    listing.write_text("\n".join(lines) + "\n")
    done = _train_on(tmp_path, {"source": "imgs/list.txt"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for text in expect:
        assert text in done.stderr, (text, done.stderr)
    assert "layer 'data'" in done.stderr


def test_skip_bad_images_are_skipped_and_counted(tmp_path):
    _listing(tmp_path, 12)
    (tmp_path / "imgs" / "img 0002.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "imgs" / "img 0005.png").unlink()
    jpeg = tmp_path / "imgs" / "img 0007.png"
    jpeg.write_bytes(jpeg.read_bytes()[:70])
    done = _train_on(tmp_path, {"source": "imgs/list.txt", "skip_bad": True})
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    assert "skipping 1 missing image file(s)" in log and "img 0005.png" in log
    assert log.count("skipping image") == 1                      # one warning, then counted
    assert "2 bad record(s) skipped" in log


def test_skip_bad_batches_take_the_next_good_image(tmp_path):
    listing, labels = _listing(tmp_path, 6)
    (tmp_path / "imgs" / "img 0001.png").write_bytes(b"junk")
    net = image_net({"source": str(listing), "batch_size": 6, "is_color": False,
                     "skip_bad": True}, phase="TEST")
    try:
        got = net.forward()["label"]
        assert net.layers[0].dataset.skipped == 1
    finally:
        net.close()
    np.testing.assert_array_equal(got, labels[[0, 2, 2, 3, 4, 5]])


def test_image_shards_decode_only_their_slice(tmp_path, monkeypatch):
    from solverkit.data import images
    listing, _ = _listing(tmp_path, 12)
    net = image_net({"source": str(listing), "batch_size": 2, "is_color": False,
                     "prefetch": 0}, phase="TEST")
    decoded = []
    original = images.load_image_u8

    def spy(path, **options):
        decoded.append(path.name)
        return original(path, **options)

    try:
        net.layers[0].set_shard(2, 3)
        monkeypatch.setattr(images, "load_image_u8", spy)
        net.forward()
    finally:
        net.close()
    assert sorted(decoded) == ["img 0004.png", "img 0005.png"]    # (by two threads)
