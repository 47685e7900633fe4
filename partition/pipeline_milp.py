"""Throughput as a mixed-integer program over cumulative stage variables (SciPy's HiGHS), for
wide graphs and many devices; warm-bounded by a heuristic plan.

Variables: ``s[v,d]`` (binary, d < k - 1): node v runs on device d or an earlier one, so
``s[v,d] <= s[v,d+1]`` and v is on device d exactly when ``x[v,d] = s[v,d] - s[v,d-1] = 1``
(``s[v,-1] = 0``, ``s[v,k-1] = 1``); inputs are on device 0. A pipeline's edges go forward:
for an edge u -> v, ``s[v,d] <= s[u,d]``. ``P`` is the period:

- device d: ``sum_v compute[v][d] x[v,d] + overhead[d] w[d] <= P`` with ``w[d] >= x[v,d]``;
- link a -> b (a < b): ``sum_u transfer[u][a][b] z[u,a,b] <= P`` where
  ``z[u,a,b] >= x[u,a] + m[u,b] - 1`` and ``m[u,b] >= x[v,b]`` for each consumer v (u's
  tensor is needed on b; for one consumer, m is that consumer's x); the return link b -> 0
  carries each output on b: ``sum_u transfer[u][b][0] x[u,b] <= P``.

Reductions that keep it exact: ``P <= incumbent`` cuts off everything worse than the plan
already in hand, and with it each node's devices shrink to a window (:func:`stage_windows`:
its ancestors must fit on the devices up to its own, its descendants on those from it on;
on the generated instances 3-4 devices of 8 remain per node, which took a 500-node random DAG
on 8 devices from a 7% gap after 10 s to 0.01%); a link whose every transfer together stays
below a proven lower bound on the period can never be the bottleneck and is left out (with
free links the program has no z at all); when devices d and d+1 (d >= 1) are identical, in
compute, overhead and links, d+1 runs nothing unless d runs something (``u[d]`` binary),
which removes the copies of a plan that leave a different one of them empty. HiGHS's dual
bound is a proven lower bound on the optimum; the answer is exact only when HiGHS proves it.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp as scipy_milp
from scipy.sparse import coo_matrix

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import IndexedProblem, PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch

#: Relative gap at which HiGHS stops by default: exact up to rounding.
EXACT_GAP = 1e-6
#: Share of the time left after building the program kept back from HiGHS (it overruns its
#: limit a little, and its answer is read and recomputed afterwards).
LIMIT_MARGIN = 0.05


def period_lower_bound(ip: IndexedProblem) -> float:
    """No period is below one node's time on its cheapest device, nor below the best spread
    of all the work over the devices, each node split between them at will (an LP; with
    speeds in proportion, the work on one device over the sum of their speeds)."""
    free = [v for v in range(ip.n) if not ip.is_input[v]]
    if not free:
        return 0.0
    node = max(min(ip.compute[v]) for v in free)
    k = ip.k
    if k == 1:
        return sum(ip.compute[v][0] for v in free)
    # variables y[v,d] (share of v on d) and P: minimise P, sum_d y = 1, sum_v c y <= P
    m = len(free)
    cost = np.zeros(m * k + 1)
    cost[-1] = 1.0
    rows = np.repeat(np.arange(m), k)
    equality = coo_matrix((np.ones(m * k), (rows, np.arange(m * k))), shape=(m, m * k + 1))
    compute = np.array([ip.compute[v] for v in free], dtype=float)  # m x k
    cols = np.arange(m * k).reshape(m, k)
    load_rows = np.concatenate([np.full(m, d) for d in range(k)] + [np.arange(k)])
    load_cols = np.concatenate([cols[:, d] for d in range(k)] + [np.full(k, m * k)])
    load_vals = np.concatenate([compute[:, d] for d in range(k)] + [-np.ones(k)])
    loads = coo_matrix((load_vals, (load_rows, load_cols)), shape=(k, m * k + 1))
    result = linprog(cost, A_ub=loads, b_ub=np.zeros(k), A_eq=equality, b_eq=np.ones(m),
                     bounds=(0, None), method="highs")
    spread = float(result.fun) * (1 - 1e-9) if result.status == 0 else sum(
        min(row) for row in compute) / k
    return max(node, spread)


def stage_windows(ip: IndexedProblem, period: float) -> tuple[list[int], list[int]]:
    """The first and last device each node can run on in a pipeline of period <= ``period``.

    Node v on device e puts it and all its ancestors on devices 0..e, which then carry at
    least their times on the cheapest of those devices, at most (e + 1) x period; likewise
    v and its descendants on devices e..k-1 (call overheads only add to both)."""
    n, k = ip.n, ip.k
    first, last = [0] * n, [k - 1] * n
    if k == 1 or n == 0 or not np.isfinite(period):
        return first, last
    from dnnsplit.partition.dp import descendant_matrix

    below = descendant_matrix(ip).astype(np.float32)  # below[v, w]: w is v or a descendant
    compute = np.asarray(ip.compute, dtype=float)
    compute[[v for v in range(n) if ip.is_input[v]]] = 0.0
    for e in range(k):
        ancestors = below.T @ compute[:, :e + 1].min(axis=1)  # ancestors of v and v
        descendants = below @ compute[:, e:].min(axis=1)
        tolerance = 1e-9 * period
        for v in range(n):
            if ancestors[v] > (e + 1) * period + tolerance and first[v] == e:
                first[v] = e + 1  # v cannot be on e (nor earlier)
            if descendants[v] > (k - e) * period + tolerance:
                last[v] = min(last[v], e - 1) if e > 0 else last[v]
    for v in range(n):
        if ip.is_input[v]:
            first[v] = last[v] = 0
        first[v] = min(first[v], k - 1)
        last[v] = max(last[v], first[v])
    return first, last


def pipeline_milp(problem: Problem, objective: str = "throughput",
                  time_limit_s: float | None = None, incumbent: tuple[int, ...] | None = None,
                  gap: float = EXACT_GAP, lower_bound: float = 0.0) -> Solution:
    """Minimum period over pipeline assignments (see the module docstring).

    ``incumbent``: a pipeline assignment to beat (returned if HiGHS finds nothing better;
    by default the plan of :func:`dnnsplit.partition.balanced.balanced` with a tenth of the
    time limit, at most 1 s);
    ``lower_bound``: a period proven unreachable below, at least :func:`period_lower_bound`
    (it prunes links; computed here when 0); ``gap``:
    HiGHS stops when its answer is proven within this relative gap.
    """
    if objective != "throughput":
        raise PlanError("pipeline_milp plans pipelines: use it with --objective throughput")
    ip = problem.indexed
    with stopwatch() as elapsed:
        if incumbent is None:
            from dnnsplit.partition.balanced import balanced

            moves = 1.0 if time_limit_s is None else min(1.0, 0.1 * time_limit_s)
            incumbent = balanced(problem, time_limit_s=moves).assignment
        program = _Program(ip, incumbent, lower_bound or period_lower_bound(ip))
        # HiGHS gets what building left of the limit, less a margin for reading its answer
        left = None if time_limit_s is None else max(
            0.0, (time_limit_s - elapsed() / 1000) * (1 - LIMIT_MARGIN))
        result = program.solve(left, gap)
        devices, value = program.best(result)
        bound = getattr(result, "mip_dual_bound", None)
        proven = float(bound) if result.status in (0, 1) and bound is not None else 0.0
        if not np.isfinite(proven):
            proven = 0.0
        if result.status == 0:  # optimal within the gap (a program presolve solves may
            proven = max(proven, float(result.fun) * (1 - gap))  # report no dual bound)
        lower = min(value, max(program.lower, float(proven)))
        exact = value - lower <= (EXACT_GAP + 1e-9) * value
        if exact:
            lower = value
    gap_now = (value - lower) / value if value > 0 else 0.0
    reason = {0: "stopped at the gap asked", 1: "time limit reached"}.get(
        result.status, f"HiGHS: {result.message}")
    note = ("proven optimal" if exact else
            f"{reason}: the optimum is at least {lower:.4g} ms, a gap of at most {gap_now:.2%}")
    return Solution("pipeline-milp", "throughput", tuple(devices), value, elapsed(),
                    exact=exact, states=int(getattr(result, "mip_node_count", 0) or 0),
                    note=note, lower_bound=lower)


class _Program:
    """The matrices of the program, built once."""

    def __init__(self, ip: IndexedProblem, incumbent, lower: float):
        self.ip, self.lower = ip, lower
        n, k = ip.n, ip.k
        self.incumbent = list(incumbent) if incumbent is not None else [0] * n
        self.upper = objective_value(evaluate_indexed(ip, self.incumbent), "throughput")
        if not np.isfinite(self.upper):
            raise PlanError("the incumbent is not a pipeline (an edge goes backwards)")
        self.cols = 0
        self.rows: list[int] = []
        self.cols_of: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[int] = []
        self.free = [v for v in range(n) if not ip.is_input[v]]
        self.first, self.last = stage_windows(ip, self.upper * (1 + 1e-9))
        # s[v][d]: a column where v's window leaves it open (first <= d < last), else None:
        # 0 before the window, 1 from its last device on; inputs are always on device 0
        self.s = {v: [self._var(integer=True) if self.first[v] <= d < self.last[v] else None
                      for d in range(k - 1)] for v in self.free}
        self.P = self._var()
        for v in self.free:
            for d in range(self.first[v], self.last[v] - 1):
                self._row([(self.s[v][d], 1.0), (self.s[v][d + 1], -1.0)], -np.inf, 0.0)
            for u in ip.preds[v]:
                for d in range(k - 1):  # s[v,d] <= s[u,d]
                    tv, cv = self.s_terms(v, d)
                    tu, cu = self.s_terms(u, d)
                    if tv or tu:
                        self._row(tv + [(col, -val) for col, val in tu], -np.inf, cu - cv)
        self._devices()
        self._links()
        self._symmetry()
        self._row([(self.P, 1.0)], -np.inf, self.upper * (1 + 1e-9))

    # building blocks
    def _var(self, integer: bool = False) -> int:
        self.cols += 1
        self.integer.append(1 if integer else 0)
        return self.cols - 1

    def _row(self, entries, lower: float, upper: float) -> None:
        row = len(self.lo)
        for col, val in entries:
            self.rows.append(row)
            self.cols_of.append(col)
            self.vals.append(val)
        self.lo.append(lower)
        self.hi.append(upper)

    def s_terms(self, v: int, d: int) -> tuple[list[tuple[int, float]], float]:
        """s[v,d] (v on device d or earlier) as (terms, constant)."""
        if d < 0:
            return [], 0.0
        if d >= self.ip.k - 1 or v not in self.s:
            return [], 1.0
        col = self.s[v][d]
        if col is None:
            return [], 0.0 if d < self.first[v] else 1.0
        return [(col, 1.0)], 0.0

    def x(self, v: int, d: int) -> tuple[list[tuple[int, float]], float]:
        """x[v,d] = s[v,d] - s[v,d-1] (v on device d) as (terms, constant)."""
        now, c_now = self.s_terms(v, d)
        before, c_before = self.s_terms(v, d - 1)
        return now + [(col, -val) for col, val in before], c_now - c_before

    def window(self, v: int) -> range:
        return range(self.first[v], self.last[v] + 1)

    def _devices(self) -> None:
        ip = self.ip
        for d in range(ip.k):
            entries, constant = [], 0.0
            for v in self.free:
                terms, c = self.x(v, d)
                entries += [(col, val * ip.compute[v][d]) for col, val in terms]
                constant += c * ip.compute[v][d]
            if ip.overhead[d] > 0:
                w = self._var()
                entries.append((w, ip.overhead[d]))
                for v in self.free:
                    terms, c = self.x(v, d)
                    self._row([(w, 1.0)] + [(col, -val) for col, val in terms], c, np.inf)
            self._row(_merge(entries + [(self.P, -1.0)]), -np.inf, -constant)

    def _links(self) -> None:
        """Only tensors that can cross a link count on it: u's window holds a and one of its
        consumers' holds b; a link that cannot reach the proven lower bound is left out."""
        ip, k = self.ip, self.ip.k
        outputs = [u for u in range(ip.n) if ip.is_output[u]]
        for b in range(1, k):  # returns of outputs on b to device 0
            returning = [u for u in outputs if b in self.window(u)]
            if sum(ip.transfer[u][b][0] for u in returning) <= self.lower:
                continue
            entries, constant = [], 0.0
            for u in returning:
                terms, c = self.x(u, b)
                entries += [(col, val * ip.transfer[u][b][0]) for col, val in terms]
                constant += c * ip.transfer[u][b][0]
            self._row(_merge(entries + [(self.P, -1.0)]), -np.inf, -constant)
        needed: dict[tuple[int, int], tuple] = {}
        for a in range(k - 1):
            for b in range(a + 1, k):
                crossing = [u for u in range(ip.n) if a in self.window(u)
                            and ip.transfer[u][a][b] > 0
                            and any(b in self.window(v) for v in ip.succs[u])]
                if sum(ip.transfer[u][a][b] for u in crossing) <= self.lower:
                    continue  # never the bottleneck
                entries = []
                for u in crossing:
                    z = self._var()
                    xu, cu = self.x(u, a)
                    if (u, b) not in needed:
                        needed[(u, b)] = self._needed(u, b)
                    mb, cb = needed[(u, b)]
                    # z >= x[u,a] + m[u,b] - 1
                    self._row([(z, 1.0)] + [(c, -v) for c, v in xu + mb], cu + cb - 1, np.inf)
                    entries.append((z, ip.transfer[u][a][b]))
                self._row(entries + [(self.P, -1.0)], -np.inf, 0.0)

    def _needed(self, u: int, b: int) -> tuple[list[tuple[int, float]], float]:
        """m[u,b]: u's tensor is needed on device b (terms, constant)."""
        consumers = [v for v in self.ip.succs[u] if b in self.window(v)]
        if len(consumers) == 1:
            return self.x(consumers[0], b)
        m = self._var()
        for v in consumers:
            terms, c = self.x(v, b)
            self._row([(m, 1.0)] + [(col, -val) for col, val in terms], c, np.inf)
        return [(m, 1.0)], 0.0

    def _symmetry(self) -> None:
        ip, k = self.ip, self.ip.k
        for d in range(1, k - 1):
            if not _identical(ip, d, d + 1):
                continue
            used = self._var(integer=True)
            entries = [(used, 1.0)]
            constant = 0.0
            for v in self.free:  # used[d] <= sum_v x[v,d]
                terms, c = self.x(v, d)
                entries += [(col, -val) for col, val in terms]
                constant += c
            self._row(_merge(entries), -np.inf, constant)
            for v in self.free:  # x[v,d+1] <= used[d]
                terms, c = self.x(v, d + 1)
                self._row(terms + [(used, -1.0)], -np.inf, -c)

    def solve(self, time_limit_s: float | None, gap: float):
        cost = np.zeros(self.cols)
        cost[self.P] = 1.0
        matrix = coo_matrix((self.vals, (self.rows, self.cols_of)),
                            shape=(len(self.lo), self.cols)).tocsr()
        upper = np.ones(self.cols)
        upper[self.P] = np.inf
        lower = np.zeros(self.cols)
        options = {"disp": False, "mip_rel_gap": gap}
        if time_limit_s is not None:
            options["time_limit"] = max(0.01, float(time_limit_s))
        started = time.perf_counter()
        result = scipy_milp(cost, constraints=LinearConstraint(matrix, self.lo, self.hi),
                            integrality=np.array(self.integer), bounds=Bounds(lower, upper),
                            options=options)
        if result.status == 4:  # HiGHS presolve "Solve error" (seen with SciPy 1.17.1): again
            if time_limit_s is not None:  # without it, in the time left
                options["time_limit"] = max(0.01, time_limit_s - (time.perf_counter() - started))
            result = scipy_milp(cost, constraints=LinearConstraint(matrix, self.lo, self.hi),
                                integrality=np.array(self.integer),
                                bounds=Bounds(lower, upper), options={**options,
                                                                      "presolve": False})
        return result

    def _value(self, solution, v: int, d: int) -> float:
        terms, constant = self.s_terms(v, d)
        return constant + sum(val * solution[col] for col, val in terms)

    def best(self, result) -> tuple[list[int], float]:
        """The program's assignment if it beats the incumbent (recomputed exactly)."""
        ip = self.ip
        best, best_value = self.incumbent, self.upper
        if result.x is not None:
            devices = [0] * ip.n
            for v in self.free:
                devices[v] = next(d for d in range(ip.k) if self._value(result.x, v, d) > 0.5)
            value = objective_value(evaluate_indexed(ip, devices), "throughput")
            if value < best_value:
                best, best_value = devices, value
        return best, best_value


def _merge(entries: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Sum coefficients of repeated columns."""
    merged: dict[int, float] = {}
    for col, val in entries:
        merged[col] = merged.get(col, 0.0) + val
    return list(merged.items())


def _identical(ip: IndexedProblem, d: int, e: int) -> bool:
    """Devices d and e are interchangeable: same compute, overhead and links to the others."""
    if ip.overhead[d] != ip.overhead[e]:
        return False
    if any(ip.compute[v][d] != ip.compute[v][e] for v in range(ip.n)):
        return False
    others = [c for c in range(ip.k) if c not in (d, e)]
    return all(ip.transfer[u][d][c] == ip.transfer[u][e][c]
               and ip.transfer[u][c][d] == ip.transfer[u][c][e]
               and ip.transfer[u][d][e] == ip.transfer[u][e][d]
               for u in range(ip.n) for c in others)
