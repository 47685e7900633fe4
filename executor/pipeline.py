"""What every executor backend shares: the run result, the link cost, the summary of a run.

A backend pushes frames through stages and reports, per frame, when its first stage started
and when its outputs were back on the first device, plus timed :class:`Event` s per lane
(a stage's device, a link, the return trip). :func:`summarise` turns those into the measured
period, throughput, latencies and mean busy time per lane, the same way for every backend.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from dnnsplit.executor.stages import Key, Stage
from dnnsplit.predictor.errors import DnnsplitError


class ExecutorError(DnnsplitError):
    """The pipeline failed (a stage raised, a worker died, or the run was interrupted)."""


class Interrupted(ExecutorError):
    """The user pressed Ctrl-C; everything the run started has been stopped."""

    exit_code = 130


@dataclass
class Event:
    lane: str
    frame: int
    start: float
    end: float


def default_in_flight(stages: int) -> int:
    """Frames inside a pipeline at once when not told: one per stage, plus one (see
    :func:`dnnsplit.executor.local.run_pipeline`; the Ray backend's window is the same)."""
    return stages + 1


@dataclass
class RunResult:
    frames: int
    outputs: list[list[np.ndarray]]  # the first frames' outputs, in model output order
    latencies_ms: list[float]
    period_ms: float
    throughput_fps: float
    busy_ms: dict[str, float]  # mean per frame, per stage (by name: device, device#2, ...)
    link_ms: dict[str, float]  # mean per frame, per link lane
    events: list[Event] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)  # stage device -> Ray node id (ray)
    cpus: dict[str, list[int]] = field(default_factory=dict)  # -> CPUs it ran on (processes)
    #: stage -> the Keras backend its process ran (processes)
    backends: dict[str, str] = field(default_factory=dict)
    #: device -> its CPU quota and how often the kernel held it back (processes, throttled)
    throttled: dict[str, dict] = field(default_factory=dict)
    #: stage name -> its device (they differ for a device's second visit, ``phone#2``)
    stage_devices: dict[str, str] = field(default_factory=dict)


def transfer_s(nbytes: int, link: Mapping[str, float]) -> float:
    """Seconds a link ``{"latency_ms", "mbps"}`` takes to carry ``nbytes``."""
    return (link["latency_ms"] + nbytes * 8 / (link["mbps"] * 1000)) / 1000


class SerialLink:
    """A link that carries one transfer at a time, emulated by arithmetic.

    A transfer of ``seconds`` that is ready at ``ready`` (when its sender finished, on
    ``clock``) starts when the link is free and arrives ``seconds`` later. Computing this from
    the sender's finish time, instead of sleeping ``seconds`` whenever the receiver gets round
    to it, keeps the emulation exact under scheduling delays: a late wake-up is not added to
    every later frame, and a transfer overlaps the receiver's work on earlier frames.

    >>> link = SerialLink(clock=lambda: 0.0)
    >>> link.carry(1.0, 0.5, wait=False), link.carry(1.2, 0.5, wait=False)
    ((1.0, 1.5), (1.5, 2.0))
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.free = float("-inf")

    def carry(self, ready: float, seconds: float, wait: bool = True) -> tuple[float, float]:
        """``(start, arrival)`` of the next transfer; with ``wait``, sleep until its arrival."""
        start = max(ready, self.free)
        self.free = arrival = start + seconds
        remaining = arrival - self.clock()
        if wait and remaining > 0:
            time.sleep(remaining)
        return start, arrival


def consumers(stages: Sequence[Stage]) -> dict[Key, set[str]]:
    """Tensor key -> the devices of the stages that read it."""
    readers: dict[Key, set[str]] = {}
    for stage in stages:
        for key in stage.input_keys:
            readers.setdefault(key, set()).add(stage.device)
    return readers


def producers(stages: Sequence[Stage], first_device: str | None = None) -> dict[Key, str]:
    """Tensor key -> the device of the stage that makes it; with ``first_device``, a tensor a
    stage on the first device reads counts as the first device's (it was sent there already,
    so as a model output it does not come back again)."""
    made = {key: stage.device for stage in stages for key in stage.output_keys}
    if first_device is not None:
        made.update({key: first_device for stage in stages if stage.device == first_device
                     for key in stage.input_keys if key in made})
    return made


def keep_sets(stages: Sequence[Stage], output_keys: Sequence[Key]) -> list[set]:
    """Per stage: the keys still needed after it (by later stages or as model outputs)."""
    keep, later = [], set(output_keys)
    for stage in reversed(stages):
        keep.append(set(later))
        later |= set(stage.input_keys)
    return keep[::-1]


def tensor_layouts(stages: Sequence[Stage], arrays: Sequence[np.ndarray],
                   input_keys: Sequence[Key]) -> dict[Key, tuple[tuple, str]]:
    """(shape, dtype) of every tensor a frame carries, from a frame's inputs and the stage
    sub-models' symbolic outputs (fixed: the task graph refuses models with open shapes)."""
    shapes = {k: (tuple(np.asarray(a).shape), str(np.asarray(a).dtype))
              for k, a in zip(input_keys, arrays)}
    batch = np.asarray(arrays[0]).shape[0] if len(arrays) else 1
    for stage in stages:
        for key, tensor in zip(stage.output_keys, stage.model.outputs):
            shapes[key] = ((batch,) + tuple(tensor.shape[1:]), str(np.dtype(tensor.dtype)))
    return shapes


def send_s(stage: Stage, values: Mapping[Key, np.ndarray], readers: Mapping[Key, set[str]],
           links: Mapping[tuple[str, str], Mapping[str, float]]) -> float:
    """Seconds to send what ``stage`` produced to every other device that reads it (once each)."""
    seconds = 0.0
    for key in stage.output_keys:
        others = [dest for dest in readers.get(key, ()) if dest != stage.device]
        if others:  # (a tensor no other device reads need not be in ``values``)
            nbytes = int(np.asarray(values[key]).nbytes)
            for dest in others:
                seconds += transfer_s(nbytes, links[(stage.device, dest)])
    return seconds


def return_s(outputs: Sequence[np.ndarray], output_keys: Sequence[Key],
             producer: Mapping[Key, str], first_device: str,
             links: Mapping[tuple[str, str], Mapping[str, float]]) -> float:
    """Seconds to bring the model's outputs produced off ``first_device`` back to it."""
    seconds = 0.0
    for key, value in zip(output_keys, outputs):
        source = producer.get(key, first_device)
        if source != first_device:
            seconds += transfer_s(int(np.asarray(value).nbytes), links[(source, first_device)])
    return seconds


def summarise(stages: Sequence[Stage], n: int,
              results: Mapping[int, tuple[list, float, float]],
              events: Sequence[Event]) -> RunResult:
    """``results[frame] = (outputs or [], started, done)``, times in seconds on one clock."""
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
    stage_names = {s.name for s in stages}
    busy = {lane: statistics.mean(v) for lane, v in by_lane.items() if lane in stage_names}
    link = {lane: statistics.mean(v) for lane, v in by_lane.items() if lane not in stage_names}
    return RunResult(frames=n, outputs=[results[f][0] for f in order if results[f][0]],
                     latencies_ms=latencies, period_ms=period,
                     throughput_fps=1000 / period if period > 0 else float("inf"),
                     busy_ms=busy, link_ms=link, events=sorted(events, key=lambda e: e.start),
                     stage_devices={s.name: s.device for s in stages})


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over frames on stderr, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="pipeline", leave=False)


def stage_error(stage_name: str, exc: BaseException) -> ExecutorError:
    return ExecutorError(f"stage on device {stage_name!r} failed: {type(exc).__name__}: {exc}")


def device_groups(stages: Sequence[Stage]) -> dict[str, list[int]]:
    """Device -> the indices of its stages (several where a latency plan comes back to it)."""
    groups: dict[str, list[int]] = {}
    for i, stage in enumerate(stages):
        groups.setdefault(stage.device, []).append(i)
    return groups


@dataclass(frozen=True)
class Fault:
    """Make the stage on ``device`` fail at ``frame``: ``raise`` an error or ``exit`` its worker.

    For testing the fault handling end to end (``executor run --fault w2:5:exit``).
    ``exit`` ends the worker process abruptly, as a crash or the OOM killer would; it is only
    meaningful for backends with one process per stage (processes, Ray).
    """

    device: str
    frame: int
    kind: str = "raise"

    KINDS = ("raise", "exit")

    @classmethod
    def parse(cls, text: str) -> "Fault":
        parts = text.split(":")
        if len(parts) != 3 or parts[2] not in cls.KINDS or not parts[1].isdigit():
            raise DnnsplitError(f"fault {text!r} must look like DEVICE:FRAME:raise|exit")
        return cls(parts[0], int(parts[1]), parts[2])

    def trigger(self, device: str, frame: int) -> None:
        if device != self.device or frame != self.frame:
            return
        if self.kind == "exit":
            import os

            os._exit(17)
        raise RuntimeError(f"injected fault at frame {frame}")
