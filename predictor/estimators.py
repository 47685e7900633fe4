"""Regressor families for per-kernel latency, in the scikit-learn style, stored portably.

Every family: the constructor stores its parameters untouched; ``fit(X, y)`` learns from a
DataFrame of named features and sets attributes ending in ``_``; ``predict`` refuses before
``fit``; ``to_dict`` / ``from_dict`` give a JSON-able form that does not depend on pickles
(coefficients, or XGBoost's own model format in its binary-JSON encoding, UBJSON).

| family | model | target |
|---|---|---|
| ``linear`` | least squares on FLOPs and bytes (Neurosurgeon-style) | time |
| ``loglinear`` | ridge on the log-features | log time |
| ``forest`` | random forest (XGBoost's ``XGBRFRegressor``, portable JSON) | log time |
| ``gbm`` | gradient boosting with shallow trees (depth 3) | log time |
| ``xgboost`` | XGBoost with deeper, subsampled trees (depth 6) | log time |
| ``anchored_forest`` | ``loglinear`` x a ``forest`` fitted on its ratio | log time |
| ``anchored_gbm`` | ``loglinear`` x a ``gbm`` fitted on its ratio | log time |
| ``transfer`` | another device's estimator x a fitted ratio (see ``predictor.transfer``) | ratio |

Trees alone predict no time beyond the largest they were trained on; the anchored families
keep the log-linear trend (which extrapolates in size) and let the trees learn the shape
around it.

Targets are drift-normalised times (see :func:`dnnsplit.predictor.feature_table.target`),
always > 0.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError

from dnnsplit.predictor.errors import DnnsplitError


class BundleFormatError(DnnsplitError):
    """A stored estimator cannot be read back with the installed libraries."""


class _Family(BaseEstimator, RegressorMixin):
    family = ""

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _frame(self, X) -> pd.DataFrame:
        self._check_fitted()
        if isinstance(X, pd.DataFrame):
            return X.reindex(columns=self.feature_names_, fill_value=0.0)
        return pd.DataFrame(np.asarray(X, dtype=float), columns=self.feature_names_)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"family": self.family, "params": self.get_params(),
                "feature_names": list(self.feature_names_), "state": self._state()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "_Family":
        family = STORED_FAMILIES.get(data.get("family"))
        if family is None:
            raise BundleFormatError(f"unknown estimator family {data.get('family')!r}")
        est = family(**data["params"])
        est.feature_names_ = list(data["feature_names"])
        est._load_state(data["state"])
        return est


class LinearFamily(_Family):
    """time ~ a + b * flops + c * input_bytes + d * output_bytes (+ load interaction)."""

    family = "linear"
    COLUMNS = ("flops", "input_bytes", "output_bytes", "load")

    def __init__(self, ridge: float = 1e-6):
        self.ridge = ridge

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [frame[c].to_numpy() for c in self.COLUMNS if c in frame]
        flops = frame["flops"].to_numpy() if "flops" in frame else np.zeros(len(frame))
        load = frame["load"].to_numpy() if "load" in frame else np.zeros(len(frame))
        X = np.column_stack([np.ones(len(frame))] + cols + [flops * load])
        return X / self.scale_ if hasattr(self, "scale_") else X

    def fit(self, X: pd.DataFrame, y):
        self.feature_names_ = list(X.columns)
        raw = self._design(X)
        self.scale_ = np.maximum(np.abs(raw).max(axis=0), 1e-12)
        A = raw / self.scale_
        self.coef_ = np.linalg.solve(A.T @ A + self.ridge * np.eye(A.shape[1]),
                                     A.T @ np.asarray(y, dtype=float))
        return self

    def predict(self, X) -> np.ndarray:
        frame = self._frame(X)
        return np.maximum(self._design(frame) @ self.coef_, 1e-6)

    def _state(self):
        return {"coef": self.coef_.tolist(), "scale": self.scale_.tolist()}

    def _load_state(self, state):
        self.coef_ = np.asarray(state["coef"], dtype=float)
        self.scale_ = np.asarray(state["scale"], dtype=float)


class LogLinearFamily(_Family):
    """log time ~ ridge regression on the log-size features and load (standardised)."""

    family = "loglinear"

    def __init__(self, alpha: float = 3.0):
        self.alpha = alpha

    def fit(self, X: pd.DataFrame, y):
        from dnnsplit.predictor.feature_table import LOGLINEAR_COLUMNS

        self.feature_names_ = [c for c in LOGLINEAR_COLUMNS if c in X.columns]
        A = X[self.feature_names_].to_numpy(dtype=float)
        self.mean_ = A.mean(axis=0)
        self.std_ = np.where(A.std(axis=0) > 0, A.std(axis=0), 1.0)
        Z = (A - self.mean_) / self.std_
        t = np.log(np.asarray(y, dtype=float))
        self.intercept_ = float(t.mean())
        self.coef_ = np.linalg.solve(Z.T @ Z + self.alpha * np.eye(Z.shape[1]),
                                     Z.T @ (t - self.intercept_))
        return self

    def predict(self, X) -> np.ndarray:
        Z = (self._frame(X).to_numpy(dtype=float) - self.mean_) / self.std_
        return np.exp(np.clip(Z @ self.coef_ + self.intercept_, -30, 30))

    def _state(self):
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_}

    def _load_state(self, state):
        self.mean_ = np.asarray(state["mean"], dtype=float)
        self.std_ = np.asarray(state["std"], dtype=float)
        self.coef_ = np.asarray(state["coef"], dtype=float)
        self.intercept_ = float(state["intercept"])


class _XGBFamily(_Family):
    """Trees on log time with XGBoost; stored in XGBoost's JSON model format."""

    def _regressor(self):
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y):
        self.feature_names_ = list(X.columns)
        model = self._regressor()
        model.fit(X.to_numpy(dtype=float), np.log(np.asarray(y, dtype=float)))
        self.booster_ = model.get_booster()
        return self

    def predict(self, X) -> np.ndarray:
        import xgboost

        matrix = xgboost.DMatrix(self._frame(X).to_numpy(dtype=float))
        return np.exp(np.clip(self.booster_.predict(matrix), -30, 30))

    def _state(self):
        # UBJSON: XGBoost's binary form of its JSON model schema (stable across versions)
        raw = self.booster_.save_raw(raw_format="ubj")
        return {"xgboost_ubj": base64.b64encode(bytes(raw)).decode()}

    def _load_state(self, state):
        import xgboost

        booster = xgboost.Booster()
        try:
            booster.load_model(bytearray(base64.b64decode(state["xgboost_ubj"])))
        except xgboost.core.XGBoostError as exc:
            raise BundleFormatError(f"XGBoost cannot read the stored model: {exc}") from None
        self.booster_ = booster


class ForestFamily(_XGBFamily):
    family = "forest"

    def __init__(self, n_estimators: int = 100, max_depth: int = 8, subsample: float = 0.8,
                 colsample_bynode: float = 0.6, seed: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bynode = colsample_bynode
        self.seed = seed

    def _regressor(self):
        from xgboost import XGBRFRegressor

        return XGBRFRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                              subsample=self.subsample, colsample_bynode=self.colsample_bynode,
                              random_state=self.seed, n_jobs=1)


class GBMFamily(_XGBFamily):
    family = "gbm"

    def __init__(self, n_estimators: int = 400, max_depth: int = 3,
                 learning_rate: float = 0.08, seed: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed

    def _regressor(self):
        from xgboost import XGBRegressor

        return XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                            learning_rate=self.learning_rate, random_state=self.seed, n_jobs=1)


class XGBoostFamily(_XGBFamily):
    family = "xgboost"

    def __init__(self, n_estimators: int = 300, max_depth: int = 6,
                 learning_rate: float = 0.08, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, seed: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.seed = seed

    def _regressor(self):
        from xgboost import XGBRegressor

        return XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                            learning_rate=self.learning_rate, subsample=self.subsample,
                            colsample_bytree=self.colsample_bytree, random_state=self.seed,
                            n_jobs=1)


class _AnchoredFamily(_Family):
    """time = loglinear(X) * trees(X), the trees fitted on time / loglinear(X)."""

    trees: type[_XGBFamily]

    def __init__(self, alpha: float = 3.0, seed: int = 0):
        self.alpha = alpha
        self.seed = seed

    def fit(self, X: pd.DataFrame, y):
        self.feature_names_ = list(X.columns)
        self.base_ = LogLinearFamily(alpha=self.alpha).fit(X, y)
        ratio = np.asarray(y, dtype=float) / self.base_.predict(X)
        self.trees_ = self.trees(seed=self.seed).fit(X, ratio)
        return self

    def predict(self, X) -> np.ndarray:
        frame = self._frame(X)
        return self.base_.predict(frame) * self.trees_.predict(frame)

    def _state(self):
        return {"base": self.base_.to_dict(), "trees": self.trees_.to_dict()}

    def _load_state(self, state):
        self.base_ = _Family.from_dict(state["base"])
        self.trees_ = _Family.from_dict(state["trees"])


class AnchoredForestFamily(_AnchoredFamily):
    family = "anchored_forest"
    trees = ForestFamily


class AnchoredGBMFamily(_AnchoredFamily):
    family = "anchored_gbm"
    trees = GBMFamily


class TransferFamily(_Family):
    """time = base(X) * exp(log ratio), ``base`` a fitted estimator of another device.

    ``form`` says how the log ratio is modelled (fitted on this device's rows; ``prior``, the
    log ratio of the whole device, and ``prior_rows`` are given by the caller):

    - ``device``: the prior itself (the base scaled by one number);
    - ``type``: the rows' mean log ratio shrunk toward the prior,
      ``(n * mean + prior_rows * prior) / (n + prior_rows)``;
    - ``trend``: ``type`` plus ridge slopes (``alpha``) on the standardised log sizes, the load
      and the log of the base's prediction (a speed-up that grows with the kernel's size);
    - ``trees``: a ``gbm`` on the ratio over the same columns (needs many rows).
    """

    family = "transfer"
    FORMS = ("device", "type", "trend", "trees")

    def __init__(self, form: str = "type", prior: float = 0.0, prior_rows: float = 5.0,
                 alpha: float = 10.0):
        self.form = form
        self.prior = prior
        self.prior_rows = prior_rows
        self.alpha = alpha

    def _ratio_frame(self, frame: pd.DataFrame, base_pred: np.ndarray) -> pd.DataFrame:
        from dnnsplit.predictor.feature_table import LOGLINEAR_COLUMNS

        columns = {c: frame[c].to_numpy(dtype=float) for c in LOGLINEAR_COLUMNS if c in frame}
        columns["log_base"] = np.log(base_pred)
        return pd.DataFrame(columns, index=frame.index)

    def fit(self, X: pd.DataFrame, y, base: _Family):
        if self.form not in self.FORMS:
            raise DnnsplitError(f"unknown transfer form {self.form!r}: {', '.join(self.FORMS)}")
        self.feature_names_ = list(base.feature_names_)
        self.base_ = base
        y = np.asarray(y, dtype=float)
        self.offset_, self.coef_, self.trees_ = float(self.prior), None, None
        self.mean_ = self.std_ = None
        if len(y) == 0 or self.form == "device":
            return self
        frame = self._frame(X)
        base_pred = base.predict(frame)
        log_ratio = np.log(y) - np.log(base_pred)
        n = len(y)
        self.offset_ = float((n * log_ratio.mean() + self.prior_rows * self.prior)
                             / (n + self.prior_rows))
        if self.form == "trend":
            A = self._ratio_frame(frame, base_pred).to_numpy(dtype=float)
            self.mean_ = A.mean(axis=0)
            self.std_ = np.where(A.std(axis=0) > 0, A.std(axis=0), 1.0)
            Z = (A - self.mean_) / self.std_
            self.coef_ = np.linalg.solve(Z.T @ Z + self.alpha * np.eye(Z.shape[1]),
                                         Z.T @ (log_ratio - self.offset_))
        elif self.form == "trees":
            self.trees_ = GBMFamily().fit(self._ratio_frame(frame, base_pred), np.exp(log_ratio))
        return self

    def predict(self, X) -> np.ndarray:
        frame = self._frame(X)
        base_pred = self.base_.predict(frame)
        if self.trees_ is not None:
            return base_pred * self.trees_.predict(self._ratio_frame(frame, base_pred))
        log_ratio = np.full(len(frame), self.offset_)
        if self.coef_ is not None:
            A = self._ratio_frame(frame, base_pred).to_numpy(dtype=float)
            log_ratio = log_ratio + ((A - self.mean_) / self.std_) @ self.coef_
        return base_pred * np.exp(np.clip(log_ratio, -30, 30))

    def _state(self):
        return {"base": self.base_.to_dict(), "offset": self.offset_,
                "coef": None if self.coef_ is None else self.coef_.tolist(),
                "mean": None if self.mean_ is None else self.mean_.tolist(),
                "std": None if self.std_ is None else self.std_.tolist(),
                "trees": None if self.trees_ is None else self.trees_.to_dict()}

    def _load_state(self, state):
        def array(key):
            return None if state[key] is None else np.asarray(state[key], dtype=float)

        self.base_ = _Family.from_dict(state["base"])
        self.offset_ = float(state["offset"])
        self.coef_, self.mean_, self.std_ = array("coef"), array("mean"), array("std")
        self.trees_ = None if state["trees"] is None else _Family.from_dict(state["trees"])


#: The families trained from a device's own rows (what ``predictor train`` chooses among).
FAMILIES: dict[str, type[_Family]] = {
    cls.family: cls for cls in (LinearFamily, LogLinearFamily, ForestFamily, GBMFamily,
                                XGBoostFamily, AnchoredForestFamily, AnchoredGBMFamily)
}
#: Every family a bundle may store (``transfer`` wraps another device's estimator).
STORED_FAMILIES: dict[str, type[_Family]] = {**FAMILIES, TransferFamily.family: TransferFamily}


def make(family: str, **params) -> _Family:
    try:
        return FAMILIES[family](**params)
    except KeyError:
        raise DnnsplitError(f"unknown estimator family {family!r}: "
                            f"{', '.join(FAMILIES)}") from None
