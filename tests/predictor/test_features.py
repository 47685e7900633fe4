"""LayerSpec: FLOPs equal hand-computed formulas, bytes and params are right, records are flat."""

import logging
import math

import keras
import pytest

from dnnsplit.predictor.errors import SpecError
from dnnsplit.predictor.features import RECORD_COLUMNS, SPEC_COLUMNS, LayerSpec

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def spec_of(layer, shape, batch=1):
    layer(keras.Input(shape))
    return LayerSpec.from_layer(layer, batch_size=batch)


def test_conv2d_flops_match_formula():
    spec = spec_of(keras.layers.Conv2D(128, 3, padding="same"), (56, 56, 64))
    assert spec.flops == 2 * 56 * 56 * 128 * (3 * 3 * 64) + 56 * 56 * 128
    assert spec.params == 3 * 3 * 64 * 128 + 128
    assert spec.output_shapes == ((1, 56, 56, 128),)
    assert spec.input_bytes == 56 * 56 * 64 * 4
    assert spec.output_bytes == 56 * 56 * 128 * 4


def test_strided_grouped_conv2d_with_activation():
    layer = keras.layers.Conv2D(64, (5, 3), strides=2, groups=4, use_bias=False, activation="relu")
    spec = spec_of(layer, (33, 31, 32))
    ho, wo = (33 - 5) // 2 + 1, (31 - 3) // 2 + 1
    out = ho * wo * 64
    assert spec.output_shapes == ((1, ho, wo, 64),)
    assert spec.flops == 2 * out * 5 * 3 * (32 // 4) + out  # one op per ReLU
    rec = spec.to_record()
    assert (rec["kernel_h"], rec["kernel_w"], rec["stride_h"], rec["groups"]) == (5, 3, 2, 4)
    assert rec["activation"] == "relu" and rec["use_bias"] == 0


def test_depthwise_conv2d_flops_match_formula():
    spec = spec_of(keras.layers.DepthwiseConv2D(3, strides=2, padding="same"), (112, 112, 32))
    out = 56 * 56 * 32
    assert spec.flops == 2 * out * 9 + out
    assert spec.params == 9 * 32 + 32


def test_separable_conv2d_flops_match_formula():
    layer = keras.layers.SeparableConv2D(128, 3, padding="same", depth_multiplier=2)
    spec = spec_of(layer, (28, 28, 64))
    depthwise = 2 * 28 * 28 * 64 * 2 * 9
    pointwise = 2 * 28 * 28 * 128 * (64 * 2)
    assert spec.flops == depthwise + pointwise + 28 * 28 * 128
    assert spec.params == 9 * 64 * 2 + 64 * 2 * 128 + 128


def test_conv2d_transpose_flops_match_formula():
    layer = keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same")
    spec = spec_of(layer, (16, 16, 128))
    assert spec.output_shapes == ((1, 32, 32, 64),)
    assert spec.flops == 2 * (16 * 16 * 128) * 16 * 64 + 32 * 32 * 64


def test_dense_flops_match_formula_and_batch_scales():
    spec = spec_of(keras.layers.Dense(1000), (2048,), batch=8)
    assert spec.flops == 8 * (2 * 2048 * 1000 + 1000)
    assert spec.input_shapes == ((8, 2048),)
    assert spec.to_record()["units"] == 1000 and spec.to_record()["batch"] == 8


def test_pooling_and_merge_rules():
    pool = spec_of(keras.layers.MaxPooling2D(3, strides=2), (55, 55, 8))
    assert pool.flops == 27 * 27 * 8 * 9
    a, b, c = keras.Input((4, 4, 2)), keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    add = keras.layers.Add()
    add([a, b, c])
    assert LayerSpec.from_layer(add).flops == 2 * 4 * 4 * 2
    assert LayerSpec.from_layer(add).input_bytes == 3 * 4 * 4 * 2 * 4


def test_record_has_exactly_the_documented_columns():
    rec = spec_of(keras.layers.Conv2D(8, 3), (10, 10, 3)).to_record()
    assert list(rec) == list(SPEC_COLUMNS)
    assert set(SPEC_COLUMNS) < set(RECORD_COLUMNS)
    assert all(isinstance(v, (int, str)) for v in rec.values())


def test_unknown_layer_type_gets_a_spec_and_is_reported_once(caplog):
    class Mystery(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    with caplog.at_level(logging.WARNING, logger="dnnsplit"):
        first = spec_of(Mystery(), (5, 6))
        spec_of(Mystery(), (5, 6))
    assert not first.modelled
    assert first.flops == math.prod((1, 5, 6))
    assert first.output_bytes == 5 * 6 * 4
    assert sum("Mystery" in r.message for r in caplog.records) == 1


def test_uncalled_layer_and_unknown_shape_raise_clear_errors():
    with pytest.raises(SpecError, match="never been called"):
        LayerSpec.from_layer(keras.layers.Dense(3))
    layer = keras.layers.Conv2D(4, 3)
    layer(keras.Input((None, None, 3)))
    with pytest.raises(SpecError, match="fixed input shape"):
        LayerSpec.from_layer(layer)
