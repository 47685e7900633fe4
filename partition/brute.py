"""Exhaustive enumeration of every assignment: the reference for tests (small graphs only)."""

from __future__ import annotations

import itertools

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch

#: More free nodes than this and brute force refuses (k ** free assignments).
MAX_ASSIGNMENTS = 2_000_000


def brute(problem: Problem, objective: str) -> Solution:
    """Try all k^m assignments of the m non-input nodes; inputs stay on the first device."""
    ip = problem.indexed
    free = [u for u in range(ip.n) if not ip.is_input[u]]
    if ip.k ** len(free) > MAX_ASSIGNMENTS:
        raise PlanError(f"brute force over {ip.k}^{len(free)} assignments is too large")
    best, best_value, count = None, float("inf"), 0
    devices = [0] * ip.n
    with stopwatch() as elapsed:
        for combo in itertools.product(range(ip.k), repeat=len(free)):
            for u, d in zip(free, combo):
                devices[u] = d
            count += 1
            value = objective_value(evaluate_indexed(ip, devices), objective)
            if value < best_value:
                best, best_value = tuple(devices), value
    return Solution("brute", objective, best, best_value, elapsed(), exact=True, states=count)
