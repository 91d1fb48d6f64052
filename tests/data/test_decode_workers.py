"""Decoding a batch on several threads (``num_workers``): the same batches as one thread,
before and after a resume; the pixels OpenCV decodes; bad images among many end in one
error naming the first; an interrupted or finished run leaves no thread behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import cv2
import lmdb
import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.data import images
from solverkit.errors import DataError


def write_pictures(folder, count: int, suffix: str = ".png", size=(20, 24)):
    """``count`` colour pictures of ``size`` (H, W) written by OpenCV as ``folder/NNN<suffix>``
    with a list file; returns the list and the BGR (N, 3, H, W) pixels OpenCV reads back."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    decoded, lines = [], []
    for i in range(count):
        base = 128 + 90 * np.sin(xx / (2 + i % 5) + i) * np.cos(yy / (3 + i % 3))
        picture = np.stack([base, 255 - base, base / 2 + 60], axis=-1) + rng.normal(0, 9, (
            height, width, 3))
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        name = f"{i:03d}{suffix}"
        assert cv2.imwrite(str(folder / name), picture)
        decoded.append(cv2.imread(str(folder / name), cv2.IMREAD_COLOR).transpose(2, 0, 1))
        lines.append(f"{name} {i % 4}\n")
    (folder / "list.txt").write_text("".join(lines))
    return folder / "list.txt", np.stack(decoded)


def image_net(source, workers, phase="TRAIN", **fields):
    layer = {"name": "data", "type": "ImageData", "top": ["data", "label"], "source": str(source),
             "batch_size": 8, "num_workers": workers, **fields}
    return sk.Net({"name": "images", "layers": [layer]}, phase=phase, seed=3)


def batches(net, count):
    return [{k: v.copy() for k, v in net.forward().items()} for _ in range(count)]


TRAIN = {"shuffle": True, "transform": {"crop_size": 16, "mirror": True, "scale": 0.5,
                                        "mean_value": [100, 110, 120]}}


@pytest.mark.parametrize("prefetch", [0, 2])
def test_workers_give_the_batches_of_one_thread_and_resume_exactly(tmp_path, prefetch):
    source, _ = write_pictures(tmp_path, 21, ".jpg")
    one = image_net(source, 1, prefetch=prefetch, **TRAIN)
    many = image_net(source, 3, prefetch=prefetch, **TRAIN)
    try:
        expected = batches(one, 7)               # 56 samples: wraps into a third epoch
        got = batches(many, 4)
        state = many.layers[0].get_state()       # a resume on three threads, mid-epoch
        resumed = image_net(source, 3, prefetch=prefetch, **TRAIN)
        try:
            resumed.layers[0].set_state(state)
            got += batches(resumed, 3)
        finally:
            resumed.close()
    finally:
        one.close()
        many.close()
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        np.testing.assert_array_equal(mine["data"], theirs["data"])
        np.testing.assert_array_equal(mine["label"], theirs["label"])
    assert expected[0]["data"].shape == (8, 3, 16, 16)


def test_workers_decode_on_several_threads_the_pixels_opencv_reads(tmp_path, monkeypatch):
    source, decoded = write_pictures(tmp_path, 12)               # PNG: lossless
    threads_seen = set()
    original = images.load_image_u8

    def spy(path, **options):
        threads_seen.add(threading.current_thread().name)
        time.sleep(0.01)                    # long enough that every thread gets a share
        return original(path, **options)

    monkeypatch.setattr(images, "load_image_u8", spy)
    net = image_net(source, 3, phase="TEST", batch_size=12, prefetch=0,
                    transform={"crop_size": 16}, worker_type="threads")
    try:
        out = net.forward()
    finally:
        net.close()
    top, left = (20 - 16) // 2, (24 - 16) // 2                  # Caffe's centre crop
    np.testing.assert_array_equal(out["data"], decoded[:, :, top:top + 16, left:left + 16])
    np.testing.assert_array_equal(out["label"], np.arange(12) % 4)
    assert len(threads_seen) == 3, threads_seen


def test_encoded_lmdb_records_decode_alike_on_several_threads(tmp_path):
    from solverkit.caffe.messages import encode_datum
    _, decoded = write_pictures(tmp_path / "pictures", 10)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, picture in enumerate(decoded):
            png = cv2.imencode(".png", picture.transpose(1, 2, 0))[1].tobytes()
            txn.put(b"%03d" % i, encode_datum(png, i % 4, encoded=True))
    env.close()
    outs = {}
    for workers in (1, 4):
        net = sk.Net({"name": "db", "layers": [{
            "name": "data", "type": "Data", "top": ["data", "label"], "backend": "LMDB",
            "source": str(tmp_path / "db"), "batch_size": 6, "num_workers": workers,
            "shuffle": True, "transform": {"crop_size": 12, "mirror": True}}]}, seed=1)
        try:
            outs[workers] = batches(net, 4)
        finally:
            net.close()
    for a, b in zip(outs[1], outs[4]):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # and the numbers are the records' pixels: every crop is a window of its picture
    first = outs[4][0]
    for data, label in zip(first["data"], first["label"]):
        candidates = decoded[np.arange(10) % 4 == label].astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(candidates, (12, 12), axis=(2, 3))
        hits = [np.array_equal(data, windows[n, :, i, j]) or
                np.array_equal(data[..., ::-1], windows[n, :, i, j])
                for n in range(len(candidates)) for i in range(windows.shape[2])
                for j in range(windows.shape[3])]
        assert any(hits)


def test_skip_bad_batches_do_not_depend_on_the_threads(tmp_path, caplog):
    source, _ = write_pictures(tmp_path, 16)
    (tmp_path / "004.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "009.png").write_bytes((tmp_path / "009.png").read_bytes()[:90])
    outs = {}
    for workers in (1, 4):
        caplog.clear()
        net = image_net(source, workers, phase="TEST", batch_size=16, skip_bad=True)
        try:
            with caplog.at_level("WARNING", logger="solverkit"):
                outs[workers] = batches(net, 3)
            assert net.layers[0].dataset.skipped == 2
        finally:
            net.close()
        named = [r.getMessage() for r in caplog.records if "skipping image" in r.getMessage()]
        assert len(named) == 1 and "004.png" in named[0], named     # the first, every time
    for a, b in zip(outs[1], outs[4]):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])


@pytest.mark.parametrize("workers", [1, 4])
def test_the_first_bad_image_of_a_batch_is_the_one_named(tmp_path, workers):
    source, _ = write_pictures(tmp_path, 40, ".jpg")
    for name in ("013.jpg", "030.jpg"):                  # two bad ones in the first batch
        path = tmp_path / name
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) * 2 // 3])        # the header whole, the pixels cut
    net = image_net(source, workers, phase="TEST", batch_size=40)
    try:
        with pytest.raises(DataError, match=r"013\.jpg.*truncated or damaged") as caught:
            net.forward()
        assert "030.jpg" not in str(caught.value)
        with pytest.raises(DataError, match=r"013\.jpg"):      # and again: nothing hangs
            net.forward()
    finally:
        net.close()


def _cli_folder(tmp_path, count=60, **solver):
    source, _ = write_pictures(tmp_path / "imgs", count, ".jpg", size=(32, 32))
    net = {"name": "tiny", "layers": [
        {"name": "data", "type": "ImageData", "top": ["data", "label"], "source": str(source),
         "batch_size": 16, "shuffle": True, "num_workers": 3,
         "transform": {"crop_size": 28, "mirror": True, "scale": 0.00390625}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 4},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net))
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump({
        "net": "net.yaml", "base_lr": 0.01, "max_iter": 20, "snapshot_prefix": "out/run",
        **solver}))
    return tmp_path


def train_with_a_truncated_jpeg(folder, index: int) -> None:
    """Cut image ``index`` of the folder's list short, train: exit status 2 and one message
    naming the file, its line in the list and the layer (not one per decoding worker)."""
    name = f"{index:03d}.jpg"
    bad = folder / "imgs" / name
    raw = bad.read_bytes()
    bad.write_bytes(raw[:len(raw) * 2 // 3])
    done = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver", "solver.yaml"],
                          cwd=folder, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert name in done.stderr and "truncated or damaged" in done.stderr
    assert f"line {index + 1}" in done.stderr and "layer 'data'" in done.stderr
    assert done.stderr.count(name) == 1


def test_a_corrupt_jpeg_among_many_ends_training_with_exit_2(tmp_path):
    train_with_a_truncated_jpeg(_cli_folder(tmp_path), 37)


def interrupt_training(folder, while_training=lambda process: None):
    """Train in ``folder`` until the log has two rows, call ``while_training(process)``,
    press Ctrl-C; the run must end cleanly (exit 0, no traceback). Returns what
    ``while_training`` returned."""
    process = subprocess.Popen([sys.executable, "-m", "solverkit", "train", "--solver",
                                "solver.yaml"], cwd=folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        log = folder / "out" / "run_log.csv"
        while not log.exists() or len(log.read_text().splitlines()) < 3:
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.05)
        seen = while_training(process)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    return seen


@pytest.mark.slow
def test_ctrl_c_ends_a_run_decoding_on_threads(tmp_path):
    interrupt_training(_cli_folder(tmp_path, max_iter=10_000_000, snapshot=0))


def test_a_script_that_never_closes_its_net_exits(tmp_path):
    source, _ = write_pictures(tmp_path, 30, ".jpg")
    script = f"""
import solverkit as sk
net = sk.Net({{"name": "n", "layers": [{{"name": "data", "type": "ImageData",
    "top": ["data", "label"], "source": {str(source)!r}, "batch_size": 10,
    "num_workers": 4, "prefetch": 3}}]}})
net.forward()
print("done")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert not done.stderr


@pytest.mark.slow
def test_resume_is_bit_exact_decoding_on_threads(tmp_path, resume_matches):
    source, _ = write_pictures(tmp_path / "imgs", 30, ".jpg")
    layer = {"name": "data", "type": "ImageData", "top": ["data", "label"],
             "source": str(source), "batch_size": 7, "num_workers": 3, **TRAIN}
    resume_matches(tmp_path, {"name": "tiny", "layers": [
        layer,
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 4,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]})
