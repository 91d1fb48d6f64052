"""The source format registry and its one dispatch: a class format recognised by its
content, ``format:`` naming a registered format, fields only other formats read, and the
bounds on what a data file may unpack to."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import solverkit as sk
from solverkit.data import sources
from solverkit.data.formats import FileFormat, SourceFormat, register_source_format, source_formats

MAGIC = b"SKV1"


@register_source_format("skv")
class Skv(FileFormat):
    """A test format recognised by its first bytes: ``SKV1``, a uint32 count and width, then
    float32 rows whose last value is the label."""

    class Params(SourceFormat.Params):
        label_column: int | None = -1

    @classmethod
    def detect(cls, target, params) -> bool:
        with open(target, "rb") as handle:
            return handle.read(4) == MAGIC

    def read(self, path, params):
        raw = path.read_bytes()
        n, width = (int(v) for v in np.frombuffer(raw[4:12], dtype="<u4"))
        table = np.frombuffer(raw[12:], dtype="<f4").reshape(n, width)
        if params.label_column is None:
            return table, None
        return np.delete(table, params.label_column % width, axis=1), table[:, params.label_column]


def skv_bytes(table: np.ndarray) -> bytes:
    return MAGIC + np.array(table.shape, "<u4").tobytes() + table.astype("<f4").tobytes()


def test_a_class_format_found_by_its_content_feeds_the_data_layer(tmp_path, data_net, take):
    table = np.arange(24, dtype=np.float32).reshape(6, 4) % 5
    (tmp_path / "points.dat").write_bytes(skv_bytes(table))      # no suffix tells it
    net = data_net(source=str(tmp_path / "points.dat"), batch_size=6)
    (data,), (labels,) = take(net, 1)
    np.testing.assert_array_equal(data, table[:, :3])
    np.testing.assert_array_equal(labels, table[:, 3])
    assert net.layers[0].dataset.source_format == "skv"
    net = data_net(source=str(tmp_path / "points.dat"), batch_size=6, label_column=0,
                   top=["data", "label"])
    (data,), (labels,) = take(net, 1)
    np.testing.assert_array_equal(labels, table[:, 0])


def test_format_names_a_registered_format_and_unknown_ones_are_errors(tmp_path, data_net,
                                                                      take):
    table = np.ones((4, 3), np.float32)
    (tmp_path / "points.bin").write_bytes(skv_bytes(table))      # .bin would be CIFAR-10
    net = data_net(source=str(tmp_path / "points.bin"), batch_size=4, format="skv")
    (data,), _ = take(net, 1)
    np.testing.assert_array_equal(data, table[:, :2])
    with pytest.raises(sk.ConfigError, match=r"unknown format 'skw'.*did you mean 'skv'"):
        data_net(source=str(tmp_path / "points.bin"), batch_size=4, format="skw")
    with pytest.raises(sk.DataError, match="is a built-in data set; drop format: npz"):
        data_net(source="builtin:digits/train", batch_size=4, format="npz")


def test_fields_only_other_formats_read_are_errors_naming_them(tmp_path, data_net):
    (tmp_path / "t.csv").write_text("1,2,0\n3,4,1\n")
    with pytest.raises(sk.DataError, match=r"label_source is for formats that keep labels in "
                       r"their own file \(npy, idx\), not csv") as caught:
        data_net(source=str(tmp_path / "t.csv"), batch_size=2, label_source="y.npy")
    assert caught.value.field == "label_source"
    with pytest.raises(sk.DataError, match=r"stream: true is for npy and HDF5 files"):
        data_net(source=str(tmp_path / "t.csv"), batch_size=2, stream=True)
    with pytest.raises(sk.DataError, match=r"skip_bad is for LMDB databases"):
        data_net(source=str(tmp_path / "t.csv"), batch_size=2, skip_bad=True)


def test_the_registry_holds_every_kind_of_source():
    formats = source_formats()
    assert list(source_formats("Data"))[:8] == ["arrays", "builtin", "npz", "npy", "idx",
                                                "cifar10", "csv", "hdf5"]
    assert {"lmdb", "image_list", "image_folder"} <= set(formats)
    assert {formats[name].layer for name in ("image_list", "image_folder")} == {"ImageData"}


def test_a_gzip_file_may_not_unpack_beyond_the_limit(tmp_path, data_net, monkeypatch):
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(b"1,2,0\n" * 5000))   # 30,000 bytes
    monkeypatch.setitem(sources.LIMITS, "array", 10_000)
    with pytest.raises(sk.DataError, match=r"unpacks to more than the 10,000 bytes"):
        data_net(source=str(tmp_path / "big.csv.gz"), batch_size=2)
    monkeypatch.setitem(sources.LIMITS, "array", 40_000)
    net = data_net(source=str(tmp_path / "big.csv.gz"), batch_size=2)
    assert net.layers[0].num_samples == 5000


def test_an_oversized_array_file_is_refused_before_it_is_read(tmp_path, data_net, monkeypatch):
    np.savez(tmp_path / "x.npz", x=np.zeros((100, 10)), y=np.zeros(100))
    monkeypatch.setitem(sources.LIMITS, "array", 1000)
    with pytest.raises(sk.DataError, match=r"more than the 1,000 bytes") as caught:
        data_net(source=str(tmp_path / "x.npz"), batch_size=2)
    assert "x.npz" in str(caught.value) and caught.value.field == "source"
