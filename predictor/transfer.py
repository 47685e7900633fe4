"""A new device's predictor as a transform of a base profile's, from few measurements.

>>> bundle = train_transfer("datasets/my-phone", base="cpu-1t-tensorflow")   # doctest: +SKIP

The model, per layer type ``t``, in the new device's probe units::

    time_new(x) = base_t(x) * exp(r_t(x))

``base_t`` is the base profile's trained estimator of the type (its own probe units; the
ratio absorbs the change of unit) and ``r_t`` the log ratio, in one of the forms of
:class:`~dnnsplit.predictor.estimators.TransferFamily`: ``device`` (one number for the whole
device, the median log ratio over all its rows: what a one-number calibration does),
``type`` (the type's mean, shrunk toward the device's number by pseudo-rows estimated from how
much the types differ, :func:`shrinkage_rows`),
``trend`` (slopes on the kernel's size, load and the base's own prediction: a device whose
advantage grows with the kernel, as more threads do) or ``trees``. Each type takes the form
with the lowest k-fold CV error on its new rows (mean absolute log error: symmetric in over-
and under-prediction) (``type`` below ``MIN_ROWS_FOR_CV`` rows,
``device`` without rows; ``trees`` from ``MIN_ROWS_FOR_TREES``). A type the base has no
model of is trained from the new rows alone if it has enough, else taken by the base's
fallback times the device's number.

The rest of the bundle: the new rows' probe and call overhead; the base's coverage (the
transfer predicts where the base measured); the base's weight-streaming cost times the
device's ratio; the model-level correction fitted on the new device's own training-model
ground truth when its folder has one, else the base's. ``meta["base"]`` names the base, so a
stale bundle is rebuilt as a transfer again (:func:`~dnnsplit.predictor.bundle.load_bundle`).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np

from dnnsplit.predictor.bundle import (Bundle, ProfileError, data_hash, library_versions,
                                       load_bundle, profile_dir)
from dnnsplit.predictor.estimators import TransferFamily, make
from dnnsplit.predictor.feature_table import error_floor, feature_frame, target

#: Pseudo-rows of the device's ratio behind each type's own mean when there are too few
#: types to estimate them (:func:`shrinkage_rows`), and at most.
PRIOR_ROWS = 5.0
MAX_PRIOR_ROWS = 50.0
MIN_ROWS_FOR_CV = 4
MIN_ROWS_FOR_TREES = 40
#: A type the base cannot predict is trained from scratch from this many new rows.
MIN_ROWS_OWN = 8
FOLDS = 5


def log_ratios(base: Bundle, grouped: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    """Per layer type, log(new time / base prediction) of each new row."""
    out = {}
    for layer_type, rows in grouped.items():
        estimator = base.types.get(layer_type, base.fallback)
        out[layer_type] = np.log(target(rows)) - np.log(estimator.predict(feature_frame(rows)))
    return out


def device_log_ratio(base: Bundle, grouped: dict[str, list[dict]]) -> float:
    """Median over all new rows of log(new time / base prediction): the device in one number."""
    ratios = np.concatenate(list(log_ratios(base, grouped).values()) or [np.array([])])
    if not len(ratios):
        raise ProfileError("no measurement rows to transfer from: run `collectors collect "
                           "--quick` first")
    return float(np.median(ratios))


def shrinkage_rows(ratios: dict[str, np.ndarray], prior: float) -> float:
    """Pseudo-rows of the device's number behind a type's mean (empirical Bayes): the spread
    of log ratios within a type over the spread of the types' means around the device's
    number. Types that agree with each other lean on the device; types that differ clearly
    (the means far apart, the rows of each close together) stand on their own rows."""
    groups = [r for r in ratios.values() if len(r) >= 2]
    if len(groups) < 2:
        return PRIOR_ROWS
    within = float(np.mean([np.var(r, ddof=1) for r in groups]))
    between = float(np.mean([(np.mean(r) - prior) ** 2 - np.var(r, ddof=1) / len(r)
                             for r in groups]))
    if between <= 0:
        return MAX_PRIOR_ROWS
    return float(np.clip(within / between, 0.0, MAX_PRIOR_ROWS))


def log_error(pred: np.ndarray, truth: np.ndarray, floor: np.ndarray | float = 0.0) -> float:
    """Mean of |log(max(pred, floor) / max(truth, floor))|: symmetric, so that a form that
    over-predicts a few tiny kernels ten times over (a relative error of 900% each) is not
    outscored by one that under-predicts a whole layer type twenty times over (95% each)."""
    return float(np.mean(np.abs(np.log(np.maximum(pred, floor) / np.maximum(truth, floor)))))


def cv_forms(rows: Sequence[dict], base_estimator, prior: float,
             forms: Sequence[str], prior_rows: float = PRIOR_ROWS,
             folds: int = FOLDS) -> dict[str, float]:
    """Mean absolute log error (:func:`log_error`) of each transfer form in k-fold CV over
    ``rows``."""
    from sklearn.model_selection import KFold

    X, y, floor = feature_frame(rows), target(rows), error_floor(rows)
    k = min(folds, len(rows))
    errors = {}
    for form in forms:
        predictions = np.empty_like(y)
        for train_idx, test_idx in KFold(k, shuffle=True, random_state=0).split(X):
            est = TransferFamily(form=form, prior=prior, prior_rows=prior_rows).fit(
                X.iloc[train_idx], y[train_idx], base_estimator)
            predictions[test_idx] = est.predict(X.iloc[test_idx])
        errors[form] = log_error(predictions, y, floor)
    return errors


def candidate_forms(n_rows: int, forms: Sequence[str]) -> list[str]:
    allowed = [f for f in forms if f != "trees" or n_rows >= MIN_ROWS_FOR_TREES]
    return allowed or ["device"]


def train_transfer(folder: str | Path, base: str | Path | Bundle,
                   forms: Sequence[str] = TransferFamily.FORMS,
                   progress: bool = False) -> Bundle:
    """The bundle of the device measured in ``folder``, as a transform of ``base`` (see the
    module docstring). ``forms`` limits the ratio's forms (``("device",)``: the base scaled
    by one calibration number)."""
    from dnnsplit.predictor.train import (fit_correction, load_records, measured_runtime,
                                          read_ground_truth, read_streaming)

    folder = Path(folder)
    if not folder.is_dir():
        raise ProfileError(f"{folder} is not a folder: give the folder `collectors collect "
                           "--out` wrote")
    base_bundle = base if isinstance(base, Bundle) else load_bundle(base)
    if base_bundle.meta.get("base"):
        raise ProfileError(f"{base_bundle.profile} is itself a transfer of "
                           f"{base_bundle.meta['base']}: give a profile trained from its own "
                           "measurements as --base")
    grouped = load_records(folder)
    ground_truth = read_ground_truth(folder)
    prior = device_log_ratio(base_bundle, grouped)
    prior_rows = shrinkage_rows(log_ratios(base_bundle, grouped), prior)
    types, cv, chosen, rows = {}, {}, {}, {}
    items = sorted(set(base_bundle.types) | set(grouped))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="transfer", unit="type")
    for layer_type in items:
        records = grouped.get(layer_type, [])
        rows[layer_type] = len(records)
        base_estimator = base_bundle.types.get(layer_type)
        if base_estimator is None:
            if len(records) < MIN_ROWS_OWN:
                continue  # predicted by the fallback
            types[layer_type] = make("loglinear").fit(feature_frame(records), target(records))
            chosen[layer_type], cv[layer_type] = "loglinear (own rows)", {}
            continue
        allowed = candidate_forms(len(records), forms)
        if len(records) >= MIN_ROWS_FOR_CV and len(allowed) > 1:
            scores = cv_forms(records, base_estimator, prior, allowed, prior_rows)
            form = min(scores, key=scores.get)
        else:
            scores = {}
            form = "type" if records and "type" in allowed else allowed[0]
        cv[layer_type] = scores
        chosen[layer_type] = f"transfer:{form}"
        types[layer_type] = TransferFamily(form=form, prior=prior, prior_rows=prior_rows).fit(
            feature_frame(records), target(records), base_estimator)
    fallback = TransferFamily(form="device", prior=prior).fit(
        feature_frame([]), np.array([]), base_bundle.fallback)
    all_rows = [r for records in grouped.values() for r in records]
    from dnnsplit.predictor.records import reference_probe_ms

    overheads = [float(r["overhead_ms"]) for r in all_rows if r["load_target"] == "0"]
    bundle = Bundle(
        profile=folder.name, types=types, fallback=fallback,
        feature_names=list(base_bundle.feature_names),
        reference_probe_ms=reference_probe_ms(all_rows),
        call_overhead_ms=statistics.median(overheads) if overheads
        else base_bundle.call_overhead_ms,
        correction=base_bundle.correction,
        cv=cv, chosen=chosen, rows=rows, versions=library_versions(),
        data_hash=data_hash(folder),
        meta={"target": base_bundle.meta.get("target", "per-row probe"),
              "base": base_bundle.profile if isinstance(base, Bundle) else str(base),
              "base_hash": base_bundle.data_hash,
              "device_log_ratio": prior, "prior_rows": prior_rows, "forms": list(forms),
              "correction": f"the base's ({base_bundle.profile})",
              **measured_runtime(all_rows)},
        coverage=dict(base_bundle.coverage),
    )
    streaming = read_streaming(folder) or dict(base_bundle.streaming)
    if streaming and not (folder / "weight-streaming.json").exists():
        streaming["per_mib"] *= math.exp(prior)
    bundle.streaming = streaming
    if ground_truth and any(r["split"] == "train" and r["load_target"] == "0"
                            for r in ground_truth):
        fit_correction(bundle, folder, ground_truth)
    return bundle


def base_of(folder: str | Path) -> str | None:
    """The base profile a stored bundle in ``folder`` was transferred from, or None."""
    import json

    path = profile_dir(folder) / "bundle.json"
    try:
        return json.loads(path.read_text()).get("meta", {}).get("base")
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["train_transfer", "device_log_ratio", "cv_forms", "base_of"]
