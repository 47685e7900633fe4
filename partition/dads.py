"""DADS baseline: minimum s-t cut with virtual nodes for multi-consumer tensors (2 devices).

Side S of the cut is the first device, side T the second. For latency the cut value equals
the objective exactly: node v pays ``c(v, d2)`` on edge s->v and ``c(v, d1)`` on v->t; a
tensor of u is charged once per direction through two virtual nodes:
``u -> u_fwd`` (t12(u)), ``u_fwd -> consumer`` (inf): cut iff u in S and some consumer in T;
``consumer -> u_back`` (inf), ``u_back -> u`` (t21(u)): cut iff u in T and some consumer in S
(an output's return to d1 is a consumer pinned to S). Inputs are pinned to S.

For throughput, DADS's heavy-load variant: the cut is constrained to a pipeline (edges only
S -> T) and the compute weights of the two sides are swept to balance them; the best period
found is kept. It is a heuristic (``exact=False``). Call overheads (once per device that runs a
node) are not cut edges: see :func:`min_cut_latency`.
"""

from __future__ import annotations

import networkx as nx

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch

#: Weights of the first device's compute tried by the heavy-load sweep.
HEAVY_LOAD_WEIGHTS = tuple(i / 20 for i in range(1, 20))


def dads(problem: Problem, objective: str) -> Solution:
    ip = problem.indexed
    if ip.k != 2:
        raise PlanError(f"dads splits between 2 devices, got {ip.k}")
    with stopwatch() as elapsed:
        if objective == "latency":
            devices = min_cut_latency(ip)
            candidates = 1
        else:
            best_value, devices = float("inf"), None
            for w in HEAVY_LOAD_WEIGHTS:
                cut = _min_cut(ip, weight=w, pipeline=True)
                value = objective_value(evaluate_indexed(ip, cut), objective)
                if value < best_value:
                    best_value, devices = value, cut
            candidates = len(HEAVY_LOAD_WEIGHTS)
        value = objective_value(evaluate_indexed(ip, devices), objective)
    return Solution("dads", objective, tuple(devices), value, elapsed(),
                    exact=objective == "latency", states=candidates)


def min_cut_latency(ip) -> list[int]:
    """Device (0 or 1) per node of an optimal 2-device latency plan of an indexed problem.

    The cut leaves out the call overheads; every plan that uses both devices pays both, so
    the cut is optimal among those, and the two plans that use one device are tried beside it.
    """
    cut = _min_cut(ip, weight=0.5, pipeline=False)
    if not any(ip.overhead):
        return cut
    one_device = [[0] * ip.n, [0 if ip.is_input[u] else 1 for u in range(ip.n)]]
    return min([cut] + one_device,
               key=lambda plan: objective_value(evaluate_indexed(ip, plan), "latency"))


#: Capacities are integers in units of 1/SCALE ms: networkx's max-flow is unreliable on floats.
SCALE = 1_000_000


def _cap(ms: float) -> int:
    return int(round(ms * SCALE))


def _min_cut(ip, weight: float, pipeline: bool) -> list[int]:
    """Device per node of a minimum cut; compute weighted 2*weight on d1, 2*(1-weight) on d2."""
    g = nx.DiGraph()
    s, t = "s", "t"
    w1, w2 = 2 * weight, 2 * (1 - weight)
    for u in range(ip.n):
        if ip.is_input[u]:
            g.add_edge(s, u)  # no capacity attribute: infinite
        else:
            g.add_edge(s, u, capacity=_cap(w2 * ip.compute[u][1]))
            g.add_edge(u, t, capacity=_cap(w1 * ip.compute[u][0]))
        if ip.succs[u]:
            fwd, back = ("fwd", u), ("back", u)
            g.add_edge(u, fwd, capacity=_cap(ip.transfer[u][0][1]))
            g.add_edge(back, u, capacity=_cap(ip.transfer[u][1][0]))
            for v in ip.succs[u]:
                g.add_edge(fwd, v)
                g.add_edge(v, back)
                if pipeline:
                    g.add_edge(v, u)  # u on d2 forces its consumers onto d2
        if ip.is_output[u]:
            g.add_edge(("back", u), u, capacity=_cap(ip.transfer[u][1][0]))
            g.add_edge(s, ("back", u))
    _, (side_s, _) = nx.minimum_cut(g, s, t)
    return [0 if u in side_s else 1 for u in range(ip.n)]
