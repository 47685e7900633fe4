"""Parameter grids (data files, one per layer type) turned into kernel configurations.

A grid file ``collectors/grids/<LayerType>.json`` holds::

    {"layer_type": "Conv2D", "family": "conv", "random": 260, "seed": 7, "from_models": true,
     "max_gflops": 4, "space": {"hw": [7, 14, 28], "cin": {"values": [...], "weights": [...]}, ...},
     "extra": [{"why": "...", "random": 60, "seed": 8, "space": {"kernel": [2, 4, 6]},
                "params": [4e6, 16e6], "exclude_evaluation": true}]}

``space`` values are lists (uniform) or ``{"values", "weights"}``. ``random`` configurations are
drawn from the space (redrawn while a kernel exceeds ``max_gflops``, or while an ``extra`` block's
kernel has fewer or more weights than its optional ``params`` range; a block with
``exclude_evaluation`` never draws a kernel of an evaluation model), and with ``from_models``
the kernels of the *training* models (``collectors/data/model_split.json``) whose first layer
has this type are added as they are: the dataset is dense where real models are, and the
evaluation models never shape it.
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.files import read_json

MAX_KERNEL_GFLOPS = 4.0
GRID_DIR = Path(str(files("dnnsplit.collectors").joinpath("grids")))
FAMILIES = ("conv", "dense", "pool", "global_pool", "elementwise", "activation", "merge",
            "attention", "embedding", "einsum")


class GridError(DnnsplitError):
    """A grid file is malformed."""


@dataclass(frozen=True)
class Grid:
    layer_type: str
    family: str
    random: int
    seed: int
    from_models: bool
    space: Mapping[str, Any]
    max_gflops: float = MAX_KERNEL_GFLOPS
    extra: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> "Grid":
        path = Path(path)
        data = read_json(path, "grid file", GridError)
        try:
            grid = cls(str(data["layer_type"]), str(data["family"]), int(data["random"]),
                       int(data.get("seed", 0)), bool(data.get("from_models", True)),
                       dict(data["space"]), float(data.get("max_gflops", MAX_KERNEL_GFLOPS)),
                       tuple({"random": int(b["random"]), "seed": int(b.get("seed", 0)),
                              "space": dict(b["space"]),
                              "params": _params_range(b.get("params")),
                              "exclude_evaluation": bool(b.get("exclude_evaluation", False))}
                             for b in data.get("extra", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GridError(f"grid file {str(path)!r} is malformed: missing or bad {exc}") from None
        if grid.family not in FAMILIES:
            raise GridError(f"grid file {str(path)!r}: unknown family {grid.family!r} "
                            f"(one of {', '.join(FAMILIES)})")
        spaces = [grid.space] + [b["space"] for b in grid.extra]
        for key, spec in ((k, v) for space in spaces for k, v in space.items()):
            try:
                values, weights = _values(spec)
            except (KeyError, TypeError) as exc:
                raise GridError(f"grid file {str(path)!r}: space key {key!r} is malformed "
                                f"({exc})") from None
            if not values or (weights is not None and len(weights) != len(values)):
                raise GridError(f"grid file {str(path)!r}: space key {key!r} needs values "
                                "(and as many weights)")
        return grid


def _params_range(value) -> tuple[float, float] | None:
    """An ``extra`` block's ``params`` range [low, high] (weights of the kernel's layers)."""
    if value is None:
        return None
    low, high = (float(v) for v in value)
    if not 0 <= low < high:
        raise ValueError(f"params range {value} (give [low, high], 0 <= low < high)")
    return low, high


def load_grids(grid_dir: str | Path | None = None,
               types: Sequence[str] | None = None) -> list[Grid]:
    grid_dir = Path(grid_dir) if grid_dir else GRID_DIR
    if not grid_dir.is_dir():
        raise GridError(f"grid folder {str(grid_dir)!r} does not exist")
    available = {p.stem: p for p in sorted(grid_dir.glob("*.json"))}
    wanted = list(types) if types else list(available)
    missing = [t for t in wanted if t not in available]
    if missing:
        raise GridError(f"no grid file for {', '.join(missing)} in {grid_dir} "
                        f"(have: {', '.join(available)})")
    return [Grid.load(available[t]) for t in wanted]


def _values(spec) -> tuple[list, list | None]:
    if isinstance(spec, Mapping):
        return list(spec["values"]), list(spec["weights"]) if "weights" in spec else None
    return list(spec), None


def _draw(rng: random.Random, space: Mapping[str, Any], key: str, default=None):
    if key not in space:
        return default
    values, weights = _values(space[key])
    return rng.choices(values, weights=weights)[0]


def _tail(items: Iterable[str]) -> list[tuple[str, dict]]:
    layers = []
    for item in items:
        name, _, arg = item.partition(":")
        if name == "Activation":
            layers.append(("Activation", {"activation": arg}))
        elif name == "ReLU":
            layers.append(("ReLU", {"max_value": float(arg)} if arg else {}))
        else:
            layers.append((name, {}))
    return layers


def random_configs(grid: Grid) -> list[KernelConfig]:
    """Up to ``grid.random`` distinct configurations drawn from the grid's space (seeded),
    then each ``extra`` block's: ``random`` more drawn with its own seed from the space with
    the block's keys replaced. Adding a block never changes the configurations drawn before."""
    configs = _draw_distinct(grid, {})
    for block in grid.extra:
        sub = Grid(grid.layer_type, grid.family, block["random"], block["seed"], False,
                   {**grid.space, **block["space"]}, grid.max_gflops)
        exclude = (evaluation_signatures(grid.layer_type) if block.get("exclude_evaluation")
                   else frozenset())
        configs = _draw_distinct(sub, configs, block.get("params"), exclude)
    return list(configs.values())


#: What makes two kernels "the same layer" for ``exclude_evaluation``: the first layer's type,
#: shapes (any batch size) and geometry (whatever its bias, activation or the layers fused
#: after it).
_SIGNATURE = ("layer_type", "in_shape", "out_shape", "kernel_h", "kernel_w", "stride_h",
              "stride_w", "dilation", "groups", "units")


def signature(record: Mapping[str, Any]) -> tuple:
    def unbatched(key, value):
        return str(value).split("x", 1)[-1] if key in ("in_shape", "out_shape") else value

    return tuple(unbatched(key, record.get(key)) for key in _SIGNATURE)


@functools.lru_cache(maxsize=None)
def evaluation_signatures(layer_type: str) -> frozenset[tuple]:
    """The first-layer signatures of the held-out evaluation models' ``layer_type`` kernels: a
    block drawn near where they live (``"exclude_evaluation": true``) never draws one of their
    layers, with any tail."""
    configs = model_configs(model_split()["evaluation"], [layer_type])[layer_type]
    return frozenset(signature(config.record()) for config in configs)


def sample_space(grid: Grid, space: Mapping[str, Any], n: int, seed: int,
                 exclude: set[str] = frozenset(),
                 accept: Callable[[KernelConfig], bool] = lambda config: True
                 ) -> list[KernelConfig]:
    """Up to ``n`` distinct configurations of ``grid``'s layer type drawn (seeded) from
    ``space`` instead of the grid's own, none of whose keys is in ``exclude``, each accepted
    by ``accept`` (checked first: it must not build the kernel) and within the grid's GFLOPs
    cap."""
    wide = Grid(grid.layer_type, grid.family, n, seed, False, dict(space), grid.max_gflops)
    rng = random.Random(seed)
    found: dict[str, KernelConfig] = {}
    for _ in range(20 * n):
        if len(found) >= n:
            break
        config = _draw_config(wide, rng)
        if config is None or config.key in exclude or config.key in found \
                or not accept(config):
            continue
        if _gflops(config) <= grid.max_gflops:
            found[config.key] = config
    return list(found.values())


def _draw_distinct(grid: Grid, configs: dict[str, KernelConfig],
                   params: tuple[float, float] | None = None,
                   exclude: frozenset[tuple] = frozenset()) -> dict[str, KernelConfig]:
    """``configs`` plus up to ``grid.random`` new distinct draws from ``grid.space`` (with
    ``params``, only kernels whose layers have that many weights; none whose
    :func:`signature` is in ``exclude``)."""
    rng = random.Random(grid.seed)
    configs = dict(configs)
    wanted = len(configs) + grid.random
    attempts = 0
    while len(configs) < wanted and attempts < 50 * max(grid.random, 1):
        attempts += 1
        config = _draw_config(grid, rng)
        if config is None or config.key in configs:
            continue
        record = _record(config)  # builds the kernel once for all checks
        if record is None or record["flops"] / 1e9 > grid.max_gflops \
                or (exclude and signature(record) in exclude):
            continue
        if params is None or params[0] <= record["params"] <= params[1]:
            configs[config.key] = config
    return configs


def _record(config: KernelConfig) -> dict[str, Any] | None:
    """The kernel's spec columns; None for a configuration Keras refuses (dropped here, not at
    measuring time)."""
    try:
        return config.record()
    except Exception:
        return None


def _gflops(config: KernelConfig) -> float:
    record = _record(config)
    return math.inf if record is None else record["flops"] / 1e9


def _draw_config(grid: Grid, rng: random.Random) -> KernelConfig | None:
    s = grid.space
    t = grid.layer_type
    batch = _draw(rng, s, "batch", 1)
    hw = _draw(rng, s, "hw", 1)
    tail = _tail(_draw(rng, s, "tail", []))
    one_d = t.endswith("1D")  # Conv1D, GlobalAveragePooling1D, ...: (batch, steps, channels)

    def each(value) -> tuple:
        return (value,) if one_d else (value, value)

    if grid.family == "conv":
        kernel = _draw(rng, s, "kernel", 3)
        stride = _draw(rng, s, "strides", 1)
        padding = _draw(rng, s, "padding", "same")
        if padding == "valid" and hw < kernel:
            padding = "same"
        cfg: dict[str, Any] = {"kernel_size": each(kernel), "strides": each(stride),
                               "padding": padding, "use_bias": _draw(rng, s, "use_bias", True)}
        if t != "DepthwiseConv2D":
            cfg["filters"] = _draw(rng, s, "cout", 32)
        cin = _draw(rng, s, "cin", 32)
        # keys only the adaptive space names (drawn last: the grids' draws stay as they were)
        dilation = _draw(rng, s, "dilation", 1)
        if dilation > 1 and stride == 1:  # Keras: a dilated convolution has stride 1
            cfg["dilation_rate"] = each(dilation)
        groups = _draw(rng, s, "groups", 1)
        if groups > 1 and "filters" in cfg:  # channels in and out divisible by the groups
            cin = max(groups, cin // groups * groups)
            cfg["filters"] = max(groups, cfg["filters"] // groups * groups)
            cfg["groups"] = groups
        return KernelConfig.of([(t, cfg)] + tail, [(batch, hw, cin) if one_d
                                                   else (batch, hw, hw, cin)])
    if grid.family == "attention":  # MultiHeadAttention: (query, value) of d_model features
        tokens, width = _draw(rng, s, "tokens", 128), _draw(rng, s, "c", 128)
        heads = _draw(rng, s, "heads", 4)
        key_dim = _draw(rng, s, "key_dim", max(1, width // heads))
        kv_tokens = _draw(rng, s, "kv_tokens", tokens)
        cfg = {"num_heads": heads, "key_dim": key_dim, "use_bias": True}
        return KernelConfig.of([(t, cfg)], [(batch, tokens, width), (batch, kv_tokens, width)])
    if grid.family == "embedding":  # token ids in, vectors out
        tokens = _draw(rng, s, "tokens", 128)
        cfg = {"input_dim": _draw(rng, s, "vocab", 1000), "output_dim": _draw(rng, s, "units", 128)}
        return KernelConfig.of([(t, cfg)], [(batch, tokens)])
    if grid.family == "einsum":  # EinsumDense over the features of a sequence
        tokens, cin, units = (_draw(rng, s, "tokens", 128), _draw(rng, s, "cin", 128),
                              _draw(rng, s, "units", 128))
        cfg = {"equation": "abc,cd->abd", "output_shape": (tokens, units), "bias_axes": "d"}
        return KernelConfig.of([(t, cfg)] + tail, [(batch, tokens, cin)])
    if grid.family == "dense":
        tokens, cin = _draw(rng, s, "tokens", 1), _draw(rng, s, "cin", 128)
        shape = (batch, cin) if tokens == 1 else (batch, tokens, cin)
        cfg = {"units": _draw(rng, s, "units", 128)}
        activation = _draw(rng, s, "activation", None)  # a key only newer grids have
        if activation not in (None, "linear"):
            cfg["activation"] = activation
        return KernelConfig.of([(t, cfg)] + tail, [shape])
    c = _draw(rng, s, "c", 32)
    tokens = _draw(rng, s, "tokens", 0)  # a sequence (batch, tokens, c); newer grids only
    shape = (batch, tokens, c) if tokens else (batch, hw, c) if one_d else (batch, hw, hw, c)
    if grid.family == "pool":
        pool, stride = _draw(rng, s, "pool", 2), _draw(rng, s, "strides", 2)
        padding = _draw(rng, s, "padding", "valid")
        if hw < pool:
            return None
        return KernelConfig.of([(t, {"pool_size": (pool, pool), "strides": (stride, stride),
                                     "padding": padding})], [shape])
    if grid.family == "global_pool":
        return KernelConfig.of([(t, {"keepdims": _draw(rng, s, "keepdims", False)})], [shape])
    if grid.family == "activation":
        return KernelConfig.of([(t, {"activation": _draw(rng, s, "activation", "relu")})],
                               [shape])
    if grid.family == "merge":
        n = _draw(rng, s, "n_inputs", 2)
        if t == "Concatenate":
            shapes = [(batch, hw, hw, rng.choice([16, 32, 64, 128, 192, 256])) for _ in range(n)]
            return KernelConfig.of([(t, {"axis": -1})] + tail, shapes)
        shapes = [shape] * n
        if _draw(rng, s, "broadcast", False):
            shapes = [shape, (batch, 1, 1, c)]
        return KernelConfig.of([(t, {})] + tail, shapes)
    # elementwise: remaining space keys are layer arguments
    cfg = {}
    for key in ("max_value", "size", "interpolation", "rate"):
        if key in s:
            value = _draw(rng, s, key)
            if value is not None:
                cfg[key] = (value, value) if key == "size" else value
    if t == "ZeroPadding2D":
        pad = _draw(rng, s, "padding", 1)
        cfg["padding"] = ((pad, pad), (pad, pad))
    elif t == "Reshape":
        cfg["target_shape"] = (hw * hw, c)
    elif t == "Rescaling":
        cfg["scale"] = 1 / 255
    return KernelConfig.of([(t, cfg)] + tail, [shape])


def model_configs(models: Sequence[str], types: Sequence[str]) -> dict[str, list[KernelConfig]]:
    """Kernels of ``models`` grouped by their first layer's type (only ``types``), distinct."""
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.fusion import find_kernels
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import load_model

    keras = import_keras()
    wanted = set(types)
    found: dict[str, dict[str, KernelConfig]] = {t: {} for t in types}
    for name in models:
        tg = TaskGraph.from_keras(load_model(name))
        for kernel in find_kernels(tg):
            config = KernelConfig.from_specs([tg.spec(n) for n in kernel.nodes])
            if config.layer_type in wanted:
                found[config.layer_type].setdefault(config.key, config)
        keras.backend.clear_session()
    return {t: list(configs.values()) for t, configs in found.items()}


def training_models() -> list[str]:
    return list(model_split()["train"])


def model_split() -> dict[str, list[str]]:
    text = files("dnnsplit.collectors").joinpath("data/model_split.json").read_text()
    return json.loads(text)
