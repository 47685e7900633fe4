"""Ground truth in windows and rounds: each row is the median over windows of the median over a
window's passes, normalised by the probe; an interrupted run resumes inside a pass; an older
file is kept as earlier windows. Timing is replaced by a script of known times."""

import pytest

from dnnsplit.collectors import ground_truth as gt
from dnnsplit.collectors.timing import Timing
from dnnsplit.predictor.records import read_rows


def _round_row(median, probe, round_, window="w1", **extra):
    row = {c: "x" for c in gt.ROUND_COLUMNS}
    row.update(model="M", load_target="0", load=0.0, ref_probe_ms=probe, repeats=10,
               overhead_ms=0.1, median_ms=median, p10_ms=0.9 * median, p90_ms=1.1 * median,
               timestamp=f"2026-12-01T00:0{round_}:00+00:00", window=window, round=round_)
    row.update(extra)
    return row


def test_a_row_is_the_median_of_its_rounds_normalised_by_each_rounds_probe():
    # normalised 10/20 = 0.5, 30/20 = 1.5 (a slow window), 12/20 = 0.6; median 0.6 at probe 20
    rows = [_round_row(10.0, 20.0, 0), _round_row(30.0, 20.0, 1), _round_row(12.0, 20.0, 2)]
    combined = gt.combine_rounds(rows)
    assert combined["median_ms"] == pytest.approx(12.0)
    assert combined["rounds"] == 3 and combined["repeats"] == 30 and combined["windows"] == 1
    assert combined["timestamp"] == "2026-12-01T00:02:00+00:00"
    assert set(combined) == set(gt.GROUND_TRUTH_COLUMNS)


def test_each_window_counts_once_however_many_rounds_it_has():
    # window a: one round at 1.0 probe units; window b: three rounds at 0.5; window c: one at 0.6
    rows = [_round_row(20.0, 20.0, 0, "a")] + [_round_row(10.0, 20.0, r, "b") for r in range(3)]
    two = gt.combine_rounds(rows)
    assert two["median_ms"] / two["ref_probe_ms"] == pytest.approx(0.75)  # not 0.5 (rounds)
    three = gt.combine_rounds(rows + [_round_row(12.0, 20.0, 0, "c")])
    assert three["median_ms"] / three["ref_probe_ms"] == pytest.approx(0.6)
    assert three["windows"] == 3 and three["rounds"] == 5


def test_a_faster_machine_in_one_round_does_not_count_as_a_faster_model():
    # the same model (0.5 probe units) timed while the machine ran at three speeds
    rows = [_round_row(10.0, 20.0, 0), _round_row(20.0, 40.0, 1), _round_row(5.0, 10.0, 2)]
    combined = gt.combine_rounds(rows)
    assert combined["median_ms"] / combined["ref_probe_ms"] == pytest.approx(0.5)


def test_no_rounds_is_an_error():
    with pytest.raises(ValueError):
        gt.combine_rounds([])


class _FakeProbe:
    def __init__(self, device=None):
        pass

    def time_ms(self):
        return 20.0


class _FakeModel:
    class _Input:
        shape = (None, 4)

    inputs = [_Input()]


@pytest.fixture
def scripted(monkeypatch):
    """time_model returns the next of a list of medians (ms); measuring is otherwise real."""
    medians = []
    calls = []

    def time_model(model, device=None, rule=None):
        calls.append(model)
        return Timing(medians.pop(0), 1.0, 2.0, 10, 0.1)

    monkeypatch.setattr(gt, "time_model", time_model)
    monkeypatch.setattr(gt, "load_model", lambda name: _FakeModel())
    monkeypatch.setattr(gt, "Probe", _FakeProbe)
    # threads are set once per process; in a test run TensorFlow has long started
    monkeypatch.setattr(gt, "configure_threads", lambda threads: None)
    return medians, calls


def test_rounds_are_passes_over_all_models_and_rows_appear_when_complete(scripted, tmp_path):
    medians, calls = scripted
    # round 0: A, B; round 1: A, B; round 2: A, B
    medians += [10.0, 100.0, 30.0, 110.0, 12.0, 90.0]
    out = tmp_path / "models.csv"
    report = gt.measure_models(["A", "B"], out, rounds=3, progress=False)
    rows = {r["model"]: r for r in read_rows(out)}
    assert float(rows["A"]["median_ms"]) == pytest.approx(12.0)
    assert float(rows["B"]["median_ms"]) == pytest.approx(100.0)
    assert rows["A"]["rounds"] == "3"
    assert sorted(report.measured) == ["A", "B"]
    singles = read_rows(gt.rounds_path(out))
    assert [(r["model"], r["round"]) for r in singles] == [
        ("A", "0"), ("B", "0"), ("A", "1"), ("B", "1"), ("A", "2"), ("B", "2")]
    assert len({r["window"] for r in singles}) == 1


def test_a_new_window_measures_again_and_rows_combine_the_windows(scripted, tmp_path):
    medians, calls = scripted
    out = tmp_path / "models.csv"
    medians += [10.0, 10.0, 10.0]  # window 1: 0.5 probe units
    gt.measure_models(["A"], out, rounds=3, progress=False)
    medians += [20.0]  # asked again without a new window: nothing to measure
    gt.measure_models(["A"], out, rounds=3, progress=False)
    assert len(calls) == 3
    medians.clear()
    medians += [30.0, 30.0, 30.0]  # window 2: 1.5 probe units
    gt.measure_models(["A"], out, rounds=3, new_window=True, progress=False)
    row, = read_rows(out)
    assert float(row["median_ms"]) / float(row["ref_probe_ms"]) == pytest.approx(1.0)
    assert (row["rounds"], row["windows"]) == ("6", "2")


def test_a_file_from_before_rounds_is_kept_as_earlier_windows(scripted, tmp_path):
    medians, calls = scripted
    out = tmp_path / "models.csv"
    old = [c for c in gt.GROUND_TRUTH_COLUMNS if c not in ("rounds", "windows")]
    row = {c: "x" for c in old}
    row.update(model="A", load_target="0", load=0, ref_probe_ms=20.0, repeats=10,
               overhead_ms=0.1, median_ms=40.0, p10_ms=36.0, p90_ms=44.0,
               timestamp="2026-11-24T07:00:00+00:00")
    out.write_text(",".join(old) + "\n" + ",".join(str(row[c]) for c in old) + "\n")
    medians += [10.0, 10.0, 10.0]  # a new window at 0.5 probe units; the old one at 2.0
    gt.measure_models(["A"], out, rounds=3, progress=False)
    combined, = read_rows(out)
    assert float(combined["median_ms"]) / float(combined["ref_probe_ms"]) == pytest.approx(1.25)
    assert (combined["rounds"], combined["windows"]) == ("4", "2")
    windows = {r["window"] for r in read_rows(gt.rounds_path(out))}
    assert gt.SEED_WINDOW + "2026-11-24T07:00:00+00:00" in windows


def test_an_interrupted_run_resumes_inside_a_pass(scripted, tmp_path):
    medians, calls = scripted
    out = tmp_path / "models.csv"
    medians += [10.0, 100.0, 30.0]  # the fourth measurement fails: the run stops there
    with pytest.raises(IndexError):
        gt.measure_models(["A", "B"], out, rounds=3, progress=False)
    assert len(read_rows(gt.rounds_path(out))) == 3  # kept; rows from what was measured
    assert {r["rounds"] for r in read_rows(out)} == {"2", "1"}
    medians += [110.0, 12.0, 90.0]
    calls.clear()
    gt.measure_models(["A", "B"], out, rounds=3, progress=False)
    assert len(calls) == 3  # only the missing rounds
    rows = {r["model"]: r for r in read_rows(out)}
    assert float(rows["A"]["median_ms"]) == pytest.approx(12.0)
    assert float(rows["B"]["median_ms"]) == pytest.approx(100.0)
    gt.measure_models(["A", "B"], out, rounds=3, progress=False)  # all done: nothing measured
    assert len(calls) == 3
    assert {r["rounds"] for r in read_rows(out)} == {"3"}


def test_a_run_that_measures_nothing_leaves_no_file(scripted, tmp_path):
    out = tmp_path / "models.csv"
    with pytest.raises(IndexError):  # the first measurement fails (an unknown model, say)
        gt.measure_models(["A"], out, rounds=3, progress=False)
    assert not gt.rounds_path(out).exists() and not out.exists()


def test_load_levels_alternate_their_order_between_rounds(scripted, tmp_path, monkeypatch):
    medians, _ = scripted
    medians += [1.0] * 4
    entered = []

    class _Load:
        def __init__(self, fraction):
            entered.append(fraction)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def reset(self):
            pass

        def observed(self):
            return 0.0

    monkeypatch.setattr(gt, "BackgroundLoad", _Load)
    gt.measure_models(["A"], tmp_path / "m.csv", loads=(0.0, 0.5), rounds=2, progress=False)
    assert entered == [0.0, 0.5, 0.5, 0.0]
