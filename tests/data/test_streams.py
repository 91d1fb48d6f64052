"""npy and HDF5 files read a batch at a time give exactly the batches of the same file read
whole; what they hold in memory does not include the samples."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import solverkit as sk
from solverkit.data import sources
from solverkit.data.streams import Hdf5Stream, NpyStream, runs


def test_runs_cover_the_indices():
    spans, count, inverse = runs(np.array([5, 3, 4, 9, 3, 0]))
    assert spans == [(0, 1), (3, 6), (9, 10)] and count == 5
    distinct = np.concatenate([np.arange(a, b) for a, b in spans])
    np.testing.assert_array_equal(distinct[inverse], [5, 3, 4, 9, 3, 0])


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 2, 3, 4)).astype(np.float32)
    y = rng.integers(0, 5, 53)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "big_endian.npy", x.astype(">f4"))
    np.save(tmp_path / "y.npy", y)
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        handle.create_dataset("data", data=x, chunks=(4, 2, 3, 4))
        handle["label"] = y
    return tmp_path, x, y


@pytest.mark.parametrize("name,kind", [("x.npy", NpyStream), ("big_endian.npy", NpyStream),
                                       ("d.h5", Hdf5Stream)])
def test_streamed_batches_equal_whole_file_batches(files, data_net, take, name, kind):
    folder, _, _ = files
    fields = {"source": str(folder / name), "batch_size": 10, "shuffle": True,
              "transform": {"mirror": True}}
    if name.endswith(".npy"):
        fields["label_source"] = str(folder / "y.npy")
    streamed = data_net(stream=True, prefetch=2, **fields)
    whole = data_net(stream=False, **fields)
    assert isinstance(streamed.layers[0].dataset, kind)
    assert not hasattr(streamed.layers[0].dataset, "data")          # samples not held
    a, la = take(streamed, 12)                                      # > 2 epochs
    b, lb = take(whole, 12)
    for u, v in zip(a + la, b + lb):
        np.testing.assert_array_equal(u, v)


def test_large_files_stream_by_default(files, data_net, monkeypatch):
    folder, _, _ = files
    monkeypatch.setattr(sources, "STREAM_MIN_BYTES", 1000)
    net = data_net(source=str(folder / "x.npy"), label_source=str(folder / "y.npy"),
                   batch_size=4)
    assert isinstance(net.layers[0].dataset, NpyStream)
    assert net.layers[0].feeder.depth > 0                  # reads overlap compute


def test_streamed_checks_happen_per_batch(tmp_path, data_net):
    x = np.ones((20, 3), np.float32)
    x[13, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    net = data_net(source=str(tmp_path / "x.npy"), batch_size=5, stream=True, top=("data",))
    net.forward()
    net.forward()
    with pytest.raises(sk.DataError, match=r"x.npy'?: sample 13 contains NaN"):
        net.forward()


def test_truncated_npy_is_named(tmp_path, data_net):
    np.save(tmp_path / "x.npy", np.zeros((100, 10), np.float32))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(sk.DataError, match="x.npy"):
        data_net(source=str(tmp_path / "x.npy"), batch_size=5, stream=True, top=("data",))


def test_stream_is_only_for_npy_and_hdf5(tmp_path, data_net):
    (tmp_path / "t.csv").write_text("1,2\n3,4\n")
    with pytest.raises(sk.DataError, match="stream: true is for npy and HDF5"):
        data_net(source=str(tmp_path / "t.csv"), batch_size=1, stream=True)
