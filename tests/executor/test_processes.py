"""The processes backend: a process per stage, shared memory between; same outputs, order and
fault handling as threads, and no process outlives a run."""

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dnnsplit.executor.pipeline import ExecutorError, Fault
from dnnsplit.predictor.errors import DnnsplitError
import dnnsplit.executor.processes as processes
from dnnsplit.collectors.timing import cpu_blocks
from dnnsplit.executor.processes import Ring, run_pipeline_processes
from dnnsplit.executor.run import execute, random_frames
from dnnsplit.executor.stages import build_stages, model_input_keys
from dnnsplit.predictor.model_graph import TaskGraph
from tests.executor.cli_runs import gone, marked_processes
from tests.executor.test_pipeline import branchy_model, nested_model, plan_for, two_input_model

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def _reference(model, arrays):
    out = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
    return out if isinstance(out, (list, tuple)) else [out]


# the nested model runs on the local backend in test_pipeline; here it is a slow extra (the
# suite runs on 2 cores: each case starts worker processes that import the framework)
@pytest.mark.parametrize("build", [branchy_model, two_input_model,
                                   pytest.param(nested_model, marks=pytest.mark.slow)])
def test_every_frame_equals_the_unsplit_model_in_order_with_links(build):
    model = build()
    plan = plan_for(model)  # three devices: tensors skip a stage, outputs leave two stages
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    assert len(stages) >= 2
    frames = random_frames(model, 9, seed=5)
    slow = {(p, q): {"latency_ms": 15.0, "mbps": 1000.0}
            for p in plan.problem.devices for q in plan.problem.devices if p != q}
    result = run_pipeline_processes(stages, frames, model_input_keys(tg),
                                    list(tg.output_sources), links=slow,
                                    first_device=plan.problem.devices[0], keep_outputs=9)
    assert len(result.outputs) == 9
    for arrays, outputs in zip(frames, result.outputs):
        for r, o in zip(_reference(model, arrays), outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)
    for stage in stages:  # every process ran every frame, in order
        runs = [e for e in result.events if e.lane == stage.device]
        assert [e.frame for e in runs] == list(range(9))
        assert [e.end for e in runs] == sorted(e.end for e in runs)
    assert result.link_ms and all(v >= 14.0 for v in result.link_ms.values())
    assert len(result.latencies_ms) == 9 and min(result.latencies_ms) >= 15.0 * (len(stages) - 1)


def test_two_stages_run_pinned_to_cpus_of_their_own():
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    report = execute(model, plan, frames=12, backend="processes", check_frames=12)
    assert report.outputs_match and report.backend == "processes"
    cpus = [row.get("cpus") for row in report.stages]
    if cpu_blocks(2, 1) is None:
        pytest.skip("fewer than 2 CPUs here: stages are not pinned")
    assert all(c is not None and len(c) == 1 for c in cpus) and cpus[0] != cpus[1]
    assert cpu_blocks(10_000, 1) is None  # more stages than CPUs: nothing pinned


def test_stages_left_unpinned_still_give_the_unsplit_outputs():
    """More stage threads than CPUs (cpu_blocks is None): the processes share every CPU."""
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    tg = TaskGraph.from_keras(model)
    frames = random_frames(model, 4, seed=2)
    result = run_pipeline_processes(build_stages(model, plan, tg), frames, model_input_keys(tg),
                                    list(tg.output_sources), links={}, first_device="a",
                                    cpus=None, keep_outputs=4)
    everywhere = sorted(os.sched_getaffinity(0))
    assert result.cpus == {"a": everywhere, "b": everywhere}  # what each process ran on
    for arrays, outputs in zip(frames, result.outputs):
        for r, o in zip(_reference(model, arrays), outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)


def test_a_failing_stage_stops_the_run_quickly_and_names_the_stage():
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    victim = plan.stages[-1]["device"]
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=f"stage on device '{victim}'.*injected fault"):
        execute(model, plan, frames=100_000, backend="processes", fault=Fault(victim, 4))
    assert time.monotonic() - start < 60  # processes start in seconds; the failure is fast


def test_a_dying_worker_stops_the_run_and_names_the_stage():
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    victim = plan.stages[0]["device"]
    with pytest.raises(ExecutorError, match=f"worker process of stage on device '{victim}' "
                                            "died \\(exit code 17"):
        execute(model, plan, frames=100_000, backend="processes",
                fault=Fault(victim, 4, "exit"))


def test_a_ring_hands_frames_over_in_order_and_ends_the_stream():
    import multiprocessing

    key = ("x", 0)
    ring = Ring(multiprocessing.get_context("spawn"), [(key, (2, 3), "float32")], slots=2)
    for frame in range(2):
        ring.put(frame, 1.0, 2.0 + frame, {key: np.full((2, 3), frame, "float32")}, lambda: 1)
    with pytest.raises(processes._Stop):  # full: waits while told to go on, stops when told not to
        ring.put(2, 0.0, 0.0, {key: np.zeros((2, 3), "float32")}, lambda: False)
    frame, started, ready, values = ring.get(lambda: True)
    assert (frame, started, ready) == (0, 1.0, 2.0) and values[key].sum() == 0
    ring.put(-1, 0.0, 0.0, {}, lambda: True)
    frame, _, _, values = ring.get(lambda: True)
    assert frame == 1 and (values[key] == 1).all()
    assert ring.get(lambda: True)[0] == -1


def test_workers_exit_by_themselves_when_the_run_is_killed(tmp_path):
    """SIGKILL leaves no chance to clean up: the stage processes notice and exit."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from dnnsplit.executor.run import execute
        from tests.executor.test_pipeline import branchy_model, plan_for
        model = branchy_model()
        execute(model, plan_for(model, devices=("a", "b")), frames=10_000_000,
                backend="processes", progress=True)
    """))  # no __main__ guard: the stage processes must not re-run this script
    mark = f"DNNSPLIT_TEST_{os.getpid()}_{time.time_ns()}"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen([sys.executable, str(script), root], stderr=err,
                            env=dict(os.environ, DNNSPLIT_TEST_MARK=mark))
    deadline = time.monotonic() + 120
    while "pipeline:" not in (tmp_path / "stderr.txt").read_text(errors="replace"):
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        assert time.monotonic() < deadline, "frames never flowed"
        time.sleep(0.2)
    assert len(marked_processes(mark)) >= 3  # the run and its two stage processes
    proc.kill()
    proc.wait()
    assert gone(mark, seconds=10) == []


def test_stage_processes_fork_from_a_warm_server_under_tensorflow_and_jax_and_spawn_otherwise():
    from dnnsplit.predictor.keras_env import process_context

    assert process_context().get_start_method() == "forkserver"  # this session: TensorFlow
    code = ("from dnnsplit.predictor.keras_env import process_context; import sys; "
            "print(process_context().get_start_method(), 'keras' in sys.modules)")
    for backend, method in (("jax", "forkserver"), ("torch", "spawn")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, KERAS_BACKEND=backend))
        assert done.stdout.split() == [method, "False"], done.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_a_mixed_backend_two_stage_run_equals_the_unsplit_model():
    """Device a profiled on TensorFlow, b on JAX: b's stage runs in a JAX process, tensors
    cross as arrays, outputs equal the unsplit (TensorFlow) model."""
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    runtimes = {"a": {"backend": "tensorflow", "threads": 1},
                "b": {"backend": "jax", "threads": 1}}
    plan = dataclasses.replace(plan, problem=dataclasses.replace(plan.problem,
                                                                 runtimes=runtimes))
    report = execute(model, plan, frames=8, backend="processes", check_frames=8)
    assert report.outputs_match
    assert {row["device"]: row["keras_backend"] for row in report.stages} == \
        {"a": "tensorflow", "b": "jax"}
    with pytest.raises(DnnsplitError, match=r"b \(jax\).*--backend processes"):
        execute(model, plan, frames=2, backend="local")
