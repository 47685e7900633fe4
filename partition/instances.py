"""Large partition problems the project makes itself, for benchmarks and tests (seeded).

Three graph families, each at any size, over k identical or unequal devices, with or without
link costs:

- :func:`transformer_encoder`: an encoder at operator level, attention as separate operators
  (per head: query, key and value matmuls, scores, softmax, weighted sum; then concatenation,
  output projection, residual adds, layer norms, a GELU feed-forward), costs from FLOPs.
- :func:`inception_like`: a chain of wide blocks of parallel branches of 1-3 convolutions
  joined by a concatenation, costs from FLOPs.
- :func:`random_layered`: a random layered DAG (each node reads 1-3 nodes of the previous
  three layers; one output node reads every node nobody else reads), each node's time and
  output size drawn together from the rows of the shipped profile's grid measurements
  (``datasets/cpu-1t-tensorflow``, load 0, measured before :data:`MEASURED_BEFORE`), or from
  a log-normal when the data is absent.

Device ``d{i}`` runs ``speed[i]`` times faster than the reference (10 GFLOP/s, or the profile's
times). ``links=True`` joins every pair by a 1 Gbps link with 0.1 ms one-way latency (the
random DAGs by a 40 Gbps one with 5 us: the profile's mean tensor, 4.4 MB, takes 35 ms at
1 Gbps against 2.4 ms of mean compute, so that no split would ever pay), ``links=False`` by
an effectively free one (1e9 Mbps, no latency).
"""

from __future__ import annotations

import csv
import functools
import random
from pathlib import Path
from typing import Sequence

from dnnsplit.partition.problem import Link, Problem
from dnnsplit.predictor.bundle import kernel_csvs

#: FLOPs per millisecond of the reference device (10 GFLOP/s) and per-operator overhead.
REFERENCE_FLOPS_PER_MS = 1e7
OPERATOR_MS = 0.005
#: A linked pair of devices (1 Gbps, 0.1 ms), and a pair with (effectively) free transfers.
LINK = Link(latency_ms=0.1, mbps=1000.0)
FAST_LINK = Link(latency_ms=0.005, mbps=40_000.0)
FREE_LINK = Link(latency_ms=0.0, mbps=1e9)
FLOAT_BYTES = 4
#: The profile whose measurements the random DAGs draw their costs from, and the day before
#: which those were measured (its grid collection: rows are only ever appended, so the draws
#: stay the same as the profile grows).
DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "datasets" / "cpu-1t-tensorflow"
MEASURED_BEFORE = "2026-11-25"


def device_speeds(k: int, unequal: bool, seed: int = 0) -> list[float]:
    """``k`` ones, or speeds spread from 0.5 to 2 (the first device slowest, as a phone)."""
    if not unequal:
        return [1.0] * k
    rng = random.Random(seed)
    speeds = sorted(rng.uniform(0.5, 2.0) for _ in range(k))
    speeds[0], speeds[-1] = 0.5, 2.0
    return speeds


class _Builder:
    """Nodes with a reference cost (ms) and an output size, edges between them."""

    def __init__(self):
        self.nodes: list[str] = []
        self.edges: list[tuple[str, str]] = []
        self.ms: dict[str, float] = {}
        self.bytes: dict[str, int] = {}

    def add(self, name: str, preds: Sequence[str], ms: float, nbytes: int) -> str:
        self.nodes.append(name)
        self.edges.extend((p, name) for p in preds)
        self.ms[name] = ms
        self.bytes[name] = int(nbytes)
        return name

    def op(self, name: str, preds: Sequence[str], flops: float, elements: int) -> str:
        return self.add(name, preds, OPERATOR_MS + flops / REFERENCE_FLOPS_PER_MS,
                        elements * FLOAT_BYTES)

    def problem(self, k: int, unequal: bool, links: bool, seed: int = 0,
                link: Link = LINK) -> Problem:
        speeds = device_speeds(k, unequal, seed)
        devices = [f"d{i}" for i in range(k)]
        compute = {n: {d: self.ms[n] / s for d, s in zip(devices, speeds)} for n in self.nodes}
        link = link if links else FREE_LINK
        has_succ = {u for u, _ in self.edges}
        inputs = [n for n in self.nodes if not any(v == n for _, v in self.edges)]
        return Problem.build(self.nodes, self.edges, devices, compute, self.bytes,
                             {(a, b): link for a in devices for b in devices if a != b},
                             inputs, [n for n in self.nodes if n not in has_succ])


def transformer_encoder(layers: int, k: int, *, heads: int = 8, tokens: int = 128,
                        width: int = 256, unequal: bool = False, links: bool = True,
                        seed: int = 0) -> Problem:
    """An encoder of ``layers`` blocks at operator level (``9 + 6 * heads`` operators each)."""
    b = _Builder()
    head = width // heads
    act = tokens * width
    x = b.add("tokens", [], 0.0, act * FLOAT_BYTES)
    for i in range(layers):
        p = f"l{i}"
        ln1 = b.op(f"{p}.ln1", [x], 8 * act, act)
        outs = []
        for h in range(heads):
            q, kk, v = (b.op(f"{p}.h{h}.{m}", [ln1], 2 * tokens * width * head, tokens * head)
                        for m in "qkv")
            scores = b.op(f"{p}.h{h}.scores", [q, kk], 2 * tokens * tokens * head,
                          tokens * tokens)
            soft = b.op(f"{p}.h{h}.softmax", [scores], 5 * tokens * tokens, tokens * tokens)
            outs.append(b.op(f"{p}.h{h}.context", [soft, v], 2 * tokens * tokens * head,
                             tokens * head))
        cat = b.op(f"{p}.concat", outs, act, act)
        proj = b.op(f"{p}.proj", [cat], 2 * tokens * width * width, act)
        add1 = b.op(f"{p}.add1", [x, proj], act, act)
        ln2 = b.op(f"{p}.ln2", [add1], 8 * act, act)
        ff1 = b.op(f"{p}.ff1", [ln2], 2 * tokens * width * 4 * width, 4 * act)
        gelu = b.op(f"{p}.gelu", [ff1], 8 * 4 * act, 4 * act)
        ff2 = b.op(f"{p}.ff2", [gelu], 2 * tokens * 4 * width * width, act)
        x = b.op(f"{p}.add2", [add1, ff2], act, act)
    return b.problem(k, unequal, links, seed)


def inception_like(blocks: int, k: int, *, branches: int = 6, size: int = 28,
                   channels: int = 96, unequal: bool = False, links: bool = True,
                   seed: int = 0) -> Problem:
    """``blocks`` blocks of ``branches`` parallel branches (1-3 convolutions, kernel 1, 3 or
    5, random widths) joined by a concatenation."""
    rng = random.Random(seed)
    b = _Builder()
    pixels = size * size
    x = b.add("image", [], 0.0, pixels * 3 * FLOAT_BYTES)
    in_c = 3
    for i in range(blocks):
        ends, out_c = [], 0
        for j in range(branches):
            node, c = x, in_c
            for m in range(rng.randint(1, 3)):
                kernel, filters = rng.choice((1, 3, 5)), rng.choice((16, 32, 48, 64))
                node = b.op(f"b{i}.br{j}.conv{m}", [node],
                            2 * pixels * kernel * kernel * c * filters, pixels * filters)
                c = filters
            ends.append(node)
            out_c += c
        x = b.op(f"b{i}.concat", ends, pixels * out_c, pixels * out_c)
        in_c = out_c
    return b.problem(k, unequal, links, seed)


@functools.lru_cache(maxsize=4)
def _profile_rows(folder: Path) -> list[tuple[float, int]]:
    rows = []
    for path in kernel_csvs(folder):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if float(row["load_target"]) == 0 and row["timestamp"] < MEASURED_BEFORE:
                    rows.append((float(row["median_ms"]), int(float(row["output_bytes"]))))
    return rows


def random_layered(nodes: int, k: int, *, width: int = 8, unequal: bool = False,
                   links: bool = True, seed: int = 0, profile: Path | None = None) -> Problem:
    """A random layered DAG of ``nodes`` nodes (one input), layers of 1 to ``width`` nodes."""
    rng = random.Random(seed)
    folder = profile or DEFAULT_PROFILE
    rows = _profile_rows(folder) if folder.is_dir() else []

    def draw() -> tuple[float, int]:
        if rows:
            return rng.choice(rows)
        return rng.lognormvariate(-1.5, 1.5), int(rng.lognormvariate(11, 2))

    b = _Builder()
    layers = [[b.add("input", [], 0.0, 150_528 * FLOAT_BYTES)]]
    count = 1
    while count < nodes:
        layer = []
        for _ in range(min(rng.randint(1, width), nodes - count)):
            pool = [u for previous in layers[-3:] for u in previous]
            preds = {layers[-1][rng.randrange(len(layers[-1]))]}
            preds.update(rng.sample(pool, min(len(pool), rng.randint(0, 2))))
            ms, nbytes = draw()
            layer.append(b.add(f"n{count}", sorted(preds), ms, nbytes))
            count += 1
        layers.append(layer)
    consumed = {u for u, _ in b.edges}
    b.add("output", [u for u in b.nodes if u not in consumed], OPERATOR_MS, FLOAT_BYTES * 1000)
    return b.problem(k, unequal, links, seed, FAST_LINK)
