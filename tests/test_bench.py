"""The benchmark script as CI runs it: a few iterations, solverkit alone, no thresholds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def run_bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_quick_run_of_every_case_reports_times_and_memory_without_torch():
    done = run_bench("--quick", "--no-torch", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["settings"]["torch"] is False
    cases = {r["case"]: r for r in report["cases"]}
    assert set(cases) == {"mlp_b64", "mlp_b256", "lenet_b64", "cifar10_quick_b100"}
    for r in cases.values():
        assert r["solverkit_ms"] > 0
        assert r["solverkit_samples_per_s"] == pytest.approx(r["batch"] / r["solverkit_ms"] * 1e3)
        assert r["solverkit_peak_rss_mib"] > 10       # a child process that trained the net
        assert "torch_ms" not in r and "ratio" not in r
    # a bigger batch of the same net needs more memory in its own child process
    assert cases["mlp_b256"]["solverkit_peak_rss_mib"] > cases["mlp_b64"]["solverkit_peak_rss_mib"]
    feeding = {r["case"]: r for r in report["feeding"]}
    assert set(feeding) == {"feed_lenet_npz", "feed_lenet_memory", "feed_lenet_digits"}
    for r in feeding.values():
        assert r["data_layer_ms"] > 0 and r["input_ms"] > 0


def test_table_output_and_an_unknown_case():
    done = run_bench("--quick", "--no-torch", "--no-memory", "--cases", "mlp_b64")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("mlp_b64"))
    assert float(row.split()[1]) > 0                 # solverkit ms/step
    bad = run_bench("--cases", "lenet_b46")
    assert bad.returncode == 2
    assert "lenet_b46" in bad.stderr and "lenet_b64" in bad.stderr


@pytest.mark.slow
def test_scaling_run_covers_every_batch_size_and_names_the_libraries():
    done = run_bench("--scaling", "--quick", "--no-torch", "--no-memory", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(r["case"], r["batch"]) for r in report["cases"]] == [
        ("lenet_b16", 16), ("lenet_b64", 64), ("lenet_b256", 256), ("lenet_b1024", 1024),
        ("cifar10_quick_b25", 25), ("cifar10_quick_b100", 100), ("cifar10_quick_b400", 400)]
    assert all(r["solverkit_ms"] > 0 for r in report["cases"])
    assert report["machine"]["solverkit_convolutions"].startswith(("oneDNN", "numpy"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_load_runs_busy_processes_for_the_run_and_stops_them_after():
    done = run_bench("--quick", "--no-torch", "--no-memory", "--cases", "mlp_b64", "--load", "2",
                     "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["settings"]["load"] == 2
    assert report["machine"]["busy_processes"] == 2
    assert report["machine"]["load_average_1min_before_busy"] >= 0
    line = next(l for l in done.stderr.splitlines() if l.startswith("load: 2 busy processes"))
    pids = [int(p) for p in line.split("pids")[1].split()]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_load_processes_are_stopped_when_the_run_is_interrupted():
    import signal
    import time
    proc = subprocess.Popen([sys.executable, str(BENCH), "--no-torch", "--no-memory", "--cases",
                             "lenet_b64", "--rounds", "1000", "--load", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("load: 1 busy processes"), line
        pid = int(line.split("pids")[1])
        assert _alive(pid)                  # spinning while the benchmark runs
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)     # Ctrl-C
        proc.wait(timeout=60)
        assert not _alive(pid)
    finally:
        proc.kill()
        proc.wait()
