"""From per-kernel predictions to a model's per-layer and whole-model latency.

The nn-Meter pipeline, kept visible: model -> task graph -> kernels (fusion rules) -> one
regressor per kernel's first layer type -> sum. Then:

- a kernel whose weights fit the cache pays the profile's weight-streaming cost on top
  (``bundle.streaming``: alone, its weights stayed in cache between calls; in a model they come
  from memory, :mod:`dnnsplit.collectors.streaming`);
- the model-level correction fitted on the training models (``bundle.correction``) scales the
  kernel sum; it is learned from training-model ground truth only;
- one call overhead (``bundle.call_overhead_ms``) is added per compiled call (per stage);
- per-layer times: each kernel's time is shared among its layers by FLOPs (a layer without
  FLOPs gets a share by output bytes), so that the partitioner can split between layers;
  a split inside a fused kernel loses the fusion, which this per-layer view approximates;
- each kernel is marked inside or outside what was measured of its type (the coverage rule of
  :mod:`dnnsplit.predictor.coverage`): ``GraphPrediction.outside()`` says how much of the
  predicted time is an extrapolation.

Times are predicted in units of the profile's reference probe (drift-normalised) and turned
into milliseconds with the profile's probe time, or with the probe timed now (calibration).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from dnnsplit.predictor.bundle import Bundle
from dnnsplit.predictor.feature_table import feature_frame
from dnnsplit.predictor.fusion import OPS_AS_LAYERS, Kernel, find_kernels, kernel_record
from dnnsplit.predictor.model_graph import TaskGraph

FREE_TYPES = frozenset({"InputLayer"})
#: Share of a prediction's kernel time outside the measured range from which it warns.
OUTSIDE_WARN_SHARE = 0.05


@dataclass
class GraphPrediction:
    """Predicted times in ms for one model on one profile."""

    total_ms: float
    node_ms: dict[str, float]
    kernel_ms: list[tuple[Kernel, float]]
    call_overhead_ms: float
    unmodelled: dict[str, str] = field(default_factory=dict)  # type -> fallback used
    probe_ms: float = 0.0
    #: per kernel: inside what was measured (:mod:`dnnsplit.predictor.coverage`); None where
    #: the bundle carries no coverage (written before it had one)
    kernel_inside: list[bool | None] = field(default_factory=list)

    @property
    def node_inside(self) -> dict[str, bool | None]:
        """Per node: its kernel's coverage flag (a node not in a kernel, an input: True)."""
        flags = {n: True for n in self.node_ms}
        for (kernel, _), inside in zip(self.kernel_ms, self.kernel_inside):
            for node in kernel.nodes:
                flags[node] = inside
        return flags

    def outside(self) -> tuple[float, list[str]]:
        """The share of the predicted kernel time that comes from kernels outside what was
        measured, and their layers, the costliest first."""
        total = sum(ms for _, ms in self.kernel_ms) or 1.0
        out = [(ms, kernel) for (kernel, ms), inside in zip(self.kernel_ms, self.kernel_inside)
               if inside is False]
        nodes = [n for _, kernel in sorted(out, key=lambda item: -item[0]) for n in kernel.nodes]
        return sum(ms for ms, _ in out) / total, nodes

    def coverage_warning(self, profile: str) -> str:
        """One sentence when at least :data:`OUTSIDE_WARN_SHARE` of the predicted time is an
        extrapolation, naming the costliest layers (``""`` otherwise)."""
        share, nodes = self.outside()
        if share < OUTSIDE_WARN_SHARE:
            return ""
        names = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
        return (f"{share:.0%} of the predicted time on {profile} comes from {len(nodes)} "
                f"layer(s) outside the measured range ({names}): run `collectors collect "
                "--adaptive` on this device or treat the total as a rough guess")


def predict_graph(bundle: Bundle, tg: TaskGraph, load: float = 0.0,
                  probe_ms: float | None = None, corrected: bool = True,
                  assignment: Mapping[str, str] | None = None,
                  streaming: bool = True) -> GraphPrediction:
    """Per-node and total latency of a task graph (see the module docstring).

    ``corrected=False`` leaves out the model-level correction, ``streaming=False`` the
    weight-streaming cost (kernels as timed alone).

    With ``assignment`` (node -> device) the graph is predicted as cut into one compiled call
    per device: nodes on different devices are not fused, and each call pays the overhead.
    """
    probe = probe_ms if probe_ms is not None else bundle.reference_probe_ms
    kernels = find_kernels(tg, assignment=assignment)
    by_type: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    unmodelled: dict[str, str] = {}
    for index, kernel in enumerate(kernels):
        first = tg.graph.nodes[kernel.nodes[0]]["layer_type"]
        if first in FREE_TYPES:
            continue
        kind = OPS_AS_LAYERS.get(first, first)
        record = kernel_record([tg.spec(n) for n in kernel.nodes])
        record.update(fused_pattern="+".join([kind] + kernel.pattern.split("+")[1:]),
                      load=load)
        if kind not in bundle.types:
            unmodelled[first] = "generic log-linear model of all layer types"
            kind = "__fallback__"
        by_type[kind].append((index, record))
    normalised = np.zeros(len(kernels))
    inside: list[bool | None] = [True if tg.graph.nodes[k.nodes[0]]["layer_type"] in FREE_TYPES
                                 else None for k in kernels]
    for kind, items in by_type.items():
        estimator = bundle.fallback if kind == "__fallback__" else bundle.types[kind]
        frame = feature_frame([r for _, r in items], estimator.feature_names_)
        normalised[[i for i, _ in items]] = estimator.predict(frame)
        if kind == "__fallback__":
            flags = [False] * len(items)
        elif kind in bundle.coverage:
            flags = bundle.coverage[kind].inside([r for _, r in items]).tolist()
        else:
            flags = [None] * len(items)
        for (i, _), flag in zip(items, flags):
            inside[i] = flag
        if streaming and bundle.streaming:
            for i, _ in items:
                normalised[i] += bundle.streaming_cost(kernel_weight_bytes(tg, kernels[i]))
    scale = (bundle.correction if corrected else 1.0) * probe
    kernel_ms = [(k, float(v * scale)) for k, v in zip(kernels, normalised)]
    node_ms = {n: 0.0 for n in tg.nodes}
    for kernel, ms in kernel_ms:
        for node, share in _shares(tg, kernel).items():
            node_ms[node] = ms * share
    calls = len({assignment[n] for n in tg.nodes if n not in tg.input_nodes}) \
        if assignment else 1
    overhead = calls * bundle.call_overhead_ms * probe / bundle.reference_probe_ms
    return GraphPrediction(total_ms=sum(ms for _, ms in kernel_ms) + overhead,
                           node_ms=node_ms, kernel_ms=kernel_ms, call_overhead_ms=overhead,
                           unmodelled=unmodelled, probe_ms=probe, kernel_inside=inside)


#: Layer types that read only some rows of their weights per call (a gather): they stream
#: the rows they look up, as many bytes as their output, not the whole table.
GATHER_TYPES = frozenset({"Embedding"})


def kernel_weight_bytes(tg: TaskGraph, kernel: Kernel) -> float:
    """Bytes of weights a kernel reads per call (float32, as collected): all of its weights,
    but only the looked-up rows of a gather (an Embedding's 30522 x 128 table, 15.6 MB, costs
    0.056 ms alone for 196 tokens in the shipped profile: it does not stream its table)."""
    total = 0.0
    for n in kernel.nodes:
        spec = tg.spec(n)
        weights = 4.0 * (spec.params or 0)
        if spec.layer_type in GATHER_TYPES:
            weights = min(weights, float(spec.output_bytes or 0))
        total += weights
    return total


def _shares(tg: TaskGraph, kernel: Kernel) -> dict[str, float]:
    weights = [tg.spec(n).flops or 0 for n in kernel.nodes]
    if sum(weights) == 0:
        weights = [tg.spec(n).output_bytes or 1 for n in kernel.nodes]
    total = float(sum(weights)) or 1.0
    return {n: w / total for n, w in zip(kernel.nodes, weights)}


def predict_model_normalised(bundle: Bundle, model_name: str, loads: Sequence[float] = (0.0,),
                             corrected: bool = True) -> list[float]:
    """Whole-model time of a named model in probe units, one per load (the graph built once)."""
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import load_model

    tg = TaskGraph.from_keras(load_model(model_name))
    totals = [predict_graph(bundle, tg, load=load, probe_ms=1.0, corrected=corrected).total_ms
              for load in loads]
    import_keras().backend.clear_session()
    return totals
