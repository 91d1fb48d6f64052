"""The one bounded reader and the one atomic writer (solverkit/files.py)."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest

from solverkit.errors import DataError, SolverkitError
from solverkit.files import (
    atomic_writer,
    check_output,
    read_bytes,
    read_text,
    require_regular,
    write_atomic,
)


@pytest.fixture
def alarm():
    """Fail (instead of hanging the suite) when a read blocks for more than 5 s."""
    def expired(signum, frame):
        raise AssertionError("the read blocked")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


READERS = [
    lambda p: read_bytes(p, what="test file", limit=1 << 20),
    lambda p: read_text(p, what="test file", limit=1 << 20),
    lambda p: require_regular(p, what="test file"),
]


@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_at_once(tmp_path, alarm, reader):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(SolverkitError, match="FIFO") as info:
        reader(fifo)
    assert time.monotonic() - start < 1
    assert info.value.file == str(fifo) and "test file" in str(info.value)


@pytest.mark.parametrize("reader", READERS)
def test_a_symlink_to_dev_zero_is_refused(tmp_path, alarm, reader):
    link = tmp_path / "w.caffemodel"
    link.symlink_to("/dev/zero")
    with pytest.raises(SolverkitError, match="a device") as info:
        reader(link)
    assert info.value.file == str(link)


@pytest.mark.parametrize("reader", READERS)
def test_a_folder_is_refused(tmp_path, reader):
    with pytest.raises(SolverkitError, match="a folder, not a regular file"):
        reader(tmp_path)


def test_a_missing_file_and_a_dangling_link_name_the_path(tmp_path):
    with pytest.raises(SolverkitError, match="test file not found"):
        read_bytes(tmp_path / "absent", what="test file", limit=10)
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SolverkitError, match="symbolic link to .*nowhere"):
        read_bytes(link, what="test file", limit=10)


def test_an_oversized_file_is_refused_with_the_limit(tmp_path):
    path = tmp_path / "big.prototxt"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(DataError, match=r"1,001 bytes, more than the 1,000") as info:
        read_bytes(path, what="net spec", limit=1000, error=DataError)
    assert info.value.file == str(path)
    with pytest.raises(SolverkitError, match="more than the 1,000"):
        require_regular(path, what="net spec", limit=1000)
    assert read_bytes(path, what="net spec", limit=1001) == b"x" * 1001


def test_a_file_larger_than_it_claims_is_read_only_to_the_limit():
    # /proc files say they are 0 bytes long: the reader must still stop at the limit
    status = "/proc/self/status"
    if not os.path.exists(status):
        pytest.skip("no /proc")
    with pytest.raises(SolverkitError, match="more than the 16 bytes"):
        read_bytes(status, what="status", limit=16)
    assert "Umask:" in read_text(status, what="status", limit=1 << 20)


def test_text_that_is_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"cat\n\xff\n")
    with pytest.raises(SolverkitError, match="not utf-8 text .* at byte 4"):
        read_text(path, what="labels file", limit=100)
    path.write_bytes(b"\xef\xbb\xbfname: x\n")
    assert read_text(path, what="spec", limit=100, encoding="utf-8-sig") == "name: x\n"


def _temporaries(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and _temporaries(tmp_path) == []


def test_a_failed_rename_is_a_user_error_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.onnx"
    target.mkdir()                  # a folder where the file goes: the rename fails
    (target / "keep").write_text("x")
    with pytest.raises(SolverkitError, match="cannot write the export") as info:
        write_atomic(target, b"data", operation="write the export")
    assert info.value.file == str(target)
    assert _temporaries(tmp_path) == [] and (target / "keep").read_text() == "x"


def test_a_read_only_folder_is_a_user_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SolverkitError, match="cannot write the file: permission denied"):
            write_atomic(folder / "x.txt", "text")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_the_written_file_has_the_umasks_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_atomic(tmp_path / "a.caffemodel", b"\x0a\x00")
        with atomic_writer(tmp_path / "b.txt", "w") as handle:
            handle.write("line\r\n")
        plain = tmp_path / "plain"
        plain.write_bytes(b"")                  # what open() gives a new file
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "a.caffemodel").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == expected
    assert (tmp_path / "b.txt").read_bytes() == b"line\r\n"     # no newline translation


def test_a_write_replaces_atomically_and_creates_the_folder(tmp_path):
    path = tmp_path / "sub" / "dir" / "mean.binaryproto"
    write_atomic(path, b"first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second" and _temporaries(path.parent) == []


def test_an_output_is_never_an_input_and_never_replaced_unasked(tmp_path):
    net = tmp_path / "mlp.prototxt"
    net.write_text("name: 'x'")
    link = tmp_path / "link.prototxt"
    link.symlink_to(net)
    for output in (net, link, tmp_path / "." / "mlp.prototxt"):
        with pytest.raises(SolverkitError, match="also an input"):
            check_output(output, inputs=(str(net), None), force=True)
    with pytest.raises(SolverkitError, match="already exists .*--force") as info:
        check_output(net, inputs=(), force=False, option="--output")
    assert info.value.field == "--output"
    assert check_output(net, force=True) == net
    assert check_output(tmp_path / "new", inputs=(str(net),)) == tmp_path / "new"
    assert net.read_text() == "name: 'x'"
