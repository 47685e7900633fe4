"""Run one or several algorithms on a problem and compare them with single-device baselines.

>>> plans = make_plans(problem, "latency", ["dp", "dads", "neurosurgeon"])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from dnnsplit.partition.balanced import balanced
from dnnsplit.partition.brute import brute
from dnnsplit.partition.cost import evaluate, objective_value
from dnnsplit.partition.dads import dads
from dnnsplit.partition.dp import dp
from dnnsplit.partition.milp import milp
from dnnsplit.partition.neurosurgeon import neurosurgeon
from dnnsplit.partition.pipeline_milp import pipeline_milp
from dnnsplit.partition.plan import Plan
from dnnsplit.partition.problem import PlanError, Problem
from dnnsplit.partition.solution import OBJECTIVES, Solution

ALGORITHMS: dict[str, Callable[[Problem, str], Solution]] = {
    "dp": dp,
    "dads": dads,
    "neurosurgeon": neurosurgeon,
    "milp": milp,
    "brute": brute,
    "balanced": balanced,
    "pipeline-milp": pipeline_milp,
}
#: The algorithms that take a time limit (``time_limit_s``).
TIMED = frozenset({"dp", "milp", "balanced", "pipeline-milp"})
#: What ``--algorithm all`` runs (milp and brute force are references).
DEFAULT_ALGORITHMS = ("dp", "dads", "neurosurgeon")
TWO_DEVICE_ONLY = frozenset({"dads", "neurosurgeon"})


def make_plans(problem: Problem, objective: str, algorithms: Sequence[str],
               time_limit_s: float | None = None) -> list[Plan]:
    """One plan per algorithm; 2-device algorithms are skipped for k != 2 (only if several).

    ``time_limit_s``: the seconds each algorithm of :data:`TIMED` may take (their defaults
    otherwise); dp holds throughput to it, and for latency gives its exact search that long
    and a fallback as long again."""
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}: use {' or '.join(OBJECTIVES)}")
    for name in algorithms:
        if name not in ALGORITHMS:
            raise PlanError(f"unknown algorithm {name!r}: use {', '.join(ALGORITHMS)} or all")
    runnable = [a for a in algorithms
                if len(problem.devices) == 2 or a not in TWO_DEVICE_ONLY or len(algorithms) == 1]
    def run(name: str):
        if time_limit_s is None or name not in TIMED:
            return ALGORITHMS[name](problem, objective)
        if name == "dp":
            return dp(problem, objective, time_limit_s=time_limit_s,
                      fallback_time_s=time_limit_s)
        return ALGORITHMS[name](problem, objective, time_limit_s=time_limit_s)

    return [Plan.from_solution(problem, run(a)) for a in runnable]


@dataclass(frozen=True)
class Baseline:
    device: str
    value: float


def single_device_assignment(problem: Problem, device: str) -> dict[str, str]:
    """Everything on ``device`` but the inputs, which stay pinned to the first device."""
    return {n: (problem.devices[0] if n in problem.input_nodes else device)
            for n in problem.nodes}


def single_device_baselines(problem: Problem, objective: str) -> list[Baseline]:
    """Everything (but the inputs, pinned to the first device) on one device, for each device."""
    return [Baseline(device, objective_value(
        evaluate(problem, single_device_assignment(problem, device)), objective))
        for device in problem.devices]


def best_single_device_plan(problem: Problem, objective: str) -> Plan:
    """The unsplit model on the single device that the objective favours (the baseline the
    plans' speed-up is reported against): a plan that anyone can run and recompute."""
    best = min(single_device_baselines(problem, objective), key=lambda b: b.value)
    return single_device_plan(problem, objective, best.device)


def single_device_plan(problem: Problem, objective: str, device: str) -> Plan:
    """The unsplit model on ``device`` (the inputs on the first device) as a plan."""
    if device not in problem.devices:
        raise PlanError(f"no device {device!r} in the problem ({', '.join(problem.devices)})")
    index = {d: i for i, d in enumerate(problem.devices)}
    assignment = single_device_assignment(problem, device)
    value = objective_value(evaluate(problem, assignment), objective)
    solution = Solution(f"only {device}", objective,
                        tuple(index[assignment[n]] for n in problem.nodes), value, 0.0,
                        False, note="baseline: the unsplit model on one device")
    return Plan.from_solution(problem, solution)
