"""The Ray backend: a process per stage; same outputs, order and fault handling as threads."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from executor.pipeline import ExecutorError, Fault
from executor.ray_backend import start_ray
from executor.run import execute, random_frames
from executor.stages import build_stages, model_input_keys
from predictor.errors import DnnsplitError
from predictor.model_graph import TaskGraph
from tests.executor.test_pipeline import branchy_model, nested_model, plan_for

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("fresh_keras_session")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the in-process tests (each run joins it)."""
    start_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.mark.parametrize("build", [branchy_model, nested_model])
def test_every_frame_equals_the_unsplit_model_and_order_is_kept(cluster, build):
    model = build()
    plan = plan_for(model)  # three devices, throughput
    assert len({plan.assignment[n] for n in plan.problem.nodes}) >= 2
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    frames = random_frames(model, 7, seed=3)
    from executor.ray_backend import run_pipeline_ray

    slow = {(p, q): {"latency_ms": 15.0, "mbps": 1000.0}
            for p in plan.problem.devices for q in plan.problem.devices if p != q}
    result = run_pipeline_ray(stages, frames, model_input_keys(tg), list(tg.output_sources),
                              links=slow, first_device=plan.problem.devices[0], keep_outputs=7)
    assert len(result.outputs) == 7
    for arrays, outputs in zip(frames, result.outputs):
        reference = model(arrays[0], training=False)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        for r, o in zip(reference, outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)
    last = [e for e in result.events if e.lane == stages[-1].device]
    assert [e.frame for e in last] == list(range(7))  # each actor ran frames in order
    assert [e.end for e in last] == sorted(e.end for e in last)
    assert len({e.lane for e in result.events} & {s.device for s in stages}) == len(stages)
    assert result.link_ms and all(v >= 14.0 for v in result.link_ms.values())


def test_a_failing_stage_stops_the_run_and_names_the_stage(cluster):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    victim = plan.stages[-1]["device"]
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=f"stage on device '{victim}'.*injected fault"):
        execute(model, plan, frames=200, backend="ray", fault=Fault(victim, 4, "raise"))
    assert time.monotonic() - start < 60  # actors start in ~5 s; the failure itself is fast


def test_a_dying_worker_stops_the_run_and_names_the_stage(cluster):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    victim = plan.stages[0]["device"]
    with pytest.raises(ExecutorError, match=f"worker process of stage on device '{victim}' died"):
        execute(model, plan, frames=200, backend="ray", fault=Fault(victim, 4, "exit"))


def test_unknown_devices_and_ray_options_on_the_local_backend_are_refused():
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    with pytest.raises(DnnsplitError, match="not in the plan"):
        execute(model, plan, frames=2, backend="ray", placement={"nope": "edge"})
    with pytest.raises(DnnsplitError, match=r"\['nope'\] are not in the plan"):
        execute(model, plan, frames=2, devices={"a": "cpu:0", "nope": "cpu:0"})
    report = execute(model, plan, frames=2, devices={"a": "cpu:0", "b": "cpu:0"})
    assert report.outputs_match  # plan devices mapped to Keras devices are accepted
    with pytest.raises(DnnsplitError, match="need --backend ray"):
        execute(model, plan, frames=2, address="auto")
    with pytest.raises(DnnsplitError, match="process per stage"):
        execute(model, plan, frames=2, fault=Fault("a", 1, "exit"))


# --- the CLI in a child process: Ctrl-C and crashes leave nothing behind --------------------

def _marked_processes(mark: str) -> list[int]:
    """PIDs of live processes whose environment carries ``mark`` (the child and all it spawned)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def saved_run(tmp_path):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    model.save(tmp_path / "m.keras")
    plan.save(tmp_path / "plan.json")
    return tmp_path, plan


def _start(tmp_path, *args):
    mark = f"DNNSPLIT_TEST_{uuid.uuid4().hex}"
    env = dict(os.environ, DNNSPLIT_TEST_MARK=mark, PYTHONFAULTHANDLER="1")
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor.cli", "run", str(tmp_path / "m.keras"), "--plan",
         str(tmp_path / "plan.json"), *args], env=env, stdout=subprocess.PIPE, stderr=err,
        cwd=Path(__file__).resolve().parents[2], preexec_fn=_default_sigint)
    return proc, mark


def _default_sigint() -> None:
    """Ctrl-C reaches the run as it does from a terminal, even when the tests themselves were
    started in the background (a shell starts background jobs with SIGINT ignored, and a
    Python started that way never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(path: Path, text: str, proc, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"exited early: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{text!r} never appeared: {path.read_text(errors='replace')[-2000:]}")


def _exit_code(proc, stderr: Path, seconds: float) -> int:
    """The exit code, or fail with the run's stderr (a faulthandler dump of every thread)."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        time.sleep(3)
        proc.kill()
        proc.wait()
        tail = stderr.read_text(errors="replace")[-6000:]
        pytest.fail(f"still running {seconds:g} s later: {tail}")


def _gone(mark: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.3)
    return _marked_processes(mark)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_ctrl_c_stops_cleanly_and_leaves_no_process(saved_run, backend):
    tmp_path, _ = saved_run
    proc, mark = _start(tmp_path, "--frames", "1000000", "--backend", backend)
    _wait_for(tmp_path / "stderr.txt", "pipeline:", proc)  # the progress bar: frames flow
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = _exit_code(proc, tmp_path / "stderr.txt", seconds=30)
    assert time.monotonic() - sent < 15
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert code == 130, stderr[-2000:]
    assert "interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    assert _gone(mark) == []


def test_a_crashed_worker_ends_the_cli_run_with_one_line_and_no_orphans(saved_run):
    tmp_path, plan = saved_run
    victim = plan.stages[-1]["device"]
    proc, mark = _start(tmp_path, "--frames", "500", "--backend", "ray", "--json",
                        "--fault", f"{victim}:5:exit")
    out, _ = proc.communicate(timeout=180)
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert proc.returncode == 2, stderr[-2000:]
    assert f"error: the worker process of stage on device '{victim}' died" in stderr
    assert "Traceback" not in stderr and out == b""
    assert _gone(mark) == []


def test_cli_ray_backend_json_matches_the_contract(saved_run):
    tmp_path, plan = saved_run
    proc, mark = _start(tmp_path, "--frames", "6", "--backend", "ray", "--json")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    report = json.loads(out)
    assert report["backend"] == "ray" and report["outputs_match"] and report["frames"] == 6
    assert report["in_flight"] == len(plan.stages) + 1
    assert [s["device"] for s in report["stages"]] == [s["device"] for s in plan.stages]
    assert _gone(mark) == []
