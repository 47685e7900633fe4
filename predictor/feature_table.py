"""Named feature columns of a kernel record (spec columns + fused pattern + load).

Features are always addressed by name: a trained estimator stores its column names, and
:func:`feature_frame` builds exactly those columns (missing one-hot columns are 0), so adding
a column to the records can never shift what a model reads.

>>> frame = feature_frame([record])          # doctest: +SKIP
>>> list(frame.columns)[:4]
['batch', 'n_inputs', 'in_h', 'in_w']
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from dnnsplit.predictor.features import ACTIVATION_OPS_PER_ELEMENT

#: Numeric record columns used as they are.
NUMERIC = ("batch", "n_inputs", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "filters",
           "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation", "groups",
           "depth_multiplier", "units", "pool_h", "pool_w", "use_bias", "flops", "params",
           "input_bytes", "output_bytes", "load")
#: Logarithms of the size columns (log1p), the strongest predictors of time.
LOGGED = ("flops", "params", "input_bytes", "output_bytes")
#: Categorical record columns and their one-hot vocabularies.
CATEGORIES = {
    "activation": ("",) + tuple(ACTIVATION_OPS_PER_ELEMENT),
    "padding": ("same", "valid"),
}
#: Layer types that can follow the first layer of a fused kernel (one-hot "fused_<type>").
FUSED_TAIL_TYPES = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
                    "Softmax")


def feature_names() -> list[str]:
    names = list(NUMERIC)
    names += [f"log_{c}" for c in LOGGED]
    names += ["load_x_log_flops"]
    names += [f"fused_{t}" for t in FUSED_TAIL_TYPES]
    for column, values in CATEGORIES.items():
        names += [f"{column}={v or 'none'}" for v in values]
    return names


def feature_row(record: Mapping[str, Any]) -> dict[str, float]:
    row = {c: float(record.get(c, 0) or 0) for c in NUMERIC}
    for c in LOGGED:
        row[f"log_{c}"] = math.log1p(max(row[c], 0.0))
    row["load_x_log_flops"] = row["load"] * row["log_flops"]
    tail = str(record.get("fused_pattern", "")).split("+")[1:]
    for t in FUSED_TAIL_TYPES:
        row[f"fused_{t}"] = float(t in tail)
    for column, values in CATEGORIES.items():
        value = str(record.get(column, "") or "")
        for v in values:
            row[f"{column}={v or 'none'}"] = float(value == v)
    return row


def feature_frame(records: Iterable[Mapping[str, Any]],
                  columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per record with the named feature columns (``columns`` or all of them)."""
    frame = pd.DataFrame([feature_row(r) for r in records])
    wanted = list(columns) if columns is not None else feature_names()
    if frame.empty:
        return pd.DataFrame(columns=wanted, dtype=float)
    return frame.reindex(columns=wanted, fill_value=0.0).astype(float)


#: Kernels cheaper than the subtracted call overhead measure as 0: the target is floored here.
TARGET_FLOOR_MS = 0.002
#: Relative errors are taken against at least this much (a 1 us kernel is not 'off by 500%').
ERROR_FLOOR_MS = 0.02
#: The compact log-space columns of the Neurosurgeon-style log-linear family.
LOGLINEAR_COLUMNS = tuple(f"log_{c}" for c in LOGGED) + ("load", "load_x_log_flops") + tuple(
    f"fused_{t}" for t in FUSED_TAIL_TYPES)


def target(records: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Drift-normalised time: median_ms / ref_probe_ms, floored at TARGET_FLOOR_MS."""
    return np.array([max(float(r["median_ms"]), TARGET_FLOOR_MS) / float(r["ref_probe_ms"])
                     for r in records])


def error_floor(records: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Per record, ERROR_FLOOR_MS in the target's (probe) units."""
    return np.array([ERROR_FLOOR_MS / float(r["ref_probe_ms"]) for r in records])
