"""Recompute a plan's objective values from the problem and an assignment alone.

This is the one place the cost model is written down as code; every algorithm is checked
against it, and ``partition plan`` output is recomputed with it in the tests.

>>> predicted = evaluate(problem, {"in": "edge", "a": "server", "b": "server"})  # doctest: +SKIP
>>> predicted.latency_ms, predicted.period_ms, predicted.throughput_fps  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from dnnsplit.partition.problem import IndexedProblem, PlanError, Problem


@dataclass(frozen=True)
class Predicted:
    """Objective values of one assignment.

    ``latency_ms``: one frame, everything sequential (sum of compute, call overheads and
    transfers). ``period_ms``: the largest per-device compute sum (its call overhead included)
    or per-link transfer sum.
    ``monotone``: every edge goes from device i to device j >= i (a valid pipeline; the final
    return of outputs to d1 is exempt). ``throughput_fps`` is ``1000 / period_ms`` for a
    monotone assignment and 0 otherwise: a non-monotone split is no pipeline of the problem's
    kind (the executor still runs it, a device's visits taking turns, but the period it
    reaches is not modelled; ``period_ms`` is then only a lower bound).
    """

    latency_ms: float
    period_ms: float
    throughput_fps: float
    monotone: bool
    device_ms: tuple[float, ...]
    link_ms: Mapping[tuple[int, int], float]


def evaluate(problem: Problem, assignment: Mapping[str, str]) -> Predicted:
    """Objective values of ``assignment`` (node name -> device name)."""
    missing = [n for n in problem.nodes if n not in assignment]
    if missing:
        raise PlanError(f"assignment misses {len(missing)} node(s), e.g. {missing[0]!r}")
    index = {d: i for i, d in enumerate(problem.devices)}
    try:
        devices = [index[assignment[n]] for n in problem.nodes]
    except KeyError as exc:
        raise PlanError(f"assignment names unknown device {exc.args[0]!r}") from None
    for node in problem.input_nodes:
        if assignment[node] != problem.devices[0]:
            raise PlanError(f"input node {node!r} must be on the first device "
                            f"{problem.devices[0]!r}, not {assignment[node]!r}")
    return evaluate_indexed(problem.indexed, devices)


def scale_compute(problem: Problem, factor: float) -> Problem:
    """The same problem with every compute time and call overhead times ``factor`` (not links).

    E.g. a plan's prediction at the machine's present speed: ``factor`` = the reference probe
    timed now / the profile's (``collectors calibrate``).
    """
    if not factor > 0:
        raise PlanError(f"a compute scale factor must be > 0, got {factor!r}")
    compute = {n: {d: ms * factor for d, ms in row.items()}
               for n, row in problem.compute_ms.items()}
    overhead = {d: ms * factor for d, ms in problem.call_overhead_ms.items()}
    return replace(problem, compute_ms=compute, call_overhead_ms=overhead)


def destinations(ip: IndexedProblem, devices: Sequence[int], u: int) -> set[int]:
    """Devices other than u's own that need u's output (consumers, and d1 for outputs)."""
    dest = {devices[v] for v in ip.succs[u]}
    if ip.is_output[u]:
        dest.add(0)
    dest.discard(devices[u])
    return dest


def evaluate_indexed(ip: IndexedProblem, devices: Sequence[int]) -> Predicted:
    """:func:`evaluate` on integer node and device indices."""
    device_ms = [0.0] * ip.k
    link_ms: dict[tuple[int, int], float] = {}
    compute = transfers = 0.0
    monotone = True
    for d in {devices[u] for u in range(ip.n) if not ip.is_input[u]}:
        device_ms[d] += ip.overhead[d]
        compute += ip.overhead[d]
    for u in range(ip.n):
        a = devices[u]
        device_ms[a] += ip.compute[u][a]
        compute += ip.compute[u][a]
        if any(devices[v] < a for v in ip.succs[u]):
            monotone = False
        for b in destinations(ip, devices, u):
            t = ip.transfer[u][a][b]
            transfers += t
            link_ms[(a, b)] = link_ms.get((a, b), 0.0) + t
    period = max(device_ms + list(link_ms.values()))
    return Predicted(
        latency_ms=compute + transfers,
        period_ms=period,
        throughput_fps=(1000.0 / period if period > 0 else float("inf")) if monotone else 0.0,
        monotone=monotone,
        device_ms=tuple(device_ms),
        link_ms=link_ms,
    )


def objective_value(predicted: Predicted, objective: str) -> float:
    """The number an algorithm minimises: latency_ms, or period_ms (inf if not monotone)."""
    if objective == "latency":
        return predicted.latency_ms
    if objective == "throughput":
        return predicted.period_ms if predicted.monotone else float("inf")
    raise PlanError(f"unknown objective {objective!r}: use latency or throughput")


def stage_ms(problem: Problem, stages: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
    """The compute time of each stage (``(device, nodes)`` in running order, as
    :func:`dnnsplit.partition.visits.visits` gives them): its nodes' times on its device, and
    the device's call overhead on the first of its stages that runs a layer (a stage holding
    only inputs forwards them). A device with one stage gets its ``device_ms``."""
    inputs = set(problem.input_nodes)
    charged: set[str] = set()
    times = []
    for device, nodes in stages:
        ms = sum(problem.compute_ms[n][device] for n in nodes)
        if device not in charged and any(n not in inputs for n in nodes):
            charged.add(device)
            ms += problem.call_overhead_ms.get(device, 0.0)
        times.append(ms)
    return times
