"""The seeds' experiments end to end on the two-host testbed: a throttled phone, a server, a
shaped link.

    sudo python benchmarks/seeds.py [--table 003 001] [--mbps 1 10 100] [--frames 30] [--passes 2]
                                    [--models003 ResNet50 AlexNet Pix2PixUNet]
                                    [--models001 VGG19 DenseNet121 ResNet152]

For each link bandwidth a testbed comes up (:mod:`dnnsplit.executor.testbed`: the phone's and
the server's namespaces joined by a veth shaped to the bandwidth, a Ray node each, the phone's
pinned to CPU 0 and the server's to CPU 1). Each device is calibrated where it runs, as a user
would calibrate a real phone: ``collectors calibrate --data cpu-1t-tensorflow`` on CPU 1 for
the server, ``... --throttle 0.25`` on CPU 0 for the phone (the probe under the quota); the
plans are made for phone = ``cpu-1t-tensorflow:x<phone's factor>`` and server =
``cpu-1t-tensorflow:x<server's factor>`` with that bandwidth and a 10 ms RTT, and each plan
runs from a driver in the phone's namespace (``--backend ray``, stages pinned to their node,
tensors through Ray's object stores over the shaped link; only the RTT is emulated:
``--link-latency-only``; the sub-models reach their nodes as files, ``--models-dir``, not over
the link). The phone's stage actor runs under a 25% CPU quota (``--throttle phone=0.25``):
the actor's process only, as ``--backend processes`` throttles a stage. Throttling the whole
phone node instead (its Ray daemons and the driver share the quota) measured ResNet50 alone on
the phone at 5.5x the server's time (2026-12-01, 10 Mbps) where the probe says 4.4x.

- seed 003 (latency): phone-only, server-only, dp, dads, neurosurgeon; one frame in flight,
  the median latency of ``--frames`` frames beside the predicted one, and the speed-up over
  phone-only (measured and predicted);
- seed 001 (throughput): phone-only, server-only, dp; frames streamed, FPS beside the
  predicted, and over the best single device.

Plans with the same assignment run once. Writes docs/seeds.json (every run) and
docs/seeds-runs.md (the tables, the command, machine and date); docs/seeds.md sets them beside
the seeds' own claims.
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


def make_plans(model: str, objective: str, names: list[str], mbps: float,
               factors: dict[str, float]) -> dict:
    """The plans of one table row, by name (single devices as plans anyone can run), for the
    devices' calibrated ``factors`` (device -> time / the profile's time)."""
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.planner import make_plans as plans_of
    from dnnsplit.partition.planner import single_device_plan
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import load_model

    import_keras().backend.clear_session()  # layer names as a fresh process gives them
    tg = TaskGraph.from_keras(load_model(model))
    specs = [DeviceSpec("phone", PROFILE, factors["phone"]),
             DeviceSpec("server", PROFILE, factors["server"])]
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
                         throttle={"phone": PHONE_FRACTION},
                         in_flight=1 if latency else args.in_flight,
                         models_dir=args.models_dir)
        results.append({**item, "outputs_match": report.outputs_match,
                        "measured": report.measured, "predicted": report.predicted,
                        "stages": report.stages, "notes": report.notes})
        print(item["model"], item["plans"], report.measured["latency_p50_ms"],
              report.measured["throughput_fps"], flush=True)
    Path(args.results).write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="*", default=["003", "001"])
    parser.add_argument("--mbps", nargs="*", type=float, default=[1.0, 10.0, 100.0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--in-flight", type=int, default=None,
                        help="throughput plans: at most this many frames in flight (default: "
                             "as many as the stages; 1 keeps a device from receiving the next "
                             "frame's tensors while it computes, for diagnosis)")
    parser.add_argument("--name", default="seeds",
                        help="write docs/NAME.json and docs/NAME-runs.md (e.g. seeds-edge for "
                             "points on the acceleration region's edge)")
    parser.add_argument("--passes", type=int, default=2,
                        help="run every plan this many times, the passes one after another")
    parser.add_argument("--models003", nargs="*")
    parser.add_argument("--models001", nargs="*")
    parser.add_argument("--rewrite", action="store_true",
                        help="write docs/NAME-runs.md again from docs/NAME.json (no runs)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--todo", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return
    if args.rewrite:
        path = DOCS / f"{args.name}.json"
        if not path.is_file():
            raise SystemExit(f"error: --rewrite needs {path} (written by a run with --name "
                             f"{args.name})")
        saved = json.loads(path.read_text())
        write(saved["runs"], saved["calibrations"], saved["command"], args.name,
              when=saved["measured"])
        return
    from dnnsplit.executor.testbed import Testbed, requirements

    why = requirements()
    if why:
        raise SystemExit(f"error: {why}")
    command = " ".join(["python benchmarks/seeds.py", *sys.argv[1:]])
    runs, calibrations = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for mbps in args.mbps:
            with Testbed(mbps=mbps, phone_fraction=None) as bed:
                factors = calibrate(bed)
                calibrations.append({"mbps": mbps, **factors})
                print(f"{mbps:g} Mbps: calibrated factors {factors}", flush=True)
                todo = []
                for table in args.table:
                    objective, models, names = TABLES[table]
                    for model in getattr(args, f"models{table}") or models:
                        todo += plan_files(Path(tmp), table, model, objective, names, mbps,
                                           factors)
                todo_path = Path(tmp) / "todo.json"
                results_path = Path(tmp) / f"r-{mbps:g}.json"
                todo_path.write_text(json.dumps(
                    [{**item, "pass": p} for p in range(args.passes) for item in todo]))
                done = bed.run_on("phone", [
                    sys.executable, str(Path(__file__).resolve()), "--inside", "--todo",
                    str(todo_path), "--results", str(results_path), "--address", bed.address,
                    "--frames", str(args.frames), "--models-dir", tmp]
                    + (["--in-flight", str(args.in_flight)] if args.in_flight else []),
                    env={"PYTHONPATH": str(ROOT.parent)})
                print(done.stdout[-2000:], flush=True)
                if done.returncode != 0:
                    raise SystemExit(f"error: the runs at {mbps:g} Mbps failed: "
                                     f"{done.stderr[-1500:]}")
            runs += [{**r, "factors": factors} for r in json.loads(results_path.read_text())]
    write(runs, calibrations, command, args.name)


def calibrate(bed) -> dict[str, float]:
    """Each device's speed factor against the profile, timed where it runs (the phone's under
    its quota): the median of three ``collectors calibrate`` runs."""
    import statistics

    data = str(ROOT / "datasets" / PROFILE)
    factors = {}
    for device, extra in (("phone", ["--throttle", str(PHONE_FRACTION)]), ("server", [])):
        values = []
        for _ in range(3):
            done = bed.run_on(device, [sys.executable, "-m", "dnnsplit.collectors.cli",
                                       "calibrate", "--data", data, "--json", *extra],
                              check=True, env={"PYTHONPATH": str(ROOT.parent)})
            values.append(json.loads(done.stdout)["factor"])
        factors[device] = statistics.median(values)
    return factors


def plan_files(tmp: Path, table: str, model: str, objective: str, names: list[str],
               mbps: float, factors: dict[str, float]) -> list[dict]:
    """The table row's plans saved to files, one per distinct assignment (its names)."""
    plans = make_plans(model, objective, names, mbps, factors)
    by_assignment: dict[str, list[str]] = {}
    for name, plan in plans.items():
        by_assignment.setdefault(json.dumps(plan.assignment, sort_keys=True), []).append(name)
    todo = []
    for same in by_assignment.values():
        path = tmp / f"{table}-{model}-{mbps:g}-{same[0]}.json"
        plans[same[0]].save(path)
        todo.append({"table": table, "model": model, "mbps": mbps, "plans": same,
                     "plan": str(path), "predicted_ms": plans[same[0]].value})
    return todo


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (table, model, link, plan): the median over passes, its spread, and the gain
    over phone-only (latency) or the best single device (throughput), measured and
    predicted."""
    import statistics

    rows: dict[tuple, dict] = {}
    for r in runs:
        key = (r["table"], r["model"], r["mbps"], tuple(r["plans"]))
        rows.setdefault(key, {**r, "passes": []})["passes"].append(r["measured"])
    out = list(rows.values())
    for r in out:
        latency = r["table"] == "003"
        values = [m["latency_p50_ms" if latency else "throughput_fps"] for m in r["passes"]]
        median = statistics.median(values)
        r["summary"] = {"measured": median, "spread": (max(values) - min(values)) / median,
                        "predicted": r["predicted"]["latency_ms" if latency
                                                    else "throughput_fps"]}
    for r in out:
        peers = [q for q in out if (q["table"], q["model"], q["mbps"]) ==
                 (r["table"], r["model"], r["mbps"])]
        singles = [q for q in peers if any(n.startswith("only ") for n in q["plans"])]
        if r["table"] == "003":
            base = next(q for q in peers if "only phone" in q["plans"])["summary"]
            r["summary"]["gain_measured"] = base["measured"] / r["summary"]["measured"]
            r["summary"]["gain_predicted"] = base["predicted"] / r["summary"]["predicted"]
        else:
            r["summary"]["gain_measured"] = r["summary"]["measured"] / max(
                q["summary"]["measured"] for q in singles)
            r["summary"]["gain_predicted"] = r["summary"]["predicted"] / max(
                q["summary"]["predicted"] for q in singles)
    return out


def winners(rows: list[dict]) -> list[dict]:
    """Per (table, model, link): the plan predicted best and the plan measured best. They
    agree when they are one plan, or when the measured best beats the predicted one by less
    than the two plans' run-to-run spread (a tie: the passes cannot tell them apart)."""
    out = []
    for key in dict.fromkeys((r["table"], r["model"], r["mbps"]) for r in rows):
        peers = [r for r in rows if (r["table"], r["model"], r["mbps"]) == key]
        sign = -1 if key[0] == "003" else 1  # latency: lower is better; fps: higher
        predicted = max(peers, key=lambda r: sign * r["summary"]["predicted"])
        measured = max(peers, key=lambda r: sign * r["summary"]["measured"])
        margin = abs(measured["summary"]["measured"] / predicted["summary"]["measured"] - 1)
        noise = max(measured["summary"]["spread"], predicted["summary"]["spread"])
        out.append({"table": key[0], "model": key[1], "mbps": key[2],
                    "predicted": " = ".join(predicted["plans"]),
                    "measured": " = ".join(measured["plans"]), "margin": margin,
                    "noise": noise, "agree": measured is predicted or margin <= noise})
    return out


def write(runs: list[dict], calibrations: list[dict], command: str, name: str = "seeds",
          when: str | None = None) -> None:
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json_atomic(DOCS / f"{name}.json", {"measured": when, "command": command,
                                            "machine": platform.node(),
                                            "calibrations": calibrations, "runs": runs})
    runs = summarise(runs)
    factors = ", ".join(f"{c['mbps']:g} Mbps: phone x{c['phone']:.2f}, server x{c['server']:.2f}"
                        for c in calibrations)
    lines = ["# The seeds' experiments, measured on the testbed", "",
             f"Measured {when} on {platform.node()} ({os.cpu_count()} cores) with "
             f"`{command}`. Phone: CPU 0, its stage actor under a {PHONE_FRACTION:.0%} CPU "
             f"quota; server: CPU 1; both planned from `{PROFILE}` scaled by the factor "
             f"calibrated on the device just before ({factors}); a tbf-shaped veth between "
             f"their namespaces, {RTT_MS:g} ms RTT emulated; Ray backend. Repeats: each plan "
             "ran once per pass, the passes one after another; the median of the passes is "
             "shown, and `spread` is (max - min) / median over the passes.", ""]
    for table, title, key, unit, over in (
            ("003", "Seed 003: one-frame latency", "latency_p50_ms", "ms", "phone-only"),
            ("001", "Seed 001: throughput", "throughput_fps", "fps", "best single device")):
        rows = [r for r in runs if r["table"] == table]
        if not rows:
            continue
        lines += [f"## {title}", "",
                  f"| model | Mbps | plan | measured {unit} | spread | predicted {unit} | diff | "
                  f"x over {over} measured | predicted | outputs match |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m, p = r["summary"]["measured"], r["summary"]["predicted"]
            lines.append(
                f"| {r['model']} | {r['mbps']:g} | {' = '.join(r['plans'])} | {m:.1f} | "
                f"{r['summary']['spread']:.0%} | {p:.1f} | {m / p - 1:+.0%} | "
                f"{r['summary']['gain_measured']:.2f} | {r['summary']['gain_predicted']:.2f} | "
                f"{r['outputs_match']} |")
        lines += ["", "The plan predicted best and the plan measured best (a tie where the "
                  "measured best wins by less than the two plans' spread between passes):", "",
                  "| model | Mbps | predicted best | measured best | by | spread | agree |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {w['model']} | {w['mbps']:g} | {w['predicted']} | {w['measured']} | "
                  f"{w['margin']:.0%} | {w['noise']:.0%} | "
                  f"{'yes' if w['measured'] == w['predicted'] else 'tie' if w['agree'] else 'no'}"
                  " |" for w in winners(rows)]
        lines.append("")
    write_text_atomic(DOCS / f"{name}-runs.md", "\n".join(lines))


if __name__ == "__main__":
    main()
