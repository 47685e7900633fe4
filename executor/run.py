"""Run a plan: cut the model, pipeline the stages, compare measured with predicted.

>>> report = execute(model, Plan.load("plans/plan-dp.json"), frames=50)   # doctest: +SKIP
>>> report.measured["throughput_fps"], report.predicted["throughput_fps"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnsplit.collectors.calibrate import ProbeWindow
from dnnsplit.executor.local import run_pipeline
from dnnsplit.executor.pipeline import Fault, RunResult, default_in_flight
from dnnsplit.executor.stages import build_stages, model_input_keys
from dnnsplit.partition.cost import evaluate, scale_compute, stage_ms
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.model_graph import TaskGraph

BACKENDS = ("local", "processes", "ray")


@dataclass
class ExecutionReport:
    frames: int
    backend: str
    outputs_match: bool
    measured: dict[str, float]
    predicted: dict[str, float]
    stages: list[dict[str, Any]]
    links: list[dict[str, Any]] = field(default_factory=list)
    run: RunResult | None = None
    #: the most frames that were inside the pipeline at once
    in_flight: int = 1
    #: :func:`execute_with_baseline`: the unsplit model on one device, timed in the same window
    single: dict[str, Any] | None = None
    #: :func:`execute_with_baseline`: measured (median, range) and predicted speed-up
    speedup: dict[str, Any] | None = None
    #: one line per device whose speed was emulated (a CPU quota) or whose what-if factor
    #: was not (:func:`emulation`)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        extra = {"single": self.single, "speedup": self.speedup} if self.speedup else {}
        return {"frames": self.frames, "backend": self.backend,
                "outputs_match": self.outputs_match, "in_flight": self.in_flight,
                "measured": self.measured, "predicted": self.predicted,
                "stages": self.stages, "links": self.links, "notes": self.notes, **extra}


def emulation(problem, backend: str, throttle: Mapping[str, float] | None = None,
              emulate_factors: bool = True) -> tuple[dict[str, float], list[str]]:
    """The fraction of its CPUs each throttled device runs with, and a line per device on how
    its speed was (or was not) emulated.

    ``throttle`` (device -> fraction) is applied as given. A device planned as ``:xF`` of its
    profile (``problem.runtimes``) with F > 1 is throttled to 1/F when the backend can
    (``processes``, CPU quotas available, ``emulate_factors``); otherwise the line says that
    its stages ran at this machine's speed while the plan assumed F times that.
    """
    from dnnsplit.collectors.throttle import available

    fractions = {d: float(f) for d, f in (throttle or {}).items()}
    unknown = sorted(set(fractions) - set(problem.devices))
    if unknown:
        raise DnnsplitError(f"--throttle names devices {unknown} the plan does not have (its "
                            f"devices: {', '.join(problem.devices)})")
    if fractions and backend not in ("processes", "ray"):
        raise DnnsplitError("--throttle needs --backend processes or ray (a CPU quota holds a "
                            "process; the local backend runs every stage in this one)")
    bad = {d: f for d, f in fractions.items() if not 0 < f <= 1}
    if bad:
        raise DnnsplitError(f"--throttle fractions must be in (0, 1], got {bad}")
    notes = [f"{d}: throttled to {f:.0%} of its CPU (--throttle)" for d, f in fractions.items()]
    quotas = available()
    for device, runtime in problem.runtimes.items():
        factor = float(runtime.get("factor", 1.0))
        if factor == 1.0 or device in fractions:
            continue
        if backend == "processes" and emulate_factors and factor > 1 and quotas:
            fractions[device] = 1.0 / factor
            notes.append(f"{device}: the plan's x{factor:g} emulated by a CPU quota of "
                         f"{1 / factor:.0%} of its CPU")
            continue
        why = ("--no-emulate-factors: throttled outside the executor, as on the testbed, or "
               "not at all" if not emulate_factors
               else "only --backend processes can throttle a device" if backend != "processes"
               else "nothing makes a device faster than this machine" if factor < 1
               else "CPU quotas are not available here: they need cgroups and root")
        notes.append(f"{device}: the plan's x{factor:g} (what-if) was not emulated ({why})"
                     + ("" if not emulate_factors else ": its stages ran at this machine's "
                        "speed"))
    return fractions, notes


def configure_worker_threads(workers: int, threads: int = 1) -> bool:
    """``threads`` per op and one inter-op thread per worker (so that ``workers`` Python
    threads can run compiled calls at once); False if the backend already started.

    The collectors' :func:`dnnsplit.collectors.timing.configure_threads`, with the executor's
    inter-op count (under JAX it sets the XLA CPU flags instead)."""
    from dnnsplit.collectors.timing import TimingError, configure_threads

    try:
        configure_threads(threads, inter_op=max(workers, 1))
        return True
    except TimingError:
        return False


class RandomFrames(Sequence):
    """``n`` input frames drawn from a pool of at most ``distinct`` random ones (memory bounded).

    A run of a million frames holds ``distinct`` inputs, not a million; frame ``i`` is pool
    entry ``i % distinct``, so the first frames (the ones checked against the unsplit model)
    are all different.

    >>> frames = RandomFrames([(1, 4)], ["float32"], n=1000, distinct=8)
    >>> len(frames), frames[0][0].shape, frames[8][0] is frames[0][0]
    (1000, (1, 4), True)
    """

    def __init__(self, shapes, dtypes, n: int, distinct: int = 16, seed: int = 0,
                 bounds=None):
        from dnnsplit.predictor.keras_env import random_arrays

        rng = np.random.default_rng(seed)
        bounds = bounds or [None] * len(shapes)
        self._pool = [random_arrays(shapes, dtypes, bounds, rng)
                      for _ in range(max(1, min(n, distinct)))]
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._pool[index % self._n % len(self._pool)]


def random_frames(model, n: int, seed: int = 0) -> RandomFrames:
    """``n`` frames for ``model``: random floats, and token ids its embeddings accept."""
    from dnnsplit.predictor.keras_env import index_bounds

    shapes = [(1,) + tuple(t.shape[1:]) for t in model.inputs]
    return RandomFrames(shapes, [str(t.dtype) for t in model.inputs], n, seed=seed,
                        bounds=index_bounds(model))


def execute(model, plan, frames: int = 50, backend: str = "local",
            devices: dict[str, str] | None = None, check_frames: int = 3,
            emulate_links: bool | str = True, seed: int = 0, threads: int = 1,
            address: str | None = None, placement: dict[str, str] | None = None,
            fault: Fault | None = None, progress: bool = False,
            calibrate: str | None = None, in_flight: int | None = None,
            relay: str | None = None,
            on_ready: Callable[[list], None] | None = None,
            throttle: Mapping[str, float] | None = None,
            emulate_factors: bool = True,
            models_dir: str | None = None) -> ExecutionReport:
    """Run ``model`` split as ``plan`` says on ``backend`` and compare with the plan.

    ``devices`` maps plan devices to Keras devices (``{"server": "gpu:0"}``); ``address`` and
    ``placement`` (and ``models_dir``) are for the Ray backend (see
    :mod:`dnnsplit.executor.ray_backend`). Backends:
    ``local`` (a thread per stage, :mod:`dnnsplit.executor.local`), ``processes`` (a process per
    stage on this machine, :mod:`dnnsplit.executor.processes`), ``ray``
    (:mod:`dnnsplit.executor.ray_backend`).
    ``calibrate`` names the device profile the plan's costs were predicted from: the
    reference probe is timed on this machine just before and after the run, and the plan's
    prediction is also given at the machine's present speed (``predicted["calibrated"]``: every
    compute time x probe now / the profile's probe; links unchanged). Meant for workers on
    this machine, timed with the profile's thread count.
    ``in_flight`` caps the frames inside the pipeline (default: stages + 1; see
    :func:`dnnsplit.executor.local.run_pipeline`). ``relay`` (local backend): ``"HOST:PORT"`` of an
    ``executor relay``, or ``"local"`` for one on loopback: links are then real TCP
    connections through it instead of emulated (:mod:`dnnsplit.executor.relay`).
    ``on_ready(stages)`` is called once the plan is checked against the model and cut into
    stages, before anything runs. ``emulate_links``: True (the plan's links, emulated), False
    (none) or ``"latency"`` (only their latency; the bandwidth is a real shaped link's, as in
    :mod:`dnnsplit.executor.testbed`). ``throttle`` and ``emulate_factors``: how slower devices
    are emulated (:func:`emulation`; the processes backend).
    """
    if backend not in BACKENDS:
        raise DnnsplitError(f"backend {backend!r} is not available: use {', '.join(BACKENDS)}")
    if frames < 1:
        raise DnnsplitError("--frames must be at least 1")
    if in_flight is not None and in_flight < 1:
        raise DnnsplitError("--in-flight must be at least 1")
    if backend != "ray" and (address or placement or models_dir):
        raise DnnsplitError("--address, --ray-node and --models-dir need --backend ray")
    if relay is not None and backend != "local":
        raise DnnsplitError("--relay needs --backend local (with ray, stages on different "
                            "machines already talk over the network)")
    address_of_relay = None
    if relay not in (None, "local"):
        from dnnsplit.executor.relay import parse_address

        address_of_relay = parse_address(relay)  # a typo fails before any stage is built
    if backend == "local" and fault is not None and fault.kind == "exit":
        raise DnnsplitError("an 'exit' fault needs a process per stage: use --backend "
                            "processes or ray")
    fractions, notes = emulation(plan.problem, backend, throttle, emulate_factors)
    unknown = sorted((set(devices or {}) | set(placement or {})) - set(plan.problem.devices))
    if unknown:
        raise DnnsplitError(f"devices {unknown} are not in the plan (its devices: "
                            f"{', '.join(plan.problem.devices)})")
    # a plan that splits layers runs on the rewritten model; outputs are checked against the
    # model as given
    split_model = model
    if plan.layer_splits:
        from dnnsplit.partition.layer_split import split_layers

        split_model = split_layers(model, plan.layer_splits)
    tg = TaskGraph.from_keras(split_model)
    stages = build_stages(split_model, plan, tg)
    if on_ready is not None:
        on_ready(stages)
    data = random_frames(model, frames, seed)
    problem = plan.problem
    # "latency": only the links' latency is emulated, their bandwidth is real (a shaped link)
    links = {pair: {"latency_ms": link.latency_ms,
                    "mbps": math.inf if emulate_links == "latency" else link.mbps}
             for pair, link in problem.links.items()} if emulate_links else None
    common = dict(links=links, first_device=problem.devices[0], devices=devices,
                  keep_outputs=check_frames, fault=fault, progress=progress)
    probe = ProbeWindow(calibrate, one_thread=threads == 1) if calibrate else None
    if backend != "processes":
        from dnnsplit.predictor.keras_env import current_backend

        foreign = {d: r["backend"] for d, r in problem.runtimes.items()
                   if r.get("backend", current_backend()) != current_backend()}
        if foreign:
            raise DnnsplitError(
                f"the plan's device(s) {', '.join(f'{d} ({b})' for d, b in foreign.items())} "
                f"were profiled on another Keras backend than this process's "
                f"({current_backend()}): run with --backend processes, which starts each "
                "device's stages on its own backend")
    if backend == "ray":
        from dnnsplit.executor.ray_backend import run_pipeline_ray

        result = run_pipeline_ray(stages, data, model_input_keys(tg), list(tg.output_sources),
                                  threads=threads, address=address, placement=placement,
                                  window=in_flight, models_dir=models_dir, throttle=fractions,
                                  **common)
    elif backend == "processes":
        from dnnsplit.executor.processes import run_pipeline_processes

        result = run_pipeline_processes(stages, data, model_input_keys(tg),
                                        list(tg.output_sources), threads=threads,
                                        in_flight=in_flight, runtimes=problem.runtimes,
                                        throttle=fractions, **common)
    else:
        with contextlib.ExitStack() as stack:
            if relay == "local":
                from dnnsplit.executor.relay import Relay

                address_of_relay = stack.enter_context(Relay()).address
            result = run_pipeline(stages, data, model_input_keys(tg), list(tg.output_sources),
                                  in_flight=in_flight, relay=address_of_relay, **common)
    speed = probe.factor() if probe else None
    matches = True
    for arrays, outputs in zip(data[:check_frames], result.outputs):
        reference = model(arrays if len(arrays) > 1 else arrays[0], training=False)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        matches &= all(np.allclose(np.asarray(r), o, rtol=1e-3, atol=1e-4)
                       for r, o in zip(reference, outputs))
    predicted = plan.predicted
    visited = [(s.device, s.nodes) for s in stages]
    stage_rows = [{"device": s.device, "stage": s.name, "nodes": len(s.nodes),
                   "busy_ms": result.busy_ms.get(s.name, 0.0), "predicted_ms": ms}
                  for s, ms in zip(stages, stage_ms(problem, visited))]
    for row in stage_rows:
        if row["stage"] in result.nodes:
            row["ray_node"] = result.nodes[row["stage"]]
        if row["stage"] in result.cpus:
            row["cpus"] = result.cpus[row["stage"]]
        if row["stage"] in result.backends:
            row["keras_backend"] = result.backends[row["stage"]]
        if row["device"] in result.throttled:
            row["throttled"] = result.throttled[row["device"]]
    link_rows = [{"link": f"{problem.devices[a]}->{problem.devices[b]}", "predicted_ms": ms}
                 for (a, b), ms in sorted(predicted.link_ms.items())]
    predicted_row: dict[str, Any] = {"throughput_fps": predicted.throughput_fps,
                                     "period_ms": predicted.period_ms,
                                     "latency_ms": predicted.latency_ms}
    if speed is not None:
        now = evaluate(scale_compute(problem, speed), plan.assignment)
        predicted_row["calibrated"] = {
            "speed_factor": speed, "probe_ms": probe.probe_ms, "profile_probe_ms": probe.reference,
            "throughput_fps": now.throughput_fps, "period_ms": now.period_ms,
            "latency_ms": now.latency_ms}
        for row, ms in zip(stage_rows, stage_ms(scale_compute(problem, speed), visited)):
            row["calibrated_ms"] = ms
    return ExecutionReport(
        frames=frames, backend=backend, outputs_match=bool(matches),
        measured={"throughput_fps": result.throughput_fps, "period_ms": result.period_ms,
                  "latency_p50_ms": float(np.percentile(result.latencies_ms, 50)),
                  "latency_p95_ms": float(np.percentile(result.latencies_ms, 95)),
                  "link_ms": result.link_ms},
        predicted=predicted_row, stages=stage_rows, links=link_rows, run=result,
        in_flight=in_flight or default_in_flight(len(stages)), notes=notes)


def execute_with_baseline(model, plan, repeats: int = 3, backend: str = "local",
                          in_flight: int | None = None, progress: bool = False,
                          calibrate: str | None = None,
                          on_ready: Callable[[list], None] | None = None,
                          **kwargs) -> ExecutionReport:
    """:func:`execute` the plan ``repeats`` times, each run followed by a run of the unsplit
    model on the best single device (:func:`dnnsplit.partition.planner.best_single_device_plan`,
    the baseline the planner's speed-up is against), on the same backend.

    The machine's speed drifts and other work competes for it, unevenly: absolute times from
    minutes apart mislead, a ratio of two runs alternated in one window does not. The report is
    the plan's run of the median pair, with ``speedup`` = {``measured`` (median over pairs),
    ``low``/``high``, ``predicted``, ``objective``, ``pairs``, ``other_cpus``: the most CPUs'
    worth of other processes' work seen between the runs (:func:`~dnnsplit.collectors.load.
    busy_cpus`; the plan assumes each device's CPU to itself), ``cpus``} and ``single`` (that
    pair's
    unsplit run: device, period, throughput, latency and their predictions). The ratio is of
    throughputs for a throughput plan and of median one-frame latencies for a latency plan
    (then one frame at a time unless ``in_flight`` is given). With the ``local`` backend the
    unsplit model runs with every thread of this process on one CPU
    (:func:`dnnsplit.collectors.timing.one_cpu`), as one worker of the pipeline does.
    ``calibrate`` times the probe around the plan's runs only.
    """
    from dnnsplit.collectors.load import busy_cpus
    from dnnsplit.collectors.timing import one_cpu
    from dnnsplit.partition.planner import best_single_device_plan

    if repeats < 1:
        raise DnnsplitError("--repeats must be at least 1")
    single_plan = best_single_device_plan(plan.problem, plan.objective)
    latency = plan.objective == "latency"
    if latency and in_flight is None:
        in_flight = 1
    pairs, others = [], []
    for i in range(repeats):  # the plan first: a plan for another model fails at once
        others.append(busy_cpus())
        two = execute(model, plan, backend=backend, in_flight=in_flight, progress=progress,
                      calibrate=calibrate, on_ready=on_ready if i == 0 else None, **kwargs)
        with one_cpu() if backend == "local" else contextlib.nullcontext():
            one = execute(model, single_plan, backend=backend, in_flight=in_flight,
                          **{k: v for k, v in kwargs.items() if k != "fault"})
        pairs.append((_speed(one, latency), _speed(two, latency), one, two))
    others.append(busy_cpus())
    ratios = sorted(s2 / s1 for s1, s2, _, _ in pairs)
    _, _, one, report = sorted(pairs, key=lambda p: p[1] / p[0])[len(pairs) // 2]
    predicted_single = single_plan.predicted
    predicted = (predicted_single.latency_ms / plan.predicted.latency_ms if latency
                 else predicted_single.period_ms / plan.predicted.period_ms)
    report.speedup = {"measured": ratios[len(ratios) // 2], "low": ratios[0],
                      "high": ratios[-1], "predicted": predicted, "pairs": len(pairs),
                      "objective": plan.objective, "of": "median latency" if latency
                      else "throughput",
                      "other_cpus": max((o for o in others if o is not None), default=None),
                      "cpus": os.cpu_count()}
    report.single = {"device": single_plan.algorithm.removeprefix("only "),
                     "period_ms": one.measured["period_ms"],
                     "throughput_fps": one.measured["throughput_fps"],
                     "latency_p50_ms": one.measured["latency_p50_ms"],
                     "predicted_period_ms": predicted_single.period_ms,
                     "predicted_latency_ms": predicted_single.latency_ms}
    return report


def _speed(report: ExecutionReport, latency: bool) -> float:
    """Higher is faster: frames per second, or one over the median latency."""
    return 1.0 / report.measured["latency_p50_ms"] if latency \
        else report.measured["throughput_fps"]
