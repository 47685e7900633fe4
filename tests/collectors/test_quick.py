"""The quick collection's order: time shares across types, spread within a type, a prefix per
budget."""

import types
from collections import Counter

import numpy as np
import pytest

from dnnsplit.collectors import quick
from dnnsplit.collectors.quick import base_candidates, farthest_first, quick_order
from dnnsplit.collectors.store import read_rows
from dnnsplit.predictor.features import RECORD_COLUMNS
from dnnsplit.predictor.train import train
from tests.predictor.synthetic_profile import make_profile

SHARES = {"Conv2D": 0.8, "Dense": 0.15, "Add": 0.05}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = make_profile(tmp_path_factory.mktemp("quick") / "base-1t", rows_per_type=30)
    bundle = train(folder, families=["loglinear"])
    bundle.meta["type_shares"] = SHARES
    bundle.save(folder / "bundle.json")
    return folder


def test_farthest_first_starts_at_the_median_then_the_ends():
    points = np.arange(11.0)[:, None]
    order = farthest_first(points, np.ones(11))
    assert order[0] == 5 and set(order[1:3]) == {0, 10} and sorted(order) == list(range(11))
    assert set(order[3:5]) <= {2, 3, 7, 8}  # the middles of the two gaps (ties either way)
    # an end that costs 100x the seconds comes after the cheap one, and after nearer ones
    dear = np.ones(11)
    dear[10] = 100.0
    order = farthest_first(points, dear)
    assert order[1] == 0 and order.index(10) > 2


def test_the_order_spends_the_minutes_by_the_types_shares_and_holds_every_kernel(base):
    order = quick_order(base)
    kinds = [t for t, _ in order]
    assert Counter(kinds) == {t: len(c) for t, c in base_candidates(base).items()}
    census = quick.CENSUS * len(SHARES)
    assert Counter(kinds[:census]) == {t: quick.CENSUS for t in SHARES}  # every type first
    assert kinds[:len(SHARES)] == ["Conv2D", "Dense", "Add"]  # rounds, by share
    first = Counter(kinds[:census + 40])  # then the minutes follow the shares (0.8/0.15/0.05)
    assert first["Conv2D"] >= 30 and first["Dense"] >= 5 and first["Add"] >= 3
    assert order == quick_order(base)  # deterministic: a longer run extends a shorter one
    # shares given explicitly win over the bundle's
    adds = len(base_candidates(base)["Add"])
    flipped = Counter(t for t, _ in quick_order(base, shares={"Add": 0.9})[:census - 3 + adds])
    assert flipped == {"Add": adds, "Conv2D": quick.CENSUS, "Dense": quick.CENSUS}


def test_a_quick_collection_measures_a_prefix_of_the_order_and_resumes(base, tmp_path,
                                                                     monkeypatch):
    import dnnsplit.collectors.collect as collect_module
    from dnnsplit.collectors.collect import CollectSettings, collect
    from dnnsplit.collectors.timing import StopRule

    monkeypatch.setattr(collect_module, "configure_threads", lambda threads: None)
    clock = iter(range(10**6))  # every look at the collector's clock moves it 0.2 s: the
    # budget runs out after a few kernels whatever the machine's speed
    monkeypatch.setattr(collect_module, "time",
                        types.SimpleNamespace(monotonic=lambda: next(clock) * 0.2))
    rule = StopRule(min_repeats=3, max_repeats=10, min_time_s=0.0, max_time_s=0.02, warmup=1,
                    batch=3)
    settings = CollectSettings(out_dir=tmp_path / "new", quick_base=base, budget_minutes=0.02,
                               rule=rule, probe_every_s=60, types=["Conv2D", "Add"])
    first = collect(settings, progress=False)
    assert first.measured >= 1 and first.remaining >= 1 and first.budget_exhausted

    def measured():
        keys = set()
        for kind in ("Conv2D", "Add"):
            path = tmp_path / "new" / f"{kind}.csv"
            if path.exists():
                keys |= {row["kernel_key"] for row in read_rows(path, RECORD_COLUMNS)}
        return keys

    order = [c.key for _, c in quick_order(base, ["Conv2D", "Add"])]
    assert measured() == set(order[:first.measured])
    again = collect(settings, progress=False)
    assert again.already_done == first.measured
    assert measured() == set(order[:first.measured + again.measured])
