"""Co-run slowdown: how much slower a model runs while other workers on the same machine run too.

Workers that are cores of one machine share its caches and memory bandwidth, so a pipeline
whose stages run at once on one machine is slower per stage than the same stages timed one at
a time (as the kernel benchmarks and the ground truth are). For every model, this times
single calls of the whole model alone on one CPU (:func:`~dnnsplit.collectors.timing.one_cpu`: the
process's inter-op pool holds ``workers`` threads, with which a model with parallel branches
alone would use more than one core and look slower together than it is), then in ``workers``
threads calling it at once (each on ``threads`` intra-op threads), alternating ``repeats``
times in the same window; the model's
factor is the median of (mean time per call together / alone), the empty-call overhead
subtracted from both. Means, not medians: a worker starved by the others makes few, long
calls, which a median of the pooled calls would hide; the mean is the workers' throughput.
``workers / factor`` is the speed-up of that many perfectly balanced workers over one.
The profile's factor is the median over the models.

>>> result = measure_corun(["MobileNet", "DenseNet121"], workers=2)   # doctest: +SKIP
>>> result["factor"], result["models"]["MobileNet"]["factor"]         # doctest: +SKIP

``collectors corun --out datasets/<profile>/corun.json`` stores it with the profile (the
partitioner does not apply it yet; ``benchmarks/pipeline.py`` reports each model's ceiling).
Measure it on training models only (``collectors/data/model_split.json``) so that pipeline
results on the benchmark models are not fitted to themselves.
"""

from __future__ import annotations

import datetime
import gc
import platform
import statistics
import threading
import time
from typing import Callable, Sequence

from dnnsplit.collectors.timing import (StopRule, backend, compile_forward, configure_threads,
                                        empty_call_overhead, model_inputs, one_cpu)
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.keras_env import import_keras
from dnnsplit.predictor.model_source import load_model

#: Training models (collectors/data/model_split.json) not used by benchmarks/pipeline.py.
DEFAULT_MODELS = ("MobileNet", "ResNet50V2", "DenseNet121", "EfficientNetB0", "InceptionV3",
                  "MobileNetV3Small", "Xception", "AlexNet", "SqueezeNet")
OVERHEAD_RULE = StopRule(min_repeats=20, max_time_s=0.5)


class CoRunError(DnnsplitError):
    """The co-run measurement cannot run as asked."""


def _calls_ms(run, inputs, seconds: float, start: threading.Barrier | None = None) -> list[float]:
    """Per-call wall times (ms) of ``run(inputs)`` repeated for ``seconds`` (at least 3)."""
    if start is not None:
        start.wait()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _together_ms(run, inputs, seconds: float, workers: int) -> float:
    """Mean per-call time while ``workers`` threads call ``run`` at once."""
    barrier = threading.Barrier(workers)
    results: list[list[float]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def worker(i):
        try:
            results[i] = _calls_ms(run, inputs, seconds, barrier)
        except BaseException as exc:  # reported below, never swallowed
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return statistics.fmean(t for times in results for t in times)


def corun_of_call(run: Callable, inputs, workers: int = 2, repeats: int = 3,
                  seconds: float = 1.0, overhead_ms: float = 0.0) -> dict:
    """``{"alone_ms", "together_ms", "factor", "alone_one_cpu"}`` of ``run(inputs)`` (see the
    module doc; ``alone_one_cpu`` is False where the platform cannot pin threads)."""
    with one_cpu():
        _calls_ms(run, inputs, min(seconds, 0.2))  # warm up (traces, allocations)
    alone, together = [], []
    for _ in range(repeats):
        with one_cpu() as pinned:
            alone_calls = _calls_ms(run, inputs, seconds)
        alone.append(max(statistics.fmean(alone_calls) - overhead_ms, 1e-6))
        together.append(max(_together_ms(run, inputs, seconds, workers) - overhead_ms, 1e-6))
    factors = [t / a for a, t in zip(alone, together)]
    return {"alone_ms": round(statistics.median(alone), 4),
            "together_ms": round(statistics.median(together), 4),
            "factor": round(statistics.median(factors), 4), "alone_one_cpu": pinned}


def corun_of_model(model, workers: int = 2, repeats: int = 3, seconds: float = 1.0,
                   device: str | None = None) -> dict:
    """:func:`corun_of_call` of a Keras model's compiled forward pass, empty call subtracted."""
    inputs = model_inputs(model, device=device)
    run = compile_forward(model, device)
    run(inputs)  # trace before the empty call is timed
    overhead = empty_call_overhead(inputs, device, OVERHEAD_RULE)
    return corun_of_call(run, inputs, workers, repeats, seconds, overhead)


def corun_of_model_in_processes(model, workers: int = 2, repeats: int = 3,
                                 seconds: float = 1.0, threads: int = 1) -> dict:
    """:func:`corun_of_model` with a process per worker instead of a thread: each a fresh
    process pinned to ``threads`` CPUs of its own (:func:`~dnnsplit.collectors.timing.cpu_blocks`),
    with one inter-op thread. "Alone" is the first of them while the others wait.

    The ceiling of the executor's ``processes`` backend (``collectors corun --processes``).
    Whole models co-run alike either way on the 2-core VM (2026-11-25 01:37-01:45 UTC, the
    9 default models: x1.027 in processes, x1.017 in threads); the two backends differ in
    how much of that ceiling a pipeline reaches (``docs/pipeline*.md``).
    """
    import pickle

    from dnnsplit.collectors.timing import cpu_blocks, main_not_reimported
    from dnnsplit.predictor.keras_env import process_context

    cpus = cpu_blocks(workers, threads)
    if cpus is None:
        raise CoRunError(f"{workers} workers of {threads} thread(s) need {workers * threads} "
                         "CPUs of their own to run at once in processes")
    ctx = process_context()
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    data = pickle.dumps(model)
    procs = [ctx.Process(target=_corun_process, daemon=True,
                         args=(i, data, cpus[i], threads, repeats, seconds, barrier, out))
             for i in range(workers)]
    with main_not_reimported():
        for proc in procs:
            proc.start()
    try:
        results = dict(out.get(timeout=300 + 4 * repeats * seconds) for _ in procs)
    except Exception as exc:  # noqa: BLE001 - a worker that failed or hung
        barrier.abort()
        raise CoRunError(f"a co-run process failed: {type(exc).__name__}: {exc}") from None
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    if any(isinstance(r, str) for r in results.values()):
        raise CoRunError(next(r for r in results.values() if isinstance(r, str)))
    alone = results[0][0]
    together = [statistics.fmean(results[i][1][r] for i in results) for r in range(repeats)]
    factors = [t / a for a, t in zip(alone, together)]
    return {"alone_ms": round(statistics.median(alone), 4),
            "together_ms": round(statistics.median(together), 4),
            "factor": round(statistics.median(factors), 4), "processes": True}


def _corun_process(index, model_bytes, cpus, threads, repeats, seconds, barrier, out) -> None:
    import os
    import pickle

    os.sched_setaffinity(0, cpus)
    try:
        configure_threads(threads, inter_op=1)
        model = pickle.loads(model_bytes)
        inputs = model_inputs(model)
        run = compile_forward(model)
        _calls_ms(run, inputs, 0.2)  # warm up (traces, allocations)
        overhead = empty_call_overhead(inputs, None, OVERHEAD_RULE)
        alone, together = [], []
        for _ in range(repeats):
            barrier.wait()
            if index == 0:
                alone.append(max(statistics.fmean(_calls_ms(run, inputs, seconds)) - overhead,
                                 1e-6))
            barrier.wait()
            together.append(max(statistics.fmean(_calls_ms(run, inputs, seconds)) - overhead,
                                1e-6))
        out.put((index, (alone, together)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put((index, f"co-run process {index}: {type(exc).__name__}: {exc}"))
        barrier.abort()


def measure_corun(models: Sequence[str] = DEFAULT_MODELS, threads: int = 1, workers: int = 2,
                  repeats: int = 3, seconds: float = 1.0, device: str | None = None,
                  progress: bool = True, processes: bool = False) -> dict:
    """Co-run factors of ``models`` and their median (the profile's factor), as a dict.

    ``processes``: the workers are pinned processes (:func:`corun_of_model_in_processes`, the
    executor's ``processes`` backend) instead of threads of this process (the ``local`` one).
    """
    if workers < 2:
        raise CoRunError(f"workers must be >= 2 to run at once, got {workers}")
    if not models:
        raise CoRunError("give at least one model")
    if processes and device not in (None, "cpu", "cpu:0"):
        raise CoRunError(f"co-run in processes measures CPU workers, not {device!r}")
    configure_threads(threads, inter_op=workers)
    keras = import_keras()
    per_model = {}
    names = models
    if progress:
        from tqdm import tqdm

        names = tqdm(models, unit="model", desc="co-run")
    for name in names:
        model = load_model(name)
        if processes:
            per_model[name] = corun_of_model_in_processes(model, workers, repeats, seconds,
                                                          threads)
        else:
            per_model[name] = corun_of_model(model, workers, repeats, seconds, device)
        del model
        keras.backend.clear_session()
        gc.collect()
    kind = "pinned processes" if processes else "threads"
    return {
        "factor": round(statistics.median(m["factor"] for m in per_model.values()), 4),
        "about": f"per-call time of a whole model while `workers` {kind} of the same machine "
                 "run it at once, divided by its time alone on one CPU (collectors/corun.py)",
        "workers": workers, "processes": processes, "threads": threads, "backend": backend(),
        "keras_version": keras.__version__, "machine": f"{platform.node()} "
        f"({platform.machine()}, {platform.processor() or 'cpu'})",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "models": per_model,
    }
