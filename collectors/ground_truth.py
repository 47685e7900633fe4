"""Whole-model latency by the same protocol: the ground truth the predictor is judged against.

>>> measure_models(["ResNet50", "AlexNet"], "datasets/cpu-1t-tensorflow/models.csv")  # doctest: +SKIP

One row per (model, load level), appended durably and skipped when already there (resume).
The reference probe is timed right before and right after each model; the row records their
mean, so the model's time can be normalised by the machine's speed in that window.

Each row combines ``rounds`` measurements taken in separate passes over all the models (each
pass builds every model afresh and alternates the order of the load levels): its time is the
median over the rounds of time / probe, times the median probe. One window can catch a model
in a slow mode that the probe does not follow (e.g. weights of about the last-level cache's
size, which another tenant of the cache evicts or not); models measured once on 2026-11-30
moved up to 1.8x between such windows. Each round is kept in ``<out>-rounds.csv`` first, so
an interrupted run resumes inside a pass.
"""

from __future__ import annotations

import datetime
import gc
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dnnsplit.collectors.grids import model_split
from dnnsplit.collectors.load import BackgroundLoad, load_key
from dnnsplit.collectors.probe import Probe
from dnnsplit.collectors.store import CsvStore
from dnnsplit.collectors.timing import StopRule, backend, configure_threads, time_model
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
    "rounds": "separate passes combined into this row (median of time / probe)",
}
#: Columns of the per-round file beside a ground-truth CSV.
ROUND_COLUMNS = [c for c in GROUND_TRUTH_COLUMNS if c != "rounds"] + ["round"]
#: Passes over all the models that each row combines.
ROUNDS = 3
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
    """One ground-truth row from the rounds of one (model, load level): time = median over
    the rounds of time / probe, times the median probe (p10 and p90 likewise); the observed
    load is the rounds' mean, repeats their sum, the timestamp the last round's."""
    if not rows:
        raise ValueError("no rounds to combine")
    probe = statistics.median(float(r["ref_probe_ms"]) for r in rows)

    def scaled(column: str) -> float:
        return statistics.median(float(r[column]) / float(r["ref_probe_ms"]) for r in rows) * probe

    last = max(rows, key=lambda r: str(r["timestamp"]))
    combined = {k: last[k] for k in GROUND_TRUTH_COLUMNS if k in last}
    combined.update({
        "load": round(statistics.fmean(float(r["load"]) for r in rows), 3),
        "ref_probe_ms": round(probe, 5),
        "repeats": sum(int(r["repeats"]) for r in rows),
        "overhead_ms": round(statistics.median(float(r["overhead_ms"]) for r in rows), 5),
        "median_ms": round(scaled("median_ms"), 4), "p10_ms": round(scaled("p10_ms"), 4),
        "p90_ms": round(scaled("p90_ms"), 4), "rounds": len(rows)})
    return combined


def measure_models(models: Sequence[str], out_csv: str | Path, threads: int = 1,
                   loads: Sequence[float] = (0.0,), profile: str | None = None,
                   device: str | None = None, rule: StopRule = MODEL_RULE,
                   rounds: int = ROUNDS, progress: bool = True) -> GroundTruthReport:
    """Measure each (model, load level) not yet in ``out_csv`` in ``rounds`` passes (see the
    module's docstring); rows are written as their last round completes."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    configure_threads(threads)
    keras = import_keras()
    start = time.monotonic()
    store = CsvStore(out_csv, list(GROUND_TRUTH_COLUMNS), ("model", "load_target"))
    singles = CsvStore(rounds_path(out_csv), ROUND_COLUMNS, ("model", "load_target", "round"))
    report = GroundTruthReport()
    todo = [(load, m) for load in loads for m in models if (m, load_key(load)) not in store]
    report.already_done = len(loads) * len(models) - len(todo)
    wanted = [(r, load, m) for r in range(rounds) for load, m in todo
              if (m, load_key(load), str(r)) not in singles]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(wanted), unit="model", desc="ground truth")
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
                                        "round": r})
                        if bar is not None:
                            bar.update(1)
                        probe = Probe(device)
        for load, name in todo:
            kept = [row for row in read_rows(singles.path, ROUND_COLUMNS)
                    if row["model"] == name and row["load_target"] == load_key(load)
                    and int(row["round"]) < rounds]
            if len(kept) == rounds:
                store.append(combine_rounds(kept))
                report.measured.append(name)
    finally:
        if bar is not None:
            bar.close()
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
