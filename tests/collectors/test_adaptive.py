"""Adaptive rounds put their points where a known cost function is steep or unsampled."""

import json
import math

import numpy as np
import pytest

from dnnsplit.collectors.adaptive import Scored, choose, score_candidates
from dnnsplit.collectors.kernels import KernelConfig

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def record(config: KernelConfig, ms: float | None = None) -> dict:
    row = dict(config.record(), fused_pattern=config.pattern, load=0.0, load_target="0")
    if ms is not None:
        row.update(median_ms=ms, ref_probe_ms=1.0, kernel_key=config.key)
    return row


def conv(cin, cout, hw):
    return KernelConfig.of([("Conv2D", {"filters": cout, "kernel_size": (3, 3),
                                        "padding": "same"})], [(1, hw, hw, cin)])


def dense(units):
    return KernelConfig.of([("Dense", {"units": units})], [(1, 256)])


def round_of(measured, pool, n, layer_type):
    records = [record(c) for c in pool]
    scores, points, spacing = score_candidates(measured, records)
    scored = [Scored(layer_type, c, r, float(s), p)
              for c, r, s, p in zip(pool, records, scores, points)]
    return choose(scored, n, {layer_type: spacing})


def test_a_round_goes_where_nothing_was_measured():
    """Measured: 8-64 channels at 7-28 pixels; the time law is smooth. Candidates span up to
    1024 channels and 112 pixels: the round goes beyond the measured corner."""
    law = lambda c: 0.01 + c.record()["flops"] / 5e7  # noqa: E731 - a known cost function
    grid = [conv(i, o, hw) for i in (8, 16, 32, 64) for o in (8, 16, 32, 64) for hw in (7, 14, 28)]
    measured = [record(c, law(c)) for c in grid]
    rng = np.random.default_rng(0)
    widths = [8, 16, 32, 64, 128, 256, 512, 1024]
    pool = list({c.key: c for c in (conv(int(rng.choice(widths)), int(rng.choice(widths)),
                                         int(rng.choice([7, 14, 28, 56, 112])))
                                    for _ in range(120))}.values())
    chosen = round_of(measured, pool, 10, "Conv2D")
    outside = [s for s in chosen
               if max(s.record["in_c"], s.record["out_c"]) > 64 or s.record["in_h"] > 28]
    assert len(chosen) == 10 and len(outside) >= 9


def test_a_round_goes_where_the_cost_is_steepest():
    """Measured everywhere along units = 8..2048 (log-spaced); the time law jumps tenfold at
    300 units. Candidates are spread over the same range: the round clusters at the jump."""
    law = lambda u: 0.01 + u / 1000 * (10 if u > 300 else 1)  # noqa: E731
    units = np.unique(np.round(np.geomspace(8, 2048, 40)).astype(int))
    measured = [record(dense(int(u)), law(u)) for u in units]
    rng = np.random.default_rng(1)
    pool_units = sorted(set(np.round(np.exp(rng.uniform(math.log(8), math.log(2048), 150)))
                            .astype(int).tolist()) - set(units.tolist()))
    chosen = round_of(measured, [dense(u) for u in pool_units], 8, "Dense")
    at_jump = [150 <= s.record["units"] <= 600 for s in chosen]
    # the first choices all go to the jump, and so does half the round (the rest spreads out:
    # each choice counts as measured for its neighbours)
    assert len(chosen) == 8 and all(at_jump[:4]) and sum(at_jump) >= 4, \
        [s.record["units"] for s in chosen]


def test_a_round_spreads_out_and_caps_each_type():
    point = np.zeros(3)
    same = [Scored("A", None, {}, 10.0 - i * 0.01, point + i * 1e-3) for i in range(5)]
    far = [Scored("A", None, {}, 5.0, point + 100.0)]
    others = [Scored("B", None, {}, 1.0, point) for _ in range(4)]
    chosen = choose(same + far + others, 4, {"A": 1.0, "B": 1.0})
    # one of the five near-identical candidates, then the far one (the rest of the five now
    # count as measured), then B fills the rest of the round (A is capped at half)
    assert [s.layer_type for s in chosen] == ["A", "A", "B", "B"]
    assert chosen[1] is far[0]


def test_adaptive_collection_needs_grid_data_and_a_limit(tmp_path):
    from dnnsplit.collectors.adaptive import AdaptiveError, collect_adaptive
    from dnnsplit.collectors.collect import CollectSettings

    with pytest.raises(AdaptiveError, match="no grid data in .*: run `collectors collect"):
        collect_adaptive(CollectSettings(out_dir=tmp_path), rounds=1)
    (tmp_path / "Conv2D.csv").write_text("")
    with pytest.raises(AdaptiveError, match="give --budget-minutes or --rounds"):
        collect_adaptive(CollectSettings(out_dir=tmp_path))


def test_a_round_measures_new_configurations_and_logs_itself(tmp_path, monkeypatch):
    """One round on tiny grids (in this process: threads as they are), twice: the second run
    continues with the next round, and nothing is measured twice."""
    import dnnsplit.collectors.collect as collect_module
    from dnnsplit.collectors.adaptive import collect_adaptive
    from dnnsplit.collectors.collect import CollectSettings, collect
    from dnnsplit.collectors.store import read_rows
    from dnnsplit.collectors.timing import StopRule
    from tests.collectors.test_collect import FAST_RULE, tiny_grids

    import dnnsplit.collectors.adaptive as adaptive

    monkeypatch.setattr(collect_module, "configure_threads", lambda threads: None)
    monkeypatch.setattr(adaptive, "CANDIDATES", 30)
    grids = tiny_grids(tmp_path / "grids", n=6)
    for path in grids.glob("*.json"):  # cheap kernels only: this test times them
        grid = json.loads(path.read_text())
        path.write_text(json.dumps({**grid, "max_gflops": 0.01}))
    settings = CollectSettings(out_dir=tmp_path / "out", grid_dir=grids, models=[],
                               rule=eval(FAST_RULE, {"StopRule": StopRule}), probe_every_s=60)
    collect(settings, progress=False)
    before = {r["kernel_key"] for p in (tmp_path / "out").glob("*.csv") for r in read_rows(p)}
    for expected_round in (0, 1):
        report = collect_adaptive(settings, rounds=1, per_round=3, progress=False)
        assert report.rounds == 1 and report.measured == 3
    log = json.loads((tmp_path / "out" / "adaptive.json").read_text())
    assert [r["round"] for r in log["rounds"]] == [0, 1]
    keys = [r["kernel_key"] for p in (tmp_path / "out").glob("*.csv") for r in read_rows(p)]
    assert len(keys) == len(set(keys)) == len(before) + 6
    logged = {c["key"] for r in log["rounds"] for c in r["chosen"]}
    assert logged == set(keys) - before
