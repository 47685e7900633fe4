"""What to measure first on a new device: an order over the base profile's kernels.

>>> order = quick_order("cpu-1t-tensorflow")          # doctest: +SKIP
>>> order[0]                                          # doctest: +SKIP
('Conv2D', KernelConfig(...))

A new device is fitted as a transform of a base profile (:mod:`dnnsplit.predictor.transfer`):
per layer type, the ratio of its times to the base's predictions, with a slope in the kernel's
size. What teaches that ratio most in few minutes:

- **the layer types that carry the time**: each type's minutes are in proportion to its mean
  share of the training models' predicted time on the base (``type_shares`` of the base's
  bundle), with at least ``MIN_SHARE`` each so that every type is seen;
- **spread within a type**: kernels the base measured (load 0), taken in farthest-point order
  in the coverage rule's scaled coordinates (:func:`dnnsplit.predictor.coverage.coordinates`),
  starting from the one nearest the type's median; each next one is the farthest from those
  already taken, per second it is expected to cost (its base timing: ``SETUP_S`` plus its
  repeats), so that the first minutes span small and large kernels alike.

First a census: ``CENSUS`` rounds of one kernel of every type (the one nearest its median,
then the farthest ones), so that every type's ratio is measured within the first minute or
two. Then the types are interleaved by time spent: the next kernel is the one of the type
whose spent seconds over its share are least. The order does not depend on the budget, so a run of M
minutes measures the first part of the same list a longer run measures (what the curve of
accuracy against minutes uses).
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Sequence

import numpy as np

from dnnsplit.collectors.kernels import KernelConfig

#: Build + compile + warm-up of one kernel configuration, roughly, in seconds.
SETUP_S = 0.25
#: The least share of the minutes a layer type gets.
MIN_SHARE = 0.01
#: Kernels of every layer type measured first, in rounds, before the minutes follow the shares:
#: a type cheap on the base can be the dearest on the new device (depthwise convolutions take
#: 21x as long under XLA on this CPU as under TensorFlow), and only its own rows tell.
CENSUS = 3


def base_candidates(base: str | Path, types: Sequence[str] | None = None
                    ) -> dict[str, list[tuple[KernelConfig, dict, float]]]:
    """Per layer type: the distinct kernels the base measured at load 0, each with its record
    and the seconds measuring it took there (estimated)."""
    from dnnsplit.predictor.bundle import profile_dir
    from dnnsplit.predictor.train import load_records

    out: dict[str, dict[str, tuple[KernelConfig, dict, float]]] = {}
    for layer_type, rows in load_records(profile_dir(base)).items():
        if types is not None and layer_type not in types:
            continue
        for row in rows:
            if row["load_target"] != "0" or not row.get("kernel_config"):
                continue
            seconds = SETUP_S + float(row["repeats"]) * float(row["median_ms"]) / 1000.0
            config = KernelConfig.from_json(row["kernel_config"])
            out.setdefault(layer_type, {}).setdefault(config.key, (config, row, seconds))
    return {t: list(found.values()) for t, found in sorted(out.items())}


def farthest_first(points: np.ndarray, seconds: np.ndarray) -> list[int]:
    """Indices of ``points`` (scaled coordinates) in farthest-point order: first the one
    nearest the median, then each time the farthest from those taken per sqrt(second)."""
    n = len(points)
    if n == 0:
        return []
    first = int(np.argmin(np.linalg.norm(points - np.median(points, axis=0), axis=1)))
    order = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    nearest[first] = -1.0
    weight = 1.0 / np.sqrt(seconds)
    for _ in range(n - 1):
        nxt = int(np.argmax(np.where(nearest >= 0, nearest * weight, -1.0)))
        order.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[nxt], axis=1))
        nearest[order] = -1.0
    return order


def quick_order(base: str | Path, types: Sequence[str] | None = None,
                shares: dict[str, float] | None = None) -> list[tuple[str, KernelConfig]]:
    """Every kernel the base measured, in the order a quick collection measures them (see the
    module docstring). ``shares`` (type -> share of the time) default to the base bundle's."""
    from dnnsplit.predictor.coverage import coordinates

    candidates = base_candidates(base, types)
    if shares is None:
        shares = type_shares(base)
    queues = {}
    for layer_type, items in candidates.items():
        raw = coordinates([record for _, record, _ in items])
        spread = raw.std(axis=0)
        points = raw / np.where(spread > 1e-9, spread, 1.0)
        seconds = np.array([s for _, _, s in items])
        queues[layer_type] = [(items[i][0], float(seconds[i]))
                              for i in farthest_first(points, seconds)]
    weight = {t: max(float(shares.get(t, 0.0)), MIN_SHARE) for t in queues}
    position = {t: 0 for t in queues}
    spent = {t: 0.0 for t in queues}
    order = []
    for _ in range(CENSUS):  # a few kernels of every type first, in rounds
        for layer_type in sorted(queues, key=lambda t: -weight[t]):
            if position[layer_type] < len(queues[layer_type]):
                config, seconds = queues[layer_type][position[layer_type]]
                order.append((layer_type, config))
                position[layer_type] += 1
                spent[layer_type] += seconds / weight[layer_type]
    heap = [(spent[t], t) for t in sorted(queues) if position[t] < len(queues[t])]
    heapq.heapify(heap)
    while heap:
        spent, layer_type = heapq.heappop(heap)
        config, seconds = queues[layer_type][position[layer_type]]
        order.append((layer_type, config))
        position[layer_type] += 1
        if position[layer_type] < len(queues[layer_type]):
            heapq.heappush(heap, (spent + seconds / weight[layer_type], layer_type))
    return order


def type_shares(base: str | Path) -> dict[str, float]:
    """Each layer type's mean share of the training models' predicted time on ``base`` (its
    bundle's ``type_shares``; computed from the training models when the bundle predates
    them)."""
    from dnnsplit.predictor.bundle import load_bundle

    bundle = load_bundle(base)
    if bundle.meta.get("type_shares"):
        return dict(bundle.meta["type_shares"])
    from dnnsplit.collectors.grids import training_models
    from dnnsplit.predictor.train import mean_type_shares, predict_model_by_type

    return mean_type_shares([predict_model_by_type(bundle, name)[1]
                             for name in training_models()])
