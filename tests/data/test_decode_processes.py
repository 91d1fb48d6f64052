"""Decoding in worker processes (``worker_type: processes``): the batches of threads and of
one thread bit for bit, before and after a resume; bad images and a killed worker end in
one error naming the source, with no process or shared memory left behind; workers run
one thread each; a CLI run trains to the loss of a run decoding on threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import yaml
from test_decode_workers import (
    TRAIN,
    batches,
    image_net,
    interrupt_training,
    train_with_a_truncated_jpeg,
    write_pictures,
)

import solverkit as sk
from solverkit.data import decode_pool
from solverkit.data.image_sources import read_image_list
from solverkit.errors import ConfigError, DataError

pytestmark = pytest.mark.skipif(not decode_pool.available(),
                                reason="worker processes need memfd_create (Linux)")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def shared_memory_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """21 colour JPEGs and their list; (list, pixels OpenCV reads)."""
    return write_pictures(tmp_path_factory.mktemp("jpegs"), 21, ".jpg")


@pytest.fixture(scope="module")
def pooled(pictures):
    """One image source decoding on 3 worker processes, shared by the tests that only
    take batches from it (a start costs some 0.3-1 s)."""
    source = read_image_list(pictures[0], None)
    source.use_workers(3, "processes")
    yield source
    pids = source.worker_pids
    source.close()
    assert not any(alive(pid) for pid in pids)


def test_processes_take_what_one_thread_decodes(pooled, pictures):
    serial = read_image_list(pictures[0], None)
    order = np.random.default_rng(0).permutation(21)
    for rows in (order[:8], order, order[:2], np.array([5, 5, 0])):    # more rows than runs, fewer
        data, labels = pooled.take(rows)
        expected, expected_labels = serial.take(rows)
        np.testing.assert_array_equal(data, expected)
        np.testing.assert_array_equal(labels, expected_labels)
    assert len(pooled.worker_pids) == 3 and pooled.processes


def test_workers_run_one_thread_each_in_a_fresh_interpreter(pooled):
    pooled.take(np.arange(6))
    for pid in pooled.worker_pids:
        with open(f"/proc/{pid}/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
        assert int(status["Threads"]) == 1
        assert int(status["PPid"]) == os.getpid()
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if item)
        assert environ[b"OMP_NUM_THREADS"] == b"1" and environ[b"OPENBLAS_NUM_THREADS"] == b"1"
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert handle.read().split(b"\0")[1] == b"-c"          # not a fork of pytest


def test_batches_are_those_of_threads_and_one_thread_bit_for_bit_and_resume(pictures):
    source, _ = pictures
    nets = {"serial": image_net(source, 1, **TRAIN),
            "threads": image_net(source, 3, worker_type="threads", **TRAIN),
            "processes": image_net(source, 3, worker_type="processes", prefetch=2, **TRAIN),
            "in_step": image_net(source, 2, worker_type="processes", prefetch=0, **TRAIN)}
    try:
        got = {name: batches(net, 7) for name, net in nets.items()}     # wraps twice
        state = nets["processes"].layers[0].get_state()
        resumed = image_net(source, 3, worker_type="processes", **TRAIN)
        try:
            resumed.layers[0].set_state(state)
            after = batches(resumed, 3)
        finally:
            resumed.close()
        more = batches(nets["serial"], 3)
    finally:
        for net in nets.values():
            net.close()
    for name in ("threads", "processes", "in_step"):
        for mine, theirs in zip(got[name], got["serial"]):
            np.testing.assert_array_equal(mine["data"], theirs["data"])
            np.testing.assert_array_equal(mine["label"], theirs["label"])
    for mine, theirs in zip(after, more):
        np.testing.assert_array_equal(mine["data"], theirs["data"])
        np.testing.assert_array_equal(mine["label"], theirs["label"])
    assert got["serial"][0]["data"].shape == (8, 3, 16, 16)


def test_a_rank_s_slice_decoded_in_processes_is_that_of_threads(pictures):
    outs = {}
    for kind in ("threads", "processes"):
        net = image_net(pictures[0], 2, worker_type=kind, **TRAIN)
        try:
            net.layers[0].set_shard(1, 2)           # rank 1 of 2: rows 8..15 of 16
            outs[kind] = batches(net, 3)
        finally:
            net.close()
    for a, b in zip(outs["threads"], outs["processes"]):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_encoded_lmdb_records_with_a_bad_one_decode_alike_in_processes(tmp_path, caplog):
    from solverkit.caffe.messages import encode_datum
    _, decoded = write_pictures(tmp_path / "pictures", 12)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, picture in enumerate(decoded):
            png = cv2.imencode(".png", picture.transpose(1, 2, 0))[1].tobytes()
            txn.put(b"%03d" % i, encode_datum(png[:60] if i == 7 else png, i % 4, encoded=True))
    env.close()
    outs, skipped = {}, {}
    for kind in ("threads", "processes"):
        caplog.clear()
        net = sk.Net({"name": "db", "layers": [{
            "name": "data", "type": "Data", "top": ["data", "label"], "backend": "LMDB",
            "source": str(tmp_path / "db"), "batch_size": 6, "num_workers": 2,
            "worker_type": kind, "skip_bad": True, "shuffle": True,
            "transform": {"crop_size": 12, "mirror": True}}]}, seed=1)
        try:
            with caplog.at_level("WARNING", logger="solverkit"):
                outs[kind] = batches(net, 5)
            skipped[kind] = net.layers[0].dataset.skipped
        finally:
            net.close()
        named = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
        assert len(named) == 1 and "'007'" in named[0], named
    assert skipped == {"threads": 1, "processes": 1}
    for a, b in zip(outs["threads"], outs["processes"]):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_a_bad_image_in_a_worker_is_the_error_threads_give(tmp_path):
    source, _ = write_pictures(tmp_path, 24, ".jpg")
    for name in ("013.jpg", "020.jpg"):
        path = tmp_path / name
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) * 2 // 3])
    messages = {}
    for kind in ("threads", "processes"):
        net = image_net(source, 3, phase="TEST", batch_size=24, worker_type=kind)
        try:
            with pytest.raises(DataError) as caught:
                net.forward()
            messages[kind] = str(caught.value)
            with pytest.raises(DataError, match=r"013\.jpg"):      # and again: nothing hangs
                net.forward()
        finally:
            net.close()
    assert messages["processes"] == messages["threads"]
    assert "013.jpg" in messages["processes"] and "line 14" in messages["processes"]
    assert "layer 'data'" in messages["processes"] and "020.jpg" not in messages["processes"]


def test_a_killed_worker_is_one_error_naming_the_source_and_leaves_nothing(pictures):
    shm_before = shared_memory_entries()
    net = image_net(pictures[0], 2, worker_type="processes", prefetch=0, **TRAIN)
    try:
        net.forward()
        pids = net.layers[0].dataset.worker_pids
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        os.kill(pids[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(DataError) as caught:
            net.forward()
        assert time.monotonic() - start < 10
        message = str(caught.value)
        assert f"process {pids[1]}" in message and "SIGKILL" in message
        assert str(pictures[0]) in message and "layer 'data'" in message
        assert not any(alive(pid) for pid in pids)          # the other one was stopped too
        assert net.forward()["data"].shape == (8, 3, 16, 16)    # a new pool starts
        pids = net.layers[0].dataset.worker_pids
    finally:
        net.close()
    assert not any(alive(pid) for pid in pids)
    assert shared_memory_entries() <= shm_before


def test_auto_decodes_many_small_records_in_processes_and_large_ones_on_threads(pictures):
    from solverkit.data.image_sources import ImageFiles
    from solverkit.data.records import PROCESS_MIN_RECORDS, worker_kind
    path = pictures[0].parent / "000.jpg"

    def source(count, shape):
        return ImageFiles([path] * count, np.zeros(count, np.int64), "list.txt", shape=shape)

    many_small = source(PROCESS_MIN_RECORDS, (3, 20, 24))
    assert worker_kind(2, "auto", many_small) == "processes"
    assert worker_kind(1, "auto", many_small) == "threads"
    assert worker_kind(2, "auto", source(PROCESS_MIN_RECORDS - 1, (3, 20, 24))) == "threads"
    assert worker_kind(2, "auto", source(PROCESS_MIN_RECORDS, (3, 256, 256))) == "threads"
    assert worker_kind(2, "threads", many_small) == "threads"
    assert worker_kind(1, "processes", source(3, (3, 256, 256))) == "processes"
    # and a layer over the 21 pictures decodes on threads unless told otherwise
    net = image_net(pictures[0], 2)
    try:
        net.forward()
        assert not net.layers[0].dataset.processes and net.layers[0].dataset.worker_pids == []
    finally:
        net.close()


def test_a_bad_worker_type_is_a_config_error(pictures):
    with pytest.raises(ConfigError, match="worker_type"):
        image_net(pictures[0], 2, worker_type="forks")


def _cli_run(tmp_path, kind: str, max_iter: int = 12, **solver):
    folder = tmp_path / kind
    source, _ = write_pictures(folder / "imgs", 40, ".jpg", size=(24, 24))
    net = {"name": "tiny", "layers": [
        {"name": "data", "type": "ImageData", "top": ["data", "label"], "source": str(source),
         "batch_size": 10, "shuffle": True, "num_workers": 2, "worker_type": kind,
         "transform": {"crop_size": 20, "mirror": True, "scale": 0.00390625}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 4,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}
    (folder / "net.yaml").write_text(yaml.safe_dump(net))
    (folder / "solver.yaml").write_text(yaml.safe_dump({
        "net": "net.yaml", "base_lr": 0.05, "max_iter": max_iter, "random_seed": 5,
        "display": 1, "snapshot_prefix": "out/run", **solver}))
    return folder


def test_cli_training_decoding_in_processes_reaches_the_loss_of_threads(tmp_path):
    losses = {}
    for kind in ("threads", "processes"):
        folder = _cli_run(tmp_path, kind)
        done = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver",
                               "solver.yaml"], cwd=folder, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        log = (folder / "out" / "run_log.csv").read_text().splitlines()
        assert log[0].startswith("iter,phase,name,value,")
        losses[kind] = [line.split(",")[:4] for line in log[1:]]    # not the seconds
    assert len(losses["threads"]) >= 12
    assert losses["processes"] == losses["threads"]      # every step's loss, to the bit


def test_cli_corrupt_image_in_a_worker_exits_2(tmp_path):
    train_with_a_truncated_jpeg(_cli_run(tmp_path, "processes"), 31)


def test_ctrl_c_ends_a_run_decoding_in_processes_and_its_workers(tmp_path):
    folder = _cli_run(tmp_path, "processes", max_iter=10_000_000, snapshot=0)
    shm_before = shared_memory_entries()

    def workers(process):
        return [int(pid) for task in Path(f"/proc/{process.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]   # any thread's

    children = interrupt_training(folder, workers)
    assert len(children) >= 2
    time.sleep(0.2)
    assert not any(alive(pid) for pid in children)
    assert shared_memory_entries() <= shm_before


def _script(source, then: str) -> str:
    return f"""
import sys, time
import solverkit as sk
net = sk.Net({{"name": "n", "layers": [{{"name": "data", "type": "ImageData",
    "top": ["data", "label"], "source": {str(source)!r}, "batch_size": 10, "num_workers": 2,
    "worker_type": "processes", "prefetch": 3}}]}})
net.forward()
print(*net.layers[0].dataset.worker_pids, flush=True)
{then}
"""


def test_a_script_that_never_closes_its_net_ends_its_workers_quietly(pictures):
    done = subprocess.run([sys.executable, "-W", "always", "-c", _script(pictures[0], "")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def test_workers_end_when_the_training_process_is_killed(pictures):
    process = subprocess.Popen([sys.executable, "-c", _script(pictures[0], "time.sleep(60)")],
                               stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in process.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in pids)      # no orphans
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
