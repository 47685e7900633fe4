"""The generated partition instances: sizes, structure and reproducibility."""

import networkx as nx
import pytest

from dnnsplit.partition import instances


def graph(problem):
    g = nx.DiGraph()
    g.add_nodes_from(problem.nodes)
    g.add_edges_from(problem.edges)
    return g


def test_transformer_encoder_has_attention_as_separate_operators():
    problem = instances.transformer_encoder(12, 4, heads=8)
    assert len(problem.nodes) == 1 + 12 * (9 + 6 * 8)
    g = graph(problem)
    assert set(g.predecessors("l0.h3.scores")) == {"l0.h3.q", "l0.h3.k"}
    assert set(g.predecessors("l0.add1")) == {"tokens", "l0.proj"}
    assert g.in_degree("l0.concat") == 8
    assert problem.output_nodes == ("l11.add2",) and problem.input_nodes == ("tokens",)
    ff = problem.compute_ms["l0.ff1"]["d0"]
    assert ff > 10 * problem.compute_ms["l0.h0.softmax"]["d0"]  # matmuls dominate


@pytest.mark.parametrize("make", [
    lambda k, u: instances.transformer_encoder(2, k, unequal=u),
    lambda k, u: instances.inception_like(5, k, unequal=u),
    lambda k, u: instances.random_layered(300, k, unequal=u),
])
def test_instances_are_dags_with_one_input_one_output_and_the_speeds_asked(make):
    same = make(4, False)
    assert nx.is_directed_acyclic_graph(graph(same))
    assert len(same.input_nodes) == 1 and len(same.output_nodes) == 1
    node = same.nodes[-2]
    assert len({same.compute_ms[node][d] for d in same.devices}) == 1
    unequal = make(4, True)
    speeds = [unequal.compute_ms[node][d] for d in unequal.devices]
    assert speeds[0] > speeds[-1] and len(set(speeds)) == 4  # the first device is slowest
    assert make(4, False) == same  # seeded


def test_random_layered_has_the_size_asked_and_costs_from_the_profile():
    problem = instances.random_layered(500, 3, seed=7)
    assert len(problem.nodes) == 501  # and the output node
    rows = set(instances._profile_rows(instances.DEFAULT_PROFILE))
    drawn = [(problem.compute_ms[n]["d0"], problem.output_bytes[n]) for n in problem.nodes[1:-1]]
    assert rows and all(pair in rows for pair in drawn)
    assert instances.random_layered(500, 3, seed=8) != problem


def test_without_links_transfers_cost_nothing_measurable():
    problem = instances.inception_like(3, 3, links=False)
    ip = problem.indexed
    assert max(ip.transfer[u][a][b] for u in range(ip.n) for a in range(3) for b in range(3)) < 1e-3
