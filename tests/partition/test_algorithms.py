"""Exact algorithms agree with independent references on hundreds of random DAGs."""

import math

import pytest

from dnnsplit.partition.brute import brute
from dnnsplit.partition.cost import evaluate, evaluate_indexed
from dnnsplit.partition.dads import dads
from dnnsplit.partition.dp import dp, low_frontier_order
from dnnsplit.partition.neurosurgeon import neurosurgeon
from dnnsplit.partition.plan import Plan
from dnnsplit.partition.problem import Link, PlanError, Problem
from random_problems import best_split_along, random_problem


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-4)


CASES_K2 = [(seed, 2, 4 + seed % 8) for seed in range(120)]  # 4..11 nodes
CASES_K3 = [(seed, 3, 3 + seed % 6) for seed in range(1000, 1090)]  # 3..8 nodes


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("seed, k, n", CASES_K2 + CASES_K3)
def test_dp_equals_brute_force(seed, k, n, objective):
    problem = random_problem(seed, n, k, edge_p=0.3 + (seed % 3) * 0.15,
                             n_inputs=1 + (seed % 4 == 0), call_overhead=seed % 2 == 1)
    exact, reference = dp(problem, objective), brute(problem, objective)
    assert close(exact.value, reference.value)
    predicted = evaluate(problem, exact.named(problem))
    assert close(exact.value, predicted.latency_ms if objective == "latency"
                 else predicted.period_ms)
    if objective == "throughput":
        assert predicted.monotone


@pytest.mark.parametrize("seed", range(100))
def test_dp_equals_min_cut_for_two_device_latency_on_larger_graphs(seed):
    problem = random_problem(5000 + seed, 12 + seed % 10, 2, edge_p=0.15,
                             n_inputs=1 + seed % 2, n_outputs=1 + seed % 3,
                             call_overhead=seed % 3 == 1)
    assert close(dp(problem, "latency").value, dads(problem, "latency").value)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("seed", range(60))
def test_dp_is_never_worse_than_the_baselines(seed, objective):
    problem = random_problem(7000 + seed, 6 + seed % 14, 2, edge_p=0.25,
                             call_overhead=seed % 2 == 1)
    best = dp(problem, objective).value
    for baseline in (dads, neurosurgeon):
        solution = baseline(problem, objective)
        assert best <= solution.value + 1e-6
        assert close(solution.value, evaluate_indexed(problem.indexed, solution.assignment)
                     .latency_ms if objective == "latency"
                     else evaluate_indexed(problem.indexed, solution.assignment).period_ms)


@pytest.mark.parametrize("seed", range(40))
def test_every_plan_recomputes_to_its_own_prediction(seed):
    k = 2 + seed % 2
    problem = random_problem(9000 + seed, 8, k, call_overhead=seed % 4 >= 2)
    for objective in ("latency", "throughput"):
        algorithms = (dp, dads, neurosurgeon) if k == 2 else (dp,)
        for algorithm in algorithms:
            plan = Plan.from_solution(problem, algorithm(problem, objective))
            again = Plan.from_dict(plan.to_dict())
            assert again.predicted == plan.predicted
            assert again.assignment == plan.assignment


def test_a_tampered_plan_is_refused():
    problem = random_problem(1, 6, 2)
    data = Plan.from_solution(problem, dp(problem, "latency")).to_dict()
    data["predicted"]["latency_ms"] *= 0.5
    with pytest.raises(PlanError, match="edited or is corrupt"):
        Plan.from_dict(data)
    data = Plan.from_solution(problem, dp(problem, "latency")).to_dict()
    del data["edges"]
    with pytest.raises(PlanError, match="malformed plan"):
        Plan.from_dict(data)


def chain_problem(costs_edge, costs_server, nbytes, mbps=8.0, latency=0.0):
    n = len(costs_edge)
    nodes = [f"v{i}" for i in range(n)]
    return Problem.build(
        nodes=nodes,
        edges=list(zip(nodes, nodes[1:])),
        devices=["edge", "server"],
        compute_ms={v: {"edge": e, "server": s}
                    for v, e, s in zip(nodes, costs_edge, costs_server)},
        output_bytes=dict(zip(nodes, nbytes)),
        links={("edge", "server"): Link(latency, mbps), ("server", "edge"): Link(latency, mbps)},
        input_nodes=[nodes[0]],
        output_nodes=[nodes[-1]],
    )


def test_hand_worked_chain():
    # input (1000 B) -> a -> b (10 B out). 8 Mbps: 1000 B = 1 ms, 10 B = 0.01 ms.
    problem = chain_problem([0, 4, 4], [0, 1, 1], [1000, 1000, 10])
    solution = dp(problem, "latency")
    assert solution.named(problem) == {"v0": "edge", "v1": "server", "v2": "server"}
    assert close(solution.value, 1 + 1 + 1 + 0.01)  # send input, a, b, return the output
    assert close(dp(problem, "throughput").value, 2.0)  # the server computes 2 ms per frame


@pytest.mark.parametrize("edge, server, mbps, expected", [
    ([0, 1, 1], [0, 1, 1], 0.001, 2.0),  # links far too slow: everything stays on the edge
    ([0, 0, 0], [0, 0, 0], 8.0, 0.0),  # nothing costs anything
    ([0, 3, 3], [0, 3, 3], 1e6, 3.0),  # the lower bound (work shared by both) is the optimum
])
def test_throughput_search_ends_at_its_first_target_or_at_the_upper_bound(edge, server, mbps,
                                                                          expected):
    problem = chain_problem(edge, server, [10, 10, 10], mbps=mbps)
    solution = dp(problem, "throughput")
    assert close(solution.value, expected), solution
    assert close(solution.value, brute(problem, "throughput").value)


def test_two_device_algorithms_refuse_three_devices_and_unknown_objective():
    problem = random_problem(3, 5, 3)
    with pytest.raises(PlanError, match="2 devices"):
        dads(problem, "latency")
    with pytest.raises(PlanError, match="2 devices"):
        neurosurgeon(problem, "latency")
    with pytest.raises(PlanError, match="unknown objective"):
        dp(problem, "energy")


def test_low_frontier_order_is_topological():
    problem = random_problem(11, 30, 2, edge_p=0.2)
    ip = problem.indexed
    order = low_frontier_order(ip)
    position = {v: i for i, v in enumerate(order)}
    assert sorted(order) == list(range(ip.n))
    assert all(position[u] < position[v] for v in range(ip.n) for u in ip.preds[v])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda kw: kw["links"].pop(("server", "edge")), "no link server->edge"),
        (lambda kw: kw["compute_ms"]["v1"].update(edge=-1), "finite numbers >= 0"),
        (lambda kw: kw["compute_ms"]["v2"].pop("server"), "no compute cost"),
        (lambda kw: kw["edges"].append(("v2", "v0")), "cycle|predecessors"),
    ],
)
def test_inconsistent_problems_are_refused(change, message):
    nodes = ["v0", "v1", "v2"]
    kw = dict(nodes=nodes, edges=[("v0", "v1"), ("v1", "v2")], devices=["edge", "server"],
              compute_ms={v: {"edge": 1.0, "server": 1.0} for v in nodes},
              output_bytes={v: 10 for v in nodes},
              links={("edge", "server"): Link(0, 10), ("server", "edge"): Link(0, 10)},
              input_nodes=["v0"], output_nodes=["v2"])
    change(kw)
    with pytest.raises(PlanError, match=message):
        Problem.build(**kw)


def test_zero_bandwidth_link_is_refused():
    with pytest.raises(PlanError, match="> 0 Mbps"):
        Link(1.0, 0.0)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("seed, k", [(s, 2) for s in range(40)] + [(s, 3) for s in range(40, 80)])
def test_dp_equals_milp_on_sixteen_node_graphs(seed, k, objective):
    from dnnsplit.partition.milp import milp

    problem = random_problem(20_000 + seed, 16, k, edge_p=0.2 + (seed % 3) * 0.1,
                             n_inputs=1 + seed % 2, call_overhead=seed % 2 == 1)
    reference = milp(problem, objective)
    assert reference.exact
    assert close(dp(problem, objective).value, reference.value)


def test_dp_hands_a_too_wide_latency_problem_to_the_milp_and_says_so():
    problem = random_problem(77, 12, 3, edge_p=0.3)
    answer = dp(problem, "latency", max_states=1, time_limit_s=0.0)
    assert "answered by MILP" in answer.note and answer.algorithm == "dp"
    assert answer.exact and close(answer.value, dp(problem, "latency").value)


@pytest.mark.parametrize("seed", range(10))
def test_dp_answers_a_too_wide_two_device_latency_problem_by_the_min_cut(seed):
    from dnnsplit.partition.milp import milp

    problem = random_problem(300 + seed, 12, 2, edge_p=0.3, call_overhead=seed % 2 == 1)
    answer = dp(problem, "latency", max_states=1, time_limit_s=0.0)
    assert "minimum s-t cut" in answer.note and answer.exact
    assert close(answer.value, milp(problem, "latency").value)
    assert close(answer.value, dp(problem, "latency").value)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_dp_without_fallback_refuses_a_too_wide_graph(objective):
    problem = random_problem(77, 12, 3, edge_p=0.3)
    with pytest.raises(PlanError, match="exact dp gave up"):
        dp(problem, objective, max_states=1, time_limit_s=0.0, fallback_time_s=None)


@pytest.mark.parametrize("seed, k", [(s, 2) for s in range(30)] + [(s, 3) for s in range(30, 60)])
def test_a_too_wide_graph_gets_the_heuristic_then_the_milp_and_says_so(monkeypatch, seed, k):
    import dnnsplit.partition.dp as dp_module

    problem = random_problem(seed, 9, k, n_inputs=1 + seed % 2, call_overhead=seed % 2 == 1)
    exact = dp(problem, "throughput")
    monkeypatch.setattr(dp_module, "THROUGHPUT_EXACT_S", 0.0)  # the exact search gives up
    wide = dp(problem, "throughput")
    assert "graph too wide for exact dp" in wide.note
    assert wide.lower_bound <= exact.value + 1e-9  # the proven bound is a true lower bound
    assert wide.value >= exact.value - 1e-9
    reference = best_split_along(problem, low_frontier_order(problem.indexed))
    assert wide.value <= reference + 1e-9  # never worse than the split along one order
    if wide.exact:
        assert close(wide.value, exact.value)
    else:  # stopped at the MILP's gap
        assert wide.value <= exact.value * (1 + dp_module.WIDE_GAP) + 1e-9
        assert "gap of at most" in wide.note


@pytest.mark.parametrize("milp_s", [None, 0.0])  # None: as shipped; 0: the MILP gets no time
@pytest.mark.parametrize("seed", range(30))
def test_too_wide_latency_uses_the_first_device_and_one_other_and_says_so(monkeypatch, seed,
                                                                          milp_s):
    import itertools

    import dnnsplit.partition.dp as dp_module
    import dnnsplit.partition.wide_latency as wide_module

    if milp_s is not None:
        monkeypatch.setattr(wide_module, "BUDGET_S", milp_s)
        monkeypatch.setattr(wide_module, "MILP_MIN_S", milp_s)
    problem = random_problem(500 + seed, 8, 3, n_inputs=1 + seed % 2,
                             call_overhead=seed % 2 == 1)
    exact = dp(problem, "latency")
    monkeypatch.setattr(dp_module, "MAX_STATE_ESTIMATE", 0)  # every graph is too wide
    monkeypatch.setattr(dp_module, "LATENCY_WIDE_TRY_S", 0.0)  # and the exact try gives up
    answer = dp(problem, "latency")
    assert answer.value >= exact.value - 1e-9
    if answer.exact:  # the relaxation bound or the MILP proved it
        assert close(answer.value, exact.value) and close(answer.lower_bound, exact.value)
        assert "proven optimal" in answer.note
        return
    assert "graph too wide" in answer.note
    assert answer.lower_bound <= exact.value + 1e-6
    ip = problem.indexed
    free = [v for v in range(ip.n) if not ip.is_input[v]]
    reference = math.inf  # every plan on devices {0, j}, enumerated
    for other in (1, 2):
        for choice in itertools.product((0, other), repeat=len(free)):
            devices = [0] * ip.n
            for v, d in zip(free, choice):
                devices[v] = d
            reference = min(reference, evaluate_indexed(ip, devices).latency_ms)
    assert answer.value <= reference + 1e-9  # never worse than the best 2-device plan
    if "first device and one other" in answer.note:
        assert close(answer.value, reference)


@pytest.mark.parametrize("seed", range(5))
def test_scaling_compute_scales_device_times_and_leaves_links_alone(seed):
    from dnnsplit.partition.cost import scale_compute

    problem = random_problem(seed, n=8, k=3, call_overhead=True)
    rng = __import__("random").Random(seed)
    assignment = {n: problem.devices[0] if n in problem.input_nodes else
                  rng.choice(problem.devices) for n in problem.nodes}
    base = evaluate(problem, assignment)
    scaled = evaluate(scale_compute(problem, 1.5), assignment)
    assert scaled.device_ms == pytest.approx([1.5 * ms for ms in base.device_ms])
    assert scaled.link_ms == pytest.approx(base.link_ms)
    compute = sum(base.device_ms)
    assert scaled.latency_ms == pytest.approx(base.latency_ms + 0.5 * compute)
    assert evaluate(problem, assignment) == base  # the original is untouched
    with pytest.raises(PlanError, match="> 0"):
        scale_compute(problem, 0.0)


def test_a_call_overhead_is_paid_once_by_each_device_that_runs_a_node():
    # input -> a -> b on two devices, overheads edge 0.5 and server 2 ms, free links
    problem = Problem.build(
        nodes=["x", "a", "b"], edges=[("x", "a"), ("a", "b")], devices=["edge", "server"],
        compute_ms={"x": {"edge": 0, "server": 0}, "a": {"edge": 3, "server": 1},
                    "b": {"edge": 3, "server": 1}},
        output_bytes={"x": 0, "a": 0, "b": 0},
        links={("edge", "server"): Link(0, 1e6), ("server", "edge"): Link(0, 1e6)},
        input_nodes=["x"], output_nodes=["b"], call_overhead_ms={"edge": 0.5, "server": 2})
    on_server = evaluate(problem, {"x": "edge", "a": "server", "b": "server"})
    assert on_server.device_ms == pytest.approx((0.0, 4.0))  # the input alone makes no call
    assert on_server.latency_ms == pytest.approx(4.0)
    split = evaluate(problem, {"x": "edge", "a": "edge", "b": "server"})
    assert split.device_ms == pytest.approx((3.5, 3.0))
    assert split.latency_ms == pytest.approx(6.5)
    # latency: the server alone (4 ms) beats the split and the edge alone (6.5 each);
    # throughput: the split (period 3.5) beats the single devices (4 and 6.5)
    assert dp(problem, "throughput").named(problem) == {"x": "edge", "a": "edge",
                                                        "b": "server"}
    assert dp(problem, "latency").value == pytest.approx(4.0)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("seed", range(30))
def test_call_overheads_never_lower_the_optimum(seed, objective):
    with_overhead = random_problem(30_000 + seed, 8, 2 + seed % 2, call_overhead=True)
    without = random_problem(30_000 + seed, 8, 2 + seed % 2)
    assert with_overhead.compute_ms == without.compute_ms
    assert dp(with_overhead, objective).value >= dp(without, objective).value - 1e-9


def test_plans_keep_their_call_overheads_and_older_plans_have_none():
    problem = random_problem(5, 7, 3, call_overhead=True)
    assert any(problem.call_overhead_ms.values())
    plan = Plan.from_solution(problem, dp(problem, "throughput"))
    again = Plan.from_dict(plan.to_dict())
    assert again.problem.call_overhead_ms == problem.call_overhead_ms
    assert again.predicted == plan.predicted
    old = Plan.from_solution(random_problem(5, 7, 3), dp(random_problem(5, 7, 3), "latency"))
    data = old.to_dict()
    del data["call_overhead_ms"]
    assert Plan.from_dict(data).predicted == old.predicted
    tampered = plan.to_dict()
    tampered["call_overhead_ms"] = {d: 0.0 for d in problem.devices}
    with pytest.raises(PlanError, match="edited or is corrupt"):
        Plan.from_dict(tampered)


@pytest.mark.parametrize("overhead, message", [
    ({"edge": -1.0}, "finite number >= 0"),
    ({"edge": float("nan")}, "finite number >= 0"),
    ({"phone": 1.0}, "unknown device"),
])
def test_bad_call_overheads_are_refused(overhead, message):
    with pytest.raises(PlanError, match=message):
        chain_problem_with([0, 1], [0, 1], overhead)


def chain_problem_with(edge, server, overhead):
    base = chain_problem(edge, server, [10] * len(edge))
    return Problem.build(base.nodes, base.edges, base.devices, base.compute_ms,
                         base.output_bytes, base.links, base.input_nodes, base.output_nodes,
                         call_overhead_ms=overhead)
