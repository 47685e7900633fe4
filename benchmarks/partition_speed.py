"""Solver time of dp / dads / neurosurgeon on every keras.applications model, and of dp's
throughput plans on large generated graphs (``--large``).

    python benchmarks/partition_speed.py [--models ResNet50 DenseNet201] [--time-limit 30]
    python benchmarks/partition_speed.py --large [--time-limit 10] [--ks 2 4 6 8]

Costs are synthetic and only shape the problem (solver time is what is measured): compute
= FLOPs / speed + 0.02 ms per node, with edge 2, mid 6 and server 20 GFLOP/s, and a call
overhead per stage of 0.5, 0.2 and 0.05 ms (plans from profiles carry one); every link
20 Mbps with 2.5 ms one-way latency. k = 2 uses edge+server, k = 3 edge+mid+server; "3u"
is k = 3 with uneven links (edge<->mid 200 Mbps 0.5 ms, mid<->server 50 Mbps 2.5 ms,
edge<->server 20 Mbps 2.5 ms), so that no device dominates the others.
Writes docs/partition-speed.md (with the command, machine and date) and prints each row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEED_FLOPS_PER_MS = {"edge": 2e6, "mid": 6e6, "server": 2e7}
CALL_OVERHEAD_MS = {"edge": 0.5, "mid": 0.2, "server": 0.05}
DEVICES = {2: ["edge", "server"], 3: ["edge", "mid", "server"], "3u": ["edge", "mid", "server"]}
UNEVEN_LINKS = {("edge", "mid"): (0.5, 200.0), ("mid", "server"): (2.5, 50.0),
                ("edge", "server"): (2.5, 20.0)}


def synthetic_problem(tg, k):
    from dnnsplit.partition.problem import Link, Problem

    devices = DEVICES[k]
    compute = {n: {d: tg.spec(n).flops / SPEED_FLOPS_PER_MS[d] + 0.02 for d in devices}
               for n in tg.nodes}
    links = {(a, b): Link(2.5, 20.0) for a in devices for b in devices if a != b}
    if k == "3u":
        links = {(a, b): Link(*UNEVEN_LINKS.get((a, b)) or UNEVEN_LINKS[(b, a)])
                 for a, b in links}
    return Problem.build(tg.nodes, list(tg.graph.edges), devices, compute,
                         {n: tg.graph.nodes[n]["output_bytes"] for n in tg.nodes},
                         links, tg.input_nodes, tg.output_nodes,
                         call_overhead_ms={d: CALL_OVERHEAD_MS[d] for d in devices})


def solve(algorithm, problem, objective, time_limit):
    """(solver ms, value, states, how exact) of one run."""
    from dnnsplit.partition.dp import dp

    if algorithm is dp:
        s = dp(problem, objective, time_limit_s=time_limit, fallback_time_s=2 * time_limit)
    else:
        s = algorithm(problem, objective)
    if s.exact:
        how = ("exact" if not s.note else "exact (MILP)" if "MILP" in s.note
               else "exact (min cut)" if "minimum s-t cut" in s.note
               else "exact (relaxation bound)")
    elif s.note and "heuristic, then MILP" in s.note:
        how = "heuristic + MILP; gap <= " + s.note.rsplit("at most ", 1)[-1]
    elif s.note and "2-device min cuts" in s.note:
        how = "best of min cuts + MILP; gap <= " + s.note.rsplit("at most ", 1)[-1]
    else:
        how = s.note.rsplit(": ", 1)[-1] if s.note else "heuristic"
    return f"{s.solver_ms:.1f}", s.value, s.states, how


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--time-limit", type=float, default=10.0,
                        help="seconds of exact dp search; the MILP fallback gets twice that")
    parser.add_argument("--out", default=None,
                        help="default docs/partition-speed.md (--large: partition-scale.md)")
    parser.add_argument("--large", action="store_true",
                        help="the generated 300-2,000 node graphs instead (throughput)")
    parser.add_argument("--ks", nargs="*", type=int, default=[2, 4, 6, 8],
                        help="--large: device counts")
    parser.add_argument("--families", nargs="*", default=None,
                        help="--large: instance names (default all)")
    args = parser.parse_args(argv)
    if args.large:
        return large_suite(args)
    args.out = args.out or str(ROOT / "docs" / "partition-speed.md")

    from dnnsplit.partition.dads import dads
    from dnnsplit.partition.dp import dp
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.neurosurgeon import neurosurgeon
    from dnnsplit.predictor.files import write_text_atomic
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_source import application_names, load_model

    keras = import_keras()
    models = args.models or application_names()
    rows = []
    for name in models:
        tg = TaskGraph.from_keras(load_model(name))
        for k in (2, 3, "3u"):
            problem = synthetic_problem(tg, k)
            for objective in ("latency", "throughput"):
                row = {"model": name, "nodes": len(tg), "k": k, "objective": objective}
                row["dp_ms"], row["dp_value"], row["dp_states"], row["dp_exact"] = solve(
                    dp, problem, objective, args.time_limit)
                for algo in (dads, neurosurgeon):
                    key = algo.__name__
                    if k == 2:
                        row[f"{key}_ms"], row[f"{key}_value"], _, _ = solve(
                            algo, problem, objective, None)
                    else:
                        row[f"{key}_ms"], row[f"{key}_value"] = "n/a (2 devices)", None
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        keras.backend.clear_session()

    def gap(row, key):
        if row[f"{key}_value"] is None:
            return ""
        return f"{row[f'{key}_value'] / row['dp_value']:.3f}"

    lines = [
        "# Partition solver speed",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}), with",
        "",
        f"    python benchmarks/partition_speed.py --time-limit {args.time_limit:g}"
        + (f" --models {' '.join(args.models)}" if args.models else ""),
        "",
        "Synthetic FLOPs-proportional costs (see the script's docstring): the solver time is the",
        "measurement. `x/dp` is the baseline's objective divided by dp's optimum (>= 1). Solver",
        "times are single runs on a shared 2-core machine and drift by tens of percent.",
        "",
        "| model | nodes | k | objective | dp ms | dp | dp states | dads ms | dads/dp | "
        "neurosurgeon ms | neurosurgeon/dp |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['k']} | {r['objective']} | {r['dp_ms']} | "
            f"{r['dp_exact']} | {r['dp_states']} | {r['dads_ms']} | "
            f"{gap(r, 'dads')} | {r['neurosurgeon_ms']} | {gap(r, 'neurosurgeon')} |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


#: --large: the generated instances (name -> builder of (k, unequal, links)).
LARGE = {
    "transformer-12 (op level)": lambda k, u, lk: _inst().transformer_encoder(
        12, k, heads=8, unequal=u, links=lk),
    "transformer-24 (op level)": lambda k, u, lk: _inst().transformer_encoder(
        24, k, heads=12, unequal=u, links=lk),
    "inception-like 40 blocks": lambda k, u, lk: _inst().inception_like(
        40, k, unequal=u, links=lk),
    "random layered 500": lambda k, u, lk: _inst().random_layered(500, k, unequal=u, links=lk),
    "random layered 1000": lambda k, u, lk: _inst().random_layered(1000, k, unequal=u, links=lk,
                                                                 seed=1),
    "random layered 2000": lambda k, u, lk: _inst().random_layered(2000, k, unequal=u, links=lk,
                                                                 seed=2),
}
#: --large: device settings (unequal speeds, link costs).
SETTINGS = {"identical, links": (False, True), "unequal, links": (True, True),
            "identical, free links": (False, False)}


def _inst():
    from dnnsplit.partition import instances

    return instances


def large_suite(args) -> None:
    """dp (throughput) on every generated instance, k and setting; beside it the heuristics
    alone: the best split along one order, and the balanced plan (splits + local moves)."""
    import json
    import time

    from dnnsplit.partition.balanced import balanced, best_order_split
    from dnnsplit.partition.dp import dp
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    out = Path(args.out or ROOT / "docs" / "partition-scale.md")
    rows = []
    names = args.families or list(LARGE)
    for name in names:
        for setting, (unequal, links) in SETTINGS.items():
            for k in args.ks:
                problem = LARGE[name](k, unequal, links)
                started = time.perf_counter()
                answer = dp(problem, "throughput", time_limit_s=args.time_limit)
                seconds = time.perf_counter() - started
                _, along, _ = best_order_split(problem.indexed)
                heuristic = balanced(problem)
                lower = answer.lower_bound if answer.lower_bound is not None else answer.value
                row = {"instance": name, "nodes": len(problem.nodes), "k": k,
                       "setting": setting, "seconds": round(seconds, 2),
                       "period": answer.value, "lower_bound": lower,
                       "gap": (answer.value - lower) / answer.value if answer.value else 0.0,
                       "exact": answer.exact, "note": answer.note,
                       "one_order": along, "balanced": heuristic.value}
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_json_atomic(out.with_suffix(".json"), {"rows": rows, "time_limit_s": args.time_limit})
    within = sum(r["gap"] <= 0.01 for r in rows)
    in_time = sum(r["seconds"] <= 1.1 * args.time_limit for r in rows)
    lines = [
        "# Throughput plans on large graphs: 500-2,000 operators, 2-8 devices",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}), with",
        "",
        f"    python benchmarks/partition_speed.py --large --time-limit {args.time_limit:g} "
        f"--ks {' '.join(map(str, args.ks))}"
        + (f" --families {' '.join(repr(f) for f in args.families)}" if args.families else ""),
        "",
        "Instances from `dnnsplit.partition.instances` (seeded; see its docstring): devices "
        "identical or with speeds from 0.5 to 2, links 1 Gbps / 0.1 ms (random DAGs 40 Gbps / "
        "5 us) or free. `dp` is `dp(problem, 'throughput', time_limit_s=...)`: the exact "
        "search for 0.5 s, then the balanced heuristic and the pipeline MILP within the rest "
        "of the limit, stopping once a plan is proven within 0.01% (`exact` only when the "
        "optimum itself is proven). `bound` is the proven lower bound on the optimum, `gap` = "
        "(period - "
        "bound) / period. `one order` is the best greedy split along one of five topological "
        "orders alone, `balanced` that plus moves and kicks (the heuristic alone, 1 s of them).",
        "",
        f"**{within} of {len(rows)}** answers proven within 1% of the optimum; **{in_time} of "
        f"{len(rows)}** within the time limit + 10%; the slowest took "
        f"{max(r['seconds'] for r in rows):.1f} s.",
        "",
        "| instance | nodes | k | devices | s | period | bound | gap | exact | one order / "
        "dp | balanced / dp |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['nodes']} | {r['k']} | {r['setting']} | {r['seconds']:.1f} "
            f"| {r['period']:.4g} | {r['lower_bound']:.4g} | {r['gap']:.2%} | "
            f"{'yes' if r['exact'] else 'no'} | {r['one_order'] / r['period']:.3f} | "
            f"{r['balanced'] / r['period']:.3f} |")
    write_text_atomic(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
