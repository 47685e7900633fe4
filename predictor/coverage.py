"""Is a prediction an interpolation between measured kernels, or an extrapolation?

A regressor answers anywhere; it is only trustworthy near what was measured. The rule, per
layer type (fitted in :func:`fit_coverage` on the type's measured rows, stored in the bundle):

- each kernel is a point whose coordinates are the logs of its sizes (FLOPs, weights, input and
  output bytes) and of its shape (batch, spatial size in and out, channels in and out, kernel,
  stride, dilation, groups, units, pool size; ``log1p``) and its fused tail (one-hot), each
  divided by its spread (standard deviation) over the measured rows, 1 where that is 0;
- the *spacing* of the data is the 95th percentile of the measured rows' distances to their
  nearest other measured row (leave one out);
- a kernel is **inside** when its nearest measured row is no farther than the spacing (it lies
  where the data is dense) and every coordinate lies within the range the measured rows span
  (give or take 10% in a shape, 28% in a size: ``log1p`` tolerances 0.1 and 0.25; none in the
  fused tail): no measured kernel had a batch, a kernel size or a channel count like it
  otherwise. Else it is **outside**, its prediction an extrapolation. A type without a model of
  its own (predicted by the generic fallback) is outside.

A transposed convolution with 1024 input channels on 4x4 pixels, when the measured ones with
that many channels were all larger, is outside by the range test even if some measured
kernel has similar FLOPs; a Conv2D shaped like a ResNet's is inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dnnsplit.predictor.feature_table import FUSED_TAIL_TYPES, feature_row

#: Size columns, already logarithms in the feature table.
LOG_COLUMNS = ("log_flops", "log_params", "log_input_bytes", "log_output_bytes")
#: Shape columns, taken as log1p.
SHAPE_COLUMNS = ("batch", "in_h", "in_w", "in_c", "out_h", "out_c", "kernel_h", "kernel_w",
                 "stride_h", "dilation", "groups", "units", "pool_h")
FUSED_COLUMNS = tuple(f"fused_{t}" for t in FUSED_TAIL_TYPES)
COLUMNS = LOG_COLUMNS + SHAPE_COLUMNS + FUSED_COLUMNS
#: How far (in the unscaled coordinate) a kernel may lie beyond the measured range.
TOLERANCE = np.array([0.25] * len(LOG_COLUMNS) + [0.1] * len(SHAPE_COLUMNS)
                     + [0.0] * len(FUSED_COLUMNS))
#: The spacing is this percentile of the measured rows' nearest-neighbour distances.
SPACING_PERCENTILE = 95.0


def coordinates(records: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """The unscaled coordinates of kernel records (one row each, :data:`COLUMNS`)."""
    rows = []
    for record in records:
        feature = feature_row(record)
        rows.append([feature[c] for c in LOG_COLUMNS]
                    + [float(np.log1p(max(feature[c], 0.0))) for c in SHAPE_COLUMNS]
                    + [feature[c] for c in FUSED_COLUMNS])
    return np.asarray(rows, dtype=float).reshape(-1, len(COLUMNS))


@dataclass
class Coverage:
    """What was measured of one layer type, as the rule needs it."""

    scale: np.ndarray  # per column
    points: np.ndarray  # measured kernels, scaled, one row each (distinct)
    spacing: float
    low: np.ndarray  # per column, the measured range (unscaled)
    high: np.ndarray

    def distance(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Distance of each record to its nearest measured kernel (scaled units)."""
        return _tree(self.points).query(coordinates(records) / self.scale, k=1)[0][:, 0]

    def inside(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """True for each record the rule counts inside what was measured."""
        if not len(records):
            return np.zeros(0, dtype=bool)
        raw = coordinates(records)
        near = _tree(self.points).query(raw / self.scale, k=1)[0][:, 0] <= self.spacing
        within = np.all((raw >= self.low - TOLERANCE - 1e-9)
                        & (raw <= self.high + TOLERANCE + 1e-9), axis=1)
        return near & within

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(COLUMNS), "scale": _rounded(self.scale),
                "spacing": round(float(self.spacing), 6), "low": _rounded(self.low),
                "high": _rounded(self.high), "points": [_rounded(p) for p in self.points]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Coverage":
        if list(data["columns"]) != list(COLUMNS):
            raise ValueError("coverage columns differ from this version's")
        return cls(np.asarray(data["scale"], float), np.asarray(data["points"], float),
                   float(data["spacing"]), np.asarray(data["low"], float),
                   np.asarray(data["high"], float))


def fit_coverage(records: Sequence[Mapping[str, Any]]) -> Coverage:
    """The coverage of one layer type from its measured rows (rows of several loads of the same
    kernel count once)."""
    raw = np.unique(np.round(coordinates(records), 6), axis=0)
    spread = raw.std(axis=0)
    scale = np.where(spread > 1e-9, spread, 1.0)
    points = raw / scale
    if len(points) > 1:  # the points are distinct: the second neighbour is the nearest other
        loo = _tree(points).query(points, k=2)[0][:, 1]
        spacing = float(np.percentile(loo, SPACING_PERCENTILE))
    else:
        spacing = 0.0
    return Coverage(scale, points, spacing, raw.min(axis=0), raw.max(axis=0))


def _tree(points: np.ndarray):
    from sklearn.neighbors import KDTree

    return KDTree(points)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]
