"""Run stages as a pipeline in one process: a worker thread per stage, emulated links between.

Each stage runs on its own thread under its Keras device scope, compiled once
(``tf.function`` / ``jax.jit``), and hands NumPy arrays on through bounded queues, so frames
stay in order and a slow stage holds the ones before it back (backpressure). Between
consecutive stages a link thread sleeps for the time the plan's links would take to carry the
tensors the earlier stage produced for later stages (``latency + bytes*8/mbps`` per
destination device); outputs produced off the first device are sent back over their link.

Every stage is traced and run once on the first frame before timing starts (so compilation is
not counted). A stage that raises stops the whole run within a second, with an error naming
the stage; so does Ctrl-C. No thread outlives :func:`run_pipeline`.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from executor.stages import Key, Stage
from predictor.errors import DnnsplitError
from predictor.keras_env import compiled_model

POLL_S = 0.1
_DONE = object()


class ExecutorError(DnnsplitError):
    """The pipeline failed (a stage raised, a worker died, or the run was interrupted)."""


@dataclass
class Event:
    lane: str
    frame: int
    start: float
    end: float


@dataclass
class RunResult:
    frames: int
    outputs: list[list[np.ndarray]]  # the first frames' outputs, in model output order
    latencies_ms: list[float]
    period_ms: float
    throughput_fps: float
    busy_ms: dict[str, float]  # mean per frame, per stage device
    link_ms: dict[str, float]  # mean per frame, per link lane
    events: list[Event] = field(default_factory=list)


def compile_stage(stage: Stage, device: str | None) -> Callable[[list[np.ndarray]], list]:
    """``run(arrays) -> arrays``: the stage's model compiled once, outputs as NumPy."""
    call = compiled_model(stage.model, device)

    def run(arrays):
        out = call(list(arrays))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    return run


def _transfer_s(nbytes: int, link: Mapping[str, float]) -> float:
    return (link["latency_ms"] + nbytes * 8 / (link["mbps"] * 1000)) / 1000


class _Stop(Exception):
    pass


def run_pipeline(stages: Sequence[Stage], frames: Sequence[Sequence[np.ndarray]],
                 input_keys: Sequence[Key], output_keys: Sequence[Key],
                 links: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
                 first_device: str | None = None,
                 devices: Mapping[str, str] | None = None, queue_size: int = 2,
                 keep_outputs: int = 3, timeout_s: float = 600.0) -> RunResult:
    """Push ``frames`` through ``stages`` pipelined; see the module docstring.

    ``links`` maps (from device, to device) to ``{"latency_ms", "mbps"}`` (None: no emulation);
    ``devices`` maps a stage device name to a Keras device (e.g. ``"cpu:0"``).
    """
    devices = devices or {}
    stop = threading.Event()
    errors: list[BaseException] = []
    events: list[Event] = []
    events_lock = threading.Lock()
    compiled = [compile_stage(s, devices.get(s.device)) for s in stages]
    _warm_up(stages, compiled, frames[0], input_keys)
    consumers = _consumers(stages)
    producer = {key: s.device for s in stages for key in s.output_keys}

    def record(lane, frame, start, end):
        with events_lock:
            events.append(Event(lane, frame, start, end))

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
        raise _Stop

    def get(q):
        while not stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        raise _Stop

    def guarded(name, body):
        def target():
            try:
                body()
            except _Stop:
                pass
            except BaseException as exc:  # reported to the caller, never swallowed
                errors.append(ExecutorError(f"stage on device {name!r} failed: "
                                            f"{type(exc).__name__}: {exc}"))
                stop.set()
        return threading.Thread(target=target, name=f"dnnsplit-{name}", daemon=True)

    lanes = []  # (name, body) in pipeline order
    queues = [queue.Queue(maxsize=queue_size)]

    def lane(q_in, q_out, process):
        """A pipeline step: take a frame, process it, pass it on; forward the end marker."""
        def body():
            while True:
                item = get(q_in)
                if item is _DONE:
                    put(q_out, _DONE)
                    return
                put(q_out, process(*item))
        return body

    def stage_step(i, stage):
        def process(frame, values, started):
            start = time.perf_counter()
            outputs = compiled[i]([values[k] for k in stage.input_keys])
            values = dict(values)
            values.update(zip(stage.output_keys, outputs))
            record(stage.device, frame, start, time.perf_counter())
            return frame, values, start if started is None else started
        return process

    def link_step(stage):
        def process(frame, values, started):
            seconds = 0.0
            for key in stage.output_keys:  # produced here; sent once per consuming device
                nbytes = int(np.asarray(values[key]).nbytes)
                for dest in consumers.get(key, ()):
                    if dest != stage.device and links:
                        seconds += _transfer_s(nbytes, links[(stage.device, dest)])
            if seconds:
                start = time.perf_counter()
                time.sleep(seconds)
                record(f"{stage.device}->next", frame, start, time.perf_counter())
            return frame, values, started
        return process

    for i, stage in enumerate(stages):
        q_stage_out = queue.Queue(maxsize=queue_size)
        lanes.append((stage.device, lane(queues[-1], q_stage_out, stage_step(i, stage))))
        queues.append(q_stage_out)
        if i < len(stages) - 1 and links:
            q_link_out = queue.Queue(maxsize=queue_size)
            lanes.append((f"{stage.device}->", lane(queues[-1], q_link_out, link_step(stage))))
            queues.append(q_link_out)
    q_final = queues[-1]
    threads = [guarded(name, body) for name, body in lanes]
    for thread in threads:
        thread.start()

    results: dict[int, tuple[list, float, float]] = {}
    feeder_error = None
    deadline = time.monotonic() + timeout_s
    try:
        def feed():
            for index, arrays in enumerate(frames):
                put(queues[0], (index, dict(zip(input_keys, arrays)), None))
            put(queues[0], _DONE)

        feeder = guarded("input", feed)
        feeder.start()
        threads.append(feeder)
        while True:
            if errors:
                break
            if time.monotonic() > deadline:
                raise ExecutorError(f"the pipeline did not finish within {timeout_s:g} s")
            try:
                item = q_final.get(timeout=POLL_S)
            except queue.Empty:
                if not any(t.is_alive() for t in threads[:-1]) and not errors:
                    raise ExecutorError("a pipeline worker died without reporting an error")
                continue
            if item is _DONE:
                break
            frame, values, started = item
            outputs = [values[k] for k in output_keys]
            if links and first_device is not None:
                returned = 0.0
                for key, value in zip(output_keys, outputs):
                    source = producer.get(key, first_device)
                    if source != first_device:
                        returned += _transfer_s(int(np.asarray(value).nbytes),
                                                links[(source, first_device)])
                if returned:
                    start = time.perf_counter()
                    time.sleep(returned)
                    record("return", frame, start, time.perf_counter())
            done = time.perf_counter()
            results[frame] = (outputs if frame < keep_outputs else [], started, done)
    except KeyboardInterrupt:
        feeder_error = ExecutorError("interrupted (Ctrl-C): the pipeline was stopped")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    if errors:
        raise errors[0]
    if feeder_error is not None:
        raise feeder_error
    if sorted(results) != list(range(len(frames))):
        raise ExecutorError(f"only {len(results)} of {len(frames)} frames came out")
    return _summarise(stages, frames, results, events)


def _warm_up(stages, compiled, arrays, input_keys) -> None:
    """Trace/compile every stage once (one frame, sequentially) so timings are steady-state."""
    values = dict(zip(input_keys, arrays))
    for stage, run in zip(stages, compiled):
        try:
            values.update(zip(stage.output_keys, run([values[k] for k in stage.input_keys])))
        except Exception as exc:
            raise ExecutorError(f"stage on device {stage.device!r} failed: "
                                f"{type(exc).__name__}: {exc}") from None


def _consumers(stages: Sequence[Stage]) -> dict[Key, set[str]]:
    readers: dict[Key, set[str]] = {}
    for stage in stages:
        for key in stage.input_keys:
            readers.setdefault(key, set()).add(stage.device)
    return readers


def _summarise(stages, frames, results, events) -> RunResult:
    n = len(frames)
    order = sorted(results)
    done = [results[f][2] for f in order]
    latencies = [(results[f][2] - results[f][1]) * 1000 for f in order]
    warm = min(2, max(n - 2, 0))
    gaps = np.diff(done[warm:]) * 1000 if n - warm >= 2 else np.array([])
    period = float(np.median(gaps)) if gaps.size else (latencies[-1] if latencies else 0.0)
    by_lane: dict[str, list[float]] = {}
    for e in events:
        if e.frame >= warm:
            by_lane.setdefault(e.lane, []).append((e.end - e.start) * 1000)
    stage_names = {s.device for s in stages}
    busy = {lane: statistics.mean(v) for lane, v in by_lane.items() if lane in stage_names}
    link = {lane: statistics.mean(v) for lane, v in by_lane.items() if lane not in stage_names}
    return RunResult(frames=n, outputs=[results[f][0] for f in order if results[f][0]],
                     latencies_ms=latencies, period_ms=period,
                     throughput_fps=1000 / period if period > 0 else float("inf"),
                     busy_ms=busy, link_ms=link, events=sorted(events, key=lambda e: e.start))
