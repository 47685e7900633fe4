"""Run stages as a pipeline of Ray actors: one process per stage, on this machine or a cluster.

``pip install dnnsplit[distributed]``. Each stage becomes an actor holding its Keras sub-model
(shipped to it pickled, weights included), with the resources it asks for: ``threads`` CPUs,
one GPU if its Keras device is a GPU, and optionally a custom resource that pins it to a
machine (start that machine with ``ray start --address HEAD --resources '{"edge": 1}'`` and
pass ``placement={"edge-device": "edge"}``). Without ``address`` a private local Ray instance
is started for the run and shut down after it; with ``address`` (``"auto"``, ``"HOST:PORT"``)
the run joins an existing cluster, where every node must have dnnsplit installed. With
``models_dir`` (a directory every node reads, e.g. a shared filesystem) the sub-models travel
as files instead of through Ray's object store: over a slow link a 100 MB stage would take
minutes to reach its actor (1.4 min at 10 Mbps, 14 at 1 Mbps) before the first frame.

A device whose stages a latency plan visits more than once has one actor holding them all, so
they take turns. Frames flow actor to actor through Ray's object store (a real network transfer
when two stages are on different machines). Links are emulated as in the local backend (unless
links are not emulated): each stage actor holds a frame until the link from the stage before
would have delivered it (:class:`~dnnsplit.executor.pipeline.SerialLink`, on the wall clock: across
machines this assumes their clocks agree, as NTP keeps them); the driver dates the outputs'
return to the first device the same way. No process is spent on links. Each actor runs its
calls in submission order, so frames stay in order; at most ``window`` frames are in flight
(backpressure). A tensor travels on from a stage only while a later reader's device has not
had it (:func:`routes`): one that only a later stage of the same device reads (a U-Net's skip
connection across a visit to the server) waits in that device's actor instead of crossing
the link there and back. Where the link to the first device is not emulated (a real link, or
none) a frame is done when its outputs reach the driver, not when the last stage ends. Every
stage is warmed up on the first frame before timing starts.

Faults: a stage that raises or a worker process that dies stops the run with an error that
names the stage; Ctrl-C stops it too; in every case the actors are killed and a Ray instance
started here is shut down, so no process outlives the run.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import sys
import time
from collections import deque
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from dnnsplit.executor.pipeline import (Event, ExecutorError, Fault, Interrupted, RunResult,
                                        SerialLink, consumers, default_in_flight, device_groups,
                                        keep_sets, producers, progress_bar, return_s, send_s,
                                        stage_error, summarise)
from dnnsplit.executor.stages import Key, Stage

START_TIMEOUT_S = 120.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("the Ray backend needs Ray: pip install 'dnnsplit[distributed]'") \
            from None
    return ray


class StageWorker:
    """Actor body: the compiled sub-models of one device's stages (one per visit of the frame:
    several where a latency plan comes back to the device); ``step`` runs a frame through one
    of them and passes it on. An actor runs its calls one at a time, so a device's stages
    take turns.

    ``upstreams`` (per stage: the stage before it, without its model) with ``readers`` and
    ``links``: the link from it is emulated here, before the frame is run.
    """

    def __init__(self, stages: Sequence[Stage], model_bytes: Sequence[bytes | str],
                 keras_device: str | None, threads: int, routes: Sequence[tuple[set, set]],
                 fault: Fault | None, upstreams: Sequence[Stage | None] = (),
                 readers=None, links=None):
        self.events: list[tuple] = []
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from dnnsplit.executor.local import compile_stage
        # before the backend runs anything
        from dnnsplit.executor.run import configure_worker_threads
        from dnnsplit.predictor.keras_env import import_keras

        import_keras()
        configure_worker_threads(1, threads)
        self.stages, self.routes, self.fault = list(stages), list(routes), fault
        self.stash: dict[Any, dict] = {}  # frame -> tensors a later stage here will read
        self.upstreams = list(upstreams) or [None] * len(self.stages)
        self.readers, self.links = readers, links
        self.link_in = [SerialLink(clock=time.time) for _ in self.stages]
        self.runs = [compile_stage(replace(stage, model=pickle.loads(_read(data))), keras_device)
                     for stage, data in zip(self.stages, model_bytes)]

    def recorded(self) -> list[tuple]:
        """The timed events of these stages (and of the links into them)."""
        return self.events

    def ping(self) -> str:
        """Alive? Answers with the Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def whereabouts(self) -> tuple[str, int]:
        """The host this actor runs on and its process id (to throttle it from there)."""
        import socket

        return socket.gethostname(), os.getpid()

    def _run(self, which: int, values):
        stage = self.stages[which]
        values = dict(values)
        values.update(zip(stage.output_keys,
                          self.runs[which]([values[k] for k in stage.input_keys])))
        return values

    def _pass_on(self, frame, which: int, values: dict) -> dict:
        """Keep what later stages here read; return what travels to the next stage."""
        travel, stay = self.routes[which]
        if stay:
            self.stash.setdefault(frame, {}).update({k: values[k] for k in stay})
        if which == len(self.stages) - 1:
            self.stash.pop(frame, None)  # this actor's last stage of the frame
        return {k: v for k, v in values.items() if k in travel}

    def warm(self, values: dict, which: int = 0) -> dict:
        values = {**self.stash.get("warm", {}), **values}
        try:
            values = self._run(which, values)
        except Exception as exc:
            raise stage_error(self.stages[which].name, exc) from None
        return self._pass_on("warm", which, values)

    def step(self, frame: int, payload: tuple, which: int = 0) -> tuple:
        values, started, ready = payload
        values = {**self.stash.get(frame, {}), **values}
        stage, upstream = self.stages[which], self.upstreams[which]
        if upstream is not None and self.links:
            seconds = send_s(upstream, values, self.readers, self.links)
            if seconds:
                start, arrival = self.link_in[which].carry(ready, seconds)
                self.events.append((f"{upstream.name}->next", frame, start, arrival))
        start = time.time()
        try:
            if self.fault is not None:
                self.fault.trigger(stage.device, frame)
            values = self._run(which, values)
        except Exception as exc:
            raise stage_error(stage.name, exc) from None
        end = time.time()
        self.events.append((stage.name, frame, start, end))
        return (self._pass_on(frame, which, values), start if started is None else started,
                end)


def _read(data: bytes | str) -> bytes:
    """A pickled sub-model as given, or read from the file it was written to."""
    if isinstance(data, bytes):
        return data
    with open(data, "rb") as f:
        return f.read()


#: A local instance returns objects up to this size inline (through the caller's gRPC), not
#: through the shared-memory object store: frames then cost the raylet nothing. Measured on
#: the 2-core VM (MobileNetV2, two stages): period 12.8 ms -> 9.7-10.4 ms.
INLINE_OBJECT_BYTES = 64 * 2**20


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a private local instance tuned for pipelines.

    Workers get this process's Keras backend. Ray's start-up notices stay off stdout.
    """
    ray = import_ray()
    from dnnsplit.predictor.keras_env import import_keras

    env = {"KERAS_BACKEND": import_keras().backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    local = {} if address else {
        "num_cpus": num_cpus, "_system_config": {"max_direct_call_object_size":
                                                 INLINE_OBJECT_BYTES}}
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env}, **local)


def run_pipeline_ray(*args, **kwargs) -> RunResult:
    """Push frames through stages as Ray actors; same contract as ``run_pipeline``.

    Arguments beyond the local backend's: ``threads`` per stage actor; ``address`` joins a
    running cluster instead of starting one; ``placement`` maps a stage device to a Ray custom
    resource that pins its actor to the nodes offering it. Ray's own notices (a worker died,
    ...) go to stderr during the run, so stdout stays clean for ``--json``.
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _run_pipeline_ray(*args, **kwargs)


def _run_pipeline_ray(stages: Sequence[Stage], frames: Sequence[Sequence[np.ndarray]],
                     input_keys: Sequence[Key], output_keys: Sequence[Key],
                     links: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
                     first_device: str | None = None,
                     devices: Mapping[str, str] | None = None, threads: int = 1,
                     address: str | None = None, placement: Mapping[str, str] | None = None,
                     keep_outputs: int = 3, window: int | None = None,
                     timeout_s: float = 600.0, fault: Fault | None = None,
                     progress: bool = False, models_dir: str | None = None,
                     throttle: Mapping[str, float] | None = None) -> RunResult:
    ray = import_ray()
    devices, placement = devices or {}, placement or {}
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(address, num_cpus=None if address else max(os.cpu_count() or 1,
                                                               len(stages) * threads))
    actors: list = []
    with contextlib.ExitStack() as stack:
        shipped = stack.enter_context(_shipped_models(stages, models_dir))
        quotas = _quotas(stack, throttle or {}, threads)
        try:
            return _run(ray, actors, stages, shipped, frames, input_keys, output_keys, links,
                        first_device, devices, threads, placement, keep_outputs, window,
                        timeout_s, fault, progress, quotas)
        except KeyboardInterrupt:
            raise Interrupted("interrupted (Ctrl-C): the pipeline was stopped") from None
        finally:
            for actor in actors:
                ray.kill(actor[1], no_restart=True)
            if started_here:
                ray.shutdown()


def routes(stages: Sequence[Stage], input_keys: Sequence[Key],
           output_keys: Sequence[Key]) -> list[tuple[set, set]]:
    """Per stage, ``(travel, stay)``: the tensors it passes to the next stage, and those its
    device's actor keeps for a later stage of its own.

    A tensor the stage holds travels on while some later reader is on a device that has not
    held it yet (a model output always travels: the driver reads it); it stays where a later
    stage on the same device reads it. Every reader gets each tensor, and each tensor crosses
    to each device at most once, as the plan counts it.
    """
    keep = keep_sets(stages, output_keys)
    outputs = set(output_keys)
    holders: dict[Key, set[str]] = {}
    stashed: dict[str, set] = {}
    arriving, out = set(input_keys), []
    for i, stage in enumerate(stages):
        present = arriving | set(stage.output_keys) | stashed.get(stage.device, set())
        for key in present:
            holders.setdefault(key, set()).add(stage.device)
        later = stages[i + 1:]
        travel, stay = set(), set()
        for key in keep[i] & present:
            readers = [s.device for s in later if key in s.input_keys]
            if key in outputs or any(d not in holders[key] for d in readers):
                travel.add(key)
            if stage.device in readers:
                stay.add(key)
        stashed.setdefault(stage.device, set()).update(stay)
        out.append((travel, stay))
        arriving = travel
    return out


def _quotas(stack: contextlib.ExitStack, throttle: Mapping[str, float], threads: int) -> dict:
    """A CPU quota group per throttled device, removed when ``stack`` closes."""
    from dnnsplit.collectors.throttle import CpuQuota

    return {device: stack.enter_context(CpuQuota(fraction, name=f"{device}-ray-quota",
                                                 cpus=threads))
            for device, fraction in throttle.items()}


def _confine(ray, actors, quotas: Mapping[str, Any]) -> None:
    """Move each throttled device's actor process into its quota group."""
    import socket

    here = socket.gethostname()
    for device, actor in actors:
        if device not in quotas:
            continue
        host, pid = _get(ray, actors, actor.whereabouts.remote(), 30.0)
        if host != here:
            raise ExecutorError(f"cannot throttle device {device!r}: its Ray worker runs on "
                                f"{host}, not on this machine ({here})")
        quotas[device].add(pid)


@contextlib.contextmanager
def _shipped_models(stages: Sequence[Stage], models_dir: str | None):
    """Each stage's pickled sub-model: the bytes, or (``models_dir``) the path of a file
    holding them, in a private subdirectory removed after the run."""
    if models_dir is None:
        yield [pickle.dumps(stage.model) for stage in stages]
        return
    import shutil
    import tempfile

    os.makedirs(models_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="dnnsplit-stages-", dir=models_dir)
    try:
        paths = []
        for i, stage in enumerate(stages):
            path = os.path.join(folder, f"stage-{i}.pkl")
            with open(path, "wb") as f:
                pickle.dump(stage.model, f)
            paths.append(path)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(ray, actors, stages, shipped, frames, input_keys, output_keys, links, first_device,
         devices, threads, placement, keep_outputs, window, timeout_s, fault, progress,
         quotas) -> RunResult:
    readers = consumers(stages)
    producer = producers(stages, first_device)
    route_of = routes(stages, input_keys, output_keys)
    stage_actor = ray.remote(StageWorker)
    groups = device_groups(stages)  # an actor per device, holding its stages
    lights = [replace(stage, model=None) for stage in stages]  # the models travel once
    for device, indices in groups.items():
        keras_device = devices.get(device)
        options: dict[str, Any] = {"num_cpus": threads, "max_restarts": 0}
        if keras_device and keras_device.lower().startswith("gpu"):
            options["num_gpus"] = 1
            keras_device = "gpu:0"  # Ray makes the GPU it grants the only visible one
        if device in placement:
            options["resources"] = {placement[device]: 0.001}
        actors.append((device, stage_actor.options(**options).remote(
            [lights[i] for i in indices], [shipped[i] for i in indices],
            keras_device, threads, [route_of[i] for i in indices], fault,
            [lights[i - 1] if i else None for i in indices], readers, links)))
    actor_of = dict(actors)
    route = [(actor_of[s.device], groups[s.device].index(i)) for i, s in enumerate(stages)]
    back = SerialLink(clock=time.time)  # the return of outputs to the first device
    real_return = links is None or all(math.isinf(float(link["mbps"]))
                                       for link in links.values())
    started_on = _wait_started(ray, actors, placement)
    nodes = {s.name: started_on[s.device] for s in stages}
    _confine(ray, actors, quotas)
    values = dict(zip(input_keys, frames[0]))
    for actor, which in route:
        values = _get(ray, actors, actor.warm.remote(values, which), timeout_s)

    window = window or default_in_flight(len(stages))
    returns: list[Event] = []
    pending: deque = deque()
    results: dict[int, tuple[list, float, float]] = {}
    deadline = time.monotonic() + timeout_s
    bar = progress_bar(len(frames), progress)
    try:
        next_frame = 0
        while next_frame < len(frames) or pending:
            while next_frame < len(frames) and len(pending) < window:
                ref = (dict(zip(input_keys, frames[next_frame])), None, None)
                for actor, which in route:
                    ref = actor.step.remote(next_frame, ref, which)
                pending.append((next_frame, ref))
                next_frame += 1
            frame, ref = pending.popleft()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExecutorError(f"the pipeline did not finish within {timeout_s:g} s")
            values, started, done = _get(ray, actors, ref, remaining)
            if real_return:  # the outputs crossed a real link (or none) to get here
                done = max(done, time.time())
            outputs = [values[k] for k in output_keys]
            if links and first_device is not None:
                returned = return_s(outputs, output_keys, producer, first_device, links)
                if returned:
                    start, done = back.carry(done, returned, wait=False)
                    returns.append(Event("return", frame, start, done))
            outputs = outputs if frame < keep_outputs else []
            results[frame] = (outputs, started, done)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    events = returns + [Event(*e) for _, a in actors
                        for e in _get(ray, actors, a.recorded.remote(), 60.0)]
    result = summarise(stages, len(frames), results, events)
    result.nodes = nodes
    result.throttled = {device: {"fraction": quota.fraction, "period_ms": quota.period_us / 1000,
                                 **quota.throttled()} for device, quota in quotas.items()}
    return result


def _wait_started(ray, actors, placement) -> dict[str, str]:
    """Wait until every actor is up (-> stage device: Ray node id), or say which could not be
    placed."""
    pings = {actor[1].ping.remote(): actor[0] for actor in actors}
    ready, waiting = ray.wait(list(pings), num_returns=len(pings), timeout=START_TIMEOUT_S)
    nodes = {pings[ref]: _get(ray, actors, ref, 1.0) for ref in ready}
    if waiting:
        names = sorted({pings[r] for r in waiting})
        wanted = {n: placement[n] for n in names if n in placement}
        raise ExecutorError(
            f"the Ray workers for {names} did not start within {START_TIMEOUT_S:g} s: the "
            "cluster has no free node with the CPUs/GPUs they ask for"
            + (f" or with the resources {wanted}" if wanted else ""))
    return nodes


def _get(ray, actors, ref, timeout: float):
    """``ray.get`` that turns Ray's errors into one :class:`ExecutorError` naming the stage."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ExecutorError(f"the pipeline did not finish within {timeout:g} s") from None
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ray.exceptions.RayActorError):  # an upstream worker died
            raise ExecutorError(_who_died(ray, actors)) from None
        if isinstance(cause, ExecutorError):
            raise ExecutorError(str(cause)) from None
        raise ExecutorError(f"a pipeline worker failed: {cause or exc}") from None
    except ray.exceptions.RayActorError:
        raise ExecutorError(_who_died(ray, actors)) from None


def _who_died(ray, actors) -> str:
    dead = []
    for name, actor in actors:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - any failure to answer means it is gone
            dead.append(name)
    if not dead:
        return "a pipeline worker died"
    return (f"the worker process of stage on device {dead[0]!r} died (killed, crashed or "
            "out of memory)")
