"""Weight streaming: what a kernel pays inside a model for weights that are not in cache.

A kernel benchmarked alone is called again and again on the same weights, so weights that fit
the last-level cache stay there between calls. Inside a model every other layer's weights and
activations pass through the cache between two calls of a kernel, so its weights come from
memory. Kernels with large weights at a small spatial size (ResNet50's conv5 stage) are then
slower in the model than alone, which shifts time towards the end of such a model: the part a
pipeline's later stage runs.

For every distinct kernel of the given models (fusion rules applied), this times it alone by
the collectors' protocol, then ``copies`` independent copies of it (each with weights of its
own) fanned out from the same input in one compiled call: with copies enough to hold more
weights than the cache, each copy's weights are streamed from memory while its input stays
hot, as in a model. ``(fan-out / copies) - alone`` is the kernel's streaming cost. The cost is
fitted as ``per_mib * max(0, MiB of weights - threshold_mib)`` for kernels whose weights fit
the cache (the others stream alone too), in units of the reference probe, which the predictor
adds to each kernel's predicted time (``predictor/compose.py``).

>>> result = measure_weight_streaming(["ResNet50V2"])                  # doctest: +SKIP
>>> result["per_mib"], result["threshold_mib"]                          # doctest: +SKIP

``collectors streaming --out datasets/<profile>/weight-streaming.json`` stores it with the
profile. Measure it on training models only (``collectors/data/model_split.json``; by default
the ones the pipeline benchmark does not use).
"""

from __future__ import annotations

import datetime
import math
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from dnnsplit.collectors.corun import DEFAULT_MODELS
from dnnsplit.collectors.timing import (StopRule, backend, compile_forward, empty_call_overhead,
                                        measure, model_inputs)
from dnnsplit.predictor.errors import DnnsplitError

MIB = 2.0 ** 20
#: Thresholds tried by the fit (MiB of weights below which a kernel pays nothing).
THRESHOLDS_MIB = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
RULE = StopRule(min_repeats=10, max_time_s=1.0)


class StreamingError(DnnsplitError):
    """The weight-streaming measurement cannot run as asked."""


def cache_bytes(default: float = 32 * MIB) -> float:
    """Size of this machine's last-level cache (Linux sysfs), or ``default``."""
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        if text and text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return float(max(sizes)) if sizes else float(default)


def fit_streaming(weight_mib: Sequence[float], extra: Sequence[float],
                  thresholds: Sequence[float] = THRESHOLDS_MIB) -> tuple[float, float]:
    """``(per_mib, threshold_mib)`` minimising the squared error of
    ``extra ~ per_mib * max(0, weight_mib - threshold_mib)`` (``per_mib >= 0``).

    >>> fit_streaming([1, 2, 4, 8], [0.0, 0.1, 0.3, 0.7])
    (0.1, 1.0)
    """
    w, y = np.asarray(weight_mib, dtype=float), np.asarray(extra, dtype=float)
    if len(w) == 0:
        raise StreamingError("no kernels with weights to fit the streaming cost on")
    best = None
    for threshold in thresholds:
        x = np.maximum(0.0, w - threshold)
        if not (x > 0).any():
            continue
        slope = max(0.0, float((x * y).sum() / (x * x).sum()))
        error = float(((y - slope * x) ** 2).sum())
        if best is None or error < best[0] - 1e-15:
            best = (error, round(slope, 6), float(threshold))
    if best is None:
        raise StreamingError("every kernel's weights are below the smallest threshold")
    return best[1], best[2]


def streaming_of_kernel(config, budget_bytes: float, max_copies: int = 8) -> dict:
    """``{"alone_ms", "fanout_ms", "copies"}`` of one kernel (see the module doc); times in ms
    per kernel call, the empty call subtracted."""
    from dnnsplit.predictor.keras_env import import_keras

    keras = import_keras()
    single = config.build()
    weights = 4.0 * single.count_params()
    copies = max(2, min(max_copies, math.ceil(budget_bytes / max(weights, 1.0))))
    inputs = model_inputs(single)
    overhead = empty_call_overhead(inputs, rule=RULE)
    alone = measure(compile_forward(single), inputs, overhead, RULE).median_ms
    tensors = [keras.Input(shape=t.shape[1:], batch_size=t.shape[0]) for t in single.inputs]
    x = tensors[0] if len(tensors) == 1 else tensors
    fanout = keras.Model(tensors, [config.build()(x) for _ in range(copies)])
    together = measure(compile_forward(fanout), inputs, overhead, RULE).median_ms
    return {"alone_ms": round(alone, 5), "fanout_ms": round(together / copies, 5),
            "copies": copies}


def measure_weight_streaming(models: Sequence[str] = DEFAULT_MODELS, threads: int = 1,
                             min_weight_mib: float = 0.25, progress: bool = True) -> dict:
    """Streaming cost of every distinct kernel with at least ``min_weight_mib`` of weights (and
    no more than the cache) in ``models``, and the fit, as a JSON-able dict."""
    from tqdm import tqdm

    from dnnsplit.collectors.kernels import KernelConfig, KernelError
    from dnnsplit.collectors.probe import Probe
    from dnnsplit.collectors.timing import configure_threads
    from dnnsplit.predictor.compose import FREE_TYPES, kernel_weight_bytes
    from dnnsplit.predictor.fusion import find_kernels
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    if not models:
        raise StreamingError("no models to measure")
    configure_threads(threads)  # before anything runs (building a model does)
    keras = import_keras()
    cache = cache_bytes()
    # the kernels to time, per model (each distinct kernel once): found before any is timed,
    # so a run that would time nothing says so at once
    todo_by_model: dict[str, dict] = {}
    seen: set[str] = set()
    for name in models:
        tg = TaskGraph.from_keras(load_model(name))
        todo = todo_by_model[name] = {}
        for kernel in find_kernels(tg):
            if tg.graph.nodes[kernel.nodes[0]]["layer_type"] in FREE_TYPES:
                continue
            weight = kernel_weight_bytes(tg, kernel)
            if min_weight_mib * MIB <= weight <= cache:
                config = KernelConfig.from_specs([tg.spec(n) for n in kernel.nodes])
                if config.key not in seen:
                    seen.add(config.key)
                    todo[config.key] = (config, weight)
        keras.backend.clear_session()
    if not seen:
        raise StreamingError(f"none of {', '.join(models)} has a kernel with {min_weight_mib} "
                             f"MiB to {cache / MIB:.0f} MiB of weights")
    probe = Probe()
    kernels: dict[str, dict] = {}
    bar = tqdm(models, desc="weight streaming", unit="model", disable=not progress)
    for name in bar:
        todo = todo_by_model[name]
        before = probe.time_ms()
        timed = {}
        for key, (config, weight) in todo.items():
            try:
                timed[key] = {"model": name, "pattern": config.pattern,
                              "weight_mib": round(weight / MIB, 4),
                              **streaming_of_kernel(config, 2 * cache)}
            except KernelError:
                continue  # a kernel that cannot be built alone
        probe_ms = (before + probe.time_ms()) / 2
        for row in timed.values():
            row["probe_ms"] = round(probe_ms, 4)
        kernels.update(timed)
        bar.set_postfix_str(f"{name}: {len(timed)} kernels")
        keras.backend.clear_session()
    if not kernels:
        raise StreamingError(f"none of the kernels of {', '.join(models)} with "
                             f"{min_weight_mib} MiB to {cache / MIB:.0f} MiB of weights can be "
                             "built alone")
    rows = list(kernels.values())
    per_mib, threshold = fit_streaming(
        [r["weight_mib"] for r in rows],
        [(r["fanout_ms"] - r["alone_ms"]) / r["probe_ms"] for r in rows])
    return {
        "per_mib": per_mib, "threshold_mib": threshold, "cache_mib": round(cache / MIB, 3),
        "about": "extra time per MiB of weights above threshold_mib (up to cache_mib) of a "
                 "kernel in a model over the kernel alone, in reference-probe units "
                 "(collectors/streaming.py)",
        "threads": threads, "backend": backend(),
        "keras_version": keras.__version__,
        "machine": f"{platform.node()} ({platform.machine()}, cpu)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "models": list(models), "kernels": rows,
    }
