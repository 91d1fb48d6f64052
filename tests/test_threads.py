"""Intra-op threads: every item once, errors raised, nesting serial, the count from env."""

import subprocess
import sys
import threading

import pytest

from solverkit import threads


@pytest.fixture
def two_threads():
    before = threads.num_threads()
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(before)


def test_parallel_for_runs_every_item_once_on_two_threads(two_threads):
    seen, names = [], set()

    def work(item):
        seen.append(item)
        names.add(threading.current_thread().name)

    threads.parallel_for(work, range(10))
    assert sorted(seen) == list(range(10))
    assert len(names) == 2                       # the caller and one worker


def test_small_jobs_and_one_thread_stay_on_the_caller(two_threads):
    names = set()
    threads.parallel_for(lambda _: names.add(threading.current_thread().name), range(4),
                         elements=2 * threads.ELEMENTS_PER_THREAD - 1)
    assert names == {threading.current_thread().name}
    threads.set_num_threads(1)
    threads.parallel_for(lambda _: names.add(threading.current_thread().name), range(4))
    assert names == {threading.current_thread().name}


def test_an_error_in_a_worker_reaches_the_caller(two_threads):
    def work(item):
        if item == 9:
            raise ValueError("item 9")

    with pytest.raises(ValueError, match="item 9"):
        threads.parallel_for(work, range(10))


def test_nested_calls_run_serially_instead_of_waiting_for_a_busy_pool(two_threads):
    done = []
    threads.parallel_for(lambda i: threads.parallel_for(done.append, range(i * 3, i * 3 + 3)),
                         range(4))
    assert sorted(done) == list(range(12))


def test_split_cuts_contiguous_slices(two_threads):
    assert threads.split(7) == [slice(0, 3), slice(3, 7)]
    assert threads.split(1) == [slice(0, 1)]
    with pytest.raises(ValueError):
        threads.set_num_threads(0)


@pytest.mark.parametrize("env, expected", [
    ({"SOLVERKIT_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, 3),
    ({"OMP_NUM_THREADS": "5"}, 5),
    ({"OPENBLAS_NUM_THREADS": "4"}, 4),
])
def test_the_count_comes_from_the_environment(env, expected):
    clean = {k: v for k, v in __import__("os").environ.items()
             if k not in threads.ENVIRONMENT_VARIABLES}
    out = subprocess.run([sys.executable, "-c",
                          "from solverkit import threads; print(threads.num_threads())"],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    assert int(out.stdout) == expected


def test_a_job_gets_one_thread_per_share_of_elements():
    before = threads.num_threads()
    threads.set_num_threads(4)
    try:
        names, barrier = set(), threading.Barrier(3, timeout=10)

        def work(_):
            name = threading.current_thread().name
            if name not in names:
                names.add(name)
                barrier.wait()           # three groups run at once, or this times out
        threads.parallel_for(work, range(8), elements=3 * threads.ELEMENTS_PER_THREAD)
        assert len(names) == 3
    finally:
        threads.set_num_threads(before)


def _fresh(code: str, **env) -> str:
    """``code`` run in a fresh interpreter with ``env`` and no thread variables of the
    caller (they would win over what the test sets)."""
    import os
    names = (*threads.ENVIRONMENT_VARIABLES, "OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT",
             "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
    clean = {k: v for k, v in os.environ.items() if k not in names}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_numpys_openblas_gets_solverkits_count_at_first_use_and_keeps_it():
    if threads.openblas_threads() is None:
        pytest.skip("numpy does not use OpenBLAS here")
    code = ("import solverkit, numpy; from solverkit import threads; "
            "print(threads.num_threads(), threads.openblas_threads()); "
            "threads.set_num_threads(1); print(threads.openblas_threads())")
    # numpy sized its pool at import from OPENBLAS_NUM_THREADS=4; solverkit's count wins,
    # once: later changes leave OpenBLAS's pool (its rounding depends on its count)
    assert _fresh(code, SOLVERKIT_NUM_THREADS="2", OPENBLAS_NUM_THREADS="4") == ["2", "2", "2"]
    first = ("import solverkit; from solverkit import threads; threads.set_num_threads(1); "
             "print(threads.openblas_threads())")
    assert _fresh(first, OPENBLAS_NUM_THREADS="2") == ["1"]


def test_under_an_mpi_launcher_each_ranks_blas_pool_is_its_share_of_the_cores():
    if threads.openblas_threads() is None:
        pytest.skip("numpy does not use OpenBLAS here")
    cores = threads.available_cores()
    code = ("import solverkit; from solverkit import threads; "
            "print(threads.num_threads(), threads.openblas_threads())")
    share = str(max(1, cores // 2))
    assert _fresh(code, OMPI_COMM_WORLD_SIZE="2") == [share, share]


def test_library_wait_times_are_set_before_the_libraries_load_and_the_users_value_kept():
    code = ("import os, solverkit, numpy; print(os.environ['OPENBLAS_THREAD_TIMEOUT']); "
            "print(os.environ.get('GOMP_SPINCOUNT', '-'))")
    # OpenBLAS's: in the environment before numpy is imported; libgomp's: only while
    # oneDNN loads it, so nothing is left for other libraries' OpenMP
    assert _fresh(code) == ["16", "-"]
    assert _fresh(code, OPENBLAS_THREAD_TIMEOUT="4") == ["4", "-"]


def test_element_wise_threads_are_idle_when_parallel_for_returns(two_threads):
    """A BLAS or oneDNN call after parallel_for finds no solverkit thread still working."""
    running = []
    lock = threading.Lock()

    def work(item):
        with lock:
            running.append(item)
        import time
        time.sleep(0.01)
        with lock:
            running.remove(item)

    threads.parallel_for(work, range(4))
    assert running == []
