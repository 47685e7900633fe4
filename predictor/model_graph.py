"""The task graph of a Keras model: one node per operation call, tensor bytes on the edges.

>>> from predictor.model_source import load_model
>>> tg = TaskGraph.from_keras(load_model("ResNet50"))
>>> tg.summary()["nodes"], tg.summary()["edges"]
(177, 192)

Nodes are the calls of the functional graph: leaf layers, bare ``keras.ops`` calls (e.g. the
residual adds of ConvNeXt, which are not in ``model.layers``) and the InputLayers. Nested
models (functional or Sequential) are flattened; their nodes are named ``outer/inner``. A layer
called more than once gives one node per call, the later ones named ``name@1``, ``name@2``...

Node attributes: ``spec`` (:class:`~dnnsplit.predictor.features.LayerSpec`), ``layer_type``,
``flops``, ``params``, ``output_bytes`` (all outputs of the call), ``path`` (names from the outer
model to the operation), ``call`` (call number of that operation in this graph), and, for
re-running the call elsewhere (the executor's stages), ``keras_node`` (the Keras call) and ``sources`` (for
each input tensor of the call, in order: the producing graph node and its output index).
Edge attributes: ``bytes`` (distinct tensors sent from producer to consumer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from dnnsplit.predictor.errors import SpecError
from dnnsplit.predictor.features import LayerSpec, tensor_nbytes
from dnnsplit.predictor.keras_env import import_keras


@dataclass
class TaskGraph:
    """A networkx DAG of a model's operation calls (see the module docstring)."""

    graph: nx.DiGraph
    name: str
    input_nodes: tuple[str, ...]
    output_nodes: tuple[str, ...]
    batch_size: int = 1
    #: for each model output, in order: (producing node, output index)
    output_sources: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_keras(cls, model, batch_size: int = 1) -> "TaskGraph":
        """Build the task graph of a functional or Sequential Keras model."""
        builder = _Builder(batch_size)
        functional = _functional_of(model)
        builder.walk(functional, prefix="", path=(), top_level=True)
        outputs, output_sources = [], []
        for tensor in functional.outputs:
            node, index, _ = builder.tensor_source[id(tensor)]
            output_sources.append((node, index))
            if node not in outputs:
                outputs.append(node)
        inputs = [builder.tensor_source[id(t)][0] for t in functional.inputs]
        graph = builder.graph
        if not nx.is_directed_acyclic_graph(graph):  # pragma: no cover - Keras forbids it
            raise SpecError(f"model {model.name!r} has a cycle")
        return cls(
            graph=graph,
            name=model.name,
            input_nodes=tuple(dict.fromkeys(inputs)),
            output_nodes=tuple(outputs),
            batch_size=batch_size,
            output_sources=tuple(output_sources),
        )

    # --- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def nodes(self) -> list[str]:
        """Node names in a topological order (the order Keras runs them: insertion order)."""
        return list(self.graph.nodes)

    def spec(self, node: str) -> LayerSpec:
        return self.graph.nodes[node]["spec"]

    @property
    def flops(self) -> int:
        return sum(d["flops"] for _, d in self.graph.nodes(data=True))

    @property
    def params(self) -> int:
        return sum(d["params"] for _, d in self.graph.nodes(data=True))

    @property
    def unmodelled(self) -> list[str]:
        """Layer types in this graph that have no dedicated FLOPs rule (sorted)."""
        return sorted({d["spec"].layer_type for _, d in self.graph.nodes(data=True)
                       if not d["spec"].modelled})

    def largest_tensor(self) -> tuple[str, int]:
        """(node, bytes) of the call with the largest output."""
        node = max(self.graph.nodes, key=lambda n: self.graph.nodes[n]["output_bytes"])
        return node, self.graph.nodes[node]["output_bytes"]

    def node_table(self) -> list[dict[str, Any]]:
        """One row per node, in topological order: the names a costs file is keyed by, with
        type, FLOPs, parameters and output bytes (``partition graph --nodes``)."""
        return [{"name": n, "type": self.graph.nodes[n]["layer_type"],
                 "flops": self.graph.nodes[n]["flops"], "params": self.graph.nodes[n]["params"],
                 "output_bytes": self.graph.nodes[n]["output_bytes"],
                 "inputs": list(self.graph.predecessors(n))} for n in self.nodes]

    def summary(self) -> dict[str, Any]:
        """What ``partition graph --json`` prints."""
        node, size = self.largest_tensor()
        return {
            "model": self.name,
            "nodes": self.graph.number_of_nodes(),
            "edges": self.graph.number_of_edges(),
            "flops": self.flops,
            "params": self.params,
            "largest_tensor": {"node": node, "bytes": size},
            "unmodelled": self.unmodelled,
        }


def _functional_of(model):
    """The Functional graph behind a model (a Sequential keeps one in ``_functional``)."""
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "inputs"):
        return model
    functional = getattr(model, "_functional", None)
    if functional is not None:
        return functional
    kind = type(model).__name__
    if kind == "Sequential":
        raise SpecError(
            f"Sequential model {model.name!r} has no input shape yet: start it with "
            "keras.Input(shape=...) or call model.build(input_shape) first"
        )
    raise SpecError(
        f"model {getattr(model, 'name', model)!r} ({kind}) is not a functional or Sequential "
        "model: a subclassed model has no layer graph to split; rebuild it functionally"
    )


def _is_nested_model(operation) -> bool:
    keras = import_keras()
    return isinstance(operation, keras.Model)


class _Builder:
    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.graph = nx.DiGraph()
        #: id(KerasTensor) -> (producing node, output index, bytes)
        self.tensor_source: dict[int, tuple[str, int, int]] = {}
        self.calls: dict[str, int] = {}

    def _unique(self, name: str) -> tuple[str, int]:
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        return (name if call == 0 else f"{name}@{call}"), call

    def walk(self, functional, prefix: str, path: tuple[str, ...], top_level: bool) -> None:
        by_depth = functional._nodes_by_depth
        for depth in sorted(by_depth, reverse=True):
            for knode in by_depth[depth]:
                op = knode.operation
                if knode.is_input:
                    if top_level:
                        self._add_leaf(knode, prefix, path)
                    continue
                if _is_nested_model(op):
                    self._add_nested(knode, prefix, path)
                else:
                    self._add_leaf(knode, prefix, path)

    def _add_nested(self, knode, prefix, path):
        model = knode.operation
        inner = _functional_of(model)
        unique, _ = self._unique(prefix + model.name)
        outer_inputs = knode.input_tensors
        if len(outer_inputs) != len(inner.inputs):
            raise SpecError(
                f"nested model {model.name!r} is called with {len(outer_inputs)} tensors but has "
                f"{len(inner.inputs)} inputs"
            )
        for outer, inner_input in zip(outer_inputs, inner.inputs):
            self.tensor_source[id(inner_input)] = self._source(outer, model)
        name_part = unique[len(prefix):]
        self.walk(inner, prefix=unique + "/", path=path + (name_part,), top_level=False)
        for outer, inner_output in zip(knode.outputs, inner.outputs):
            self.tensor_source[id(outer)] = self.tensor_source[id(inner_output)]

    def _source(self, tensor, consumer) -> tuple[str, int, int]:
        try:
            return self.tensor_source[id(tensor)]
        except KeyError:
            raise SpecError(
                f"{consumer.name!r} reads a tensor that no operation of the graph produces"
            ) from None

    def _add_leaf(self, knode, prefix, path):
        op = knode.operation
        node_id, call = self._unique(prefix + op.name)
        spec = LayerSpec.from_call(
            op, knode.input_tensors, knode.outputs, batch_size=self.batch_size, name=node_id
        )
        self.graph.add_node(
            node_id,
            spec=spec,
            layer_type=spec.layer_type,
            flops=spec.flops,
            params=spec.params,
            output_bytes=spec.output_bytes,
            path=path + (op.name,),
            call=call,
            keras_node=knode,
            sources=tuple(self._source(t, op)[:2] for t in knode.input_tensors),
        )
        seen: set[int] = set()
        for tensor in knode.input_tensors:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            source, _, nbytes = self._source(tensor, op)
            if self.graph.has_edge(source, node_id):
                self.graph.edges[source, node_id]["bytes"] += nbytes
            else:
                self.graph.add_edge(source, node_id, bytes=nbytes)
        for index, tensor in enumerate(knode.outputs):
            self.tensor_source[id(tensor)] = (node_id, index,
                                              tensor_nbytes(tensor, self.batch_size))
