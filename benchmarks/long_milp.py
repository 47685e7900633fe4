"""How far dp's 10 s throughput plan is from the optimum on a graph too wide for it: the
pipeline MILP given a long time limit on one model of benchmarks/partition_speed.py.

    python benchmarks/long_milp.py [--model NASNetMobile] [--k 3] [--time-limit 150]

Prints dp's answer (10 s), the balanced heuristic's (3 s) and the pipeline MILP's from it
(``--time-limit`` s), each with its device and link loads. 2026-11-30 on the 2-core VM:
NASNetMobile, k = 3: dp 150.5 ms (gap <= 67%; 170.6 ms in the partition-speed run), balanced
173.1 ms, MILP 90.29 ms proven optimal within 150 s (twice).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="NASNetMobile")
    parser.add_argument("--k", default="3", help="2, 3 or 3u (partition_speed.py's devices)")
    parser.add_argument("--time-limit", type=float, default=150.0)
    args = parser.parse_args(argv)

    from partition_speed import synthetic_problem

    from dnnsplit.partition.balanced import balanced
    from dnnsplit.partition.cost import evaluate_indexed
    from dnnsplit.partition.dp import dp
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.pipeline_milp import pipeline_milp
    from dnnsplit.predictor.model_source import load_model

    k = args.k if args.k == "3u" else int(args.k)
    problem = synthetic_problem(TaskGraph.from_keras(load_model(args.model)), k)
    heuristic = balanced(problem, time_limit_s=3)
    for name, solution in (("dp (10 s)", dp(problem, "throughput", time_limit_s=10)),
                           ("balanced (3 s)", heuristic),
                           (f"pipeline MILP ({args.time_limit:g} s)",
                            pipeline_milp(problem, time_limit_s=args.time_limit,
                                          incumbent=heuristic.assignment))):
        loads = evaluate_indexed(problem.indexed, solution.assignment)
        print(f"{name}: {solution.value:.2f} ms, {solution.note or 'exact'}; devices "
              f"{[round(x, 1) for x in loads.device_ms]}, links "
              f"{ {f'{a}->{b}': round(v, 1) for (a, b), v in loads.link_ms.items()} }",
              flush=True)


if __name__ == "__main__":
    main()
