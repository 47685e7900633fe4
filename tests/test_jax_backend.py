"""The same code on the JAX backend (what a GPU machine runs): timing protocol and executor
(threads and a process per stage).

Runs in a subprocess because this test process already loaded Keras with TensorFlow.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, %r)
    from dnnsplit.collectors.timing import StopRule, configure_threads, time_model
    configure_threads(1)
    import keras
    import numpy as np
    assert keras.backend.backend() == "jax"
    from dnnsplit.collectors.kernels import KernelConfig
    from dnnsplit.executor.run import execute
    from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.partition.problem import Link
    from dnnsplit.predictor.model_graph import TaskGraph

    kernel = KernelConfig.of([("Conv2D", {"filters": 8, "kernel_size": (3, 3), "padding": "same"}),
                              ("BatchNormalization", {}), ("ReLU", {})], [(1, 16, 16, 4)])
    timing = time_model(kernel.build(), rule=StopRule(min_repeats=5, max_time_s=0.5))
    assert timing.median_ms > 0 and timing.overhead_ms > 0 and timing.repeats >= 5

    x = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = keras.layers.Conv2D(8, 1)(x)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    model = keras.Model(x, keras.layers.Dense(3)(y))
    tg = TaskGraph.from_keras(model)
    costs = {n: {"p": 1.0 if i < len(tg.nodes) // 2 else 3.0,
                 "q": 3.0 if i < len(tg.nodes) // 2 else 1.0} for i, n in enumerate(tg.nodes)}
    links = {("p", "q"): Link(0.0, 10000.0), ("q", "p"): Link(0.0, 10000.0)}
    problem = problem_from_graph(tg, [DeviceSpec("p", "p"), DeviceSpec("q", "q")], links, costs)
    plan = make_plans(problem, "throughput", ["dp"])[0]
    assert len(plan.stages) == 2
    report = execute(model, plan, frames=6)
    assert report.outputs_match, report.to_dict()
    in_processes = execute(model, plan, frames=6, backend="processes")  # JAX in each process
    assert in_processes.outputs_match, in_processes.to_dict()
    print("JAX OK", round(timing.median_ms, 4), report.measured["throughput_fps"] > 0)
""") % str(ROOT)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_timing_protocol_and_executor_run_on_the_jax_backend():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JAX OK" in done.stdout and done.stdout.strip().endswith("True")
