"""Pipelining on this machine: two 1-thread CPU workers vs the best single worker.

    python benchmarks/pipeline.py [--models ResNet50 MobileNetV2 VGG16] [--frames 40]
                                  [--profile cpu-1t-tensorflow] [--backend local|ray]

For each model: the throughput plan (dp) over two workers w1, w2 with the profile's predicted
costs and a fast link (10 Gbps, no latency), run by the executor; and the same
model on one worker (everything on w1), on the same backend (``--backend ray``: one Ray
actor process per stage, in one local Ray instance started once). Reports single-worker FPS,
pipelined FPS, speed-up, measured vs predicted period, per-frame latency, and whether outputs
match. Writes
docs/pipeline.md and docs/pipeline-<model>.png (timelines; ``pipeline-ray*`` for Ray), with
command, machine and date.
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
    parser.add_argument("--models", nargs="*", default=["ResNet50", "MobileNetV2", "VGG16"])
    parser.add_argument("--frames", type=int, default=0,
                        help="frames per run (default: about 4 s of pipelined work, >= 30)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="single/pipelined runs alternated in the same window")
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    args = parser.parse_args(argv)
    tag = "pipeline" if args.backend == "local" else f"pipeline-{args.backend}"

    from executor.run import configure_worker_threads, execute

    configure_worker_threads(2, 1)
    from executor.timeline import plot_timeline
    from partition.costs import DeviceSpec, problem_from_graph
    from partition.plan import Plan
    from partition.planner import make_plans
    from partition.problem import Link
    from predictor.files import write_text_atomic
    from predictor.keras_env import import_keras
    from predictor.model_graph import TaskGraph
    from predictor.model_source import load_model

    keras = import_keras()
    if args.backend == "ray":  # one Ray instance for all runs (each run would start its own)
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"KERAS_BACKEND": keras.backend.backend(),
                                           "TF_CPP_MIN_LOG_LEVEL": "3"}})
    out = Path(args.out)
    rows = []
    for name in args.models:
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        devices = [DeviceSpec("w1", args.profile), DeviceSpec("w2", args.profile)]
        links = {("w1", "w2"): Link(0.0, 10_000.0), ("w2", "w1"): Link(0.0, 10_000.0)}
        problem = problem_from_graph(tg, devices, links)
        plan = make_plans(problem, "throughput", ["dp"])[0]
        single = Plan.from_solution(problem, _all_on_first(problem))
        frames = args.frames or max(30, int(4000 / plan.predicted.period_ms))
        runs = []
        for _ in range(args.repeats):  # alternate, so both see the same machine speed
            one = execute(model, single, frames=frames, backend=args.backend)
            two = execute(model, plan, frames=frames, backend=args.backend)
            runs.append((one, two))
        speedups = sorted(t.measured["throughput_fps"] / o.measured["throughput_fps"]
                          for o, t in runs)
        one, two = sorted(runs, key=lambda r: r[1].measured["throughput_fps"] /
                          r[0].measured["throughput_fps"])[len(runs) // 2]
        plot_timeline(two.run, out / f"{tag}-{name}.png")
        rows.append({
            "model": name, "stages": " / ".join(f"{s['device']}:{len(s['nodes'])}"
                                                for s in plan.stages),
            "frames": frames,
            "single_fps": one.measured["throughput_fps"],
            "pipe_fps": two.measured["throughput_fps"],
            "speedup": speedups[len(speedups) // 2], "speedup_range": (speedups[0], speedups[-1]),
            "period_ms": two.measured["period_ms"], "pred_period_ms": two.predicted["period_ms"],
            "lat_p50": two.measured["latency_p50_ms"], "lat_p95": two.measured["latency_p95_ms"],
            "single_lat_p50": one.measured["latency_p50_ms"],
            "match": all(o.outputs_match and t.outputs_match for o, t in runs),
        })
        print(rows[-1], flush=True)
        keras.backend.clear_session()
    lines = [
        f"# Pipelined execution on this machine (backend {args.backend})",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}"
        f" on {platform.node()} ({platform.machine()}, 2 cores), with",
        "",
        "    python benchmarks/pipeline.py " + " ".join(argv or sys.argv[1:]),
        "",
        f"Two workers of one thread each ({_workers(args.backend)}), costs predicted "
        f"by the `{args.profile}` profile, dp throughput plan; frames of batch 1 (enough for "
        "about 4 s per run); the link between workers is emulated as 10 Gbps, no latency"
        + (" (a link actor between the stage actors)" if args.backend == "ray" else "")
        + ". Every stage is compiled and run once before timing. Period = median time "
        "between consecutive frames leaving the pipeline. Single and pipelined runs alternate "
        f"{args.repeats} times; the row is the run with the median speed-up, the range is "
        "over all runs (the machine drifts by up to 1.4x within minutes).",
        "",
        *(["On this 2-core machine the two worker processes share the cores with Ray's own "
           "processes (driver, raylet, GCS, link actors): each frame costs several actor "
           "calls, so Ray is slower than threads here; it is the backend for stages on "
           "different machines.", ""] if args.backend == "ray" else []),
        "| model | stages | frames | single FPS | pipelined FPS | speed-up (range) | "
        "period ms measured | period ms predicted | diff | latency p50 / p95 ms (single p50) "
        "| outputs match |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['stages']} | {r['frames']} | {r['single_fps']:.2f} | "
            f"{r['pipe_fps']:.2f} | {r['speedup']:.2f}x ({r['speedup_range'][0]:.2f}–"
            f"{r['speedup_range'][1]:.2f}) | {r['period_ms']:.1f} | {r['pred_period_ms']:.1f} | "
            f"{r['period_ms'] / r['pred_period_ms'] - 1:+.1%} | {r['lat_p50']:.1f} / "
            f"{r['lat_p95']:.1f} ({r['single_lat_p50']:.1f}) | {r['match']} |")
    lines += ["", "Timelines of the first frames: " + ", ".join(
        f"[{r['model']}]({tag}-{r['model']}.png)" for r in rows)]
    write_text_atomic(out / f"{tag}.md", "\n".join(lines) + "\n")
    print(f"wrote {out / f'{tag}.md'}")


def _workers(backend: str) -> str:
    if backend == "ray":
        return "TensorFlow, a Ray actor process per worker, intra-op 1, inter-op 1"
    return "TensorFlow threads in one process, intra-op 1, inter-op 2"


def _all_on_first(problem):
    from partition.solution import Solution

    return Solution("single", "throughput", tuple(0 for _ in problem.nodes), 0.0, 0.0, False)


if __name__ == "__main__":
    main()
