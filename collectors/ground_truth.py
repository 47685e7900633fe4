"""Whole-model latency by the same protocol: the ground truth the predictor is judged against.

>>> measure_models(["ResNet50", "AlexNet"], "datasets/cpu-1t-tensorflow/models.csv")  # doctest: +SKIP

One row per (model, load level), appended durably and skipped when already there (resume).
The reference probe is timed right before and right after each model; the row records their
mean, so the model's time can be normalised by the machine's speed in that window.
"""

from __future__ import annotations

import datetime
import gc
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
}
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


def measure_models(models: Sequence[str], out_csv: str | Path, threads: int = 1,
                   loads: Sequence[float] = (0.0,), profile: str | None = None,
                   device: str | None = None, rule: StopRule = MODEL_RULE,
                   progress: bool = True) -> GroundTruthReport:
    configure_threads(threads)
    keras = import_keras()
    start = time.monotonic()
    store = CsvStore(out_csv, list(GROUND_TRUTH_COLUMNS), ("model", "load_target"))
    report = GroundTruthReport()
    todo = [(load, m) for load in loads for m in models
            if (m, load_key(load)) not in store]
    report.already_done = len(loads) * len(models) - len(todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="model", desc="ground truth")
    probe = Probe(device)
    profile = profile or f"{(device or 'cpu').split(':')[0]}-{threads}t-{backend()}"
    try:
        for load in loads:
            batch = [m for lv, m in todo if lv == load]
            if not batch:
                continue
            with BackgroundLoad(load) as background:
                for name in batch:
                    model = load_model(name)
                    before = probe.time_ms()
                    background.reset()
                    timing = time_model(model, device=device, rule=rule)
                    observed = background.observed()
                    after = probe.time_ms()
                    shape = (1,) + tuple(model.inputs[0].shape[1:])
                    store.append({
                        "model": name, "split": split_of(name),
                        "input_shape": "x".join(map(str, shape)), "device_profile": profile,
                        "backend": backend(), "keras_version": keras.__version__,
                        "threads": threads, "load_target": load_key(load),
                        "load": round(observed, 3), "ref_probe_ms": round((before + after) / 2, 5),
                        "repeats": timing.repeats, "overhead_ms": round(timing.overhead_ms, 5),
                        "median_ms": round(timing.median_ms, 4),
                        "p10_ms": round(timing.p10_ms, 4), "p90_ms": round(timing.p90_ms, 4),
                        "timestamp": datetime.datetime.now(datetime.timezone.utc)
                        .isoformat(timespec="seconds"),
                    })
                    report.measured.append(name)
                    if bar is not None:
                        bar.update(1)
                    del model
                    keras.backend.clear_session()
                    gc.collect()
                    probe = Probe(device)
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.monotonic() - start
    return report
