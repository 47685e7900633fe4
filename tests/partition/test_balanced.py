"""The balanced heuristic: valid pipelines, never worse than the best contiguous split of its
orders where the greedy fill is exact (no link costs), improved by local moves."""

import math
import time

import pytest

from dnnsplit.partition import instances
from dnnsplit.partition.balanced import (
    balanced, best_order_split, candidate_orders, first_fit, greedy_fill, improve_by_moves,
    order_split)
from dnnsplit.partition.cost import evaluate_indexed
from dnnsplit.partition.dp import dp
from dnnsplit.partition.problem import Link, PlanError
from random_problems import best_split_along, random_problem


def free_links(problem):
    from dataclasses import replace

    link = Link(latency_ms=0.0, mbps=1e9)
    return replace(problem, links={pair: link for pair in problem.links})


def is_topological(ip, order):
    position = {v: i for i, v in enumerate(order)}
    return sorted(order) == list(range(ip.n)) and all(
        position[u] < position[v] for v in range(ip.n) for u in ip.preds[v])


@pytest.mark.parametrize("seed", range(40))
def test_every_candidate_order_is_topological(seed):
    ip = random_problem(seed, 12, 3, edge_p=0.3, n_inputs=1 + seed % 2).indexed
    orders = candidate_orders(ip)
    assert len(orders) >= 2 and all(is_topological(ip, order) for order in orders)


@pytest.mark.parametrize("seed, k", [(s, 2 + s % 3) for s in range(40)])
def test_without_link_costs_the_split_of_an_order_is_its_best_contiguous_split(seed, k):
    problem = free_links(random_problem(seed, 8, k, n_inputs=1 + seed % 2,
                                        call_overhead=seed % 2 == 1))
    ip = problem.indexed
    for order in candidate_orders(ip):
        devices, value, _ = order_split(ip, order)
        assert math.isclose(value, evaluate_indexed(ip, devices).period_ms)
        assert value <= best_split_along(problem, order) * (1 + 2e-4) + 1e-6


@pytest.mark.parametrize("seed, k", [(s, 2 + s % 3) for s in range(40)])
def test_answers_are_pipelines_never_better_than_the_optimum(seed, k):
    problem = random_problem(seed, 9, k, n_inputs=1 + seed % 2, call_overhead=seed % 3 == 0)
    answer = balanced(problem)
    predicted = evaluate_indexed(problem.indexed, answer.assignment)
    assert predicted.monotone and math.isclose(answer.value, predicted.period_ms)
    assert answer.value >= dp(problem, "throughput").value - 1e-9
    assert not answer.exact and "heuristic" in answer.note


@pytest.mark.parametrize("seed", range(10))
def test_local_moves_never_make_a_plan_worse(seed):
    problem = instances.random_layered(120, 4, seed=seed)
    ip = problem.indexed
    start = greedy_fill(ip, list(range(ip.n)), sum(map(min, ip.compute)) / 3)
    before = evaluate_indexed(ip, start).period_ms
    moved, steps = improve_by_moves(ip, start, deadline=time.perf_counter() + 0.2)
    after = evaluate_indexed(ip, moved)
    assert after.monotone and after.period_ms <= before + 1e-9
    assert steps > 0


def test_moves_reach_a_balance_the_orders_miss():
    """Two chains joined at the end, on 2 identical free devices: along any order a split
    point leaves one device with more, the moves even it out to half the work each."""
    from dnnsplit.partition.problem import Problem

    nodes = ["in"] + [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)] + ["out"]
    edges = [("in", "a0"), ("in", "b0"), ("a4", "out"), ("b4", "out")]
    edges += [(f"{c}{i}", f"{c}{i + 1}") for c in "ab" for i in range(4)]
    ms = {"in": 0.0, "out": 0.0, **{f"a{i}": 1.0 for i in range(5)},
          **{f"b{i}": 3.0 for i in range(5)}}
    link = Link(0.0, 1e9)
    problem = Problem.build(nodes, edges, ["x", "y"], {n: {"x": m, "y": m} for n, m in ms.items()},
                            {n: 4 for n in nodes}, {("x", "y"): link, ("y", "x"): link},
                            ["in"], ["out"])
    answer = balanced(problem)
    assert math.isclose(answer.value, dp(problem, "throughput").value, rel_tol=1e-6)


def test_best_order_split_is_the_best_over_its_orders():
    ip = instances.inception_like(4, 3, branches=4).indexed
    _, value, _ = best_order_split(ip)
    assert math.isclose(value, min(order_split(ip, o, fill)[1] for o in candidate_orders(ip)
                                   for fill in (greedy_fill, first_fit)))


@pytest.mark.parametrize("seed, k", [(s, 2 + s % 3) for s in range(30)])
def test_first_fit_gives_pipelines_within_the_period_unless_the_last_device_overflows(seed, k):
    problem = random_problem(seed, 10, k, n_inputs=1 + seed % 2, call_overhead=seed % 2 == 1)
    ip = problem.indexed
    for order in candidate_orders(ip):
        period = 1.3 * sum(map(min, ip.compute)) / k
        devices = first_fit(ip, order, period)
        predicted = evaluate_indexed(ip, devices)
        assert predicted.monotone
        assert all(load <= period + 1e-9 for load in predicted.device_ms[:-1])


def test_refuses_the_latency_objective():
    with pytest.raises(PlanError, match="throughput"):
        balanced(random_problem(1, 5, 2), "latency")
