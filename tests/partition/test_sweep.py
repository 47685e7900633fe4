"""partition sweep on a three-node problem whose acceleration region is known in closed form."""

import json

import pytest
from typer.testing import CliRunner

from dnnsplit.partition.cli import app
from dnnsplit.partition.problem import Link, PlanError, Problem
from dnnsplit.partition.sweep import (REGION_GAIN, Sweep, SweepPoint, at_point, log_grid,
                                     plot_sweep, sweep)

# input x (1 MB) -> a (100 kB) -> b (the output, no bytes to return)
PHONE = {"a": 10.0, "b": 40.0}
SERVER = {"a": 2.0, "b": 4.0}
X_BYTES, A_BYTES = 1_000_000, 100_000


def chain() -> Problem:
    return Problem.build(
        nodes=["x", "a", "b"], edges=[("x", "a"), ("a", "b")], devices=["phone", "server"],
        compute_ms={"x": {"phone": 0, "server": 0},
                    "a": {"phone": PHONE["a"], "server": SERVER["a"]},
                    "b": {"phone": PHONE["b"], "server": SERVER["b"]}},
        output_bytes={"x": X_BYTES, "a": A_BYTES, "b": 0},
        links={("phone", "server"): Link(0, 1), ("server", "phone"): Link(0, 1)},
        input_nodes=["x"], output_nodes=["b"])


def ms(nbytes: float, mbps: float) -> float:
    return nbytes * 8 / (mbps * 1000)


def closed_form(mbps: float, speed: float) -> dict[str, float]:
    """Latency of every assignment of a and b (x stays on the phone)."""
    pa, pb = PHONE["a"] * speed, PHONE["b"] * speed
    return {"local": pa + pb,
            "offload": ms(X_BYTES, mbps) + SERVER["a"] + SERVER["b"],
            "split": pa + ms(A_BYTES, mbps) + SERVER["b"],
            "back": ms(X_BYTES, mbps) + SERVER["a"] + ms(A_BYTES, mbps) + pb}


def test_every_point_equals_the_closed_form_best_and_its_gains():
    speeds = [0.5, 1.0, 2.0, 4.0]
    result = sweep(chain(), log_grid(1, 2000, 30), speeds, "latency")
    assert len(result.points) == 30 * 4
    for p in result.points:
        options = closed_form(p.mbps, p.speed)
        best = min(options.values())
        single = min(options["local"], options["offload"])
        assert p.value_ms == pytest.approx(best)
        assert p.gain_best == pytest.approx(single / best)
        assert p.gain_first == pytest.approx(options["local"] / best)
        assert p.splits == (best < single - 1e-9)


def test_the_split_range_and_the_region_edge_are_where_the_algebra_puts_them():
    # speed 1: split (14 + 800/B) beats local (50) for B > 22.2 and offload (6 + 8000/B)
    # for B < 900; it gains >= 5% over the best single device from B = 800 / (50/1.05 - 14)
    grid = log_grid(1, 5000, 400)
    result = sweep(chain(), grid, [1.0], "latency")
    [(low, high)] = result.split_ranges(1.0)
    step = grid[1] / grid[0]
    assert 800 / 36 <= low <= 800 / 36 * step
    assert 900 / step <= high <= 900
    [(edge, _)] = result.split_ranges(1.0, REGION_GAIN)
    exact = 800 / (50 / 1.05 - 14)
    assert exact <= edge <= exact * step
    assert all(p.gain_best >= REGION_GAIN - 1e-9 for p in result.region())
    # a faster phone keeps everything local at every bandwidth
    fast = sweep(chain(), grid[::20], [0.05], "latency")
    assert fast.split_ranges(0.05) == [] and not fast.region()


def test_a_region_in_pieces_is_reported_as_separate_intervals():
    # a split wins at 2-3 and again at 20-30 Mbps; offloading everything wins between them
    def point(mbps, splits, value):
        return SweepPoint(mbps, 4.0, value, splits, "phone", 100.0, 100.0, 100.0, 100.0 / value,
                          100.0 / value, "")

    wins = {2: 90, 3: 80, 20: 95, 30: 70}
    points = [point(m, m in wins, wins.get(m, 100.0)) for m in (1, 2, 3, 5, 10, 20, 30)]
    result = Sweep("m", "throughput", ["phone", "server"], 10.0, [p.mbps for p in points],
                   [4.0], "dp", points)
    assert result.split_ranges(4.0) == [(2, 3), (20, 30)]
    assert result.split_ranges(4.0, 1.2) == [(3, 3), (30, 30)]
    assert result.to_dict()["split_ranges"] == {"4": [(2, 3), (20, 30)]}


def test_a_point_scales_only_the_first_device_and_sets_every_link():
    here = at_point(chain(), 50.0, 3.0, rtt_ms=10.0)
    assert here.compute_ms["a"] == {"phone": 30.0, "server": 2.0}
    assert all(link == Link(5.0, 50.0) for link in here.links.values())


def test_bad_sweeps_are_refused():
    with pytest.raises(PlanError, match="0 < low <= high"):
        log_grid(10, 1, 5)
    one = Problem.build(["x", "a"], [("x", "a")], ["phone"], {"x": {"phone": 0},
                        "a": {"phone": 1}}, {"x": 1, "a": 1}, {}, ["x"], ["a"])
    with pytest.raises(PlanError, match="at least two devices"):
        sweep(one, [1.0])


def test_the_cli_writes_json_and_a_plot_and_says_the_ranges(tmp_path):
    import keras

    plan = tmp_path / "costs.json"

    x = keras.Input((8, 8, 3), name="x")
    y = keras.layers.Conv2D(64, 3, padding="same", name="a")(x)
    y = keras.layers.Conv2D(64, 3, padding="same", name="b")(y)
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D(name="c")(y))
    path = tmp_path / "m.keras"
    model.save(path)
    costs = {"compute_ms": {"a": {"phone": 10, "server": 1}, "b": {"phone": 40, "server": 4},
                            "c": {"phone": 1, "server": 0.1}}}
    plan.write_text(json.dumps(costs))
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = CliRunner().invoke(app, [
        "sweep", str(path), "--device", "phone", "--device", "server", "--costs", str(plan),
        "--mbps", "0.1:1000", "--points", "12", "--speed", "1:8", "--speed-points", "3",
        "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "split beats all-local and all-offload" in result.output
    data = json.loads(out.read_text())
    assert len(data["points"]) == 36 and set(data["split_ranges"]) == {"1", "2.82843", "8"}
    assert png.stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["sweep", str(path), "--device", "phone", "--costs",
                                   str(plan), "--mbps", "5:1"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_one_speed_plots_gains_against_bandwidth(tmp_path):
    result = sweep(chain(), log_grid(1, 2000, 20), [1.0])
    plot_sweep(result, tmp_path / "line.png")
    assert (tmp_path / "line.png").stat().st_size > 10_000
