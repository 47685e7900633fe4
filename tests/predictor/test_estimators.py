"""One contract for every regressor family (the scikit-learn way), and portable storage."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from dnnsplit.predictor.estimators import FAMILIES, BundleFormatError, _Family, make
from dnnsplit.predictor.feature_table import feature_frame, feature_names


def toy_data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    records = [{"flops": f, "input_bytes": b, "output_bytes": b / 2, "load": l,
                "in_c": 16, "fused_pattern": "Conv2D+BatchNormalization", "activation": "relu",
                "padding": "same"}
               for f, b, l in zip(rng.uniform(1e5, 1e8, n), rng.uniform(1e3, 1e6, n),
                                  rng.choice([0.0, 0.5], n))]
    X = feature_frame(records)
    y = np.array([(1e-3 + r["flops"] / 1e8 + r["input_bytes"] / 1e7) * (1 + r["load"])
                  for r in records])
    return X, y


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_contract(family):
    est = make(family)
    params = est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(toy_data(5)[0])
    X, y = toy_data()
    assert est.fit(X, y) is est
    assert est.get_params() == params  # constructor parameters untouched by fit
    assert all(hasattr(est, a) for a in ("feature_names_",))
    pred = est.predict(X)
    assert pred.shape == y.shape and np.all(pred > 0)
    assert np.median(np.abs(pred - y) / y) < 0.5  # it learned something
    shuffled = X[list(reversed(X.columns))]
    assert np.allclose(est.predict(shuffled), pred)  # features are read by name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_round_trips_through_json_with_identical_predictions(family):
    X, y = toy_data()
    est = make(family).fit(X, y)
    again = _Family.from_dict(json.loads(json.dumps(est.to_dict())))
    assert type(again) is type(est)
    assert np.array_equal(again.predict(X), est.predict(X))


def test_unknown_family_and_corrupt_state_are_refused():
    with pytest.raises(Exception, match="unknown estimator family"):
        make("deep-magic")
    with pytest.raises(BundleFormatError, match="unknown estimator family"):
        _Family.from_dict({"family": "nope"})
    X, y = toy_data()
    data = make("xgboost").fit(X, y).to_dict()
    data["state"]["xgboost_ubj"] = "bm90IGEgbW9kZWw="  # base64 of "not a model"
    with pytest.raises(BundleFormatError, match="XGBoost cannot read"):
        _Family.from_dict(data)


def test_feature_frame_is_named_and_complete():
    frame = feature_frame([{"flops": 10, "fused_pattern": "Conv2D+ReLU"}])
    assert list(frame.columns) == feature_names()
    assert frame.loc[0, "fused_ReLU"] == 1.0 and frame.loc[0, "fused_BatchNormalization"] == 0
    assert isinstance(frame, pd.DataFrame) and frame.notna().all().all()


def test_anchored_families_extrapolate_in_size_where_trees_alone_cannot():
    rng = np.random.default_rng(1)
    flops = rng.uniform(1e5, 1e7, 120)
    records = [{"flops": f, "input_bytes": f / 100, "output_bytes": f / 200} for f in flops]
    y = flops / 1e6
    big = feature_frame([{"flops": 1e8, "input_bytes": 1e6, "output_bytes": 5e5}])
    truth = 100.0
    for family in ("anchored_forest", "anchored_gbm"):
        anchored = make(family).fit(feature_frame(records), y).predict(big)[0]
        assert abs(anchored / truth - 1) < 0.3, family
    trees = make("forest").fit(feature_frame(records), y).predict(big)[0]
    assert trees < 0.2 * truth  # capped near the largest training time (10)
