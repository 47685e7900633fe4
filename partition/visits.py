"""The order in which a frame visits the devices of a plan: its stages.

A plan whose tensors only go to later devices (every throughput plan) has one stage per device
it uses, in device order. A latency plan may come back to a device (phone -> server -> phone,
e.g. a decoder whose output is larger than the bottleneck it reads): that device then has one
stage per visit.

>>> visits(["x", "a", "b", "c"], [("x", "a"), ("a", "b"), ("b", "c")],
...        {"x": "phone", "a": "phone", "b": "server", "c": "phone"}, ["phone", "server"])
[('phone', ['x', 'a']), ('server', ['b']), ('phone', ['c'])]
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence


def visits(nodes: Sequence[str], edges: Iterable[tuple[str, str]],
           assignment: Mapping[str, str],
           devices: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The stages in running order: ``(device, its nodes in the order of nodes)``.

    ``nodes`` in a topological order. Each node gets a visit number: the largest over its
    inputs of theirs, plus one where an input comes from a later device (the frame must come
    back). Stages are the (visit, device) pairs in that order, so every tensor goes to the
    same or a later stage, and a plan that never goes back has one stage per device it uses.
    """
    order = {d: i for i, d in enumerate(devices)}
    inputs = defaultdict(list)
    for u, v in edges:
        inputs[v].append(u)
    visit: dict[str, int] = {}
    for node in nodes:
        here = order[assignment[node]]
        visit[node] = max((visit[u] + (order[assignment[u]] > here) for u in inputs[node]),
                          default=0)
    key = {n: (visit[n], order[assignment[n]]) for n in nodes}
    return [(devices[d], [n for n in nodes if key[n] == (v, d)])
            for v, d in sorted(set(key.values()))]
