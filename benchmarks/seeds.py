"""The seeds' experiments end to end on the two-host testbed: a throttled phone, a server, a
shaped link.

    sudo python benchmarks/seeds.py [--table 003 001] [--mbps 1 10 100] [--frames 30]
                                    [--models003 ResNet50 AlexNet Pix2PixUNet]
                                    [--models001 VGG19 DenseNet121 ResNet152]

For each link bandwidth a testbed comes up (:mod:`dnnsplit.executor.testbed`: the phone's and
the server's namespaces joined by a veth shaped to the bandwidth, a Ray node each; the phone
pinned to CPU 0 under a CPU quota of 25%, the server on CPU 1), the plans are made for a
phone = ``cpu-1t-tensorflow:x4`` and a server = ``cpu-1t-tensorflow`` with that bandwidth and
a 10 ms RTT, and each plan runs from a driver in the phone's namespace (``--backend ray``,
stages pinned to their node, tensors through Ray's object stores over the shaped link; only
the RTT is emulated: ``--link-latency-only``):

- seed 003 (latency): phone-only, server-only, dp, dads, neurosurgeon; one frame in flight,
  the median latency of ``--frames`` frames beside the predicted one, and the speed-up over
  phone-only (measured and predicted);
- seed 001 (throughput): phone-only, server-only, dp; frames streamed, FPS beside the
  predicted, and over the best single device.

Plans with the same assignment run once. Writes docs/seeds.json (every run) and
docs/seeds-runs.md (the tables, the command, machine and date); docs/seeds.md sets them beside
the seeds' own claims. Each device's real slowdown (the quota's 25% vs the plan's x4) is
reported too (``benchmarks/throttle.py`` measures it per model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PROFILE = "cpu-1t-tensorflow"
PHONE_FRACTION = 0.25
RTT_MS = 10.0
TABLES = {"003": ("latency", ["ResNet50", "AlexNet", "Pix2PixUNet"],
                  ["only phone", "only server", "dp", "dads", "neurosurgeon"]),
          "001": ("throughput", ["VGG19", "DenseNet121", "ResNet152"],
                  ["only phone", "only server", "dp"])}


def make_plans(model: str, objective: str, names: list[str], mbps: float) -> dict:
    """The plans of one table row, by name (single devices as plans anyone can run)."""
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.planner import make_plans as plans_of
    from dnnsplit.partition.planner import single_device_plan
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import load_model

    import_keras().backend.clear_session()  # layer names as a fresh process gives them
    tg = TaskGraph.from_keras(load_model(model))
    specs = [DeviceSpec("phone", PROFILE, 1 / PHONE_FRACTION), DeviceSpec("server", PROFILE)]
    problem = problem_from_graph(tg, specs, parse_links(["phone", "server"], [], mbps, RTT_MS))
    out = {name: single_device_plan(problem, objective, name.split()[1])
           for name in names if name.startswith("only ")}
    algorithms = [n for n in names if not n.startswith("only ")]
    out.update({plan.algorithm: plan for plan in plans_of(problem, objective, algorithms)})
    return out


def inside(args) -> None:
    """In the phone's namespace: run every plan file given, write the reports as JSON."""
    from dnnsplit.executor.run import execute
    from dnnsplit.partition.plan import Plan
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import load_model

    results = []
    for item in json.loads(Path(args.todo).read_text()):
        plan = Plan.load(item["plan"])
        latency = plan.objective == "latency"
        import_keras().backend.clear_session()  # the layer names the plan was made with
        report = execute(load_model(item["model"]), plan, frames=args.frames, backend="ray",
                         address=args.address, placement={"phone": "phone", "server": "server"},
                         emulate_links="latency", emulate_factors=False,
                         in_flight=1 if latency else None)
        results.append({**item, "outputs_match": report.outputs_match,
                        "measured": report.measured, "predicted": report.predicted,
                        "stages": report.stages})
        print(item["model"], item["plans"], report.measured["latency_p50_ms"],
              report.measured["throughput_fps"], flush=True)
    Path(args.results).write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="*", default=["003", "001"])
    parser.add_argument("--mbps", nargs="*", type=float, default=[1.0, 10.0, 100.0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--models003", nargs="*")
    parser.add_argument("--models001", nargs="*")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--todo", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return
    from dnnsplit.executor.testbed import Testbed, requirements

    why = requirements()
    if why:
        raise SystemExit(f"error: {why}")
    command = " ".join(["python benchmarks/seeds.py", *sys.argv[1:]])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for mbps in args.mbps:
            todo = []
            for table in args.table:
                objective, models, names = TABLES[table]
                models = getattr(args, f"models{table}") or models
                for model in models:
                    plans = make_plans(model, objective, names, mbps)
                    by_assignment: dict[str, list[str]] = {}
                    for name, plan in plans.items():
                        key = json.dumps(plan.assignment, sort_keys=True)
                        by_assignment.setdefault(key, []).append(name)
                    for same in by_assignment.values():
                        path = Path(tmp) / f"{table}-{model}-{mbps:g}-{same[0]}.json"
                        plans[same[0]].save(path)
                        todo.append({"table": table, "model": model, "mbps": mbps,
                                     "plans": same, "plan": str(path),
                                     "predicted_ms": plans[same[0]].value})
            todo_path, results_path = Path(tmp) / "todo.json", Path(tmp) / f"r-{mbps:g}.json"
            todo_path.write_text(json.dumps(todo))
            with Testbed(mbps=mbps, phone_fraction=PHONE_FRACTION) as bed:
                done = bed.run_on("phone", [
                    sys.executable, str(Path(__file__).resolve()), "--inside", "--todo",
                    str(todo_path), "--results", str(results_path), "--address", bed.address,
                    "--frames", str(args.frames)], env={"PYTHONPATH": str(ROOT.parent)})
                print(done.stdout[-2000:], flush=True)
                if done.returncode != 0:
                    raise SystemExit(f"error: the runs at {mbps:g} Mbps failed: "
                                     f"{done.stderr[-1500:]}")
            runs += json.loads(results_path.read_text())
    write(runs, command)


def write(runs: list[dict], command: str) -> None:
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json_atomic(DOCS / "seeds.json", {"measured": when, "command": command,
                                            "machine": platform.node(), "runs": runs})
    lines = ["# The seeds' experiments, measured on the testbed", "",
             f"Measured {when} on {platform.node()} ({os.cpu_count()} cores) with "
             f"`{command}`. Phone: CPU 0 under a {PHONE_FRACTION:.0%} CPU quota (planned as "
             f"`{PROFILE}:x{1 / PHONE_FRACTION:g}`); server: CPU 1 (`{PROFILE}`); a tbf-shaped "
             f"veth between their namespaces, {RTT_MS:g} ms RTT emulated; Ray backend.", ""]
    for table, title, key, unit in (("003", "Seed 003: one-frame latency", "latency_p50_ms",
                                     "ms"),
                                    ("001", "Seed 001: throughput", "throughput_fps", "fps")):
        rows = [r for r in runs if r["table"] == table]
        if not rows:
            continue
        predicted_key = "latency_ms" if key == "latency_p50_ms" else "throughput_fps"
        lines += [f"## {title}", "",
                  f"| model | Mbps | plan | measured {unit} | predicted {unit} | diff | "
                  "outputs match |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            m, p = r["measured"][key], r["predicted"][predicted_key]
            lines.append(f"| {r['model']} | {r['mbps']:g} | {' = '.join(r['plans'])} | "
                         f"{m:.1f} | {p:.1f} | {m / p - 1:+.0%} | {r['outputs_match']} |")
        lines.append("")
    write_text_atomic(DOCS / "seeds-runs.md", "\n".join(lines))


if __name__ == "__main__":
    main()
