"""Seed 002's acceleration region for ResNet50 and Pix2PixUNet: where does splitting pay?

    python benchmarks/acceleration_region.py [--models ResNet50 Pix2PixUNet] [--points 25]
                                             [--speed 1:16] [--speed-points 9] [--rtt-ms 10]
                                             [--objectives throughput latency]

For each model, ``partition sweep`` over a phone and a server of the shipped profile (the
phone's compute times x F for F on a log grid, the server as profiled), links of 0.5-1000
Mbit/s with the given round-trip time, each objective, dp (exact for two devices). Writes
docs/acceleration-region.md (+ .json) and docs/acceleration-region-<model>-<objective>.png with the
command, machine and date: per speed factor, the best gain over the best single device, the
bandwidths where a split beats both all-local and all-offload, and where it gains >= 5%.
Planning only (predicted costs): nothing is timed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["ResNet50", "Pix2PixUNet"])
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--mbps", default="0.5:1000")
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--speed", default="1:16")
    parser.add_argument("--speed-points", type=int, default=9)
    parser.add_argument("--rtt-ms", type=float, default=10.0)
    parser.add_argument("--objectives", nargs="*", default=["throughput", "latency"],
                        help="throughput: seed 002's own objective (frames streamed through "
                             "the two devices as a pipeline); latency: one frame (seed 003)")
    args = parser.parse_args()

    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.sweep import (REGION_GAIN, format_ranges, log_grid, plot_sweep,
                                         sweep)
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.model_source import load_model

    low, high = (float(v) for v in args.mbps.split(":"))
    f1, f2 = (float(v) for v in args.speed.split(":"))
    speeds = log_grid(f1, f2, args.speed_points)
    command = " ".join(["python benchmarks/acceleration_region.py", *sys.argv[1:]])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results, lines = {}, [
        "# Where splitting pays: seed 002's acceleration region", "",
        f"Computed {when} on {platform.node()} ({os.cpu_count()} cores) with `{command}`: "
        f"`partition sweep` over a phone and a server, both `{args.profile}`, the phone's "
        f"compute times x F (F = {f1:g}-{f2:g}, the phone F times slower than the server), "
        f"links of {low:g}-{high:g} Mbit/s with {args.rtt_ms:g} ms RTT, dp (exact for two "
        "devices). Throughput is seed 002's objective (frames streamed through both devices as "
        "a pipeline: gain = the best single device's period / the plan's); latency is one "
        "frame (seed 003's). Predicted costs only: nothing here is timed. 1.00x: running on "
        "one device is best; the gain over the phone alone is what seed 003 reports "
        "(offloading everything counts).", ""]
    for name, objective in [(m, o) for o in args.objectives for m in args.models]:
        tg = TaskGraph.from_keras(load_model(name))
        specs = [DeviceSpec("phone", args.profile), DeviceSpec("server", args.profile)]
        problem = problem_from_graph(tg, specs, parse_links(["phone", "server"], [], high, 0.0))
        result = sweep(problem, log_grid(low, high, args.points), speeds, objective,
                       args.rtt_ms, model=name, progress=True)
        png = DOCS / f"acceleration-region-{name}-{objective}.png"
        plot_sweep(result, png)
        results[f"{name} {objective}"] = result.to_dict()
        lines += [f"## {name}, {objective}", "",
                  "| phone x F | best gain | at Mbps | split beats all-local and all-offload "
                  "(Mbps) | split gains >= 5% (Mbps) | gain over the phone alone at "
                  f"{low:g} / {high:g} Mbps |", "|---|---|---|---|---|---|"]
        for speed in speeds:
            row = [p for p in result.points if p.speed == speed]
            top = max(row, key=lambda p: p.gain_best)
            lines.append(f"| {speed:.3g} | {top.gain_best:.2f}x | {top.mbps:.3g} | "
                         f"{format_ranges(result.split_ranges(speed))} | "
                         f"{format_ranges(result.split_ranges(speed, REGION_GAIN))} | "
                         f"{row[0].gain_first:.2f}x / {row[-1].gain_first:.2f}x |")
        lines += ["", f"![{name} {objective}](acceleration-region-{name}-{objective}.png)", ""]
    write_text_atomic(DOCS / "acceleration-region.md", "\n".join(lines))
    write_json_atomic(DOCS / "acceleration-region.json",
                      {"measured": when, "command": command, "machine": platform.node(),
                       "models": results})
    print("wrote docs/acceleration-region.md")


if __name__ == "__main__":
    main()
