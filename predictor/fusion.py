"""Kernels: what a device really runs, a layer or a fused chain of layers (rules are data).

The rules (``predictor/data/fusion_rules.json``) are shared by the collectors (which kernels to
benchmark) and the predictor (how to read a task graph). A split between two layers breaks
their fusion: :func:`find_kernels` takes the assignment into account when given one.

>>> kernels = find_kernels(task_graph)                    # doctest: +SKIP
>>> kernels[0].nodes, kernels[0].pattern                   # doctest: +SKIP
(('conv1_conv', 'conv1_bn', 'conv1_relu'), 'Conv2D+BatchNormalization+Activation')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Mapping, Sequence

from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.features import LayerSpec


#: keras.ops calls are measured, and predicted, as the equivalent layer.
OPS_AS_LAYERS = {"ops.Add": "Add", "ops.Multiply": "Multiply", "ops.Subtract": "Subtract",
                 "ops.Concatenate": "Concatenate"}


@dataclass(frozen=True)
class FusionRules:
    groups: Mapping[str, frozenset[str]]
    rules: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FusionRules":
        try:
            groups = {name: frozenset(types) for name, types in data["groups"].items()}
            rules = tuple(tuple(rule) for rule in data["rules"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise DnnsplitError(f"malformed fusion rules: {exc}") from None
        for rule in rules:
            for group in rule:
                if group not in groups:
                    raise DnnsplitError(f"fusion rule {rule} names unknown group {group!r}")
        return cls(groups, tuple(sorted(rules, key=len, reverse=True)))

    def matches(self, types: Sequence[str]) -> bool:
        return any(len(rule) == len(types) and all(t in self.groups[g] for g, t in
                                                   zip(rule, types)) for rule in self.rules)


@lru_cache(maxsize=1)
def default_rules() -> FusionRules:
    text = files("dnnsplit.predictor").joinpath("data/fusion_rules.json").read_text()
    return FusionRules.from_dict(json.loads(text))


@dataclass(frozen=True)
class Kernel:
    """Consecutive task-graph nodes run as one kernel; ``pattern`` joins their layer types."""

    nodes: tuple[str, ...]
    pattern: str


def find_kernels(task_graph, rules: FusionRules | None = None,
                 assignment: Mapping[str, str] | None = None) -> list[Kernel]:
    """Partition the task graph's nodes into kernels, longest matching rule first.

    With ``assignment`` (node -> device), nodes on different devices are never fused.
    """
    rules = rules or default_rules()
    graph = task_graph.graph
    longest = max((len(r) for r in rules.rules), default=1)
    taken: set[str] = set()
    kernels = []
    for node in task_graph.nodes:
        if node in taken:
            continue
        chain = [node]
        while len(chain) < longest:
            last = chain[-1]
            succs = list(graph.successors(last))
            if len(succs) != 1 or last in task_graph.output_nodes:
                break
            nxt = succs[0]
            if graph.in_degree(nxt) != 1 or nxt in taken:
                break
            if assignment is not None and assignment[nxt] != assignment[node]:
                break
            chain.append(nxt)
        types = [graph.nodes[n]["layer_type"] for n in chain]
        for size in range(len(chain), 1, -1):
            if rules.matches(types[:size]):
                chain = chain[:size]
                break
        else:
            chain = chain[:1]
        taken.update(chain)
        kernels.append(Kernel(tuple(chain), "+".join(graph.nodes[n]["layer_type"]
                                                       for n in chain)))
    return kernels


def kernel_record(specs: Sequence[LayerSpec]) -> dict[str, Any]:
    """The spec columns of a kernel: the first layer's shapes and config, the kernel's totals.

    ``flops`` and ``params`` are summed over the chain, the output columns are the last
    layer's, and ``activation`` is the chain's activation (a fused activation layer's function).
    """
    first, last = specs[0], specs[-1]
    record = first.to_record()
    tail = last.to_record()
    for key in ("out_shape", "out_h", "out_w", "out_c", "output_bytes"):
        record[key] = tail[key]
    record["flops"] = sum(s.flops for s in specs)
    record["params"] = sum(s.params for s in specs)
    record["modelled"] = int(all(s.modelled for s in specs))
    for spec in specs[1:]:
        if spec.layer_type in ("Activation",) and spec.config.get("activation"):
            record["activation"] = str(spec.config["activation"])
        elif spec.layer_type == "ReLU":
            record["activation"] = "relu6" if spec.config.get("max_value") == 6 else "relu"
        elif spec.layer_type in ("LeakyReLU", "PReLU", "ELU", "Softmax"):
            record["activation"] = spec.layer_type.lower()
    return record
