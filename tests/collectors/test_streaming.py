"""Weight streaming: the fit recovers a known cost law; the fan-out times one kernel per copy."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.collectors.streaming import (StreamingError, cache_bytes, fit_streaming,
                                           streaming_of_kernel)

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def test_fit_recovers_slope_and_threshold_of_a_noisy_law():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.25, 30, 200)
    extra = 0.003 * np.maximum(0, weights - 1.0) + rng.normal(0, 0.002, 200)
    per_mib, threshold = fit_streaming(weights, extra)
    assert threshold == 1.0
    assert per_mib == pytest.approx(0.003, rel=0.1)


def test_fit_never_gives_a_negative_cost():
    per_mib, _ = fit_streaming([1, 2, 4], [-0.1, -0.2, -0.4])
    assert per_mib == 0.0


def test_fit_without_kernels_above_any_threshold_is_refused():
    with pytest.raises(StreamingError, match="no kernels"):
        fit_streaming([], [])
    with pytest.raises(StreamingError, match="below the smallest threshold"):
        fit_streaming([0.0, 0.0], [0.1, 0.2])


def test_cache_size_is_read_or_defaulted():
    assert cache_bytes() >= 2 ** 16
    assert cache_bytes(default=123.0) in (123.0, cache_bytes())


def _conv_kernel():
    return KernelConfig.of([("Conv2D", {"filters": 32, "kernel_size": (3, 3)})],
                           [(1, 32, 32, 32)])


def test_fanout_reports_the_time_of_one_copy(monkeypatch):
    """Timed by a stand-in clock that charges 0.5 ms per copy of the kernel a call runs (a
    kernel whose weights stay cached): the fan-out reports one copy's time, not the sum. (Real
    timings of a fan-out depend on how many threads run the copies side by side.)"""
    import dnnsplit.collectors.streaming as streaming
    from dnnsplit.collectors.timing import Timing

    def by_copies(run, inputs, overhead, rule):
        copies = len(run.model.outputs) if isinstance(run.model.outputs, list) else 1
        return Timing(median_ms=0.5 * copies, p10_ms=0.5 * copies, p90_ms=0.5 * copies,
                      repeats=3, overhead_ms=overhead)

    def compile_kept(model, device=None):
        run = lambda xs: None  # noqa: E731 - a stand-in that remembers its model
        run.model = model
        return run

    monkeypatch.setattr(streaming, "measure", by_copies)
    monkeypatch.setattr(streaming, "compile_forward", compile_kept)
    monkeypatch.setattr(streaming, "empty_call_overhead", lambda inputs, rule=None: 0.1)
    config = _conv_kernel()
    weight_bytes = 4.0 * (3 * 3 * 32 * 32 + 32)
    few = streaming_of_kernel(config, budget_bytes=1.0)
    many = streaming_of_kernel(config, budget_bytes=3.5 * weight_bytes, max_copies=8)
    capped = streaming_of_kernel(config, budget_bytes=1e12, max_copies=4)
    assert (few["copies"], many["copies"], capped["copies"]) == (2, 4, 4)
    for result in (few, many, capped):
        assert result["alone_ms"] == result["fanout_ms"] == 0.5


def test_cli_writes_the_fit_and_every_kernel(tmp_path):
    x = keras.Input((8, 8, 64))
    y = keras.layers.Conv2D(256, 3, padding="same")(x)  # 0.56 MiB of weights
    y = keras.layers.Conv2D(8, 1)(y)  # too small to count
    keras.Model(x, y).save(tmp_path / "m.keras")
    out = tmp_path / "weight-streaming.json"
    run = subprocess.run(
        [sys.executable, "-m", "dnnsplit.collectors.cli", "streaming", str(tmp_path / "m.keras"),
         "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert [k["pattern"] for k in data["kernels"]] == ["Conv2D"]
    assert data["kernels"][0]["weight_mib"] == pytest.approx(
        4 * (3 * 3 * 64 * 256 + 256) / 2 ** 20, rel=1e-3)
    assert data["per_mib"] >= 0 and data["threshold_mib"] in (0.0, 0.25, 0.5)
    assert data["cache_mib"] > 0 and "streaming" in data["command"]
    assert "probe units per MiB" in run.stdout


def test_cli_on_a_model_without_large_weights_says_so(tmp_path, monkeypatch):
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]).save(
        tmp_path / "tiny.keras")
    # in this process, whose TensorFlow already runs with its own threads (a fresh process
    # sets them first): the kernels are looked for before any is timed
    from typer.testing import CliRunner

    import dnnsplit.collectors.timing as timing
    from dnnsplit.collectors.cli import app

    monkeypatch.setattr(timing, "configure_threads", lambda threads: None)
    run = CliRunner().invoke(app, ["streaming", str(tmp_path / "tiny.keras"), "--quiet",
                                   "--out", str(tmp_path / "s.json")])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.exit_code == 2 and len(lines) == 1, run.output
    assert lines[0].startswith("error: none of") and "has a kernel with" in lines[0]
    assert not (tmp_path / "s.json").exists()
