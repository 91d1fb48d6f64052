"""Caffe LMDB databases: written here by an independent writer (the protobuf wire format
encoded by hand, the ``lmdb`` package), read back by the Data layer; convert-imageset and
compute-image-mean through the CLI; bad databases."""

from __future__ import annotations

import struct
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest
import yaml

import solverkit as sk


# ----------------------------------------------------------------- an independent writer
def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1                      # negative int32: ten bytes, two's complement
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


def datum(channels=0, height=0, width=0, data=b"", label=0, float_data=(), encoded=False):
    """caffe.proto's Datum: channels 1, height 2, width 3 (varint), data 4 (bytes),
    label 5 (varint), float_data 6 (repeated float, unpacked), encoded 7 (bool)."""
    out = field(1, 0, varint(channels)) + field(2, 0, varint(height)) + \
        field(3, 0, varint(width))
    if data:
        out += field(4, 2, varint(len(data)) + data)
    out += field(5, 0, varint(label))
    for value in float_data:
        out += field(6, 5, struct.pack("<f", value))
    if encoded:
        out += field(7, 0, varint(1))
    return out


def write_db(path, records, map_size=1 << 26):
    env = lmdb.open(str(path), map_size=map_size)
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value)
    env.close()


def read_all(path, batch, count, phase="TEST", **fields):
    net = sk.Net({"name": "db", "layers": [{"name": "data", "type": "Data",
                                             "top": ["data", "label"], "source": str(path),
                                             "batch_size": batch, "backend": "LMDB",
                                             **fields}]}, phase=phase, seed=0)
    try:
        outs = [net.forward() for _ in range(count)]
    finally:
        net.close()
    return np.concatenate([o["data"] for o in outs]), np.concatenate([o["label"] for o in outs])


def pixels(n, c, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


# ----------------------------------------------------------------- reading
def test_raw_records_read_back_exactly_in_key_order(tmp_path):
    x = pixels(13, 3, 5, 7)
    labels = np.arange(13) % 4
    keys = [f"{i:08d}_img{i}.png".encode() for i in range(13)]
    shuffled = np.random.default_rng(1).permutation(13)     # inserted out of order
    write_db(tmp_path / "db", [(keys[i], datum(3, 5, 7, x[i].tobytes(), int(labels[i])))
                               for i in shuffled])
    data, got = read_all(tmp_path / "db", 13, 1)
    np.testing.assert_array_equal(data, x.astype(np.float32))
    np.testing.assert_array_equal(got, labels)


def test_float_records(tmp_path):
    values = np.random.default_rng(2).normal(size=(4, 1, 2, 3)).astype(np.float32)
    write_db(tmp_path / "db", [(b"%08d" % i, datum(1, 2, 3, label=i, float_data=values[i].ravel()))
                               for i in range(4)])
    data, got = read_all(tmp_path / "db", 4, 1)
    np.testing.assert_array_equal(data, values)
    np.testing.assert_array_equal(got, np.arange(4))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_encoded_records_decode_as_opencv(tmp_path, suffix):
    x = pixels(6, 3, 9, 8, seed=3)
    gray = pixels(6, 1, 9, 8, seed=4)
    records, expect_colour, expect_gray = [], [], []
    for i in range(6):
        ok, colour_file = cv2.imencode(suffix, x[i].transpose(1, 2, 0))        # BGR in
        assert ok
        records.append((b"c%03d" % i, datum(data=colour_file.tobytes(), label=i, encoded=True)))
        expect_colour.append(cv2.imdecode(colour_file, cv2.IMREAD_COLOR).transpose(2, 0, 1))
        ok, gray_file = cv2.imencode(suffix, gray[i, 0])
        records.append((b"g%03d" % i, datum(data=gray_file.tobytes(), label=i, encoded=True)))
        expect_gray.append(cv2.imdecode(gray_file, cv2.IMREAD_GRAYSCALE)[None])
    write_db(tmp_path / "colour", [r for r in records if r[0].startswith(b"c")])
    write_db(tmp_path / "gray", [r for r in records if r[0].startswith(b"g")])
    colour, labels = read_all(tmp_path / "colour", 6, 1)
    assert colour.shape == (6, 3, 9, 8)
    tolerance = 0 if suffix == ".png" else 2
    assert np.abs(colour - np.stack(expect_colour)).max() <= tolerance
    np.testing.assert_array_equal(labels, np.arange(6))
    grays, _ = read_all(tmp_path / "gray", 6, 1)            # gray files stay one channel
    assert grays.shape == (6, 1, 9, 8)
    assert np.abs(grays - np.stack(expect_gray)).max() <= tolerance


def test_folder_with_data_mdb_is_found_without_backend(tmp_path):
    x = pixels(3, 1, 2, 2)
    write_db(tmp_path / "db", [(b"%d" % i, datum(1, 2, 2, x[i].tobytes(), i)) for i in range(3)])
    net = sk.Net({"name": "db", "layers": [{"name": "data", "type": "Data", "top": ["data"],
                                            "source": str(tmp_path / "db"), "batch_size": 3}]},
                 phase="TEST")
    try:
        np.testing.assert_array_equal(net.forward()["data"], x.astype(np.float32))
    finally:
        net.close()


def test_shards_read_only_their_slice(tmp_path, monkeypatch):
    from solverkit.data import lmdb_source
    x = pixels(12, 1, 2, 2)
    write_db(tmp_path / "db", [(b"%02d" % i, datum(1, 2, 2, x[i].tobytes(), i)) for i in range(12)])
    seen = []
    original = lmdb_source.LmdbSource.read

    def spy(self, index):
        seen.append(index)
        return original(self, index)

    net = sk.Net({"name": "db", "layers": [{"name": "data", "type": "Data", "top": ["data"],
                                            "source": str(tmp_path / "db"), "batch_size": 2,
                                            "prefetch": 0}]}, phase="TEST")
    try:
        net.layers[0].set_shard(1, 3)
        monkeypatch.setattr(lmdb_source.LmdbSource, "read", spy)
        first = net.forward()["data"]
        second = net.forward()["data"]
    finally:
        net.close()
    np.testing.assert_array_equal(first, x[2:4].astype(np.float32))
    np.testing.assert_array_equal(second, x[8:10].astype(np.float32))
    assert sorted(seen) == [2, 3, 8, 9]


@pytest.mark.slow
def test_resume_is_bit_exact_with_lmdb(tmp_path, resume_matches):
    x = pixels(30, 1, 6, 6, seed=5)
    write_db(tmp_path / "db", [(b"%04d" % i, datum(1, 6, 6, x[i].tobytes(), i % 3))
                               for i in range(30)])
    layer = {"type": "Data", "source": "db", "backend": "LMDB", "batch_size": 7, "shuffle": True,
             "transform": {"scale": 1 / 256, "mirror": True, "crop_size": 5}}
    resume_matches(tmp_path, {"name": "lmdbnet", "layers": [
        {**layer, "name": "data", "top": ["data", "label"]},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 3,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]})


# ----------------------------------------------------------------- tools
def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "solverkit", "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def image_list(tmp_path):
    """Ten colour PNGs written by OpenCV, in a list with paths under ``tmp_path/root``."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    x = pixels(10, 3, 11, 9, seed=6)
    lines = []
    for i in range(10):
        name = f"sub/pic {i}.png"
        assert cv2.imwrite(str(root / name), x[i].transpose(1, 2, 0))
        lines.append(f"{name} {i % 5}\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    return root, tmp_path / "list.txt", x, np.arange(10) % 5


def db_records(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    return items


@pytest.mark.parametrize("options", [[], ["--encoded"], ["--shuffle"],
                                     ["--gray", "--resize-height", "6", "--resize-width", "5"],
                                     ["--encoded", "--encode-type", "jpg"]])
def test_convert_imageset_reads_back_the_images(tmp_path, image_list, options):
    root, listing, x, labels = image_list
    done = cli("convert-imageset", str(root), str(listing), str(tmp_path / "db"), *options)
    assert done.returncode == 0, done.stderr
    keys = [key.decode() for key, _ in db_records(tmp_path / "db")]
    order = [int(key.split(" ")[-1].split(".")[0]) for key in keys]   # "%08d_sub/pic I.png"
    assert keys == [f"{k:08d}_sub/pic {i}.png" for k, i in enumerate(order)]
    if "--shuffle" not in options:
        assert order == list(range(10))
    else:
        assert sorted(order) == list(range(10)) and order != list(range(10))
    data, got = read_all(tmp_path / "db", 10, 1)
    np.testing.assert_array_equal(got, labels[order])
    expect = x[order]
    if "--gray" in options:
        gray = [cv2.cvtColor(image.transpose(1, 2, 0), cv2.COLOR_BGR2GRAY) for image in expect]
        expect = np.stack([cv2.resize(g, (5, 6), interpolation=cv2.INTER_LINEAR)
                           for g in gray])[:, None]
        assert np.abs(data - expect).max() <= 2
    elif "jpg" in options:         # JPEG files of the images, as OpenCV decodes them
        from solverkit.caffe.messages import decode_datum
        files = [decode_datum(value).data for _, value in db_records(tmp_path / "db")]
        assert all(f.startswith(b"\xff\xd8\xff") for f in files)
        decoded = np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)
                            for f in files]).transpose(0, 3, 1, 2)
        assert np.abs(data - decoded).max() <= 2
    else:
        np.testing.assert_array_equal(data, expect.astype(np.float32))
    if options == ["--encoded"]:            # the PNG files themselves, as Caffe stores them
        _, value = db_records(tmp_path / "db")[0]
        assert (root / "sub/pic 0.png").read_bytes() in value


def test_compute_image_mean_equals_numpy(tmp_path, image_list):
    root, listing, x, _ = image_list
    assert cli("convert-imageset", str(root), str(listing), str(tmp_path / "db")).returncode == 0
    done = cli("compute-image-mean", str(tmp_path / "db"), "-o", str(tmp_path / "mean.binaryproto"))
    assert done.returncode == 0, done.stderr
    from solverkit.caffe.messages import BLOB_PROTO
    from solverkit.protobuf import decode
    blob = decode((tmp_path / "mean.binaryproto").read_bytes(), BLOB_PROTO)
    assert (blob["num"], blob["channels"], blob["height"], blob["width"]) == (1, 3, 11, 9)
    np.testing.assert_allclose(np.asarray(blob["data"]).reshape(3, 11, 9),
                               x.astype(np.float64).mean(axis=0), rtol=0, atol=1e-4)
    # from the list too; and usable as a mean file: the mean image of the data becomes 0
    done = cli("compute-image-mean", str(listing), "--root", str(root), "-o",
               str(tmp_path / "list_mean.binaryproto"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "list_mean.binaryproto").read_bytes() == \
        (tmp_path / "mean.binaryproto").read_bytes()
    data, _ = read_all(tmp_path / "db", 10, 1,
                       transform={"mean_file": str(tmp_path / "mean.binaryproto")})
    np.testing.assert_allclose(data.mean(axis=0), 0, atol=1e-4)
    again = cli("compute-image-mean", str(tmp_path / "db"), "-o", str(tmp_path / "mean.binaryproto"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_convert_imageset_refuses_an_existing_db(tmp_path, image_list):
    root, listing, _, _ = image_list
    (tmp_path / "db").mkdir()
    done = cli("convert-imageset", str(root), str(listing), str(tmp_path / "db"))
    assert done.returncode == 2 and "already exists" in done.stderr


# ----------------------------------------------------------------- bad databases
def test_a_database_that_is_not_datum_names_it(tmp_path):
    write_db(tmp_path / "db", [(b"a", b"\xff\xff\xff\xff"), (b"b", b"not a datum")])
    with pytest.raises(sk.DataError, match=r"record 'a' of '.*db' is not a Caffe Datum"):
        read_all(tmp_path / "db", 1, 1)


def test_a_record_of_another_shape_met_while_training_names_the_database_and_net_file(tmp_path):
    small, large = pixels(1, 1, 4, 4), pixels(1, 1, 5, 5)
    write_db(tmp_path / "db", [(b"%08d" % i, datum(1, *((5, 5) if i == 3 else (4, 4)),
                                                    data=(large if i == 3 else small).tobytes()))
                               for i in range(4)])
    spec = tmp_path / "net.yaml"
    spec.write_text(yaml.safe_dump({"name": "db", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": "db",
         "batch_size": 2, "backend": "LMDB", "prefetch": 0}]}))
    net = sk.Net(str(spec), phase="TEST", seed=0)
    try:
        net.forward()                           # records 0 and 1 are fine
        with pytest.raises(sk.DataError) as caught:
            net.forward()                       # record 3 is not
    finally:
        net.close()
    message = str(caught.value)
    assert "net.yaml" in message and "layer 'data'" in message
    assert f"record '00000003' of '{tmp_path / 'db'}' has shape (1, 5, 5)" in message


def test_a_folder_without_data_mdb(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(sk.DataError, match="is not an LMDB database"):
        read_all(tmp_path / "empty", 1, 1)


def test_records_of_another_shape_are_named(tmp_path):
    x = pixels(2, 1, 2, 2)
    write_db(tmp_path / "db", [(b"0", datum(1, 2, 2, x[0].tobytes(), 0)),
                               (b"1", datum(1, 1, 4, x[1].tobytes(), 1))])
    with pytest.raises(sk.DataError, match=r"record '1' of '.*db' has shape \(1, 1, 4\)"):
        read_all(tmp_path / "db", 2, 1)


def test_skip_bad_records_are_counted(tmp_path, caplog):
    x = pixels(4, 1, 2, 2)
    _, png = cv2.imencode(".png", x[0, 0])
    records = [(b"0", datum(data=png.tobytes(), label=0, encoded=True)),
               (b"1", datum(data=png.tobytes()[:20], label=1, encoded=True)),       # truncated
               (b"2", datum(data=png.tobytes(), label=2, encoded=True)),
               (b"3", datum(data=b"garbage", label=3, encoded=True))]
    write_db(tmp_path / "db", records)
    with pytest.raises(sk.DataError, match="record '1'.*skip_bad"):
        read_all(tmp_path / "db", 4, 1)
    with caplog.at_level("WARNING", logger="solverkit"):
        _, labels = read_all(tmp_path / "db", 4, 1, skip_bad=True)
    np.testing.assert_array_equal(labels, [0, 2, 2, 0])          # bad ones: the next good one
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipping record '1'" in m for m in messages)
    assert any("2 bad record(s) skipped" in m for m in messages)


def test_missing_lmdb_package_names_the_extra(monkeypatch, tmp_path):
    write_db(tmp_path / "db", [(b"0", datum(1, 1, 1, b"\x01", 0))])
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(sk.DataError, match=r"'lmdb' extra: pip install 'solverkit\[lmdb\]'"):
        read_all(tmp_path / "db", 1, 1)


def test_two_layers_may_read_one_database(tmp_path):
    x = pixels(9, 1, 2, 2)
    write_db(tmp_path / "db", [(b"%d" % i, datum(1, 2, 2, x[i].tobytes(), i)) for i in range(9)])
    a, _ = read_all(tmp_path / "db", 3, 2, phase="TRAIN", shuffle=True)
    layer = {"type": "Data", "source": str(tmp_path / "db"), "batch_size": 3, "top": ["data"]}
    nets = [sk.Net({"name": "db", "layers": [{**layer, "name": "data"}]}, phase=phase)
            for phase in ("TRAIN", "TEST")]
    try:
        for _ in range(5):                          # both prefetch threads reading at once
            for net in nets:
                net.forward()
        np.testing.assert_array_equal(nets[1].forward()["data"], x[6:9].astype(np.float32))
    finally:
        for net in nets:
            net.close()
    assert a.shape == (6, 1, 2, 2)
