"""What a layer is, as far as its cost goes: :class:`LayerSpec`.

A spec is extracted from any built Keras 3 layer (or bare ``keras.ops`` call in a functional
graph): its type, input and output shapes (batch filled in), the config fields that drive its
cost, FLOPs, parameters and bytes moved. Layer types without a dedicated FLOPs rule still get a
spec (bytes, one operation per output element) with ``modelled=False``; each such type is logged
once, never raised.

>>> import keras
>>> layer = keras.layers.Conv2D(8, 3, padding="same")
>>> _ = layer(keras.Input((16, 16, 4)))
>>> spec = LayerSpec.from_layer(layer)
>>> spec.flops == 2 * 16 * 16 * 8 * (3 * 3 * 4) + 16 * 16 * 8
True

The flat record written to every measurement CSV is :meth:`LayerSpec.to_record` followed by the
measurement columns; all columns are documented in :data:`RECORD_COLUMNS`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dnnsplit.predictor.errors import SpecError

log = logging.getLogger("dnnsplit")

Shape = tuple[int, ...]

#: Config fields that drive a layer's cost; all others (initialisers, names, ...) are dropped.
COST_CONFIG_FIELDS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "dilation_rate",
    "groups",
    "depth_multiplier",
    "activation",
    "units",
    "pool_size",
    "axis",
    "size",
    "interpolation",
    "cropping",
    "use_bias",
    "keepdims",
    "data_format",
    "max_value",
    "negative_slope",
    "target_shape",
    # attention, einsum and embedding layers (transformers)
    "num_heads",
    "key_dim",
    "value_dim",
    "equation",
    "output_shape",
    "bias_axes",
    "input_dim",
    "output_dim",
    # not cost-driving, but needed to rebuild the layer for a benchmark
    "rate",
    "dims",
    "scale",
    "offset",
)

#: Columns of the flat spec part of a record, in order, with their meaning.
SPEC_COLUMNS: dict[str, str] = {
    "layer_type": "Keras class name of the layer; 'ops.<Name>' for a bare keras.ops call",
    "batch": "batch size the shapes were computed for",
    "n_inputs": "number of input tensors",
    "in_shape": "first input shape, dims joined by 'x' (batch included)",
    "out_shape": "first output shape, dims joined by 'x' (batch included)",
    "in_h": "first input height (1 for rank-2/3 tensors)",
    "in_w": "first input width (sequence length for rank-3 tensors)",
    "in_c": "first input channels (last axis)",
    "out_h": "first output height",
    "out_w": "first output width",
    "out_c": "first output channels",
    "filters": "conv filters (0 if none)",
    "kernel_h": "kernel height (0 if none)",
    "kernel_w": "kernel width (0 if none)",
    "stride_h": "stride height (0 if none)",
    "stride_w": "stride width (0 if none)",
    "dilation": "largest dilation rate (0 if none)",
    "groups": "conv groups; attention heads (1 if none)",
    "depth_multiplier": "depthwise multiplier (0 if none)",
    "padding": "'same', 'valid', 'causal' or '' ",
    "activation": "fused activation function name ('' if none)",
    "units": "dense units; attention key size; embedding size (0 if none)",
    "pool_h": "pool / upsampling height (0 if none)",
    "pool_w": "pool / upsampling width (0 if none)",
    "use_bias": "1 if the layer adds a bias",
    "flops": "floating-point operations (a multiply-add counts 2)",
    "params": "number of weights",
    "input_bytes": "bytes of all inputs",
    "output_bytes": "bytes of all outputs",
    "modelled": "1 if a dedicated FLOPs rule exists for this type",
}

#: Columns a collector appends to the spec columns for each measured kernel.
MEASUREMENT_COLUMNS: dict[str, str] = {
    "fused_pattern": "kernel measured, layer types joined by '+', e.g. 'Conv2D+BatchNormalization'",
    "kernel_key": "hash of kernel_config (with load_target: the row's identity when resuming)",
    "kernel_config": "JSON of the kernel's layers and input shapes (rebuilds it exactly)",
    "load_target": "background load fraction asked for (0..1)",
    "device_profile": "name of the (hardware, backend, threads) triple, e.g. cpu-1t-tensorflow",
    "backend": "Keras backend (tensorflow, jax)",
    "keras_version": "keras.__version__",
    "threads": "intra-op threads",
    "load": "background load fraction observed while measuring (0..1)",
    "ref_probe_ms": "reference probe time measured in the same window",
    "repeats": "number of timed repeats",
    "overhead_ms": "median time of the empty call subtracted from every timing",
    "median_ms": "median time, empty-call overhead subtracted",
    "p10_ms": "10th percentile time",
    "p90_ms": "90th percentile time",
    "timestamp": "UTC time of the measurement, ISO 8601",
}

#: Record columns that hold text; every other column holds a number.
TEXT_COLUMNS = frozenset({"layer_type", "in_shape", "out_shape", "padding", "activation",
                          "fused_pattern", "kernel_key", "kernel_config", "device_profile",
                          "backend", "keras_version", "timestamp"})

#: Every column of a measurement record, in order: the data contract between packages.
RECORD_COLUMNS: dict[str, str] = {**SPEC_COLUMNS, **MEASUREMENT_COLUMNS}
#: Record columns that must hold a number (read_rows checks them, naming file and line).
NUMERIC_COLUMNS = tuple(c for c in RECORD_COLUMNS if c not in TEXT_COLUMNS)

#: Operations per element for element-wise and normalisation layers.
ELEMENTWISE_OPS_PER_ELEMENT: dict[str, float] = {
    "BatchNormalization": 2,
    "LayerNormalization": 5,
    "GroupNormalization": 5,
    "UnitNormalization": 3,
    "Normalization": 2,
    "Rescaling": 2,
    "LayerScale": 1,
    "CustomScaleLayer": 2,
    "ReLU": 1,
    "LeakyReLU": 2,
    "PReLU": 2,
    "ELU": 3,
    "Softmax": 3,
    "ops.Relu": 1,
    "ops.Relu6": 2,
    "ops.Sigmoid": 4,
    "ops.Silu": 5,
    "ops.HardSilu": 4,
    "ops.HardSigmoid": 3,
    "ops.Gelu": 8,
    "ops.Tanh": 5,
    "ops.Softmax": 3,
}

#: Operations per element of each activation function (used by Activation and fused activations).
ACTIVATION_OPS_PER_ELEMENT: dict[str, float] = {
    "linear": 0,
    "relu": 1,
    "relu6": 2,
    "leaky_relu": 2,
    "elu": 3,
    "selu": 4,
    "sigmoid": 4,
    "hard_sigmoid": 3,
    "tanh": 5,
    "swish": 5,
    "silu": 5,
    "hard_swish": 4,
    "hard_silu": 4,
    "gelu": 8,
    "softmax": 3,
    "log_softmax": 4,
    "softplus": 3,
    "softsign": 3,
    "exponential": 1,
    "mish": 7,
}

#: Element-wise n-ary merges: (n_inputs - 1) operations per output element.
MERGE_TYPES = frozenset(
    {
        "Add",
        "Subtract",
        "Multiply",
        "Maximum",
        "Minimum",
        "ops.Add",
        "ops.Subtract",
        "ops.Multiply",
        "ops.Divide",
        "ops.Maximum",
        "ops.Minimum",
    }
)

#: Types that only move or reshape data: zero FLOPs, cost is bytes.
DATA_MOVEMENT_TYPES = frozenset(
    {
        "InputLayer",
        "Concatenate",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "Reshape",
        "Flatten",
        "Permute",
        "RepeatVector",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        "Identity",
        "ActivityRegularization",
        "ops.Concatenate",
        "ops.Reshape",
        "ops.Transpose",
        "ops.ExpandDims",
        "ops.Squeeze",
        "Embedding",  # a gather: its cost is the bytes it moves
    }
)


@dataclass(frozen=True)
class LayerSpec:
    """Cost-relevant description of one layer call (shapes include the batch dimension)."""

    layer_type: str
    name: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    config: dict[str, Any] = field(default_factory=dict)
    flops: int = 0
    params: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    modelled: bool = True

    @classmethod
    def from_layer(cls, layer, batch_size: int = 1) -> "LayerSpec":
        """Spec of a built layer from its first call (use :meth:`from_call` for later calls)."""
        nodes = getattr(layer, "_inbound_nodes", None)
        if not nodes:
            raise SpecError(
                f"layer {layer.name!r} has never been called on a tensor: call it on a "
                "keras.Input (or build the model) before asking for its spec"
            )
        node = nodes[0]
        return cls.from_call(layer, node.input_tensors, node.outputs, batch_size=batch_size)

    @classmethod
    def from_call(
        cls,
        operation,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        batch_size: int = 1,
        name: str | None = None,
    ) -> "LayerSpec":
        """Spec of one call of ``operation`` on symbolic ``inputs`` giving ``outputs``."""
        layer_type = operation_type(operation)
        in_shapes = tuple(_concrete_shape(t, batch_size, operation) for t in inputs)
        out_shapes = tuple(_concrete_shape(t, batch_size, operation) for t in outputs)
        config = _cost_config(operation)
        flops, modelled = _flops(layer_type, in_shapes, out_shapes, config)
        if not modelled:
            _report_unmodelled(layer_type)
        return cls(
            layer_type=layer_type,
            name=name or operation.name,
            input_shapes=in_shapes,
            output_shapes=out_shapes,
            config=config,
            flops=int(round(flops)),
            params=_count_params(operation),
            input_bytes=sum(_nbytes(s, t) for s, t in zip(in_shapes, inputs)),
            output_bytes=sum(_nbytes(s, t) for s, t in zip(out_shapes, outputs)),
            modelled=modelled,
        )

    def to_record(self) -> dict[str, Any]:
        """Flat dict with exactly the keys of :data:`SPEC_COLUMNS`."""
        cfg = self.config
        first_in = self.input_shapes[0] if self.input_shapes else ()
        first_out = self.output_shapes[0] if self.output_shapes else ()
        in_h, in_w, in_c = _hwc(first_in)
        out_h, out_w, out_c = _hwc(first_out)
        kernel = _pair(cfg.get("kernel_size"))
        strides = _pair(cfg.get("strides"))
        pool = _pair(cfg.get("pool_size") or cfg.get("size"))
        dilation = cfg.get("dilation_rate")
        record = {
            "layer_type": self.layer_type,
            "batch": first_in[0] if first_in else (first_out[0] if first_out else 1),
            "n_inputs": len(self.input_shapes),
            "in_shape": "x".join(map(str, first_in)),
            "out_shape": "x".join(map(str, first_out)),
            "in_h": in_h,
            "in_w": in_w,
            "in_c": in_c,
            "out_h": out_h,
            "out_w": out_w,
            "out_c": out_c,
            "filters": int(cfg.get("filters") or 0),
            "kernel_h": kernel[0],
            "kernel_w": kernel[1],
            "stride_h": strides[0],
            "stride_w": strides[1],
            "dilation": max(_as_tuple(dilation)) if dilation else 0,
            "groups": int(cfg.get("groups") or cfg.get("num_heads") or 1),
            "depth_multiplier": int(cfg.get("depth_multiplier") or 0),
            "padding": str(cfg.get("padding") or ""),
            "activation": _activation_name(cfg),
            "units": int(cfg.get("units") or cfg.get("key_dim") or cfg.get("output_dim") or 0),
            "pool_h": pool[0],
            "pool_w": pool[1],
            "use_bias": int(bool(cfg.get("use_bias", False))),
            "flops": self.flops,
            "params": self.params,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "modelled": int(self.modelled),
        }
        assert list(record) == list(SPEC_COLUMNS)
        return record


def operation_type(operation) -> str:
    """Type name used everywhere: the class name, prefixed 'ops.' for non-Layer operations."""
    from dnnsplit.predictor.keras_env import import_keras

    keras = import_keras()
    name = type(operation).__name__
    return name if isinstance(operation, keras.layers.Layer) else f"ops.{name}"


_REPORTED_UNMODELLED: set[str] = set()


def _report_unmodelled(layer_type: str) -> None:
    if layer_type not in _REPORTED_UNMODELLED:
        _REPORTED_UNMODELLED.add(layer_type)
        log.warning(
            "layer type %s has no FLOPs rule: estimated as one operation per output element",
            layer_type,
        )


def _concrete_shape(tensor, batch_size: int, operation) -> Shape:
    shape = tuple(tensor.shape)
    if shape and shape[0] is None:
        shape = (batch_size,) + shape[1:]
    if any(d is None for d in shape):
        raise SpecError(
            f"{operation.name!r} has a tensor of unknown shape {tuple(tensor.shape)}: build the "
            "model with a fixed input shape (e.g. input_shape=(224, 224, 3))"
        )
    return tuple(int(d) for d in shape)


def _nbytes(shape: Shape, tensor) -> int:
    return int(math.prod(shape)) * dtype_size(getattr(tensor, "dtype", None))


def dtype_size(dtype) -> int:
    """Bytes per element of a Keras dtype name (float32 when unknown)."""
    import numpy as np

    try:
        return np.dtype(str(dtype or "float32")).itemsize
    except TypeError:  # e.g. bfloat16 without ml_dtypes registered
        return 2 if "16" in str(dtype) else 4


def tensor_nbytes(tensor, batch_size: int = 1) -> int:
    """Bytes of a symbolic tensor with its batch dimension set to ``batch_size``."""
    shape = tuple(tensor.shape)
    if shape and shape[0] is None:
        shape = (batch_size,) + shape[1:]
    if any(d is None for d in shape):
        raise SpecError(f"tensor of unknown shape {tuple(tensor.shape)}: fix the input shape")
    return _nbytes(shape, tensor)


def _count_params(operation) -> int:
    count = getattr(operation, "count_params", None)
    if count is None:
        return 0
    try:
        return int(count())
    except ValueError:  # unbuilt layer
        return 0


def _cost_config(operation) -> dict[str, Any]:
    try:
        full = operation.get_config()
    except (NotImplementedError, AttributeError, TypeError):
        full = {}
    config = {}
    for key in COST_CONFIG_FIELDS:
        value = full.get(key, getattr(operation, key, None))
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, dict):  # a serialised activation or initialiser
            value = value.get("config", {}).get("name") or value.get("class_name")
        if not isinstance(value, (int, float, str, bool, tuple)):
            value = getattr(value, "__name__", str(value))
        config[key] = value
    return config


def _activation_name(config: dict[str, Any]) -> str:
    act = config.get("activation")
    return "" if act in (None, "linear") else str(act)


def _as_tuple(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (int, float)):
        return (int(value),)
    return tuple(int(v) for v in value)


def _pair(value) -> tuple[int, int]:
    values = _as_tuple(value)
    if not values:
        return (0, 0)
    if len(values) == 1:
        return (values[0], values[0]) if isinstance(value, (int, float)) else (1, values[0])
    return (values[-2], values[-1])


def _hwc(shape: Shape) -> tuple[int, int, int]:
    if len(shape) >= 4:
        return (int(math.prod(shape[1:-2])), shape[-2], shape[-1])
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 2:
        return (1, 1, shape[1])
    return (1, 1, 1)


def _channels_last(config) -> bool:
    return config.get("data_format", "channels_last") != "channels_first"


def _channels(shape: Shape, config) -> int:
    return shape[-1] if _channels_last(config) else shape[1]


def _spatial(shape: Shape, config) -> int:
    return int(math.prod(shape[1:-1] if _channels_last(config) else shape[2:]))


def _bias_and_activation(out_elems: int, config) -> float:
    extra = out_elems if config.get("use_bias", False) else 0
    act = config.get("activation") or "linear"
    return extra + out_elems * ACTIVATION_OPS_PER_ELEMENT.get(str(act), 1)


FlopsRule = Callable[[tuple[Shape, ...], tuple[Shape, ...], dict], float]


def _conv(ins, outs, cfg) -> float:
    kernel = math.prod(_as_tuple(cfg["kernel_size"]))
    groups = int(cfg.get("groups") or 1)
    out = math.prod(outs[0])
    return 2 * out * kernel * _channels(ins[0], cfg) / groups + _bias_and_activation(out, cfg)


def _depthwise(ins, outs, cfg) -> float:
    kernel = math.prod(_as_tuple(cfg["kernel_size"]))
    out = math.prod(outs[0])
    return 2 * out * kernel + _bias_and_activation(out, cfg)


def _separable(ins, outs, cfg) -> float:
    kernel = math.prod(_as_tuple(cfg["kernel_size"]))
    cin = _channels(ins[0], cfg)
    mult = int(cfg.get("depth_multiplier") or 1)
    positions = outs[0][0] * _spatial(outs[0], cfg)
    out = math.prod(outs[0])
    depthwise = 2 * positions * cin * mult * kernel
    pointwise = 2 * out * cin * mult
    return depthwise + pointwise + _bias_and_activation(out, cfg)


def _conv_transpose(ins, outs, cfg) -> float:
    kernel = math.prod(_as_tuple(cfg["kernel_size"]))
    cout = _channels(outs[0], cfg)
    out = math.prod(outs[0])
    return 2 * math.prod(ins[0]) * kernel * cout + _bias_and_activation(out, cfg)


def _dense(ins, outs, cfg) -> float:
    out = math.prod(outs[0])
    return 2 * out * ins[0][-1] + _bias_and_activation(out, cfg)


def _pool(ins, outs, cfg) -> float:
    return math.prod(outs[0]) * math.prod(_as_tuple(cfg["pool_size"]))


def _global_pool(ins, outs, cfg) -> float:
    return math.prod(ins[0])


def _activation(ins, outs, cfg) -> float:
    return math.prod(outs[0]) * ACTIVATION_OPS_PER_ELEMENT.get(str(cfg.get("activation")), 1)


def _upsampling(ins, outs, cfg) -> float:
    nearest = cfg.get("interpolation", "nearest") == "nearest"
    return 0 if nearest else 4 * math.prod(outs[0])


def _merge(ins, outs, cfg) -> float:
    return (len(ins) - 1) * math.prod(outs[0]) if len(ins) > 1 else math.prod(outs[0])


def _average(ins, outs, cfg) -> float:
    return len(ins) * math.prod(outs[0])


def _multi_head_attention(ins, outs, cfg) -> float:
    """Projections of query, key and value, scores, softmax, weighted sum, output projection
    (key = value when not given)."""
    query, value = ins[0], ins[1] if len(ins) > 1 else ins[0]
    key = ins[2] if len(ins) > 2 else value
    batch, tq, tv = query[0], math.prod(query[1:-1]), math.prod(value[1:-1])
    heads, kd = int(cfg["num_heads"]), int(cfg["key_dim"])
    vd = int(cfg.get("value_dim") or kd)
    projections = 2 * batch * heads * (tq * query[-1] * kd + tv * key[-1] * kd
                                       + tv * value[-1] * vd)
    attention = 2 * batch * heads * tq * tv * (kd + vd) + 3 * batch * heads * tq * tv
    output = 2 * batch * tq * heads * vd * outs[0][-1]
    return projections + attention + output


def _einsum_dense(ins, outs, cfg) -> float:
    """2 x every output element x the size of each contracted dimension of the input (the
    letters of the input that are not in the output; '...' the leading dimensions)."""
    equation = str(cfg.get("equation", ""))
    try:
        left, result = equation.replace(" ", "").split("->")
        subscripts = left.split(",")[0]
    except ValueError:
        return float(math.prod(outs[0]))
    letters = subscripts.replace("...", "")
    sizes = dict(zip(letters, ins[0][len(ins[0]) - len(letters):]))
    contracted = math.prod(sizes[c] for c in letters if c not in result)
    out = math.prod(outs[0])
    bias = out if cfg.get("bias_axes") else 0  # EinsumDense names its bias axes, not use_bias
    return 2 * out * contracted + bias + _bias_and_activation(out, cfg)


#: FLOPs rule per layer type (element-wise types are in ELEMENTWISE_OPS_PER_ELEMENT).
FLOPS_RULES: dict[str, FlopsRule] = {
    **{t: _conv for t in ("Conv1D", "Conv2D", "Conv3D")},
    **{t: _depthwise for t in ("DepthwiseConv1D", "DepthwiseConv2D")},
    **{t: _separable for t in ("SeparableConv1D", "SeparableConv2D")},
    **{t: _conv_transpose for t in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")},
    "Dense": _dense,
    **{
        f"{kind}Pooling{d}D": _pool
        for kind in ("Max", "Average")
        for d in (1, 2, 3)
    },
    **{
        f"Global{kind}Pooling{d}D": _global_pool
        for kind in ("Max", "Average")
        for d in (1, 2, 3)
    },
    "Activation": _activation,
    **{f"UpSampling{d}D": _upsampling for d in (1, 2, 3)},
    **{t: _merge for t in MERGE_TYPES},
    "Average": _average,
    "MultiHeadAttention": _multi_head_attention,
    "EinsumDense": _einsum_dense,
}


def _flops(layer_type, ins, outs, config) -> tuple[float, bool]:
    if layer_type in FLOPS_RULES:
        return FLOPS_RULES[layer_type](ins, outs, config), True
    if layer_type in ELEMENTWISE_OPS_PER_ELEMENT:
        per = ELEMENTWISE_OPS_PER_ELEMENT[layer_type]
        return per * sum(math.prod(s) for s in outs), True
    if layer_type in DATA_MOVEMENT_TYPES:
        return 0, True
    return sum(math.prod(s) for s in outs), False
