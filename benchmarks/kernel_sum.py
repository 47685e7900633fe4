"""Does a model's time equal the sum of its fused kernels timed one by one? (design check)

    python benchmarks/kernel_sum.py [--models ResNet50 MobileNetV2 DenseNet121] [--threads 1]

For each model: the whole model timed by the protocol, then every kernel of its task graph
(fusion rules applied) built alone and timed by the same protocol, empty-call overhead
subtracted. Prints and writes docs/kernel-sum.md: whole ms, sum of kernels (with and without
the overhead subtracted), and their ratio, with the probe before and after (the machine drifts).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["ResNet50", "MobileNetV2", "DenseNet121"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "docs" / "kernel-sum.md"))
    args = parser.parse_args(argv)

    from dnnsplit.collectors.timing import configure_threads

    configure_threads(args.threads)
    from dnnsplit.collectors.kernels import KernelConfig
    from dnnsplit.collectors.probe import Probe
    from dnnsplit.collectors.timing import (StopRule, compile_forward, empty_call_overhead, measure,
                                            model_inputs, time_model)
    from dnnsplit.predictor.files import write_text_atomic
    from dnnsplit.predictor.fusion import find_kernels
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    keras = import_keras()
    probe = Probe()
    rule = StopRule(min_repeats=10, max_time_s=1.0)
    rows = []
    for name in args.models:
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        before = probe.time_ms()
        whole = time_model(model, rule=StopRule(min_repeats=10, max_time_s=4.0))
        net = raw = 0.0
        count = 0
        for kernel in find_kernels(tg):
            specs = [tg.spec(n) for n in kernel.nodes]
            if specs[0].layer_type == "InputLayer":
                continue
            sub = KernelConfig.from_specs(specs).build()
            inputs = model_inputs(sub)
            overhead = empty_call_overhead(inputs, rule=rule)
            timing = measure(compile_forward(sub), inputs, overhead, rule)
            net += timing.median_ms
            raw += timing.median_ms + overhead
            count += 1
        after = probe.time_ms()
        rows.append((name, whole.median_ms, count, net, raw, before, after))
        print(f"{name}: whole {whole.median_ms:.1f} ms, {count} kernels sum {net:.1f} ms "
              f"({raw:.1f} without subtracting the empty call): {net / whole.median_ms:.2f}x; "
              f"probe {before:.2f} -> {after:.2f} ms", flush=True)
        keras.backend.clear_session()
    lines = [
        "# Whole model vs the sum of its fused kernels",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')} "
        f"on {platform.node()} ({platform.machine()}), TensorFlow, {args.threads} thread(s), with",
        "",
        "    python benchmarks/kernel_sum.py " + " ".join(argv or sys.argv[1:]),
        "",
        "| model | whole ms | kernels | sum of kernels ms | ratio | sum without overhead "
        "subtraction ms | ratio | probe before -> after ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, whole, count, net, raw, before, after in rows:
        lines.append(f"| {name} | {whole:.1f} | {count} | {net:.1f} | {net / whole:.2f}x | "
                     f"{raw:.1f} | {raw / whole:.2f}x | {before:.2f} -> {after:.2f} |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
