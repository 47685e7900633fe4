"""Latency with k > 2 devices on graphs too wide for the k-device DP (the NASNets).

Exact 2-device min cuts (one for a relaxation, one per other device) and, if they leave a gap,
a short MILP:

1. **The merged relaxation** (a lower bound): devices 2..k become one virtual device whose
   compute for a node is the cheapest among them, reached from the first device at the
   cheapest link into any of them and returning at the cheapest link back; transfers among
   them are free, and its call overhead is the cheapest of theirs. Every k-device plan maps to
   a plan of this 2-device problem that costs no more (a tensor sent from the first device to
   some set of others pays at least one cheapest transfer; one sent back pays at least the
   cheapest return; using some of the others pays at least one overhead), so its exact optimum
   (a min cut) bounds the k-device optimum from below. Placing each node of its virtual side
   on its cheapest device gives a real plan too.
2. **The best plan over the first device and one other**: one exact min cut per device.
3. When the best of these is above the bound: :func:`dnnsplit.partition.milp.milp` for what is
   left of the time budget (it proves small problems quickly, and its incumbent is kept when better;
   on large graphs it adds its own lower bound).

When one device dominates the others (cheapest compute and links), the relaxation is tight
and the answer is proven optimal without any search.
"""

from __future__ import annotations

from dataclasses import replace

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.dads import min_cut_latency
from dnnsplit.partition.problem import IndexedProblem, PlanError, Problem
from dnnsplit.partition.solution import Solution, bound_note

#: Seconds in all (from the start of dp) after which the MILP stops, and its least limit.
BUDGET_S = 0.9
MILP_MIN_S = 0.2
#: A candidate within this relative distance of the bound counts as proven optimal.
PROVEN_RTOL = 1e-9


def pair_problem(ip: IndexedProblem, pair: tuple[int, int]) -> IndexedProblem:
    """The 2-device problem on devices ``pair`` (the first must be device 0)."""
    return replace(ip, k=2, compute=tuple(tuple(c[d] for d in pair) for c in ip.compute),
                   overhead=tuple(ip.overhead[d] for d in pair),
                   transfer=tuple(tuple(tuple(t[a][b] for b in pair) for a in pair)
                                  for t in ip.transfer))


def merged_rest(ip: IndexedProblem) -> IndexedProblem:
    """The 2-device relaxation: device 0 and the others merged into their cheapest one.

    >>> from partition.problem import Link, Problem
    >>> p = Problem.build(["x", "f"], [("x", "f")], ["a", "b", "c"],
    ...                   {"x": {d: 0 for d in "abc"}, "f": {"a": 9, "b": 4, "c": 6}},
    ...                   {"x": 1000, "f": 1000}, {(u, v): Link(1.0, 8.0) for u in "abc"
    ...                   for v in "abc" if u != v}, ["x"], ["f"])
    >>> merged_rest(p.indexed).compute[1]
    (9.0, 4.0)
    """
    rest = range(1, ip.k)
    return replace(ip, k=2,
                   compute=tuple((c[0], min(c[d] for d in rest)) for c in ip.compute),
                   overhead=(ip.overhead[0], min(ip.overhead[d] for d in rest)),
                   transfer=tuple(((0.0, min(t[0][b] for b in rest)),
                                   (min(t[a][0] for a in rest), 0.0)) for t in ip.transfer))


def relaxation_bound(ip: IndexedProblem) -> tuple[float, list[int]]:
    """(a lower bound on the k-device latency optimum, the best plan built from the
    relaxation's cut: its virtual side on each node's cheapest device, or all on one device)."""
    merged = merged_rest(ip)
    sides = min_cut_latency(merged)
    bound = objective_value(evaluate_indexed(merged, sides), "latency")
    rest = range(1, ip.k)
    plans = [[0 if side == 0 else min(rest, key=lambda d: ip.compute[v][d])
              for v, side in enumerate(sides)]]
    plans += [[0 if side == 0 else d for side in sides] for d in rest]
    return bound, min(plans, key=lambda plan: _latency(ip, plan))


def proven_by_relaxation(ip: IndexedProblem, reason: str, elapsed,
                         relaxation: tuple[float, list[int]]) -> Solution | None:
    """The relaxation's plan when it meets the relaxation's bound (proven optimal), else None.

    One min cut (``relaxation`` is :func:`relaxation_bound`'s answer): dp tries it before any
    search on a wide graph.
    """
    lower, plan = relaxation
    value = _latency(ip, plan)
    if not _meets(value, lower):
        return None
    return _solution(plan, value, elapsed, True, lower, 1,
                     f"exact dp gave up ({reason}); proven optimal without search: the plan "
                     "of the 2-device relaxation (the other devices merged into their "
                     "cheapest) meets its lower bound")


def wide_latency(problem: Problem, reason: str, elapsed,
                 relaxation: tuple[float, list[int]] | None = None) -> Solution:
    """The answer for dp (see the module docstring); ``elapsed()`` is dp's clock in ms;
    ``relaxation``: :func:`relaxation_bound`'s answer when already known."""
    from dnnsplit.partition.milp import milp

    ip = problem.indexed
    lower, plan = relaxation or relaxation_bound(ip)
    candidates = [(_latency(ip, plan), plan, "the merged relaxation's plan")]
    for other in range(1, ip.k):
        pair = (0, other)
        devices = [pair[d] for d in min_cut_latency(pair_problem(ip, pair))]
        candidates.append((_latency(ip, devices), devices,
                           "the best plan that uses the first device and one other"))
    value, devices, how = min(candidates, key=lambda c: c[0])
    searched = f"{len(candidates)} exact 2-device min cuts"
    if _meets(value, lower):
        return _solution(devices, value, elapsed, True, lower, len(candidates),
                         f"exact dp gave up ({reason}); {how}, proven optimal: it equals the "
                         "lower bound of the 2-device relaxation (the other devices merged "
                         "into their cheapest)")
    limit = max(MILP_MIN_S, BUDGET_S - elapsed() / 1000)
    try:
        answer = milp(problem, "latency", time_limit_s=limit)
    except PlanError:  # no incumbent within the limit
        answer = None
    states = len(candidates) + (answer.states if answer is not None else 0)
    if answer is not None and answer.exact:
        return _solution(answer.assignment, answer.value, elapsed, True, answer.value, states,
                         f"exact dp gave up ({reason}); answered by MILP (HiGHS), proven "
                         "optimal")
    if answer is not None:
        lower = max(lower, answer.lower_bound or 0.0)
        if answer.value < value - 1e-9:
            value, devices, how = answer.value, list(answer.assignment), "the MILP's incumbent"
    return _solution(devices, value, elapsed, False, lower, states,
                     f"graph too wide for exact dp ({reason}): {how}, after {searched} and "
                     f"{limit:.2g} s of MILP; " + bound_note(value, lower))


def _meets(value: float, lower: float) -> bool:
    """Whether a plan's value equals the lower bound (up to rounding): proven optimal."""
    return value <= lower * (1 + PROVEN_RTOL) + 1e-12


def _latency(ip: IndexedProblem, devices) -> float:
    return objective_value(evaluate_indexed(ip, devices), "latency")


def _solution(devices, value, elapsed, exact, lower, states, note) -> Solution:
    return Solution("dp", "latency", tuple(devices), value, elapsed(), exact=exact,
                    states=states, lower_bound=lower, note=note)
