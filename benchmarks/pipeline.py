"""Pipelining on this machine: two 1-thread CPU workers vs the best single worker.

    python benchmarks/pipeline.py [--models ResNet50 MobileNetV2 VGG16] [--frames 40]
                                  [--profile cpu-1t-tensorflow]
                                  [--backend local|processes|ray]

For each model: the throughput plan (dp) over two workers w1, w2 with the profile's predicted
costs and a fast link (10 Gbps, no latency), run by the executor; and the same
model on one worker (everything on w1), on the same backend (``--backend processes``: one
process per stage, pinned to a core of its own; ``--backend ray``: one Ray actor process per
stage, in one local Ray instance started once). Reports single-worker FPS,
pipelined FPS, speed-up, measured vs predicted period, per-frame latency, and whether outputs
match. With threads, the single worker shares a process whose TensorFlow inter-op pool
holds 2 threads (a model with parallel branches could use both cores), so it runs with every
thread of the process on one CPU (``collectors.timing.one_cpu``); as a cross-check it is also
run in a fresh process with 1 inter-op thread (``executor run`` on the single-worker plan),
and the speed-up is given against both. In the same window it measures the co-run ceiling:
the model's per-call time while two threads run it at once vs alone on one CPU
(``collectors/corun.py``); 2 / that factor is the speed-up of two perfectly balanced,
overhead-free workers in one process on this machine (with ``--backend processes``: two
processes pinned to the two cores, ``corun_of_model_in_processes``). Writes
docs/pipeline.md and docs/pipeline-<model>.png (timelines; ``pipeline-<backend>*`` for the
other backends), with command, machine and date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import subprocess
import sys
import tempfile
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
    parser.add_argument("--backend", default="local", choices=["local", "processes", "ray"])
    parser.add_argument("--layer-splits", default="auto", choices=["auto", "none"],
                        help="auto: split a layer at a stage boundary into channel halves "
                             "where that shortens the plan (partition plan --split-layer auto)")
    args = parser.parse_args(argv)
    tag = "pipeline" if args.backend == "local" else f"pipeline-{args.backend}"

    from dnnsplit.collectors.corun import corun_of_model, corun_of_model_in_processes
    from dnnsplit.collectors.timing import one_cpu
    from dnnsplit.executor.run import configure_worker_threads, execute

    configure_worker_threads(2, 1)
    from dnnsplit.executor.timeline import plot_timeline
    from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
    from dnnsplit.partition.layer_split import plan_with_layer_splits
    from dnnsplit.partition.plan import Plan
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.partition.problem import Link
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    keras = import_keras()
    if args.backend == "ray":  # one Ray instance for all runs (each run would start its own)
        from dnnsplit.executor.ray_backend import start_ray

        start_ray(num_cpus=2)
    out = Path(args.out)
    rows = []
    for name in args.models:
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        devices = [DeviceSpec("w1", args.profile), DeviceSpec("w2", args.profile)]
        links = {("w1", "w2"): Link(0.0, 10_000.0), ("w2", "w1"): Link(0.0, 10_000.0)}
        problem = problem_from_graph(tg, devices, links)

        def dp_plan(keras_model):
            return make_plans(problem_from_graph(TaskGraph.from_keras(keras_model), devices,
                                                 links), "throughput", ["dp"])[0]

        plan, split_model = (plan_with_layer_splits(model, dp_plan)
                             if args.layer_splits == "auto" else (dp_plan(model), model))
        single = Plan.from_solution(problem, _all_on_first(problem))
        frames = args.frames or max(30, int(4000 / plan.predicted.period_ms))
        runs, ceilings, strict = [], [], []
        single_path = single.save(Path(tempfile.mkdtemp()) / "single.json")
        for _ in range(args.repeats):  # alternate, so all see the same machine speed
            with one_cpu() if args.backend == "local" else contextlib.nullcontext():
                one = execute(model, single, frames=frames, backend=args.backend,
                              calibrate=args.profile)
            if args.backend == "local":
                strict.append(_strict_single_fps(name, single_path, frames))
            two = execute(model, plan, frames=frames, backend=args.backend,
                          calibrate=args.profile)
            runs.append((one, two))
            corun = corun_of_model_in_processes if args.backend == "processes" \
                else corun_of_model
            ceilings.append(2 / corun(model, workers=2, repeats=1)["factor"])
        speedups = sorted(t.measured["throughput_fps"] / o.measured["throughput_fps"]
                          for o, t in runs)
        strict_speedups = sorted(t.measured["throughput_fps"] / fps
                                 for (_, t), fps in zip(runs, strict))
        one, two = sorted(runs, key=lambda r: r[1].measured["throughput_fps"] /
                          r[0].measured["throughput_fps"])[len(runs) // 2]
        plot_timeline(two.run, out / f"{tag}-{name}.png")
        alone = _stages_alone(split_model, plan, args.profile)
        rows.append({
            "model": name, "stages": " / ".join(f"{s['device']}:{len(s['nodes'])}"
                                                for s in plan.stages) + "".join(
                f" ({layer} in {parts})" for layer, parts in plan.layer_splits.items()),
            "frames": frames,
            "single_fps": one.measured["throughput_fps"],
            "single_diff": one.measured["period_ms"] / one.predicted["calibrated"]["period_ms"] - 1,
            "pipe_fps": two.measured["throughput_fps"],
            "speedup": speedups[len(speedups) // 2], "speedup_range": (speedups[0], speedups[-1]),
            "strict_single_fps": sorted(strict)[len(strict) // 2] if strict else None,
            "strict_speedup": (strict_speedups[len(strict_speedups) // 2]
                               if strict_speedups else None),
            "strict_speedup_range": ((strict_speedups[0], strict_speedups[-1])
                                     if strict_speedups else None),
            "ceiling": sorted(ceilings)[len(ceilings) // 2],
            "period_ms": two.measured["period_ms"], "pred_period_ms": two.predicted["period_ms"],
            "now_period_ms": two.predicted["calibrated"]["period_ms"],
            "busy": " / ".join(f"{s['busy_ms']:.1f} ({s['calibrated_ms']:.1f})"
                               for s in two.stages),
            "lat_p50": two.measured["latency_p50_ms"], "lat_p95": two.measured["latency_p95_ms"],
            "single_lat_p50": one.measured["latency_p50_ms"],
            "match": all(o.outputs_match and t.outputs_match for o, t in runs),
            "alone": [dict(a, busy_ms=s["busy_ms"]) for a, s in zip(alone, two.stages)],
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
        f"by the `{args.profile}` profile, dp throughput plan"
        + (", with a layer at the stage boundary split into two channel halves where that "
           "shortens the predicted period by more than 2% (`partition plan --split-layer auto`; "
           "the split is named in the stages column)" if args.layer_splits == "auto" else "")
        + "; frames of batch 1 (enough for "
        "about 4 s per run); the link between workers is emulated as 10 Gbps, no latency"
        + (" (emulated by the receiving stage)" if args.backend != "local" else "")
        + ". Every stage is compiled and run once before timing. Period = median time "
        "between consecutive frames leaving the pipeline. Single and pipelined runs alternate "
        f"{args.repeats} times; the row is the run with the median speed-up, the range is "
        "over all runs (the machine drifts by up to 1.4x within minutes). "
        + _single_and_ceiling(args.backend) + " Predicted "
        "at speed now: the plan's period with every compute time scaled by the reference "
        "probe timed just before and after the pipelined run / the profile's probe "
        "(`executor run --calibrate`). Stage busy = mean time per frame in each stage's "
        "compiled call, with the plan's stage time at speed now in brackets. The single "
        "worker's time per frame is compared with the whole model's prediction at speed now "
        "the same way: what of a pipeline's error is the predictor's (and drift the probe did "
        "not follow) rather than the pipeline's.",
        "",
        *(["On this 2-core machine the two worker processes share the cores with Ray's own "
           "processes (driver, raylet, GCS): each frame costs an actor call per stage and "
           "object-store traffic, so Ray is slower than threads here; it is the backend for "
           "stages on different machines.", ""] if args.backend == "ray" else []),
        "| model | stages | frames | single FPS (vs predicted now) | pipelined FPS | "
        "speed-up (range) | "
        "co-run ceiling | period ms measured | period ms predicted | diff | predicted at speed "
        "now | diff | stage busy ms (predicted now) | latency p50 / p95 ms (single p50) | "
        "outputs match |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['stages']} | {r['frames']} | {r['single_fps']:.2f} "
            f"({r['single_diff']:+.1%} time) | "
            f"{r['pipe_fps']:.2f} | {r['speedup']:.2f}x ({r['speedup_range'][0]:.2f}–"
            f"{r['speedup_range'][1]:.2f}) | {r['ceiling']:.2f}x | {r['period_ms']:.1f} | "
            f"{r['pred_period_ms']:.1f} | "
            f"{r['period_ms'] / r['pred_period_ms'] - 1:+.1%} | {r['now_period_ms']:.1f} | "
            f"{r['period_ms'] / r['now_period_ms'] - 1:+.1%} | {r['busy']} | {r['lat_p50']:.1f} / "
            f"{r['lat_p95']:.1f} ({r['single_lat_p50']:.1f}) | {r['match']} |")
    if args.backend == "local":
        lines += _strict(rows)
    lines += _breakdown(rows)
    lines += _alone(rows)
    lines += ["", "Timelines of the first frames: " + ", ".join(
        f"[{r['model']}]({tag}-{r['model']}.png)" for r in rows)]
    write_text_atomic(out / f"{tag}.md", "\n".join(lines) + "\n")
    write_json_atomic(out / f"{tag}.json", {"command": "python benchmarks/pipeline.py "
                                            + " ".join(argv or sys.argv[1:]), "rows": rows})
    print(f"wrote {out / f'{tag}.md'} and {tag}.json")


def _strict_single_fps(model: str, plan_path: Path, frames: int) -> float:
    """Single-worker FPS in a fresh process with 1 intra- and 1 inter-op thread."""
    done = subprocess.run([sys.executable, "-m", "dnnsplit.executor.cli", "run", model, "--plan",
                           str(plan_path), "--frames", str(frames), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"strict single worker of {model} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)["measured"]["throughput_fps"]


def _strict(rows) -> list[str]:
    lines = [
        "", "## Against a strictly one-thread single worker", "",
        "The single worker above runs in the pipeline's process pinned to one CPU; as a "
        "cross-check, the same single-worker plan run by `executor run` in a fresh process "
        "with 1 inter-op thread, alternated with the runs above (median of the repeats):", "",
        "| model | single FPS, this process on one CPU | single FPS, inter-op 1 (fresh "
        "process) | pipelined speed-up vs it (range) | co-run ceiling |",
        "|---|---|---|---|---|"]
    for r in rows:
        low, high = r["strict_speedup_range"]
        lines.append(f"| {r['model']} | {r['single_fps']:.2f} | {r['strict_single_fps']:.2f} | "
                     f"{r['strict_speedup']:.2f}x ({low:.2f}–{high:.2f}) | {r['ceiling']:.2f}x |")
    return lines


def _stages_alone(model, plan, profile: str) -> list[dict]:
    """Each stage's sub-model timed alone (1 thread on one CPU, no co-runner, call overhead
    included) beside its prediction scaled by the probe timed around these timings."""
    from dnnsplit.collectors.calibrate import ProbeWindow
    from dnnsplit.collectors.timing import one_cpu, time_model
    from dnnsplit.executor.stages import build_stages
    from dnnsplit.predictor.model_graph import TaskGraph

    stages = build_stages(model, plan, TaskGraph.from_keras(model))
    window = ProbeWindow(profile)
    with one_cpu():
        timed = [time_model(s.model) for s in stages]
    speed = window.factor()
    device_ms = plan.predicted.device_ms
    index = {d: i for i, d in enumerate(plan.problem.devices)}
    return [{"device": s.device, "alone_ms": t.median_ms + t.overhead_ms,
             "predicted_now_ms": device_ms[index[s.device]] * speed}
            for s, t in zip(stages, timed)]


def _alone(rows) -> list[str]:
    lines = [
        "", "## Each stage alone", "",
        "Each stage's sub-model timed alone after the runs (the collectors' protocol in "
        "this process on one CPU: intra-op 1, no co-runner, call overhead included) beside "
        "the plan's stage time at the speed of the probe timed around it, and its busy time in the "
        "median pipelined run: "
        "predicted -> alone is the predictor's error on that part of the model (a split also "
        "breaks fusions and adds a call); alone -> busy is what running beside the other "
        "stage costs (co-run, hand-offs; a different window of the machine's drift).", "",
        "| model | stage | predicted now ms | alone ms | alone / predicted | busy in the "
        "pipeline ms | busy / alone |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for a in r["alone"]:
            lines.append(f"| {r['model']} | {a['device']} | {a['predicted_now_ms']:.1f} | "
                         f"{a['alone_ms']:.1f} | {a['alone_ms'] / a['predicted_now_ms']:.3f} | "
                         f"{a['busy_ms']:.1f} | {a['busy_ms'] / a['alone_ms']:.3f} |")
    return lines


def _breakdown(rows) -> list[str]:
    """The period's error at speed now as a product of three measured factors."""
    lines = [
        "", "## Where the measured period departs from the plan", "",
        "measured / predicted-at-speed-now = (single worker: measured / predicted at speed "
        "now: the predictor's error and drift the probe did not follow) x (co-run: 2 / "
        "ceiling) x (the rest: the prediction erring more on one stage than on the whole "
        "model, and the pipeline's own cost: hand-offs between threads or processes). "
        "Efficiency = speed-up / co-run ceiling.", "",
        "| model | period measured / predicted now | single worker | co-run | the rest | "
        "efficiency |", "|---|---|---|---|---|---|"]
    for r in rows:
        total = r["period_ms"] / r["now_period_ms"]
        single, corun = 1 + r["single_diff"], 2 / r["ceiling"]
        lines.append(f"| {r['model']} | {total:.3f} | {single:.3f} | {corun:.3f} | "
                     f"{total / (single * corun):.3f} | {r['speedup'] / r['ceiling']:.0%} |")
    return lines


def _workers(backend: str) -> str:
    if backend == "ray":
        return "TensorFlow, a Ray actor process per worker, intra-op 1, inter-op 1"
    if backend == "processes":
        return ("TensorFlow, a process per worker pinned to a core of its own, intra-op 1, "
                "inter-op 1, frames through shared memory")
    return "TensorFlow threads in one process, intra-op 1, inter-op 2"


def _single_and_ceiling(backend: str) -> str:
    """How the single worker and the co-run ceiling were measured, in words."""
    if backend == "processes":
        return ("The single worker is one such process (pinned to one core). Co-run ceiling "
                "= 2 / (per-call time of the whole model while two processes pinned to the "
                "two cores run it at once / one of them alone), median of one measurement "
                "after each pair of runs: what two perfectly balanced worker processes could "
                "reach here.")
    return ("The single worker runs with every thread of the process on one CPU (threads: the "
            "process's inter-op pool holds 2 threads, with which a model with parallel "
            "branches would use both cores). Co-run ceiling = 2 / (per-call time of the whole "
            "model while two threads run it at once / alone on one CPU), median of one "
            "measurement after each pair of runs: what two perfectly balanced workers of one "
            "process could reach here" + ("" if backend == "local" else
                                          " (threads: Ray's actors are processes)") + ".")


def _all_on_first(problem):
    from dnnsplit.partition.solution import Solution

    return Solution("single", "throughput", tuple(0 for _ in problem.nodes), 0.0, 0.0, False)


if __name__ == "__main__":
    main()
