"""Train a profile's predictor: per layer type, the family with the lowest k-fold CV error.

>>> bundle = train("datasets/cpu-1t-tensorflow")        # doctest: +SKIP
>>> bundle.cv["Conv2D"]                                  # doctest: +SKIP
{'linear': 0.61, 'loglinear': 0.22, 'forest': 0.12, 'gbm': 0.09, 'xgboost': 0.08}

The error is the mean absolute relative error of the drift-normalised time. Types with few
rows use fewer folds; below ``MIN_ROWS_FOR_CV`` only the log-linear family is fitted. A generic
log-linear model over all rows is the fallback for layer types without their own model.
The weight-streaming fit stored with the profile (``weight-streaming.json``) is taken over
as it is. Afterwards one model-level correction (a scale on the kernel sum) is fitted on the
*training* models' ground truth (``models.csv``), never on the evaluation models; with it,
each layer type's mean share of the training models' predicted time (``meta["type_shares"]``,
what a quick collection on a new device spends its minutes by).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dnnsplit.predictor.bundle import (GROUND_TRUTH_NAME, STREAMING_NAME, Bundle, ProfileError,
                                       data_hash, kernel_csvs, library_versions)
from dnnsplit.predictor.coverage import fit_coverage
from dnnsplit.predictor.estimators import FAMILIES, make
from dnnsplit.predictor.feature_table import error_floor, feature_frame, feature_names, target
from dnnsplit.predictor.files import read_json
from dnnsplit.predictor.records import reference_probe_ms

MIN_ROWS_FOR_CV = 8
FOLDS = 5


def load_records(folder: str | Path) -> dict[str, list[dict]]:
    """Kernel rows of a profile folder grouped by the kernel's first layer type (a keras.ops
    call, such as a constant added by ``ops.add``, with the layer it is predicted as)."""
    from dnnsplit.predictor.features import NUMERIC_COLUMNS, RECORD_COLUMNS
    from dnnsplit.predictor.fusion import OPS_AS_LAYERS
    from dnnsplit.predictor.records import read_rows

    grouped: dict[str, list[dict]] = defaultdict(list)
    for path in kernel_csvs(folder):
        for row in read_rows(path, list(RECORD_COLUMNS), numeric=NUMERIC_COLUMNS,
                             positive=("ref_probe_ms",)):
            grouped[OPS_AS_LAYERS.get(row["layer_type"], row["layer_type"])].append(row)
    return dict(grouped)


def relative_error(pred: np.ndarray, truth: np.ndarray, floor: np.ndarray | float = 0.0) -> float:
    """Mean of |pred - truth| / max(truth, floor)."""
    return float(np.mean(np.abs(pred - truth) / np.maximum(truth, floor)))


def cross_validate(records: Sequence[dict], families: Iterable[str],
                   folds: int = FOLDS, seed: int = 0) -> dict[str, float]:
    from sklearn.model_selection import KFold

    X, y, floor = feature_frame(records), target(records), error_floor(records)
    k = min(folds, len(records))
    result = {}
    for family in families:
        predictions = np.empty_like(y)
        for train_idx, test_idx in KFold(k, shuffle=True, random_state=seed).split(X):
            est = make(family).fit(X.iloc[train_idx], y[train_idx])
            predictions[test_idx] = est.predict(X.iloc[test_idx])
        result[family] = relative_error(predictions, y, floor)
    return result


def train(folder: str | Path, families: Sequence[str] | None = None,
          progress: bool = False, per_row_probe: bool = True) -> Bundle:
    """Train a bundle from a profile folder.

    With ``per_row_probe`` (the default) every row's time is divided by the probe timed in its
    own window; otherwise by the profile's median probe (a constant). Which one is better
    depends on how well the probe tracks the machine's drift: with the shipped profile's
    16 ms probe, normalising by it removes more noise than it adds (benchmarks/repeatability.py:
    18.7% raw vs 15.6% normalised median difference between two collections), and it fits the
    *training* models' ground truth at least as well (median absolute error 6.5% vs 7.8%,
    2026-11-24; datasets/README.md).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ProfileError(f"{folder} is not a folder: give the folder `collectors collect "
                           "--out` wrote (datasets/<profile>)")
    grouped = load_records(folder)
    ground_truth = read_ground_truth(folder)  # checked now, before any training
    if not grouped:
        raise ProfileError(f"no measurement rows in {folder}: run `collectors collect` first")
    reference = reference_probe_ms(r for rows in grouped.values() for r in rows)
    if not per_row_probe:
        grouped = {t: [dict(r, ref_probe_ms=reference) for r in rows]
                   for t, rows in grouped.items()}
    families = list(families or FAMILIES)
    all_records = [r for rows in grouped.values() for r in rows]
    types, cv, chosen, rows = {}, {}, {}, {}
    items = sorted(grouped.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="train", unit="type")
    for layer_type, records in items:
        rows[layer_type] = len(records)
        if len(records) < MIN_ROWS_FOR_CV:
            scores = {"loglinear": math.nan}
        else:
            scores = cross_validate(records, families)
        cv[layer_type] = scores
        best = min(scores, key=lambda f: (math.isnan(scores[f]), scores[f]))
        chosen[layer_type] = best
        types[layer_type] = make(best).fit(feature_frame(records), target(records))
    fallback = make("loglinear").fit(feature_frame(all_records), target(all_records))
    coverage = {layer_type: fit_coverage(records) for layer_type, records in grouped.items()}
    overheads = [float(r["overhead_ms"]) for r in all_records if r["load_target"] == "0"]
    bundle = Bundle(
        profile=folder.name, types=types, fallback=fallback, feature_names=feature_names(),
        reference_probe_ms=reference,
        call_overhead_ms=statistics.median(overheads or [0.0]),
        cv=cv, chosen=chosen, rows=rows, versions=library_versions(),
        data_hash=data_hash(folder),
        meta={"target": "per-row probe" if per_row_probe else "profile median probe",
              **measured_runtime(all_records)},
        coverage=coverage,
    )
    bundle.streaming = read_streaming(folder)
    fit_correction(bundle, folder, ground_truth)
    return bundle


def measured_runtime(records: Sequence[dict]) -> dict:
    """``{"backend": ..., "threads": ...}`` most rows were measured with (empty without
    rows)."""
    from collections import Counter

    pairs = Counter((str(r.get("backend") or "tensorflow"), int(float(r.get("threads") or 1)))
                    for r in records)
    if not pairs:
        return {}
    (backend, threads), _ = pairs.most_common(1)[0]
    return {"backend": backend, "threads": threads}


def read_ground_truth(folder: Path) -> list[dict[str, str]] | None:
    """The rows of a profile's ``models.csv``, numbers checked; None without one."""
    from dnnsplit.predictor.records import GROUND_TRUTH_NUMBERS, read_rows

    truth = Path(folder) / GROUND_TRUTH_NAME
    if not truth.exists():
        return None
    return read_rows(truth, ["model", "split", *GROUND_TRUTH_NUMBERS],
                     numeric=GROUND_TRUTH_NUMBERS, positive=("ref_probe_ms", "median_ms"))


def read_streaming(folder: Path) -> dict[str, float]:
    """The weight-streaming fit stored with the profile (``collectors streaming``), or {}."""
    path = Path(folder) / STREAMING_NAME
    if not path.exists():
        return {}
    data = read_json(path, "weight-streaming fit", ProfileError)
    try:
        return {k: float(data[k]) for k in ("per_mib", "threshold_mib", "cache_mib")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{path} is not a weight-streaming fit (collectors streaming): "
                           f"{exc}") from None


def fit_correction(bundle: Bundle, folder: Path,
                   ground_truth: list[dict[str, str]] | None = None) -> None:
    """Scale on the kernel sum fitted on the training models' unloaded ground truth
    (``ground_truth``: the rows of ``models.csv``, read from ``folder`` if not given)."""
    rows = ground_truth if ground_truth is not None else read_ground_truth(folder)
    if rows is None:
        bundle.meta["correction"] = "none: no models.csv"
        return
    per_row = bundle.meta.get("target") == "per-row probe"
    ratios, used, shares = [], [], []
    for row in rows:
        if row["split"] != "train" or row["load_target"] != "0":
            continue
        probe = float(row["ref_probe_ms"]) if per_row else bundle.reference_probe_ms
        measured = float(row["median_ms"]) / probe
        kernels, by_type = predict_model_by_type(bundle, row["model"], float(row["load"]))
        ratios.append(math.log(measured / kernels))
        shares.append(by_type)
        used.append(row["model"])
    if ratios:
        bundle.correction = math.exp(statistics.median(ratios))
        bundle.meta["correction"] = {"fitted_on": used, "method": "exp(median log ratio)",
                                     "spread_log": statistics.pstdev(ratios)}
        bundle.meta["type_shares"] = mean_type_shares(shares)


def mean_type_shares(per_model: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each layer type's share of a model's kernel time, averaged over models (each model's
    ``{type: time}`` in any unit)."""
    shares = [{t: v / sum(times.values()) for t, v in times.items()} for times in per_model
              if sum(times.values()) > 0]
    types = sorted({t for share in shares for t in share})
    return {t: round(statistics.fmean(s.get(t, 0.0) for s in shares), 6) for t in types}


def predict_model_by_type(bundle: Bundle, model_name: str,
                          load: float = 0.0) -> tuple[float, dict[str, float]]:
    """A named model's uncorrected time in probe units (kernels and call overhead), and the
    kernels' part per layer type (of each kernel's first layer)."""
    from dnnsplit.predictor.compose import predict_graph
    from dnnsplit.predictor.fusion import OPS_AS_LAYERS
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    tg = TaskGraph.from_keras(load_model(model_name))
    prediction = predict_graph(bundle, tg, load=load, probe_ms=1.0, corrected=False)
    by_type: dict[str, float] = defaultdict(float)
    for kernel, units in prediction.kernel_ms:
        first = tg.graph.nodes[kernel.nodes[0]]["layer_type"]
        by_type[OPS_AS_LAYERS.get(first, first)] += units
    import_keras().backend.clear_session()
    return prediction.total_ms, dict(by_type)
