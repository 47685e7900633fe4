"""The single-device baseline that speed-ups are reported against is a plan of its own."""

import pytest

from dnnsplit.partition.plan import Plan
from dnnsplit.partition.planner import best_single_device_plan, single_device_baselines
from dnnsplit.partition.problem import Link, Problem


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_the_best_single_device_plan_runs_everything_but_the_inputs_there(objective):
    nodes = ["in", "a", "b"]
    problem = Problem.build(
        nodes=nodes, edges=[("in", "a"), ("a", "b")], devices=["phone", "server"],
        compute_ms={"in": {"phone": 0, "server": 0}, "a": {"phone": 8, "server": 1},
                    "b": {"phone": 8, "server": 1}},
        output_bytes={n: 1000 for n in nodes},
        links={("phone", "server"): Link(1.0, 8.0), ("server", "phone"): Link(1.0, 8.0)},
        input_nodes=["in"], output_nodes=["b"])
    plan = best_single_device_plan(problem, objective)
    assert plan.assignment == {"in": "phone", "a": "server", "b": "server"}
    assert plan.algorithm == "only server"
    assert plan.value == pytest.approx(min(b.value for b in
                                           single_device_baselines(problem, objective)))
    assert Plan.from_dict(plan.to_dict()).predicted == plan.predicted  # it recomputes
