"""Where the numbers of a partition problem come from: devices, compute costs, links.

A device is ``NAME=SOURCE[:xFACTOR]``. SOURCE is a predictor device profile (e.g.
``cpu-1t-tensorflow``) or, when a costs file is given, one of its device columns; the optional
factor scales the compute times (``:x4`` = 4x slower than the source, ``:x0.5`` = twice as fast;
a what-if approximation, labelled so in the plan note). Plain ``NAME`` means ``NAME=NAME``.

A costs file is JSON, either ``{"compute_ms": {node: {column: ms}}}`` or a plan file (its
``nodes[*].compute_ms`` are reused). Input nodes may be left out (they cost nothing). An
optional ``"call_overhead_ms": {column: ms}`` gives the fixed cost of one compiled call on each
column's device (plan files carry theirs); a profile's comes from its trained bundle.

A link is ``A-B=FILE``: JSON ``{"latency_ms": .., "mbps": ..}`` for both directions, or
``{"up": {...}, "down": {...}}`` with up = A->B. Pairs without ``--link`` use ``--mbps`` and
``--rtt-ms`` (one-way latency = rtt / 2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dnnsplit.partition.graph import TaskGraph
from dnnsplit.partition.problem import Link, PlanError, Problem
from dnnsplit.predictor.files import read_json

#: NAME[=SOURCE][:xFACTOR]; SOURCE is a profile name, a profile's folder or a costs column
_DEVICE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)(=(?P<source>[^:=]+))?"
                     r"(:x(?P<factor>[0-9]*\.?[0-9]+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    source: str
    factor: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "DeviceSpec":
        match = _DEVICE.match(text.strip())
        if not match:
            raise PlanError(f"device {text!r} is not NAME=SOURCE[:xFACTOR], e.g. "
                            "edge=cpu-1t-tensorflow:x4 (names: letters, digits, _ and .; "
                            "SOURCE a profile name or folder, or a column of --costs)")
        factor = float(match["factor"]) if match["factor"] else 1.0
        if factor <= 0:
            raise PlanError(f"device {text!r}: the factor must be > 0")
        return cls(match["name"], match["source"] or match["name"], factor)

    @property
    def label(self) -> str:
        return self.source + (f" x{self.factor:g} (what-if scaling)" if self.factor != 1 else "")


@dataclass(frozen=True)
class CostsFile:
    """A costs file's compute times (node -> column -> ms) and call overheads (column -> ms)."""

    compute_ms: dict[str, dict[str, float]]
    call_overhead_ms: dict[str, float] = field(default_factory=dict)


def load_costs(path: str | Path) -> CostsFile:
    """Read a costs file (see the module docstring)."""
    path = Path(path)
    data = read_json(path, "costs file", PlanError)
    try:
        if isinstance(data, dict) and "compute_ms" in data:
            table = data["compute_ms"]
        elif isinstance(data, dict) and "nodes" in data:
            table = {node["name"]: node["compute_ms"] for node in data["nodes"]}
        else:
            raise PlanError(
                f"costs file {str(path)!r} has neither 'compute_ms' nor 'nodes': expected "
                '{"compute_ms": {"<node>": {"<device>": ms}}}')
        costs = {str(node): {str(col): float(ms) for col, ms in row.items()}
                 for node, row in table.items()}
        overheads = {str(col): float(ms)
                     for col, ms in (data.get("call_overhead_ms") or {}).items()}
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise PlanError(f"costs file {str(path)!r} is malformed: {exc}") from None
    return CostsFile(costs, overheads)


def parse_links(devices: Sequence[str], link_args: Sequence[str], mbps: float | None,
                rtt_ms: float | None) -> dict[tuple[str, str], Link]:
    """One Link per ordered device pair from ``--link A-B=FILE`` and ``--mbps/--rtt-ms``."""
    if mbps is not None and not (math.isfinite(mbps) and mbps > 0):
        raise PlanError(f"--mbps must be a bandwidth above 0 (Mbit/s), got {mbps:g}")
    if rtt_ms is not None and not (math.isfinite(rtt_ms) and rtt_ms >= 0):
        raise PlanError(f"--rtt-ms must be a round-trip time of 0 ms or more, got {rtt_ms:g}")
    links: dict[tuple[str, str], Link] = {}
    for arg in link_args:
        pair, sep, file = arg.partition("=")
        if not sep:
            raise PlanError(f"link {arg!r} is not A-B=FILE")
        a, b = _split_pair(pair, devices)
        up, down = _read_link_file(file)
        links[(a, b)], links[(b, a)] = up, down
    for a in devices:
        for b in devices:
            if a != b and (a, b) not in links:
                if mbps is None:
                    raise PlanError(f"no link between {a} and {b}: give --link {a}-{b}=FILE "
                                    "or --mbps (and --rtt-ms) for all pairs")
                links[(a, b)] = Link((rtt_ms or 0.0) / 2, mbps)
    return links


def _split_pair(pair: str, devices: Sequence[str]) -> tuple[str, str]:
    for a in devices:
        if pair.startswith(a + "-") and pair[len(a) + 1:] in devices and pair[len(a) + 1:] != a:
            return a, pair[len(a) + 1:]
    raise PlanError(f"link {pair!r} does not name two of the devices {list(devices)} as A-B")


def _read_link_file(file: str) -> tuple[Link, Link]:
    data = read_json(file, "link profile", PlanError)
    try:
        if "up" in data:
            return (Link(float(data["up"]["latency_ms"]), float(data["up"]["mbps"])),
                    Link(float(data["down"]["latency_ms"]), float(data["down"]["mbps"])))
        link = Link(float(data["latency_ms"]), float(data["mbps"]))
        return link, link
    except PlanError as exc:  # a value out of range
        raise PlanError(f"link profile {file!r}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"link profile {file!r} is malformed ({exc}): expected "
                        '{"latency_ms": .., "mbps": ..} or {"up": {..}, "down": {..}}') from None


def predicted_costs(tg: TaskGraph, profile: str) -> tuple[dict[str, float], float, str]:
    """Per-node compute time (ms) predicted for a device profile by its trained bundle, the
    profile's overhead of one compiled call (ms), and a warning when much of the predicted
    time lies outside what the profile measured (``""`` otherwise).

    :func:`profile_runtime` gives what the profile was measured with."""
    from dnnsplit.predictor.bundle import ProfileError, load_bundle
    from dnnsplit.predictor.compose import predict_graph

    try:
        bundle = load_bundle(profile)
    except ProfileError as exc:
        raise PlanError(f"{exc}; or give measured costs with --costs FILE") from None
    prediction = predict_graph(bundle, tg)  # one compiled call: one overhead
    return (prediction.node_ms, prediction.call_overhead_ms,
            prediction.coverage_warning(bundle.profile))


def profile_runtime(profile: str) -> dict[str, Any]:
    """``{"backend", "threads"}`` a device profile was measured with (its bundle's runtime)."""
    from dnnsplit.predictor.bundle import load_bundle

    backend, threads = load_bundle(profile).runtime
    return {"backend": backend, "threads": threads}


def _cost_column(tg: TaskGraph, costs: Mapping[str, Mapping[str, float]],
                 source: str) -> dict[str, float]:
    """One device column of a costs file, checked against the model's nodes."""
    inputs = set(tg.input_nodes)
    unknown = sorted(set(costs) - set(tg.nodes))
    if unknown:
        raise PlanError(f"costs file has rows for {len(unknown)} node(s) that {tg.name} lacks: "
                        f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''} (is it "
                        "for another model? `partition graph MODEL --nodes` lists its nodes)")
    column = {}
    for node in tg.nodes:
        row = costs.get(node)
        if row is None and node not in inputs:
            raise PlanError(f"costs file has no row for node {node!r} of {tg.name}: "
                            "is it for another model?")
        if row is not None and source not in row and node not in inputs:
            raise PlanError(f"costs file has no column {source!r} for node "
                            f"{node!r} (columns: {', '.join(sorted(row))})")
        column[node] = (row or {}).get(source, 0.0)
    return column


def problem_from_graph(
    tg: TaskGraph,
    devices: Sequence[DeviceSpec],
    links: Mapping[tuple[str, str], Link],
    costs: Mapping[str, Mapping[str, float]] | None = None,
    call_overhead_ms: Mapping[str, float] | None = None,
) -> Problem:
    """The partition problem of a task graph for the given devices, links and cost source.

    Without ``costs`` each device's compute times and call overhead are predicted by its
    profile's bundle; with ``costs`` (node -> column -> ms) they are read from its column,
    the overhead from ``call_overhead_ms`` (column -> ms; 0 where missing).
    """
    if not devices:
        raise PlanError("give at least one --device")
    compute: dict[str, dict[str, float]] = {n: {} for n in tg.nodes}
    overhead: dict[str, float] = {}
    columns: dict[str, tuple[dict[str, float], float, str]] = {}  # per source (shared)
    runtimes: dict[str, dict[str, Any]] = {}
    for device in devices:
        if device.source not in columns:
            columns[device.source] = (
                predicted_costs(tg, device.source) if costs is None
                else (_cost_column(tg, costs, device.source),
                      float((call_overhead_ms or {}).get(device.source, 0.0)), ""))
        column, call_ms, _ = columns[device.source]
        for node in tg.nodes:
            compute[node][device.name] = column[node] * device.factor
        overhead[device.name] = call_ms * device.factor
        if costs is None:
            runtimes[device.name] = {"profile": device.source, "factor": device.factor,
                                     **profile_runtime(device.source)}
    return Problem.build(
        nodes=tg.nodes,
        edges=list(tg.graph.edges),
        devices=[d.name for d in devices],
        compute_ms=compute,
        output_bytes={n: tg.graph.nodes[n]["output_bytes"] for n in tg.nodes},
        links=links,
        input_nodes=tg.input_nodes,
        output_nodes=tg.output_nodes,
        node_types={n: tg.graph.nodes[n]["layer_type"] for n in tg.nodes},
        call_overhead_ms=overhead,
        cost_notes=[warning for _, _, warning in columns.values() if warning],
        runtimes=runtimes,
    )
