"""Split a layer's output channels into parts, so that a plan can put them on different devices.

A model's layers are the planner's smallest units: when one layer is a large share of the
model (VGG16's 3x3 convolutions are about 11% each), no split of whole layers balances two
devices. ``split_layers`` rewrites a functional model so that each named ``Conv2D`` or
``Dense`` layer becomes ``parts`` layers with a share of its filters (units) each, named
``<layer>_part0``, ``<layer>_part1``, ..., joined by a ``Concatenate`` that takes the layer's
name: every other node keeps its name and the outputs are those of the original model (same
weights, sliced; the activation is applied per channel, so it commutes with the slicing).
The parts are independent nodes of the task graph, so the planner can put them on different
devices.

>>> model = split_layers(load_model("VGG16"), {"block3_conv3": 2})    # doctest: +SKIP
>>> [l.name for l in model.layers][9:12]                              # doctest: +SKIP
['block3_conv3_part0', 'block3_conv3_part1', 'block3_conv3']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.keras_env import import_keras

#: Activations that act on each channel alone (so slicing the channels commutes with them).
CHANNELWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish",
    "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "tanh", "softplus", "softsign",
    "exponential", "mish", "celu", "log_sigmoid", "hard_tanh"})
SPLITTABLE_TYPES = ("Conv2D", "Dense")


class LayerSplitError(DnnsplitError):
    """A layer that cannot be split as asked (unknown, not Conv2D/Dense, too few channels)."""


def parse_layer_splits(texts) -> dict[str, int]:
    """``["block3_conv3", "fc1:4"]`` -> ``{"block3_conv3": 2, "fc1": 4}`` (2 parts by default).

    >>> parse_layer_splits(["block3_conv3", "fc1:4"])
    {'block3_conv3': 2, 'fc1': 4}
    """
    splits: dict[str, int] = {}
    for text in texts:
        name, sep, parts = str(text).rpartition(":")
        if not sep:
            name, parts = str(text), "2"
        try:
            count = int(parts)
        except ValueError:
            raise LayerSplitError(f"--split-layer {text!r}: give LAYER or LAYER:PARTS, "
                                  "PARTS a whole number >= 2") from None
        if not name or count < 2:
            raise LayerSplitError(f"--split-layer {text!r}: give LAYER or LAYER:PARTS, "
                                  "PARTS a whole number >= 2")
        splits[name] = count
    return splits


def splittable(layer) -> bool:
    """Whether :func:`split_layers` can split ``layer`` (Conv2D without groups, or Dense, with
    a per-channel activation)."""
    if type(layer).__name__ not in SPLITTABLE_TYPES:
        return False
    config = layer.get_config()
    activation = config.get("activation", "linear")
    return (isinstance(activation, str) and activation in CHANNELWISE_ACTIVATIONS
            and config.get("groups", 1) == 1)


def split_layers(model, splits: Mapping[str, int]):
    """A copy of functional ``model`` with each layer in ``splits`` cut into that many parts.

    Layers not split are shared with ``model`` (same weight variables); the parts get slices
    of the split layer's weights. Raises :class:`LayerSplitError` for a name that is not a
    top-level layer of the model, a layer that is not a splittable Conv2D / Dense (grouped
    convolution, an activation across channels such as softmax), or more parts than channels.
    """
    if not splits:
        return model
    keras = import_keras()
    if isinstance(model, keras.Sequential):  # clone_model rewrites calls in functional ones
        try:
            model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
        except (AttributeError, IndexError, ValueError) as exc:
            raise LayerSplitError(f"cannot split layers of Sequential model {model.name!r} "
                                  "without a known input shape: start it with keras.Input"
                                  ) from exc
    by_name = {layer.name: layer for layer in model.layers}
    for name, parts in splits.items():
        layer = by_name.get(name)
        if layer is None:
            raise LayerSplitError(f"model {model.name!r} has no top-level layer {name!r} to "
                                  "split (see `partition graph MODEL --json` for its nodes)")
        if not splittable(layer):
            raise LayerSplitError(
                f"layer {name!r} ({type(layer).__name__}) cannot be split: only Conv2D "
                "(groups 1) and Dense layers with a per-channel activation (not softmax) can")
        if parts > _channels(layer):
            raise LayerSplitError(f"layer {name!r} has {_channels(layer)} output channels, "
                                  f"fewer than the {parts} parts asked")
        taken = {f"{name}_part{i}" for i in range(parts)} & set(by_name)
        if taken:
            raise LayerSplitError(f"cannot split {name!r}: the model already has layers "
                                  f"named {sorted(taken)}")

    def call(layer, *args, **kwargs):
        if layer.name not in splits:
            return layer(*args, **kwargs)
        parts = _parts(layer, splits[layer.name], args[0].shape)
        pieces = [part(*args, **kwargs) for part in parts]
        axis = 1 if layer.get_config().get("data_format") == "channels_first" else -1
        return keras.layers.Concatenate(axis=axis, name=layer.name)(pieces)

    try:
        return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                        call_function=call)
    except ValueError as exc:  # e.g. a subclassed model
        raise LayerSplitError(f"cannot rewrite model {model.name!r} to split layers: "
                              f"{str(exc).splitlines()[0][:200]}") from exc


def _channels(layer) -> int:
    config = layer.get_config()
    return int(config["filters"] if "filters" in config else config["units"])


def _parts(layer, parts: int, input_shape) -> list:
    """``parts`` new layers like ``layer``, each with a contiguous share of its channels."""
    config = layer.get_config()
    key = "filters" if "filters" in config else "units"
    bounds = np.linspace(0, config[key], parts + 1).round().astype(int)
    weights = layer.get_weights()  # kernel (..., channels) [, bias (channels,)]
    result = []
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = type(layer).from_config(dict(config, name=f"{layer.name}_part{i}",
                                            **{key: int(stop - start)}))
        part.build(input_shape)
        part.set_weights([w[..., start:stop] for w in weights])
        result.append(part)
    return result


def layers_at_boundaries(model, plan) -> list[str]:
    """Splittable layers of ``model`` next to each boundary between consecutive stages of
    ``plan``: the last one of the earlier stage and the first one of the later (running order),
    leaving out layers the plan already splits. Splitting one of them lets its parts straddle
    the boundary."""
    by_name = {layer.name: layer for layer in model.layers}
    done = set(plan.layer_splits)

    def first_splittable(nodes):
        return next((n for n in nodes if n in by_name and n not in done
                     and splittable(by_name[n])), None)

    found: list[str] = []
    stages = plan.stages
    for earlier, later in zip(stages, stages[1:]):
        for name in (first_splittable(reversed(earlier["nodes"])),
                     first_splittable(later["nodes"])):
            if name is not None and name not in found:
                found.append(name)
    return found


def plan_with_layer_splits(model, make_plan, parts: int = 2, rounds: int | None = None,
                           min_gain: float = 0.02):
    """The best plan found by splitting layers at stage boundaries into ``parts``: returns
    ``(plan, model)``, the plan (its ``layer_splits`` set) and the model it was made for.

    ``make_plan(model) -> Plan`` plans one model (e.g. dp on its predicted costs). Greedy:
    each round tries every layer :func:`layers_at_boundaries` names on the best plan so far
    and keeps the split that lowers the plan's objective most, if by more than ``min_gain``
    (a split adds a concatenation and traffic that the prediction may miss); ``rounds``
    defaults to one per boundary (devices - 1).

    >>> plan, split_model = plan_with_layer_splits(vgg16, make_plan)      # doctest: +SKIP
    >>> plan.layer_splits                                                 # doctest: +SKIP
    {'block3_conv3': 2}
    """
    best_plan, best_model = make_plan(model), model
    splits: dict[str, int] = {}
    for _ in range(rounds if rounds is not None else len(best_plan.problem.devices) - 1):
        improved = None
        for name in layers_at_boundaries(model, best_plan.with_layer_splits(splits)):
            trial = dict(splits, **{name: parts})
            candidate_model = split_layers(model, trial)
            candidate = make_plan(candidate_model)
            target = (improved[0] if improved else best_plan).value
            if candidate.value < target * (1 - (0 if improved else min_gain)):
                improved = (candidate, candidate_model, trial)
        if improved is None:
            break
        best_plan, best_model, splits = improved
    return best_plan.with_layer_splits(splits), best_model
