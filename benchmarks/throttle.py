"""How slow is a throttled device really, and which quota period keeps its timings smooth?

    sudo python benchmarks/throttle.py [--models MobileNetV2 ResNet50 Pix2PixUNet]
                                       [--fractions 0.5 0.25] [--periods 5 10 20 100]
                                       [--calls 30] [--rounds 3]

One process, one TensorFlow thread pinned to one CPU, each model compiled once. For every
(fraction, period): ``--rounds`` times, ``--calls`` calls with this process inside a CPU quota
group (:class:`dnnsplit.collectors.throttle.CpuQuota`) alternated with as many calls outside
it, so both see the same machine. Reported per model: the slowdown (median call throttled /
median call free) against the nominal 1/fraction, and the spread of single calls (90th / 10th
percentile of the throttled calls): a period longer than a call makes calls either free or
stalled. Writes docs/throttle.md and .json with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def calls_ms(run, inputs, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["MobileNetV2", "ResNet50",
                                                        "Pix2PixUNet"])
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.5, 0.25])
    parser.add_argument("--periods", nargs="*", type=float, default=[5, 10, 20, 100],
                        help="quota periods in ms")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from dnnsplit.collectors.throttle import CpuQuota, available
    from dnnsplit.collectors.timing import compile_forward, configure_threads, model_inputs

    if not available():
        raise SystemExit("error: CPU quotas need a writable cgroup CPU controller (root)")
    configure_threads(1)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.model_source import load_model

    command = " ".join(["python benchmarks/throttle.py", *sys.argv[1:]])
    rows = []
    for name in args.models:
        model = load_model(name)
        run = compile_forward(model)
        inputs = model_inputs(model)
        calls_ms(run, inputs, 3)  # warm
        for fraction in args.fractions:
            for period in args.periods:
                free, held = [], []
                for _ in range(args.rounds):
                    free += calls_ms(run, inputs, args.calls)
                    with CpuQuota(fraction, name="bench", period_us=int(period * 1000)) as q:
                        q.add(os.getpid())
                        held += calls_ms(run, inputs, args.calls)
                slow = statistics.median(held) / statistics.median(free)
                deciles = statistics.quantiles(held, n=10)
                rows.append({"model": name, "fraction": fraction, "period_ms": q.period_us / 1000,
                             "free_ms": statistics.median(free),
                             "throttled_ms": statistics.median(held), "slowdown": slow,
                             "nominal": 1 / fraction, "spread_p90_p10": deciles[-1] / deciles[0]})
                print(rows[-1], flush=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json_atomic(DOCS / "throttle.json", {"measured": when, "command": command,
                                               "machine": platform.node(), "rows": rows})
    lines = ["# Throttled devices: real slowdown and smoothness per quota period", "",
             f"Measured {when} on {platform.node()} ({os.cpu_count()} cores) with `{command}`: "
             "one TensorFlow thread pinned to one CPU; per setting, calls inside a CPU quota "
             "group alternated with calls outside it.", "",
             "| model | free ms | fraction | period ms | throttled ms | slowdown | nominal | "
             "p90/p10 of calls |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['free_ms']:.1f} | {r['fraction']:g} | "
                     f"{r['period_ms']:g} | {r['throttled_ms']:.1f} | {r['slowdown']:.2f}x | "
                     f"{r['nominal']:.2f}x | {r['spread_p90_p10']:.2f} |")
    write_text_atomic(DOCS / "throttle.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
