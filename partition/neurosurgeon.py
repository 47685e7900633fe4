"""Neurosurgeon baseline: the best single split of a topological order between 2 devices.

Nodes before the split run on the first device, the rest on the second. Every prefix of a
topological order is a downset, so the split is a valid pipeline for either objective.
"""

from __future__ import annotations

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch


def neurosurgeon(problem: Problem, objective: str) -> Solution:
    """Try the n+1 prefixes of ``problem.nodes`` (inputs come first) and keep the best."""
    ip = problem.indexed
    if ip.k != 2:
        raise PlanError(f"neurosurgeon splits between 2 devices, got {ip.k}")
    first_free = sum(ip.is_input)
    best, best_value = None, float("inf")
    with stopwatch() as elapsed:
        for split in range(first_free, ip.n + 1):
            devices = [0] * split + [1] * (ip.n - split)
            value = objective_value(evaluate_indexed(ip, devices), objective)
            if value < best_value:
                best, best_value = tuple(devices), value
    return Solution("neurosurgeon", objective, best, best_value, elapsed(), exact=False,
                    states=ip.n + 1 - first_free)
