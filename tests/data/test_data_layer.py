"""The Data layer: in-memory, npz and built-in sources, batches and wrap-around, shuffling,
transforms, exact position save/restore with prefetching, the prefetch thread."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import yaml

import solverkit as sk


def _images(n=10, c=2, h=5, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w)).astype(np.uint8)


# ----------------------------------------------------------------- sources and batches
def test_in_memory_pair_batches_wrap_like_caffe(data_net, take):
    x = _images(10)
    y = np.arange(10) % 3
    net = data_net(source=(x, y), batch_size=4, prefetch=2)
    data, labels = take(net, 4)
    order = np.r_[0:4, 4:8, 8:10, 0:2, 2:6]           # the third batch wraps into epoch 2
    for i in range(4):
        np.testing.assert_array_equal(data[i], x[order[4 * i:4 * i + 4]].astype(np.float32))
        np.testing.assert_array_equal(labels[i], y[order[4 * i:4 * i + 4]])
    assert data[0].dtype == np.float32 and labels[0].dtype == np.float32
    layer = net.layers[0]
    assert layer.batches_per_epoch == 3 and layer.epoch == 1
    assert net.blobs["label"].shape == (4,)


def test_dict_source_keys_and_net_dtype(data_net, take):
    x = np.random.default_rng(1).normal(size=(6, 3))
    net = data_net(source={"feat": x, "target": np.arange(6)}, x_key="feat", y_key="target",
                   batch_size=3, dtype="float64", prefetch=0)
    data, labels = take(net, 2)
    np.testing.assert_array_equal(np.concatenate(data), x)
    assert data[0].dtype == np.float64 and labels[1].dtype == np.float64
    np.testing.assert_array_equal(np.concatenate(labels), np.arange(6))


def test_data_only_top(data_net, take):
    x = _images(5)
    net = data_net(source=(x,), batch_size=5, top=["data"])
    data, _ = take(net, 1)
    np.testing.assert_array_equal(data[0], x)


def test_npz_source_relative_to_net_file(tmp_path, take):
    x, y = _images(7), np.arange(7)
    (tmp_path / "sets").mkdir()
    np.savez(tmp_path / "sets" / "small.npz", images=x, classes=y)
    net_file = tmp_path / "net.yaml"
    net_file.write_text(yaml.safe_dump({"layers": [{
        "name": "data", "type": "Data", "top": ["data", "label"], "source": "sets/small.npz",
        "x_key": "images", "y_key": "classes", "batch_size": 7}]}))
    net = sk.Net(str(net_file))
    try:
        data, labels = take(net, 1)
    finally:
        net.close()
    np.testing.assert_array_equal(data[0], x)
    np.testing.assert_array_equal(labels[0], y)


def test_builtin_digits(data_net, take):
    train = data_net(source="builtin:digits/train", batch_size=1437, prefetch=0)
    test = data_net(source="builtin:digits/test", batch_size=360, phase="TEST", prefetch=0)
    (x_train,), (y_train,) = take(train, 1)
    (x_test,), (y_test,) = take(test, 1)
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    both = np.concatenate([x_train, x_test])
    assert both.min() == 0 and both.max() == 16 and np.all(both == np.round(both))
    labels = np.concatenate([y_train, y_test]).astype(int)
    assert set(labels) == set(range(10))
    # every class is in both splits in roughly its share (the permutation mixed the writers)
    share = np.bincount(y_test.astype(int), minlength=10) / 360
    assert share.min() > 0.05 and share.max() < 0.15


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
def test_builtin_digits_are_sklearns_permuted(data_net, take):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(1797)
    net = data_net(source="builtin:digits/test", batch_size=360, prefetch=0)
    (x,), (y,) = take(net, 1)
    np.testing.assert_array_equal(x[:, 0], digits.images[order[1437:]])
    np.testing.assert_array_equal(y, digits.target[order[1437:]])


# ----------------------------------------------------------------- shuffling
def _epoch_orders(net, take, batch_count):
    _, labels = take(net, batch_count)
    return np.concatenate(labels).astype(int)


def test_shuffle_each_sample_once_per_epoch_and_seeded(data_net, take):
    n = 10
    source = (_images(n), np.arange(n))
    stream = _epoch_orders(data_net(source=source, batch_size=4, shuffle=True, seed=3), take, 10)
    epochs = stream.reshape(4, n)                     # 40 samples = 4 epochs, batches wrap
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert len({tuple(order) for order in epochs}) > 1, "reshuffled every epoch"
    again = _epoch_orders(data_net(source=source, batch_size=4, shuffle=True, seed=3), take, 10)
    np.testing.assert_array_equal(stream, again)
    other = _epoch_orders(data_net(source=source, batch_size=4, shuffle=True, seed=4), take, 10)
    assert not np.array_equal(stream, other)
    plain = _epoch_orders(data_net(source=source, batch_size=4, seed=3), take, 10)
    np.testing.assert_array_equal(plain, np.tile(np.arange(n), 4))


# ----------------------------------------------------------------- transforms
def test_transform_order_mean_then_scale(data_net, take):
    x = _images(4, c=3)
    mean = [10.0, 20.0, 30.0]
    net = data_net(source=(x, np.zeros(4)), batch_size=4,
                   transform={"mean_value": mean, "scale": 0.5})
    (data,), _ = take(net, 1)
    expected = (x.astype(np.float64) - np.array(mean)[:, None, None]) * 0.5
    np.testing.assert_allclose(data, expected, rtol=1e-6)


def test_mean_file_and_centre_crop_in_test(tmp_path, data_net, take):
    x = _images(3, c=2, h=6, w=7)
    mean = np.random.default_rng(5).uniform(0, 255, size=(1, 2, 6, 7)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    net = data_net(phase="TEST", source=(x, np.zeros(3)), batch_size=3,
                   transform={"mean_file": str(tmp_path / "mean.npy"), "crop_size": 4,
                              "mirror": True, "scale": 2.0})
    (data,), _ = take(net, 1)
    top, left = (6 - 4) // 2, (7 - 4) // 2
    window = (slice(None), slice(None), slice(top, top + 4), slice(left, left + 4))
    expected = (x[window].astype(np.float64) - mean[0][window[1:]]) * 2.0
    np.testing.assert_allclose(data, expected, rtol=1e-5)


def test_random_crop_and_mirror_in_train(data_net, take):
    n, crop = 64, 3
    x = _images(n, c=2, h=5, w=6, seed=7)
    net = data_net(source=(x, np.arange(n)), batch_size=n, seed=2,
                   transform={"crop_size": crop, "mirror": True})
    (data,), (labels,) = take(net, 1)
    assert data.shape == (n, 2, crop, crop)
    offsets, mirrored = set(), 0
    for out, label in zip(data, labels.astype(int)):
        found = [(h, w, flip) for h in range(5 - crop + 1) for w in range(6 - crop + 1)
                 for flip in (False, True)
                 if np.array_equal(out, (x[label, :, h:h + crop, w:w + crop][..., ::-1] if flip
                                         else x[label, :, h:h + crop, w:w + crop]))]
        assert found, "each sample is one window of its image, maybe mirrored"
        offsets.add(found[0][:2])
        mirrored += found[0][2]
    assert len(offsets) > 4 and 16 < mirrored < 48


# ----------------------------------------------------------------- position and threads
@pytest.mark.parametrize("prefetch", [0, 3, None])
def test_state_restores_the_following_batches_exactly(data_net, take, prefetch):
    source = (_images(11, h=6, w=6), np.arange(11))
    fields = {"source": source, "batch_size": 4, "shuffle": True, "prefetch": prefetch,
              "transform": {"crop_size": 4, "mirror": True}}
    net = data_net(seed=5, **fields)
    take(net, 3)
    state = net.layers[0].get_state()
    assert set(state) == {"epoch", "cursor", "order", "rng"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["epoch"]) == 1 and int(state["cursor"]) == 1     # 12 samples of 11 taken
    future, future_labels = take(net, 6)

    fresh = data_net(seed=99, **fields)                # another seed: only the state matters
    take(fresh, 1)                                     # and prefetched work is thrown away
    fresh.layers[0].set_state(state)
    replay, replay_labels = take(fresh, 6)
    for a, b in zip(future + future_labels, replay + replay_labels):
        np.testing.assert_array_equal(a, b)

    net.layers[0].set_state(state)                     # rewinding the same layer works too
    again, _ = take(net, 6)
    for a, b in zip(future, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_batch_given_back_is_reused_and_the_batches_stay_the_same(data_net, prefetch):
    source = (_images(11, h=6, w=6), np.arange(11))
    fields = {"source": source, "batch_size": 4, "shuffle": True, "prefetch": prefetch,
              "transform": {"crop_size": 4, "mirror": True, "scale": 0.5}}
    plain = data_net(seed=5, **fields).layers[0].feeder
    expected = [plain.next()[0] for _ in range(6)]          # never given back: all new
    assert not any(np.shares_memory(a, b) for a in expected for b in expected if a is not b)
    feeder = data_net(seed=5, **fields).layers[0].feeder
    given_back = []
    for want in expected:
        data, _ = feeder.next()
        np.testing.assert_array_equal(data, want)
        given_back.append(data.__array_interface__["data"][0])
        feeder.recycle(data)
    assert len(set(given_back)) < len(given_back)             # memory went round again
    assert not any(np.shares_memory(data, source[0]) for data in expected)


def test_state_of_another_data_set_is_refused(data_net):
    net = data_net(source=(_images(5), np.arange(5)), batch_size=2)
    other = data_net(source=(_images(6), np.arange(6)), batch_size=2)
    with pytest.raises(sk.SolverkitError, match="6"):
        other.layers[0].set_state(net.layers[0].get_state())


def test_shards_together_see_the_larger_batch(data_net, take):
    source = (_images(9, h=5, w=5), np.arange(9))
    fields = {"source": source, "shuffle": True, "transform": {"crop_size": 3, "mirror": True}}
    whole, whole_labels = take(data_net(seed=1, batch_size=4, **fields), 5)
    ranks = []
    for rank in range(2):
        net = data_net(seed=1, batch_size=2, **fields)
        net.layers[0].set_shard(rank, 2)
        ranks.append(take(net, 5))
    for step in range(5):
        np.testing.assert_array_equal(
            np.concatenate([ranks[0][0][step], ranks[1][0][step]]), whole[step])
        np.testing.assert_array_equal(
            np.concatenate([ranks[0][1][step], ranks[1][1][step]]), whole_labels[step])


def test_error_in_prefetch_thread_reaches_the_caller(data_net):
    net = data_net(source=(_images(4), np.arange(4)), batch_size=2, prefetch=2)
    layer = net.layers[0]

    def broken(x, choices=None, out=None):
        raise ValueError("disk on fire")

    layer.transform.apply = broken
    with pytest.raises(ValueError, match="disk on fire"):
        net.forward()


def test_close_ends_the_thread(data_net):
    import threading

    net = data_net(source=(_images(4), np.arange(4)), batch_size=2, prefetch=2)
    net.forward()
    names = [t.name for t in threading.enumerate()]
    assert "solverkit-data-data" in names
    net.close()
    assert "solverkit-data-data" not in [t.name for t in threading.enumerate()]
    net.forward()                                       # a closed layer restarts on demand


@pytest.mark.parametrize("spare", [True, False])
def test_default_prefetch_runs_a_thread_only_with_a_spare_core(data_net, take, monkeypatch,
                                                                spare):
    import threading

    from solverkit.data import feeder

    monkeypatch.setattr(feeder, "spare_core", lambda: spare)
    source = (_images(7), np.arange(7))
    net = data_net(source=source, batch_size=3, shuffle=True)
    data, labels = take(net, 5)
    running = "solverkit-data-data" in [t.name for t in threading.enumerate()]
    assert running == spare
    assert net.layers[0].feeder.depth == (feeder.AUTO_PREFETCH if spare else 0)
    explicit, explicit_labels = take(data_net(source=source, batch_size=3, shuffle=True,
                                              prefetch=0), 5)
    for a, b in zip(data + labels, explicit + explicit_labels):     # the same batches
        np.testing.assert_array_equal(a, b)


def test_spare_core_counts_threads_and_ranks(monkeypatch):
    from solverkit import threads
    from solverkit.data.feeder import spare_core
    from solverkit.parallel import SIZE_VARIABLES

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.delenv("SOLVERKIT_MPI", raising=False)
    for name in (*SIZE_VARIABLES, "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_threads", 3)
    assert spare_core()
    monkeypatch.setattr(threads, "_threads", 4)
    assert not spare_core()
    monkeypatch.setattr(threads, "_threads", 2)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")         # two ranks of 2 threads
    assert not spare_core()


def test_a_failed_batch_in_the_caller_is_made_again(data_net, take):
    fields = {"source": (_images(9), np.arange(9)), "batch_size": 2, "shuffle": True,
              "prefetch": 0, "transform": {"crop_size": 3, "mirror": True}}
    expected, _ = take(data_net(**fields), 3)
    net = data_net(**fields)
    layer = net.layers[0]
    take(net, 1)
    apply = layer.transform.apply

    def broken(x, choices=None, out=None):
        raise ValueError("disk on fire")

    layer.transform.apply = broken
    with pytest.raises(ValueError, match="disk on fire"):
        net.forward()
    layer.transform.apply = apply
    again, _ = take(net, 2)
    for a, b in zip(expected[1:], again):
        np.testing.assert_array_equal(a, b)


def test_prefetch_overlaps_loading_with_compute(data_net):
    """Loading a batch and computing on one each take 30 ms; with the next batch prepared
    during the compute, 8 steps take about 8 x 30 ms, not 8 x 60 ms."""
    import time

    net = data_net(source=(_images(8), np.arange(8)), batch_size=2, prefetch=2)
    layer = net.layers[0]
    load = layer.transform.apply

    def slow_load(x, choices=None, out=None):
        time.sleep(0.03)
        return load(x, choices)

    layer.transform.apply = slow_load
    net.forward()                                       # the first batch cannot overlap
    start = time.perf_counter()
    for _ in range(8):
        time.sleep(0.03)                                # the net's compute
        net.forward()
    assert time.perf_counter() - start < 8 * 0.03 * 1.6


def test_a_forgotten_net_stops_its_thread_when_collected():
    import gc
    import threading
    import time

    net = sk.Net({"layers": [{"name": "forgotten", "type": "Data", "top": "data",
                              "source": (_images(4),), "batch_size": 2}]})
    net.forward()
    del net
    gc.collect()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(
            t.name == "solverkit-data-forgotten" for t in threading.enumerate()):
        time.sleep(0.02)
    assert not any(t.name == "solverkit-data-forgotten" for t in threading.enumerate())


def test_a_label_out_of_the_classifiers_range_names_the_data_file_and_the_net_file(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4), np.float32), y=np.arange(6) * 2)
    spec = tmp_path / "net.yaml"
    spec.write_text(yaml.safe_dump({"name": "n", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": "d.npz",
         "batch_size": 6, "prefetch": 0},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 5},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}))
    net = sk.Net(str(spec), phase="TRAIN", seed=0)
    try:
        with pytest.raises(sk.SolverkitError) as caught:
            net.forward()
    finally:
        net.close()
    message = str(caught.value)
    assert message.startswith(f"{spec}:") and "layer 'loss'" in message
    assert "label 6 is outside 0..4" in message
    assert f"'{tmp_path / 'd.npz'}' (read by layer 'data')" in message
