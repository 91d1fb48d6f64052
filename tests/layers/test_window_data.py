"""WindowData: the window file, foreground/background sampling, and each crop against a
reference written from Caffe's window arithmetic with OpenCV's resize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.errors import DataError

Image = pytest.importorskip("PIL.Image")
cv2 = pytest.importorskip("cv2")


def c_round(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def reference_crop(image_bgr, box, crop, context_pad, square, flip, mean, scale):
    """Caffe's WindowDataLayer::load_batch for one window (image (H, W, 3) uint8, BGR)."""
    rows, cols = image_bgr.shape[:2]
    x1, y1, x2, y2 = box
    pad_w = pad_h = 0
    size_w = size_h = crop
    if context_pad > 0 or square:
        f = np.float32
        cs = f(crop) / f(crop - 2 * context_pad)
        hh, hw = f(y2 - y1 + 1) / f(2.0), f(x2 - x1 + 1) / f(2.0)
        cx, cy = f(x1) + hw, f(y1) + hh
        if square:
            hh = hw = max(hh, hw)
        x1, x2 = c_round(cx - hw * cs), c_round(cx + hw * cs)
        y1, y2 = c_round(cy - hh * cs), c_round(cy + hh * cs)
        uh, uw = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(uw), f(crop) / f(uh)
        size_w, size_h = c_round(f(x2 - x1 + 1) * sx), c_round(f(y2 - y1 + 1) * sy)
        px1, px2 = c_round(f(px1) * sx), c_round(f(px2) * sx)
        pad_h = c_round(f(py1) * sy)
        pad_w = px2 if flip else px1
        size_h = min(size_h, crop - pad_h)
        size_w = min(size_w, crop - pad_w)
    region = cv2.resize(np.ascontiguousarray(image_bgr[y1:y2 + 1, x1:x2 + 1]),
                        (size_w, size_h), interpolation=cv2.INTER_LINEAR)
    if flip:
        region = region[:, ::-1]
    out = np.zeros((3, crop, crop), np.float32)
    for c in range(3):
        out[c, pad_h:pad_h + size_h, pad_w:pad_w + size_w] = \
            (region[:, :, c].astype(np.float32) - mean[c]) * scale
    return out


@pytest.fixture
def window_setup(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    text = """# 0
a.png
3
40
50
3
7 0.9 10 5 30 25
0 0.2 0 0 49 39
3 0.4 1 1 5 5
"""
    (tmp_path / "windows.txt").write_text(text)
    return tmp_path, rgb[:, :, ::-1]          # Caffe reads BGR


def window_net(folder, **fields):
    transform = {"crop_size": 16, **fields.pop("transform", {})}
    layer = {"name": "data", "type": "WindowData", "top": ["data", "label"],
             "source": "windows.txt", "root_folder": str(folder) + "/", "batch_size": 4,
             "bg_threshold": 0.3, "transform": transform, **fields}
    (folder / "net.yaml").write_text(yaml.safe_dump({"name": "w", "layers": [layer]}))
    return sk.Net(folder / "net.yaml", seed=0)


@pytest.mark.parametrize("context_pad,mode", [(0, "warp"), (3, "warp"), (2, "square")])
def test_crops_match_caffes_window_arithmetic(window_setup, context_pad, mode):
    folder, bgr = window_setup
    mean = [10.0, 20.0, 30.0]
    net = window_net(folder, context_pad=context_pad, crop_mode=mode, fg_fraction=0.5,
                     transform={"mean_value": mean, "scale": 0.5})
    net.forward()
    labels = net.blobs["label"].data
    np.testing.assert_array_equal(labels, [0, 0, 7, 7])   # background first, then objects
    boxes = {0: (0, 0, 49, 39), 7: (10, 5, 30, 25)}
    for item, label in enumerate(labels):
        expected = reference_crop(bgr, boxes[int(label)], 16, context_pad, mode == "square",
                                  False, mean, 0.5)
        np.testing.assert_allclose(net.blobs["data"].data[item], expected, atol=0.5 + 1e-6)


def test_mirror_flips_some_windows_and_the_fraction_holds(window_setup):
    folder, bgr = window_setup
    net = window_net(folder, context_pad=3, fg_fraction=0.3, batch_size=10,
                     transform={"mirror": True})
    flips = 0
    for _ in range(3):
        net.forward()
        assert net.blobs["label"].data.tolist() == [0] * 7 + [7] * 3    # ⌊10·0.3⌋ objects
        for item in range(7, 10):
            got = net.blobs["data"].data[item]
            plain = reference_crop(bgr, (10, 5, 30, 25), 16, 3, False, False, [0] * 3, 1)
            flipped = reference_crop(bgr, (10, 5, 30, 25), 16, 3, False, True, [0] * 3, 1)
            if np.allclose(got, flipped, atol=1.01) and not np.allclose(got, plain, atol=1.01):
                flips += 1
            else:
                np.testing.assert_allclose(got, plain, atol=1.01)
    assert 0 < flips < 9


def test_the_window_file_is_checked(window_setup):
    folder, _ = window_setup
    (folder / "windows.txt").write_text("# 0\na.png\n3\n40\nfifty\n")
    with pytest.raises(DataError, match="windows.txt.*line 5: width must be int"):
        window_net(folder)
    (folder / "windows.txt").write_text("# 0\na.png\n3\n40\n50\n1\n0 0.9 1 1 5 5\n")
    with pytest.raises(DataError, match="class 0"):
        window_net(folder)
    (folder / "windows.txt").write_text("# 0\na.png\n3\n40\n50\n1\n2 0.9 1 1 5 5\n")
    with pytest.raises(DataError, match="no background windows"):
        window_net(folder)
