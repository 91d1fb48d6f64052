#!/usr/bin/env python3
"""Data-feeding benchmark: memory of streamed sources, and the cost of decoding JPEGs.

    python scripts/bench_data.py                  # everything (writes ~2.2 GiB to /tmp)
    python scripts/bench_data.py --only jpeg      # one part: memory, jpeg or resize
    python scripts/bench_data.py --gib 0.2        # smaller files, for a quick look

memory   An LMDB of Caffe Datum records (3x64x64 uint8) and a uint8 ``.npy`` file, each
         ``--gib`` GiB (default 1.05), written to a temporary folder in /tmp and deleted at
         the end (also on error or Ctrl-C). For each, a child process trains one epoch of
         a small net (Data -> InnerProduct -> SoftmaxWithLoss, batch 256, shuffled) and
         reports its peak resident memory (VmHWM) and samples per second.
jpeg     A LeNet for 28x28 inputs (Caffe's MNIST LeNet), batch 64: the training step fed by
         an ``ImageData`` layer reading 28x28 gray JPEG files, against the same step fed by
         a ``Data`` layer over the same pixels in memory, and against the JPEG feed with
         decoding in the step (``prefetch: 0``). Rounds alternate between the feeds so
         that load from other processes hits all alike; times are medians of the rounds.
         Also the time to decode one batch alone.
resize   How Pillow's own BILINEAR resize differs from OpenCV's INTER_LINEAR (which Caffe
         and solverkit use): max and mean absolute difference, uint8 pixels, when
         upscaling the 8x8 digits to 28x28 and when shrinking smooth 256x256 pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = (3, 64, 64)                 # one sample of the memory cases: 12 KiB


# ---------------------------------------------------------------- memory
def write_lmdb(folder: Path, count: int) -> None:
    import lmdb

    from solverkit.caffe.messages import encode_datum
    rng = np.random.default_rng(0)
    env = lmdb.open(str(folder), map_size=1 << 40)
    block = 2048
    for start in range(0, count, block):
        images = rng.integers(0, 256, (min(block, count - start), *SHAPE), dtype=np.uint8)
        with env.begin(write=True) as txn:
            for k, image in enumerate(images):
                txn.put(b"%08d" % (start + k), encode_datum(image, (start + k) % 10))
    env.close()


def write_npy(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    data = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.uint8,
                                     shape=(count, *SHAPE))
    block = 4096
    for start in range(0, count, block):
        stop = min(start + block, count)
        data[start:stop] = rng.integers(0, 256, (stop - start, *SHAPE), dtype=np.uint8)
        data.flush()
    del data
    np.save(folder / "y.npy", np.arange(count) % 10)


CHILD = r"""
import json, sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
import solverkit as sk
layer = json.loads(sys.argv[2])
net = {"name": "epoch", "layers": [
    {"name": "data", "type": "Data", "top": ["data", "label"], "batch_size": 256,
     "shuffle": True, "transform": {"scale": 0.00390625}, **layer},
    {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 10,
     "weight_filler": {"type": "xavier"}},
    {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}
solver = sk.Solver({"base_lr": 0.001, "max_iter": 10**9, "snapshot": 0,
                    "snapshot_after_train": False, "snapshot_prefix": sys.argv[3]},
                   net=net, progress=False)
steps = solver.net.layers[0].batches_per_epoch
kind = type(solver.net.layers[0].dataset).__name__
start = time.perf_counter()
solver.step(steps)
seconds = time.perf_counter() - start
solver.close()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"source": kind, "steps": steps, "samples": steps * 256,
                  "seconds": seconds, "samples_per_s": steps * 256 / seconds,
                  "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024}))
"""


def memory(gib: float) -> list[dict]:
    count = int(gib * (1 << 30) / np.prod(SHAPE)) + 1
    folder = Path(tempfile.mkdtemp(prefix="solverkit-bench-data-", dir="/tmp"))
    results = []
    try:
        for name, writer, layer in (
                ("lmdb", write_lmdb, {"source": str(folder / "db"), "backend": "LMDB"}),
                ("npy", write_npy, {"source": str(folder / "x.npy"),
                                    "label_source": str(folder / "y.npy")})):
            start = time.perf_counter()
            if name == "lmdb":
                writer(folder / "db", count)
                size = (folder / "db" / "data.mdb").stat().st_size
            else:
                writer(folder, count)
                size = (folder / "x.npy").stat().st_size
            written = time.perf_counter() - start
            done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), json.dumps(layer),
                                   str(folder / "snap")], capture_output=True, text=True,
                                  check=False)
            if done.returncode:
                raise RuntimeError(done.stderr)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(case=name, file_gib=size / (1 << 30), records=count,
                          write_seconds=written)
            results.append(result)
            print(f"{name:5s} {size / (1 << 30):.2f} GiB, {count} samples of "
                  f"{'x'.join(map(str, SHAPE))} uint8 ({result['source']}): one epoch "
                  f"{result['seconds']:.1f} s, {result['samples_per_s']:.0f} samples/s, peak "
                  f"RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
            shutil.rmtree(folder / "db", ignore_errors=True)        # free the disk early
            for leftover in ("x.npy", "y.npy"):
                (folder / leftover).unlink(missing_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


# ---------------------------------------------------------------- jpeg
def lenet28(layer: dict) -> dict:
    import yaml
    spec = yaml.safe_load((ROOT / "configs/mnist/lenet_net.yaml").read_text())
    layers = [dict(layer, name="mnist", top=["data", "label"])]
    layers += [entry for entry in spec["layers"]
               if entry["type"] not in ("Data", "Accuracy")]
    return {"name": "lenet28", "layers": layers}


def jpeg(rounds: int, steps: int) -> dict:
    import cv2

    import solverkit as sk
    from solverkit.data.sources import load_source
    digits = load_source("builtin:digits/train")
    small = np.clip(digits.data[:, 0].astype(np.int32) * 16, 0, 255).astype(np.uint8)
    pictures = np.stack([cv2.resize(p, (28, 28), interpolation=cv2.INTER_LINEAR)
                         for p in small])
    folder = Path(tempfile.mkdtemp(prefix="solverkit-bench-jpeg-", dir="/tmp"))
    try:
        lines = []
        for i, picture in enumerate(pictures):
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            lines.append(f"{i:05d}.jpg {int(digits.labels[i])}\n")
        (folder / "list.txt").write_text("".join(lines))
        decoded = np.stack([cv2.imread(str(folder / f"{i:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                            for i in range(len(pictures))])[:, None]
        common = {"batch_size": 64, "shuffle": True, "transform": {"scale": 0.00390625}}
        feeds = {
            "arrays": {"type": "Data", "source": (decoded, digits.labels), **common},
            "jpeg": {"type": "ImageData", "source": str(folder / "list.txt"),
                     "is_color": False, **common},
            "jpeg_in_step": {"type": "ImageData", "source": str(folder / "list.txt"),
                             "is_color": False, "prefetch": 0, **common},
        }
        solvers = {name: sk.Solver({"base_lr": 0.01, "momentum": 0.9, "max_iter": 10**9,
                                    "snapshot": 0, "snapshot_after_train": False,
                                    "random_seed": 1,
                                    "snapshot_prefix": str(folder / name)},
                                   net=lenet28(layer), progress=False)
                   for name, layer in feeds.items()}
        times: dict[str, list[float]] = {name: [] for name in feeds}
        for solver in solvers.values():
            solver.step(5)                                          # warm up
        for r in range(rounds):
            names = list(feeds) if r % 2 == 0 else list(feeds)[::-1]
            for name in names:
                solver = solvers[name]
                solver.step(2)
                start = time.perf_counter()
                solver.step(steps)
                times[name].append((time.perf_counter() - start) / steps * 1e3)
        layer = solvers["jpeg_in_step"].net.layers[0]
        decode = []
        for k in range(20):
            start = time.perf_counter()
            layer.dataset.take(np.arange(k * 64, (k + 1) * 64))
            decode.append((time.perf_counter() - start) * 1e3)
        for solver in solvers.values():
            solver.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {f"{name}_ms": value for name, value in medians.items()}
    result["decode_batch_ms"] = statistics.median(decode)
    result["jpeg_overhead_pct"] = (medians["jpeg"] / medians["arrays"] - 1) * 100
    result["jpeg_in_step_overhead_pct"] = (medians["jpeg_in_step"] / medians["arrays"] - 1) * 100
    print(f"LeNet 28x28, batch 64: step fed by arrays {medians['arrays']:.2f} ms, by JPEG "
          f"files {medians['jpeg']:.2f} ms ({result['jpeg_overhead_pct']:+.1f}%), by JPEG "
          f"decoded in the step {medians['jpeg_in_step']:.2f} ms "
          f"({result['jpeg_in_step_overhead_pct']:+.1f}%); decoding one batch alone "
          f"{result['decode_batch_ms']:.2f} ms", flush=True)
    return result


# ---------------------------------------------------------------- resize
def resize() -> dict:
    from PIL import Image

    from solverkit.data.images import resize_u8
    from solverkit.data.sources import load_source

    def compare(pictures, height, width):
        errors = []
        for picture in pictures:
            ours = resize_u8(picture[None], height, width)[0].astype(int)
            pillow = np.asarray(Image.fromarray(picture).resize((width, height),
                                                                Image.BILINEAR)).astype(int)
            errors.append(np.abs(ours - pillow))
        errors = np.stack(errors)
        return {"max": int(errors.max()), "mean": float(errors.mean())}

    digits = load_source("builtin:digits/train").data[:200, 0].astype(np.int32)
    digits = np.clip(digits * 16, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = [np.clip(128 + 100 * np.sin(xx / (5 + k)) + 50 * np.cos(yy / (7 + k))
                      + rng.normal(0, 8, (256, 256)), 0, 255).astype(np.uint8) for k in range(8)]
    result = {"digits_8_to_28": compare(digits, 28, 28),
              "smooth_256_to_227": compare(smooth, 227, 227),
              "smooth_256_to_64": compare(smooth, 64, 64)}
    for case, numbers in result.items():
        print(f"Pillow BILINEAR vs OpenCV INTER_LINEAR, {case}: max {numbers['max']}, mean "
              f"{numbers['mean']:.2f} (uint8)", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("memory", "jpeg", "resize"))
    parser.add_argument("--gib", type=float, default=1.05, help="size of each memory file")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    # a kill ends through the ``finally`` blocks too, so the large files are deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    if args.only in (None, "resize"):
        results["resize"] = resize()
    if args.only in (None, "jpeg"):
        results["jpeg"] = jpeg(args.rounds, args.steps)
    if args.only in (None, "memory"):
        results["memory"] = memory(args.gib)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
