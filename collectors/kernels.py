"""A kernel configuration to measure: layers (type + cost-driving config) and input shapes.

It round-trips through JSON (stored in every record, so any row can be measured again), has a
stable key (resume and de-duplication), and builds a one-kernel Keras model.

>>> k = KernelConfig.of([("Conv2D", {"filters": 64, "kernel_size": (3, 3), "padding": "same"}),
...                      ("BatchNormalization", {}), ("Activation", {"activation": "relu"})],
...                     [(1, 56, 56, 64)])
>>> k.pattern
'Conv2D+BatchNormalization+Activation'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.features import LayerSpec
from dnnsplit.predictor.fusion import OPS_AS_LAYERS, kernel_record
from dnnsplit.predictor.keras_env import import_keras

#: Config fields never passed back to a layer constructor.
_DROP = {"name", "trainable", "dtype"}
#: Merge layers that a model can also call with a constant operand (MobileNetV3's hard
#: sigmoid: ``x + 3``, ``x * (1/6)``), and the op that does it.
_CONSTANT_MERGES = {"Add": "add", "Multiply": "multiply", "Subtract": "subtract"}
#: The constant of such a kernel (its value does not change the cost; 0 or 1 could be
#: optimised away by the graph compiler).
_CONSTANT = 0.5
#: Layers called with their input tensors as separate arguments.
_SEPARATE_ARGUMENTS = {"MultiHeadAttention"}
#: Layers whose inputs are integers (token ids; random ones stay below the vocabulary).
_INTEGER_INPUTS = {"Embedding"}


class KernelError(DnnsplitError):
    """A kernel configuration cannot be built."""


@dataclass(frozen=True)
class KernelConfig:
    layers: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    input_shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, layers: Iterable[tuple[str, Mapping[str, Any]]],
           input_shapes: Iterable[Sequence[int]]) -> "KernelConfig":
        norm = tuple((OPS_AS_LAYERS.get(t, t), tuple(sorted((k, _plain(v)) for k, v in
                                                            cfg.items() if k not in _DROP)))
                     for t, cfg in layers)
        return cls(norm, tuple(tuple(int(d) for d in s) for s in input_shapes))

    @classmethod
    def from_json(cls, text: str) -> "KernelConfig":
        try:
            data = json.loads(text)
            return cls.of([(layer["type"], layer["config"]) for layer in data["layers"]],
                          data["input_shapes"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise KernelError(f"malformed kernel configuration {text[:80]!r}: {exc}") from None

    @classmethod
    def from_specs(cls, specs: Sequence[LayerSpec]) -> "KernelConfig":
        """The kernel of consecutive task-graph nodes (their LayerSpecs)."""
        return cls.of([(s.layer_type, s.config) for s in specs], specs[0].input_shapes)

    def to_json(self) -> str:
        return json.dumps({"layers": [{"type": t, "config": dict(cfg)} for t, cfg in self.layers],
                           "input_shapes": [list(s) for s in self.input_shapes]},
                          sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]

    @property
    def pattern(self) -> str:
        return "+".join(t for t, _ in self.layers)

    @property
    def layer_type(self) -> str:
        return self.layers[0][0]

    def build(self):
        """A Keras model running exactly this kernel on inputs of ``input_shapes``."""
        keras = import_keras()
        dtype = "int32" if self.layer_type in _INTEGER_INPUTS else "float32"
        inputs = [keras.Input(shape=s[1:], batch_size=s[0], dtype=dtype)
                  for s in self.input_shapes]
        x = inputs[0] if len(inputs) == 1 else inputs
        try:
            for layer_type, cfg in self.layers:
                if layer_type in _CONSTANT_MERGES and not isinstance(x, list):
                    # one tensor input: the other operand was a constant in the model
                    x = getattr(keras.ops, _CONSTANT_MERGES[layer_type])(x, _CONSTANT)
                    continue
                cls = getattr(keras.layers, layer_type, None)
                if cls is None:
                    raise KernelError(f"{layer_type} is not a keras.layers class: cannot be "
                                      "benchmarked on its own")
                layer = cls(**{k: _arg(v) for k, v in cfg})
                # attention takes its tensors as arguments (query, value[, key]), not a list
                x = layer(*x) if layer_type in _SEPARATE_ARGUMENTS else layer(x)
        except (TypeError, ValueError) as exc:
            raise KernelError(f"cannot build kernel {self.pattern} on {self.input_shapes}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
        return keras.Model(inputs, x)

    def record(self, model=None) -> dict[str, Any]:
        """Spec columns of the kernel (see :func:`dnnsplit.predictor.fusion.kernel_record`)."""
        model = model or self.build()
        batch = self.input_shapes[0][0]
        layers = [op for op in model.operations if type(op).__name__ != "InputLayer"]
        return kernel_record([LayerSpec.from_layer(layer, batch_size=batch)
                              for layer in layers])


def _plain(value):
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _arg(value):
    return list(value) if isinstance(value, tuple) else value

