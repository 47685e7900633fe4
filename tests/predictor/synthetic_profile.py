"""A small synthetic profile folder for predictor tests (no timing: known ground truth)."""

from __future__ import annotations

import random
from pathlib import Path

from dnnsplit.collectors.grids import Grid, random_configs
from dnnsplit.collectors.store import CsvStore
from dnnsplit.predictor.features import RECORD_COLUMNS

TYPES = {
    "Conv2D": ("conv", {"hw": [7, 14, 28], "cin": [8, 16, 32], "cout": [8, 16, 32],
                        "kernel": [1, 3], "tail": [[], ["BatchNormalization", "Activation:relu"]]}),
    "Dense": ("dense", {"cin": [16, 64, 256], "units": [10, 32, 128]}),
    "Add": ("merge", {"hw": [7, 14, 28], "c": [8, 16, 32]}),
}


def synthetic_ms(record: dict) -> float:
    """A known cost law: 0.01 ms + 1 ms per 50 MFLOPs + 1 ms per 20 MB moved."""
    return 0.01 + record["flops"] / 5e7 + (record["input_bytes"] + record["output_bytes"]) / 2e7


def make_profile(folder: Path, rows_per_type: int = 30, seed: int = 0,
                 cost=None, types=None) -> Path:
    """A profile folder whose rows follow ``cost(record, layer_type)`` ms at probe 2.0 (default:
    :func:`synthetic_ms`), for ``types`` (default all of TYPES)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for layer_type, (family, space) in TYPES.items():
        if types is not None and layer_type not in types:
            continue
        grid = Grid(layer_type, family, rows_per_type, seed, False, space)
        store = CsvStore(folder / f"{layer_type}.csv", list(RECORD_COLUMNS),
                         ("kernel_key", "load_target"))
        for config in random_configs(grid):
            record = config.record()
            probe = rng.uniform(1.8, 2.2)  # the machine drifts; times scale with the probe
            law = synthetic_ms(record) if cost is None else cost(record, layer_type)
            ms = law * probe / 2.0
            record.update(fused_pattern=config.pattern, kernel_key=config.key,
                          kernel_config=config.to_json(), load_target="0",
                          device_profile=folder.name, backend="tensorflow",
                          keras_version="3", threads=1, load=0.0, ref_probe_ms=probe,
                          repeats=10, overhead_ms=0.3, median_ms=ms, p10_ms=ms, p90_ms=ms,
                          timestamp="2026-01-01T00:00:00+00:00")
            store.append(record)
    return folder
