"""Which reference probe tracks whole-model times best? (the choice behind collectors/probe.py)

    python benchmarks/probe_tracking.py [--windows 20] [--models ResNet50 MobileNetV2 DenseNet121]

The machines drift: the same model alternates between speeds about 1.4x apart within minutes.
A probe is useful only if, timed in the same window, it drifts like the models do: then
model / probe is steady even when both move. In each of ``--windows`` windows (spread over
several minutes, order shuffled within a window) this times every candidate probe and every
model by the collectors' protocol (one thread, TensorFlow), then reports, per candidate, how
much model / probe varies across windows: the coefficient of variation and the largest
deviation from its median, next to the same numbers for the raw model times (no probe).
Models come from the training zoo only. Writes docs/probe-tracking.md with the command,
machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def candidates():
    """name -> (builder, input shape); collectors/probe.py ships the one chosen here."""
    from dnnsplit.collectors.probe import PROBE_INPUT, build_probe
    from dnnsplit.predictor.keras_env import import_keras

    keras = import_keras()
    layers = keras.layers

    def single(layer, shape):
        def build():
            keras.utils.set_random_seed(0)
            x = keras.Input(shape[1:], batch_size=shape[0])
            return keras.Model(x, layer()(x))
        return build, shape

    return {
        "mini-net width 32": (lambda: build_probe(32), PROBE_INPUT[:3] + (32,)),
        "mini-net width 64": (lambda: build_probe(64), PROBE_INPUT[:3] + (64,)),
        "mini-net width 128": (lambda: build_probe(128), PROBE_INPUT[:3] + (128,)),
        "conv3x3 56x56x64": single(lambda: layers.Conv2D(64, 3, padding="same"),
                                   (1, 56, 56, 64)),
        "dwconv3x3 112x112x32": single(lambda: layers.DepthwiseConv2D(3, padding="same"),
                                       (1, 112, 112, 32)),
        "dense 2048x1000": single(lambda: layers.Dense(1000), (1, 2048)),
        "conv1x1 28x28x256": single(lambda: layers.Conv2D(256, 1), (1, 28, 28, 256)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--pause-s", type=float, default=10.0, help="pause between windows")
    parser.add_argument("--models", nargs="*", default=["ResNet50", "MobileNetV2",
                                                        "DenseNet121"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "probe-tracking.md"))
    args = parser.parse_args(argv)

    from dnnsplit.collectors.timing import (StopRule, compile_forward, configure_threads, measure,
                                            model_inputs)
    from dnnsplit.predictor.files import write_text_atomic
    from dnnsplit.predictor.model_source import load_model

    configure_threads(1)
    rule = StopRule(min_repeats=10, max_repeats=200, min_time_s=0.5, max_time_s=3.0,
                    rel_tol=0.01)
    jobs = {}  # name -> (run, inputs)
    for name, (build, shape) in candidates().items():
        model = build()
        jobs[name] = (compile_forward(model), model_inputs(model))
    for name in args.models:
        model = load_model(name)
        jobs[name] = (compile_forward(model), model_inputs(model))
    times: dict[str, list[float]] = {name: [] for name in jobs}
    rng = random.Random(0)
    for name, (run, inputs) in jobs.items():  # warm-up, untimed
        measure(run, inputs, 0.0, StopRule(min_repeats=3, max_repeats=3, min_time_s=0.0,
                                           max_time_s=1.0))
    started = time.monotonic()
    for window in range(args.windows):
        order = list(jobs)
        rng.shuffle(order)
        for name in order:
            run, inputs = jobs[name]
            times[name].append(measure(run, inputs, 0.0, rule).median_ms)
        print(f"window {window + 1}/{args.windows}: " + ", ".join(
            f"{n} {times[n][-1]:.2f}" for n in jobs), flush=True)
        if window < args.windows - 1:
            time.sleep(args.pause_s)
    minutes = (time.monotonic() - started) / 60

    def spread(series):
        median = statistics.median(series)
        cv = statistics.pstdev(series) / statistics.mean(series)
        worst = max(abs(x / median - 1) for x in series)
        return cv, worst

    probes = list(candidates())
    rows = [("none (raw model time)", {m: spread(times[m]) for m in args.models})]
    for probe in probes:
        rows.append((probe, {m: spread([t / p for t, p in zip(times[m], times[probe])])
                             for m in args.models}))
    lines = [
        "# Which reference probe tracks whole-model times?",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}"
        f" on {platform.node()} ({platform.machine()}, 2 cores), TensorFlow, one thread, with",
        "",
        "    python benchmarks/probe_tracking.py " + " ".join(argv or sys.argv[1:]),
        "",
        f"{args.windows} windows over {minutes:.1f} minutes; in each, every probe and model "
        "timed by the collectors' protocol in shuffled order. Per model: coefficient of "
        "variation (CV) of model / probe across windows, and its largest deviation from the "
        "median. Lower is better: the probe moves with the model.",
        "",
        "| probe | probe median ms | " + " | ".join(f"{m} CV / worst" for m in args.models)
        + " | median CV |",
        "|---|---|" + "---|" * len(args.models) + "---|",
    ]
    for probe, stats in rows:
        probe_ms = (f"{statistics.median(times[probe]):.2f}" if probe in times else "")
        cells = " | ".join(f"{stats[m][0]:.1%} / ±{stats[m][1]:.1%}" for m in args.models)
        median_cv = statistics.median(s[0] for s in stats.values())
        lines.append(f"| {probe} | {probe_ms} | {cells} | {median_cv:.1%} |")
    lines += ["", "Raw times per window (ms):", "",
              "| window | " + " | ".join(jobs) + " |", "|---|" + "---|" * len(jobs)]
    for w in range(args.windows):
        lines.append(f"| {w + 1} | " + " | ".join(f"{times[n][w]:.2f}" for n in jobs) + " |")
    write_text_atomic(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
