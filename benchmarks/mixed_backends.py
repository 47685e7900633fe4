"""Pipelines that mix backends: a TensorFlow device and a JAX device, measured vs predicted.

    python benchmarks/mixed_backends.py [--models ResNet50 MobileNetV2 InceptionV3 ViTTiny]
                                        [--objectives throughput latency] [--frames 30]
                                        [--repeats 3]

Devices ``tf = cpu-1t-tensorflow`` and ``jax = cpu-1t-jax`` (the two shipped profiles: one
TensorFlow thread and Keras on JAX/XLA with one thread, on the two cores of this machine), a
fast link (10 Gbps, no latency: the devices are processes on one machine). For each model and
objective, the dp, dads and neurosurgeon plans, each run with ``executor run --backend
processes`` (a TensorFlow process and a JAX process, each pinned to a core, tensors crossing
as arrays) alternated with the unsplit model on the best single device, ``--repeats`` pairs.
Reported: outputs equal to the unsplit (TensorFlow) model, the measured period (throughput)
or median one-frame latency (latency) beside the plan's, and the measured speed-up over the
best single device beside the predicted. Where dp's plan differs from a baseline's because
the devices differ layer type by layer type, the table shows whether it wins when measured.
Writes docs/mixed-backends.md and .json with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DEVICES = ("tf=cpu-1t-tensorflow", "jax=cpu-1t-jax")
ALGORITHMS = ("dp", "dads", "neurosurgeon")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*",
                        default=["ResNet50", "MobileNetV2", "InceptionV3", "ViTTiny"])
    parser.add_argument("--objectives", nargs="*", default=["throughput", "latency"])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render-only", action="store_true",
                        help="rebuild the .md from docs/mixed-backends.json")
    args = parser.parse_args()
    if args.render_only:
        render(json.loads((DOCS / "mixed-backends.json").read_text()))
        return

    from dnnsplit.executor.run import execute_with_baseline
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.predictor.files import write_json_atomic
    from dnnsplit.predictor.model_source import load_model

    command = " ".join(["python benchmarks/mixed_backends.py", *sys.argv[1:]])
    specs = [DeviceSpec.parse(d) for d in DEVICES]
    rows = []
    for name in args.models:
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        problem = problem_from_graph(tg, specs, parse_links([d.name for d in specs], [],
                                                            10000.0, 0.0))
        for objective in args.objectives:
            plans = make_plans(problem, objective, list(ALGORITHMS))
            seen: dict[str, dict] = {}
            for plan in plans:
                key = json.dumps(plan.assignment, sort_keys=True)
                if key in seen:  # the same plan as an earlier algorithm's: measured once
                    rows.append({**seen[key], "algorithm": plan.algorithm,
                                 "same_as": seen[key]["algorithm"]})
                    continue
                report = execute_with_baseline(model, plan, repeats=args.repeats,
                                               backend="processes", frames=args.frames)
                latency = objective == "latency"
                measured = (report.measured["latency_p50_ms"] if latency
                            else report.measured["period_ms"])
                row = {"model": name, "objective": objective, "algorithm": plan.algorithm,
                       "stages": " | ".join(f"{s['device']}:{len(s['nodes'])}"
                                            for s in plan.stages),
                       "outputs_match": report.outputs_match, "measured_ms": measured,
                       "predicted_ms": plan.value, "speedup": report.speedup,
                       "backends": {r["stage"]: r.get("keras_backend") for r in report.stages},
                       "single": report.single}
                seen[key] = row
                rows.append(row)
                print(name, objective, plan.algorithm, round(measured, 2),
                      round(plan.value, 2), report.outputs_match, flush=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = {"measured": when, "command": command, "machine": platform.node(), "rows": rows}
    write_json_atomic(DOCS / "mixed-backends.json", data)
    render(data)


def render(data: dict) -> None:
    """docs/mixed-backends.md from the measurements (``--render-only`` rebuilds it)."""
    from dnnsplit.predictor.files import write_text_atomic

    when, command, rows = data["measured"], data["command"], data["rows"]
    lines = ["# Pipelines that mix backends: TensorFlow + JAX", "",
             f"Measured {when} on {data['machine']} ({os.cpu_count()} cores) with `{command}`. "
             f"Devices: {', '.join(DEVICES)} (`--backend processes`: a TensorFlow process and "
             "a JAX process, each pinned to a core; a 10 Gbps link). Measured: the median period "
             "(throughput) or the median one-frame latency (latency) of the plan's run in the "
             "median pair; speed-up: over the unsplit model on the best single device, "
             "alternated in the same window.", "",
             "| model | objective | plan | stages | measured ms | predicted ms | diff | "
             "speed-up measured | predicted | outputs equal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["speedup"] or {}
        label = r["algorithm"] + (f" (= {r['same_as']})" if "same_as" in r else "")
        stages = r["stages"].replace(" | ", " → ")
        lines.append(f"| {r['model']} | {r['objective']} | {label} | {stages} | "
                     f"{r['measured_ms']:.1f} | {r['predicted_ms']:.1f} | "
                     f"{r['measured_ms'] / r['predicted_ms'] - 1:+.0%} | "
                     f"{s.get('measured', float('nan')):.2f}x | "
                     f"{s.get('predicted', float('nan')):.2f}x | {r['outputs_match']} |")
    write_text_atomic(DOCS / "mixed-backends.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
