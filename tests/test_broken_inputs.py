"""The broken-input corpus (tests/broken/cases.yaml): every user mistake gives exit status 2,
one message naming the file, line, layer and field, and no traceback.

Most cases call ``solverkit.cli.main`` in-process (one import for all); the cases marked
``subprocess: true`` also run as real processes, to show the exit status and the absence
of a traceback end to end.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from solverkit.cli import main

BROKEN = Path(__file__).parent / "broken"
CASES = yaml.safe_load((BROKEN / "cases.yaml").read_text())


def _check_message(stderr: str, case: dict) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("solverkit: error: ")]
    assert len(errors) == 1, stderr
    for expected in case["expect"]:
        assert expected in errors[0], f"{case['id']}: {expected!r} not in {errors[0]!r}"


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


def test_the_unbroken_inputs_pass(monkeypatch, capsys):
    """The broken files are variants of these: each fails for its own mistake only."""
    monkeypatch.chdir(BROKEN)
    assert main(["check", "--net", "good_net.yaml"]) == 0
    assert main(["check", "--solver", "good_solver.yaml"]) == 0
    assert main(["check", "--net", "caffe_good_net.prototxt"]) == 0
    assert main(["test", "--net", "caffe_good_net.prototxt", "--weights",
                 "caffe_good.caffemodel", "--iterations", "1"]) == 0


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_broken_input_in_process(case, monkeypatch, capsys):
    monkeypatch.chdir(BROKEN)
    assert main(case["args"]) == 2
    _check_message(capsys.readouterr().err, case)
    assert not list(BROKEN.glob("unused.*"))           # nothing written on a failure


@pytest.mark.slow
def test_broken_inputs_as_processes():
    cases = [case for case in CASES if case.get("subprocess")]
    assert len(cases) >= 5
    processes = [(case, subprocess.Popen([sys.executable, "-m", "solverkit", *case["args"]],
                                         cwd=BROKEN, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
                 for case in cases]
    for case, process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (case["id"], stderr)
        _check_message(stderr, case)


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.chdir(BROKEN)
    done = subprocess.run([sys.executable, "-m", "solverkit", "check", "--net",
                           "unknown_field_net.yaml", "--debug"], capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "weight_filer" in done.stderr
