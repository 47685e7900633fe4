"""Random partition problems for the algorithm tests (seeded, reproducible)."""

from __future__ import annotations

import random

from dnnsplit.partition.problem import Link, Problem


def random_problem(seed: int, n: int, k: int, edge_p: float = 0.3, n_inputs: int = 1,
                   n_outputs: int | None = None, call_overhead: bool = False) -> Problem:
    """A random DAG on n nodes (inputs first) with random costs, bytes and links (and, with
    ``call_overhead``, a random per-device call overhead, some devices none)."""
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(n)]
    edges = set()
    for v in range(n_inputs, n):
        preds = [u for u in range(v) if rng.random() < edge_p] or [rng.randrange(v)]
        edges.update((u, v) for u in preds)
    sinks = [u for u in range(n) if not any(e[0] == u for e in edges)]
    outputs = sinks if n_outputs is None else rng.sample(range(n_inputs, n), n_outputs)
    devices = [f"d{j}" for j in range(k)]
    speed = [rng.uniform(0.3, 3.0) for _ in devices]
    compute = {
        nodes[u]: {d: round(rng.uniform(0.1, 5.0) * s, 3) for d, s in zip(devices, speed)}
        for u in range(n)
    }
    sizes = {nodes[u]: rng.choice([0, 100, 10_000, 200_000, 1_000_000]) for u in range(n)}
    links = {
        (a, b): Link(latency_ms=round(rng.uniform(0, 2), 3), mbps=rng.choice([10, 100, 1000]))
        for a in devices for b in devices if a != b
    }
    overhead = ({d: rng.choice([0.0, round(rng.uniform(0.1, 6.0), 3)]) for d in devices}
                if call_overhead else None)
    return Problem.build(
        nodes=nodes,
        edges=[(nodes[u], nodes[v]) for u, v in sorted(edges)],
        devices=devices,
        compute_ms=compute,
        output_bytes=sizes,
        links=links,
        input_nodes=nodes[:n_inputs],
        output_nodes=[nodes[u] for u in outputs],
        call_overhead_ms=overhead,
    )


def best_split_along(problem: Problem, order) -> float:
    """Reference: the least period over every way to cut ``order`` into k contiguous pieces
    (device i takes piece i), evaluated exactly."""
    import itertools
    import math

    from dnnsplit.partition.cost import evaluate_indexed

    ip = problem.indexed
    rest = [v for v in order if not ip.is_input[v]]
    best = math.inf
    for cuts in itertools.combinations_with_replacement(range(len(rest) + 1), ip.k - 1):
        devices = [0] * ip.n
        for pos, v in enumerate(rest):
            devices[v] = sum(1 for c in cuts if c <= pos)
        best = min(best, evaluate_indexed(ip, devices).period_ms)
    return best
