"""HDF5Data (Caffe's order: files in list order, rows in file order, wrap; shuffle within and
across files; exact resume) and HDF5Output (batches written once, never over a file)."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError, DataError

h5py = pytest.importorskip("h5py")


def write_parts(folder, rng, sizes=(5, 3), names=("data", "label", "extra")):
    arrays = {"data": rng.standard_normal((sum(sizes), 2, 3)),
              "label": np.arange(sum(sizes), dtype=np.float64),
              "extra": rng.standard_normal((sum(sizes), 4))}
    start = 0
    lines = []
    for k, size in enumerate(sizes):
        with h5py.File(folder / f"part{k}.h5", "w") as f:
            for name in names:
                f[name] = arrays[name][start:start + size]
        lines.append(f"part{k}.h5")
        start += size
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return arrays


def hdf5_net(folder, *, tops=("data", "label"), batch_size=4, shuffle=False, seed=0):
    spec = {"name": "h5", "dtype": "float64", "layers": [
        {"name": "data", "type": "HDF5Data", "top": list(tops), "source": "list.txt",
         "batch_size": batch_size, "shuffle": shuffle}]}
    path = folder / "net.yaml"
    import yaml
    path.write_text(yaml.safe_dump(spec))
    return sk.Net(path, seed=seed)


def test_batches_follow_the_files_in_order_and_wrap(tmp_path, rng):
    arrays = write_parts(tmp_path, rng)
    net = hdf5_net(tmp_path, tops=("data", "label", "extra"))
    assert net.blobs["data"].shape == (4, 2, 3) and net.blobs["extra"].shape == (4, 4)
    expected_rows = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]   # a batch spans both files
    for rows in expected_rows:
        net.forward()
        for name in ("data", "label", "extra"):
            np.testing.assert_array_equal(net.blobs[name].data, arrays[name][rows])
    assert net.layers[0].batches_per_epoch == 2 and net.layers[0].num_samples == 8


def test_shuffle_keeps_each_files_rows_together_and_resumes_exactly(tmp_path, rng):
    write_parts(tmp_path, rng, sizes=(5, 3, 4))
    net = hdf5_net(tmp_path, shuffle=True, batch_size=3)
    labels = []
    for _ in range(4):                                  # one pass: 12 rows
        net.forward()
        labels.extend(net.blobs["label"].data.astype(int).tolist())
    assert sorted(labels) == list(range(12))
    files = [0 if v < 5 else 1 if v < 8 else 2 for v in labels]
    runs = [f for k, f in enumerate(files) if k == 0 or f != files[k - 1]]
    assert sorted(runs) == [0, 1, 2]                    # each file's rows come together
    state = {k: np.array(v) for k, v in net.layers[0].get_state().items()}
    ahead = []
    for _ in range(5):
        net.forward()
        ahead.append(net.blobs["label"].data.copy())
    other = hdf5_net(tmp_path, shuffle=True, batch_size=3, seed=7)
    other.layers[0].set_state(state)
    for batch in ahead:
        other.forward()
        np.testing.assert_array_equal(other.blobs["label"].data, batch)


def test_a_missing_dataset_or_list_names_the_file(tmp_path, rng):
    write_parts(tmp_path, rng, names=("data", "label"))
    with pytest.raises(DataError, match="part0.h5.*no dataset 'extra'"):
        hdf5_net(tmp_path, tops=("data", "extra"))
    (tmp_path / "list.txt").unlink()
    with pytest.raises(DataError, match="list.txt"):
        hdf5_net(tmp_path)


def test_hdf5_output_writes_every_batch_once_and_never_over_a_file(tmp_path, rng):
    spec = {"name": "out", "dtype": "float32", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "y"], "shape": [[2, 3], [2]]},
        {"name": "save", "type": "HDF5Output", "bottom": ["x", "y"],
         "file_name": str(tmp_path / "out.h5")}]}
    net = sk.Net(spec)
    batches = [(rng.standard_normal((2, 3)), np.array([1.0, 2.0])) for _ in range(3)]
    for x, y in batches:
        net.forward(x=x, y=y)
    assert not (tmp_path / "out.h5").exists()          # written when the net closes
    net.close()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["data"][()],
                                      np.concatenate([x for x, _ in batches]).astype(np.float32))
        np.testing.assert_array_equal(f["label"][()], np.tile([1.0, 2.0], 3))
    assert list(tmp_path.glob(".out.h5.*")) == []
    with pytest.raises(ConfigError, match="out.h5.*never replaces"):
        sk.Net(spec)
