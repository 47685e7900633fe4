"""`partition plan` in-process: plans recompute from their own JSON; mistakes are one line."""

import json

import keras
import pytest
from typer.testing import CliRunner

from dnnsplit.partition.cli import app
from dnnsplit.partition.graph import TaskGraph
from dnnsplit.partition.plan import Plan

pytestmark = pytest.mark.usefixtures("fresh_keras_session")
runner = CliRunner()


@pytest.fixture
def branchy(tmp_path):
    """A small branchy model file and a costs file for two devices."""
    x = keras.Input((16, 16, 3), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(x)
    b1 = keras.layers.Conv2D(8, 3, padding="same", name="b1")(a)
    b2 = keras.layers.Conv2D(8, 1, name="b2")(a)
    c = keras.layers.Add(name="c")([b1, b2])
    y = keras.layers.Dense(4, name="y")(keras.layers.GlobalAveragePooling2D(name="gap")(c))
    model = keras.Model(x, y, name="branchy")
    path = tmp_path / "branchy.keras"
    model.save(path)
    tg = TaskGraph.from_keras(model)
    costs = {"compute_ms": {n: {"phone": 1 + i, "gpu": 0.1 * (1 + i)}
                            for i, n in enumerate(tg.nodes)}}
    costs_path = tmp_path / "costs.json"
    costs_path.write_text(json.dumps(costs))
    return path, costs_path, tg


def plan_args(path, costs_path, *extra):
    return ["plan", str(path), "--device", "edge=phone", "--device", "server=gpu",
            "--costs", str(costs_path), "--mbps", "10", "--rtt-ms", "4", *extra]


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_plan_json_recomputes_and_dp_is_best(branchy, tmp_path, objective):
    path, costs_path, tg = branchy
    out = tmp_path / "plans"
    result = runner.invoke(app, plan_args(path, costs_path, "--json", "--objective", objective,
                                          "--out", str(out)))
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    assert [p["algorithm"] for p in plans] == ["dp", "dads", "neurosurgeon"]
    for data in plans:
        assert set(data) >= {"objective", "algorithm", "devices", "links", "nodes", "edges",
                             "input_nodes", "output_nodes", "assignment", "predicted",
                             "solver_ms"}
        assert data["links"]["edge->server"] == {"latency_ms": 2.0, "mbps": 10.0}
        assert data["assignment"]["image"] == "edge"
        plan = Plan.from_dict(data)  # raises unless the stored prediction recomputes
        assert len(plan.assignment) == len(tg)
        saved = Plan.load(out / f"plan-{data['algorithm']}.json")
        assert saved.predicted == plan.predicted
    key = "latency_ms" if objective == "latency" else "period_ms"
    assert plans[0]["predicted"][key] <= min(p["predicted"][key] for p in plans) + 1e-9


def test_plan_table_and_what_if_factor(branchy):
    path, costs_path, _ = branchy
    result = runner.invoke(app, ["plan", str(path), "--device", "edge=phone:x4", "--device",
                                 "server=gpu", "--costs", str(costs_path), "--mbps", "10"])
    assert result.exit_code == 0, result.output
    assert "phone x4 (what-if scaling)" in result.stdout
    assert "only edge" in result.stdout and "dp" in result.stdout


def test_three_devices_run_dp_only(branchy, tmp_path):
    path, costs_path, tg = branchy
    costs = json.loads(costs_path.read_text())
    for row in costs["compute_ms"].values():
        row["mid"] = row["phone"] / 2
    costs_path.write_text(json.dumps(costs))
    result = runner.invoke(app, ["plan", str(path), "--device", "a=phone", "--device", "b=mid",
                                 "--device", "c=gpu", "--costs", str(costs_path), "--mbps", "100",
                                 "--objective", "throughput", "--json"])
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    assert [p["algorithm"] for p in plans] == ["dp"]
    Plan.from_dict(plans[0])


@pytest.mark.parametrize("algorithm", ["dp", "balanced", "pipeline-milp"])
def test_throughput_algorithms_take_a_time_limit_and_recompute(branchy, algorithm):
    path, costs_path, _ = branchy
    result = runner.invoke(app, plan_args(path, costs_path, "--objective", "throughput",
                                          "--algorithm", algorithm, "--time-limit", "2",
                                          "--json"))
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.stdout)["plans"]
    plan = Plan.from_dict(data)
    optimum = runner.invoke(app, plan_args(path, costs_path, "--objective", "throughput",
                                           "--algorithm", "brute", "--json"))
    best = json.loads(optimum.stdout)["plans"][0]["predicted"]["period_ms"]
    assert plan.predicted.period_ms >= best - 1e-9
    if algorithm != "balanced":  # exact on so small a graph
        assert abs(plan.predicted.period_ms - best) < 1e-6


def test_call_overheads_of_a_costs_file_reach_the_plan_and_scale_with_the_factor(branchy,
                                                                                 tmp_path):
    path, costs_path, tg = branchy
    costs = json.loads(costs_path.read_text())
    costs["call_overhead_ms"] = {"phone": 0.5, "gpu": 3.0}
    costs_path.write_text(json.dumps(costs))
    result = runner.invoke(app, ["plan", str(path), "--device", "edge=phone:x2", "--device",
                                 "server=gpu", "--costs", str(costs_path), "--mbps", "10",
                                 "--json", "--objective", "throughput"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["plans"][0]
    assert data["call_overhead_ms"] == {"edge": 1.0, "server": 3.0}
    table = runner.invoke(app, ["plan", str(path), "--device", "edge=phone:x2", "--device",
                                "server=gpu", "--costs", str(costs_path), "--mbps", "10"])
    assert "call overhead per stage" in table.stdout and "server 3.00 ms" in table.stdout
    plan = Plan.from_dict(data)
    compute = {d: sum(n["compute_ms"][d] for n in data["nodes"]
                      if data["assignment"][n["name"]] == d and n["name"] not in tg.input_nodes)
               for d in data["devices"]}
    for d, ms in zip(plan.problem.devices, plan.predicted.device_ms):
        used = any(data["assignment"][n] == d for n in tg.nodes if n not in tg.input_nodes)
        assert ms == pytest.approx(compute[d] + (data["call_overhead_ms"][d] if used else 0))


def test_a_profile_plans_with_its_bundles_call_overhead(branchy):
    from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
    from dnnsplit.partition.problem import Link
    from dnnsplit.predictor.bundle import load_bundle

    _, _, tg = branchy
    links = {("a", "b"): Link(0, 100), ("b", "a"): Link(0, 100)}
    problem = problem_from_graph(tg, [DeviceSpec("a", "cpu-1t-tensorflow"),
                                      DeviceSpec("b", "cpu-1t-tensorflow", 3.0)], links)
    bundle = load_bundle("cpu-1t-tensorflow")
    overhead = bundle.call_overhead_ms
    assert overhead > 0
    assert problem.call_overhead_ms == pytest.approx({"a": overhead, "b": 3 * overhead})
    # a plan on one device predicts what the predictor predicts for the whole model
    from dnnsplit.partition.planner import single_device_baselines
    from dnnsplit.predictor.compose import predict_graph

    only_a = single_device_baselines(problem, "latency")[0]
    assert only_a.value == pytest.approx(predict_graph(bundle, tg).total_ms)
    # each device records what the executor runs it with: the profile's backend and threads
    assert problem.runtimes == {
        "a": {"profile": "cpu-1t-tensorflow", "factor": 1.0, "backend": "tensorflow",
              "threads": 1},
        "b": {"profile": "cpu-1t-tensorflow", "factor": 3.0, "backend": "tensorflow",
              "threads": 1}}
    from dnnsplit.partition.planner import make_plans

    plan = make_plans(problem, "latency", ["dp"])[0]
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.problem.runtimes == problem.runtimes
    old = plan.to_dict()
    del old["runtimes"]  # a plan written before runtimes were recorded
    assert Plan.from_dict(old).problem.runtimes == {}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("malformed costs", "is not JSON"),
        ("costs for another model", "costs file has rows for 1 node(s) that branchy lacks: x"),
        ("costs missing a node", "costs file has no row for node"),
        ("unknown profile", "unknown device profile 'cpu-9t-nothing': shipped profiles are"),
        ("missing link", "no link between edge and server"),
        ("zero bandwidth", "--mbps must be a bandwidth above 0 (Mbit/s), got 0"),
        ("negative round trip", "--rtt-ms must be a round-trip time of 0 ms or more, got -1"),
        ("bad link file", "malformed"),
        ("bad link value", "l2.json': link bandwidth must be > 0 Mbps, got -3"),
        ("bad device", "NAME=SOURCE[:xFACTOR]"),
        ("unknown algorithm", "unknown algorithm"),
        ("zero time limit", "--time-limit"),
        ("latency heuristic", "use it with --objective throughput"),
    ],
)
def test_user_mistakes_give_one_error_line(branchy, tmp_path, case, message):
    path, costs_path, _ = branchy
    args = {
        "malformed costs": plan_args(path, write(tmp_path, "bad.json", "{nope")),
        "costs for another model": plan_args(
            path, write(tmp_path, "c.json", json.dumps({"compute_ms": {"x": {"phone": 1}}}))),
        "costs missing a node": plan_args(
            path, write(tmp_path, "c2.json", json.dumps({"compute_ms": {"a": {"phone": 1}}}))),
        "unknown profile": ["plan", str(path), "--device", "edge=cpu-9t-nothing", "--device",
                            "server=gpu", "--mbps", "10"],
        "missing link": ["plan", str(path), "--device", "edge=phone", "--device", "server=gpu",
                         "--costs", str(costs_path)],
        "zero bandwidth": plan_args(path, costs_path) + ["--mbps", "0"],
        "negative round trip": plan_args(path, costs_path) + ["--rtt-ms", "-1"],
        "bad link file": plan_args(path, costs_path) + [
            "--link", "edge-server=" + write(tmp_path, "l.json", '{"mbps": 3}')],
        "bad link value": plan_args(path, costs_path) + [
            "--link", "edge-server=" + write(tmp_path, "l2.json",
                                             '{"latency_ms": 1, "mbps": -3}')],
        "bad device": ["plan", str(path), "--device", "edge=phone:4x", "--costs",
                       str(costs_path), "--mbps", "1"],
        "unknown algorithm": plan_args(path, costs_path, "--algorithm", "magic"),
        "zero time limit": plan_args(path, costs_path, "--time-limit", "0"),
        "latency heuristic": plan_args(path, costs_path, "--algorithm", "balanced"),
    }[case]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_link_profile_file_with_directions(branchy, tmp_path):
    path, costs_path, _ = branchy
    link = write(tmp_path, "wifi.json", json.dumps(
        {"up": {"latency_ms": 3, "mbps": 5}, "down": {"latency_ms": 1, "mbps": 50}}))
    result = runner.invoke(app, ["plan", str(path), "--device", "edge=phone", "--device",
                                 "server=gpu", "--costs", str(costs_path), "--link",
                                 f"edge-server={link}", "--json", "--algorithm", "dp"])
    assert result.exit_code == 0, result.output
    links = json.loads(result.stdout)["plans"][0]["links"]
    assert links["edge->server"] == {"latency_ms": 3.0, "mbps": 5.0}
    assert links["server->edge"] == {"latency_ms": 1.0, "mbps": 50.0}


def test_mbps_without_rtt_says_which_latency_it_assumed_and_the_table_names_its_baselines(
        branchy):
    path, costs_path, _ = branchy
    result = runner.invoke(app, ["plan", str(path), "--device", "edge=phone:x20", "--device",
                                 "server=gpu", "--costs", str(costs_path), "--mbps", "1000"])
    assert result.exit_code == 0, result.output
    assert "no --rtt-ms given, so 0 ms latency assumed" in result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("plan "))
    # the server is the best single device here; the first device (the phone) is shown too
    assert "vs server" in header and "vs edge" in header
    assert "best single device (server" in result.stdout and "first device, edge" in result.stdout
    quiet = runner.invoke(app, plan_args(path, costs_path))  # --rtt-ms given: nothing said
    assert "assumed" not in quiet.stderr


def test_plot_writes_a_png(branchy, tmp_path):
    path, costs_path, _ = branchy
    png = tmp_path / "fig" / "plan.png"
    result = runner.invoke(app, plan_args(path, costs_path, "--objective", "throughput",
                                          "--plot", str(png)))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*"))  # no temporary file left behind
