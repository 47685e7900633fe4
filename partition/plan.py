"""The plan: a self-contained JSON file from which anyone can recompute its objective values.

>>> plan = Plan.from_solution(problem, solution)        # doctest: +SKIP
>>> plan.save("out/plan-dp.json")                         # doctest: +SKIP
>>> Plan.load("out/plan-dp.json").predicted.latency_ms    # doctest: +SKIP

``Plan.load`` validates the file and recomputes the predicted values with
:func:`dnnsplit.partition.cost.evaluate`; a file whose stored values disagree is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dnnsplit.partition.cost import Predicted, evaluate
from dnnsplit.partition.problem import Link, PlanError, Problem
from dnnsplit.partition.solution import Solution
from dnnsplit.partition.visits import visits
from dnnsplit.predictor.files import read_json, write_json_atomic

#: Relative tolerance when a loaded plan's stored predictions are checked.
RECOMPUTE_RTOL = 1e-6


@dataclass(frozen=True)
class Plan:
    problem: Problem
    objective: str
    algorithm: str
    assignment: dict[str, str]
    predicted: Predicted
    solver_ms: float
    exact: bool
    states: int = 0
    note: str = ""
    #: layers split into channel parts before planning (:mod:`dnnsplit.partition.layer_split`): the
    #: plan's nodes are those of ``split_layers(model, layer_splits)``
    layer_splits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_solution(cls, problem: Problem, solution: Solution,
                      layer_splits: dict[str, int] | None = None) -> "Plan":
        assignment = solution.named(problem)
        note = "; ".join(n for n in (solution.note, *problem.cost_notes) if n)
        return cls(problem, solution.objective, solution.algorithm, assignment,
                   evaluate(problem, assignment), solution.solver_ms, solution.exact,
                   solution.states, note, dict(layer_splits or {}))

    def with_layer_splits(self, layer_splits: dict[str, int]) -> "Plan":
        return replace(self, layer_splits=dict(layer_splits))

    @property
    def stages(self) -> list[dict[str, Any]]:
        """Stages in running order with their nodes: the devices in pipeline order (devices
        with none omitted), a device twice where a latency plan comes back to it."""
        p = self.problem
        return [{"device": d, "nodes": nodes}
                for d, nodes in visits(p.nodes, p.edges, self.assignment, p.devices)]

    @property
    def value(self) -> float:
        return (self.predicted.latency_ms if self.objective == "latency"
                else self.predicted.period_ms)

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        return {
            "objective": self.objective,
            "algorithm": self.algorithm,
            "devices": list(p.devices),
            "call_overhead_ms": dict(p.call_overhead_ms),
            "links": {f"{a}->{b}": {"latency_ms": link.latency_ms, "mbps": link.mbps}
                      for (a, b), link in p.links.items()},
            "nodes": [
                {"name": n, "type": p.node_types.get(n, ""), "compute_ms": dict(p.compute_ms[n]),
                 "output_bytes": p.output_bytes[n]}
                for n in p.nodes
            ],
            "edges": [[u, v] for u, v in p.edges],
            "input_nodes": list(p.input_nodes),
            "output_nodes": list(p.output_nodes),
            "assignment": dict(self.assignment),
            "stages": self.stages,
            "predicted": {
                "latency_ms": self.predicted.latency_ms,
                "period_ms": self.predicted.period_ms,
                "throughput_fps": self.predicted.throughput_fps,
            },
            "solver_ms": self.solver_ms,
            "exact": self.exact,
            "states": self.states,
            "note": self.note,
            "layer_splits": dict(self.layer_splits),
            "runtimes": {d: dict(r) for d, r in p.runtimes.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], check: bool = True) -> "Plan":
        """Rebuild and validate a plan; with ``check`` its stored predictions must recompute."""
        try:
            devices = list(data["devices"])
            links = {}
            for key, value in data["links"].items():
                a, sep, b = key.partition("->")
                if not sep:
                    raise PlanError(f"link key {key!r} is not of the form 'a->b'")
                links[(a, b)] = Link(float(value["latency_ms"]), float(value["mbps"]))
            nodes = [node["name"] for node in data["nodes"]]
            problem = Problem.build(
                nodes=nodes,
                edges=[tuple(edge) for edge in data["edges"]],
                devices=devices,
                compute_ms={node["name"]: node["compute_ms"] for node in data["nodes"]},
                output_bytes={node["name"]: node["output_bytes"] for node in data["nodes"]},
                links=links,
                input_nodes=data["input_nodes"],
                output_nodes=data["output_nodes"],
                node_types={node["name"]: node.get("type", "") for node in data["nodes"]},
                # plans written before call overheads were planned have none
                call_overhead_ms=dict(data.get("call_overhead_ms") or {}),
                # plans written before runtimes were recorded have none
                runtimes=dict(data.get("runtimes") or {}),
            )
            assignment = dict(data["assignment"])
            stored = data["predicted"]
            plan = cls(problem, data["objective"], data["algorithm"], assignment,
                       evaluate(problem, assignment), float(data.get("solver_ms", 0.0)),
                       bool(data.get("exact", False)), int(data.get("states", 0)),
                       str(data.get("note", "")),
                       # plans written before layer splits have none
                       {str(k): int(v) for k, v in (data.get("layer_splits") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed plan: {type(exc).__name__}: {exc}") from None
        if check:
            for key in ("latency_ms", "period_ms", "throughput_fps"):
                if not math.isclose(float(stored[key]), getattr(plan.predicted, key),
                                    rel_tol=RECOMPUTE_RTOL, abs_tol=1e-9):
                    raise PlanError(
                        f"plan says {key}={stored[key]} but its own costs give "
                        f"{getattr(plan.predicted, key)}: the file was edited or is corrupt")
        return plan

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON atomically (temporary file, then rename)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        data = read_json(path, "plan file", PlanError)
        if not isinstance(data, dict):
            raise PlanError(f"plan file {str(path)!r} does not hold a JSON object")
        return cls.from_dict(data)
