"""The reference probe: a fixed small network timed in the same window as every measurement.

The machines drift (the same model alternates between speeds about 1.4x apart within minutes)
while two things timed in the same minute keep their ratio. So every record carries the probe's
time from its window, and predictions can be scaled to the machine's present speed by timing
the probe now (``collectors calibrate``, about a second).

The probe is a miniature of the networks we predict — conv-BN-ReLU, depthwise conv, a residual
add, pooling and a dense layer — at 128 channels (about 16 ms on one thread). Chosen by
measurement (``benchmarks/probe_tracking.py``, ``docs/probe-tracking.md``): over 40 windows in
14 minutes of drift, whole-model time divided by this probe varied least (median CV 5.9% vs
7.0% for the raw times); the same network at 32 channels (1.8 ms, the first probe) and single
layers (0.5-2.7 ms) varied as much as or more than the raw times, their own timing noise
outweighing the drift they cancel.
"""

from __future__ import annotations

import statistics
import time

from dnnsplit.collectors.timing import (StopRule, compile_forward, place_inputs, random_inputs,
                                        sample)
from dnnsplit.predictor.keras_env import import_keras

PROBE_INPUT = (1, 56, 56, 128)
PROBE_RULE = StopRule(min_repeats=15, max_repeats=300, min_time_s=0.3, max_time_s=1.0,
                      rel_tol=0.01)


def build_probe(width: int = PROBE_INPUT[-1]):
    """The probe network (fixed weights seed, about 16 ms on one CPU thread at width 128).

    ``width`` (channels of the 56x56 input) exists so that ``benchmarks/probe_tracking.py``
    can compare variants.
    """
    keras = import_keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input(PROBE_INPUT[1:3] + (width,), batch_size=PROBE_INPUT[0])
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
    y = layers.Conv2D(width, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="dnnsplit_probe")


class Probe:
    """Builds and compiles the probe once; :meth:`time_ms` times it by the protocol."""

    def __init__(self, device: str | None = None):
        self.model = build_probe()
        self.run = compile_forward(self.model, device)
        self.inputs = place_inputs(random_inputs([PROBE_INPUT]), device)
        self.last_ms: float | None = None
        self.last_time = 0.0

    def time_ms(self) -> float:
        self.last_ms = statistics.median(sample(self.run, self.inputs, PROBE_RULE))
        self.last_time = time.monotonic()
        return self.last_ms

    def recent_ms(self, max_age_s: float) -> float:
        """The last probe time, re-measured if older than ``max_age_s``."""
        if self.last_ms is None or time.monotonic() - self.last_time > max_age_s:
            return self.time_ms()
        return self.last_ms
