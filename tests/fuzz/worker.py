"""Run COUNT mutated cases of one fuzz target in this process, under limits, and print a
JSON report: ``python worker.py TARGET COUNT SEED FOLDER``.

Limits: the process's data segment (heap and private mappings) is capped, so a reader
that believes a declared size and allocates it fails with MemoryError instead of taking
the machine; each case has a wall-clock alarm. Warnings are errors: a library's warning
that reaches the user is a defect too. A case passes when the read succeeds or raises a
``SolverkitError``; anything else is reported with the mutation that caused it, so that
``Mutator(seed * 1_000_003 + index)`` reproduces it.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutations import Mutator  # noqa: E402
from targets import TARGETS  # noqa: E402

from solverkit.errors import SolverkitError  # noqa: E402

DATA_LIMIT = 3 << 30            # bytes of heap a case may take
CASE_SECONDS = 10


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a case ran over {CASE_SECONDS} s")


def main(name: str, count: int, seed: int, folder: Path) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = DATA_LIMIT if hard == resource.RLIM_INFINITY else min(DATA_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    signal.signal(signal.SIGALRM, _alarm)
    logging.disable(logging.WARNING)        # solverkit's own notes are not under test here
    target = TARGETS[name]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = target.seeds(folder)
    for data in corpus:                     # the seeds themselves must read cleanly
        target.read(data, folder)
    report = {"target": name, "cases": count, "seed": seed, "accepted": 0, "refused": 0,
              "failures": [], "slowest_s": 0.0}
    warnings.simplefilter("error")
    # an unclosed file is reported from a finaliser, where it cannot be raised
    warnings.simplefilter("ignore", ResourceWarning)
    for index in range(count):
        mutator = Mutator(seed * 1_000_003 + index)
        data, how = mutator.mutate(mutator.rng.choice(corpus), corpus, text=target.text)
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            target.read(data, folder)
            report["accepted"] += 1
        except SolverkitError:
            report["refused"] += 1
        except BaseException as error:      # noqa: BLE001 - every other outcome is the finding
            if isinstance(error, KeyboardInterrupt):
                raise
            report["failures"].append({
                "index": index, "mutation": how, "size": len(data),
                "error": f"{type(error).__name__}: {str(error)[:300]}",
                "where": traceback.format_exc().splitlines()[-3:-1]})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        report["slowest_s"] = max(report["slowest_s"], time.perf_counter() - start)
    return report


if __name__ == "__main__":
    target_name, cases, base_seed, work = sys.argv[1:5]
    print(json.dumps(main(target_name, int(cases), int(base_seed), Path(work))))
