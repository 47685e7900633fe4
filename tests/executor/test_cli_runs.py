"""``executor run`` as a user runs it, in a child process: Ctrl-C, a crashed worker and
``--json`` on every backend, and no process left behind."""

import importlib.util
import json
import signal
import time

import pytest

from tests.executor.cli_runs import exit_code, gone, start_cli, wait_for

RAY = pytest.param("ray", marks=pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                                   reason="needs ray (dnnsplit[test])"))


@pytest.mark.parametrize("backend", ["local", "processes", RAY])
def test_ctrl_c_stops_cleanly_and_leaves_no_process(saved_run, backend):
    tmp_path, _ = saved_run
    proc, mark = start_cli(tmp_path, "--frames", "1000000", "--backend", backend)
    wait_for(tmp_path / "stderr.txt", "pipeline:", proc)  # the progress bar: frames flow
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = exit_code(proc, tmp_path / "stderr.txt", seconds=30)
    assert time.monotonic() - sent < 15
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert code == 130, stderr[-2000:]
    assert "interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    assert gone(mark) == []


# Ray's dying worker is named in-process (test_ray_backend) and its CLI leaves no process after
# Ctrl-C (above): its crashed CLI run is a slow extra (20 s here)
@pytest.mark.parametrize("backend", ["processes", pytest.param(
    "ray", marks=[*RAY.marks, pytest.mark.slow])])
def test_a_crashed_worker_ends_the_cli_run_with_one_line_and_no_orphans(saved_run, backend):
    tmp_path, plan = saved_run
    victim = plan.stages[-1]["device"]
    proc, mark = start_cli(tmp_path, "--frames", "500", "--backend", backend, "--json",
                           "--fault", f"{victim}:5:exit")
    out, _ = proc.communicate(timeout=180)
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert proc.returncode == 2, stderr[-2000:]
    assert f"error: the worker process of stage on device '{victim}' died" in stderr
    assert "Traceback" not in stderr and out == b""
    assert gone(mark) == []


# the report is the same function's on every backend (the local backend's --json is checked in
# test_pipeline): the process-per-stage runs are slow extras (10-30 s each here)
@pytest.mark.parametrize("backend", [pytest.param("processes", marks=pytest.mark.slow),
                                     pytest.param("ray", marks=[*RAY.marks, pytest.mark.slow])])
def test_cli_json_of_a_process_per_stage_backend_matches_the_contract(saved_run, backend):
    tmp_path, plan = saved_run
    proc, mark = start_cli(tmp_path, "--frames", "6", "--backend", backend, "--json")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    report = json.loads(out)
    assert report["backend"] == backend and report["outputs_match"] and report["frames"] == 6
    assert report["in_flight"] == len(plan.stages) + 1
    assert [s["device"] for s in report["stages"]] == [s["device"] for s in plan.stages]
    assert gone(mark) == []
