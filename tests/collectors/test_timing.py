"""one_cpu: a block runs with every thread of the process on one CPU, then gets its CPUs back."""

import os
import threading

import pytest

from dnnsplit.collectors.timing import TimingError, one_cpu

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="thread affinity through /proc/self/task is Linux's")


def _affinities() -> dict[int, set[int]]:
    result = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            result[int(tid)] = os.sched_getaffinity(int(tid))
        except OSError:
            pass
    return result


@linux_only
def test_every_thread_is_on_one_cpu_inside_and_back_after():
    before = os.sched_getaffinity(0)
    release = threading.Event()
    older = threading.Thread(target=release.wait, daemon=True)
    older.start()
    try:
        with one_cpu() as pinned:
            assert pinned
            inside = _affinities()
            assert older.native_id in inside
            assert all(cpus == {min(before)} for cpus in inside.values())
            newer = threading.Thread(target=release.wait, daemon=True)
            newer.start()  # inherits the pinned mask...
            assert os.sched_getaffinity(newer.native_id) == {min(before)}
        after = _affinities()
        assert after[older.native_id] == before
        assert after[newer.native_id] == before  # ...and gets the process's CPUs back
        assert os.sched_getaffinity(0) == before
    finally:
        release.set()


@linux_only
def test_a_cpu_the_process_may_not_use_is_refused_and_nothing_is_pinned():
    before = os.sched_getaffinity(0)
    with pytest.raises(TimingError, match="CPU"):
        with one_cpu(max(before) + 1000):
            pass
    assert os.sched_getaffinity(0) == before


@linux_only
def test_the_cpus_come_back_when_the_block_raises():
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError):
        with one_cpu():
            raise ValueError("boom")
    assert os.sched_getaffinity(0) == before
