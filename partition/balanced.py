"""Fast pipeline plans for throughput on graphs too wide for exact search: balanced splits of
several topological orders, improved by moving nodes between stages.

For one topological order and a target period P, the **greedy fill** gives device 0 the
longest prefix of the order whose compute and links stay within P, device 1 the next piece,
and so on (the last device takes the rest). Without link costs this decides exactly whether
the order has a contiguous split of period <= P (each device's piece can only grow by
starting earlier); with them it is a heuristic. The **first fit** instead puts each node on
the first device, from its predecessors' last one, where it still fits (a heavy node does not
close a device half full). A bisection on P finds the smallest period each reaches. The
orders tried: the problem's own node order, the low-frontier order of
:mod:`dnnsplit.partition.dp`, a depth-first order (branches stay together), a level order
(longest path from an input) and an earliest-start order (compute on each node's cheapest
device along the longest path), so that at least one keeps parallel branches apart and one
keeps them together.

**Local moves** then take the best split and repeatedly move one node of the bottleneck
(the busiest device, or an end of the busiest link) to another device its predecessors and
successors allow, or move it together with its descendants on its device to the next device
(or with its ancestors there to the previous one), so that the assignment stays a pipeline,
while the loads sorted from the largest fall lexicographically. The answer is never worse
than the best split of any of the orders.
"""

from __future__ import annotations

import heapq
import random
import time

from dnnsplit.partition.cost import evaluate_indexed, objective_value
from dnnsplit.partition.problem import IndexedProblem, PlanError, Problem
from dnnsplit.partition.solution import Solution, stopwatch

#: The bisection on the period stops when its bracket is this tight (relative).
BISECTION_TOLERANCE = 1e-4
#: Default seconds of local moves after the splits.
MOVE_TIME_S = 1.0


def balanced(problem: Problem, objective: str = "throughput",
             time_limit_s: float | None = None) -> Solution:
    """The best balanced split of several orders, improved by local moves (throughput)."""
    if objective != "throughput":
        raise PlanError("balanced plans pipelines: use it with --objective throughput")
    ip = problem.indexed
    with stopwatch() as elapsed:
        devices, value, tried = best_order_split(ip)
        moves = MOVE_TIME_S if time_limit_s is None else max(0.0, time_limit_s - elapsed() / 1000)
        devices, steps = improve_by_moves(ip, devices, time.perf_counter() + moves)
        value = objective_value(evaluate_indexed(ip, devices), "throughput")
    return Solution("balanced", "throughput", tuple(devices), value, elapsed(), exact=False,
                    states=tried + steps,
                    note="heuristic: best balanced split of 5 topological orders, then "
                         "local moves")


# --- orders -----------------------------------------------------------------------------------


def candidate_orders(ip: IndexedProblem) -> list[list[int]]:
    """The topological orders the splits are tried along (see the module docstring)."""
    from dnnsplit.partition.dp import low_frontier_order

    orders = [list(range(ip.n)), low_frontier_order(ip), _depth_first_order(ip)]
    depth = [0] * ip.n
    start = [0.0] * ip.n
    for v in range(ip.n):  # index order is topological
        for u in ip.preds[v]:
            depth[v] = max(depth[v], depth[u] + 1)
            start[v] = max(start[v], start[u] + min(ip.compute[u]))
    orders.append(_priority_order(ip, lambda v: (depth[v], v)))
    orders.append(_priority_order(ip, lambda v: (start[v], v)))
    unique = []
    for order in orders:
        if order not in unique:
            unique.append(order)
    return unique


def _priority_order(ip: IndexedProblem, key) -> list[int]:
    """The topological order that always takes the available node of smallest ``key``."""
    missing = [len(p) for p in ip.preds]
    heap = [(key(v), v) for v in range(ip.n) if missing[v] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, v = heapq.heappop(heap)
        order.append(v)
        for w in ip.succs[v]:
            missing[w] -= 1
            if missing[w] == 0:
                heapq.heappush(heap, (key(w), w))
    return order


def _depth_first_order(ip: IndexedProblem) -> list[int]:
    """Take the most recently enabled node first: a branch is finished before the next."""
    missing = [len(p) for p in ip.preds]
    stack = sorted((v for v in range(ip.n) if missing[v] == 0), reverse=True)
    order = []
    while stack:
        v = stack.pop()
        order.append(v)
        for w in sorted(ip.succs[v], reverse=True):
            missing[w] -= 1
            if missing[w] == 0:
                stack.append(w)
    return order


# --- splits along an order --------------------------------------------------------------------


def greedy_fill(ip: IndexedProblem, order: list[int], period: float) -> list[int]:
    """Each device takes the longest next piece of ``order`` within ``period`` (compute, its
    call overhead, the links into it and its returns); the last device takes the rest."""
    k = ip.k
    dev, load, used, link, sent = _empty(ip)
    i = 0
    for v in order:
        if ip.is_input[v]:
            dev[v] = 0
            continue
        while True:
            if i == k - 1 or _fits(ip, dev, load, used, link, sent, v, i, period):
                break
            i += 1
        _place(ip, dev, load, used, link, sent, v, i)
    return dev


def first_fit(ip: IndexedProblem, order: list[int], period: float) -> list[int]:
    """Each node of ``order`` goes to the first device, from the last of its predecessors',
    where it fits within ``period``; the last device takes what fits nowhere. Unlike
    :func:`greedy_fill`, a device keeps taking nodes after a later one has started (a heavy
    node does not close a device half full)."""
    k = ip.k
    dev, load, used, link, sent = _empty(ip)
    for v in order:
        if ip.is_input[v]:
            dev[v] = 0
            continue
        i = max((dev[u] for u in ip.preds[v]), default=0)
        while i < k - 1 and not _fits(ip, dev, load, used, link, sent, v, i, period):
            i += 1
        _place(ip, dev, load, used, link, sent, v, i)
    return dev


def _empty(ip: IndexedProblem):
    """A fill's state before any node: devices, loads, devices used, links, sends per node."""
    k = ip.k
    return [-1] * ip.n, [0.0] * k, [False] * k, [[0.0] * k for _ in range(k)], [0] * ip.n


def _fits(ip, dev, load, used, link, sent, v, i, period) -> bool:
    if load[i] + ip.compute[v][i] + (0.0 if used[i] else ip.overhead[i]) > period:
        return False
    extra: dict[int, float] = {}
    for u in ip.preds[v]:
        a = dev[u]
        if a != i and not sent[u] >> i & 1:
            extra[a] = extra.get(a, 0.0) + ip.transfer[u][a][i]
    if any(link[a][i] + t > period for a, t in extra.items()):
        return False
    return not (ip.is_output[v] and i != 0 and link[i][0] + ip.transfer[v][i][0] > period)


def _place(ip, dev, load, used, link, sent, v, i) -> None:
    if not used[i]:
        load[i] += ip.overhead[i]
        used[i] = True
    dev[v] = i
    load[i] += ip.compute[v][i]
    for u in ip.preds[v]:
        a = dev[u]
        if a != i and not sent[u] >> i & 1:
            link[a][i] += ip.transfer[u][a][i]
            sent[u] |= 1 << i
    if ip.is_output[v] and i != 0:
        link[i][0] += ip.transfer[v][i][0]


def order_split(ip: IndexedProblem, order: list[int],
                fill=greedy_fill) -> tuple[list[int], float, int]:
    """The best split of ``order`` by ``fill`` (:func:`greedy_fill` or :func:`first_fit`)
    over a bisection on the period: (devices, period, fills tried)."""
    from dnnsplit.partition.dp import work_lower_bound

    low = work_lower_bound(ip)
    best = greedy_fill(ip, order, float("inf"))  # everything on the first device
    best_value = objective_value(evaluate_indexed(ip, best), "throughput")
    high, tried = best_value, 1
    while high > low * (1 + BISECTION_TOLERANCE) and high > 0:
        middle = (low + high) / 2
        devices = fill(ip, order, middle)
        tried += 1
        value = objective_value(evaluate_indexed(ip, devices), "throughput")
        if value < best_value:
            best, best_value = devices, value
        if value <= middle:
            high = middle
        else:
            low = middle
    return best, best_value, tried


def best_order_split(ip: IndexedProblem) -> tuple[list[int], float, int]:
    """The best of :func:`order_split` over :func:`candidate_orders`, by both fills."""
    best, best_value, tried = None, float("inf"), 0
    for order in candidate_orders(ip):
        for fill in (greedy_fill, first_fit):
            devices, value, count = order_split(ip, order, fill)
            tried += count
            if value < best_value:
                best, best_value = devices, value
    return best, best_value, tried


# --- local moves ------------------------------------------------------------------------------


class _Loads:
    """Device and link loads of a pipeline assignment, updated one move at a time."""

    def __init__(self, ip: IndexedProblem, devices: list[int]):
        self.ip = ip
        k = ip.k
        self.dev = list(devices)
        self.count = [[0] * k for _ in range(ip.n)]  # consumers of u per device
        self.size = [0] * k  # non-input nodes per device
        for v in range(ip.n):
            for w in ip.succs[v]:
                self.count[v][self.dev[w]] += 1
            if ip.is_output[v]:
                self.count[v][0] += 1
            if not ip.is_input[v]:
                self.size[self.dev[v]] += 1
        predicted = evaluate_indexed(ip, self.dev)  # the cost model; moves update it
        self.load = list(predicted.device_ms)
        self.link = [[predicted.link_ms.get((a, b), 0.0) for b in range(k)] for a in range(k)]

    def key(self) -> list[float]:
        """Every load, largest first (compared lexicographically)."""
        return sorted(self.load + [x for row in self.link for x in row], reverse=True)

    def move(self, v: int, j: int) -> None:
        ip, k = self.ip, self.ip.k
        i = self.dev[v]
        for b in range(k):  # v's own tensor now leaves from j
            if self.count[v][b]:
                if b != i:
                    self.link[i][b] -= ip.transfer[v][i][b]
                if b != j:
                    self.link[j][b] += ip.transfer[v][j][b]
        for u in ip.preds[v]:  # its inputs now go to j
            a = self.dev[u]
            self.count[u][i] -= 1
            if self.count[u][i] == 0 and a != i:
                self.link[a][i] -= ip.transfer[u][a][i]
            if self.count[u][j] == 0 and a != j:
                self.link[a][j] += ip.transfer[u][a][j]
            self.count[u][j] += 1
        self.load[i] -= ip.compute[v][i]
        self.load[j] += ip.compute[v][j]
        self.size[i] -= 1
        if self.size[i] == 0:
            self.load[i] -= ip.overhead[i]
        if self.size[j] == 0:
            self.load[j] += ip.overhead[j]
        self.size[j] += 1
        self.dev[v] = j

    def allowed(self, v: int) -> range:
        """The devices v may move to with every edge still going forward."""
        ip = self.ip
        low = max((self.dev[u] for u in ip.preds[v]), default=0)
        high = min((self.dev[w] for w in ip.succs[v]), default=ip.k - 1)
        return range(low, high + 1)

    def bottleneck_nodes(self) -> list[int]:
        """Nodes of the busiest device, or at the ends of the busiest link."""
        ip, k = self.ip, self.ip.k
        d = max(range(k), key=lambda x: self.load[x])
        pairs = [(a, b) for a in range(k) for b in range(k)]
        a, b = max(pairs, key=lambda pair: self.link[pair[0]][pair[1]])
        if self.link[a][b] > self.load[d]:
            return [v for v in range(ip.n) if not ip.is_input[v]
                    and ((self.dev[v] == a and self.count[v][b])
                         or (self.dev[v] == b and any(self.dev[u] == a for u in ip.preds[v])))]
        return [v for v in range(ip.n) if self.dev[v] == d and not ip.is_input[v]]


def _smaller(a: list[float], b: list[float], tolerance: float = 1e-9) -> bool:
    """``a`` < ``b`` lexicographically, entries within ``tolerance`` (relative to the largest
    load) counting as equal: rounding after a move and its undo is no improvement."""
    scale = tolerance * max(b[0] if b else 0.0, 1e-12)
    for x, y in zip(a, b):
        if x < y - scale:
            return True
        if x > y + scale:
            return False
    return False


def improve_by_moves(ip: IndexedProblem, devices: list[int], deadline: float,
                     seed: int = 0) -> tuple[list[int], int]:
    """Move bottleneck nodes while the sorted loads fall (see the module docstring): a node
    alone to any device its neighbours allow, or with its descendants on its device to the
    next device, or with its ancestors there to the previous one. At a local optimum, while
    time is left, kick: move a few random nodes, descend again, keep the better plan (until
    :data:`MAX_FAILED_KICKS` kicks in a row found nothing better)."""
    if ip.k < 2:
        return devices, 0
    rng = random.Random(seed)
    state = _Loads(ip, devices)
    steps = _descend(ip, state, deadline)
    best, best_key = list(state.dev), state.key()
    free = [v for v in range(ip.n) if not ip.is_input[v]]
    failed = 0
    while free and failed < MAX_FAILED_KICKS and time.perf_counter() < deadline:
        for _ in range(KICK_MOVES):
            v = rng.choice(free)
            allowed = [j for j in state.allowed(v) if j != state.dev[v]]
            if allowed:
                state.move(v, rng.choice(allowed))
        steps += _descend(ip, state, deadline)
        if _smaller(state.key(), best_key):
            best, best_key, failed = list(state.dev), state.key(), 0
        else:
            state, failed = _Loads(ip, best), failed + 1
    return best, steps


#: A kick moves this many random nodes; the kicks stop after this many fail in a row.
KICK_MOVES = 4
MAX_FAILED_KICKS = 200


def _descend(ip: IndexedProblem, state: "_Loads", deadline: float) -> int:
    """Apply improving moves until none is left (or the deadline); the moves tried."""
    current = state.key()
    steps = 0
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for v in state.bottleneck_nodes():
            for group, j in _candidate_moves(ip, state, v):
                before = [state.dev[w] for w in group]
                for w in group:
                    state.move(w, j)
                steps += 1
                candidate = state.key()
                if _smaller(candidate, current):
                    current, improved = candidate, True
                    break
                for w, d in zip(group, before):
                    state.move(w, d)
            if improved or time.perf_counter() >= deadline:
                break
    return steps


#: A group move takes at most this many nodes along.
MAX_GROUP = 48


def _candidate_moves(ip: IndexedProblem, state: _Loads, v: int):
    """(nodes, device) moves that keep the assignment a pipeline."""
    i = state.dev[v]
    for j in state.allowed(v):
        if j != i:
            yield [v], j
    for step, neighbours in ((1, ip.succs), (-1, ip.preds)):
        j = i + step
        if not 0 <= j < ip.k:
            continue
        group = _closure(state.dev, neighbours, v, i)
        if group is not None and len(group) > 1 and not any(ip.is_input[w] for w in group):
            yield group, j


def _closure(dev: list[int], neighbours, v: int, i: int) -> list[int] | None:
    """v and every node reachable from it through ``neighbours`` on device i (None if more
    than :data:`MAX_GROUP`)."""
    seen = {v}
    stack = [v]
    while stack:
        for w in neighbours[stack.pop()]:
            if dev[w] == i and w not in seen:
                seen.add(w)
                if len(seen) > MAX_GROUP:
                    return None
                stack.append(w)
    return list(seen)
