"""Image decoding and resizing, checked against OpenCV (an independent decoder and the
resize Caffe uses), and bad image files reported as DataErrors naming the file."""

from __future__ import annotations

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from solverkit.data import images
from solverkit.errors import DataError


def photo(h=23, w=31, seed=0):
    """A smooth colour picture with some noise (H, W, 3) RGB uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 4.0), 128 + 100 * np.cos(yy / 5.0),
                     (xx * 7 + yy * 3) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(8, 8, 28, 28), (37, 53, 20, 31), (64, 64, 32, 32),
                                   (50, 40, 227, 227), (10, 1, 3, 4), (5, 7, 5, 7)])
def test_resize_matches_opencv_inter_linear(shape):
    h, w, out_h, out_w = shape
    rng = np.random.default_rng(1)
    x = (rng.random((h, w, 3)) * 255).astype(np.float32)
    ours = images.resize_bilinear(x.transpose(2, 0, 1), out_h, out_w)
    ref = cv2.resize(x, (out_w, out_h), interpolation=cv2.INTER_LINEAR).reshape(out_h, out_w, 3)
    np.testing.assert_allclose(ours.transpose(1, 2, 0), ref, atol=1e-3, rtol=0)
    # uint8 in, uint8 out: OpenCV's fixed-point weights round differently by at most 1
    u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours8 = images.resize_u8(u8.transpose(2, 0, 1), out_h, out_w).transpose(1, 2, 0)
    ref8 = cv2.resize(u8, (out_w, out_h), interpolation=cv2.INTER_LINEAR).reshape(ours8.shape)
    assert np.abs(ours8.astype(int) - ref8).max() <= 1


def test_resize_batch_of_images_is_per_image():
    rng = np.random.default_rng(2)
    batch = rng.random((4, 3, 9, 13)).astype(np.float32)
    together = images.resize_bilinear(batch, 6, 20)
    for k in range(4):
        np.testing.assert_array_equal(together[k], images.resize_bilinear(batch[k], 6, 20))


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("JPEG", ".jpg"),
                                        ("WEBP", ".webp"), ("GIF", ".gif")])
def test_decode_formats_as_opencv_reads_them(tmp_path, fmt, suffix):
    rgb = photo()
    path = tmp_path / f"picture{suffix}"
    Image.fromarray(rgb).save(path, format=fmt)
    colour = images.read_image(path)
    assert colour.dtype == np.float32 and colour.shape == (3, 23, 31)
    gray = images.read_image(path, is_color=False)
    assert gray.shape == (1, 23, 31)
    if fmt == "GIF":        # palette quantised: compare with what Pillow itself decodes
        ref = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]
        np.testing.assert_array_equal(colour.transpose(1, 2, 0), ref)
        return
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR)                          # BGR
    tolerance = 0 if fmt in ("PNG", "BMP") else 3      # decoders' IDCT rounding
    assert np.abs(colour.transpose(1, 2, 0) - ref).max() <= tolerance
    ref_gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert np.abs(gray[0] - ref_gray).max() <= tolerance + 1


def test_bgr_order_and_gray_of_colour(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200                       # pure red
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    x = images.read_image(path)
    np.testing.assert_array_equal(x[:, 0, 0], [0, 0, 200])                 # B, G, R
    assert images.read_image(path, is_color=False)[0, 0, 0] == round(0.299 * 200)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((3, 4), 77, np.uint8)).save(gray)
    np.testing.assert_array_equal(images.read_image(gray), np.full((3, 3, 4), 77))


def test_read_and_resize_equals_opencv_pipeline(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(photo(40, 30)).save(path)
    ours = images.read_image(path, height=28, width=28)
    ref = cv2.resize(cv2.imread(str(path)).astype(np.float32), (28, 28),
                     interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours.transpose(1, 2, 0), ref, atol=1e-3)


def test_sixteen_bit_png_keeps_top_bits(tmp_path):
    wide = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    ref = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(images.read_image(path, is_color=False)[0], ref)


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(photo(60, 60)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="cut.png.*truncated or damaged"):
        images.read_image(path)
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(photo(60, 60)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    with pytest.raises(DataError, match="cut.jpg"):
        images.read_image(jpeg)


def test_not_an_image_and_missing_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.jpg.*not an image"):
        images.read_image(text)
    with pytest.raises(DataError, match="nothere.png.*does not exist"):
        images.read_image(tmp_path / "nothere.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)          # small file, 9 Mpixel promise
    with pytest.raises(DataError, match="big.png.*3000x3000 pixels"):
        images.read_image(path, max_pixels=1_000_000)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height gray pixels and holds none."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 14_000])   # over Pillow's warning; over its error
def test_a_bomb_beyond_pillows_own_limit_is_one_error_and_no_warning(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(side, side))
    code = ("import sys; from solverkit.data import images; from solverkit.errors import DataError\n"
            "try:\n    images.read_image(sys.argv[1])\n"
            "except DataError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-W", "default", "-c", code, str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.stderr == ""
    assert "bomb.png" in run.stdout and str(images.MAX_PIXELS) in run.stdout


def test_a_palette_image_with_transparency_reads_without_a_warning(tmp_path):
    rgb = photo(9, 11)
    image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = tmp_path / "palette.png"
    image.save(path, transparency=bytes([0, 128, 64] + [255] * 13))   # several alpha levels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = images.read_image(path)
        gray = images.read_image(path, is_color=False)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)                  # BGR, alpha dropped
    np.testing.assert_array_equal(ours, expected.transpose(2, 0, 1).astype(np.float32))
    assert gray.shape == (1, 9, 11)


def test_missing_pillow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"'image' extra.*solverkit\[image\]"):
        images.decode_image(b"\x89PNG")


@pytest.mark.parametrize("encoding", ["png", "jpg", "bmp", "webp"])
def test_encode_round_trip(encoding):
    pixels = np.ascontiguousarray(photo()[:, :, ::-1].transpose(2, 0, 1))     # BGR CHW
    back = images.decode_image_u8(images.encode_image(pixels, encoding))
    assert back.shape == pixels.shape
    error = np.abs(back.astype(int) - pixels)
    if encoding in ("png", "bmp"):
        assert error.max() == 0
    else:                                       # lossy: close on average
        assert error.mean() < 8
    gray = pixels[:1]
    assert images.decode_image_u8(images.encode_image(gray, "png"), is_color=False).tolist() \
        == gray.tolist()
