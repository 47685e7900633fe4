"""Layer splits: the rewritten model computes what the original does, and splitting a layer
that no whole-layer plan can balance finds the plan a search over every split finds."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from dnnsplit.partition.cli import app
from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
from dnnsplit.partition.layer_split import (LayerSplitError, layers_at_boundaries,
                                            parse_layer_splits, plan_with_layer_splits,
                                            split_layers, splittable)
from dnnsplit.partition.plan import Plan
from dnnsplit.partition.planner import make_plans
from dnnsplit.partition.problem import Link
from dnnsplit.predictor.model_graph import TaskGraph

pytestmark = pytest.mark.usefixtures("fresh_keras_session")
runner = CliRunner()


def chain_model(big_filters=64, size=16):
    """A chain whose middle convolution is most of the work: no split of whole layers
    balances two devices."""
    x = keras.Input((size, size, 8), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
    b = keras.layers.Conv2D(big_filters, 3, padding="same", activation="relu", name="big")(a)
    c = keras.layers.Conv2D(8, 1, activation="relu", name="c")(b)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    h = keras.layers.Dense(6, activation="tanh", name="hidden")(g)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    return keras.Model(x, out, name="chain")


def flops_plan(model, devices=("w1", "w2")):
    """The dp throughput plan with compute time = FLOPs (plus a little per layer)."""
    tg = TaskGraph.from_keras(model)
    costs = {n: {d: 1e-6 * tg.graph.nodes[n]["flops"] + 0.01 for d in devices}
             for n in tg.nodes}
    links = {(p, q): Link(0.0, 1e6) for p in devices for q in devices if p != q}
    problem = problem_from_graph(tg, [DeviceSpec(d, d) for d in devices], links, costs)
    return make_plans(problem, "throughput", ["dp"])[0]


def _channels(layer):
    config = layer.get_config()
    return config.get("filters", config.get("units"))


def frames(model, n=3):
    rng = np.random.default_rng(1)
    return [rng.standard_normal((2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
            for _ in range(n)]


@pytest.mark.parametrize("splits", [{"big": 2}, {"big": 5, "a": 3}, {"hidden": 4}])
def test_split_model_computes_what_the_original_does(splits):
    model = chain_model(big_filters=13)  # 13 filters into 2 or 5: unequal parts
    split = split_layers(model, splits)
    for x in frames(model):
        np.testing.assert_allclose(split(x), model(x), rtol=1e-5, atol=1e-6)
    names = [layer.name for layer in split.layers]
    for name, parts in splits.items():
        got = [split.get_layer(f"{name}_part{i}") for i in range(parts)]
        channels = [_channels(p) for p in got]
        total = _channels(model.get_layer(name))
        assert sum(channels) == total and max(channels) - min(channels) <= 1
        assert type(split.get_layer(name)).__name__ == "Concatenate"
        assert names.index(f"{name}_part0") < names.index(name)
    # layers not split are the original ones (shared weights), not copies
    assert split.get_layer("c") is model.get_layer("c")


def test_a_sequential_model_is_split_like_a_functional_one():
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(7, activation="relu",
                                                                      name="d1"),
                              keras.layers.Dense(2, name="d2")], name="seq")
    split = split_layers(model, {"d1": 3})
    x = np.random.default_rng(0).standard_normal((4, 10)).astype("float32")
    np.testing.assert_allclose(split(x), model(x), rtol=1e-5, atol=1e-6)
    assert {"d1_part0", "d1_part2"} <= set(TaskGraph.from_keras(split).nodes)
    unbuilt = keras.Sequential([keras.layers.Dense(3, name="d")])
    with pytest.raises(LayerSplitError, match="keras.Input"):
        split_layers(unbuilt, {"d": 2})


def test_layers_that_cannot_be_split_are_refused_by_name():
    model = chain_model()
    with pytest.raises(LayerSplitError, match="no top-level layer 'nope'"):
        split_layers(model, {"nope": 2})
    with pytest.raises(LayerSplitError, match="'probs'.*softmax"):
        split_layers(model, {"probs": 2})  # softmax mixes the channels
    with pytest.raises(LayerSplitError, match="'gap'"):
        split_layers(model, {"gap": 2})
    with pytest.raises(LayerSplitError, match="8 output channels, fewer than the 9"):
        split_layers(model, {"a": 9})
    assert not splittable(model.get_layer("probs")) and splittable(model.get_layer("hidden"))
    assert split_layers(model, {}) is model


@pytest.mark.parametrize("text", ["big:1", "big:x", ":2", "big:2.5"])
def test_a_malformed_split_is_refused(text):
    with pytest.raises(LayerSplitError, match="LAYER or LAYER:PARTS"):
        parse_layer_splits([text])


def test_parse_defaults_to_two_parts():
    assert parse_layer_splits(["big", "a:3", "scope/x:4"]) == {"big": 2, "a": 3, "scope/x": 4}


def test_splitting_the_dominant_layer_balances_the_plan_like_a_search_over_every_split():
    model = chain_model()
    base = flops_plan(model)
    plan, split = plan_with_layer_splits(model, flops_plan)
    assert plan.layer_splits == {"big": 2}
    assert plan.value < 0.75 * base.value
    # the plan is the dp plan of the model it returns, and that model is the original one's
    assert plan.value == pytest.approx(flops_plan(split).value)
    x = frames(model, 1)[0]
    np.testing.assert_allclose(split(x), model(x), rtol=1e-5, atol=1e-6)
    # reference: split each splittable layer in turn (not only those at the boundary)
    every = [flops_plan(split_layers(model, {layer.name: 2})).value
             for layer in model.layers if splittable(layer)]
    assert plan.value == pytest.approx(min(every + [base.value]))
    # the parts sit on both devices
    parts = {plan.assignment[f"big_part{i}"] for i in range(2)}
    assert parts == {"w1", "w2"}


def test_no_split_is_kept_when_whole_layers_balance_already():
    x = keras.Input((16, 16, 8), name="image")
    y = keras.layers.Conv2D(8, 3, padding="same", name="one")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="two")(y)
    model = keras.Model(x, y, name="even")
    base = flops_plan(model)
    plan, same = plan_with_layer_splits(model, flops_plan)
    assert plan.layer_splits == {} and same is model
    assert plan.value == pytest.approx(base.value)
    assert layers_at_boundaries(model, base) == ["one", "two"]


def test_a_plan_keeps_its_layer_splits_through_its_file(tmp_path):
    model = chain_model()
    plan, _ = plan_with_layer_splits(model, flops_plan)
    loaded = Plan.load(plan.save(tmp_path / "plan.json"))
    assert loaded.layer_splits == {"big": 2}
    data = json.loads((tmp_path / "plan.json").read_text())
    del data["layer_splits"]  # a plan written before layer splits
    assert Plan.from_dict(data).layer_splits == {}


def test_cli_splits_a_named_layer_and_refuses_a_costs_table(tmp_path):
    path = tmp_path / "chain.keras"
    chain_model().save(path)
    args = ["plan", str(path), "--device", "w1=cpu-1t-tensorflow",
            "--device", "w2=cpu-1t-tensorflow", "--objective", "throughput", "--mbps", "1000",
            "--algorithm", "dp"]
    result = runner.invoke(app, args + ["--split-layer", "big:3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "layers split into channel parts: big into 3" in result.output
    plan = Plan.load(tmp_path / "plan-dp.json")
    assert plan.layer_splits == {"big": 3} and "big_part2" in plan.problem.nodes
    result = runner.invoke(app, args + ["--split-layer", "probs"])
    assert result.exit_code != 0 and "softmax" in result.output
    assert "Traceback" not in result.output
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"compute_ms": {}}))
    result = runner.invoke(app, args + ["--split-layer", "big", "--costs", str(costs)])
    assert result.exit_code != 0 and "needs predicted costs" in result.output


def test_cli_auto_keeps_a_split_only_where_it_shortens_the_predicted_plan(tmp_path):
    path = tmp_path / "chain.keras"
    chain_model(big_filters=256, size=96).save(path)
    args = ["plan", str(path), "--device", "w1=cpu-1t-tensorflow",
            "--device", "w2=cpu-1t-tensorflow", "--objective", "throughput", "--mbps", "10000",
            "--algorithm", "dp"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "whole")])
    assert result.exit_code == 0, result.output
    whole = Plan.load(tmp_path / "whole" / "plan-dp.json")
    result = runner.invoke(app, args + ["--split-layer", "auto", "--out", str(tmp_path / "auto")])
    assert result.exit_code == 0, result.output
    auto = Plan.load(tmp_path / "auto" / "plan-dp.json")
    assert "layers split into channel parts: " in result.output
    if auto.layer_splits:
        assert auto.value < 0.98 * whole.value
        assert all(f"{name}_part0" in auto.problem.nodes for name in auto.layer_splits)
        assert "none" not in result.output.split("channel parts: ")[1].splitlines()[0]
    else:
        assert auto.value == pytest.approx(whole.value) and "none (no split" in result.output
