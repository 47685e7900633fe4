"""``collectors``: microbenchmarks, link profiles and whole-model ground truth."""

from __future__ import annotations

from typing import Optional

import typer

from dnnsplit.predictor.cli_support import echo_json, new_app, run_app, user_errors

app = new_app("Measure layers, fused kernels, links and whole models on this machine.")


@app.callback()
def _main() -> None:
    """Measure layers, fused kernels, links and whole models on this machine."""


@app.command("columns")
def columns_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The columns of a measurement record (the CSV contract shared with the predictor)."""
    from dnnsplit.predictor.features import RECORD_COLUMNS

    if as_json:
        echo_json(RECORD_COLUMNS)
        return
    for name, meaning in RECORD_COLUMNS.items():
        typer.echo(f"{name:16s} {meaning}")


def _floats(text: str, what: str) -> list[float]:
    from dnnsplit.predictor.errors import DnnsplitError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DnnsplitError(f"{what} {text!r} is not a comma-separated list of numbers")
    if not values or any(not 0 <= v <= 1 for v in values):
        raise DnnsplitError(f"{what} {text!r}: give fractions within 0..1, e.g. 0,0.5")
    return values


@app.command("collect")
@user_errors
def collect_command(
    out: Optional[str] = typer.Option(None, help="output folder (default datasets/<profile>)"),
    types: Optional[str] = typer.Option(None, help="layer types, comma-separated (default all)"),
    load: str = typer.Option("0", "--load", help="background load levels, e.g. 0,0.5"),
    threads: int = typer.Option(1, min=1, help="intra-op threads of the backend"),
    budget_minutes: Optional[float] = typer.Option(None, help="stop after this many minutes"),
    grid_dir: Optional[str] = typer.Option(None, help="folder of grid files (default shipped)"),
    random_scale: float = typer.Option(1.0, min=0.0, help="scale the random samples per grid"),
    no_models: bool = typer.Option(False, "--no-models",
                                   help="skip the kernels of the training models"),
    device: Optional[str] = typer.Option(None, help="Keras device, e.g. gpu:0 (default cpu)"),
    profile: Optional[str] = typer.Option(None, help="profile name (default <dev>-<n>t-<backend>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    as_json: bool = typer.Option(False, "--json", help="end with a JSON summary instead of a "
                                 "sentence"),
    adaptive: bool = typer.Option(
        False, "--adaptive", help="after the grid: rounds that measure where each type's model "
        "is least sure, across its whole realistic space (needs --budget-minutes or --rounds; "
        "resumable, logged in OUT/adaptive.json)"),
    rounds: Optional[int] = typer.Option(None, min=1, help="--adaptive: stop after this many "
                                         "rounds"),
    round_size: int = typer.Option(64, min=1, help="--adaptive: configurations per round"),
    quick: bool = typer.Option(
        False, "--quick", help="a new device: measure the kernels --base measured, those that "
        "teach a transfer from it the most first (the layer types that carry the time, spread "
        "over sizes), until --budget-minutes; then `predictor train --data OUT --base BASE`"),
    base: str = typer.Option("cpu-1t-tensorflow", help="--quick: the profile to transfer from"),
    throttle: Optional[float] = typer.Option(
        None, metavar="FRACTION", help="measure a slower device: this process confined to "
        "FRACTION of its CPUs by a CPU quota (cgroups, root), e.g. 0.25; load 0 only"),
) -> None:
    """Microbenchmark kernels (layers and fused chains) from the grids; resumable: run the same
    command again to continue. --budget-minutes counts from the first measurement."""
    from dnnsplit.collectors.collect import (CollectSettings, default_profile, summary_json,
                                             summary_sentence)

    def say(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    from dnnsplit.predictor.errors import DnnsplitError

    loads = tuple(_floats(load, "--load"))
    _check_throttle(throttle, loads)
    if quick and adaptive:
        raise DnnsplitError("--quick and --adaptive do not go together: --quick measures what "
                            "a base profile measured, --adaptive extends a profile's own grid")
    if quick:
        from dnnsplit.predictor.bundle import profile_dir

        profile_dir(base)  # an unknown base fails before Keras starts
    say("starting Keras and its backend")
    from dnnsplit.collectors.collect import collect
    from dnnsplit.collectors.timing import configure_threads

    configure_threads(threads)
    name = profile or default_profile(threads, device)
    settings = CollectSettings(
        out_dir=out or f"datasets/{name}", types=types.split(",") if types else None,
        loads=loads, threads=threads, budget_minutes=budget_minutes,
        grid_dir=grid_dir, models=[] if no_models else None, random_scale=random_scale,
        profile=name, device=device, quick_base=base if quick else None)
    with _throttled(throttle, loads, threads):
        if adaptive:
            from dnnsplit.collectors.adaptive import collect_adaptive

            report = collect_adaptive(settings, rounds=rounds, per_round=round_size,
                                      progress=not quiet, say=say)
        else:
            report = collect(settings, progress=not quiet, say=say)
    typer.echo(summary_json(report) if as_json else summary_sentence(report, settings.out_dir))


@app.command("models")
@user_errors
def models_command(
    names: Optional[list[str]] = typer.Argument(
        None, help="models (default: the training and evaluation models)"),
    out: Optional[str] = typer.Option(None, help="CSV (default datasets/<profile>/models.csv)"),
    load: str = typer.Option("0", "--load", help="background load levels, e.g. 0,0.5"),
    threads: int = typer.Option(1, min=1, help="intra-op threads"),
    device: Optional[str] = typer.Option(None, help="Keras device, e.g. gpu:0"),
    profile: Optional[str] = typer.Option(None, help="profile name"),
    rounds: int = typer.Option(3, min=1, help="separate passes over all the models in this "
                               "window"),
    new_window: bool = typer.Option(False, "--new-window", help="measure everything again in a "
                                    "new window (e.g. another day) instead of resuming the "
                                    "latest; rows combine all windows"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    throttle: Optional[float] = typer.Option(
        None, metavar="FRACTION", help="a slower device: confined to FRACTION of its CPUs "
        "(as for collect)"),
) -> None:
    """Whole-model latency (ground truth) by the same protocol. Every measurement is kept in
    <out>-rounds.csv; each row of <out> is the median over windows of the median over a
    window's --rounds passes (time / probe). Resumable: run it again to continue."""
    import json

    from dnnsplit.collectors.collect import default_profile
    from dnnsplit.collectors.ground_truth import default_models, measure_models
    from dnnsplit.collectors.timing import configure_threads

    loads = _floats(load, "--load")
    _check_throttle(throttle, loads)  # before the backend starts
    configure_threads(threads)
    name = profile or default_profile(threads, device)
    with _throttled(throttle, loads, threads):
        report = measure_models(names or default_models(),
                                out or f"datasets/{name}/models.csv", threads=threads,
                                loads=loads, profile=name, device=device, rounds=rounds,
                                new_window=new_window, progress=not quiet)
    typer.echo(json.dumps({"measured": report.measured, "already_done": report.already_done,
                           "seconds": round(report.seconds, 1)}))


@app.command("corun")
@user_errors
def corun_command(
    names: Optional[list[str]] = typer.Argument(
        None, help="models (default: training models the pipeline benchmark does not use)"),
    out: Optional[str] = typer.Option(
        None, help="JSON (default datasets/<profile>/corun.json or corun-processes.json)"),
    workers: int = typer.Option(2, min=2, help="workers running at once on this machine"),
    threads: int = typer.Option(1, min=1, help="intra-op threads per worker"),
    repeats: int = typer.Option(3, min=1, help="alone/together alternations per model"),
    device: Optional[str] = typer.Option(None, help="Keras device, e.g. cpu:0"),
    profile: Optional[str] = typer.Option(None, help="profile name"),
    processes: bool = typer.Option(
        False, "--processes", help="workers are pinned processes (executor --backend processes)"
        " instead of threads of one process (--backend local)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Co-run slowdown of whole models while WORKERS threads (or processes) run at once."""
    import sys

    from dnnsplit.collectors.collect import default_profile
    from dnnsplit.collectors.corun import DEFAULT_MODELS, measure_corun
    from dnnsplit.predictor.files import write_json_atomic

    result = measure_corun(names or DEFAULT_MODELS, threads=threads, workers=workers,
                           repeats=repeats, device=device, progress=not quiet,
                           processes=processes)
    result["command"] = "collectors " + " ".join(sys.argv[1:])
    name = "corun-processes.json" if processes else "corun.json"
    path = out or f"datasets/{profile or default_profile(threads, device)}/{name}"
    write_json_atomic(path, result)
    for name, row in result["models"].items():
        typer.echo(f"{name:20s} alone {row['alone_ms']:9.2f} ms  together "
                   f"{row['together_ms']:9.2f} ms  x{row['factor']:.3f}")
    typer.echo(f"co-run factor (median) x{result['factor']:.3f} -> {path}")


@app.command("streaming")
@user_errors
def streaming_command(
    names: Optional[list[str]] = typer.Argument(
        None, help="models (default: training models the pipeline benchmark does not use)"),
    out: Optional[str] = typer.Option(
        None, help="JSON (default datasets/<profile>/weight-streaming.json)"),
    threads: int = typer.Option(1, min=1, help="intra-op threads"),
    profile: Optional[str] = typer.Option(None, help="profile name"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Extra time of large-weight kernels in a model over alone (weights not in cache)."""
    import sys

    from dnnsplit.collectors.collect import default_profile
    from dnnsplit.collectors.corun import DEFAULT_MODELS
    from dnnsplit.collectors.streaming import measure_weight_streaming
    from dnnsplit.predictor.files import write_json_atomic

    result = measure_weight_streaming(names or DEFAULT_MODELS, threads=threads,
                                      progress=not quiet)
    result["command"] = "collectors " + " ".join(sys.argv[1:])
    path = out or f"datasets/{profile or default_profile(threads, None)}/weight-streaming.json"
    write_json_atomic(path, result)
    typer.echo(f"{len(result['kernels'])} kernels: {result['per_mib']} probe units per MiB "
               f"above {result['threshold_mib']} MiB (cache {result['cache_mib']} MiB) -> {path}")


@app.command("link-server")
@user_errors
def link_server_command(
    port: int = typer.Option(5201, help="TCP port"),
    host: str = typer.Option("0.0.0.0", help="address to listen on"),
) -> None:
    """Answer `collectors link` measurements from a peer (Ctrl-C stops)."""
    from dnnsplit.collectors.link import LinkServer

    with LinkServer((host, port)) as server:
        typer.echo(f"link server listening on {host}:{port}", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            typer.echo("stopped", err=True)


@app.command("link")
@user_errors
def link_command(
    out: str = typer.Option(..., help="profile JSON to write"),
    peer: Optional[str] = typer.Option(None, help="HOST:PORT of a running link-server"),
    mbps: Optional[float] = typer.Option(None, help="synthetic profile: bandwidth"),
    rtt_ms: float = typer.Option(0.0, "--rtt-ms", help="synthetic profile: round-trip time"),
    repeats: int = typer.Option(3, min=1, help="transfers per size and direction"),
    max_mb: float = typer.Option(32.0, help="largest payload in MB"),
) -> None:
    """Measure a link to a peer (or write a synthetic one) as a link profile JSON."""
    from dnnsplit.collectors.link import (DEFAULT_SIZES, LinkError, measure_link, parse_peer,
                                          synthetic_link)
    from dnnsplit.predictor.files import write_json_atomic

    if (peer is None) == (mbps is None):
        raise LinkError("give either --peer HOST:PORT (measure) or --mbps (synthetic)")
    if peer is not None:
        sizes = [s for s in DEFAULT_SIZES if s <= max_mb * 2**20]
        profile = measure_link(parse_peer(peer), sizes, repeats)
    else:
        profile = synthetic_link(mbps, rtt_ms)
    write_json_atomic(out, profile)
    for direction in ("up", "down"):
        d = profile[direction]
        typer.echo(f"{direction:5s} latency {d['latency_ms']:.3f} ms, {d['mbps']:.1f} Mbps")
    typer.echo(f"written to {out}")


@app.command("calibrate")
@user_errors
def calibrate_command(
    threads: int = typer.Option(1, min=1, help="intra-op threads (as the profile)"),
    data: Optional[str] = typer.Option(None, help="a profile folder to compare with"),
    as_json: bool = typer.Option(False, "--json"),
    throttle: Optional[float] = typer.Option(
        None, metavar="FRACTION", help="time it confined to FRACTION of the CPUs (a slower "
        "device, as for collect): the factor says how much slower it really is"),
) -> None:
    """Time the reference probe now (about a second); with --data, the speed factor."""
    from dnnsplit.collectors.calibrate import calibrate

    with _throttled(throttle, [0.0], threads):
        result = calibrate(threads=threads, data_dir=data)
    if as_json:
        echo_json(result)
        return
    typer.echo(f"reference probe now: {result['probe_ms']:.3f} ms")
    if result.get("factor") is not None:
        typer.echo(f"profile median probe: {result['profile_probe_ms']:.3f} ms -> this machine "
                   f"is now {result['factor']:.3f}x the profile's time")


def _check_throttle(fraction, loads) -> None:
    from dnnsplit.predictor.errors import DnnsplitError

    if fraction is not None and any(load > 0 for load in loads):
        raise DnnsplitError("--throttle measures at load 0 only: a background load would "
                            "share the throttled device's quota")


def _throttled(fraction, loads, threads):
    """The CPU quota of --throttle around a measurement (a no-op without it)."""
    from dnnsplit.collectors.throttle import throttled_here

    _check_throttle(fraction, loads)
    return throttled_here(fraction, cpus=threads)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
