"""Latency with k > 2 on graphs too wide for the k-device DP: the relaxation bound is a true
lower bound (checked against brute force), and what it proves is the real optimum."""

import math

import pytest

from dnnsplit.partition.brute import brute
from dnnsplit.partition.cost import evaluate_indexed
from dnnsplit.partition.dp import dp
from dnnsplit.partition.problem import Link, Problem
from dnnsplit.partition.wide_latency import merged_rest, relaxation_bound
from tests.partition.random_problems import random_problem


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("seed, k", [(s, 3) for s in range(40)] + [(s, 4) for s in range(40, 60)])
def test_the_relaxation_bounds_the_optimum_from_below_and_its_plan_from_above(seed, k):
    problem = random_problem(700 + seed, 7, k, n_inputs=1 + seed % 2,
                             call_overhead=seed % 2 == 1)
    optimum = brute(problem, "latency").value
    lower, plan = relaxation_bound(problem.indexed)
    assert lower <= optimum + 1e-9
    assert evaluate_indexed(problem.indexed, plan).latency_ms >= optimum - 1e-9


def test_the_relaxation_is_tight_on_two_devices_and_merges_into_the_cheapest():
    problem = random_problem(3, 8, 2)
    merged = merged_rest(problem.indexed)
    assert merged.compute == problem.indexed.compute  # nothing to merge
    assert close(relaxation_bound(problem.indexed)[0], brute(problem, "latency").value)


def dominated(seed: int, k: int, n: int = 9) -> Problem:
    """A random problem where the last device is the fastest at every node and every link is
    the same: the k-device optimum uses only the first device and the last."""
    base = random_problem(seed, n, k, n_inputs=1 + seed % 2)
    compute = {v: dict(base.compute_ms[v]) for v in base.nodes}
    for row in compute.values():
        row[base.devices[-1]] = min(row.values()) * 0.5
    links = {(a, b): Link(1.0, 100.0) for a in base.devices for b in base.devices if a != b}
    return Problem.build(base.nodes, base.edges, base.devices, compute,
                         base.output_bytes, links, base.input_nodes,
                         base.output_nodes)


@pytest.mark.parametrize("seed", range(25))
def test_a_wide_graph_with_a_dominant_device_is_proven_optimal_without_search(monkeypatch,
                                                                              seed):
    import dnnsplit.partition.dp as dp_module

    problem = dominated(900 + seed, 3)
    optimum = brute(problem, "latency").value
    monkeypatch.setattr(dp_module, "MAX_STATE_ESTIMATE", 0)  # every graph is too wide
    monkeypatch.setattr(dp_module, "LATENCY_WIDE_TRY_S", 0.0)
    answer = dp(problem, "latency")
    assert answer.exact and "proven optimal" in answer.note
    assert close(answer.value, optimum) and close(answer.lower_bound, optimum)
