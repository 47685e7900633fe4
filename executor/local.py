"""Run stages as a pipeline in one process: a worker thread per stage, emulated links between.

Each stage runs on its own thread under its Keras device scope, compiled once
(``tf.function`` / ``jax.jit``), and hands NumPy arrays on through bounded queues, so frames
stay in order and a slow stage holds the ones before it back (backpressure). Between
consecutive stages a link thread holds each frame until the plan's links would have carried the
tensors the earlier stage produced for later stages (``latency + bytes*8/mbps`` per
destination device, one transfer at a time from when the stage finished:
:class:`~dnnsplit.executor.pipeline.SerialLink`); outputs produced off the first device are sent
back over their link (the frame is done when they would arrive). With ``relay``, links are real
TCP connections instead (:mod:`dnnsplit.executor.relay`): the tensors a stage produced for later
stages cross, once, the connection to the next stage, the outputs made off the first device cross
one back to it, and each arrives when the relay has echoed it back.

Every stage is traced and run once on the first frame before timing starts (so compilation is
not counted). A device with several stages (a latency plan that comes back to it) runs them
one at a time (a lock per device). A stage that raises stops the whole run within a second,
with an error naming the stage; so does Ctrl-C. No thread outlives :func:`run_pipeline`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from dnnsplit.executor.pipeline import (Event, ExecutorError, Fault, Interrupted, RunResult,
                                        SerialLink, consumers, default_in_flight, device_groups,
                                        producers, progress_bar, return_s, send_s, stage_error,
                                        summarise, tensor_layouts)
from dnnsplit.executor.stages import Key, Stage
from dnnsplit.predictor.keras_env import compiled_model

if TYPE_CHECKING:
    from dnnsplit.executor.relay import SocketLink

__all__ = ["ExecutorError", "RunResult", "compile_stage", "run_pipeline"]

POLL_S = 0.1
_DONE = object()


def compile_stage(stage: Stage, device: str | None) -> Callable[[list[np.ndarray]], list]:
    """``run(arrays) -> arrays``: the stage's model compiled once, outputs as NumPy (a stage
    of model inputs alone hands them on without a call, as the plan counts it)."""
    if stage.forwards_only:
        positions = [stage.input_keys.index(key) for key in stage.output_keys]
        return lambda arrays: [np.asarray(arrays[i]) for i in positions]
    call = compiled_model(stage.model, device)

    def run(arrays):
        out = call(list(arrays))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    return run


class _Stop(Exception):
    pass


def run_pipeline(stages: Sequence[Stage], frames: Sequence[Sequence[np.ndarray]],
                 input_keys: Sequence[Key], output_keys: Sequence[Key],
                 links: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
                 first_device: str | None = None,
                 devices: Mapping[str, str] | None = None, queue_size: int = 2,
                 keep_outputs: int = 3, timeout_s: float = 600.0, fault: Fault | None = None,
                 progress: bool = False, in_flight: int | None = None,
                 relay: tuple[str, int] | None = None) -> RunResult:
    """Push ``frames`` through ``stages`` pipelined; see the module docstring.

    ``links`` maps (from device, to device) to ``{"latency_ms", "mbps"}`` (None: no emulation);
    ``devices`` maps a stage device name to a Keras device (e.g. ``"cpu:0"``).
    ``in_flight`` caps the frames inside the pipeline (default: one per stage, plus one):
    enough to keep every stage busy, few enough that a frame does not queue behind many
    others (queued frames add to every frame's latency, not to the throughput). Measured on
    ResNet50 in two stages: p50 latency 259 ms without a cap (queues of 2), 135-140 ms
    with the default, same period within the machine's noise.
    ``relay``: the address of an echo relay; links between stages are then real sockets
    through it (and ``links`` is not emulated on top).
    """
    devices = devices or {}
    stop = threading.Event()
    errors: list[BaseException] = []
    events: list[Event] = []
    events_lock = threading.Lock()
    compiled = [compile_stage(s, devices.get(s.device)) for s in stages]
    device_lock = {d: threading.Lock() for d in device_groups(stages)}
    _warm_up(stages, compiled, frames[0], input_keys)
    readers = consumers(stages)
    producer = producers(stages, first_device)
    sockets = _socket_links(stages, readers, producer,
                            tensor_layouts(stages, frames[0], input_keys), relay, output_keys,
                            first_device) if relay else {}
    if sockets:
        links = None

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
                if not stop.is_set():
                    errors.append(exc if isinstance(exc, ExecutorError)
                                  else stage_error(name, exc))
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
        def process(frame, values, started, ready):
            with device_lock[stage.device]:
                start = time.perf_counter()
                if fault is not None:
                    fault.trigger(stage.device, frame)
                outputs = compiled[i]([values[k] for k in stage.input_keys])
                end = time.perf_counter()
            values = dict(values)
            values.update(zip(stage.output_keys, outputs))
            record(stage.name, frame, start, end)
            return frame, values, start if started is None else started, end
        return process

    def link_step(stage):
        link = SerialLink()

        def process(frame, values, started, ready):
            seconds = send_s(stage, values, readers, links)
            if seconds:
                start, ready = link.carry(ready, seconds)
                record(f"{stage.name}->next", frame, start, ready)
            return frame, values, started, ready
        return process

    def socket_send(link):
        def process(frame, values, started, ready):
            start = time.perf_counter()
            link.send(values)
            crossing = {key for key, _, _ in link.layout}
            return frame, {k: v for k, v in values.items() if k not in crossing}, started, start
        return process

    def socket_receive(event_lane, link):
        def process(frame, values, started, start):
            try:
                values = {**values, **link.receive(lambda: not stop.is_set())}
            except StopIteration:
                raise _Stop from None
            ready = time.perf_counter()
            record(event_lane, frame, start, ready)
            return frame, values, started, ready
        return process

    for i, stage in enumerate(stages):
        q_stage_out = queue.Queue(maxsize=queue_size)
        lanes.append((stage.name, lane(queues[-1], q_stage_out, stage_step(i, stage))))
        queues.append(q_stage_out)
        if i in sockets:
            q_sent, q_received = queue.Queue(maxsize=queue_size), queue.Queue(maxsize=queue_size)
            lanes.append((f"{stage.name}->", lane(queues[-1], q_sent, socket_send(sockets[i]))))
            lanes.append((f"{stage.name}<-",
                          lane(q_sent, q_received, socket_receive(
                              "return" if i == len(stages) - 1 else f"{stage.name}->next",
                              sockets[i]))))
            queues += [q_sent, q_received]
        elif i < len(stages) - 1 and links:
            q_link_out = queue.Queue(maxsize=queue_size)
            lanes.append((f"{stage.name}->", lane(queues[-1], q_link_out, link_step(stage))))
            queues.append(q_link_out)
    q_final = queues[-1]
    slots = threading.Semaphore(in_flight or default_in_flight(len(stages)))
    threads = [guarded(name, body) for name, body in lanes]
    for thread in threads:
        thread.start()

    results: dict[int, tuple[list, float, float]] = {}
    back = SerialLink()  # the return of outputs to the first device
    feeder_error = None
    deadline = time.monotonic() + timeout_s
    bar = progress_bar(len(frames), progress)
    try:
        def feed():
            for index, arrays in enumerate(frames):
                while not slots.acquire(timeout=POLL_S):
                    if stop.is_set():
                        raise _Stop
                put(queues[0], (index, dict(zip(input_keys, arrays)), None, None))
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
            frame, values, started, ready = item
            outputs = [values[k] for k in output_keys]
            done = time.perf_counter()
            if links and first_device is not None:
                returned = return_s(outputs, output_keys, producer, first_device, links)
                if returned:
                    start, arrival = back.carry(ready, returned, wait=False)
                    record("return", frame, start, arrival)
                    done = max(done, arrival)
            results[frame] = (outputs if frame < keep_outputs else [], started, done)
            slots.release()
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        feeder_error = Interrupted("interrupted (Ctrl-C): the pipeline was stopped")
    finally:
        if bar is not None:
            bar.close()
        stop.set()
        for link in sockets.values():
            link.close()
        for thread in threads:
            thread.join(timeout=5)
    if errors:
        raise errors[0]
    if feeder_error is not None:
        raise feeder_error
    if sorted(results) != list(range(len(frames))):
        raise ExecutorError(f"only {len(results)} of {len(frames)} frames came out")
    return summarise(stages, len(frames), results, events)


def _warm_up(stages, compiled, arrays, input_keys) -> None:
    """Trace/compile every stage once (one frame, sequentially) so timings are steady-state."""
    values = dict(zip(input_keys, arrays))
    for stage, run in zip(stages, compiled):
        try:
            values.update(zip(stage.output_keys, run([values[k] for k in stage.input_keys])))
        except Exception as exc:
            raise stage_error(stage.name, exc) from None


def _socket_links(stages, readers, producer, shapes, relay, output_keys,
                  first_device) -> dict[int, SocketLink]:
    """Stage index -> a socket link to the next stage carrying what later stages read of it;
    after the last stage, the link that returns the outputs made off ``first_device``."""
    from dnnsplit.executor.relay import SocketLink

    links: dict[int, SocketLink] = {}
    back = [(key, *shapes[key]) for key in dict.fromkeys(output_keys)
            if producer.get(key, first_device) != first_device]
    try:
        for i, stage in enumerate(stages[:-1]):
            later = {s.device for s in stages[i + 1:]} - {stage.device}  # a device's own
            layout = [(key, *shapes[key]) for key in stage.output_keys  # stay with it
                      if readers.get(key, set()) & later]
            links[i] = SocketLink(relay, layout, f"{stage.name}->{stages[i + 1].name}")
        if back and first_device is not None:
            links[len(stages) - 1] = SocketLink(relay, back, f"return to {first_device}")
    except BaseException:
        for link in links.values():
            link.close()
        raise
    return links
