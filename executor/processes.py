"""Run stages as a pipeline of local processes: one per stage, frames through shared memory.

Threads of one process share the interpreter and the framework's runtime, and there they
slow each other down: on the 2-core VM, two 1-thread stages as threads reached 1.61-1.75x a
single worker (``docs/pipeline.md``), as pinned processes 1.74-1.86x
(``docs/pipeline-processes.md``; ``benchmarks/pipeline.py --backend processes``). Here each
stage runs in a process of its own (forked from a server that imported the framework once,
or spawned: :func:`~dnnsplit.predictor.keras_env.process_context`; it builds the stage from its
pickled sub-model, compiles it and runs it once), pinned to CPUs of its own when the machine
has enough (``threads`` per stage), with ``threads`` threads per op and one inter-op thread.

Frames travel between consecutive processes through rings of slots in shared memory (one
slot holds every tensor that crosses that boundary; the shapes are fixed by the model, so
a slot is written and read in place, one copy each way) with two semaphores per ring: frames
stay in order and a slow stage holds the ones before it back (backpressure). This process
writes the inputs into the first ring, at most ``in_flight`` frames ahead of the outputs it
reads from the last one. Links are emulated as in the Ray backend: each stage process holds a
frame until the link from the stage before would have delivered it
(:class:`~dnnsplit.executor.pipeline.SerialLink` on the wall clock, which all processes share).

Each device runs with the Keras backend and thread count of the profile its costs were
predicted from (``runtimes``): a plan over a ``cpu-1t-tensorflow`` and a ``cpu-1t-jax`` device
runs a TensorFlow process and a JAX process (started fresh with ``KERAS_BACKEND`` set), the
tensors crossing as arrays.

A device with several stages (a latency plan that comes back to it) has a process per stage,
all pinned to that device's CPUs, and they take turns (a lock per device).

Faults: a stage that raises, or a worker process that dies (``Fault(kind="exit")``, a crash,
the OOM killer), stops the run within a second with an error that names the stage; so does
Ctrl-C (the workers ignore it and are stopped by this process). Every worker is stopped
(terminated, then killed) before :func:`run_pipeline_processes` returns or raises; a worker
whose parent disappears exits by itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from dnnsplit.collectors.timing import cpu_blocks, main_not_reimported
from dnnsplit.executor.pipeline import (Event, ExecutorError, Fault, Interrupted, RunResult,
                                        SerialLink, consumers, default_in_flight, device_groups,
                                        keep_sets, producers, progress_bar, return_s, send_s,
                                        stage_error, summarise, tensor_layouts)
from dnnsplit.executor.stages import Key, Stage
from dnnsplit.predictor.keras_env import current_backend, process_context

__all__ = ["Ring", "run_pipeline_processes"]

POLL_S = 0.1
START_TIMEOUT_S = 180.0
_END = -1.0  # the frame number that ends the stream
_ALIGN = 64


class _Stop(Exception):
    pass


class Ring:
    """``slots`` slots of fixed-shape arrays in shared memory, from one process to the next.

    ``layout`` lists ``(key, shape, dtype)`` of what one frame carries. Each end keeps its own
    position, so a ring has one writer and one reader. Pass it to a process when starting it.

    >>> import multiprocessing
    >>> ring = Ring(multiprocessing.get_context("spawn"), [(("x", 0), (2,), "float32")], 2)
    >>> ring.put(0, 1.0, 2.0, {("x", 0): np.ones(2, "float32")}, lambda: True)
    >>> ring.get(lambda: True)[0], ring.get_count
    (0, 1)
    """

    def __init__(self, ctx, layout: Sequence[tuple[Key, tuple, str]], slots: int):
        self.layout = [(tuple(k), tuple(int(d) for d in shape), str(np.dtype(dtype)))
                       for k, shape, dtype in layout]
        self.offsets, size = [], 0
        for _, shape, dtype in self.layout:
            self.offsets.append(size)
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            size += -(-nbytes // _ALIGN) * _ALIGN
        self.slot_bytes, self.slots = size, slots
        self.data = ctx.RawArray("b", max(1, size * slots))
        self.header = ctx.RawArray("d", 3 * slots)  # frame, started, ready
        self.free, self.filled = ctx.Semaphore(slots), ctx.Semaphore(0)
        self.put_count = self.get_count = 0
        self._views = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_views"} | {"_views": None}

    def _slot(self, i: int):
        if self._views is None:
            raw = np.frombuffer(self.data, dtype=np.uint8)
            self._views = [[raw[s * self.slot_bytes + off:].view(dtype)[:int(np.prod(shape))]
                            .reshape(shape) for (_, shape, dtype), off
                            in zip(self.layout, self.offsets)] for s in range(self.slots)]
        return self._views[i]

    def put(self, frame: int, started: float, ready: float, values: Mapping[Key, Any],
            going) -> None:
        """Write a frame (``frame = -1`` ends the stream); waits for a free slot while
        ``going()``."""
        _acquire(self.free, going)
        i = self.put_count % self.slots
        if frame >= 0:
            for (key, _, _), view in zip(self.layout, self._slot(i)):
                view[...] = values[key]
        self.header[3 * i:3 * i + 3] = [float(frame), started, ready]
        self.put_count += 1
        self.filled.release()

    def get(self, going, keep: bool = True) -> tuple[int, float, float, dict]:
        """The next frame: ``(frame, started, ready, values copied out)`` (no values if not
        ``keep``)."""
        _acquire(self.filled, going)
        i = self.get_count % self.slots
        frame, started, ready = self.header[3 * i:3 * i + 3]
        values = {key: view.copy() for (key, _, _), view in zip(self.layout, self._slot(i))} \
            if keep and frame >= 0 else {}
        self.get_count += 1
        self.free.release()
        return int(frame), started, ready, values


def _acquire(semaphore, going) -> None:
    while not semaphore.acquire(timeout=POLL_S):
        if not going():
            raise _Stop


def run_pipeline_processes(stages: Sequence[Stage], frames: Sequence[Sequence[np.ndarray]],
                           input_keys: Sequence[Key], output_keys: Sequence[Key],
                           links: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
                           first_device: str | None = None,
                           devices: Mapping[str, str] | None = None, threads: int = 1,
                           cpus: Sequence[set[int]] | None | str = "auto",
                           queue_size: int = 2, keep_outputs: int = 3,
                           timeout_s: float = 600.0, fault: Fault | None = None,
                           progress: bool = False, in_flight: int | None = None,
                           runtimes: Mapping[str, Mapping[str, Any]] | None = None,
                           throttle: Mapping[str, float] | None = None) -> RunResult:
    """Push ``frames`` through ``stages``, a process each; same contract as ``run_pipeline``.

    ``threads`` per stage process; ``cpus`` lists the CPUs of each stage's process
    (``"auto"``: each device's threads CPUs when there are enough, see
    :func:`~dnnsplit.collectors.timing.cpu_blocks`; None: not pinned). ``runtimes`` maps a
    device to the ``backend`` and ``threads`` its stages run with (a plan's
    ``problem.runtimes``, from the device's profile); other devices run this process's backend
    with ``threads``. A stage whose backend is not this process's runs in a fresh interpreter
    started with that backend; tensors cross between backends as NumPy arrays. ``throttle``
    maps a device to the fraction of its CPUs its processes may use
    (:class:`~dnnsplit.collectors.throttle.CpuQuota`, removed when the run ends).
    """
    devices = devices or {}
    in_flight = in_flight or default_in_flight(len(stages))
    groups = device_groups(stages)
    here = current_backend()
    runtime = {d: (str((runtimes or {}).get(d, {}).get("backend", here)),
                   int((runtimes or {}).get(d, {}).get("threads", threads))) for d in groups}
    if cpus == "auto":  # a device's stages share its CPUs
        blocks = cpu_blocks(len(groups), [runtime[d][1] for d in groups])
        cpus = None if blocks is None else [blocks[list(groups).index(s.device)] for s in stages]
    ctx = process_context()
    everywhere = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    shapes = tensor_layouts(stages, frames[0], input_keys)
    keep = keep_sets(stages, output_keys)
    crossing, known = [list(input_keys)], list(input_keys)
    for stage, kept in zip(stages, keep):  # what crosses the boundary after each stage
        known += stage.output_keys
        crossing.append([k for k in known if k in kept])
    rings = [Ring(ctx, [(k, *shapes[k]) for k in keys],
                  in_flight if b in (0, len(stages)) else queue_size)
             for b, keys in enumerate(crossing)]
    stop, reports = ctx.Event(), ctx.Queue()
    # the workers' sign that this process is gone: the writing end closes with it (killed or
    # not); a forked worker's parent is the forkserver, which outlives this process
    alive, alive_here = ctx.Pipe(duplex=False)
    device_lock = {device: ctx.Lock() for device in groups}
    readers = consumers(stages)
    procs = []
    quotas: dict[str, Any] = {}
    try:
        for device, fraction in (throttle or {}).items():
            from dnnsplit.collectors.throttle import CpuQuota

            quotas[device] = CpuQuota(fraction, name=f"{device}-quota",
                                      cpus=runtime.get(device, (here, threads))[1])
            quotas[device].open()
        upstream = None
        for i, stage in enumerate(stages):
            light = replace(stage, model=None)
            backend, stage_threads = runtime[stage.device]
            start_with = ctx if backend == here else multiprocessing.get_context("spawn")
            procs.append(start_with.Process(
                target=_worker, name=f"dnnsplit-{stage.name}", daemon=True,
                args=(light, pickle.dumps(stage.model), devices.get(stage.device),
                      stage_threads, everywhere if cpus is None else cpus[i], rings[i],
                      rings[i + 1], {k: shapes[k] for k in stage.input_keys}, stop, reports,
                      fault, upstream, readers, links, device_lock[stage.device], alive,
                      backend)))
            upstream = light
        with main_not_reimported():
            for proc, stage in zip(procs, stages):
                with keras_backend_env(runtime[stage.device][0]):
                    proc.start()
                if stage.device in quotas:
                    quotas[stage.device].add(proc.pid)
        watch = _Watch(stages, procs, stop, reports, time.monotonic() + timeout_s, timeout_s)
        watch.wait_ready()
        result = _run(stages, frames, input_keys, output_keys, rings, watch, links,
                      first_device, keep_outputs, in_flight, progress)
        result.throttled = {device: {"fraction": quota.fraction,
                                     "period_ms": quota.period_us / 1000, **quota.throttled()}
                            for device, quota in quotas.items()}
        return result
    except KeyboardInterrupt:
        raise Interrupted("interrupted (Ctrl-C): the pipeline was stopped") from None
    finally:
        stop.set()
        _stop_all(procs)
        for quota in quotas.values():
            quota.close()
        reports.close()
        reports.join_thread()
        alive.close()
        alive_here.close()


class _Watch:
    """This process's view of the workers: started, failed, died, out of time."""

    def __init__(self, stages, procs, stop, reports, deadline, timeout_s):
        self.stages, self.procs, self.stop, self.reports = stages, procs, stop, reports
        self.deadline, self.timeout_s = deadline, timeout_s
        self.ready: dict[str, dict] = {}  # stage name -> {"cpus": CPUs it may run on, "backend"}
        self.events: dict[str, list] = {}

    def _drain(self) -> None:
        while True:
            try:
                kind, device, payload = self.reports.get_nowait()
            except queue.Empty:
                return
            if kind == "error":
                raise ExecutorError(payload)
            if kind == "ready":
                self.ready[device] = payload
            else:
                self.events[device] = payload

    def _dead(self) -> list[tuple[str, int]]:
        """Workers that exited before reporting their events: (device, exit code)."""
        return [(s.name, p.exitcode) for s, p in zip(self.stages, self.procs)
                if p.exitcode is not None and s.name not in self.events]

    def check(self) -> None:
        """Raise if a worker reported an error or died, or the run is out of time."""
        self._drain()
        if self._dead():
            time.sleep(POLL_S)  # what it put on its way out (an error, its events) comes first
            self._drain()
            for device, code in self._dead()[:1]:
                raise ExecutorError(
                    f"the worker process of stage on device {device!r} died (exit code "
                    f"{code}: killed, crashed or out of memory)")
        if time.monotonic() > self.deadline:
            raise ExecutorError(f"the pipeline did not finish within {self.timeout_s:g} s")

    def going(self) -> bool:
        self.check()
        return True

    def wait_ready(self) -> None:
        limit = time.monotonic() + START_TIMEOUT_S
        while len(self.ready) < len(self.stages):
            self.check()
            if time.monotonic() > limit:
                missing = [s.name for s in self.stages if s.name not in self.ready]
                raise ExecutorError(f"the worker processes for {missing} did not start within "
                                    f"{START_TIMEOUT_S:g} s")
            time.sleep(0.05)

    def wait_events(self) -> list[Event]:
        while len(self.events) < len(self.stages):
            self.check()
            time.sleep(0.02)
        return [Event(*e) for device in self.events for e in self.events[device]]


def _run(stages, frames, input_keys, output_keys, rings, watch, links, first_device,
         keep_outputs, in_flight, progress) -> RunResult:
    returned = 0.0  # the outputs' trip back to the first device: the same for every frame
    if links and first_device is not None:
        layout = {key: (shape, dtype) for key, shape, dtype in rings[-1].layout}
        producer = producers(stages, first_device)
        returned = return_s([np.empty(*layout[k]) for k in output_keys], output_keys,
                            producer, first_device, links)
    results: dict[int, tuple[list, float, float]] = {}
    returns: list[Event] = []
    back = SerialLink(clock=time.time)
    bar = progress_bar(len(frames), progress)
    fed = 0
    try:
        while len(results) < len(frames):
            while fed < len(frames) and fed - len(results) < in_flight:
                rings[0].put(fed, -1.0, time.time(), dict(zip(input_keys, frames[fed])),
                             watch.going)
                fed += 1
            frame, started, ready, values = rings[-1].get(
                watch.going, keep=len(results) < keep_outputs)
            done = time.time()
            if returned:
                start, arrival = back.carry(ready, returned, wait=False)
                returns.append(Event("return", frame, start, arrival))
                done = max(done, arrival)
            results[frame] = ([values[k] for k in output_keys] if values else [], started, done)
            if bar is not None:
                bar.update(1)
        rings[0].put(-1, 0.0, 0.0, {}, watch.going)
        events = watch.wait_events()
    finally:
        if bar is not None:
            bar.close()
    result = summarise(stages, len(frames), results, returns + events)
    result.cpus = {stage: ready["cpus"] for stage, ready in watch.ready.items()
                   if ready["cpus"] is not None}
    result.backends = {stage: ready["backend"] for stage, ready in watch.ready.items()}
    return result


@contextlib.contextmanager
def keras_backend_env(backend: str):
    """``KERAS_BACKEND=backend`` in this process's environment for the block (what a process
    spawned inside it starts with)."""
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = backend
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = saved


def _stop_all(procs) -> None:
    deadline = time.monotonic() + 5
    for proc in procs:
        if proc.pid is not None:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)


def _worker(stage, model_bytes, keras_device, threads, cpus, ring_in, ring_out, input_shapes,
            stop, reports, fault, upstream, readers, links, lock, alive, backend) -> None:
    """A stage process: set up, report ready, then frames from ``ring_in`` to ``ring_out``.

    ``cpus``: the CPUs it may run on (the run's own when not pinned: a forked worker would
    otherwise keep its server's). It stops when told to or when the run's process is gone
    (``alive``, the reading end of a pipe only that process writes to, is at its end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share a GPU (JAX)
    if cpus:
        os.sched_setaffinity(0, cpus)  # before the framework starts its threads

    def going() -> bool:
        return not stop.is_set() and not alive.poll()

    try:
        from dnnsplit.executor.local import compile_stage
        from dnnsplit.executor.run import configure_worker_threads
        from dnnsplit.predictor.keras_env import import_keras

        keras = import_keras()
        if keras.backend.backend() != backend:
            raise ExecutorError(f"the stage's process runs Keras on {keras.backend.backend()}, "
                                f"its device's profile was measured on {backend}")
        configure_worker_threads(1, threads)
        run = compile_stage(replace(stage, model=pickle.loads(model_bytes)), keras_device)
        run([np.zeros(*input_shapes[k]) for k in stage.input_keys])  # compiled before timing
    except Exception as exc:  # noqa: BLE001 - reported to the parent, named
        reports.put(("error", stage.name, str(stage_error(stage.name, exc))))
        return
    reports.put(("ready", stage.name, {
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "backend": keras.backend.backend()}))
    link = SerialLink(clock=time.time)
    events = []
    try:
        while True:
            frame, started, ready, values = ring_in.get(going)
            if frame < 0:
                ring_out.put(-1, 0.0, 0.0, {}, going)
                break
            if upstream is not None and links:
                seconds = send_s(upstream, values, readers, links)
                if seconds:
                    start, arrival = link.carry(ready, seconds)
                    events.append((f"{upstream.name}->next", frame, start, arrival))
            try:
                with lock:  # the device's other stages wait
                    start = time.time()
                    if fault is not None:
                        fault.trigger(stage.device, frame)
                    outputs = run([values[k] for k in stage.input_keys])
                    end = time.time()
                values.update(zip(stage.output_keys, outputs))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, named
                reports.put(("error", stage.name, str(stage_error(stage.name, exc))))
                stop.set()
                return
            events.append((stage.name, frame, start, end))
            ring_out.put(frame, start if started < 0 else started, end, values, going)
    except _Stop:
        return
    reports.put(("events", stage.name, events))
