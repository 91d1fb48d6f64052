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
