"""Per-layer latency prediction: LayerSpec, features, per-type regressors, bundles."""
