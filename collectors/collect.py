"""Measure kernel configurations from the grids into one CSV per layer type, resumably.

>>> report = collect(CollectSettings(out_dir="datasets/cpu-1t-tensorflow", loads=(0.0, 0.5)))
... # doctest: +SKIP

For each load level (a :class:`~dnnsplit.collectors.load.BackgroundLoad` runs meanwhile) every
planned kernel configuration not yet in its CSV is built as a one-kernel model, timed by the
protocol (:mod:`dnnsplit.collectors.timing`, empty-call overhead subtracted) and appended as
one durable row with the reference probe's time from the same window. A killed run resumes
where it stopped.
"""

from __future__ import annotations

import datetime
import gc
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from dnnsplit.collectors.grids import (Grid, load_grids, model_configs, random_configs,
                                       training_models)
from dnnsplit.collectors.kernels import KernelConfig, KernelError
from dnnsplit.collectors.load import BackgroundLoad, load_key
from dnnsplit.collectors.probe import Probe
from dnnsplit.collectors.store import CsvStore
from dnnsplit.collectors.timing import (DEFAULT_STOP, StopRule, backend, compile_forward,
                                        configure_threads, empty_call_overhead, measure,
                                        model_inputs)
from dnnsplit.predictor.features import RECORD_COLUMNS
from dnnsplit.predictor.keras_env import import_keras

KEY_COLUMNS = ("kernel_key", "load_target")
#: Free Keras/TF memory after this many kernels.
CLEAR_EVERY = 150


def default_profile(threads: int, device: str | None = None) -> str:
    kind = (device or "cpu").split(":")[0]
    return f"{kind}-{threads}t-{backend()}"


@dataclass(frozen=True)
class CollectSettings:
    out_dir: str | Path
    types: Sequence[str] | None = None
    loads: Sequence[float] = (0.0,)
    threads: int = 1
    budget_minutes: float | None = None
    grid_dir: str | Path | None = None
    models: Sequence[str] | None = None  # None: the training models of model_split.json
    random_scale: float = 1.0  # scales each grid's number of random configurations
    profile: str | None = None
    device: str | None = None
    rule: StopRule = DEFAULT_STOP
    probe_every_s: float = 30.0
    #: measure the kernels a base profile measured, in the order that teaches a transfer from
    #: it the most first (:mod:`dnnsplit.collectors.quick`), instead of the grids
    quick_base: str | Path | None = None


@dataclass
class CollectReport:
    measured: int = 0
    already_done: int = 0
    remaining: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    budget_exhausted: bool = False


def collection_plan(grids: Sequence[Grid], models: Sequence[str] | None,
                    random_scale: float = 1.0) -> dict[str, list[KernelConfig]]:
    """Distinct kernel configurations per layer type: training-model kernels, then random."""
    from_models = [g.layer_type for g in grids if g.from_models]
    real = model_configs(models if models is not None else training_models(), from_models) \
        if from_models else {}
    plan = {}
    for grid in grids:
        scaled = replace(grid, random=int(round(grid.random * random_scale)),
                         extra=tuple({**b, "random": int(round(b["random"] * random_scale))}
                                     for b in grid.extra))
        configs = {c.key: c for c in real.get(grid.layer_type, [])}
        for config in random_configs(scaled):
            configs.setdefault(config.key, config)
        plan[grid.layer_type] = list(configs.values())
    return plan


def collect(settings: CollectSettings, progress: bool = True,
            say: Callable[[str], None] | None = None) -> CollectReport:
    """Measure what the settings plan and is not yet in the CSVs (see the module docstring).

    ``say`` receives a line for each step before the first measurement (reading the training
    models' kernels, timing the probe). ``budget_minutes`` counts from the first measurement,
    so the set-up (seconds to a minute) is not charged to it."""
    say = say or (lambda line: None)
    bench = Bench(settings)
    start = time.monotonic()
    out = Path(settings.out_dir)
    if settings.quick_base is not None:
        from dnnsplit.collectors.quick import quick_order

        say(f"ordering the kernels {settings.quick_base} measured: the layer types that carry "
            "the time first, spread over sizes")
        ordered = quick_order(settings.quick_base, settings.types)
    else:
        grids = load_grids(settings.grid_dir, settings.types)
        models = settings.models if settings.models is not None else training_models()
        if models and any(g.from_models for g in grids):
            say(f"reading the kernels of {len(models)} training model(s) and drawing the "
                "grids' configurations")
        ordered = [(t, c) for t, configs in collection_plan(
            grids, settings.models, settings.random_scale).items() for c in configs]
    stores = open_stores(out, sorted({t for t, _ in ordered}))
    report = CollectReport()
    todo_by_load = []
    for load in settings.loads:
        todo = [(t, c) for t, c in ordered if (c.key, load_key(load)) not in stores[t]]
        report.already_done += len(ordered) - len(todo)
        todo_by_load.append((load, todo))
    total = sum(len(todo) for _, todo in todo_by_load)
    say(f"{total} kernel configuration(s) to measure ({report.already_done} already in {out})")
    bar = progress_bar(total, progress)
    try:
        deadline = None if settings.budget_minutes is None else settings.budget_minutes * 60
        bench.measure(todo_by_load, stores, report, bar, budget_s=deadline)
    finally:
        bar.close()
    report.seconds = time.monotonic() - start
    return report


def open_stores(out: Path, types) -> dict[str, CsvStore]:
    """One durable CSV store per layer type in ``out``."""
    return {t: CsvStore(Path(out) / f"{t}.csv", list(RECORD_COLUMNS), KEY_COLUMNS)
            for t in types}


class Bench:
    """What measuring kernels needs from call to call: the backend with its threads set, the
    reference probe, and the columns every record of this collection shares."""

    def __init__(self, settings: CollectSettings):
        configure_threads(settings.threads)
        self.keras = import_keras()
        self.settings = settings
        self.probe = Probe(settings.device)
        self.common = {"device_profile": settings.profile or default_profile(
                           settings.threads, settings.device),
                       "backend": backend(), "keras_version": self.keras.__version__,
                       "threads": settings.threads}
        self.count = 0
        self.deadline: float | None = None  # set at the first measurement

    def measure(self, todo_by_load, stores: dict[str, CsvStore], report: CollectReport, bar,
                budget_s: float | None = None) -> None:
        """Measure ``[(load, [(layer_type, config), ...]), ...]`` into ``stores``, each load
        under its background load; with ``budget_s``, the budget starts at this bench's first
        measurement and is shared out among the loads of each call."""
        for index, (load, todo) in enumerate(todo_by_load):
            overheads: dict[tuple, float] = {}
            with BackgroundLoad(load) as background:
                self.probe.time_ms()
                now = time.monotonic()
                if budget_s is not None and self.deadline is None:
                    self.deadline = now + budget_s
                share = None if self.deadline is None else \
                    now + (self.deadline - now) * 1 / (len(todo_by_load) - index)
                for position, (layer_type, config) in enumerate(todo):
                    if share is not None and time.monotonic() > share:
                        report.budget_exhausted = True
                        report.remaining += len(todo) - position
                        break
                    row = _measure_one(config, self.settings, background, self.probe,
                                       overheads)
                    bar.update(1)
                    if isinstance(row, str):
                        report.skipped[row] += 1
                        continue
                    row.update(self.common, load_target=load_key(load))
                    stores[layer_type].append(row)
                    report.measured += 1
                    self.count += 1
                    if self.count % CLEAR_EVERY == 0:
                        self.keras.backend.clear_session()
                        gc.collect()
                        self.probe = Probe(self.settings.device)
                        self.probe.time_ms()
                        overheads.clear()


def _measure_one(config: KernelConfig, settings: CollectSettings, background: BackgroundLoad,
                 probe: Probe, overheads: dict) -> dict | str:
    """The record of one kernel, or the reason it was skipped."""
    try:
        model = config.build()
        record = config.record(model)
    except KernelError as exc:
        return str(exc).split(":")[0]
    inputs = model_inputs(model, device=settings.device)
    signature = tuple(config.input_shapes)
    if signature not in overheads:
        overheads[signature] = empty_call_overhead(inputs, settings.device, settings.rule)
    background.reset()
    timing = measure(compile_forward(model, settings.device), inputs, overheads[signature],
                     settings.rule)
    observed = background.observed()
    probe_ms = probe.recent_ms(settings.probe_every_s)
    record.update(
        fused_pattern=config.pattern,
        kernel_key=config.key,
        kernel_config=config.to_json(),
        load=round(observed, 3),
        ref_probe_ms=round(probe_ms, 5),
        repeats=timing.repeats,
        overhead_ms=round(timing.overhead_ms, 5),
        median_ms=round(timing.median_ms, 5),
        p10_ms=round(timing.p10_ms, 5),
        p90_ms=round(timing.p90_ms, 5),
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="kernel", desc="collect", smoothing=0.05)


def summary_sentence(report: CollectReport, out: str | Path) -> str:
    """What a collection did, in one sentence that says whether to run it again."""
    text = (f"{report.measured} kernel configuration(s) measured in "
            f"{report.seconds / 60:.1f} min")
    if report.skipped:
        text += (f", {sum(report.skipped.values())} skipped ("
                 + ", ".join(f"{n} {why}" for why, n in report.skipped.items()) + ")")
    rounds = getattr(report, "rounds", None)
    if rounds is not None:  # adaptive rounds: there is always more to learn
        return (text + f" in {rounds} adaptive round(s), logged in {Path(out) / 'adaptive.json'}"
                ": run the same command for more rounds")
    if report.remaining:
        return (text + f", {report.remaining} remain (the budget ran out): run the same "
                "command to continue")
    return text + (f"; {report.already_done} were already there" if report.already_done
                   else "") + f": every planned configuration is in {out}"


def summary_json(report: CollectReport) -> str:
    return json.dumps({"measured": report.measured, "already_done": report.already_done,
                       "remaining": report.remaining, "skipped": dict(report.skipped),
                       "seconds": round(report.seconds, 1),
                       "budget_exhausted": report.budget_exhausted})
