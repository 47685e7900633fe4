"""What every partition algorithm returns."""

from __future__ import annotations

import gc
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
    """``with stopwatch() as elapsed: ...; elapsed()`` gives milliseconds.

    Python's cyclic garbage collector is paused inside (and resumed after, if it was on):
    solvers allocate many small objects, and with a Keras model in memory each full
    collection they trigger costs about 0.3 s here (measured on NASNetMobile's min cuts:
    90 ms with no collection, 450 ms with one), which made solver times erratic.
    """
    collecting = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    end = None

    def elapsed() -> float:
        return ((end or time.perf_counter()) - start) * 1000

    try:
        yield elapsed
    finally:
        end = time.perf_counter()
        if collecting:
            gc.enable()


def bound_note(value: float, lower: float) -> str:
    """'the optimum is at least L ms, a gap of at most G%' for an unproven answer."""
    gap = (value - lower) / value if value > 0 else 0.0
    return f"the optimum is at least {lower:.4g} ms, a gap of at most {gap:.1%}"
