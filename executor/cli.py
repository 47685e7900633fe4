"""``executor``: run a split plan as a pipeline of Keras sub-models on devices."""

from __future__ import annotations

from typing import Optional

import typer

from dnnsplit.predictor.cli_support import echo_json, new_app, run_app, user_errors
from dnnsplit.predictor.errors import DnnsplitError

app = new_app("Run a split plan as a pipeline of Keras sub-models on devices.")
#: CPUs' worth of other processes' work above which `executor run` warns that it competed
BUSY_CPUS = 0.2


@app.callback()
def _main() -> None:
    """Run a split plan as a pipeline of Keras sub-models on devices."""


@app.command("devices")
def devices_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The devices the current Keras backend can place stages on (e.g. cpu:0, gpu:0)."""
    from dnnsplit.predictor.keras_env import import_keras

    keras = import_keras()
    devices = [str(d).lower() for d in keras.distribution.list_devices()]
    if as_json:
        echo_json({"backend": keras.backend.backend(), "devices": devices})
        return
    typer.echo(f"backend {keras.backend.backend()}: {', '.join(devices)}")


@app.command("relay")
@user_errors
def relay_command(
    port: int = typer.Option(5301, min=1, max=65535, help="TCP port"),
    host: str = typer.Option("0.0.0.0", help="address to listen on"),
) -> None:
    """Echo frames back to `executor run --relay HOST:PORT` (a real link to measure; Ctrl-C
    stops)."""
    from dnnsplit.executor.relay import serve_relay

    try:
        serve_relay(host, port, lambda: typer.echo(f"relay listening on {host}:{port}",
                                                    err=True))
    except KeyboardInterrupt:
        pass


@app.command("run")
@user_errors
def run_command(
    model: str = typer.Argument(..., metavar="MODEL",
                                help="the model the plan was made for (name or .keras file)"),
    plan: str = typer.Option(..., metavar="PLAN.json",
                             help="plan JSON written by `partition plan --out`"),
    frames: int = typer.Option(50, min=1, help="frames to push through the pipeline per run"),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline",
        help="also run the unsplit model on the plan's best single device, alternated with the "
             "plan in the same window, and report the measured speed-up beside the predicted "
             "one (robust to the machine's speed; absolute times are not)"),
    repeats: int = typer.Option(3, min=1, help="alternated pairs of runs with --baseline"),
    backend: str = typer.Option("local", help="local (threads in this process), processes (a "
                                "process per stage on this machine, shared memory between) "
                                "or ray (a process per stage, across machines; needs "
                                "dnnsplit[distributed])"),
    threads: int = typer.Option(1, min=1, help="intra-op threads per worker"),
    keras_device: list[str] = typer.Option(
        [], "--keras-device", metavar="PLAN_DEVICE=KERAS_DEVICE",
        help="put a device's stage on a Keras device, e.g. server=gpu:0 (repeatable)"),
    address: Optional[str] = typer.Option(
        None, help="ray: join this cluster (auto or HOST:PORT) instead of starting one"),
    ray_node: list[str] = typer.Option(
        [], "--ray-node", metavar="PLAN_DEVICE=RESOURCE",
        help="ray: run that device's stage on a node started with --resources "
             "'{\"RESOURCE\": 1}' (repeatable)"),
    models_dir: Optional[str] = typer.Option(
        None, "--models-dir", metavar="DIR",
        help="ray: ship the stages' sub-models as files in DIR, which every node must read (a "
             "shared filesystem), instead of through Ray's object store (slow over slow links)"),
    no_links: bool = typer.Option(False, "--no-links", help="do not emulate the plan's links"),
    link_latency_only: bool = typer.Option(
        False, "--link-latency-only", help="emulate only the plan's link latency: the "
        "bandwidth is real (stages on two hosts joined by a shaped link, e.g. the testbed of "
        "dnnsplit.executor.testbed, which benchmarks/seeds.py sets up)"),
    relay: Optional[str] = typer.Option(
        None, help="local backend: links are real TCP connections through the `executor "
        "relay` at HOST:PORT (put it behind the network to try), or `local` for one on "
        "loopback, instead of emulated"),
    as_json: bool = typer.Option(False, "--json",
                                 help="print the report as JSON (the progress goes to stderr)"),
    timeline: Optional[str] = typer.Option(None, metavar="FILE.png",
                                           help="PNG Gantt chart of the first frames"),
    in_flight: Optional[int] = typer.Option(
        None, "--in-flight", min=1, help="frames inside the pipeline at once (default: stages "
        "+ 1); more can smooth jittery stages at the cost of every frame's latency"),
    calibrate: Optional[str] = typer.Option(
        None, help="PROFILE the plan was predicted from: time its reference probe around the "
        "run and also give the prediction at this machine's present speed"),
    throttle: list[str] = typer.Option(
        [], "--throttle", metavar="DEVICE=FRACTION",
        help="processes or ray backend: confine a device's stage processes to FRACTION of their "
             "CPU with a CPU quota (cgroups, root; ray: workers on this machine), e.g. "
             "phone=0.25 (repeatable). On processes, a plan device with :xF is throttled to 1/F "
             "anyway (see --no-emulate-factors)"),
    emulate_factors: bool = typer.Option(
        True, "--emulate-factors/--no-emulate-factors",
        help="processes backend: throttle each :xF device (F > 1) to 1/F of its CPU so that "
             "it really is F times slower; without, the report says it was not emulated"),
    fault: Optional[str] = typer.Option(None, hidden=True,
                                        help="DEVICE:FRAME:raise|exit, to test fault handling"),
) -> None:
    """Run MODEL split as PLAN says: the measured speed-up over the unsplit model (timed in the
    same window), then throughput, period, latency and stage times beside the plan's."""
    from dnnsplit.executor.pipeline import Fault
    from dnnsplit.executor.run import configure_worker_threads, execute, execute_with_baseline
    from dnnsplit.partition.plan import Plan
    from dnnsplit.predictor.model_source import load_model

    loaded = Plan.load(plan)
    configure_worker_threads(len(loaded.stages), threads)
    keras_model = load_model(model)
    baseline = baseline and len(loaded.stages) > 1

    def announce(stages) -> None:
        typer.echo(f"running {frames} frames through {len(stages)} stages (backend {backend})"
                   + "".join(f"; {layer} split into {parts} channel parts"
                             for layer, parts in loaded.layer_splits.items())
                   + (f", {repeats} times, each run followed by the unsplit model on one "
                      "device" if baseline else ""), err=True)

    if no_links and link_latency_only:
        raise DnnsplitError("--no-links and --link-latency-only contradict each other")
    emulate = "latency" if link_latency_only else not no_links
    options = dict(frames=frames, backend=backend, emulate_links=emulate, threads=threads,
                   devices=parse_pairs(keras_device, "--keras-device"), address=address,
                   placement=parse_pairs(ray_node, "--ray-node"),
                   fault=Fault.parse(fault) if fault else None, progress=not as_json,
                   calibrate=calibrate, in_flight=in_flight, relay=relay, on_ready=announce,
                   throttle={d: _fraction(f) for d, f in
                             parse_pairs(throttle, "--throttle").items()},
                   emulate_factors=emulate_factors, models_dir=models_dir)
    report = execute_with_baseline(keras_model, loaded, repeats=repeats, **options) \
        if baseline else execute(keras_model, loaded, **options)
    if timeline:
        from dnnsplit.executor.timeline import plot_timeline

        plot_timeline(report.run, timeline)
    if as_json:
        echo_json(report.to_dict())
        return
    print_report(report)


def print_report(report) -> None:
    """Measured beside predicted (and, when calibrated, beside the prediction at speed now)."""
    m, p = report.measured, report.predicted
    now = p.get("calibrated")

    def diff(measured, predicted):
        return f"{(measured / predicted - 1):+.1%}" if predicted else ""

    def row(label, measured, predicted, calibrated=None):
        line = f"{label:22s} {measured:10.2f}"
        if predicted is not None:
            line += f" {predicted:10.2f} {diff(measured, predicted):>8s}"
        if calibrated is not None:
            line += f" {calibrated:10.2f} {diff(measured, calibrated):>8s}"
        typer.echo(line)

    typer.echo(f"{report.frames} frames, backend {report.backend}, outputs match the unsplit "
               f"model: {report.outputs_match}")
    for note in report.notes:
        typer.echo(note)
    if report.speedup:
        s, one = report.speedup, report.single
        typer.echo(f"speed-up ({s['of']}) over the unsplit model on {one['device']}: measured "
                   f"{s['measured']:.2f}x ({s['low']:.2f}-{s['high']:.2f}x over {s['pairs']} "
                   f"alternated pairs of runs), predicted {s['predicted']:.2f}x")
        if (s.get("other_cpus") or 0) >= BUSY_CPUS:
            typer.echo(f"warning: other processes kept {s['other_cpus']:.1f} of this machine's "
                       f"{s['cpus']} CPUs busy around the runs; the plan gives each device its "
                       "CPU to itself, so the measured speed-up and times are lower than on an "
                       "idle machine")
    typer.echo(f"{'':22s} {'measured':>10s} {'predicted':>10s} {'diff':>8s}"
               + (f" {'speed now':>10s} {'diff':>8s}" if now else ""))
    row("throughput fps", m["throughput_fps"], p["throughput_fps"] or None,  # 0: no pipeline
        now and now["throughput_fps"] or None)
    row("period ms (1)", m["period_ms"], p["period_ms"], now and now["period_ms"])
    row("latency p50 ms", m["latency_p50_ms"], p["latency_ms"], now and now["latency_ms"])
    row("latency p95 ms", m["latency_p95_ms"], None)
    for stage in report.stages:
        row("stage " + stage.get("stage", stage["device"]) + " ms (2)", stage["busy_ms"],
            stage["predicted_ms"], stage.get("calibrated_ms"))
    names = [stage.get("stage", stage["device"]) for stage in report.stages]
    order = [stage["device"] for stage in report.stages]
    revisits = len(set(order)) < len(order)
    for i, sender in enumerate(order[:-1]):
        measured = m.get("link_ms", {}).get(f"{names[i]}->next")
        if measured is not None:  # what the plan sends from it to the stages after it
            # (a plan that comes back to a device: the plan's links are per device pair,
            # not per visit, so only the measured time is shown)
            predicted = None if revisits else sum(
                link["predicted_ms"] for link in report.links
                if link["link"].split("->") in ([sender, d] for d in order[i + 1:]))
            row(f"link {names[i]}->{names[i + 1]}" + ("+" if i + 2 < len(order) else ""),
                measured, predicted)
    if revisits:
        typer.echo("this plan comes back to a device (a latency plan): the plan predicts its "
                   "latency; its period is only a lower bound (a device's visits take turns)")
    if report.in_flight > 1:
        typer.echo(f"latency: predicted for one frame through an empty pipeline; up to "
                   f"{report.in_flight} frames were in flight, so frames also waited for each "
                   "other (--in-flight 1 measures one frame at a time)")
    typer.echo("(1) the median gap between frames leaving the pipeline; (2) the stage's mean "
               "busy time per frame: a mean, so a few slow frames can lift it above the "
               "(median) period")
    if now:
        typer.echo(f"speed now: reference probe {now['probe_ms']:.2f} ms vs the profile's "
                   f"{now['profile_probe_ms']:.2f} ms (x{now['speed_factor']:.3f})")


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DnnsplitError(f"--throttle: {text!r} is not a fraction such as 0.25") from None


def parse_pairs(items: list[str], option: str) -> dict[str, str]:
    """['a=b', ...] -> {'a': 'b'}; one clear error for anything else."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise DnnsplitError(f"{option} {item!r} must look like NAME=VALUE")
        pairs[name] = value
    return pairs


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
