"""Exact dynamic programming over downsets (ideals) of the DAG, any number of devices.

**Latency** (any assignment): the nodes are added one at a time in a topological order chosen
to keep the *frontier* small (nodes already placed whose tensor a later node still needs);
every prefix of that order is a downset. The state is, for each frontier node, the device it
runs on and the set of devices its tensor has already been sent to; a later consumer on a
device not in that set pays the transfer once and adds the device. States with the same
frontier placement and fewer sends at no lower cost are dominated and dropped. The optimum
over all states at the end is exact.

**Throughput** (pipeline: edges only go to the same or a later device): a stage assignment is a
chain of downsets ``I_1 <= I_2 <= ... <= I_k``, device i holding ``I_i - I_{i-1}``. The chains
are searched stage by stage by depth-first branch and bound: the downsets containing the
current one are enumerated by including or excluding the smallest available node (each
downset once, never materialising pairs of downsets); a device's compute and the transfers
into it only grow as its stage grows, so a branch stops as soon as one of them reaches the
best period found so far. The search is exhaustive up to that bound, hence exact. It runs in
passes under a rising target period, starting at a lower bound (the work on the cheapest
devices shared by all of them): a pass that finds no period below its target proves the
optimum is at least the target, so the first pass that finds one ends with the optimum. Low
targets prune almost everything, so the passes cost far less than one search that starts from
a poor incumbent (DenseNet201 on 3 devices: about 1,000 search nodes instead of 438,000).
``states`` counts DP states (latency) or search nodes (throughput).
"""

from __future__ import annotations

import sys
import time

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.dads import min_cut_latency
from dnnsplit.partition.problem import IndexedProblem, PlanError, Problem
from dnnsplit.partition.solution import Solution, bound_note, stopwatch
from dnnsplit.partition.wide_latency import proven_by_relaxation, relaxation_bound, wide_latency

#: The latency DP gives up beyond this many live states at one step (see ``max_states``).
MAX_STATES = 2_000_000
#: The throughput search gives up beyond this many search nodes.
MAX_SEARCH_NODES = 50_000_000
#: Throughput: seconds of exact search before a graph counts as too wide for it (every
#: keras.applications model but the NASNets is solved in well under this); the rest of the
#: time limit then goes to :func:`dnnsplit.partition.balanced.balanced` and
#: :func:`dnnsplit.partition.pipeline_milp.pipeline_milp` (see :func:`_wide_throughput`).
THROUGHPUT_EXACT_S = 0.5
#: Wide throughput: the share of the remaining time given to the heuristic's local moves
#: (at most HEURISTIC_MAX_S), and the relative gap at which the MILP stops.
HEURISTIC_SHARE = 0.15
HEURISTIC_MAX_S = 1.0
WIDE_GAP = 1e-4
#: The throughput search's target period rises by this factor per pass (see ``run``).
TARGET_GROWTH = 1.2


#: Latency states before pruning, (k * 2^(k-1)) ** frontier, above which dp does not try.
MAX_STATE_ESTIMATE = 10_000_000
#: Latency, k > 2, above that estimate: seconds of exact DP before the graph counts as too
#: wide and :func:`dnnsplit.partition.wide_latency.wide_latency` answers.
LATENCY_WIDE_TRY_S = 0.25
#: The device field of the latency DP's used-devices state entry (no real device is < 0).
USED = -1
#: Default time limits (seconds) of the exact search and of the MILP that answers instead.
EXACT_TIME_LIMIT_S = 10.0
FALLBACK_TIME_LIMIT_S = 20.0


class _TooWide(PlanError):
    """The exact search gave up (state budget or time limit)."""


def dp(problem: Problem, objective: str, max_states: int = MAX_STATES,
       time_limit_s: float | None = EXACT_TIME_LIMIT_S,
       fallback_time_s: float | None = FALLBACK_TIME_LIMIT_S) -> Solution:
    """Exact optimum of ``objective`` ('latency' or 'throughput') for any number of devices.

    When the graph is too wide for the exact search, the solution says so (``exact`` False or
    a ``note``): for **throughput** (no proof within :data:`THROUGHPUT_EXACT_S`) the
    balanced heuristic's plan, improved by the pipeline MILP within the rest of
    ``time_limit_s`` (the whole call's budget), with the proven lower bound and gap (exact
    only when proven); for **latency** with k > 2 and a frontier too wide for the k-device
    DP it is the best plan over the first device and one other (exact 2-device DPs); for
    latency on 2 devices the minimum s-t cut (exact, milliseconds); otherwise (more than
    ``max_states`` live states, or longer than ``time_limit_s``) it comes from
    :func:`dnnsplit.partition.milp.milp` with ``fallback_time_s``, ``exact`` being HiGHS's
    proof status. With ``fallback_time_s=None`` dp raises :class:`PlanError` instead.
    """
    ip = problem.indexed
    if objective not in ("latency", "throughput"):
        raise PlanError(f"unknown objective {objective!r}: use latency or throughput")
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    with stopwatch() as elapsed:
        try:
            if objective == "latency":
                order = low_frontier_order(ip)
                width = max_frontier(ip, order)
                estimate = (ip.k * 2 ** (ip.k - 1)) ** width
                wide = estimate > MAX_STATE_ESTIMATE
                if wide and (ip.k <= 2 or fallback_time_s is None):
                    raise _TooWide(f"frontier of {width} tensors on {ip.k} devices: up to "
                                   f"{estimate:.1e} states")
                reason = f"frontier of {width} tensors on {ip.k} devices"
                relaxation = None
                if wide:  # one min cut proves many wide problems (a dominant device)
                    relaxation = relaxation_bound(ip)
                    proven = proven_by_relaxation(ip, f"{reason}: up to {estimate:.1e} states",
                                                  elapsed, relaxation)
                    if proven is not None:
                        return proven
                # a wide graph gets a short try (pruning often keeps the states few), and so
                # does any 2-device problem when a fallback is allowed: the min cut is exact
                short = wide or (ip.k == 2 and fallback_time_s is not None)
                try:
                    devices, states = _latency(ip, order, max_states, _sooner(
                        deadline, LATENCY_WIDE_TRY_S if short else None))
                except _TooWide as exc:
                    if not wide:
                        raise
                    return wide_latency(problem, f"{reason}: {exc}", elapsed, relaxation)
            else:
                search = _PipelineSearch(ip, _sooner(deadline, THROUGHPUT_EXACT_S))
                try:
                    devices, states = search.run()
                except _TooWide:
                    if fallback_time_s is None:
                        raise
                    return _wide_throughput(problem, search, deadline, elapsed)
        except _TooWide as exc:
            if fallback_time_s is None:
                raise PlanError(f"exact dp gave up: {exc}") from None
            if objective == "latency" and ip.k == 2:  # one min cut is exact for two devices
                devices = min_cut_latency(ip)
                return Solution("dp", objective, tuple(devices),
                                objective_value(evaluate_indexed(ip, devices), objective),
                                elapsed(), exact=True, states=1,
                                note=f"exact dp gave up ({exc}); answered by the minimum s-t "
                                     "cut, exact for two devices")
            from dnnsplit.partition.milp import milp

            answer = milp(problem, objective, time_limit_s=fallback_time_s)
            return Solution("dp", objective, answer.assignment, answer.value, elapsed(),
                            exact=answer.exact, states=answer.states,
                            note=f"exact dp gave up ({exc}); answered by MILP (HiGHS, "
                                 f"{fallback_time_s:g} s limit)"
                                 + (f": {answer.note}" if answer.note else ", proven optimal"))
        value = objective_value(evaluate_indexed(ip, devices), objective)
    return Solution("dp", objective, tuple(devices), value, elapsed(), exact=True, states=states)


def _wide_throughput(problem: Problem, search: "_PipelineSearch", deadline: float | None,
                     elapsed) -> Solution:
    """Throughput on a graph too wide for the exact search: the balanced heuristic's plan,
    then the pipeline MILP bounded by it, until ``deadline``; exact only when proven."""
    from dnnsplit.partition.balanced import balanced
    from dnnsplit.partition.pipeline_milp import period_lower_bound, pipeline_milp

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.perf_counter())

    remaining = left()
    moves = HEURISTIC_MAX_S if remaining is None else min(HEURISTIC_MAX_S,
                                                          HEURISTIC_SHARE * remaining)
    heuristic = balanced(problem, "throughput", time_limit_s=moves)
    lower = max(search.proven_lower, period_lower_bound(problem.indexed))
    reason = f"graph too wide for exact dp (no proof within {THROUGHPUT_EXACT_S:g} s)"
    if heuristic.value > lower * (1 + WIDE_GAP):
        answer = pipeline_milp(problem, time_limit_s=left(), incumbent=heuristic.assignment,
                               gap=WIDE_GAP, lower_bound=lower)
        source = ("the balanced heuristic's plan" if answer.value >= heuristic.value
                  else "the pipeline MILP's plan")
        return Solution("dp", "throughput", answer.assignment, answer.value, elapsed(),
                        exact=answer.exact, states=search.nodes + answer.states,
                        lower_bound=answer.lower_bound,
                        note=f"{reason}: {source} (heuristic, then MILP), {answer.note}")
    return Solution("dp", "throughput", heuristic.assignment, heuristic.value, elapsed(),
                    exact=heuristic.value <= lower * (1 + 1e-9), states=search.nodes,
                    lower_bound=min(lower, heuristic.value),
                    note=f"{reason}: the balanced heuristic's plan, "
                         + bound_note(heuristic.value, min(lower, heuristic.value)))


# --- latency ----------------------------------------------------------------------------------


def low_frontier_order(ip: IndexedProblem) -> list[int]:
    """A topological order that greedily keeps few placed nodes with unplaced consumers.

    Among the available nodes it takes the one that closes the most frontier nodes (it is
    their last unplaced consumer) and opens the fewest (has consumers itself); ties go to the
    smaller index, so a chain keeps its order.
    """
    missing = [len(p) for p in ip.preds]
    unplaced_succs = [len(s) for s in ip.succs]
    available = sorted(u for u in range(ip.n) if missing[u] == 0)
    order = []
    while available:
        def score(v):
            closes = sum(1 for u in ip.preds[v] if unplaced_succs[u] == 1)
            return (-(closes - (1 if ip.succs[v] else 0)), v)

        v = min(available, key=score)
        available.remove(v)
        order.append(v)
        for u in ip.preds[v]:
            unplaced_succs[u] -= 1
        for w in ip.succs[v]:
            missing[w] -= 1
            if missing[w] == 0:
                available.append(w)
    return order


def max_frontier(ip: IndexedProblem, order: list[int]) -> int:
    """Largest number of placed nodes whose tensor is still needed, along ``order``."""
    remaining = [len(s) for s in ip.succs]
    live = widest = 0
    for v in order:
        for u in ip.preds[v]:
            remaining[u] -= 1
            if remaining[u] == 0:
                live -= 1
        if ip.succs[v]:
            live += 1
        widest = max(widest, live)
    return widest


def _sooner(deadline: float | None, seconds: float | None) -> float | None:
    """The earlier of ``deadline`` and ``seconds`` from now (None: no limit)."""
    if seconds is None:
        return deadline
    soon = time.perf_counter() + seconds
    return soon if deadline is None else min(deadline, soon)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise _TooWide("time limit reached before the optimum was proven")


def _latency(ip: IndexedProblem, order: list[int], max_states: int,
             deadline: float | None = None) -> tuple[list[int], int]:
    k = ip.k
    remaining = [len(s) for s in ip.succs]  # consumers not yet placed
    frontier: list[int] = []  # nodes whose tensor is still needed, aligned with state tuples
    # state: tuple of (device, sent-mask) per frontier node -> cost; back[i][state] = (prev, d).
    # With call overheads, a last entry (USED, mask) holds the devices already running a node
    # (their overhead paid); see _dominates for how it is compared.
    track_used = any(ip.overhead)
    states: dict[tuple, float] = {((USED, 0),) if track_used else (): 0.0}
    back: list[dict[tuple, tuple[tuple, int]]] = []
    explored = 0
    for v in order:
        slots = [frontier.index(u) for u in ip.preds[v]]
        for u in ip.preds[v]:
            remaining[u] -= 1
        closing = {i for i, u in enumerate(frontier) if remaining[u] == 0}
        keep = [i for i in range(len(frontier)) if i not in closing]
        opens = bool(ip.succs[v])
        choices = [0] if ip.is_input[v] else range(k)
        new_states: dict[tuple, float] = {}
        new_back: dict[tuple, tuple[tuple, int]] = {}
        compute_v = ip.compute[v]
        transfer = ip.transfer
        for state, cost in states.items():
            for d in choices:
                total = cost + compute_v[d]
                entries = list(state)
                for slot in slots:
                    u = frontier[slot]
                    du, sent = entries[slot]
                    if du != d and not sent >> d & 1:
                        total += transfer[u][du][d]
                        entries[slot] = (du, sent | 1 << d)
                sent_v = 0
                if ip.is_output[v] and d != 0:
                    total += transfer[v][d][0]
                    sent_v = 1
                key = tuple(entries[i] for i in keep)
                if opens:
                    key += ((d, sent_v),)
                if track_used:
                    used = entries[-1][1]  # the used-devices entry stays last
                    if not ip.is_input[v] and not used >> d & 1:
                        total += ip.overhead[d]
                        used |= 1 << d
                    key += ((USED, used),)
                explored += 1
                if total < new_states.get(key, float("inf")):
                    new_states[key] = total
                    new_back[key] = (state, d)
        _check_deadline(deadline)
        states = _drop_dominated(new_states, ip.overhead if track_used else None)
        if len(states) > max_states:
            raise _TooWide(f"more than {max_states} live states")
        back.append(new_back)
        frontier = [frontier[i] for i in keep] + ([v] if opens else [])
    assert not frontier or all(remaining[u] == 0 for u in frontier)
    final = min(states, key=states.get)
    devices = [0] * ip.n
    for v, step in zip(reversed(order), reversed(back)):
        final, devices[v] = step[final]
    return devices, explored


def _drop_dominated(states: dict[tuple, float],
                    overhead: tuple[float, ...] | None = None) -> dict[tuple, float]:
    """Drop a state when one with the same placements, superset sends and lower cost exists.

    With ``overhead`` the last entry is the used-devices one: a state also dominates one that
    used more devices when its cost plus their overheads is still no higher (it can at worst
    pay them later).
    """
    if len(states) < 2:
        return states
    groups: dict[tuple, list[tuple[tuple, float]]] = {}
    for key, cost in states.items():
        groups.setdefault(tuple(d for d, _ in key), []).append((key, cost))
    kept: dict[tuple, float] = {}
    for members in groups.values():
        if len(members) == 1:
            kept[members[0][0]] = members[0][1]
            continue
        members.sort(key=lambda kc: kc[1])
        survivors: list[tuple[tuple, float]] = []
        for key, cost in members:
            if not any(_dominates(other, other_cost, key, cost, overhead)
                       for other, other_cost in survivors):
                survivors.append((key, cost))
        kept.update(survivors)
    return kept


def _dominates(other: tuple, other_cost: float, key: tuple, cost: float,
               overhead: tuple[float, ...] | None) -> bool:
    """Whether state ``other`` (no costlier, same placements) makes state ``key`` useless."""
    if overhead is None:
        return all(s & m == m for (_, s), (_, m) in zip(other, key))
    if not all(s & m == m for (_, s), (_, m) in zip(other[:-1], key[:-1])):
        return False
    missing = key[-1][1] & ~other[-1][1]  # devices key has paid for and other has not
    extra = sum(o for d, o in enumerate(overhead) if missing >> d & 1)
    return other_cost + extra <= cost


# --- throughput -------------------------------------------------------------------------------


class _PipelineSearch:
    """Depth-first branch and bound over chains of downsets (see the module docstring)."""

    def __init__(self, ip: IndexedProblem, deadline: float | None = None):
        self.ip = ip
        self.deadline = deadline
        n, k = ip.n, ip.k
        self.dev = [-1] * n
        self.sent = [0] * n  # devices each tensor has been sent to
        self.missing = [len(p) for p in ip.preds]  # unassigned predecessors
        self.open_succs = [len(s) for s in ip.succs]  # unassigned successors
        self.device_load = [0.0] * k
        self.stage_size = [0] * k  # non-input nodes per device (its call overhead once > 0)
        self.unassigned_free = sum(1 for u in range(n) if not ip.is_input[u])
        self.link_load = [[0.0] * k for _ in range(k)]
        # for the last stage: compute and returns of everything still unassigned
        self.unassigned_compute_last = sum(ip.compute[u][k - 1] for u in range(n))
        self.unassigned_return_last = sum(
            ip.transfer[u][k - 1][0] for u in range(n) if ip.is_output[u])
        # transfers into the last stage from open assigned nodes, per source device
        self.open_into_last = [0.0] * k
        # descendant_work[i][v]: compute of v and all its descendants, each on its cheapest
        # device after i; divided by the devices left after i, a lower bound on the period
        # once v is excluded from device i (it and its descendants must go later)
        self.descendant_work = _descendant_work(ip)
        self.best_value = float("inf")
        self.best: list[int] | None = None
        self.nodes = 0
        self.proven_lower = 0.0  # the optimum is at least this (raised by each empty pass)

    def run(self) -> tuple[list[int], int]:
        """Search under a rising target period (see :data:`TARGET_GROWTH`); exact.

        Each pass looks only for a period below the target; a pass that finds none proves the
        optimum is at least the target. The first target is a lower bound, the last one the
        period of everything on the first device, so the passes stop with the optimum.
        """
        ip = self.ip
        for u in (u for u in range(ip.n) if ip.is_input[u]):
            self._assign(u, 0)
        available = sorted(
            u for u in range(ip.n) if self.dev[u] < 0 and self.missing[u] == 0)
        everything_first = [0] * ip.n
        upper = objective_value(evaluate_indexed(ip, everything_first), "throughput")
        self.proven_lower = self._lower_bound()
        target = min(upper, max(self.proven_lower, 1e-9))
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * ip.n + 1000))
        try:
            while True:
                self.best, self.best_value = None, target
                self._stage(0, self._root(available), max(self._current_max(), 0.0))
                if self.best is not None:
                    return list(self.best), self.nodes
                self.proven_lower = target  # no period below it exists
                if target >= upper:
                    return everything_first, self.nodes
                target = min(upper, target * TARGET_GROWTH)
        finally:
            sys.setrecursionlimit(limit)

    def _root(self, available: list[int]):
        """What the first stage starts from: the nodes available to it."""
        return available

    def _lower_bound(self) -> float:
        return work_lower_bound(self.ip)

    def _count_node(self) -> None:
        """One more search node; give up past the node budget or the deadline."""
        self.nodes += 1
        if self.nodes > MAX_SEARCH_NODES:
            raise _TooWide(f"more than {MAX_SEARCH_NODES} search nodes")
        if self.nodes & 4095 == 1:  # the first node, then every 4096
            _check_deadline(self.deadline)

    def _stage_max(self, i: int, current: float) -> float:
        """The period so far after device i grew: its compute, its return link, links into it."""
        return max(current, self.device_load[i], self.link_load[i][0],
                   *(self.link_load[a][i] for a in range(i)))

    def _current_max(self) -> float:
        return max(max(self.device_load), max(max(row) for row in self.link_load))

    def _assign(self, v: int, i: int) -> list:
        """Put v on device i; return an undo record."""
        ip = self.ip
        k = ip.k
        undo = []
        self.dev[v] = i
        self.device_load[i] += ip.compute[v][i]
        if not ip.is_input[v]:
            self.unassigned_free -= 1
            self.stage_size[i] += 1
            if self.stage_size[i] == 1:
                self.device_load[i] += ip.overhead[i]
        self.unassigned_compute_last -= ip.compute[v][k - 1]
        for u in ip.preds[v]:
            a = self.dev[u]
            if a != i and not self.sent[u] >> i & 1:
                self.link_load[a][i] += ip.transfer[u][a][i]
                self.sent[u] |= 1 << i
                undo.append(u)
            self.open_succs[u] -= 1
            if self.open_succs[u] == 0:
                self.open_into_last[a] -= ip.transfer[u][a][k - 1]
        if ip.succs[v]:
            self.open_into_last[i] += ip.transfer[v][i][k - 1]
        if ip.is_output[v]:
            self.unassigned_return_last -= ip.transfer[v][k - 1][0]
            if i != 0:
                self.link_load[i][0] += ip.transfer[v][i][0]
        for w in ip.succs[v]:
            self.missing[w] -= 1
        return undo

    def _unassign(self, v: int, undo: list) -> None:
        ip = self.ip
        k = ip.k
        i = self.dev[v]
        for w in ip.succs[v]:
            self.missing[w] += 1
        if ip.is_output[v]:
            self.unassigned_return_last += ip.transfer[v][k - 1][0]
            if i != 0:
                self.link_load[i][0] -= ip.transfer[v][i][0]
        if ip.succs[v]:
            self.open_into_last[i] -= ip.transfer[v][i][k - 1]
        for u in ip.preds[v]:
            a = self.dev[u]
            if self.open_succs[u] == 0:
                self.open_into_last[a] += ip.transfer[u][a][k - 1]
            self.open_succs[u] += 1
        for u in undo:
            a = self.dev[u]
            self.link_load[a][i] -= ip.transfer[u][a][i]
            self.sent[u] &= ~(1 << i)
        self.unassigned_compute_last += ip.compute[v][k - 1]
        self.device_load[i] -= ip.compute[v][i]
        if not ip.is_input[v]:
            self.unassigned_free += 1
            self.stage_size[i] -= 1
            if self.stage_size[i] == 0:
                self.device_load[i] -= ip.overhead[i]
        self.dev[v] = -1

    def _stage(self, i: int, available: list[int], current: float) -> None:
        """Enumerate the nodes device i takes, then go on to device i + 1."""
        ip = self.ip
        if i == ip.k - 1:
            self._last_stage(current)
            return
        self._grow(i, sorted(available), [], current, 0.0)

    def _grow(self, i: int, available: list[int], excluded: list[int], current: float,
              later_bound: float) -> None:
        self._count_node()
        if current >= self.best_value or later_bound >= self.best_value:
            return
        if not available:
            self._stage(i + 1, excluded, current)
            return
        v, rest = available[0], available[1:]
        # include v on device i
        undo = self._assign(v, i)
        new_current = self._stage_max(i, current)
        if new_current < self.best_value:
            enabled = [w for w in self.ip.succs[v] if self.missing[w] == 0]
            self._grow(i, sorted(rest + enabled), excluded, new_current, later_bound)
        self._unassign(v, undo)
        # exclude v from device i (it and its descendants go to later devices)
        bound = max(later_bound, self.descendant_work[i][v])
        self._grow(i, rest, excluded + [v], current, bound)

    def _last_stage(self, current: float) -> None:
        ip = self.ip
        k = ip.k
        last = k - 1
        opens_call = self.stage_size[last] == 0 and self.unassigned_free > 0
        value = max(
            current,
            self.device_load[last] + self.unassigned_compute_last
            + (ip.overhead[last] if opens_call else 0.0),
            self.link_load[last][0] + self.unassigned_return_last if last != 0 else 0.0,
            *(self.link_load[a][last] + self.open_into_last[a] for a in range(last)),
        )
        if value < self.best_value:
            # running sums; dp() recomputes the value of the final assignment exactly
            self.best_value = value
            self.best = [d if d >= 0 else last for d in self.dev]


def work_lower_bound(ip: IndexedProblem) -> float:
    """No period is below the work on the cheapest devices shared by all, or one node's."""
    cheapest = [min(ip.compute[v]) for v in range(ip.n) if not ip.is_input[v]]
    return max(sum(cheapest) / ip.k, max(cheapest, default=0.0))


def descendant_matrix(ip: IndexedProblem):
    """n x n 0/1 NumPy array: [v, w] = 1 when w is v or one of its descendants."""
    import numpy as np

    n = ip.n
    reach = [0] * n  # bitmask of v and its descendants
    for v in range(n - 1, -1, -1):
        mask = 1 << v
        for w in ip.succs[v]:
            mask |= reach[w]
        reach[v] = mask
    nbytes = (n + 7) // 8
    bits = np.frombuffer(b"".join(m.to_bytes(nbytes, "little") for m in reach), dtype=np.uint8)
    return np.unpackbits(bits.reshape(n, nbytes), axis=1, bitorder="little")[:, :n]


def _descendant_work(ip: IndexedProblem) -> list[list[float]]:
    """[i][v] = sum over v and its descendants w of min_{d > i} compute[w][d] / (k - 1 - i)."""
    import numpy as np

    n, k = ip.n, ip.k
    if k < 2 or n == 0:
        return [[0.0] * n for _ in range(k)]
    matrix = descendant_matrix(ip)
    compute = np.asarray(ip.compute, dtype=float)
    result = []
    for i in range(k):
        if i >= k - 1:
            result.append([0.0] * n)
            continue
        cheapest_later = compute[:, i + 1:].min(axis=1)
        result.append(list(matrix.astype(float) @ cheapest_later / (k - 1 - i)))
    return result
