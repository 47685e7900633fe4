"""Mixed-integer program (SciPy's HiGHS): a second exact method, and the answer for wide graphs.

Variables: ``x[v,d]`` (binary) node v on device d; ``y[u,b]`` (>= 0) u's tensor is needed on
b: ``y[u,b] >= x[v,b]`` for each consumer v, ``y[u,d1] = 1`` for outputs; ``z[u,a,b]`` (>= 0)
u's tensor is sent a -> b: ``z[u,a,b] >= x[u,a] + y[u,b] - 1``; ``w[d]`` (in [0, 1]) device d
runs a node and pays its call overhead o: ``w[d] >= x[v,d]`` for non-input v.
**latency**: minimise sum c x + sum t z + sum o w. **throughput**: minimise P with every
device's compute (with its overhead) and every link's transfers <= P, and for every edge
u -> v and every device d: ``sum_{d' <= d} x[v,d'] <= sum_{d' <= d} x[u,d']`` (v never
earlier than u).

With a time limit the answer may be unproven: the solution then says ``exact=False`` and its
note gives HiGHS's relative gap between the answer and the best lower bound.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp as scipy_milp
from scipy.sparse import coo_matrix

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch


def milp(problem: Problem, objective: str, time_limit_s: float | None = None) -> Solution:
    ip = problem.indexed
    n, k = ip.n, ip.k
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    nx_, ny = n * k, n * k
    nz = n * len(pairs)
    throughput = objective == "throughput"
    if objective not in ("latency", "throughput"):
        raise PlanError(f"unknown objective {objective!r}: use latency or throughput")
    nvar = nx_ + ny + nz + k + (1 if throughput else 0)

    def X(v, d):
        return v * k + d

    def Y(u, b):
        return nx_ + u * k + b

    def Z(u, p):
        return nx_ + ny + u * len(pairs) + p

    def W(d):
        return nx_ + ny + nz + d

    P = nvar - 1
    rows, cols, vals, lo, hi = [], [], [], [], []
    row = 0

    def add(entries, lower, upper):
        nonlocal row
        for col, val in entries:
            rows.append(row)
            cols.append(col)
            vals.append(val)
        lo.append(lower)
        hi.append(upper)
        row += 1

    for v in range(n):
        add([(X(v, d), 1.0) for d in range(k)], 1, 1)
        if ip.is_input[v]:
            add([(X(v, 0), 1.0)], 1, 1)
        for w in ip.succs[v]:
            for b in range(k):
                add([(Y(v, b), 1.0), (X(w, b), -1.0)], 0, np.inf)
        if ip.is_output[v]:
            add([(Y(v, 0), 1.0)], 1, np.inf)
        for p, (a, b) in enumerate(pairs):
            add([(Z(v, p), 1.0), (X(v, a), -1.0), (Y(v, b), -1.0)], -1, np.inf)
        for d in range(k):
            if ip.overhead[d] > 0 and not ip.is_input[v]:
                add([(W(d), 1.0), (X(v, d), -1.0)], 0, np.inf)
    cost = np.zeros(nvar)
    if throughput:
        cost[P] = 1.0
        for d in range(k):
            add([(X(v, d), ip.compute[v][d]) for v in range(n)]
                + [(W(d), ip.overhead[d]), (P, -1.0)], -np.inf, 0)
        for p, (a, b) in enumerate(pairs):
            add([(Z(u, p), ip.transfer[u][a][b]) for u in range(n)] + [(P, -1.0)], -np.inf, 0)
        for u in range(n):
            for v in ip.succs[u]:
                for d in range(k - 1):
                    add([(X(v, e), 1.0) for e in range(d + 1)]
                        + [(X(u, e), -1.0) for e in range(d + 1)], -np.inf, 0)
    else:
        for d in range(k):
            cost[W(d)] = ip.overhead[d]
        for v in range(n):
            for d in range(k):
                cost[X(v, d)] = ip.compute[v][d]
            for p, (a, b) in enumerate(pairs):
                cost[Z(v, p)] = ip.transfer[v][a][b]
    matrix = coo_matrix((vals, (rows, cols)), shape=(row, nvar)).tocsr()
    integrality = np.zeros(nvar)
    integrality[:nx_] = 1
    upper = np.full(nvar, np.inf)
    upper[:nx_ + ny + nz + k] = 1.0
    options = {"disp": False, "mip_rel_gap": 1e-9}  # HiGHS's default 1e-4 is not exact
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)
    with stopwatch() as elapsed:
        result = scipy_milp(cost, constraints=LinearConstraint(matrix, lo, hi),
                            integrality=integrality, bounds=Bounds(np.zeros(nvar), upper),
                            options=options)
        if result.x is None:
            raise PlanError(f"milp found no solution: {result.message}")
        x = result.x[:nx_].reshape(n, k)
        devices = [int(np.argmax(x[v])) for v in range(n)]
        value = objective_value(evaluate_indexed(ip, devices), objective)
    gap = float(getattr(result, "mip_gap", 0.0) or 0.0)
    exact = result.status == 0
    note = "" if exact else f"time limit reached: relative gap {gap:.2%} to the lower bound"
    bound = getattr(result, "mip_dual_bound", None)
    return Solution("milp", objective, tuple(devices), value, elapsed(), exact=exact,
                    states=int(getattr(result, "mip_node_count", 0) or 0), note=note,
                    lower_bound=value if exact else (None if bound is None else float(bound)))
