"""The partition problem as data: a DAG with per-device compute costs, node output bytes, links.

The problem is stated once in docs/design.md. In short: devices ``d1..dk`` in pipeline order, the
input nodes pinned to ``d1`` with zero compute, the outputs of output nodes delivered back to
``d1``; a tensor produced on ``a`` and needed on ``b != a`` is sent once per destination device
and costs ``latency_ms(a->b) + bytes * 8 / (mbps(a->b) * 1000)``; a device that runs at least one
(non-input) node pays its ``call_overhead_ms`` once per frame (its stage is one compiled call).

>>> p = Problem.build(
...     nodes=["in", "a", "b"], edges=[("in", "a"), ("a", "b")],
...     devices=["edge", "server"],
...     compute_ms={"in": {"edge": 0, "server": 0}, "a": {"edge": 4, "server": 1},
...                 "b": {"edge": 4, "server": 1}},
...     output_bytes={"in": 1000, "a": 1000, "b": 10},
...     links={("edge", "server"): Link(1.0, 8.0), ("server", "edge"): Link(1.0, 8.0)},
...     input_nodes=["in"], output_nodes=["b"])
>>> round(p.links[("edge", "server")].transfer_ms(1000), 3)
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

import networkx as nx

from dnnsplit.predictor.errors import DnnsplitError


class PlanError(DnnsplitError):
    """A problem or plan is inconsistent (missing link, bad cost, unknown node...)."""


@dataclass(frozen=True)
class Link:
    """One direction of a network link: one-way latency and bandwidth."""

    latency_ms: float
    mbps: float

    def __post_init__(self):
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise PlanError(f"link latency must be a finite number >= 0 ms, got {self.latency_ms}")
        if not (math.isfinite(self.mbps) and self.mbps > 0):
            raise PlanError(
                f"link bandwidth must be > 0 Mbps, got {self.mbps}: a link that carries nothing "
                "cannot be planned over; drop the device instead"
            )

    def transfer_ms(self, nbytes: float) -> float:
        return self.latency_ms + nbytes * 8 / (self.mbps * 1000)


@dataclass(frozen=True)
class Problem:
    """A DAG, devices in pipeline order, compute costs, output bytes and links (validated)."""

    nodes: tuple[str, ...]  # a topological order
    edges: tuple[tuple[str, str], ...]
    devices: tuple[str, ...]
    compute_ms: Mapping[str, Mapping[str, float]]
    output_bytes: Mapping[str, int]
    links: Mapping[tuple[str, str], Link]
    input_nodes: tuple[str, ...]
    output_nodes: tuple[str, ...]
    node_types: Mapping[str, str] = field(default_factory=dict)
    #: per device: the fixed cost of one compiled call, paid once per frame by a device that
    #: runs at least one non-input node (its stage); 0 where unknown
    call_overhead_ms: Mapping[str, float] = field(default_factory=dict)
    #: caveats of where the costs came from (e.g. predictions outside the measured range):
    #: every plan of the problem carries them in its note
    cost_notes: tuple[str, ...] = ()
    #: per device whose costs a profile predicted: ``{"profile", "factor", "backend",
    #: "threads"}``, what the executor runs that device's stages with (none for costs files)
    runtimes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        nodes: Sequence[str],
        edges: Sequence[tuple[str, str]],
        devices: Sequence[str],
        compute_ms: Mapping[str, Mapping[str, float]],
        output_bytes: Mapping[str, int],
        links: Mapping[tuple[str, str], Link],
        input_nodes: Sequence[str],
        output_nodes: Sequence[str],
        node_types: Mapping[str, str] | None = None,
        call_overhead_ms: Mapping[str, float] | None = None,
        cost_notes: Sequence[str] = (),
        runtimes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> "Problem":
        """Validate and build; nodes are re-ordered topologically (inputs first, stable)."""
        devices = tuple(devices)
        if not devices:
            raise PlanError("no devices given")
        if len(set(devices)) != len(devices):
            raise PlanError(f"device names must be unique, got {list(devices)}")
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        for u, v in edges:
            for end in (u, v):
                if end not in graph:
                    raise PlanError(f"edge ({u!r}, {v!r}) names unknown node {end!r}")
            graph.add_edge(u, v)
        if not nx.is_directed_acyclic_graph(graph):
            raise PlanError("the graph has a cycle")
        for group, what in ((input_nodes, "input"), (output_nodes, "output")):
            for node in group:
                if node not in graph:
                    raise PlanError(f"{what} node {node!r} is not in the graph")
        for u in input_nodes:
            if graph.in_degree(u):
                raise PlanError(f"input node {u!r} has predecessors")
        inputs = set(input_nodes)
        costs: dict[str, dict[str, float]] = {}
        for node in graph.nodes:
            row = compute_ms.get(node)
            if row is None:
                raise PlanError(f"no compute cost for node {node!r}")
            costs[node] = {}
            for device in devices:
                if device not in row:
                    raise PlanError(f"no compute cost for node {node!r} on device {device!r}")
                value = float(row[device])
                if not (math.isfinite(value) and value >= 0):
                    raise PlanError(f"compute cost of {node!r} on {device!r} is {row[device]!r}: "
                                    "costs must be finite numbers >= 0 ms")
                costs[node][device] = 0.0 if node in inputs else value
            size = output_bytes.get(node)
            if size is None or not (float(size) >= 0):
                raise PlanError(f"output bytes of node {node!r} missing or negative")
        for a in devices:
            for b in devices:
                if a != b and (a, b) not in links:
                    raise PlanError(
                        f"no link {a}->{b}: give one per ordered device pair "
                        "(or --mbps/--rtt-ms for all of them)"
                    )
        overhead = {}
        for device in devices:
            value = float((call_overhead_ms or {}).get(device, 0.0))
            if not (math.isfinite(value) and value >= 0):
                raise PlanError(f"call overhead of {device!r} is {value!r}: it must be a finite "
                                "number >= 0 ms")
            overhead[device] = value
        unknown = set(call_overhead_ms or {}) - set(devices)
        if unknown:
            raise PlanError(f"call overhead given for unknown device(s) {sorted(unknown)}")
        unknown = set(runtimes or {}) - set(devices)
        if unknown:
            raise PlanError(f"runtimes given for unknown device(s) {sorted(unknown)}")
        position = {name: i for i, name in enumerate(nodes)}
        order = list(nx.lexicographical_topological_sort(
            graph, key=lambda n: (n not in inputs, position[n])))
        return cls(
            nodes=tuple(order),
            edges=tuple((u, v) for u, v in edges),
            devices=devices,
            compute_ms=costs,
            output_bytes={n: int(output_bytes[n]) for n in order},
            links={(a, b): links[(a, b)] for a in devices for b in devices if a != b},
            input_nodes=tuple(input_nodes),
            output_nodes=tuple(output_nodes),
            node_types=dict(node_types or {}),
            call_overhead_ms=overhead,
            cost_notes=tuple(cost_notes),
            runtimes={d: dict(r) for d, r in (runtimes or {}).items()},
        )

    @cached_property
    def indexed(self) -> "IndexedProblem":
        """Integer-indexed arrays for the algorithms."""
        return IndexedProblem.of(self)


@dataclass(frozen=True)
class IndexedProblem:
    """The problem with nodes and devices as integers (node i in topological order).

    ``transfer[u][a][b]`` is the time to send node u's output from device a to device b.
    ``is_output[u]``: u's output must also reach device 0. ``overhead[d]``: paid once by
    device d if it runs any non-input node.
    """

    n: int
    k: int
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    compute: tuple[tuple[float, ...], ...]
    transfer: tuple[tuple[tuple[float, ...], ...], ...]
    is_input: tuple[bool, ...]
    is_output: tuple[bool, ...]
    overhead: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.overhead:  # none given: no call overhead on any device
            object.__setattr__(self, "overhead", (0.0,) * self.k)
        if len(self.overhead) != self.k:
            raise PlanError(f"{len(self.overhead)} call overheads for {self.k} devices")

    @classmethod
    def of(cls, problem: Problem) -> "IndexedProblem":
        index = {name: i for i, name in enumerate(problem.nodes)}
        n, k = len(problem.nodes), len(problem.devices)
        preds: list[list[int]] = [[] for _ in range(n)]
        succs: list[list[int]] = [[] for _ in range(n)]
        for u, v in problem.edges:
            if index[u] not in preds[index[v]]:
                preds[index[v]].append(index[u])
                succs[index[u]].append(index[v])
        devices = problem.devices
        transfer = tuple(
            tuple(
                tuple(
                    0.0 if a == b else problem.links[(devices[a], devices[b])].transfer_ms(
                        problem.output_bytes[name])
                    for b in range(k)
                )
                for a in range(k)
            )
            for name in problem.nodes
        )
        inputs, outputs = set(problem.input_nodes), set(problem.output_nodes)
        return cls(
            n=n,
            k=k,
            preds=tuple(tuple(sorted(p)) for p in preds),
            succs=tuple(tuple(sorted(s)) for s in succs),
            compute=tuple(tuple(problem.compute_ms[name][d] for d in devices)
                          for name in problem.nodes),
            transfer=transfer,
            is_input=tuple(name in inputs for name in problem.nodes),
            is_output=tuple(name in outputs for name in problem.nodes),
            overhead=tuple(problem.call_overhead_ms.get(d, 0.0) for d in devices),
        )
