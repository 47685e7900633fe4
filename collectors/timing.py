"""The timing protocol every measurement in dnnsplit goes through (docs/design.md).

1. compile the forward pass once (``tf.function`` / ``jax.jit`` through the Keras backend);
2. warm up;
3. time single calls, blocking on the result, until the median is stable;
4. subtract the median of an *empty call* of the same kind (an identity function compiled the
   same way on the same inputs): the dispatch cost that a layer inside a model does not pay;
5. record median and spread (p10, p90) and the number of repeats.

>>> forward = compile_forward(model)                        # doctest: +SKIP
>>> timing = measure(forward, inputs, overhead=empty_call_overhead(inputs))  # doctest: +SKIP
>>> timing.median_ms, timing.p10_ms, timing.p90_ms, timing.repeats          # doctest: +SKIP

Threads are pinned once per process with :func:`configure_threads` before the backend runs;
:func:`one_cpu` keeps a block on one CPU when the process's inter-op pool holds more threads.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.keras_env import compiled, compiled_model, device_scope, import_keras


class TimingError(DnnsplitError):
    """The protocol cannot run as asked (threads set too late, unknown backend...)."""


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call with the empty-call overhead already subtracted."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    overhead_ms: float = 0.0


@dataclass(frozen=True)
class StopRule:
    """When to stop repeating: at least ``min_repeats`` and ``min_time_s``; then as soon as the
    median moved less than ``rel_tol`` over the last batch; never past ``max_repeats`` or
    ``max_time_s``."""

    min_repeats: int = 10
    max_repeats: int = 400
    min_time_s: float = 0.1
    max_time_s: float = 2.0
    rel_tol: float = 0.01
    warmup: int = 3
    batch: int = 5


DEFAULT_STOP = StopRule()


def backend() -> str:
    return import_keras().backend.backend()


def configure_threads(threads: int, inter_op: int = 1) -> None:
    """Pin the backend's intra-op threads to ``threads`` and inter-op to ``inter_op`` (call
    first; ``inter_op`` > 1 lets that many Python threads run compiled calls at once)."""
    if threads < 1:
        raise TimingError(f"threads must be >= 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    name = os.environ.get("KERAS_BACKEND", "tensorflow")
    if name == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} " \
                f"intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
        return
    import_keras()
    import tensorflow as tf

    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        if tf.config.threading.get_inter_op_parallelism_threads() != inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as exc:
        raise TimingError(
            "threads must be set before TensorFlow runs its first operation: call "
            f"configure_threads first in a fresh process ({exc})") from None


@contextlib.contextmanager
def one_cpu(cpu: int | None = None):
    """Run the block with every thread of this process on one CPU; yields whether it could.

    A process whose inter-op pool holds several threads (as a pipeline of workers in one
    process needs) lets a single call with parallel branches use more than one core, so a
    model timed "alone" there is faster than one worker of that pipeline can be (InceptionV3
    on this 2-core VM: 84 ms with inter-op 2, 116 ms on one core). Inside this block "alone"
    means one core. Threads started in the block get the process's CPUs back at its end.
    Linux only (thread affinity through ``/proc/self/task``); elsewhere it yields False and
    pins nothing.

    >>> with one_cpu() as pinned:            # doctest: +SKIP
    ...     alone = measure(forward, inputs)
    """
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        yield False
        return
    before = os.sched_getaffinity(0)
    cpu = min(before) if cpu is None else cpu
    if cpu not in before:
        raise TimingError(f"CPU {cpu} is not one this process may run on ({sorted(before)})")
    _pin_all_threads({cpu})
    try:
        yield True
    finally:
        _pin_all_threads(before)


def cpu_blocks(n: int, per: int | Sequence[int] = 1) -> list[set[int]] | None:
    """``n`` disjoint sets of ``per`` CPUs each (or ``per[i]`` for set ``i``) from those this
    process may run on, in order (one per worker process to pin); None when there are not that
    many or the OS cannot pin.

    >>> cpu_blocks(2)        # on a machine with 2 CPUs    # doctest: +SKIP
    [{0}, {1}]
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    sizes = [per] * n if isinstance(per, int) else [int(p) for p in per]
    available = sorted(os.sched_getaffinity(0))
    if sum(sizes) > len(available):
        return None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [set(available[a:a + size]) for a, size in zip(starts, sizes)]


@contextlib.contextmanager
def main_not_reimported():
    """Start (spawn) processes in this block without their re-running the caller's
    ``__main__``: a spawned child imports the parent's main script, and one without an
    ``if __name__ == "__main__"`` guard would run again. For children whose code is all in
    importable modules."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _pin_all_threads(cpus) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # the thread ended meanwhile
            pass


def compile_forward(model, device: str | None = None) -> Callable[[Sequence[Any]], None]:
    """A function ``run(inputs)`` that calls ``model`` compiled once and blocks on the result."""
    return _blocking(compiled_model(model, device))


def _identity(xs):
    return xs


def compile_identity(device: str | None = None) -> Callable[[Sequence[Any]], None]:
    """The empty call: an identity compiled like :func:`compile_forward`."""
    return _blocking(compiled(_identity, device))


def _blocking(call: Callable) -> Callable[[Sequence[Any]], None]:
    if backend() == "jax":
        import jax

        block = jax.block_until_ready
    else:
        block = _block

    def run(inputs):
        block(call(inputs[0] if len(inputs) == 1 else list(inputs)))

    return run


def _block(out) -> None:
    """TensorFlow on CPU returns finished tensors; on GPU wait for the last one."""
    import tensorflow as tf

    last = tf.nest.flatten(out)[-1]
    if "GPU" in getattr(last, "device", ""):
        last.numpy()


def place_inputs(arrays: Sequence[np.ndarray], device: str | None = None) -> list:
    """Backend tensors of the given arrays, on ``device`` (so no copy is timed)."""
    keras = import_keras()
    with device_scope(device):
        return [keras.ops.convert_to_tensor(a) for a in arrays]


def random_inputs(shapes: Sequence[Sequence[int]], dtype: str = "float32",
                  seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s)).astype(dtype) for s in shapes]


def model_inputs(model, batch: int = 1, device: str | None = None, seed: int = 0) -> list:
    """Random backend tensors for each input of ``model`` (its dtypes; a free batch = ``batch``;
    token ids below the model's vocabulary, :func:`~dnnsplit.predictor.keras_env.index_bounds`)."""
    from dnnsplit.predictor.keras_env import index_bounds, random_arrays

    shapes = [(t.shape[0] or batch,) + tuple(t.shape[1:]) for t in model.inputs]
    arrays = random_arrays(shapes, [str(t.dtype) for t in model.inputs], index_bounds(model),
                           np.random.default_rng(seed))
    return place_inputs(arrays, device)


def sample(run: Callable, inputs: Sequence[Any], rule: StopRule = DEFAULT_STOP) -> list[float]:
    """Wall times (ms) of single calls, repeated until the median is stable."""
    for _ in range(rule.warmup):
        run(inputs)
    samples: list[float] = []
    start = time.perf_counter()
    previous = None
    while True:
        for _ in range(rule.batch):
            t0 = time.perf_counter()
            run(inputs)
            samples.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - start
        median = statistics.median(samples)
        stable = previous is not None and abs(median - previous) <= rule.rel_tol * median
        enough = len(samples) >= rule.min_repeats and elapsed >= rule.min_time_s
        if (enough and stable) or len(samples) >= rule.max_repeats or elapsed >= rule.max_time_s:
            return samples
        previous = median


def summarise(samples: Sequence[float], overhead_ms: float = 0.0) -> Timing:
    arr = np.asarray(samples)
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return Timing(
        median_ms=max(float(median) - overhead_ms, 0.0),
        p10_ms=max(float(p10) - overhead_ms, 0.0),
        p90_ms=max(float(p90) - overhead_ms, 0.0),
        repeats=len(samples),
        overhead_ms=overhead_ms,
    )


def empty_call_overhead(inputs: Sequence[Any], device: str | None = None,
                        rule: StopRule = DEFAULT_STOP) -> float:
    """Median ms of the empty call on ``inputs``."""
    return statistics.median(sample(compile_identity(device), inputs, rule))


def measure(run: Callable, inputs: Sequence[Any], overhead_ms: float = 0.0,
            rule: StopRule = DEFAULT_STOP) -> Timing:
    """Time ``run(inputs)`` by the protocol and subtract ``overhead_ms``."""
    return summarise(sample(run, inputs, rule), overhead_ms)


def time_model(model, batch: int = 1, device: str | None = None,
               rule: StopRule = DEFAULT_STOP, seed: int = 0) -> Timing:
    """The whole protocol on a Keras model with random inputs of its input shapes."""
    inputs = model_inputs(model, batch, device, seed)
    overhead = empty_call_overhead(inputs, device, rule)
    return measure(compile_forward(model, device), inputs, overhead, rule)
