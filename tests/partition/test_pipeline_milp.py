"""The pipeline MILP (cumulative stage variables) equals brute force, the exact DP and the
other MILP formulation; its answers and bounds are honest under a time limit."""

import math

import pytest

from dnnsplit.partition import instances
from dnnsplit.partition.brute import brute
from dnnsplit.partition.cost import evaluate_indexed
from dnnsplit.partition.dp import dp
from dnnsplit.partition.milp import milp
from dnnsplit.partition.pipeline_milp import pipeline_milp
from dnnsplit.partition.problem import Link, PlanError
from random_problems import random_problem


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def free_links(problem):
    """The same problem with (effectively) free links."""
    from dataclasses import replace

    link = Link(latency_ms=0.0, mbps=1e9)
    return replace(problem, links={pair: link for pair in problem.links})


CASES = [(seed, 2 + seed % 3) for seed in range(45)]


@pytest.mark.parametrize("linked", [True, False])
@pytest.mark.parametrize("seed, k", CASES)
def test_equals_brute_force_and_dp_on_small_random_dags(seed, k, linked):
    problem = random_problem(seed, 7 if k < 4 else 6, k, edge_p=0.25 + seed % 3 * 0.15,
                             n_inputs=1 + seed % 2, call_overhead=seed % 2 == 1)
    if not linked:
        problem = free_links(problem)
    answer = pipeline_milp(problem)
    assert answer.exact and "proven optimal" in answer.note
    assert close(answer.value, brute(problem, "throughput").value)
    assert close(answer.value, dp(problem, "throughput").value)
    assert close(answer.lower_bound, answer.value)
    predicted = evaluate_indexed(problem.indexed, answer.assignment)
    assert predicted.monotone and close(predicted.period_ms, answer.value)


@pytest.mark.parametrize("family", ["transformer", "inception", "random"])
@pytest.mark.parametrize("unequal", [False, True])
@pytest.mark.parametrize("k", [3, 4])
def test_equals_the_exact_dp_and_the_other_milp_on_the_instance_families(family, unequal, k):
    """Identical devices exercise the symmetry breaking, unequal ones the speeds."""
    problem = {
        "transformer": lambda: instances.transformer_encoder(1, k, heads=2, unequal=unequal),
        "inception": lambda: instances.inception_like(2, k, branches=3, unequal=unequal),
        "random": lambda: instances.random_layered(18, k, width=3, unequal=unequal, seed=k),
    }[family]()
    reference = dp(problem, "throughput", time_limit_s=None)
    assert reference.exact
    answer = pipeline_milp(problem)
    assert answer.exact and close(answer.value, reference.value)
    other = milp(problem, "throughput")
    assert other.exact and close(other.value, reference.value)


@pytest.mark.parametrize("seed", range(10))
def test_an_incumbent_is_kept_when_nothing_beats_it_and_never_made_worse(seed):
    problem = random_problem(300 + seed, 7, 3, call_overhead=True)
    optimum = dp(problem, "throughput")
    kept = pipeline_milp(problem, incumbent=optimum.assignment)
    assert kept.exact and close(kept.value, optimum.value)
    everything_first = (0,) * len(problem.nodes)
    first = evaluate_indexed(problem.indexed, everything_first).period_ms
    improved = pipeline_milp(problem, incumbent=everything_first)
    assert improved.value <= first + 1e-9 and close(improved.value, optimum.value)


def test_a_time_limit_gives_an_honest_bound_and_gap():
    problem = instances.random_layered(400, 6, seed=3)
    answer = pipeline_milp(problem, time_limit_s=0.5)
    assert answer.lower_bound <= answer.value + 1e-9
    if not answer.exact:
        assert "time limit reached" in answer.note and "gap of at most" in answer.note
    predicted = evaluate_indexed(problem.indexed, answer.assignment)
    assert predicted.monotone and close(predicted.period_ms, answer.value)


def test_refuses_latency_and_a_backward_incumbent():
    problem = random_problem(1, 5, 2)
    with pytest.raises(PlanError, match="throughput"):
        pipeline_milp(problem, "latency")
    ip = problem.indexed
    backwards = [0] * ip.n
    for u in range(ip.n):
        if ip.succs[u] and not ip.is_input[u]:
            backwards[u] = 1  # u on the second device, its consumers on the first
            break
    else:
        pytest.skip("no edge between free nodes")
    with pytest.raises(PlanError, match="not a pipeline"):
        pipeline_milp(problem, incumbent=backwards)


@pytest.mark.parametrize("seed, k", [(s, 2 + s % 3) for s in range(40)])
def test_stage_windows_hold_every_optimal_plan(seed, k):
    from dnnsplit.partition.pipeline_milp import stage_windows

    problem = random_problem(700 + seed, 8, k, n_inputs=1 + seed % 2, call_overhead=seed % 2 == 1)
    optimum = dp(problem, "throughput")
    first, last = stage_windows(problem.indexed, optimum.value * (1 + 1e-9))
    assert all(first[v] <= d <= last[v] for v, d in enumerate(optimum.assignment))


def test_stage_windows_pin_a_chain_split_evenly():
    """A chain of 6 unit nodes on 3 identical devices at period 2: node i (1-based) can only
    be on device (i - 1) // 2."""
    from dnnsplit.partition.pipeline_milp import stage_windows
    from dnnsplit.partition.problem import Problem

    nodes = ["in"] + [f"n{i}" for i in range(1, 7)]
    devices = ["a", "b", "c"]
    link = Link(0.0, 1e9)
    problem = Problem.build(nodes, list(zip(nodes, nodes[1:])), devices,
                            {n: {d: 1.0 for d in devices} for n in nodes}, {n: 4 for n in nodes},
                            {(a, b): link for a in devices for b in devices if a != b},
                            ["in"], ["n6"])
    first, last = stage_windows(problem.indexed, 2.0)
    assert first == last == [0, 0, 0, 1, 1, 2, 2]
