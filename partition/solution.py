"""What every partition algorithm returns."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

OBJECTIVES = ("latency", "throughput")


@dataclass(frozen=True)
class Solution:
    """An assignment (device index per node, in ``Problem.nodes`` order) and how it was found.

    ``value`` is the objective the algorithm minimised (latency_ms, or period_ms for
    throughput); ``exact`` says whether it is proven optimal; ``states`` counts the states or
    candidates the algorithm examined; ``lower_bound`` is a proven lower bound on the optimum
    when one is known (an unproven answer's gap is ``1 - lower_bound / value``).
    """

    algorithm: str
    objective: str
    assignment: tuple[int, ...]
    value: float
    solver_ms: float
    exact: bool
    states: int = 0
    note: str = ""
    lower_bound: float | None = None

    def named(self, problem) -> dict[str, str]:
        """The assignment as node name -> device name."""
        return {n: problem.devices[d] for n, d in zip(problem.nodes, self.assignment)}


@contextmanager
def stopwatch():
    """``with stopwatch() as elapsed: ...; elapsed()`` gives milliseconds."""
    start = time.perf_counter()
    end = None

    def elapsed() -> float:
        return ((end or time.perf_counter()) - start) * 1000

    try:
        yield elapsed
    finally:
        end = time.perf_counter()
