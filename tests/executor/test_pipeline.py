"""The pipelined executor: outputs equal the unsplit model, frames stay in order, faults stop it."""

import threading
import time

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

import dnnsplit.executor.local as local
from dnnsplit.executor.cli import app
from dnnsplit.executor.local import ExecutorError, run_pipeline
from dnnsplit.executor.run import execute, random_frames
from dnnsplit.executor.stages import (PlanMismatchError, build_stages, model_input_keys,
                                      run_sequential)
from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
from dnnsplit.partition.planner import make_plans
from dnnsplit.partition.problem import Link
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.model_graph import TaskGraph

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def branchy_model():
    x = keras.Input((16, 16, 3), name="img")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(a)
    c = keras.layers.Conv2D(8, 1, name="c")(x)  # skips over a and b
    d = keras.layers.Add(name="d")([b, c])
    e = keras.layers.Concatenate(name="e")([d, a])
    f = keras.layers.GlobalAveragePooling2D(name="f")(e)
    return keras.Model(x, [keras.layers.Dense(5, name="out")(f), d], name="branchy")


def nested_model():
    inner = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.ReLU()], name="inner")
    x = keras.Input((8, 8, 4), name="x")
    y = inner(x)
    y = keras.layers.Add(name="skip")([y, x])
    y = inner(y)  # the nested model (and its layers) called twice
    return keras.Model(x, keras.layers.Flatten(name="flat")(y), name="nested")


def two_input_model():
    """An image and a side vector; the vector is read only by the last layers (so it is
    carried past, or sent to, the devices in between), and two outputs."""
    img = keras.Input((12, 12, 3), name="image")
    side = keras.Input((6,), name="side")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(img)
    x = keras.layers.Conv2D(8, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    joined = keras.layers.Concatenate(name="join")([x, keras.layers.Dense(4, name="embed")(side)])
    return keras.Model([img, side], [keras.layers.Dense(3, name="head")(joined), x],
                       name="two_inputs")


def plan_for(model, devices=("a", "b", "c"), objective="throughput", spread=True):
    tg = TaskGraph.from_keras(model)
    n = len(tg.nodes)
    costs = {node: {d: (1.0 + i % 3) * (1.0 if not spread else (0.5 + j)) for j, d in
                    enumerate(devices)} for i, node in enumerate(tg.nodes)}
    # make every device attractive for a different part, so plans really split
    for i, node in enumerate(tg.nodes):
        for j, d in enumerate(devices):
            if i * len(devices) // n == j:
                costs[node][d] = 0.05
    links = {(p, q): Link(0.2, 2000.0) for p in devices for q in devices if p != q}
    problem = problem_from_graph(tg, [DeviceSpec(d, d) for d in devices], links, costs)
    return make_plans(problem, objective, ["dp"])[0]


@pytest.mark.parametrize("build", [branchy_model, nested_model, two_input_model])
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_every_frame_equals_the_unsplit_model(build, objective):
    model = build()
    plan = plan_for(model, objective=objective)
    assert len({plan.assignment[n] for n in plan.problem.nodes}) >= 2  # really split
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    frames = random_frames(model, 6)
    result = run_pipeline(stages, frames, model_input_keys(tg), list(tg.output_sources),
                          keep_outputs=6)
    assert len(result.outputs) == 6 and result.frames == 6
    for arrays, outputs in zip(frames, result.outputs):
        reference = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        assert len(outputs) == len(reference)
        for r, o in zip(reference, outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)
    sequential = run_sequential(stages, tg, frames[0])
    np.testing.assert_allclose(np.asarray(sequential[0]), result.outputs[0][0], rtol=1e-5)


def test_a_long_run_holds_a_bounded_pool_of_distinct_frames():
    model = branchy_model()
    started = time.perf_counter()
    frames = random_frames(model, 10**9)  # would need ~3 TB if every frame were materialised
    assert time.perf_counter() - started < 1.0
    assert len(frames) == 10**9 and frames[0][0].shape == (1, 16, 16, 3)
    firsts = [frames[i][0] for i in range(16)]
    assert all(not np.array_equal(firsts[0], f) for f in firsts[1:])  # checked frames differ
    assert frames[16][0] is frames[0][0] and frames[-1][0] is frames[10**9 - 1][0]
    assert len(frames[:3]) == 3
    with pytest.raises(IndexError):
        frames[10**9]


def test_frames_come_out_in_order_and_links_are_emulated():
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    frames = random_frames(model, 8)
    slow = {pair: {"latency_ms": 20.0, "mbps": 1000.0} for pair in
            [("a", "b"), ("b", "a")]}
    result = run_pipeline(stages, frames, model_input_keys(tg), list(tg.output_sources),
                          links=slow, first_device="a", keep_outputs=8)
    done_order = [e.frame for e in result.events if e.lane == stages[-1].device]
    assert done_order == sorted(done_order)
    assert result.link_ms and all(v >= 19.0 for v in result.link_ms.values())
    assert result.period_ms >= 19.0  # the emulated 20 ms link is the bottleneck


def test_a_failing_stage_stops_the_run_quickly_and_names_the_stage(monkeypatch):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    real = local.compile_stage
    calls = {"n": 0}

    def flaky(stage, device):
        run = real(stage, device)
        if stage.device != stages[-1].device:
            return run

        def failing(arrays):
            calls["n"] += 1
            if calls["n"] == 3:
                raise ValueError("boom")
            return run(arrays)
        return failing

    monkeypatch.setattr(local, "compile_stage", flaky)
    before = threading.active_count()
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=f"stage on device '{stages[-1].device}'.*boom"):
        run_pipeline(stages, random_frames(model, 50), model_input_keys(tg),
                     list(tg.output_sources))
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert threading.active_count() <= before  # no worker left behind


def test_a_plan_for_another_model_is_refused():
    plan = plan_for(branchy_model())
    keras.backend.clear_session()
    with pytest.raises(PlanMismatchError, match="does not match"):
        build_stages(nested_model(), plan)


def _back_and_forth_plan(model, latency_ms=0.2):
    """a (on a) -> b (on b) -> d and the rest back on a: a latency plan's shape."""
    from dnnsplit.partition.plan import Plan

    plan = plan_for(model, devices=("a", "b"))
    data = plan.to_dict()
    data["assignment"] = {n: "b" if n == "b" else "a" for n in plan.problem.nodes}
    data["links"] = {key: {"latency_ms": latency_ms, "mbps": 2000.0} for key in data["links"]}
    return Plan.from_dict(data, check=False)


def test_stages_are_named_per_visit():
    model = branchy_model()
    plan = _back_and_forth_plan(model)
    assert [s["device"] for s in plan.stages] == ["a", "b", "a"]
    stages = build_stages(model, plan)
    assert [(s.device, s.name) for s in stages] == [("a", "a"), ("b", "b"), ("a", "a#2")]
    assert stages[1].nodes == ["b"]
    assert ("a", 0) in stages[2].input_keys  # kept on a while b runs, not sent over


@pytest.mark.parametrize("backend", ["local", "processes"])
def test_a_plan_that_comes_back_to_a_device_runs_and_pays_each_transfer_once(backend):
    model = branchy_model()
    plan = _back_and_forth_plan(model, latency_ms=25.0)
    assert not plan.predicted.monotone
    report = execute(model, plan, frames=6, backend=backend, in_flight=1)
    assert report.outputs_match
    assert [s["stage"] for s in report.stages] == ["a", "b", "a#2"]
    by_device = {}
    for row in report.stages:
        by_device[row["device"]] = by_device.get(row["device"], 0.0) + row["predicted_ms"]
    assert by_device["a"] == pytest.approx(plan.predicted.device_ms[0])
    assert by_device["b"] == pytest.approx(plan.predicted.device_ms[1])
    # one frame at a time: a -> b and b -> a once each (25 ms apiece), nothing returned again
    # (the outputs are made on a); compute takes a few ms here
    links = plan.predicted.link_ms
    assert sorted(links) == [(0, 1), (1, 0)]
    assert links[(0, 1)] == pytest.approx(25.0, abs=0.1) and links[(1, 0)] == pytest.approx(
        25.0, abs=0.1)
    assert set(report.run.link_ms) == {"a->next", "b->next"}
    for lane in ("a->next", "b->next"):
        assert report.run.link_ms[lane] == pytest.approx(25.0, abs=1.0)
    assert 50.0 <= report.measured["latency_p50_ms"] <= 65.0


def test_the_cli_reports_each_visit_of_a_plan_that_comes_back(tmp_path):
    model = branchy_model()
    path = tmp_path / "branchy.keras"
    model.save(path)
    _back_and_forth_plan(model).save(tmp_path / "plan.json")
    result = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "plan.json"),
                                      "--frames", "4", "--in-flight", "1", "--no-baseline"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("stage ")] == ["a", "b", "a#2"]
    assert any(line.startswith("link a->b") for line in lines)
    assert any(line.startswith("link b->a#2") for line in lines)
    throughput = next(line for line in lines if line.startswith("throughput fps")).split()
    assert len(throughput) == 3  # measured only: the plan predicts no throughput for it
    assert "comes back to a device" in result.stdout


def test_a_device_runs_its_stages_one_at_a_time(tmp_path):
    from dnnsplit.executor.timeline import plot_timeline, timeline_rows

    model = branchy_model()
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, _back_and_forth_plan(model), tg)
    result = run_pipeline(stages, random_frames(model, 30), model_input_keys(tg),
                          list(tg.output_sources), in_flight=3,
                          links={("a", "b"): {"latency_ms": 1.0, "mbps": 1000.0},
                                 ("b", "a"): {"latency_ms": 1.0, "mbps": 1000.0}},
                          first_device="a")
    on_a = sorted((e.start, e.end) for e in result.events if e.lane in ("a", "a#2"))
    assert len(on_a) == 60
    assert all(end <= next_start for (_, end), (next_start, _) in zip(on_a, on_a[1:]))
    rows = timeline_rows(result)  # the second visit is drawn on its device's lane
    assert rows["a#2"] == "a" and rows["b"] == "b" and rows["a->next"] == "a->next"
    assert plot_timeline(result, tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("backend", ["local", "processes"])
def test_a_plan_that_offloads_every_layer_sends_the_input_over_the_link(backend):
    from dnnsplit.partition.plan import Plan

    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    data = plan.to_dict()
    data["assignment"] = {n: "a" if n == "img" else "b" for n in plan.problem.nodes}
    slow = 8.0  # Mbps: the 16x16x3 float32 input (3,072 B) takes 3.07 ms + 0.2 ms latency
    data["links"] = {key: {"latency_ms": 0.2, "mbps": slow} for key in data["links"]}
    offloaded = Plan.from_dict(data, check=False)
    assert [s["device"] for s in offloaded.stages] == ["a", "b"]
    report = execute(model, offloaded, frames=6, backend=backend)
    assert report.outputs_match
    stage_a = next(s for s in report.stages if s["device"] == "a")
    assert stage_a["busy_ms"] < 1.0  # no layer, no call: the input is only handed on
    into_b = offloaded.predicted.link_ms[(0, 1)]
    assert into_b == pytest.approx(0.2 + 3072 * 8 / (slow * 1000))
    sent = [ms for lane, ms in report.run.link_ms.items() if lane.startswith("a->")]
    assert sent and sent[0] == pytest.approx(into_b, rel=0.05)


def test_execute_reports_measured_next_to_predicted_and_cli_json(tmp_path):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    report = execute(model, plan, frames=6)
    assert report.outputs_match
    assert set(report.measured) >= {"throughput_fps", "period_ms", "latency_p50_ms",
                                    "latency_p95_ms"}
    assert [s["device"] for s in report.stages] == [s["device"] for s in plan.stages]
    path = tmp_path / "branchy.keras"
    model.save(path)
    plan.save(tmp_path / "plan.json")
    result = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "plan.json"),
                                      "--frames", "5", "--json", "--no-baseline", "--timeline",
                                      str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.stdout)
    assert out["outputs_match"] and out["frames"] == 5 and out["backend"] == "local"
    assert out["in_flight"] == len(plan.stages) + 1  # the default
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert "speedup" not in out  # --no-baseline
    bad = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "none.json")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr
    other = tmp_path / "other.keras"
    two_input_model().save(other)  # the plan is for another model: refused before "running"
    wrong = CliRunner().invoke(app, ["run", str(other), "--plan", str(tmp_path / "plan.json")])
    assert wrong.exit_code == 2 and "running" not in wrong.stderr
    assert [line for line in wrong.stderr.splitlines() if line.strip()][0].startswith("error: ")


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_the_speedup_over_the_unsplit_model_is_measured_in_the_same_window(objective,
                                                                          monkeypatch):
    import dnnsplit.collectors.load as load
    from dnnsplit.executor.run import execute_with_baseline
    from dnnsplit.partition.planner import best_single_device_plan

    monkeypatch.setattr(load, "busy_cpus", lambda seconds=0.25: 0.0)
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"), objective=objective)
    report = execute_with_baseline(model, plan, repeats=3, frames=4)
    s, one = report.speedup, report.single
    single = best_single_device_plan(plan.problem, objective)
    key = "latency_ms" if objective == "latency" else "period_ms"
    assert s["predicted"] == pytest.approx(getattr(single.predicted, key) /
                                           getattr(plan.predicted, key))
    assert s["pairs"] == 3 and s["low"] <= s["measured"] <= s["high"]
    assert s["other_cpus"] == 0.0 and s["objective"] == objective
    assert one["device"] == single.algorithm.removeprefix("only ")
    if objective == "latency":  # one frame at a time, ratio of median latencies
        assert report.in_flight == 1
        assert s["measured"] == pytest.approx(one["latency_p50_ms"] /
                                              report.measured["latency_p50_ms"])
    else:  # the median pair's ratio of throughputs
        assert s["measured"] == pytest.approx(report.measured["throughput_fps"] /
                                              one["throughput_fps"])
    assert report.outputs_match and [r["device"] for r in report.stages] == \
        [st["device"] for st in plan.stages]


def test_executor_run_reports_the_speedup_first_and_warns_when_other_work_competed(
        tmp_path, monkeypatch):
    import json

    import dnnsplit.collectors.load as load

    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    model.save(tmp_path / "m.keras")
    plan.save(tmp_path / "plan.json")
    args = ["run", str(tmp_path / "m.keras"), "--plan", str(tmp_path / "plan.json"),
            "--frames", "4", "--repeats", "2"]
    monkeypatch.setattr(load, "busy_cpus", lambda seconds=0.25: 0.0)
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.stdout.splitlines()
    assert lines[1].startswith("speed-up (throughput) over the unsplit model on ")
    assert "over 2 alternated pairs of runs), predicted" in lines[1]
    assert "warning" not in quiet.stdout
    assert "median gap between frames" in quiet.stdout and "mean busy time" in quiet.stdout
    monkeypatch.setattr(load, "busy_cpus", lambda seconds=0.25: 1.4)
    busy = CliRunner().invoke(app, args + ["--json"])
    out = json.loads(busy.stdout)
    assert out["speedup"]["other_cpus"] == 1.4 and out["single"]["period_ms"] > 0
    text = CliRunner().invoke(app, args)
    assert "warning: other processes kept 1.4 of this machine's" in text.stdout


def test_a_serial_link_carries_one_transfer_at_a_time_from_when_the_sender_finished():
    from dnnsplit.executor.pipeline import SerialLink

    link = SerialLink()
    now = time.perf_counter()
    assert link.carry(now - 1.0, 0.2, wait=False) == pytest.approx((now - 1.0, now - 0.8))
    # ready while the link is still busy: starts when it is free
    start, end = link.carry(now - 0.9, 0.3, wait=False)
    assert (start, end) == pytest.approx((now - 0.8, now - 0.5))
    # an arrival already past costs no waiting; a future one is waited for
    t0 = time.perf_counter()
    link.carry(now - 0.6, 0.01)
    assert time.perf_counter() - t0 < 0.005
    t0 = time.perf_counter()
    start, end = link.carry(time.perf_counter(), 0.05)
    assert time.perf_counter() >= end and time.perf_counter() - t0 >= 0.049


def test_execute_calibrated_scales_the_prediction_by_the_probe_timed_now(tmp_path):
    from dnnsplit.collectors.calibrate import profile_probe_ms
    from dnnsplit.predictor.bundle import profile_dir

    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    report = execute(model, plan, frames=4, calibrate="cpu-1t-tensorflow")
    now = report.predicted["calibrated"]
    reference = profile_probe_ms(profile_dir("cpu-1t-tensorflow"))
    assert now["profile_probe_ms"] == pytest.approx(reference)
    assert now["speed_factor"] == pytest.approx(now["probe_ms"] / reference)
    assert 0.2 < now["speed_factor"] < 5  # the probe really ran on this machine
    for stage in report.stages:
        assert stage["calibrated_ms"] == pytest.approx(stage["predicted_ms"] * now["speed_factor"])
    assert now["latency_ms"] > 0 and now["period_ms"] > 0
    path = tmp_path / "branchy.keras"
    model.save(path)
    plan.save(tmp_path / "plan.json")
    result = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "plan.json"),
                                      "--frames", "3", "--calibrate", "cpu-1t-tensorflow",
                                      "--no-baseline"])
    assert result.exit_code == 0, result.output
    assert "speed now: reference probe" in result.stdout
    # the predicted latency is one frame's: the text says frames in flight waited for each other
    assert f"up to {len(plan.stages) + 1} frames were in flight" in result.stdout
    one = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "plan.json"),
                                   "--frames", "3", "--in-flight", "1", "--no-baseline"])
    assert one.exit_code == 0 and "latency" in one.stdout and "in flight" not in one.stdout
    bad = CliRunner().invoke(app, ["run", str(path), "--plan", str(tmp_path / "plan.json"),
                                   "--frames", "3", "--calibrate", "no-such-profile"])
    assert bad.exit_code != 0 and "unknown device profile" in bad.output


@pytest.mark.parametrize("in_flight", [1, 2])
def test_at_most_in_flight_frames_are_inside_the_pipeline(in_flight):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    result = run_pipeline(stages, random_frames(model, 12), model_input_keys(tg),
                          list(tg.output_sources), in_flight=in_flight)
    first = {e.frame: e.start for e in result.events if e.lane == stages[0].device}
    last = {e.frame: e.end for e in result.events if e.lane == stages[-1].device}
    assert sorted(first) == sorted(last) == list(range(12))
    for frame in range(in_flight, 12):  # frame f enters only after frame f - in_flight left
        assert first[frame] >= last[frame - in_flight]
    with pytest.raises(DnnsplitError, match="in-flight"):
        execute(model, plan, frames=2, in_flight=0)


def test_worker_threads_are_set_in_a_fresh_process_and_refused_once_running():
    import subprocess
    import sys

    code = (
        "from executor.run import configure_worker_threads as c\n"
        "import tensorflow as tf\n"
        "first = c(2, 1)\n"
        "tf.constant(1.0) + 1.0\n"  # the runtime has started: thread pools are fixed now
        "print(first, c(2, 1), c(3, 1), tf.config.threading.get_inter_op_parallelism_threads(),"
        " tf.config.threading.get_intra_op_parallelism_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["True", "True", "False", "2", "1"]


@pytest.mark.parametrize("backend", ["local", "processes"])
def test_a_plan_that_splits_a_layer_runs_the_split_model_and_matches_the_original(backend):
    from dnnsplit.partition.layer_split import plan_with_layer_splits
    from tests.partition.test_layer_split import chain_model, flops_plan

    model = chain_model()
    plan, _ = plan_with_layer_splits(model, flops_plan)
    assert plan.layer_splits == {"big": 2}
    report = execute(model, plan, frames=6, backend=backend, check_frames=6)
    assert report.outputs_match and report.frames == 6
    assert [s["device"] for s in report.stages] == ["w1", "w2"]
    assert [e.frame for e in report.run.events if e.lane == "w2"] == list(range(6))
    # the same plan without its splits names nodes the model does not have
    with pytest.raises(PlanMismatchError, match="big_part0"):
        execute(model, plan.with_layer_splits({}), frames=2)


def test_executor_run_says_which_layers_the_plan_splits(tmp_path):
    from dnnsplit.partition.layer_split import plan_with_layer_splits
    from tests.partition.test_layer_split import chain_model, flops_plan

    model = chain_model()
    model.save(tmp_path / "chain.keras")
    plan, _ = plan_with_layer_splits(model, flops_plan)
    plan.save(tmp_path / "plan.json")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "chain.keras"), "--plan",
                                      str(tmp_path / "plan.json"), "--frames", "3",
                                      "--no-baseline"])
    assert result.exit_code == 0, result.output
    assert "big split into 2 channel parts" in result.output
    assert "outputs match the unsplit model: True" in result.output
