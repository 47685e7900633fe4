"""Adaptive sampling: after the grid, measure where each layer type's model is least sure.

The idea of nn-Meter's adaptive data sampling, judged by our own numbers. A *round*:

1. per layer type with measured rows, draw candidate configurations from the type's whole
   realistic space (``collectors/data/adaptive_space.json``: spatial sizes 1-512, channels
   1-4096, every kernel size, stride, dilation and group count real models use; keys it does
   not name come from the type's grid), never from an evaluation model, capped at the grid's
   GFLOPs, and not measured yet;
2. score each candidate (:func:`score_candidates`) by how unsure the type's model is there:
   the disagreement (standard deviation of log predictions) of models fitted on ``FOLDS``
   folds of the measured rows, plus the out-of-fold error of its nearest measured rows, times
   ``1 + distance to the nearest measured row / the data's spacing``
   (:mod:`dnnsplit.predictor.coverage`): unsure, badly fitted nearby, or far from any data;
3. weight each type's scores by its family (:data:`FAMILY_WEIGHTS`): layers with weights
   (convolutions, Dense) carry most of a network's time, element-wise layers, pooling and
   merges little, so a Rescaling layer the model knows little about matters less than a
   Conv2D it knows a little better. A prior, decided before any evaluation: weighting by the
   training models' time shares would starve the transposed convolution (no training model
   has one) that every decoder needs;
4. choose the best-scored candidates of all types, one after another, each choice counting
   as measured for the next ones (so a round spreads out instead of piling up in one spot),
   at most half the round from one type (:func:`choose`); the candidates are drawn once per
   run (:data:`CANDIDATES` per type, at most :data:`MAX_PARAMS` weights each) and a type is
   scored again only after a round measured it (:class:`RoundPlanner`);
5. measure them at every load of the collection, like the grid (:class:`~dnnsplit.collectors.
   collect.Bench`), and log the round in ``adaptive.json`` beside the CSVs.

Rounds repeat until ``--budget-minutes`` (from the first measurement) or ``--rounds``; a killed
run loses at most the round it was in, and the next run continues with the next round.
"""

from __future__ import annotations

import datetime
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from dnnsplit.collectors.collect import (Bench, CollectReport, CollectSettings, open_stores,
                                         progress_bar)
from dnnsplit.collectors.grids import Grid, load_grids, sample_space
from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.collectors.load import load_key
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.files import write_json_atomic

#: Folds whose models' disagreement scores a candidate.
FOLDS = 5
#: Candidates drawn per layer type (once per run; each round scores those not yet measured).
CANDIDATES = 200
#: Candidates with more weights than this are not drawn: building one allocates them, and
#: the largest layers of real models (VGG's first classifier layer, 103M) are in the grids.
MAX_PARAMS = 32_000_000
#: Nor with larger inputs than this many elements (128 MB of float32; the largest activation of
#: a U-Net at 512x512 is 16.7M elements): the realistic ranges of size and channels, drawn
#: independently, would otherwise pair 512x512 pixels with 4096 channels.
MAX_INPUT_ELEMENTS = 2 ** 25
#: Measured rows of a type below which it is not modelled (its candidates are scored by
#: distance alone).
MIN_ROWS = 12
LOG_NAME = "adaptive.json"
#: Weight of a type's scores by its grid family (see the module docstring); other families
#: get ``OTHER_WEIGHT``.
FAMILY_WEIGHTS = {"conv": 1.0, "dense": 1.0}
OTHER_WEIGHT = 0.3


class AdaptiveError(DnnsplitError):
    """Adaptive sampling cannot run as asked (no grid data to start from, ...)."""


def realistic_space(grid: Grid) -> dict:
    """The space candidates of ``grid``'s layer type are drawn from: its grid's keys, widened
    by the family's and the type's realistic ranges."""
    data = json.loads(files("dnnsplit.collectors").joinpath("data/adaptive_space.json")
                      .read_text())
    return {**grid.space, **data["families"].get(grid.family, {}),
            **data["types"].get(grid.layer_type, {})}


def candidates(grid: Grid, n: int, seed: int, measured: set[str]) -> list[KernelConfig]:
    """Up to ``n`` distinct configurations drawn from the type's realistic space that are not
    in ``measured`` (keys), with at most :data:`MAX_PARAMS` weights and
    :data:`MAX_INPUT_ELEMENTS` input elements, and within the grid's GFLOPs cap."""
    def acceptable(config: KernelConfig) -> bool:
        elements = sum(math.prod(shape) for shape in config.input_shapes)
        return estimated_params(config) <= MAX_PARAMS and elements <= MAX_INPUT_ELEMENTS

    return sample_space(grid, realistic_space(grid), n, seed, measured, accept=acceptable)


def estimated_params(config: KernelConfig) -> int:
    """The weights of a configuration's first layer, from its arguments alone (building it
    would allocate them): kernel area x channels in x out (/ groups) for convolutions, in x
    units for Dense; 0 for layers without large weights."""
    layer_type, arguments = config.layers[0]
    cfg, cin = dict(arguments), config.input_shapes[0][-1]
    area = math.prod(cfg.get("kernel_size") or (1,))
    if layer_type == "DepthwiseConv2D":
        return area * cin
    if layer_type == "SeparableConv2D":
        return area * cin + cin * int(cfg.get("filters", 0))
    if "filters" in cfg:
        return area * cin * int(cfg["filters"]) // int(cfg.get("groups") or 1)
    if layer_type == "Dense":
        return cin * int(cfg.get("units", 0))
    return 0


@dataclass
class Scored:
    layer_type: str
    config: KernelConfig
    record: dict
    score: float
    #: coordinates in the type's coverage space (for spreading a round out)
    point: np.ndarray = field(repr=False, default=None)


def score_candidates(measured: Sequence[Mapping], records: Sequence[Mapping],
                     family: str = "anchored_gbm", folds: int = FOLDS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores of candidate ``records`` given the type's ``measured`` rows (with their times),
    their coverage coordinates and the data's spacing (see the module docstring)."""
    from sklearn.model_selection import KFold

    from dnnsplit.predictor.coverage import fit_coverage
    from dnnsplit.predictor.estimators import make
    from dnnsplit.predictor.feature_table import feature_frame, target

    coverage = fit_coverage(measured)
    spacing = max(coverage.spacing, 1e-6)
    tree = _tree(coverage.points)
    points = _scaled(coverage, records)
    distance = tree.query(points, k=1)[0][:, 0] / spacing
    if len(measured) < MIN_ROWS:
        return 1.0 + distance, points, spacing
    X, y = feature_frame(measured), np.log(target(measured))
    C = feature_frame(records, list(X.columns))
    logs, out_of_fold = [], np.zeros(len(y))
    for train, test in KFold(min(folds, len(y)), shuffle=True, random_state=seed).split(X):
        model = make(family).fit(X.iloc[train], np.exp(y[train]))
        logs.append(np.log(model.predict(C)))
        out_of_fold[test] = np.log(model.predict(X.iloc[test]))
    disagreement = np.std(logs, axis=0)
    residual = np.abs(out_of_fold - y)
    # the rows of the measured data in the coverage space, in the order of the records
    measured_points = _scaled(coverage, measured)
    neighbours = tree.query(points, k=min(3, len(coverage.points)))[1]
    nearest_error = _error_at(measured_points, residual, coverage.points)[neighbours].mean(axis=1)
    return (disagreement + nearest_error) * (1.0 + distance), points, spacing


def choose(scored: Sequence[Scored], n: int, spacing: Mapping[str, float],
           per_type_cap: float = 0.5) -> list[Scored]:
    """The ``n`` best candidates, taken one at a time: after each choice, the candidates of its
    type near it lose score as if it were measured (their distance term shrinks to their
    distance to it), and no type takes more than ``per_type_cap`` of the round while another
    type has candidates left."""
    remaining = list(scored)
    chosen: list[Scored] = []
    cap = max(1, int(per_type_cap * n))
    taken: dict[str, int] = {}
    while remaining and len(chosen) < n:
        best = max(remaining, key=lambda s: s.score)
        remaining.remove(best)
        if taken.get(best.layer_type, 0) >= cap and any(
                other.layer_type != best.layer_type for other in remaining):
            continue  # capped while other types still have candidates
        chosen.append(best)
        taken[best.layer_type] = taken.get(best.layer_type, 0) + 1
        for other in remaining:
            if other.layer_type != best.layer_type:
                continue
            near = float(np.linalg.norm(other.point - best.point)) / spacing[best.layer_type]
            if near < 1.0:  # within the data's spacing of a new point: as good as measured
                other.score *= near
    return chosen


class RoundPlanner:
    """Chooses each round's configurations from the CSVs in ``folder``.

    Each type's candidates are drawn once (seeded by ``seed``) and their records computed
    once; a type's scores are recomputed only when its measured rows changed (a round measured
    it), so a round costs the fits of the types the last round touched."""

    def __init__(self, folder: Path, grids: Sequence[Grid], seed: int,
                 families: Mapping[str, str] | None = None):
        self.folder, self.grids, self.seed = Path(folder), list(grids), seed
        self.families = dict(families or {})
        self.weights = {g.layer_type: FAMILY_WEIGHTS.get(g.family, OTHER_WEIGHT) for g in grids}
        self._pools: dict[str, list[tuple[KernelConfig, dict]]] = {}
        self._scores: dict[str, tuple[int, np.ndarray, np.ndarray, float]] = {}

    def _pool(self, grid: Grid, measured: set[str]) -> list[tuple[KernelConfig, dict]]:
        if grid.layer_type not in self._pools:
            from dnnsplit.predictor.keras_env import import_keras

            seed = self.seed * 1009 + zlib.crc32(grid.layer_type.encode())
            pool = candidates(grid, CANDIDATES, seed, measured)
            self._pools[grid.layer_type] = [
                (c, dict(c.record(), fused_pattern=c.pattern, load=0.0)) for c in pool]
            import_keras().backend.clear_session(free_memory=True)
        return self._pools[grid.layer_type]

    def plan(self, n: int) -> list[Scored]:
        from dnnsplit.predictor.train import load_records

        grouped = load_records(self.folder)
        scored, spacing = [], {}
        for grid in self.grids:
            rows = grouped.get(grid.layer_type, [])
            measured = [r for r in rows if r["load_target"] == "0"]
            if not measured:
                continue  # the grid collects this type first
            keys = {r["kernel_key"] for r in rows}
            pool = self._pool(grid, keys)
            cached = self._scores.get(grid.layer_type)
            if cached is None or cached[0] != len(measured):
                family = self.families.get(grid.layer_type, "anchored_gbm")
                cached = (len(measured), *score_candidates(measured, [r for _, r in pool],
                                                           family, seed=self.seed))
                self._scores[grid.layer_type] = cached
            _, scores, points, spacing[grid.layer_type] = cached
            weight = self.weights.get(grid.layer_type, 1.0)
            scored += [Scored(grid.layer_type, c, r, float(s) * weight, p)
                       for (c, r), s, p in zip(pool, scores, points) if c.key not in keys]
        return choose(scored, n, spacing)


@dataclass
class AdaptiveReport(CollectReport):
    rounds: int = 0


def collect_adaptive(settings: CollectSettings, rounds: int | None = None,
                     per_round: int = 64, progress: bool = True,
                     say: Callable[[str], None] | None = None) -> AdaptiveReport:
    """Adaptive rounds into ``settings.out_dir`` (which holds a grid collection) until the
    budget or ``rounds`` is used up; each round is logged in ``adaptive.json``."""
    say = say or (lambda line: None)
    out = Path(settings.out_dir)
    grids = [g for g in load_grids(settings.grid_dir, settings.types)
             if (out / f"{g.layer_type}.csv").exists()]
    if not grids:
        raise AdaptiveError(f"no grid data in {out} to start from: run `collectors collect "
                            f"--out {out}` first")
    if rounds is None and settings.budget_minutes is None:
        raise AdaptiveError("give --budget-minutes or --rounds: adaptive rounds never run out "
                            "of candidates")
    bench = Bench(settings)
    log_path = out / LOG_NAME
    log = json.loads(log_path.read_text()) if log_path.exists() else {"rounds": []}
    planner = RoundPlanner(out, grids, seed=len(log["rounds"]), families=_chosen_families(out))
    report = AdaptiveReport()
    start = time.monotonic()
    stores = open_stores(out, [g.layer_type for g in grids])
    budget_s = None if settings.budget_minutes is None else settings.budget_minutes * 60

    while rounds is None or report.rounds < rounds:
        if bench.deadline is not None and time.monotonic() >= bench.deadline:
            report.budget_exhausted = True
            break
        number = len(log["rounds"])
        say(f"round {number}: choosing {per_round} configurations")
        picked = planner.plan(per_round)
        if not picked:
            break
        todo = [(load, [(s.layer_type, s.config) for s in picked
                        if (s.config.key, load_key(load)) not in stores[s.layer_type]])
                for load in settings.loads]
        bar = progress_bar(sum(len(t) for _, t in todo), progress)
        try:
            bench.measure(todo, stores, report, bar, budget_s=budget_s)
        finally:
            bar.close()
        log["rounds"].append({
            "round": number,
            "ended": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "chosen": [{"type": s.layer_type, "key": s.config.key, "score": round(s.score, 4)}
                       for s in picked]})
        write_json_atomic(log_path, log)
        report.rounds += 1
    report.seconds = time.monotonic() - start
    return report


def _chosen_families(folder: Path) -> dict[str, str]:
    """The estimator family each type's model uses in the profile's bundle, if it has one."""
    path = folder / "bundle.json"
    try:
        return dict(json.loads(path.read_text()).get("chosen", {}))
    except (OSError, ValueError):
        return {}


def _tree(points: np.ndarray):
    from sklearn.neighbors import KDTree

    return KDTree(points)


def _scaled(coverage, records) -> np.ndarray:
    from dnnsplit.predictor.coverage import coordinates

    return coordinates(records) / coverage.scale


def _error_at(measured_points: np.ndarray, residual: np.ndarray,
              points: np.ndarray) -> np.ndarray:
    """The mean out-of-fold error of the measured rows at each distinct point (rows of
    several loads of one kernel share a point)."""
    index = _tree(points).query(measured_points, k=1)[1][:, 0]
    total = np.bincount(index, weights=residual, minlength=len(points))
    count = np.bincount(index, minlength=len(points))
    return total / np.maximum(count, 1)
