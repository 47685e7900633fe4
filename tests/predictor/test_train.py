"""Training data grouping: rows are learned under the type they are predicted as."""

from pathlib import Path

from dnnsplit.predictor.fusion import OPS_AS_LAYERS
from dnnsplit.predictor.train import load_records

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "cpu-1t-tensorflow"


def test_keras_ops_rows_train_the_layer_they_are_predicted_as():
    grouped = load_records(SHIPPED)
    assert not [t for t in grouped if t in OPS_AS_LAYERS]  # no model nobody would ask for
    constant_adds = [r for r in grouped["Add"] if r["n_inputs"] == "1"]
    assert constant_adds  # MobileNetV3's x + 3 (one tensor input, a constant operand)
    assert all(r["layer_type"] == "ops.Add" for r in constant_adds)
