"""The plan figure names its lanes as `executor run` reports them, and gets written."""

import pytest

from dnnsplit.partition.cost import evaluate, stage_ms
from dnnsplit.partition.plan import Plan
from dnnsplit.partition.plot import link_lanes, plot_plan, stage_names
from dnnsplit.partition.problem import Link, Problem


def _plan(devices, assignment, edges, objective):
    nodes = ["in", "a", "b", "c"]
    problem = Problem.build(
        nodes=nodes, edges=edges, devices=devices,
        compute_ms={n: {d: 0.0 if n == "in" else 2.0 for d in devices} for n in nodes},
        output_bytes={n: 1000 for n in nodes},
        links={(p, q): Link(1.0 + i, 8.0) for i, (p, q) in enumerate(
            (p, q) for p in devices for q in devices if p != q)},
        input_nodes=["in"], output_nodes=["c"],
        call_overhead_ms={d: 0.5 for d in devices})
    return Plan(problem, objective, "hand", assignment, evaluate(problem, assignment), 0.0, False)


def test_a_stage_that_feeds_two_later_stages_is_one_lane_with_both_links():
    plan = _plan(["w1", "w2", "w3"], {"in": "w1", "a": "w1", "b": "w2", "c": "w3"},
                 [("in", "a"), ("a", "b"), ("b", "c"), ("a", "c")], "throughput")
    links = plan.predicted.link_ms
    lanes = {name: (sender, ms) for name, sender, ms in link_lanes(plan)}
    assert set(lanes) == {"w1->w2+", "w2->w3", "return"}
    assert lanes["w1->w2+"] == (0, pytest.approx(links[(0, 1)] + links[(0, 2)]))
    assert lanes["w2->w3"] == (1, pytest.approx(links[(1, 2)]))
    assert lanes["return"] == (2, pytest.approx(links[(2, 0)]))
    assert stage_ms(plan.problem, [(s["device"], s["nodes"]) for s in plan.stages]) == \
        pytest.approx(list(plan.predicted.device_ms))


def test_a_plan_that_comes_back_names_each_visit_and_sends_over_a_pair_once(tmp_path):
    plan = _plan(["phone", "server"], {"in": "phone", "a": "phone", "b": "server", "c": "phone"},
                 [("in", "a"), ("a", "b"), ("b", "c")], "latency")
    assert stage_names(plan.stages) == ["phone", "server", "phone#2"]
    assert [name for name, _, _ in link_lanes(plan)] == ["phone->server", "server->phone#2"]
    times = stage_ms(plan.problem, [(s["device"], s["nodes"]) for s in plan.stages])
    assert times == pytest.approx([2.5, 2.5, 2.0])  # the phone's overhead on its first visit
    lanes = sum(ms for _, _, ms in link_lanes(plan))
    assert sum(times) + lanes == pytest.approx(plan.predicted.latency_ms)
    png = plot_plan(plan, tmp_path / "plan.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
