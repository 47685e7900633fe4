"""A plan's stages in running order: one per device visit, every tensor forward."""

import networkx as nx
import numpy as np

from dnnsplit.partition.visits import visits

DEVICES = ("a", "b", "c")


def random_case(rng, forward: bool):
    n = int(rng.integers(1, 12))
    nodes = [f"n{i}" for i in range(n)]  # a topological order
    edges = [(f"n{i}", f"n{j}") for i in range(n) for j in range(i + 1, n) if rng.random() < 0.3]
    graph = nx.DiGraph(edges)
    graph.add_nodes_from(nodes)
    if forward:  # devices in order along every edge: a pipeline
        level = {}
        for v in nodes:
            level[v] = max([level[u] for u in graph.predecessors(v)] + [0]) + int(
                rng.integers(0, 2))
        assignment = {v: DEVICES[min(level[v], 2)] for v in nodes}
    else:
        assignment = {v: DEVICES[int(rng.integers(0, 3))] for v in nodes}
    return nodes, graph, assignment


def fewest_visits(graph, assignment) -> int:
    """An independent count: the stages needed are at least 1 + the most device changes to an
    earlier device along any path, per device; the total is checked against the stages the
    function makes through brute force over paths."""
    best = 0
    for source in graph.nodes:
        for target in graph.nodes:
            for path in nx.all_simple_paths(graph, source, target) if source != target else [
                    [source]]:
                backs = sum(DEVICES.index(assignment[v]) < DEVICES.index(assignment[u])
                            for u, v in zip(path, path[1:]))
                best = max(best, backs)
    return best


def test_every_tensor_goes_to_the_same_or_a_later_stage_and_pipelines_keep_one_per_device():
    rng = np.random.default_rng(7)
    for case in range(300):
        forward = case % 2 == 0
        nodes, graph, assignment = random_case(rng, forward)
        stages = visits(nodes, graph.edges, assignment, DEVICES)
        where = {v: i for i, (_, members) in enumerate(stages) for v in members}
        assert sorted(where) == sorted(nodes)  # every node in exactly one stage
        assert sum(len(members) for _, members in stages) == len(nodes)
        for device, members in stages:
            assert members and all(assignment[v] == device for v in members)
            assert members == [v for v in nodes if v in members]  # topological inside
        for u, v in graph.edges:
            assert where[u] <= where[v]
            assert where[u] < where[v] or assignment[u] == assignment[v]
        if forward:
            assert [d for d, _ in stages] == [d for d in DEVICES if d in assignment.values()]
        # a device is visited once more than the most returns to earlier devices on a path
        # into it, at most
        rounds = fewest_visits(graph, assignment)
        for device in DEVICES:
            assert sum(d == device for d, _ in stages) <= rounds + 1


def test_a_decoder_back_on_the_first_device_is_its_second_visit():
    nodes = ["x", "enc", "mid", "dec", "out"]
    edges = [("x", "enc"), ("enc", "mid"), ("mid", "dec"), ("enc", "dec"), ("dec", "out")]
    assignment = {"x": "a", "enc": "a", "mid": "b", "dec": "a", "out": "a"}
    assert visits(nodes, edges, assignment, ["a", "b"]) == [
        ("a", ["x", "enc"]), ("b", ["mid"]), ("a", ["dec", "out"])]
    # three devices, the frame going a -> c -> b -> a: c before b although b comes first
    assignment = {"x": "a", "enc": "c", "mid": "b", "dec": "a", "out": "a"}
    assert visits(nodes, edges, assignment, ["a", "b", "c"]) == [
        ("a", ["x"]), ("c", ["enc"]), ("b", ["mid"]), ("a", ["dec", "out"])]
