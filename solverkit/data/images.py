"""Image files: decode (Pillow, the ``image`` extra), resize as Caffe does, encode.

An image becomes an array as Caffe's ``ReadImageToCVMat`` makes it with OpenCV:

- colour (``is_color=True``): 3 channels in **BGR** order (OpenCV's, so models trained
  by Caffe on its LMDBs and image lists see the channels they were trained on); an alpha
  channel is dropped, a palette or gray image is expanded to three equal channels;
- gray (``is_color=False``): 1 channel, luma ``0.299 R + 0.587 G + 0.114 B``;
- values 0..255 (16-bit images are scaled down to 8 bits, as OpenCV's IMREAD_COLOR does);
- resized, when a size is asked for, by ``resize_bilinear`` (OpenCV's INTER_LINEAR).

``read_image`` / ``decode_image`` return float32 (C, H, W); ``load_image_u8`` /
``decode_image_u8`` the uint8 (C, H, W) that ``convert-imageset`` stores.

Decoding is bounded: an image whose header promises more than ``max_pixels`` pixels is
refused before any pixel is decoded, and a truncated or damaged file is a ``DataError``
naming it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import LIMITS, read_bytes

# the largest image decoded by default (about 8,000 x 8,000): a decompression bomb (a
# small file whose header promises a huge image) is refused, not decoded
MAX_PIXELS = 1 << 26

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Pillow modes of one-channel images
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")

ENCODINGS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "webp": "WEBP"}


def pillow():
    """Pillow's ``PIL.Image`` module, or a ``DataError`` naming the extra that installs it.

    Pillow warns of a possible decompression bomb when an image header promises more than
    its own limit (about 89 million pixels); solverkit applies its own ``max_pixels`` to
    every header right after opening it and refuses the image with one error, so that
    warning would only be a stray line before the error (or after an image a user allowed).
    """
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow, the 'image' extra: "
                        "pip install 'solverkit[image]'", field="source") from None
    quiet = ("ignore", None, Image.DecompressionBombWarning, None, 0)
    if quiet not in warnings.filters:   # added again, each time, would reset warnings' caches
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path, *, is_color: bool = True, height: int = 0, width: int = 0,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image file ``path`` as float32 (C, H, W), values 0..255, resized to
    (``height``, ``width``) when both are positive (C = 3 BGR, or 1 when gray)."""
    return _resized(load_image_u8(path, is_color=is_color, max_pixels=max_pixels),
                    height, width)


def decode_image(raw: bytes, *, name: str = "image", is_color: bool = True, height: int = 0,
                 width: int = 0, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``read_image`` for the bytes of an encoded image (``name`` is for messages)."""
    return _resized(decode_image_u8(raw, name=name, is_color=is_color, max_pixels=max_pixels),
                    height, width)


def load_image_u8(path, *, is_color: bool = True, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image file ``path`` as uint8 (C, H, W), not resized."""
    path = path if isinstance(path, Path) else Path(path)  # (Path(a Path) parses it again)
    try:        # the message names the image; the caller adds the list, layer and net
        raw = read_bytes(path, what=f"image file '{path}'", limit=LIMITS["image"],
                         error=DataError)
    except DataError as err:
        if not os.path.lexists(path):       # asked only on failure: a stat per image less
            raise DataError(f"image file '{path}' does not exist", field="source") from None
        err.file, err.field = None, "source"
        raise
    return decode_image_u8(raw, name=f"'{path}'", is_color=is_color, max_pixels=max_pixels)


def decode_image_u8(raw: bytes, *, name: str = "image", is_color: bool | None = True,
                    max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes as uint8 (C, H, W): BGR when ``is_color``, else 1 gray channel;
    ``is_color=None`` keeps a gray image gray and a colour one BGR (OpenCV's
    IMREAD_ANYCOLOR, which Caffe uses for encoded database records)."""
    image_module = pillow()
    try:
        image = image_module.open(io.BytesIO(raw), formats=_formats(raw))
    except (image_module.UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{name} is not an image Pillow can read "
                        f"({_reason(err)})", field="source") from None
    except image_module.DecompressionBombError:
        raise DataError(f"{name} promises more pixels than Pillow decodes (over "
                        f"{2 * image_module.MAX_IMAGE_PIXELS}), more than the {max_pixels} "
                        f"an image may have", field="max_pixels") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise DataError(f"{name} is {width}x{height} pixels, more than the {max_pixels} "
                            f"an image may have (the ImageData field max_pixels raises the "
                            f"limit)", field="max_pixels")
        if width == 0 or height == 0:
            raise DataError(f"{name} has no pixels ({width}x{height})", field="source")
        if is_color is False and image.format == "JPEG" and image.mode != "L":
            # gray straight from the JPEG decoder (its luma), as OpenCV's IMREAD_GRAYSCALE
            image.draft("L", image.size)
        try:
            image.load()
            pixels = _to_array(image, is_color)
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise DataError(f"{name} is truncated or damaged ({_reason(err)})",
                            field="source") from None
    return pixels


# the first bytes of each format, so Pillow need not try every format it knows
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"BM", "BMP"))


def _formats(raw: bytes):
    for magic, fmt in _MAGIC:
        if raw.startswith(magic):
            return [fmt]
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ["WEBP"]
    return None                 # let Pillow try every format


def _to_array(image, is_color: bool | None) -> np.ndarray:
    """A loaded Pillow image -> uint8 (C, H, W), BGR or gray (None: as stored)."""
    if is_color is None:
        is_color = image.mode not in GRAY_MODES
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # high bit depth (16-bit PNG, TIFF): the top 8 of 16 bits, as OpenCV keeps
        wide = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            wide = np.floor(wide / 256.0)
        gray = np.clip(wide, 0, 255).astype(np.uint8)[None]
        return np.ascontiguousarray(np.repeat(gray, 3, axis=0) if is_color else gray)
    if image.mode == "P" and "transparency" in image.info:
        # the palette's colours with the transparency dropped, as OpenCV reads them;
        # through RGBA because Pillow warns when it drops a palette's transparency itself
        image = image.convert("RGBA")
    if is_color and image.mode in ("RGB", "L"):
        # the common cases without Pillow's convert (a copy of the image): Pillow packs
        # its pixels straight into BGR bytes, or the one gray channel is repeated
        width, height = image.size
        if image.mode == "RGB":
            bgr = np.frombuffer(image.tobytes("raw", "BGR"), dtype=np.uint8)
            return np.ascontiguousarray(bgr.reshape(height, width, 3).transpose(2, 0, 1))
        gray = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(1, height, width)
        return np.repeat(gray, 3, axis=0)
    if is_color:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)      # (H, W, 3)
        return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
    if image.mode in ("RGBA", "LA", "P", "PA") or image.mode.startswith("RGB"):
        image = image.convert("RGB")
    if image.mode != "L":
        image = image.convert("L")
    width, height = image.size
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(1, height, width).copy()


def _resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if (height > 0) != (width > 0):
        raise DataError(f"give both a height and a width to resize to, or neither "
                        f"(got {height} x {width})", field="new_height")
    if height > 0 and (height, width) != pixels.shape[-2:]:
        return resize_bilinear(pixels, height, width)
    return pixels.astype(np.float32)


def _axis_weights(source: int, target: int):
    """OpenCV's INTER_LINEAR along one axis: for each target index i, the source index
    ``lo`` and the weight of ``lo + 1``, from the half-pixel centre ``(i + 0.5) * s - 0.5``
    (s = source / target), clamped to the edge pixels."""
    scale = source / target
    position = (np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5
    lo = np.floor(position).astype(np.int64)
    frac = position - lo
    before = lo < 0
    lo[before], frac[before] = 0, 0.0
    after = lo >= source - 1
    lo[after], frac[after] = source - 1, 0.0
    hi = np.minimum(lo + 1, source - 1)
    return lo, hi, frac


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the last two axes of ``x`` (..., H, W) to (``height``, ``width``) as OpenCV's
    ``cv::resize(INTER_LINEAR)`` (what Caffe uses): pixel centres at half-integers,

        y[i, j] = sum over (a, b) in {lo, lo+1}^2 of  w_r(i, a) w_c(j, b) x[a, b]

    with the row and column weights of ``_axis_weights``; no area averaging when
    shrinking (unlike Pillow's BILINEAR). Returns float32; for uint8 input it agrees with
    OpenCV's fixed-point result to within 1 (OpenCV rounds its weights to 11 bits).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"resize target {height}x{width} must be positive")
    source_h, source_w = x.shape[-2:]
    r0, r1, fr = _axis_weights(source_h, height)
    c0, c1, fc = _axis_weights(source_w, width)
    data = x.astype(np.float32, copy=False)
    fr = fr.astype(np.float32)[:, None]
    fc = fc.astype(np.float32)
    rows = data[..., r0, :] * (1 - fr) + data[..., r1, :] * fr           # (..., height, W)
    out = rows[..., c0] * (1 - fc) + rows[..., c1] * fc                  # (..., height, width)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_u8(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``resize_bilinear`` of uint8 pixels, rounded back to uint8 (what a database stores)."""
    if (height, width) == pixels.shape[-2:]:
        return pixels
    out = resize_bilinear(pixels, height, width)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, encoding: str) -> bytes:
    """uint8 (C, H, W) pixels (BGR or gray) as the bytes of a ``png``/``jpg``/``bmp``/``webp``
    file (colour is written as the RGB the file format holds)."""
    image_module = pillow()
    fmt = ENCODINGS.get(encoding.lower())
    if fmt is None:
        raise DataError(f"unknown image encoding '{encoding}'; known: "
                        f"{', '.join(sorted(ENCODINGS))}", field="encode_type")
    if pixels.shape[0] == 3:
        image = image_module.fromarray(np.ascontiguousarray(pixels[::-1].transpose(1, 2, 0)),
                                       "RGB")
    elif pixels.shape[0] == 1:
        image = image_module.fromarray(np.ascontiguousarray(pixels[0]), "L")
    else:
        raise DataError(f"an image to encode has 1 or 3 channels, not {pixels.shape[0]}",
                        field="encode_type")
    out = io.BytesIO()
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__
