"""Co-run slowdown: workers that contend for one resource show it, workers that do not, do not."""

import json
import sys
import os
import threading
import time

import keras
import pytest

from dnnsplit.collectors.corun import (CoRunError, corun_of_call, corun_of_model,
                                       corun_of_model_in_processes, measure_corun)
from dnnsplit.collectors.timing import cpu_blocks

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def test_workers_sharing_one_resource_are_twice_as_slow_together():
    lock = threading.Lock()

    def contended(_):
        with lock:  # one "core" for both workers
            time.sleep(0.004)

    result = corun_of_call(contended, None, workers=2, repeats=1, seconds=0.15)
    assert 1.6 < result["factor"] < 2.6
    assert result["together_ms"] > result["alone_ms"] >= 3.5


def test_independent_workers_run_at_full_speed_together():
    result = corun_of_call(lambda _: time.sleep(0.004), None, workers=3, repeats=2,
                           seconds=0.15, overhead_ms=1.0)
    assert 0.8 < result["factor"] < 1.3
    assert 2.5 <= result["alone_ms"] < 4.5  # the overhead is subtracted


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux thread affinity and two CPUs")
def test_alone_runs_on_one_cpu_and_together_on_all_of_them():
    seen = {"alone": set(), "together": set()}

    def record(_):
        side = "alone" if threading.current_thread() is threading.main_thread() else "together"
        seen[side].add(frozenset(os.sched_getaffinity(0)))
        time.sleep(0.002)

    result = corun_of_call(record, None, workers=2, repeats=2, seconds=0.05)
    assert result["alone_one_cpu"] is True
    assert seen["alone"] == {frozenset({min(os.sched_getaffinity(0))})}
    assert seen["together"] == {frozenset(os.sched_getaffinity(0))}


def test_a_failing_worker_is_reported_not_hung():
    def fails_in_workers(_):
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("boom")

    started = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        corun_of_call(fails_in_workers, None, workers=2, repeats=1, seconds=0.05)
    assert time.monotonic() - started < 5


def _millisecond_model():
    """About 3 ms of convolution per call: well above the empty call subtracted from both
    sides (a 0.05 ms model left a difference of noise, and its factor once came out as 5.3)."""
    return keras.Sequential([keras.Input((96, 96, 32)), keras.layers.Conv2D(64, 3),
                             keras.layers.ReLU()])


def test_a_keras_model_gets_a_plausible_factor():
    model = _millisecond_model()
    result = corun_of_model(model, workers=2, repeats=1, seconds=0.1)
    assert result["alone_ms"] > 0 and result["together_ms"] > 0
    assert 0.3 < result["factor"] < 5


@pytest.mark.skipif(cpu_blocks(2) is None, reason="needs two CPUs to pin two processes")
def test_a_keras_model_in_two_pinned_processes_gets_a_plausible_factor():
    model = _millisecond_model()
    result = corun_of_model_in_processes(model, workers=2, repeats=2, seconds=0.1)
    assert result["processes"] is True and result["alone_ms"] > 0
    assert 0.3 < result["factor"] < 5
    with pytest.raises(CoRunError, match="CPUs of their own"):
        corun_of_model_in_processes(model, workers=10_000)


def test_fewer_than_two_workers_or_no_models_is_refused():
    with pytest.raises(CoRunError, match="workers"):
        measure_corun(["MobileNet"], workers=1)
    with pytest.raises(CoRunError, match="model"):
        measure_corun([], workers=2)


def test_processes_measure_cpu_workers_only():
    with pytest.raises(CoRunError, match="CPU workers"):
        measure_corun(["MobileNet"], processes=True, device="gpu:0")


@pytest.mark.skipif(cpu_blocks(2) is None, reason="needs two CPUs to pin two processes")
def test_cli_writes_the_median_of_the_models_into_its_own_file_for_processes(tmp_path,
                                                                            monkeypatch):
    """The profile's factor is the median of the models', and --processes writes
    corun-processes.json beside (not over) corun.json. In this process (the measuring is done
    by the worker processes, which set their own threads; this one's TensorFlow already
    runs)."""
    from typer.testing import CliRunner

    import dnnsplit.collectors.corun as corun
    from dnnsplit.collectors.cli import app

    monkeypatch.setattr(corun, "configure_threads", lambda threads, inter_op: None)
    monkeypatch.chdir(tmp_path)
    for name, width in (("tiny", 4), ("wider", 16)):
        keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(width, 3)],
                         name=name).save(tmp_path / f"{name}.keras")
    args = ["corun", "tiny.keras", "wider.keras", "--processes", "--repeats", "1", "--quiet",
            "--profile", "p"]
    monkeypatch.setattr(sys, "argv", ["collectors", *args])  # what the file records
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    data = json.loads((tmp_path / "datasets" / "p" / "corun-processes.json").read_text())
    assert data["processes"] is True and "pinned processes" in data["about"]
    assert data["models"]["tiny.keras"]["processes"] is True
    assert not (tmp_path / "datasets" / "p" / "corun.json").exists()
    factors = sorted(m["factor"] for m in data["models"].values())
    assert len(factors) == 2 and data["factor"] == pytest.approx(sum(factors) / 2, abs=1e-3)
    assert data["workers"] == 2 and data["threads"] == 1 and "corun" in data["command"]
    assert "co-run factor" in run.stdout
