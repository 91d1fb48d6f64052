#!/usr/bin/env python3
"""Training-step benchmark: solverkit against PyTorch on the CPU, in the same run.

Each case is a net written in YAML (Caffe's layer names and fillers), trained on
synthetic in-memory data of the right shape (fixed seed) with SGD + momentum:

    mlp_b64, mlp_b256     MLP 784-512-512-10 (ReLU), batch 64 and 256
    lenet_b64             Caffe's MNIST LeNet, batch 64
    cifar10_quick_b100    Caffe's cifar10_quick, batch 100

solverkit is timed through the real ``Solver``: one timed sample is ``solver.step(1)``,
i.e. data layer + forward + backward + the SGD-momentum update. When ``torch`` is
importable, the same net (same initial weights, same per-parameter lr/decay multipliers,
same learning-rate policy) is timed in PyTorch: ``zero_grad``, forward, cross-entropy,
``backward``, ``optimizer.step()``, ``loss.item()``. Both use the same number of threads
(``--threads``, default 2: ``torch.set_num_threads``; numpy's BLAS pool and solverkit's
intra-op threads, ``solverkit.threads.set_num_threads``; MKL's too when solverkit uses
it, see ``solverkit.blas``). After a warm-up, the two alternate in rounds (A/B, then B/A)
so that load from other processes hits both alike. A round is 0.25 s idle (so that one
framework's spinning threads do not slow the other), 0.1 s of untimed steps (the machine
takes some 50 ms to come back to speed after an idle), then ``--steps`` timed steps,
back to back as in training. Reported times are medians, the ratio is the median over
rounds of (solverkit median / PyTorch median).

Peak memory is ``ru_maxrss`` of a child process per framework and case (the child
imports only its own framework, builds the case and trains ``--memory-iters`` steps).

The feeding cases measure what the Data layer adds to a LeNet step: the same net fed by a
``Data`` layer (an ``.npz`` file, the built-in digits, in-memory arrays) against an
``Input`` layer whose blobs were filled once before timing. Both are solverkit, so they
take turns step by step (see ``interleave``); the overhead is the ratio of the medians.

    python scripts/bench.py                       # all cases, a table
    python scripts/bench.py --cases lenet_b64 --json
    python scripts/bench.py --quick --no-torch    # a few iterations, solverkit alone (CI)
    python scripts/bench.py --mpi 2               # LeNet with 1 and 2 MPI ranks, efficiency
    python scripts/bench.py --ssd                 # SSD 300x300 forward against OpenCV's dnn
    python scripts/bench.py --real                # CaffeNet, GoogLeNet, ResNet-50 (bench_nets)
    python scripts/bench.py --load 1              # the same with one busy process beside it
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _threads_argument() -> str:
    return sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "2"


# numpy sizes its BLAS pool once, at import: without threadpoolctl this is the only knob
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads_argument())

# solverkit before numpy: importing it sets OpenBLAS's thread timeout, read as numpy loads
importlib.import_module("solverkit")

import bench_nets  # noqa: E402  (scripts/ is on sys.path when this script runs)
import numpy as np
import yaml

SEED = 0

MLP = """
name: mlp
layers:
  - {name: data, type: Data, top: [data, label], batch_size: 64}
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 512,
     weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 512,
     weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: relu2, type: ReLU, bottom: ip2, top: ip2}
  - {name: ip3, type: InnerProduct, bottom: ip2, top: ip3, num_output: 10,
     weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip3, label], top: loss}
"""

# Caffe's examples/mnist/lenet_train_test.prototxt (TRAIN phase)
LENET = """
name: LeNet
layers:
  - {name: mnist, type: Data, top: [data, label], batch_size: 64}
  - {name: conv1, type: Convolution, bottom: data, top: conv1, num_output: 20, kernel_size: 5,
     stride: 1, weight_filler: {type: xavier}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: pool1, type: Pooling, bottom: conv1, top: pool1, pool: MAX, kernel_size: 2, stride: 2}
  - {name: conv2, type: Convolution, bottom: pool1, top: conv2, num_output: 50, kernel_size: 5,
     stride: 1, weight_filler: {type: xavier}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: pool2, type: Pooling, bottom: conv2, top: pool2, pool: MAX, kernel_size: 2, stride: 2}
  - {name: ip1, type: InnerProduct, bottom: pool2, top: ip1, num_output: 500,
     weight_filler: {type: xavier}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 10,
     weight_filler: {type: xavier}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
"""

# Caffe's examples/cifar10/cifar10_quick_train_test.prototxt (TRAIN phase)
CIFAR10_QUICK = """
name: CIFAR10_quick
layers:
  - {name: cifar, type: Data, top: [data, label], batch_size: 100}
  - {name: conv1, type: Convolution, bottom: data, top: conv1, num_output: 32, pad: 2,
     kernel_size: 5, stride: 1, weight_filler: {type: gaussian, std: 0.0001},
     bias_filler: {type: constant}, param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: pool1, type: Pooling, bottom: conv1, top: pool1, pool: MAX, kernel_size: 3, stride: 2}
  - {name: relu1, type: ReLU, bottom: pool1, top: pool1}
  - {name: conv2, type: Convolution, bottom: pool1, top: conv2, num_output: 32, pad: 2,
     kernel_size: 5, stride: 1, weight_filler: {type: gaussian, std: 0.01},
     bias_filler: {type: constant}, param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: relu2, type: ReLU, bottom: conv2, top: conv2}
  - {name: pool2, type: Pooling, bottom: conv2, top: pool2, pool: AVE, kernel_size: 3, stride: 2}
  - {name: conv3, type: Convolution, bottom: pool2, top: conv3, num_output: 64, pad: 2,
     kernel_size: 5, stride: 1, weight_filler: {type: gaussian, std: 0.01},
     bias_filler: {type: constant}, param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: relu3, type: ReLU, bottom: conv3, top: conv3}
  - {name: pool3, type: Pooling, bottom: conv3, top: pool3, pool: AVE, kernel_size: 3, stride: 2}
  - {name: ip1, type: InnerProduct, bottom: pool3, top: ip1, num_output: 64,
     weight_filler: {type: gaussian, std: 0.1}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 10,
     weight_filler: {type: gaussian, std: 0.1}, bias_filler: {type: constant},
     param: [{lr_mult: 1}, {lr_mult: 2}]}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
"""

# LeNet shrunk to the 8x8 built-in digits (3x3 kernels, padded), for the feeding case
LENET_DIGITS = """
name: LeNet_digits
layers:
  - {name: digits, type: Data, top: [data, label], batch_size: 64}
  - {name: conv1, type: Convolution, bottom: data, top: conv1, num_output: 20, kernel_size: 3,
     pad: 1, weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: pool1, type: Pooling, bottom: conv1, top: pool1, pool: MAX, kernel_size: 2, stride: 2}
  - {name: conv2, type: Convolution, bottom: pool1, top: conv2, num_output: 50, kernel_size: 3,
     pad: 1, weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: pool2, type: Pooling, bottom: conv2, top: pool2, pool: MAX, kernel_size: 2, stride: 2}
  - {name: ip1, type: InnerProduct, bottom: pool2, top: ip1, num_output: 500,
     weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 10,
     weight_filler: {type: xavier}, bias_filler: {type: constant}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
"""

# Caffe's solvers for these examples, with the learning-rate policy they use
SGD_INV = {"type": "SGD", "base_lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
           "lr_policy": "inv", "gamma": 0.0001, "power": 0.75}
SGD_FIXED = {"type": "SGD", "base_lr": 0.001, "momentum": 0.9, "weight_decay": 0.004,
             "lr_policy": "fixed"}


@dataclass
class Case:
    net: str                 # YAML of the TRAIN net; its first layer is the Data layer
    batch: int
    shape: tuple             # one sample, CHW
    solver: dict
    classes: int = 10
    batches_in_set: int = 8  # size of the synthetic data set, in batches


CASES = {
    "mlp_b64": Case(MLP, 64, (1, 28, 28), SGD_INV),
    "mlp_b256": Case(MLP, 256, (1, 28, 28), SGD_INV),
    "lenet_b64": Case(LENET, 64, (1, 28, 28), SGD_INV),
    "cifar10_quick_b100": Case(CIFAR10_QUICK, 100, (3, 32, 32), SGD_FIXED),
}

# --scaling: the convnets at several batch sizes (net, sample shape, solver, batches)
SCALING = {"lenet": (LENET, (1, 28, 28), SGD_INV, (16, 64, 256, 1024)),
           "cifar10_quick": (CIFAR10_QUICK, (3, 32, 32), SGD_FIXED, (25, 100, 400))}


def scaling_cases() -> dict:
    """``lenet_b16`` … ``cifar10_quick_b400``: the cases ``--scaling`` times."""
    return {f"{name}_b{batch}": Case(net, batch, shape, solver)
            for name, (net, shape, solver, batches) in SCALING.items() for batch in batches}


def find_case(name: str) -> Case:
    return CASES[name] if name in CASES else scaling_cases()[name]


# feeding case -> (net, Data layer fields besides batch_size); the baseline is an Input layer
FEEDING = {
    "feed_lenet_npz": (LENET, {"source": "npz", "transform": {"scale": 0.00390625}}),
    "feed_lenet_memory": (LENET, {"source": "memory", "transform": {"scale": 0.00390625}}),
    "feed_lenet_digits": (LENET_DIGITS, {"source": "builtin:digits/train", "shuffle": True,
                                         "transform": {"scale": 0.0625}}),
}


@dataclass
class Settings:
    warmup: int = 5
    rounds: int = 20                 # short rounds: load from other processes hits both alike
    steps: int = 5                   # timed steps per framework per round
    memory_iters: int = 30
    gap: float = 0.25                # seconds idle before each round (see ``alternate``)
    round_warmup: float = 0.1        # seconds of untimed steps after the idle, every round
    feed_pairs: int = 400            # feeding cases: timed Data/Input step pairs
    threads: int = 2
    torch: bool = True
    memory: bool = True
    resolution: int | None = None    # real-size nets: the input side instead of theirs
    load: int = 0                    # busy processes running beside the benchmark (--load)
    load_average_before_load: float | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sk-bench-")))


# --------------------------------------------------------------------------- threads, BLAS
def limit_threads(threads: int):
    """numpy's BLAS pool (threadpoolctl when installed) and solverkit's intra-op threads to
    ``threads``; returns the BLAS pool's description."""
    from solverkit import threads as intra_op
    intra_op.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return [{"note": "threadpoolctl not installed; BLAS threads from OPENBLAS_NUM_THREADS/"
                         "OMP_NUM_THREADS, set by this script before numpy was imported"}]
    threadpool_limits(threads, user_api="blas")
    return [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                       "threading_layer", "filepath")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def synthetic(case: Case, seed: int = SEED):
    """A fixed data set of ``batches_in_set`` batches: x ~ N(0, 1) float32, labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    n = case.batch * case.batches_in_set
    x = rng.standard_normal((n, *case.shape), dtype=np.float32)
    y = rng.integers(0, case.classes, n).astype(np.float32)
    return x, y


# --------------------------------------------------------------------------- solverkit side
def net_dict(net_yaml: str, batch: int, data_fields: dict) -> dict:
    spec = yaml.safe_load(net_yaml)
    data = spec["layers"][0]
    data.update({"batch_size": batch, "shuffle": False})
    data.update(data_fields)
    return spec


def input_net_dict(net_yaml: str, batch: int, shape: tuple) -> dict:
    """The same net with an Input layer in place of the Data layer."""
    spec = yaml.safe_load(net_yaml)
    data = spec["layers"][0]
    spec["layers"][0] = {"name": data["name"], "type": "Input", "top": data["top"],
                         "shape": [[batch, *shape], [batch]]}
    # Input blobs get diffs (Data tops do not): skip that, so both do the same work
    spec["layers"][1]["propagate_down"] = [False]
    return spec


def make_solver(net, solver_fields: dict, workdir: Path, tag: str):
    import solverkit as sk
    spec = dict(solver_fields, max_iter=10**9, display=0, test_interval=0, snapshot=0,
                snapshot_after_train=False, random_seed=SEED,
                snapshot_prefix=str(workdir / tag))
    return sk.Solver(spec, net=net)


def solverkit_case(case: Case, settings: Settings, data=None):
    x, y = data if data is not None else synthetic(case)
    return make_solver(net_dict(case.net, case.batch, {"source": (x, y)}), case.solver,
                       settings.workdir, "sk")


def solverkit_loss(solver) -> float:
    return float(solver.net.blobs["loss"].data)


# --------------------------------------------------------------------------- PyTorch side
class TorchCase:
    """The case's net in PyTorch, translated layer by layer from the same YAML."""

    def __init__(self, case: Case, data, threads: int):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        self.torch = torch
        self.batch = case.batch
        x, y = data
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y).long()
        self.cursor = 0
        spec = yaml.safe_load(case.net)
        modules, self.by_layer, groups = [], {}, {}
        probe = torch.zeros((1, *case.shape))
        for lspec in spec["layers"][1:]:
            kind = lspec["type"]
            if kind == "Convolution":
                k, pad = lspec["kernel_size"], lspec.get("pad", 0)
                module = nn.Conv2d(probe.shape[1], lspec["num_output"], k,
                                   stride=lspec.get("stride", 1), padding=pad)
            elif kind == "Pooling":
                pool = nn.MaxPool2d if lspec["pool"] == "MAX" else nn.AvgPool2d
                # Caffe rounds pooled sizes up
                module = pool(lspec["kernel_size"], lspec.get("stride", 1),
                              lspec.get("pad", 0), ceil_mode=True)
            elif kind == "ReLU":
                module = nn.ReLU(inplace=True)
            elif kind == "InnerProduct":
                if probe.dim() > 2:
                    modules.append(nn.Flatten())
                    probe = modules[-1](probe)
                module = nn.Linear(probe.shape[1], lspec["num_output"])
            elif kind == "SoftmaxWithLoss":
                continue
            else:
                raise ValueError(f"no PyTorch translation for layer type {kind}")
            modules.append(module)
            probe = module(probe)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self.by_layer[lspec["name"]] = module
                mults = lspec.get("param", [])
                for j, tensor in enumerate((module.weight, module.bias)):
                    m = mults[j] if j < len(mults) else {}
                    key = (m.get("lr_mult", 1.0), m.get("decay_mult", 1.0))
                    groups.setdefault(key, []).append(tensor)
        self.model = nn.Sequential(*modules)
        s = case.solver
        self.optimizer = torch.optim.SGD(
            [{"params": params, "lr": s["base_lr"] * lr, "weight_decay": s["weight_decay"] * dm}
             for (lr, dm), params in groups.items()],
            lr=s["base_lr"], momentum=s["momentum"])
        if s["lr_policy"] == "inv":
            def policy(it):
                return (1 + s["gamma"] * it) ** -s["power"]
        else:
            def policy(it):
                return 1.0
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, policy)
        self.loss = float("nan")

    def copy_weights_from(self, net) -> None:
        """Start from solverkit's initial weights (Caffe and PyTorch lay them out alike)."""
        with self.torch.no_grad():
            for name, module in self.by_layer.items():
                module.weight.copy_(self.torch.from_numpy(net.params[name][0].data))
                module.bias.copy_(self.torch.from_numpy(net.params[name][1].data))

    def step(self) -> None:
        torch = self.torch
        start = self.cursor * self.batch
        self.cursor = (self.cursor + 1) % (self.x.shape[0] // self.batch)
        xb, yb = self.x[start:start + self.batch], self.y[start:start + self.batch]
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(xb), yb)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.loss = loss.item()


def torch_available() -> bool:
    """Whether torch is installed (without importing it: see ``child_peak_rss``)."""
    return importlib.util.find_spec("torch") is not None


# --------------------------------------------------------------------------- --load
# one single-threaded process that keeps a core busy: plain Python, no library threads
SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_processes(n: int):
    """Run ``n`` busy processes (a pure-Python spin loop each) for the duration of the
    ``with``; they are killed on the way out, whether the run ends, fails or is
    interrupted (Ctrl-C, or SIGTERM, turned into SystemExit here). Yields their pids."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    children = []
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        for _ in range(n):
            children.append(subprocess.Popen([sys.executable, "-c", SPIN], env=env,
                                             stdin=subprocess.DEVNULL))
        print(f"load: {n} busy processes, pids {' '.join(str(c.pid) for c in children)}",
              file=sys.stderr, flush=True)
        yield [c.pid for c in children]
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- timing
def time_steps(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def alternate(steps: dict, settings: Settings) -> dict:
    """Warm each up, then time them in rounds, alternating their order; per-step seconds."""
    for step in steps.values():
        time_steps(step, settings.warmup)
    names = list(steps)
    rounds = {name: [] for name in names}
    for r in range(settings.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            # Idle first: OpenBLAS workers busy-wait ~0.1 s after their last call (OpenMP's
            # a little too) and would take a core from whichever framework runs next.
            time.sleep(settings.gap)
            # After an idle the machine needs some 50 ms to come back to speed (each step
            # of a round is faster than the one before until then): steps of a training
            # run follow one another, so the timed steps are those after this warm-up.
            start = time.perf_counter()
            while True:
                steps[name]()
                if time.perf_counter() - start >= settings.round_warmup:
                    break
            rounds[name].append(time_steps(steps[name], settings.steps))
    return rounds


def interleave(steps: dict, pairs: int, warmup: int) -> dict:
    """Warm each up, then time them one step each in turn, the order reversed every other
    turn; per-step seconds. For two solverkit nets, no idle is needed between them, and
    step-by-step turns cancel the machine's drifts that rounds of steps do not (measured:
    three identical nets in rounds of 5 steps differed by up to 13%, step by step by 2%)."""
    for step in steps.values():
        time_steps(step, warmup)
    names = list(steps)
    times = {name: [] for name in names}
    for turn in range(pairs):
        for name in names if turn % 2 == 0 else names[::-1]:
            times[name] += time_steps(steps[name], 1)
    return times


def summarize(rounds: list[list[float]]) -> float:
    return statistics.median(t for times in rounds for t in times)


def median_ratio(a: list[list[float]], b: list[list[float]]) -> float:
    return statistics.median(statistics.median(x) / statistics.median(y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- memory (children)
def child_peak_rss(framework: str, name: str, settings: Settings) -> float:
    """Peak RSS in MiB of a fresh process that trains case ``name`` with ``framework`` only.

    Linux carries the parent's resident size at fork into the child's ``ru_maxrss`` across
    ``exec``, so children are started while this process is still small (before any net
    or torch is loaded here): see ``main``.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework, "--cases", name,
           "--memory-iters", str(settings.memory_iters), "--threads", str(settings.threads),
           "--workdir", str(settings.workdir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child for {framework} {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def run_child(framework: str, name: str, settings: Settings) -> None:
    limit_threads(settings.threads)
    case = find_case(name)
    data = synthetic(case)
    if framework == "solverkit":
        solver = solverkit_case(case, settings, data)
        for _ in range(settings.memory_iters):
            solver.step(1)
    else:
        model = TorchCase(case, data, settings.threads)
        for _ in range(settings.memory_iters):
            model.step()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak_kib / 1024}))


# --------------------------------------------------------------------------- the cases
def run_case(name: str, settings: Settings) -> dict:
    case = find_case(name)
    data = synthetic(case)
    solver = solverkit_case(case, settings, data)
    steps = {"solverkit": lambda: solver.step(1)}
    model = None
    if settings.torch:
        model = TorchCase(case, data, settings.threads)
        model.copy_weights_from(solver.net)
        steps["torch"] = model.step
    result = {"case": name, "batch": case.batch}
    if model is not None:
        # the same weights and the same first batch give the same first loss
        solver.step(1)
        model.step()
        result["first_loss"] = {"solverkit": solverkit_loss(solver), "torch": model.loss}
    rounds = alternate(steps, settings)
    for framework, times in rounds.items():
        ms = summarize(times) * 1e3
        result[f"{framework}_ms"] = ms
        result[f"{framework}_samples_per_s"] = case.batch / ms * 1e3
    if model is not None:
        result["ratio"] = median_ratio(rounds["solverkit"], rounds["torch"])
    solver.net.close()
    return result


def measure_memory(name: str, settings: Settings) -> dict:
    frameworks = ["solverkit", "torch"] if settings.torch else ["solverkit"]
    result = {f"{f}_peak_rss_mib": child_peak_rss(f, name, settings) for f in frameworks}
    if settings.torch:
        result["rss_ratio"] = result["solverkit_peak_rss_mib"] / result["torch_peak_rss_mib"]
    return result


def run_feeding(name: str, settings: Settings) -> dict:
    """A Data-fed LeNet step against the same step with its Input blobs filled beforehand."""
    net_yaml, fields = FEEDING[name]
    fields = copy.deepcopy(fields)
    digits = fields["source"].startswith("builtin:")
    shape = (1, 8, 8) if digits else (1, 28, 28)
    case = Case(net_yaml, 64, shape, SGD_INV, batches_in_set=32)
    rng = np.random.default_rng(SEED)
    n = case.batch * case.batches_in_set
    # pixel values as the real sources store them: 0..16 for the digits, 0..255 for MNIST
    x = rng.integers(0, 17 if digits else 256, (n, *shape)).astype(np.float32)
    y = rng.integers(0, case.classes, n).astype(np.float32)
    if fields["source"] == "npz":
        path = settings.workdir / "feed.npz"
        np.savez(path, x=x, y=y)
        fields["source"] = str(path)
    elif fields["source"] == "memory":
        fields["source"] = (x, y)
    fed = make_solver(net_dict(net_yaml, case.batch, fields), case.solver, settings.workdir,
                      "fed")
    preloaded = make_solver(input_net_dict(net_yaml, case.batch, shape), case.solver,
                            settings.workdir, "pre")
    scale = fields["transform"]["scale"]
    preloaded.net.set_input("data", x[:case.batch] * scale)
    preloaded.net.set_input("label", y[:case.batch])
    times = interleave({"data": lambda: fed.step(1), "input": lambda: preloaded.step(1)},
                       settings.feed_pairs, settings.warmup)
    fed.net.close()
    data, preloaded_ms = (statistics.median(times[k]) * 1e3 for k in ("data", "input"))
    return {"case": name, "batch": case.batch, "data_layer_ms": data, "input_ms": preloaded_ms,
            "overhead": data / preloaded_ms - 1}


# --------------------------------------------------------------------------- report
def machine(blas, settings: Settings) -> dict:
    from solverkit import blas as products
    from solverkit import dnnl as convolutions
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "cores": os.cpu_count(), "blas": blas,
            "solverkit_products": products.describe(),
            "solverkit_convolutions": convolutions.describe(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            # other processes on the machine skew every number; this says how busy it was
            "load_average_1min": os.getloadavg()[0],
            # --load: busy processes beside the run, and the load average before they started
            "busy_processes": settings.load,
            "load_average_1min_before_busy": settings.load_average_before_load}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def print_header(report: dict) -> None:
    m = report["machine"]
    blas = m["blas"][0] if m["blas"] else {}
    print(f"# {m['cores']} cores, Python {m['python']}, numpy {m['numpy']} "
          f"({blas.get('internal_api', '?')} {blas.get('version', '')} "
          f"{blas.get('architecture', '')}, {blas.get('num_threads', '?')} threads), "
          f"torch {m['torch']}, OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}, load average "
          f"{m['load_average_1min']:.1f} before, {m['load_average_1min_after']:.1f} after")
    if m["busy_processes"]:
        print(f"# --load {m['busy_processes']}: {m['busy_processes']} busy processes for the "
              f"whole run (load average {m['load_average_1min_before_busy']:.1f} before they "
              f"started)")
    print(f"# solverkit's products: {m['solverkit_products']}; convolutions: "
          f"{m['solverkit_convolutions']}")


def print_table(report: dict) -> None:
    head = (f"{'case':<20}{'solverkit ms':>13}{'torch ms':>10}{'ratio':>7}"
            f"{'sk samples/s':>14}{'torch samples/s':>16}{'sk MiB':>8}{'torch MiB':>10}"
            f"{'mem ratio':>10}")
    print(head)
    def num(r, key, fmt):
        return format(r[key], fmt) if key in r else format("-", f">{fmt.split('.')[0]}")

    for r in report["cases"]:
        print(f"{r['case']:<20}{num(r, 'solverkit_ms', '13.2f')}{num(r, 'torch_ms', '10.2f')}"
              f"{num(r, 'ratio', '7.2f')}{num(r, 'solverkit_samples_per_s', '14.0f')}"
              f"{num(r, 'torch_samples_per_s', '16.0f')}{num(r, 'solverkit_peak_rss_mib', '8.0f')}"
              f"{num(r, 'torch_peak_rss_mib', '10.0f')}{num(r, 'rss_ratio', '10.2f')}")
    for r in report["cases"]:
        first = r.get("first_loss")
        if first and abs(first["solverkit"] - first["torch"]) > 1e-4 * max(1.0, abs(first["torch"])):
            print(f"warning: {r['case']}: first losses differ (solverkit {first['solverkit']:.6g},"
                  f" torch {first['torch']:.6g}): the two nets are not the same computation")
    if report["feeding"]:
        print(f"\n{'feeding':<20}{'Data ms':>10}{'Input ms':>10}{'overhead':>10}")
        for r in report["feeding"]:
            print(f"{r['case']:<20}{r['data_layer_ms']:>10.2f}{r['input_ms']:>10.2f}"
                  f"{r['overhead']:>10.1%}")


def print_markdown(report: dict) -> None:
    """The table as Markdown (the README's Performance section)."""
    m = report["machine"]
    blas = m["blas"][0] if m["blas"] else {}
    print(f"{m['cores']} cores, numpy {m['numpy']} with {blas.get('internal_api', '?')} "
          f"{blas.get('version', '')} ({blas.get('architecture', '')}), torch {m['torch']}, "
          f"{report['settings']['threads']} threads; load average {m['load_average_1min']:.1f} "
          f"before, {m['load_average_1min_after']:.1f} after; solverkit's products on "
          f"{m['solverkit_products']}, convolutions on {m['solverkit_convolutions']}.\n")
    if report["cases"]:
        print("| case | solverkit ms/step | PyTorch ms/step | ratio | solverkit samples/s "
              "| PyTorch samples/s | peak RSS solverkit / PyTorch (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    def num(r, key, fmt):
        return format(r[key], fmt) if key in r else "–"

    for r in report["cases"]:
        print(f"| {r['case']} | {num(r, 'solverkit_ms', '.2f')} | {num(r, 'torch_ms', '.2f')} | "
              f"{num(r, 'ratio', '.2f')} | {num(r, 'solverkit_samples_per_s', '.0f')} | "
              f"{num(r, 'torch_samples_per_s', '.0f')} | "
              f"{num(r, 'solverkit_peak_rss_mib', '.0f')} / {num(r, 'torch_peak_rss_mib', '.0f')} |")
    if report["feeding"]:
        print("\n| feeding case | Data layer ms/step | Input (preloaded) ms/step | overhead |")
        print("|---|---:|---:|---:|")
        for r in report["feeding"]:
            print(f"| {r['case']} | {r['data_layer_ms']:.2f} | {r['input_ms']:.2f} | "
                  f"{r['overhead']:+.1%} |")


def run_scaling(settings: Settings, as_json: bool) -> None:
    """``--scaling``: every scaling case (see ``SCALING``) timed as ``run_case`` times the
    others, with the peak RSS of each; a table of step time, samples/s and time per sample."""
    names = list(scaling_cases())
    memory = {name: measure_memory(name, settings) for name in names} if settings.memory else {}
    blas = limit_threads(settings.threads)
    report = {"machine": machine(blas, settings), "cases": []}
    for name in names:
        report["cases"].append({**run_case(name, settings), **memory.get(name, {})})
        print(f"done: {name}", file=sys.stderr)
    report["machine"]["load_average_1min_after"] = os.getloadavg()[0]
    if as_json:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    print(f"# {m['cores']} cores, numpy {m['numpy']}, torch {m['torch']}, "
          f"{settings.threads} threads; products: {m['solverkit_products']}; convolutions: "
          f"{m['solverkit_convolutions']}; load average {m['load_average_1min']:.1f} before, "
          f"{m['load_average_1min_after']:.1f} after")
    print(f"{'case':<20}{'batch':>6}{'sk ms':>9}{'torch ms':>10}{'ratio':>7}{'sk µs/sample':>14}"
          f"{'torch µs/sample':>17}{'sk samples/s':>14}{'torch samples/s':>16}{'sk MiB':>8}"
          f"{'torch MiB':>10}")
    for r in report["cases"]:
        def cell(key, fmt, width, scale=1.0, r=r):
            return format(r[key] * scale, f"{width}{fmt}") if key in r else format("-", f">{width}")
        print(f"{r['case']:<20}{r['batch']:>6}{cell('solverkit_ms', '.2f', 9)}"
              f"{cell('torch_ms', '.2f', 10)}{cell('ratio', '.2f', 7)}"
              f"{cell('solverkit_ms', '.1f', 14, 1e3 / r['batch'])}"
              f"{cell('torch_ms', '.1f', 17, 1e3 / r['batch'])}"
              f"{cell('solverkit_samples_per_s', '.0f', 14)}"
              f"{cell('torch_samples_per_s', '.0f', 16)}{cell('solverkit_peak_rss_mib', '.0f', 8)}"
              f"{cell('torch_peak_rss_mib', '.0f', 10)}")


# --------------------------------------------------------------------------- inference
# inference case -> training case whose net it runs (TEST forward of its deploy form)
INFERENCE = {"infer_lenet_b64": ("lenet_b64", 64), "infer_cifar10_quick_b64":
             ("cifar10_quick_b100", 64)}


def run_inference(name: str, settings: Settings) -> dict:
    """One TEST forward of the deploy net (Softmax probabilities out) on a fixed batch:
    solverkit's ``Net.forward`` (a net built with ``inference=True, outputs_only=True``, as
    ``solverkit predict`` builds it), PyTorch in eval mode under ``no_grad`` (the same weights,
    a softmax on the scores), and onnxruntime on solverkit's ONNX export, same threads."""
    import solverkit as sk
    base, batch = INFERENCE[name]
    case = copy.copy(CASES[base])
    case.batch = batch
    data = synthetic(case)
    net = sk.Net(sk.deploy_net(net_dict(case.net, batch, {"source": data})), phase="TEST",
                 seed=SEED, inference=True, outputs_only=True)
    x = data[0][:batch]
    net.set_input("data", x)
    net.reshape()
    steps = {"solverkit": net.forward}
    result = {"case": name, "batch": batch}
    outputs = {"solverkit": lambda: net.forward()["prob"]}
    if settings.torch:
        import torch
        model = TorchCase(case, data, settings.threads)
        model.copy_weights_from(net)
        model.model.eval()
        xt = torch.from_numpy(x)

        def torch_forward():
            with torch.no_grad():
                return torch.softmax(model.model(xt), dim=1)
        steps["torch"] = torch_forward
        outputs["torch"] = lambda: torch_forward().numpy()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        from solverkit.export.onnx_model import to_onnx
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(to_onnx(net).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {"data": x}
        steps["onnxruntime"] = lambda: session.run(None, feeds)
        outputs["onnxruntime"] = lambda: session.run(None, feeds)[0]
    reference = outputs["solverkit"]()
    result["max_abs_diff"] = {k: float(np.abs(f() - reference).max())
                              for k, f in outputs.items() if k != "solverkit"}
    rounds = alternate(steps, settings)
    for framework, times in rounds.items():
        ms = summarize(times) * 1e3
        result[f"{framework}_ms"] = ms
        result[f"{framework}_samples_per_s"] = batch / ms * 1e3
    for other in ("torch", "onnxruntime"):
        if other in rounds:
            result[f"ratio_{other}"] = median_ratio(rounds["solverkit"], rounds[other])
    net.close()
    return result


# --------------------------------------------------------------------------- real-size nets
# Caffe's ImageNet solvers: SGD with momentum, the step policy (constant over a benchmark)
SGD_STEP = {"type": "SGD", "base_lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
            "lr_policy": "step", "gamma": 0.1, "stepsize": 100000}


def log_difference(probabilities: np.ndarray, reference: np.ndarray) -> float:
    """The largest difference of the logarithms of two arrays of probabilities (the
    relative error of the smallest ones counts as much as that of the largest)."""
    tiny = np.finfo(np.float32).tiny
    return float(np.abs(np.log(np.maximum(probabilities, tiny))
                        - np.log(np.maximum(reference, tiny))).max())


def real_cases() -> dict:
    """``caffenet_train_b8`` … ``resnet50_infer_b16`` -> (mode, net, batch)."""
    cases = {}
    for net in bench_nets.NETS:
        cases[f"{net}_train_b8"] = ("train", net, 8)
        for batch in (1, 16):
            cases[f"{net}_infer_b{batch}"] = ("infer", net, batch)
    return cases


REAL = real_cases()


class RealCase:
    """One real-size case: the net at ``side``×``side`` (its published size unless
    ``settings.resolution``), a fixed synthetic ImageNet-like data set and, for inference,
    BatchNorm statistics as a trained net has them (a fresh net's are all zero)."""

    def __init__(self, name: str, settings: Settings, build: bool = True):
        import solverkit as sk
        self.name = name
        self.mode, net, self.batch = REAL[name]
        make, side = bench_nets.NETS[net]
        self.side = settings.resolution or side
        self.spec = make()
        self.has_dropout = any(l["type"] == "Dropout" for l in self.spec["layers"])
        rng = np.random.default_rng(SEED)
        n = self.batch * (2 if self.mode == "train" else 1)
        self.x = rng.standard_normal((n, 3, self.side, self.side), dtype=np.float32)
        self.y = rng.integers(0, bench_nets.CLASSES, n).astype(np.float32)
        self.input_shape = (self.batch, 3, self.side, self.side)
        self.solver = self.net = None
        if not build:               # the spec and data only (a PyTorch memory child)
            return
        if self.mode == "train":
            spec = copy.deepcopy(self.spec)
            spec["layers"][0].update({"batch_size": self.batch, "shuffle": False,
                                      "source": (self.x, self.y)})
            self.solver = make_solver(spec, SGD_STEP, settings.workdir, name)
        else:
            # deployed as solverkit predict builds it: weights fixed, forward as inference,
            # only the outputs kept (BatchNorm's blobs stay writable)
            self.net = sk.Net(self.deploy_spec(), phase="TEST", seed=SEED, inference=True,
                              outputs_only=True)
            self.trained_statistics(self.net)
            self.net.set_input("data", self.x)
            self.net.reshape()

    def deploy_spec(self) -> dict:
        """Input ``data`` in place of the data layer, Softmax ``prob`` in place of the loss."""
        spec = copy.deepcopy(self.spec)
        spec["layers"][0] = {"name": "data", "type": "Input", "top": "data",
                             "shape": [list(self.input_shape)]}
        loss = spec["layers"][-1]
        spec["layers"][-1] = {"name": "prob", "type": "Softmax", "bottom": loss["bottom"][0],
                              "top": "prob"}
        return spec

    @staticmethod
    def trained_statistics(net) -> None:
        """BatchNorm blobs as after training: sums of means and variances, factor 2 (so
        that every reader has to divide by it)."""
        rng = np.random.default_rng(SEED + 1)
        for layer in net.layers:
            if layer.type == "BatchNorm":
                mean, var, factor = layer.blobs
                mean.data[...] = 2 * rng.normal(0, 0.1, mean.data.shape)
                var.data[...] = 2 * rng.uniform(0.5, 1.5, var.data.shape)
                factor.data[...] = 2

    def step(self) -> None:
        if self.solver is not None:
            self.solver.step(1)
        else:
            self.net.forward()

    def output(self) -> np.ndarray:
        return self.net.forward()["prob"].copy()

    def close(self) -> None:
        (self.solver.net if self.solver is not None else self.net).close()


class RealTorch:
    """The same case in PyTorch (``bench_torch.GraphModel``), solverkit's weights copied."""

    def __init__(self, case: RealCase, threads: int, sk_net=None):
        import torch
        from bench_torch import GraphModel
        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        self.torch, self.case = torch, case
        self.x, self.y = torch.from_numpy(case.x), torch.from_numpy(case.y)
        self.cursor, self.loss = 0, float("nan")
        if case.mode == "train":
            self.model = GraphModel(case.spec, {"data": case.input_shape,
                                                "label": (case.batch,)})
            groups = self.model.param_groups(SGD_STEP["base_lr"], SGD_STEP["weight_decay"])
            self.optimizer = torch.optim.SGD(groups, lr=SGD_STEP["base_lr"],
                                             momentum=SGD_STEP["momentum"])
            self.model.train()
        else:
            self.model = GraphModel(case.deploy_spec(), {"data": case.input_shape})
            self.model.eval()
        if sk_net is not None:
            self.model.copy_weights_from(sk_net)

    def step(self) -> None:
        torch, batch = self.torch, self.case.batch
        if self.case.mode == "infer":
            with torch.no_grad():
                self.model({"data": self.x[:batch]})
            return
        start = self.cursor * batch
        self.cursor = (self.cursor + 1) % (self.x.shape[0] // batch)
        self.optimizer.zero_grad()
        loss = self.model({"data": self.x[start:start + batch],
                           "label": self.y[start:start + batch]})["loss"]
        loss.backward()
        self.optimizer.step()
        self.loss = loss.item()

    def output(self) -> np.ndarray:
        with self.torch.no_grad():
            return self.model({"data": self.x[:self.case.batch]})["prob"].numpy()


def onnx_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def opencv_net(prototxt: Path, caffemodel: Path, threads: int):
    import cv2
    cv2.setNumThreads(threads)
    return cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))


def export_real(case: RealCase, workdir: Path) -> dict:
    """The inference case's net as ONNX and as ``.caffemodel`` + deploy ``.prototxt``."""
    from solverkit.caffe.export import export_caffe
    files = {}
    if importlib.util.find_spec("onnx") is not None:
        from solverkit.export.onnx_model import to_onnx
        files["onnx"] = workdir / f"{case.name}.onnx"
        files["onnx"].write_bytes(to_onnx(case.net).SerializeToString())
    caffemodel, prototxt = export_caffe(case.deploy_spec(), case.net,
                                        workdir / f"{case.name}.caffemodel")
    files.update(caffemodel=caffemodel, prototxt=prototxt)
    return files


def first_loss_check(case: RealCase, model: RealTorch) -> dict:
    """The same weights give the same first loss. Dropout draws different masks in the two
    frameworks, so a net with Dropout is compared in TEST form (a solverkit TEST net with
    the solver's weights against the torch model in ``eval()``) on the first batch."""
    import solverkit as sk
    torch = model.torch
    if not case.has_dropout:
        case.solver.step(1)
        model.step()
        sk_loss = float(case.solver.net.blobs["loss"].data)
        return {"solverkit": sk_loss, "torch": model.loss,
                "max_abs_diff": abs(sk_loss - model.loss), "phase": "TRAIN"}
    spec = copy.deepcopy(case.spec)
    spec["layers"][0] = {"name": "data", "type": "Input", "top": ["data", "label"],
                         "shape": [list(case.input_shape), [case.batch]]}
    test = sk.Net(spec, phase="TEST", seed=SEED)
    for name, blobs in case.solver.net.params.items():
        for mine, theirs in zip(test.params[name], blobs):
            mine.data[...] = theirs.data
    sk_loss = float(test.forward(data=case.x[:case.batch], label=case.y[:case.batch])["loss"])
    test.close()
    model.model.eval()
    with torch.no_grad():
        torch_loss = float(model.model({"data": model.x[:case.batch],
                                        "label": model.y[:case.batch]})["loss"])
    model.model.train()
    return {"solverkit": sk_loss, "torch": torch_loss,
            "max_abs_diff": abs(sk_loss - torch_loss), "phase": "TEST"}


def run_real(name: str, settings: Settings) -> dict:
    """A real-size case: the training step against PyTorch, or the deploy forward against
    PyTorch, onnxruntime (our ONNX export) and OpenCV (our ``.caffemodel`` export)."""
    case = RealCase(name, settings)
    result = {"case": name, "batch": case.batch, "side": case.side}
    steps = {"solverkit": case.step}
    outputs = {}
    if settings.torch:
        model = RealTorch(case, settings.threads,
                          case.solver.net if case.solver is not None else case.net)
        steps["torch"] = model.step
        if case.mode == "train":
            result["first_loss"] = first_loss_check(case, model)
        else:
            outputs["torch"] = model.output
    if case.mode == "infer":
        files = export_real(case, settings.workdir)
        x = case.x[:case.batch]
        if "onnx" in files and importlib.util.find_spec("onnxruntime") is not None:
            session = onnx_session(files["onnx"].read_bytes(), settings.threads)
            steps["onnxruntime"] = lambda: session.run(None, {"data": x})
            outputs["onnxruntime"] = lambda: session.run(None, {"data": x})[0]
        if importlib.util.find_spec("cv2") is not None:
            cv_net = opencv_net(files["prototxt"], files["caffemodel"], settings.threads)

            def opencv_forward():
                cv_net.setInput(x)
                return cv_net.forward()
            steps["opencv"] = opencv_forward
            outputs["opencv"] = lambda: opencv_forward().reshape(case.batch, -1)
        reference = case.output()
        got = {k: f() for k, f in outputs.items()}
        result["max_abs_diff"] = {k: float(np.abs(v - reference).max()) for k, v in got.items()}
        # probabilities of 1000 classes are ~1e-3 each: compare their logarithms (the
        # scores up to a shift per sample), a relative error of every probability
        result["max_log_diff"] = {k: log_difference(v, reference) for k, v in got.items()}
    rounds = alternate(steps, settings)
    for framework, times in rounds.items():
        ms = summarize(times) * 1e3
        result[f"{framework}_ms"] = ms
        result[f"{framework}_samples_per_s"] = case.batch / ms * 1e3
        if framework != "solverkit":
            result[f"ratio_{framework}"] = median_ratio(rounds["solverkit"], times)
    case.close()
    return result


def real_frameworks(name: str, settings: Settings) -> list[str]:
    frameworks = ["solverkit"] + (["torch"] if settings.torch else [])
    if REAL[name][0] == "infer":
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            frameworks.append("onnxruntime")
        if importlib.util.find_spec("cv2"):
            frameworks.append("opencv")
    return frameworks


def measure_real_memory(name: str, settings: Settings) -> dict:
    """Peak RSS of a child per framework; onnxruntime's and OpenCV's children load files
    an exporting child wrote, so that they hold no solverkit net."""
    frameworks = real_frameworks(name, settings)
    if len(frameworks) > 2 or frameworks[-1] in ("onnxruntime", "opencv"):
        child_peak_rss("export", name, settings)
    return {f"{f}_peak_rss_mib": child_peak_rss(f, name, settings) for f in frameworks}


def run_real_child(framework: str, name: str, settings: Settings) -> None:
    mode, _, batch = REAL[name]
    workdir = settings.workdir
    if framework in ("onnxruntime", "opencv"):
        x = np.load(workdir / f"{name}.input.npy", allow_pickle=False)
        if framework == "onnxruntime":
            session = onnx_session((workdir / f"{name}.onnx").read_bytes(), settings.threads)
            step = lambda: session.run(None, {"data": x})             # noqa: E731
        else:
            cv_net = opencv_net(workdir / f"{name}.prototxt", workdir / f"{name}.caffemodel",
                                settings.threads)

            def step():
                cv_net.setInput(x)
                cv_net.forward()
    else:
        case = RealCase(name, settings, build=framework != "torch")
        if framework == "export":
            export_real(case, workdir)
            np.save(workdir / f"{name}.input.npy", case.x[:batch])
            print(json.dumps({"peak_rss_mib": 0.0}))
            return
        # PyTorch's own initial weights: memory is what matters here, not the values
        step = case.step if framework == "solverkit" else RealTorch(case, settings.threads).step
    for _ in range(settings.memory_iters):
        step()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak_kib / 1024}))


def print_real(results: list[dict]) -> None:
    names = ("solverkit", "torch", "onnxruntime", "opencv")
    short = ("sk", "torch", "ort", "cv2")
    print(f"\n{'real-size case':<22}{'side':>5}" + "".join(f"{n + ' ms':>14}" for n in short)
          + "".join(f"{'sk/' + n:>10}" for n in short[1:])
          + "".join(f"{n + ' MiB':>11}" for n in short))
    def num(r, key, fmt):
        return format(r[key], fmt) if key in r else format("-", f">{fmt.split('.')[0]}")

    for r in results:
        print(f"{r['case']:<22}{r['side']:>5}"
              + "".join(num(r, f"{n}_ms", "14.2f") for n in names)
              + "".join(num(r, f"ratio_{n}", "10.2f") for n in names[1:])
              + "".join(num(r, f"{n}_peak_rss_mib", "11.0f") for n in names))
    for r in results:
        if "first_loss" in r:
            f = r["first_loss"]
            print(f"{r['case']}: first loss ({f['phase']} form) solverkit {f['solverkit']:.6g}, "
                  f"torch {f['torch']:.6g}, max abs difference {f['max_abs_diff']:.3g}")
        if "max_abs_diff" in r:
            diffs = ", ".join(f"{k} {v:.3g} (log {r['max_log_diff'][k]:.3g})"
                              for k, v in r["max_abs_diff"].items())
            print(f"{r['case']}: outputs' max abs difference from solverkit's (and of their "
                  f"logarithms): {diffs or '-'}")


def print_inference(results: list[dict]) -> None:
    print(f"\n{'inference':<26}{'solverkit ms':>13}{'torch ms':>10}{'ort ms':>8}"
          f"{'sk/torch':>10}{'sk/ort':>8}")
    def num(r, key, fmt):
        return format(r[key], fmt) if key in r else "–"

    for r in results:
        print(f"{r['case']:<26}{num(r, 'solverkit_ms', '13.2f')}{num(r, 'torch_ms', '10.2f')}"
              f"{num(r, 'onnxruntime_ms', '8.2f')}{num(r, 'ratio_torch', '10.2f')}"
              f"{num(r, 'ratio_onnxruntime', '8.2f')}")


# --------------------------------------------------------------------------- SSD detector
def ssd300_prototxt(num_classes: int = 2) -> str:
    """A 300x300 SSD detector in Caffe's text (the shape of OpenCV's res10 face detector:
    a small convolutional trunk, Normalize on the 38x38 map, six heads with PriorBox, and
    DetectionOutput with CENTER_SIZE boxes). Weights come from its fillers."""
    lines = ['name: "SSD300"',
             'layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 1 dim: 3 dim: 300 dim: 300 } } }']

    def conv(name, bottom, out, kernel, stride=1, pad=0):
        lines.append(
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} '
            f'pad: {pad} weight_filler {{ type: "msra" }} '
            f'bias_filler {{ type: "constant" value: 0.01 }} }} }}')
        lines.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" '
                     f'top: "{name}" }}')
        return name

    x = conv("conv1", "data", 32, 7, 2, 3)
    lines.append(f'layer {{ name: "pool1" type: "Pooling" bottom: "{x}" top: "pool1" '
                 f'pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}')
    x = conv("conv2", "pool1", 64, 3, 1, 1)
    x = conv("conv3_1", x, 128, 3, 2, 1)
    feat38 = conv("conv3_2", x, 128, 3, 1, 1)                        # 38x38
    lines.append(f'layer {{ name: "conv3_norm" type: "Normalize" bottom: "{feat38}" '
                 f'top: "conv3_norm" norm_param {{ across_spatial: false channel_shared: '
                 f'false scale_filler {{ type: "constant" value: 20 }} }} }}')
    fc7 = conv("fc7", conv("conv4_1", feat38, 256, 3, 2, 1), 256, 3, 1, 1)  # 19x19
    c6 = conv("conv6_2", conv("conv6_1", fc7, 128, 1), 256, 3, 2, 1)       # 10x10
    c7 = conv("conv7_2", conv("conv7_1", c6, 64, 1), 128, 3, 2, 1)         # 5x5
    c8 = conv("conv8_2", conv("conv8_1", c7, 64, 1), 128, 3, 1, 0)         # 3x3
    c9 = conv("conv9_2", conv("conv9_1", c8, 64, 1), 128, 3, 1, 0)         # 1x1
    heads = [("conv3_norm", 30, 60, [2], 8), (fc7, 60, 111, [2, 3], 16),
             (c6, 111, 162, [2, 3], 32), (c7, 162, 213, [2, 3], 64),
             (c8, 213, 264, [2], 100), (c9, 264, 315, [2], 300)]
    locs, confs, priors = [], [], []
    for feature, low, high, ratios, step in heads:
        count = 2 + 2 * len(ratios)
        for kind, width in (("loc", 4), ("conf", num_classes)):
            name = f"{feature}_mbox_{kind}"
            lines.append(
                f'layer {{ name: "{name}" type: "Convolution" bottom: "{feature}" '
                f'top: "{name}" convolution_param {{ num_output: {count * width} '
                f'kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}')
            lines.append(f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" '
                         f'top: "{name}_perm" permute_param {{ order: 0 order: 2 order: 3 '
                         f'order: 1 }} }}')
            lines.append(f'layer {{ name: "{name}_flat" type: "Flatten" bottom: '
                         f'"{name}_perm" top: "{name}_flat" flatten_param {{ axis: 1 }} }}')
            (locs if kind == "loc" else confs).append(f"{name}_flat")
        ratio_text = " ".join(f"aspect_ratio: {r}" for r in ratios)
        name = f"{feature}_mbox_priorbox"
        lines.append(
            f'layer {{ name: "{name}" type: "PriorBox" bottom: "{feature}" bottom: "data" '
            f'top: "{name}" prior_box_param {{ min_size: {low} max_size: {high} {ratio_text} '
            f'flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 '
            f'step: {step} offset: 0.5 }} }}')
        priors.append(name)
    for name, bottoms, axis in (("mbox_loc", locs, 1), ("mbox_conf", confs, 1),
                                ("mbox_priorbox", priors, 2)):
        joined = " ".join(f'bottom: "{b}"' for b in bottoms)
        lines.append(f'layer {{ name: "{name}" type: "Concat" {joined} top: "{name}" '
                     f'concat_param {{ axis: {axis} }} }}')
    lines += [
        'layer { name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" '
        f'top: "mbox_conf_reshape" reshape_param {{ shape {{ dim: 0 dim: -1 dim: {num_classes} '
        '} } }',
        'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" '
        'top: "mbox_conf_softmax" softmax_param { axis: 2 } }',
        'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" '
        'top: "mbox_conf_flatten" flatten_param { axis: 1 } }',
        'layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" '
        'bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out" '
        f'detection_output_param {{ num_classes: {num_classes} share_location: true '
        'background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 400 } '
        'code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.2 } }']
    return "\n".join(lines) + "\n"


def run_ssd(settings: Settings) -> dict:
    """One 300x300 forward at batch 1 of :func:`ssd300_prototxt` (weights from its fillers,
    exported as a .caffemodel): solverkit's ``Net.forward`` against OpenCV's dnn module
    reading the exported files, the same threads, alternating in rounds."""
    import cv2

    import solverkit as sk
    from solverkit.caffe.export import export_caffe
    folder = settings.workdir / "ssd"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ssd300.prototxt").write_text(ssd300_prototxt())
    net = sk.Net(folder / "ssd300.prototxt", phase="TEST", seed=SEED)
    caffemodel, prototxt = export_caffe(net.spec, net, folder / "out" / "ssd300.caffemodel")
    cv2.setNumThreads(settings.threads)
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    x = np.random.default_rng(SEED).uniform(-1, 1, (1, 3, 300, 300)).astype(np.float32)

    def opencv_forward():
        reader.setInput(x)
        return reader.forward("detection_out")

    def ordered(rows):
        """Detections by image, label, falling score; OpenCV pads its top with rows of 0
        (label 0 is the background here, never reported)."""
        rows = rows.reshape(-1, 7)
        rows = rows[rows[:, 1] > 0]
        return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]
    ours = ordered(net.forward(data=x)["detection_out"])
    theirs = ordered(opencv_forward())
    same = ours.shape == theirs.shape
    result = {"case": "ssd300_b1", "threads": settings.threads, "detections": len(ours),
              "same_detections": bool(same),
              "max_abs_diff": float(np.abs(ours - theirs).max()) if same else None}
    rounds = alternate({"solverkit": lambda: net.forward(data=x),
                        "opencv": opencv_forward}, settings)
    for framework, times in rounds.items():
        result[f"{framework}_ms"] = summarize(times) * 1e3
    result["ratio_opencv"] = median_ratio(rounds["solverkit"], rounds["opencv"])
    net.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = list(CASES) + list(FEEDING)
    parser.add_argument("--cases",
                        help=f"comma-separated cases (default: all of {', '.join(names)})")
    parser.add_argument("--quick", action="store_true",
                        help="a few iterations of each (a smoke test, not a measurement)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-torch", action="store_true", help="time solverkit alone")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N busy processes (one spinning core each) for the whole "
                             "run, alike for every framework")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per framework per round")
    parser.add_argument("--memory-iters", type=int)
    parser.add_argument("--real", action="store_true",
                        help=f"the real-size cases ({', '.join(REAL)}): a training step "
                             f"against PyTorch, a deploy forward against PyTorch, onnxruntime "
                             f"and OpenCV; or name some of them in --cases")
    parser.add_argument("--resolution", type=int, metavar="SIDE",
                        help="real-size nets: SIDE×SIDE input instead of 227/224 (a smoke "
                             "test at e.g. 64; not a measurement of the real nets)")
    parser.add_argument("--child", choices=["solverkit", "torch", "onnxruntime", "opencv",
                                            "export"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scaling", action="store_true",
                        help="instead: LeNet at batch 16, 64, 256, 1024 and cifar10_quick at "
                             "25, 100, 400, step time, samples/s and peak RSS of each")
    parser.add_argument("--mpi", type=int, metavar="K",
                        help="instead: LeNet samples/s with 1 and K MPI ranks at one BLAS "
                             "thread each, and the scaling efficiency (scripts/bench_mpi.py)")
    parser.add_argument("--inference", action="store_true",
                        help=f"instead: TEST-forward cases ({', '.join(INFERENCE)}) against "
                             f"PyTorch (eval, no_grad) and onnxruntime on the ONNX export")
    parser.add_argument("--ssd", action="store_true",
                        help="instead: a 300x300 SSD forward at batch 1 against OpenCV's dnn "
                             "on the same net and weights (the opencv-python package)")
    args = parser.parse_args(argv)
    if args.load < 0:
        parser.error("--load must be 0 or more")
    if args.load and not args.child:
        load_before = os.getloadavg()[0]
        with busy_processes(args.load):
            return run(parser, args, names, load_before)
    return run(parser, args, names, None)


def run(parser, args, names: list[str], load_before: float | None) -> int:
    """``main`` after the command line is read (and ``--load``'s processes started)."""
    if args.mpi:
        from bench_mpi import print_table as print_scaling
        from bench_mpi import scaling
        report = scaling(args.mpi, steps=args.steps or (3 if args.quick else 30),
                         warmup=1 if args.quick else 5,
                         rounds=args.rounds or (1 if args.quick else 3))
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_scaling(report)
        return 0

    settings = Settings(threads=args.threads, memory=not args.no_memory,
                        resolution=args.resolution, load=0 if args.child else args.load,
                        load_average_before_load=load_before)
    if args.quick:
        settings.warmup, settings.rounds, settings.steps, settings.memory_iters = 1, 1, 2, 2
        settings.feed_pairs = 2
        settings.gap = settings.round_warmup = 0.0
    for key in ("rounds", "steps", "memory_iters"):
        if getattr(args, key) is not None:
            setattr(settings, key, getattr(args, key))
    if args.workdir is not None:
        settings.workdir = args.workdir
    cases_given = args.cases is not None
    args.cases = args.cases if cases_given else ",".join(names)
    if args.child:
        if args.cases in REAL:
            run_real_child(args.child, args.cases, settings)
        else:
            run_child(args.child, args.cases, settings)
        return 0
    if args.scaling:
        settings.torch = not args.no_torch and torch_available()
        run_scaling(settings, args.json)
        return 0
    if args.ssd:
        blas = limit_threads(settings.threads)
        report = {"machine": machine(blas, settings), "ssd": run_ssd(settings)}
        report["machine"]["load_average_1min_after"] = os.getloadavg()[0]
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            r = report["ssd"]
            print(f"{r['case']}: solverkit {r['solverkit_ms']:.2f} ms, OpenCV "
                  f"{r['opencv_ms']:.2f} ms, ratio {r['ratio_opencv']:.2f}; "
                  f"{r['detections']} detections, same as OpenCV's: {r['same_detections']} "
                  f"(max abs diff {r['max_abs_diff']})")
        return 0
    if args.inference:
        settings.torch = not args.no_torch and torch_available()
        blas = limit_threads(settings.threads)
        report = {"machine": machine(blas, settings), "inference": [
            run_inference(name, settings) for name in INFERENCE]}
        report["machine"]["load_average_1min_after"] = os.getloadavg()[0]
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_inference(report["inference"])
        return 0

    selected = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.real:
        chosen = [c for c in selected if c in REAL]
        selected = chosen if cases_given else list(REAL)
    unknown = [c for c in selected if c not in names and c not in REAL]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: "
                     f"{', '.join(names + list(REAL))}")
    settings.torch = not args.no_torch and torch_available()
    # peak memory first, while this process is small (see child_peak_rss)
    memory = {name: measure_memory(name, settings) for name in selected
              if name in CASES and settings.memory}
    memory.update({name: measure_real_memory(name, settings) for name in selected
                   if name in REAL and settings.memory})
    blas = limit_threads(settings.threads)
    report = {"machine": machine(blas, settings), "settings": {
        k: getattr(settings, k) for k in ("warmup", "rounds", "steps", "memory_iters",
                                          "threads", "torch", "load")},
        "cases": [], "feeding": [], "real": []}
    for name in selected:
        if name in CASES:
            report["cases"].append({**run_case(name, settings), **memory.get(name, {})})
        elif name in REAL:
            report["real"].append({**run_real(name, settings), **memory.get(name, {})})
        else:
            report["feeding"].append(run_feeding(name, settings))
        if not args.json:
            print(f"done: {name}", file=sys.stderr)
    report["machine"]["load_average_1min_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.markdown:
        print_markdown(report)
    else:
        print_header(report)
        if report["cases"] or report["feeding"]:
            print_table(report)
        if report["real"]:
            print_real(report["real"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
