"""The Ray backend: a process per stage; same outputs, order and fault handling as threads."""

import time

import numpy as np
import pytest

from dnnsplit.collectors.throttle import available
from dnnsplit.executor.pipeline import ExecutorError, Fault
from dnnsplit.executor.ray_backend import start_ray
from dnnsplit.executor.run import execute, random_frames
from dnnsplit.executor.stages import build_stages, model_input_keys
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.model_graph import TaskGraph
from tests.executor.test_pipeline import (_back_and_forth_plan, branchy_model, nested_model,
                                          plan_for, two_input_model)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("fresh_keras_session")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the in-process tests (each run joins it)."""
    start_ray(num_cpus=4)
    yield
    ray.shutdown()


# the two-input and nested models run on the local and processes backends; here they are slow
# extras (the suite runs on 2 cores: each Ray actor is a process that imports the framework)
@pytest.mark.parametrize("build", [branchy_model,
                                   pytest.param(two_input_model, marks=pytest.mark.slow),
                                   pytest.param(nested_model, marks=pytest.mark.slow)])
def test_every_frame_equals_the_unsplit_model_and_order_is_kept(cluster, build):
    model = build()
    plan = plan_for(model)  # three devices, throughput
    assert len({plan.assignment[n] for n in plan.problem.nodes}) >= 2
    tg = TaskGraph.from_keras(model)
    stages = build_stages(model, plan, tg)
    frames = random_frames(model, 7, seed=3)
    from dnnsplit.executor.ray_backend import run_pipeline_ray

    slow = {(p, q): {"latency_ms": 15.0, "mbps": 1000.0}
            for p in plan.problem.devices for q in plan.problem.devices if p != q}
    result = run_pipeline_ray(stages, frames, model_input_keys(tg), list(tg.output_sources),
                              links=slow, first_device=plan.problem.devices[0], keep_outputs=7)
    assert len(result.outputs) == 7
    for arrays, outputs in zip(frames, result.outputs):
        reference = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        for r, o in zip(reference, outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)
    last = [e for e in result.events if e.lane == stages[-1].device]
    assert [e.frame for e in last] == list(range(7))  # each actor ran frames in order
    assert [e.end for e in last] == sorted(e.end for e in last)
    assert len({e.lane for e in result.events} & {s.device for s in stages}) == len(stages)
    assert result.link_ms and all(v >= 14.0 for v in result.link_ms.values())


def test_a_tensor_crosses_to_each_device_once_and_waits_where_only_its_device_reads_it():
    from dnnsplit.executor.ray_backend import routes
    from dnnsplit.executor.stages import Stage

    def stage(device, reads, makes, name=""):
        return Stage(device, [], list(reads), list(makes), None, name=name)

    # a U-Net visit: the phone makes a skip tensor (y) and a tensor for the server (x), which
    # both the server and the phone's second stage read (w); the server makes z
    stages = [stage("phone", ["in"], ["x", "y", "w"]), stage("server", ["x", "w"], ["z"]),
              stage("phone", ["y", "z", "w"], ["out"], "phone#2")]
    travel, stay = zip(*routes(stages, ["in"], ["out"]))
    assert travel == ({"x", "w"}, {"z"}, {"out"})
    assert stay == ({"y", "w"}, set(), set())
    # a tensor read further on by a third device travels on through the stage between
    stages = [stage("a", ["in"], ["x"]), stage("b", ["x"], ["y"]), stage("c", ["x", "y"], ["o"])]
    assert [t for t, _ in routes(stages, ["in"], ["o"])] == [{"x"}, {"x", "y"}, {"o"}]
    # a model output made early travels to the end (the driver reads it)
    stages = [stage("a", ["in"], ["o1", "x"]), stage("b", ["x"], ["o2"])]
    assert [t for t, _ in routes(stages, ["in"], ["o1", "o2"])] == [{"o1", "x"}, {"o1", "o2"}]


def test_a_plan_that_comes_back_to_a_device_runs_on_one_actor_per_device(cluster):
    model = branchy_model()
    plan = _back_and_forth_plan(model, latency_ms=25.0)
    report = execute(model, plan, frames=5, backend="ray", in_flight=1)
    assert report.outputs_match
    assert [s["stage"] for s in report.stages] == ["a", "b", "a#2"]
    assert report.stages[0]["ray_node"] == report.stages[2]["ray_node"]
    assert set(report.run.link_ms) == {"a->next", "b->next"}
    for lane in ("a->next", "b->next"):  # each crossing once, as the plan counts it
        assert report.run.link_ms[lane] == pytest.approx(25.0, abs=1.0)
    assert 50.0 <= report.measured["latency_p50_ms"] <= 80.0


def test_a_failing_stage_stops_the_run_and_names_the_stage(cluster, tmp_path):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    victim = plan.stages[-1]["device"]
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=f"stage on device '{victim}'.*injected fault"):
        execute(model, plan, frames=200, backend="ray", fault=Fault(victim, 4, "raise"),
                models_dir=str(tmp_path))
    assert time.monotonic() - start < 60  # actors start in ~5 s; the failure itself is fast
    assert list(tmp_path.iterdir()) == []  # the shipped sub-models are removed, also on failure


def test_sub_models_shipped_as_files_run_and_are_removed_after(cluster, tmp_path):
    import pickle

    from dnnsplit.executor.ray_backend import _shipped_models

    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    stages = build_stages(model, plan, TaskGraph.from_keras(model))
    with _shipped_models(stages, str(tmp_path / "shared")) as paths:
        assert len(paths) == len(stages)
        for path, stage in zip(paths, stages):
            with open(path, "rb") as f:
                copy = pickle.load(f)
            assert [w.shape for w in copy.weights] == [w.shape for w in stage.model.weights]
    assert list((tmp_path / "shared").iterdir()) == []
    report = execute(model, plan, frames=3, backend="ray", models_dir=str(tmp_path / "shared"))
    assert report.outputs_match
    assert list((tmp_path / "shared").iterdir()) == []
    with pytest.raises(DnnsplitError, match="need --backend ray"):
        execute(model, plan, frames=2, models_dir=str(tmp_path))


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


@pytest.mark.slow  # runs on the local and processes backends in the default run
def test_a_plan_that_splits_a_layer_runs_on_ray_and_matches_the_original(cluster):
    from dnnsplit.partition.layer_split import plan_with_layer_splits
    from tests.partition.test_layer_split import chain_model, flops_plan

    model = chain_model()
    plan, _ = plan_with_layer_splits(model, flops_plan)
    assert plan.layer_splits == {"big": 2}
    report = execute(model, plan, frames=5, backend="ray", check_frames=5)
    assert report.outputs_match and [s["device"] for s in report.stages] == ["w1", "w2"]


@pytest.mark.skipif(not available(), reason="no writable cgroup CPU controller")
def test_a_throttled_device_s_actor_runs_in_its_quota_group_and_leaves_none(cluster):
    from tests.collectors.test_throttle import assert_only_the_phone_ran_throttled

    model = branchy_model()
    plan = plan_for(model, devices=("phone", "server"))
    report = execute(model, plan, frames=6, backend="ray", throttle={"phone": 0.5})
    assert_only_the_phone_ran_throttled(report, 0.5)
