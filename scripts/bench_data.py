#!/usr/bin/env python3
"""Data-feeding benchmark: memory of streamed sources, the JPEG pipeline against PyTorch's
DataLoader, and the cost of decoding JPEGs in a training step.

    python scripts/bench_data.py                  # everything (writes ~2.2 GiB to /tmp)
    python scripts/bench_data.py --only loader    # one part: memory, loader, jpeg or resize
    python scripts/bench_data.py --only jpeg --nets lenet,caffenet
    python scripts/bench_data.py --gib 0.2        # smaller files, for a quick look

loader   solverkit's ImageData feed, decoding in worker processes and in threads
         (``worker_type``), against a PyTorch ``DataLoader`` over the same JPEG files, with
         the same number of workers (``--workers``, default 2) and the same batch size: a
         ``Dataset``
         decoding with Pillow and applying the same transform (crop, mirror, mean, scale,
         BGR channels first, float32). Two cases: ``caffenet``, 256x256 colour JPEGs
         cropped to 227x227 at random, mirrored, ``mean_value`` [104, 117, 123], batch 64;
         ``lenet``, 28x28 gray JPEGs scaled by 1/256, batch 64. Each measurement is a child
         process (solverkit and PyTorch alternate, the order reversed every round); it
         times ``--loader-batches`` batches after two of warm-up and reports samples/s and
         peak resident memory (VmHWM): its own and that of each worker process (PyTorch's
         are forked, so pages they share with the parent are counted in both; the shared
         batch memory of solverkit's is counted in the parent and in each worker), and
         for solverkit the time of the first batch (which starts the worker processes).

memory   An LMDB of Caffe Datum records (3x64x64 uint8) and a uint8 ``.npy`` file, each
         ``--gib`` GiB (default 1.05), written to a temporary folder in /tmp and deleted at
         the end (also on error or Ctrl-C). For each, a child process trains one epoch of
         a small net (Data -> InnerProduct -> SoftmaxWithLoss, batch 256, shuffled) and
         reports its peak resident memory (VmHWM) and samples per second.
jpeg     A LeNet for 28x28 inputs (Caffe's MNIST LeNet), batch 64: the training step fed by
         an ``ImageData`` layer reading 28x28 gray JPEG files, against the same step fed by
         a ``Data`` layer over the same pixels in memory, and against the JPEG feed
         decoded by one thread (``num_workers: 1``) and in the step (``prefetch: 0``). Rounds alternate between the feeds so
         that load from other processes hits all alike; times are medians of the rounds,
         wall clock and CPU time of the process (all threads, decoding included: less
         disturbed by a busy machine). Also the time to decode one batch alone. With ``--nets caffenet`` also the
         reference CaffeNet (``bench_nets.py``) at batch 8 on 256x256 colour JPEGs cropped
         to 227, against the same pixels in memory.
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


# ---------------------------------------------------------------- loader
LOADER_CASES = {
    # name: picture size, colour, crop, mirror, mean_value, scale, pictures, batch
    "caffenet": {"size": 256, "color": True, "crop": 227, "mirror": True,
                 "mean": [104.0, 117.0, 123.0], "scale": 1.0, "count": 384, "batch": 64},
    "lenet": {"size": 28, "color": False, "crop": 0, "mirror": False, "mean": [],
              "scale": 0.00390625, "count": 2048, "batch": 64},
}


def write_jpegs(folder: Path, count: int, size: int, color: bool) -> Path:
    """``count`` JPEG pictures (quality 90) of ``size`` x ``size``, smooth patterns with
    noise (about the size of photographs of that many pixels), and a list file of them."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size * 40
    lines = []
    for i in range(count):
        planes = [128 + 80 * np.sin(xx / (1 + (i + c) % 5) + i) * np.cos(yy / (1 + i % 3) + c)
                  for c in range(3 if color else 1)]
        picture = np.stack(planes, axis=-1) + rng.normal(0, 10, (size, size, len(planes)))
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        image = Image.fromarray(picture if color else picture[:, :, 0], "RGB" if color else "L")
        image.save(folder / f"{i:05d}.jpg", quality=90)
        lines.append(f"{i:05d}.jpg {i % 10}\n")
    (folder / "list.txt").write_text("".join(lines))
    return folder / "list.txt"


def _peak_mib(pid="self") -> float:
    with open(f"/proc/{pid}/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(status["VmHWM"].split()[0]) / 1024


def loader_solverkit(listing: str, case: dict, workers: int, batches: int,
                     worker_type: str = "auto") -> dict:
    """One child: an ImageData net alone (``worker_type`` threads or processes),
    ``batches`` forwards timed; the time of the first forward (which starts worker
    processes) is reported apart."""
    import solverkit as sk
    transform = {"scale": case["scale"], "crop_size": case["crop"], "mirror": case["mirror"]}
    if case["mean"]:
        transform["mean_value"] = case["mean"]
    net = sk.Net({"name": "feed", "layers": [{
        "name": "data", "type": "ImageData", "top": ["data", "label"], "source": listing,
        "batch_size": case["batch"], "shuffle": True, "is_color": case["color"],
        "num_workers": workers, "worker_type": worker_type, "transform": transform}]},
        phase="TRAIN", seed=0)
    start = time.perf_counter()
    net.forward()
    first = time.perf_counter() - start
    net.forward()
    start = time.perf_counter()
    for _ in range(batches):
        out = net.forward()
    seconds = time.perf_counter() - start
    shape = list(out["data"].shape)
    workers_peak = [_peak_mib(pid) for pid in net.layers[0].dataset.worker_pids]
    net.close()
    return {"seconds": seconds, "shape": shape, "peak_mib": _peak_mib(),
            "workers_peak_mib": workers_peak, "first_batch_s": first}


def loader_torch(listing: str, case: dict, workers: int, batches: int) -> dict:
    """One child: a DataLoader over a Dataset that decodes with Pillow and applies the same
    transform, in ``workers`` worker processes (persistent, so only the first epoch starts
    them), ``batches`` batches timed."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    folder = Path(listing).parent
    items = [(folder / line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1]))
             for line in Path(listing).read_text().splitlines()]
    mean = np.asarray(case["mean"] or [0.0], dtype=np.float32).reshape(-1, 1, 1)
    scale = np.float32(case["scale"])

    class Pictures(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, index):
            path, label = items[index]
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB" if case["color"] else "L"))
            pixels = pixels[:, :, ::-1].transpose(2, 0, 1) if case["color"] else pixels[None]
            crop = case["crop"]
            if crop:
                top = np.random.randint(0, pixels.shape[1] - crop + 1)
                left = np.random.randint(0, pixels.shape[2] - crop + 1)
                pixels = pixels[:, top:top + crop, left:left + crop]
            if case["mirror"] and np.random.randint(2):
                pixels = pixels[:, :, ::-1]
            x = pixels.astype(np.float32)
            x -= mean
            x *= scale
            return torch.from_numpy(x), label

    loader = DataLoader(Pictures(), batch_size=case["batch"], shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    iterator = _endless(loader)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        data, _labels = next(iterator)
    seconds = time.perf_counter() - start
    pids = [worker.pid for worker in getattr(loader, "_iterator", None)._workers] \
        if workers > 0 else []
    workers_peak = [_peak_mib(pid) for pid in pids]
    return {"seconds": seconds, "shape": list(data.shape), "peak_mib": _peak_mib(),
            "workers_peak_mib": workers_peak}


def _endless(loader):
    while True:
        yield from loader


def loader(rounds: int, workers: int, batches: int, cases: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="solverkit-bench-loader-", dir="/tmp"))
    results = {}
    try:
        for name in cases:
            case = LOADER_CASES[name]
            listing = write_jpegs(folder / name, case["count"], case["size"], case["color"])
            # as many batches for the small pictures as it takes to time them well
            count = batches if name == "caffenet" else batches * 5
            contenders = ("processes", "threads", "torch")
            runs: dict[str, list[dict]] = {who: [] for who in contenders}
            for r in range(rounds):
                for who in contenders if r % 2 == 0 else contenders[::-1]:
                    done = subprocess.run(
                        [sys.executable, str(Path(__file__).resolve()), "--child",
                         json.dumps({"who": who, "listing": str(listing), "case": case,
                                     "workers": workers, "batches": count})],
                        capture_output=True, text=True, check=False,
                        env={**os.environ, "PYTHONWARNINGS": "ignore"})
                    if done.returncode:
                        raise RuntimeError(f"{who} {name}: {done.stderr}")
                    runs[who].append(json.loads(done.stdout.strip().splitlines()[-1]))
            summary = {}
            for who, measured in runs.items():
                rates = [count * case["batch"] / m["seconds"] for m in measured]
                summary[who] = {
                    "samples_per_s": statistics.median(rates), "all_samples_per_s": rates,
                    "peak_mib": max(m["peak_mib"] for m in measured),
                    "workers_peak_mib": max((m["workers_peak_mib"] for m in measured),
                                            key=sum),
                    "batch_shape": measured[0]["shape"]}
                if who != "torch":
                    summary[who]["first_batch_s"] = statistics.median(
                        m["first_batch_s"] for m in measured)
            theirs = summary["torch"]
            for who in ("processes", "threads"):
                summary[f"{who}_ratio"] = summary[who]["samples_per_s"] / theirs["samples_per_s"]
            results[name] = summary
            print(f"loader {name} {'x'.join(map(str, theirs['batch_shape']))}, {workers} "
                  f"workers, load {os.getloadavg()[0]:.1f}:", flush=True)
            for who in contenders:
                mine = summary[who]
                title = "DataLoader" if who == "torch" else f"solverkit {who}"
                total = mine["peak_mib"] + sum(mine["workers_peak_mib"])
                workers_mib = " + ".join(f"{m:.0f}" for m in mine["workers_peak_mib"]) or "0"
                ratio = "" if who == "torch" else \
                    f", {summary[f'{who}_ratio']:.2f}x DataLoader's samples/s"
                first = "" if who == "torch" else \
                    f", first batch {mine['first_batch_s']:.2f} s"
                print(f"  {title:21s} {mine['samples_per_s']:6.0f} samples/s{ratio} (rounds "
                      f"{', '.join(f'{a:.0f}' for a in mine['all_samples_per_s'])}); peak "
                      f"{mine['peak_mib']:.0f} MiB + workers {workers_mib} MiB = {total:.0f} "
                      f"MiB{first}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def child(spec: str) -> int:
    job = json.loads(spec)
    if job["who"] == "torch":
        result = loader_torch(job["listing"], job["case"], job["workers"], job["batches"])
    else:       # "processes", "threads", or "solverkit": the layer's default
        kind = "auto" if job["who"] == "solverkit" else job["who"]
        result = loader_solverkit(job["listing"], job["case"], job["workers"], job["batches"],
                                  kind)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- jpeg
def lenet28(layer: dict) -> dict:
    import yaml
    spec = yaml.safe_load((ROOT / "configs/mnist/lenet_net.yaml").read_text())
    layers = [dict(layer, name="mnist", top=["data", "label"])]
    layers += [entry for entry in spec["layers"]
               if entry["type"] not in ("Data", "Accuracy")]
    return {"name": "lenet28", "layers": layers}


def jpeg(rounds: int, steps: int, nets: list[str]) -> dict:
    results = {}
    if "lenet" in nets:
        results["lenet"] = jpeg_lenet(rounds, steps)
    if "caffenet" in nets:
        results["caffenet"] = jpeg_caffenet(max(2, rounds // 2), max(2, steps // 3))
    return results


def _alternate(solvers: dict, rounds: int, steps: int, warm: int):
    """Median milliseconds per step of each solver, rounds alternating (order reversed
    every round), ``warm`` steps before each timed stretch: wall-clock time, and the CPU
    time of the whole process (every thread: decoding included), which a busy machine
    disturbs less."""
    times: dict[str, list[float]] = {name: [] for name in solvers}
    cpu: dict[str, list[float]] = {name: [] for name in solvers}
    for solver in solvers.values():
        solver.step(warm)
    for r in range(rounds):
        names = list(solvers) if r % 2 == 0 else list(solvers)[::-1]
        for name in names:
            solver = solvers[name]
            solver.step(warm)
            start, start_cpu = time.perf_counter(), time.process_time()
            solver.step(steps)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / steps * 1e3)
    return ({name: statistics.median(values) for name, values in times.items()},
            {name: statistics.median(values) for name, values in cpu.items()})


def jpeg_caffenet(rounds: int, steps: int) -> dict:
    """CaffeNet at batch 8, fed from 256x256 colour JPEGs (random 227 crops, mirrors, mean)
    or from the same decoded pixels in memory."""
    import solverkit as sk
    from bench_nets import caffenet
    from solverkit.data import images
    folder = Path(tempfile.mkdtemp(prefix="solverkit-bench-caffenet-", dir="/tmp"))
    try:
        listing = write_jpegs(folder, 64, 256, True)
        pixels = np.stack([images.load_image_u8(folder / f"{i:05d}.jpg") for i in range(64)])
        labels = np.arange(64) % 10
        common = {"batch_size": 8, "shuffle": True,
                  "transform": {"crop_size": 227, "mirror": True,
                                "mean_value": [104.0, 117.0, 123.0]}}
        feeds = {"arrays": {"type": "Data", "source": (pixels, labels), **common},
                 "jpeg": {"type": "ImageData", "source": str(listing), **common}}
        solvers = {}
        for name, layer in feeds.items():
            net = caffenet()
            net["layers"][0] = dict(layer, name="data", top=["data", "label"])
            solvers[name] = sk.Solver({"base_lr": 0.001, "momentum": 0.9, "max_iter": 10**9,
                                       "snapshot": 0, "snapshot_after_train": False,
                                       "random_seed": 1, "snapshot_prefix": str(folder / name)},
                                      net=net, progress=False)
        medians, cpu = _alternate(solvers, rounds, steps, 1)
        for solver in solvers.values():
            solver.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {f"{name}_ms": value for name, value in medians.items()}
    result.update({f"{name}_cpu_ms": value for name, value in cpu.items()})
    result["jpeg_overhead_pct"] = (medians["jpeg"] / medians["arrays"] - 1) * 100
    result["jpeg_cpu_overhead_pct"] = (cpu["jpeg"] / cpu["arrays"] - 1) * 100
    print(f"CaffeNet 227x227, batch 8: step fed by arrays {medians['arrays']:.0f} ms, by JPEG "
          f"files {medians['jpeg']:.0f} ms ({result['jpeg_overhead_pct']:+.1f}%); CPU time "
          f"{cpu['arrays']:.0f} ms and {cpu['jpeg']:.0f} ms "
          f"({result['jpeg_cpu_overhead_pct']:+.1f}%), load {os.getloadavg()[0]:.1f}",
          flush=True)
    return result


def jpeg_lenet(rounds: int, steps: int) -> dict:
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
            "jpeg_one_thread": {"type": "ImageData", "source": str(folder / "list.txt"),
                                "is_color": False, "num_workers": 1, **common},
            "jpeg_in_step": {"type": "ImageData", "source": str(folder / "list.txt"),
                             "is_color": False, "prefetch": 0, **common},
        }
        solvers = {name: sk.Solver({"base_lr": 0.01, "momentum": 0.9, "max_iter": 10**9,
                                    "snapshot": 0, "snapshot_after_train": False,
                                    "random_seed": 1,
                                    "snapshot_prefix": str(folder / name)},
                                   net=lenet28(layer), progress=False)
                   for name, layer in feeds.items()}
        medians, cpu = _alternate(solvers, rounds, steps, 2)
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
    result = {f"{name}_ms": value for name, value in medians.items()}
    result.update({f"{name}_cpu_ms": value for name, value in cpu.items()})
    result["decode_batch_ms"] = statistics.median(decode)
    result["jpeg_overhead_pct"] = (medians["jpeg"] / medians["arrays"] - 1) * 100
    result["jpeg_one_thread_overhead_pct"] = (medians["jpeg_one_thread"] / medians["arrays"]
                                              - 1) * 100
    result["jpeg_in_step_overhead_pct"] = (medians["jpeg_in_step"] / medians["arrays"] - 1) * 100
    print(f"LeNet 28x28, batch 64: step fed by arrays {medians['arrays']:.2f} ms, by JPEG "
          f"files {medians['jpeg']:.2f} ms ({result['jpeg_overhead_pct']:+.1f}%; decoded by "
          f"one thread {medians['jpeg_one_thread']:.2f} ms, "
          f"{result['jpeg_one_thread_overhead_pct']:+.1f}%), by JPEG "
          f"decoded in the step {medians['jpeg_in_step']:.2f} ms "
          f"({result['jpeg_in_step_overhead_pct']:+.1f}%); decoding one batch alone "
          f"{result['decode_batch_ms']:.2f} ms; CPU time per step (all threads) "
          f"{', '.join(f'{name} {value:.2f}' for name, value in cpu.items())} ms, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
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
    parser.add_argument("--only", choices=("memory", "loader", "jpeg", "resize"))
    parser.add_argument("--gib", type=float, default=1.05, help="size of each memory file")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2,
                        help="loader: decoding threads / DataLoader worker processes")
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument("--loader-batches", type=int, default=20,
                        help="loader: batches timed per child (x5 for the small pictures)")
    parser.add_argument("--cases", default="caffenet,lenet", help="loader: the cases")
    parser.add_argument("--nets", default="lenet", help="jpeg: lenet and/or caffenet")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    # a kill ends through the ``finally`` blocks too, so the large files are deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    if args.only in (None, "resize"):
        results["resize"] = resize()
    if args.only in (None, "loader"):
        results["loader"] = loader(args.loader_rounds, args.workers, args.loader_batches,
                                   args.cases.split(","))
    if args.only in (None, "jpeg"):
        results["jpeg"] = jpeg(args.rounds, args.steps, args.nets.split(","))
    if args.only in (None, "memory"):
        results["memory"] = memory(args.gib)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
