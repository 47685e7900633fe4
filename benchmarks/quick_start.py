"""Which backend and frame count make the Quick start's numbers hold, idle and busy.

    python benchmarks/quick_start.py [--model MobileNetV2] [--runs 3]
                                     [--backends local processes] [--frames 60 300]

The Quick start plans MODEL over two 1-thread CPU workers from the shipped profile and runs it
with `executor run`, which alternates the plan with the unsplit model on one worker and reports
the measured speed-up beside the predicted one (`executor.run.execute_with_baseline`, 3 pairs).
For each backend and frame count this runs that `runs` times on an idle machine and `runs`
times while another process keeps one core busy (`while True: pass`, as a user's other work
would), and writes docs/quick-start.md: the measured speed-up, its ratio to the predicted one,
the period vs the plan, the other processes' CPUs seen by the run's own check
(`collectors.load.busy_cpus`), and the wall time of a run. Conditions and backends alternate,
so all see the same drift of the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def other_work(busy: bool):
    """Another process that keeps one core busy while inside, when ``busy``."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)
        yield
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MobileNetV2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="*", default=["local", "processes"])
    parser.add_argument("--frames", nargs="*", type=int, default=[60, 300])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)

    from dnnsplit.executor.run import configure_worker_threads, execute_with_baseline

    configure_worker_threads(2, 1)
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    model = load_model(args.model)
    devices = [DeviceSpec("w1", "cpu-1t-tensorflow"), DeviceSpec("w2", "cpu-1t-tensorflow")]
    problem = problem_from_graph(TaskGraph.from_keras(model), devices,
                                 parse_links(["w1", "w2"], [], 1000.0, 0.2))
    plan = make_plans(problem, "throughput", ["dp"])[0]
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for run in range(args.runs):
        for busy in (False, True):
            for backend in args.backends:
                for frames in args.frames:
                    with other_work(busy):
                        t0 = time.monotonic()
                        report = execute_with_baseline(model, plan, repeats=3, frames=frames,
                                                       backend=backend)
                        wall = time.monotonic() - t0
                    s = report.speedup
                    rows.append({
                        "run": run, "busy": busy, "backend": backend, "frames": frames,
                        "measured": s["measured"], "low": s["low"], "high": s["high"],
                        "predicted": s["predicted"], "other_cpus": s["other_cpus"],
                        "period_vs_plan": report.measured["period_ms"]
                        / report.predicted["period_ms"], "wall_s": wall})
                    print(json.dumps(rows[-1]), flush=True)
    ended = datetime.datetime.now(datetime.timezone.utc)
    out = Path(args.out)
    write_json_atomic(out / "quick-start.json", {"rows": rows, "model": args.model})
    write_text_atomic(out / "quick-start.md", report_text(rows, args, started, ended))


def report_text(rows, args, started, ended) -> str:
    lines = [
        "# The Quick start's run, idle and busy",
        "",
        "`" + " ".join(["python benchmarks/quick_start.py", *sys.argv[1:]]) + "`",
        f"on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"{started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC. {args.model} planned for "
        "throughput over two 1-thread workers of the shipped profile (1000 Mbps, 0.2 ms RTT); "
        "each cell: `executor run`'s check (3 alternated pairs of the plan and the unsplit "
        f"model on one worker), repeated {args.runs} times; busy = another process kept one "
        "core busy meanwhile.",
        "",
        "| machine | backend | frames | measured speed-up (median of runs, range) | measured / "
        "predicted | period / plan | other CPUs seen | s per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for busy in (False, True):
        for backend in args.backends:
            for frames in args.frames:
                cell = [r for r in rows if r["busy"] == busy and r["backend"] == backend
                        and r["frames"] == frames]
                if not cell:
                    continue
                measured = sorted(r["measured"] for r in cell)
                predicted = cell[0]["predicted"]
                others = [r["other_cpus"] for r in cell if r["other_cpus"] is not None]
                lines.append(
                    f"| {'busy' if busy else 'idle'} | {backend} | {frames} | "
                    f"{statistics.median(measured):.2f}x ({measured[0]:.2f}-{measured[-1]:.2f})"
                    f" | {statistics.median(measured) / predicted:.2f} | "
                    f"{statistics.median(r['period_vs_plan'] for r in cell):.2f} | "
                    f"{max(others):.1f} | {statistics.median(r['wall_s'] for r in cell):.0f} |")
    lines += ["", f"Predicted speed-up: {rows[0]['predicted']:.2f}x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
