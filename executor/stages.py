"""Cut a Keras model into one sub-model per stage of a plan.

A plan whose tensors only go to later devices (every throughput plan) has one stage per device
it uses, in device order. A latency plan may come back to a device (phone -> server -> phone):
then that device has one stage per visit, named ``phone``, ``phone#2``, ...
(:func:`dnnsplit.partition.visits.visits`), and the executor runs a device's stages one at a time.

Each stage is a new functional model that re-calls the original layers (weights are shared, not
copied) on fresh ``keras.Input`` tensors for everything it receives: model inputs, tensors
from earlier stages, and tensors that merely pass through. Nested models are already flattened
by the task graph, so a stage can start or end inside one.

A frame travels as a dict ``(node, output index) -> array``: each stage reads its inputs from
it and adds its outputs; tensors a later stage needs are forwarded by the pipeline, not
recomputed.

>>> stages = build_stages(model, plan)                  # doctest: +SKIP
>>> [s.device for s in stages], stages[0].input_keys     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dnnsplit.partition.visits import visits
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.keras_env import import_keras
from dnnsplit.predictor.model_graph import TaskGraph

Key = tuple[str, int]


class PlanMismatchError(DnnsplitError):
    """The plan was made for another model (names, edges or tensor sizes differ)."""


@dataclass
class Stage:
    device: str
    nodes: list[str]
    input_keys: list[Key]
    output_keys: list[Key]
    model: Any  # keras.Model taking input_keys (in order) and returning output_keys
    #: the stage holds model inputs only (its device runs no layer): it forwards them
    forwards_only: bool = False
    #: its name in timings and errors: the device, ``device#2`` for a second visit, ...
    name: str = ""

    def __post_init__(self):
        self.name = self.name or self.device

    def __call__(self, values: Mapping[Key, Any]):
        """Run on a frame's values; returns the new values (backend tensors)."""
        ops = import_keras().ops
        outputs = self.model([ops.convert_to_tensor(values[k]) for k in self.input_keys],
                             training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(self.output_keys, outputs))


def check_plan_matches(tg: TaskGraph, plan) -> None:
    """Refuse a plan whose nodes, edges or tensor sizes are not the model's."""
    problem = plan.problem
    model_nodes, plan_nodes = set(tg.nodes), set(problem.nodes)
    if model_nodes != plan_nodes:
        missing = sorted(plan_nodes - model_nodes)[:3]
        extra = sorted(model_nodes - plan_nodes)[:3]
        raise PlanMismatchError(
            f"the plan does not match model {tg.name!r}: "
            + (f"plan nodes not in the model: {missing} " if missing else "")
            + (f"model nodes not in the plan: {extra}" if extra else "")
            + " — make the plan for this model with `partition plan`")
    if set(map(tuple, problem.edges)) != set(tg.graph.edges):
        raise PlanMismatchError(f"the plan's edges differ from model {tg.name!r}'s graph")
    for node in tg.nodes:
        if tg.graph.nodes[node]["output_bytes"] != problem.output_bytes[node]:
            raise PlanMismatchError(
                f"node {node!r} outputs {tg.graph.nodes[node]['output_bytes']} bytes in the "
                f"model but {problem.output_bytes[node]} in the plan (another input shape or "
                "batch size?)")


def build_stages(model, plan, tg: TaskGraph | None = None) -> list[Stage]:
    """Stage sub-models in running order (:func:`dnnsplit.partition.visits.visits`; unused devices
    left out)."""
    keras = import_keras()
    tg = tg or TaskGraph.from_keras(model)
    check_plan_matches(tg, plan)
    plan_stages = visits(tg.nodes, tg.graph.edges, plan.assignment, plan.problem.devices)
    stage_of = {n: i for i, (_, nodes) in enumerate(plan_stages) for n in nodes}
    needed_later: dict[Key, int] = {}  # key -> the last stage that reads it
    for node in tg.nodes:
        for source in tg.graph.nodes[node]["sources"]:
            needed_later[source] = max(needed_later.get(source, -1), stage_of[node])
    final = {k: len(plan_stages) for k in tg.output_sources}
    model_inputs = set(tg.input_nodes)
    stages = []
    seen: dict[str, int] = {}  # device -> its visits so far
    for index, (device, nodes) in enumerate(plan_stages):
        seen[device] = seen.get(device, 0) + 1
        name = device if seen[device] == 1 else f"{device}#{seen[device]}"
        values: dict[Key, Any] = {}
        input_keys: list[Key] = []
        inputs = []

        def value_of(key: Key, like) -> Any:
            if key not in values:
                tensor = keras.Input(shape=tuple(like.shape[1:]), batch_size=like.shape[0],
                                     dtype=like.dtype)
                values[key] = tensor
                input_keys.append(key)
                inputs.append(tensor)
            return values[key]

        for node in nodes:
            data = tg.graph.nodes[node]
            knode = data["keras_node"]
            if knode.is_input:
                value_of((node, 0), knode.outputs[0])
                continue
            feed = {}
            for tensor, key in zip(knode.input_tensors, data["sources"]):
                feed[id(tensor)] = value_of(key, tensor)
            args, kwargs = knode.arguments.fill_in(feed)
            outputs = knode.operation(*args, **kwargs)
            flat = keras.tree.flatten(outputs)
            for i, out in enumerate(flat):
                values[(node, i)] = out
        # the model inputs held here leave this stage like its layers' outputs (on a link to
        # the devices that read them; a stage of inputs alone just forwards them)
        held_inputs = [n for n in nodes if n in model_inputs]
        produced = [(n, 0) for n in held_inputs] + [k for k in values if k not in input_keys]
        # tensors only passing through are carried by the frame, not by the stage model
        output_keys = [k for k in produced
                       if max(needed_later.get(k, -1), final.get(k, -1)) > index]
        sub = keras.Model(inputs, [values[k] for k in output_keys],
                          name=f"stage_{device}" + (f"_{seen[device]}" if seen[device] > 1
                                                    else ""))
        stages.append(Stage(device, nodes, input_keys, output_keys, sub,
                            forwards_only=len(held_inputs) == len(nodes), name=name))
    return stages


def model_input_keys(tg: TaskGraph) -> list[Key]:
    return [(n, 0) for n in tg.input_nodes]


def run_sequential(stages: Sequence[Stage], tg: TaskGraph, frame: Sequence[Any]) -> list[Any]:
    """One frame through all stages in order, on the calling thread (a reference run)."""
    values: dict[Key, Any] = dict(zip(model_input_keys(tg), frame))
    for stage in stages:
        values.update(stage(values))
    return [values[k] for k in tg.output_sources]
