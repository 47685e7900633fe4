"""Whole-model latency by the same protocol: the ground truth the predictor is judged against.

>>> measure_models(["ResNet50"], "datasets/cpu-1t-tensorflow/models.csv")  # doctest: +SKIP

The reference probe is timed right before and right after each model; a measurement records
their mean, so the model's time can be normalised by the machine's speed in that window.

A model does not keep one speed relative to the probe: a window can catch it in a slow mode
the compute-bound probe does not follow (weights of about the last-level cache's size, which
another tenant of the cache evicts or not), and between two windows days apart models moved
by a median 7.6% (docs/ground-truth-repeat.md). So every measurement is kept in
``<out>-rounds.csv`` (one row per model, load level, *window* and *round*), and ``<out>`` is
derived from it, one row per (model, load level):

- a run of :func:`measure_models` is a window: ``rounds`` separate passes over all its models
  (each pass builds every model afresh and alternates the order of the load levels); a run
  resumes the latest window (also after a crash, inside a pass) unless ``new_window`` asks for
  another one, e.g. on another day;
- a row's time is the median over the windows of the median over that window's rounds of
  time / probe, times the median probe: each window counts once, however many rounds it has.

A ground-truth file written before rounds existed is taken as one window per row (round 0)
the first time, so nothing measured earlier is lost.
"""

from __future__ import annotations

import csv
import datetime
import gc
import io
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dnnsplit.collectors.grids import model_split
from dnnsplit.collectors.load import BackgroundLoad, load_key
from dnnsplit.collectors.probe import Probe
from dnnsplit.collectors.store import CsvStore
from dnnsplit.collectors.timing import StopRule, backend, configure_threads, time_model
from dnnsplit.predictor.files import write_text_atomic
from dnnsplit.predictor.keras_env import import_keras
from dnnsplit.predictor.model_source import load_model
from dnnsplit.predictor.records import read_rows

#: Columns of a ground-truth CSV, in order.
GROUND_TRUTH_COLUMNS: dict[str, str] = {
    "model": "model name (keras.applications, zoo) or file",
    "split": "train, evaluation or other (collectors/data/model_split.json)",
    "input_shape": "input shape with batch, dims joined by 'x'",
    "device_profile": "profile name",
    "backend": "Keras backend",
    "keras_version": "keras.__version__",
    "threads": "intra-op threads",
    "load_target": "background load asked for",
    "load": "background load observed",
    "ref_probe_ms": "reference probe time: mean of the probes just before and after",
    "repeats": "timed repeats",
    "overhead_ms": "empty-call median subtracted",
    "median_ms": "median latency of one frame, overhead subtracted",
    "p10_ms": "10th percentile",
    "p90_ms": "90th percentile",
    "timestamp": "UTC time, ISO 8601",
    "rounds": "measurements combined into this row",
    "windows": "windows they came from (each counts once: median over windows of the median "
               "over a window's rounds of time / probe)",
}
#: Columns of the per-round file beside a ground-truth CSV.
ROUND_COLUMNS = [c for c in GROUND_TRUTH_COLUMNS if c not in ("rounds", "windows")] + [
    "window", "round"]
#: Passes over all the models in one window.
ROUNDS = 3
#: Window name of a row taken over from a ground-truth file written before rounds existed.
SEED_WINDOW = "earlier:"
MODEL_RULE = StopRule(min_repeats=10, max_repeats=200, min_time_s=1.0, max_time_s=6.0,
                      rel_tol=0.01)


@dataclass
class GroundTruthReport:
    measured: list[str] = field(default_factory=list)
    already_done: int = 0
    seconds: float = 0.0


def split_of(name: str) -> str:
    split = model_split()
    for key in ("train", "evaluation"):
        if name.lower() in {m.lower() for m in split[key]}:
            return key
    return "other"


def default_models() -> list[str]:
    split = model_split()
    return list(split["train"]) + list(split["evaluation"])


def rounds_path(out_csv: str | Path) -> Path:
    """Where the single rounds of a ground-truth CSV are kept (``models.csv`` ->
    ``models-rounds.csv``)."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}-rounds{out_csv.suffix}")


def combine_rounds(rows: Sequence[dict]) -> dict:
    """One ground-truth row from the rounds of one (model, load level): time = the median over
    windows of the median over each window's rounds of time / probe, times the median probe
    (p10 and p90 likewise); the observed load is the rounds' mean, repeats their sum, the
    timestamp the last round's."""
    if not rows:
        raise ValueError("no rounds to combine")
    probe = statistics.median(float(r["ref_probe_ms"]) for r in rows)
    windows: dict[str, list] = defaultdict(list)
    for r in rows:
        windows[str(r.get("window", ""))].append(r)

    def scaled(column: str) -> float:
        return statistics.median(
            statistics.median(float(r[column]) / float(r["ref_probe_ms"]) for r in window)
            for window in windows.values()) * probe

    last = max(rows, key=lambda r: str(r["timestamp"]))
    combined = {k: last[k] for k in GROUND_TRUTH_COLUMNS if k in last}
    combined.update({
        "load": round(statistics.fmean(float(r["load"]) for r in rows), 3),
        "ref_probe_ms": round(probe, 5),
        "repeats": sum(int(float(r["repeats"])) for r in rows),
        "overhead_ms": round(statistics.median(float(r["overhead_ms"]) for r in rows), 5),
        "median_ms": round(scaled("median_ms"), 4), "p10_ms": round(scaled("p10_ms"), 4),
        "p90_ms": round(scaled("p90_ms"), 4), "rounds": len(rows), "windows": len(windows)})
    return combined


def write_ground_truth(out_csv: str | Path) -> list[dict]:
    """Rewrite ``out_csv`` (atomically) from its rounds file: one row per (model, load level),
    in the order they were first measured. Returns the rows."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for row in read_rows(rounds_path(out_csv), ROUND_COLUMNS):
        by_key.setdefault((row["model"], row["load_target"]), []).append(row)
    rows = [combine_rounds(group) for group in by_key.values()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(GROUND_TRUTH_COLUMNS), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_csv, buffer.getvalue())
    return rows


def _seed_rounds(out_csv: Path, singles: CsvStore) -> None:
    """Take a ground-truth file written before rounds existed over as one window per row."""
    if singles.done() or not out_csv.exists() or out_csv.stat().st_size == 0:
        return
    for row in read_rows(out_csv):
        if row.get("rounds"):
            return  # already derived from rounds (the rounds file was deleted): nothing to seed
        singles.append({**{c: row.get(c, "") for c in ROUND_COLUMNS},
                        "window": SEED_WINDOW + row["timestamp"], "round": 0})


def _current_window(singles: CsvStore, new_window: bool) -> str:
    """The latest window measured by a run (resumed), or a new one named by the time now."""
    ours = sorted({key[2] for key in singles.done() if not key[2].startswith(SEED_WINDOW)})
    if ours and not new_window:
        return ours[-1]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return now if now not in ours else now + "b"


def measure_models(models: Sequence[str], out_csv: str | Path, threads: int = 1,
                   loads: Sequence[float] = (0.0,), profile: str | None = None,
                   device: str | None = None, rule: StopRule = MODEL_RULE,
                   rounds: int = ROUNDS, new_window: bool = False,
                   progress: bool = True) -> GroundTruthReport:
    """Measure each (model, load level) that has fewer than ``rounds`` rounds in the current
    window (the latest, or a new one with ``new_window``), then rewrite ``out_csv`` from all
    the rounds (see the module's docstring)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    configure_threads(threads)
    keras = import_keras()
    start = time.monotonic()
    out_csv = Path(out_csv)
    existed = rounds_path(out_csv).exists()
    singles = CsvStore(rounds_path(out_csv), ROUND_COLUMNS,
                       ("model", "load_target", "window", "round"))
    _seed_rounds(out_csv, singles)
    window = _current_window(singles, new_window)
    done = singles.done()
    wanted = [(r, load, m) for r in range(rounds) for load in loads for m in models
              if (m, load_key(load), window, str(r)) not in done]
    report = GroundTruthReport()
    report.already_done = sum(all((m, load_key(load), window, str(r)) in done
                                  for r in range(rounds)) for load in loads for m in models)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(wanted), unit="model", desc=f"ground truth, window {window}")
    probe = Probe(device)
    profile = profile or f"{(device or 'cpu').split(':')[0]}-{threads}t-{backend()}"
    try:
        for r in range(rounds):
            order = list(loads) if r % 2 == 0 else list(reversed(loads))
            for load in order:
                batch = [m for rr, lv, m in wanted if rr == r and lv == load]
                if not batch:
                    continue
                with BackgroundLoad(load) as background:
                    for name in batch:
                        singles.append({**_measure_once(name, load, background, probe, threads,
                                                        profile, device, rule, keras),
                                        "window": window, "round": r})
                        if bar is not None:
                            bar.update(1)
                        probe = Probe(device)
    finally:
        if bar is not None:
            bar.close()
        if singles.done():
            write_ground_truth(out_csv)
        elif not existed:  # nothing measured (e.g. an unknown model): leave no empty file
            singles.path.unlink(missing_ok=True)
    report.measured = sorted({m for _, _, m in wanted})
    report.seconds = time.monotonic() - start
    return report


def _measure_once(name: str, load: float, background: BackgroundLoad, probe: Probe,
                  threads: int, profile: str, device: str | None, rule: StopRule,
                  keras) -> dict:
    """One round of one model at one load level: a ground-truth row without ``rounds``."""
    model = load_model(name)
    before = probe.time_ms()
    background.reset()
    timing = time_model(model, device=device, rule=rule)
    observed = background.observed()
    after = probe.time_ms()
    shape = (1,) + tuple(model.inputs[0].shape[1:])
    del model
    keras.backend.clear_session()
    gc.collect()
    return {
        "model": name, "split": split_of(name),
        "input_shape": "x".join(map(str, shape)), "device_profile": profile,
        "backend": backend(), "keras_version": keras.__version__,
        "threads": threads, "load_target": load_key(load),
        "load": round(observed, 3), "ref_probe_ms": round((before + after) / 2, 5),
        "repeats": timing.repeats, "overhead_ms": round(timing.overhead_ms, 5),
        "median_ms": round(timing.median_ms, 4),
        "p10_ms": round(timing.p10_ms, 4), "p90_ms": round(timing.p90_ms, 4),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
