"""``partition``: task graphs of Keras models (and, with the partition issue, split plans)."""

from __future__ import annotations

import math
from typing import Optional

import typer

from dnnsplit.predictor.cli_support import echo_json, new_app, parse_shape, run_app, user_errors
from dnnsplit.predictor.errors import DnnsplitError

app = new_app("Task graphs of Keras models and where to split them across devices.")


@app.callback()
def _main() -> None:
    """Task graphs of Keras models and where to split them across devices."""


@app.command("graph")
@user_errors
def graph_command(
    model: Optional[str] = typer.Argument(
        None, metavar="MODEL", help="keras.applications or zoo name (any case) or a "
        ".keras/.h5 file"),
    as_json: bool = typer.Option(False, "--json", help="print the summary (or nodes) as JSON"),
    nodes: bool = typer.Option(
        False, "--nodes", help="list every node: name (what a --costs file is keyed by), type, "
        "FLOPs, parameters, output bytes and inputs"),
    input_shape: Optional[str] = typer.Option(
        None, metavar="H,W,C",
        help="input shape without batch for keras.applications, e.g. 160,160,3"),
    batch: int = typer.Option(1, min=1, help="batch size for FLOPs and tensor bytes"),
    list_models: bool = typer.Option(
        False, "--list", help="list the model names (keras.applications and zoo); no MODEL"),
) -> None:
    """Nodes, edges, FLOPs, parameters, the largest tensor and unmodelled layer types of MODEL
    (--nodes: every node)."""
    from dnnsplit.predictor.model_source import load_model, model_names

    if list_models:
        if model is not None or nodes:
            raise DnnsplitError(f"--list lists the model names: give it alone, without "
                                     f"{'MODEL' if model is not None else '--nodes'}")
        typer.echo("\n".join(model_names()))
        return
    if model is None:
        raise DnnsplitError("give a MODEL (or --list)")
    from dnnsplit.partition.graph import TaskGraph

    tg = TaskGraph.from_keras(load_model(model, parse_shape(input_shape)), batch_size=batch)
    if nodes:
        table = tg.node_table()
        if as_json:
            echo_json({"model": tg.name, "nodes": table})
            return
        typer.echo(f"{'name':40s} {'type':24s} {'MFLOPs':>10s} {'params':>10s} "
                   f"{'out KiB':>9s}  inputs")
        for row in table:
            typer.echo(f"{row['name']:40s} {row['type'][:24]:24s} {row['flops'] / 1e6:10.2f} "
                       f"{row['params']:10d} {row['output_bytes'] / 1024:9.1f}  "
                       f"{', '.join(row['inputs'])}")
        return
    summary = tg.summary()
    if as_json:
        echo_json(summary)
        return
    largest = summary["largest_tensor"]
    typer.echo(f"model       {summary['model']}")
    typer.echo(f"nodes       {summary['nodes']}")
    typer.echo(f"edges       {summary['edges']}")
    typer.echo(f"GFLOPs      {summary['flops'] / 1e9:.3f}  (batch {batch})")
    typer.echo(f"parameters  {summary['params']:,}")
    typer.echo(f"largest     {largest['node']}: {largest['bytes'] / 2**20:.2f} MiB")
    typer.echo(f"unmodelled  {', '.join(summary['unmodelled']) or 'none'}")


@app.command("plan")
@user_errors
def plan_command(
    model: str = typer.Argument(..., metavar="MODEL",
                                help="keras.applications or zoo name, or a .keras/.h5 file"),
    device: list[str] = typer.Option(
        ..., "--device", metavar="NAME=SOURCE[:xF]",
        help="a device, in pipeline order (repeat per device; the first holds the input and "
             "gets the outputs back). SOURCE: a device profile (shipped: cpu-1t-tensorflow; or "
             "the folder of one you collected), or with --costs a column of that file. :xF "
             "scales its compute times by F (:x4 four times slower, :x0.5 twice as fast): a "
             "what-if, not a measured device. Each device also pays its profile's call "
             "overhead (call_overhead_ms: one compiled call per frame, about 0.26 ms for "
             "cpu-1t-tensorflow) once per frame if it runs any layer"),
    link: list[str] = typer.Option(
        [], "--link", metavar="A-B=FILE",
        help="the link between devices A and B from a link profile JSON ({\"latency_ms\", "
             "\"mbps\"} or {\"up\": .., \"down\": ..}; `collectors link` measures one)"),
    mbps: Optional[float] = typer.Option(
        None, metavar="MBPS", help="bandwidth (Mbit/s) of every link not given by --link"),
    rtt_ms: Optional[float] = typer.Option(
        None, "--rtt-ms", metavar="MS",
        help="round-trip time of those links (one-way latency = half; without it: 0)"),
    costs: Optional[str] = typer.Option(
        None, metavar="FILE", help="JSON of measured costs {\"compute_ms\": {node: {column: "
        "ms}}, \"call_overhead_ms\": {column: ms}} (or a plan file) instead of profiles; "
        "`partition graph MODEL --nodes` lists the node names"),
    objective: str = typer.Option("latency", help="latency (one frame finishes soonest) or "
                                  "throughput (frames stream fastest through a pipeline)"),
    algorithm: str = typer.Option("all", help="dp, dads, neurosurgeon, milp, brute, "
                                  "balanced, pipeline-milp or all (dp, dads, neurosurgeon)"),
    time_limit: Optional[float] = typer.Option(
        None, "--time-limit", metavar="S",
        help="seconds dp (and milp, balanced, pipeline-milp) may take: a throughput plan on a "
             "graph too wide for exact search is then the best plan found, its proven gap in "
             "the note (default 10 s)"),
    out: Optional[str] = typer.Option(None, metavar="DIR",
                                      help="folder to write plan-<algorithm>.json into"),
    as_json: bool = typer.Option(False, "--json", help='print {"plans": [plan, ...]}'),
    plot: Optional[str] = typer.Option(
        None, metavar="FILE.png", help="PNG of the first plan: its stages, the layers on each "
        "device, and the period's stage and link times"),
    input_shape: Optional[str] = typer.Option(None, metavar="H,W,C",
                                              help="input shape without batch"),
    batch: int = typer.Option(1, min=1, help="batch size (tensor bytes scale with it)"),
    split_layer: list[str] = typer.Option(
        [], "--split-layer", metavar="LAYER[:PARTS]|auto",
        help="LAYER[:PARTS]: split a Conv2D/Dense layer's channels into parts (2 by default) "
             "before planning, repeatable; 'auto': try the layers at the first algorithm's "
             "stage boundaries and keep a split that shortens its plan by > 2%"),
) -> None:
    """Split MODEL across devices: one table comparing the algorithms and single devices."""
    from pathlib import Path

    from dnnsplit.partition.costs import DeviceSpec, load_costs, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.planner import DEFAULT_ALGORITHMS, make_plans, single_device_baselines
    from dnnsplit.predictor.model_source import load_model

    if time_limit is not None and not time_limit > 0:
        raise DnnsplitError(f"--time-limit must be a number of seconds above 0, got {time_limit:g}")
    specs = [DeviceSpec.parse(d) for d in device]
    links = parse_links([d.name for d in specs], link, mbps, rtt_ms)
    table = load_costs(costs) if costs else None
    algorithms = list(DEFAULT_ALGORITHMS) if algorithm == "all" else [algorithm]
    keras_model = load_model(model, parse_shape(input_shape))

    def graph_and_problem(keras_model):
        tg = TaskGraph.from_keras(keras_model, batch_size=batch)
        return tg, problem_from_graph(tg, specs, links, table and table.compute_ms,
                                      table and table.call_overhead_ms)

    splits: dict[str, int] = {}
    if split_layer:
        from dnnsplit.partition.layer_split import (parse_layer_splits, plan_with_layer_splits,
                                                    split_layers)

        if table is not None:
            raise DnnsplitError("--split-layer needs predicted costs: a --costs table "
                                     "has no times for the parts of a split layer")
        if split_layer == ["auto"]:
            first, keras_model = plan_with_layer_splits(
                keras_model,
                lambda m: make_plans(graph_and_problem(m)[1], objective, algorithms[:1],
                                     time_limit)[0])
            splits = first.layer_splits
        else:
            splits = parse_layer_splits(split_layer)
            keras_model = split_layers(keras_model, splits)
    tg, problem = graph_and_problem(keras_model)
    plans = [plan.with_layer_splits(splits)
             for plan in make_plans(problem, objective, algorithms, time_limit)]
    if mbps is not None and rtt_ms is None and len(specs) > 1:
        typer.echo(f"links without --link: {mbps:g} Mbps and no --rtt-ms given, so 0 ms "
                   "latency assumed", err=True)
    if out:
        for plan in plans:
            plan.save(Path(out) / f"plan-{plan.algorithm}.json")
    if plot:
        from dnnsplit.partition.plot import plot_plan

        plot_plan(plans[0], plot)
    if as_json:
        echo_json({"plans": [plan.to_dict() for plan in plans]})
        return
    unit = "latency ms" if objective == "latency" else "period ms"
    baselines = single_device_baselines(problem, objective)
    best = min(baselines, key=lambda b: b.value)
    first = baselines[0]
    typer.echo(f"{tg.name}: {len(tg)} nodes, objective {objective}; devices "
               + ", ".join(f"{d.name}={d.label}" for d in specs))
    if split_layer:
        typer.echo("layers split into channel parts: " + (", ".join(
            f"{name} into {parts}" for name, parts in splits.items()) or "none (no split at "
            "the stage boundaries shortens the plan by more than 2%)"))
    overheads = problem.call_overhead_ms
    if any(overheads.values()):
        typer.echo("call overhead per stage (once per frame on each device that runs a layer): "
                   + ", ".join(f"{d} {ms:.2f} ms" for d, ms in overheads.items()))
    vs_best = f"vs {best.device}"[:10]
    vs_first = f"vs {first.device}"[:10]
    header = f"{'plan':20s} {unit:>12s} {vs_best:>10s}"
    if first.device != best.device:
        header += f" {vs_first:>10s}"
    typer.echo(header + f" {'solver ms':>10s} {'exact':>6s}  stages")

    def speedups(value: float) -> str:
        text = f"{best.value / value:9.2f}x"
        return text + (f" {first.value / value:9.2f}x" if first.device != best.device else "")

    for b in baselines:
        typer.echo(f"{'only ' + b.device:20s} {b.value:12.3f} {speedups(b.value)}")
    for plan in plans:
        stages = " | ".join(f"{s['device']}:{len(s['nodes'])}" for s in plan.stages)
        typer.echo(f"{plan.algorithm:20s} {plan.value:12.3f} {speedups(plan.value)} "
                   f"{plan.solver_ms:10.1f} {str(plan.exact):>6s}  {stages}")
    for note in problem.cost_notes:
        typer.echo(f"warning: {note}")
    typer.echo(f"speed-up: the {unit.split()[0]} of the best single device ({best.device}"
               + (f"; and of the first device, {first.device}, which holds the input"
                  if first.device != best.device else ", which also holds the input")
               + ") divided by the plan's")
    if out:
        typer.echo(f"plans written to {out}/")


def _range(text: str, option: str) -> tuple[float, float]:
    """'LOW:HIGH' (or one number) -> (low, high)."""
    low, _, high = text.partition(":")
    try:
        values = float(low), float(high or low)
    except ValueError:
        raise DnnsplitError(f"{option} {text!r} is not LOW:HIGH, e.g. 0.5:1000") from None
    if not (0 < values[0] <= values[1] and all(math.isfinite(v) for v in values)):
        raise DnnsplitError(f"{option} {text!r}: give 0 < LOW <= HIGH")
    return values


@app.command("sweep")
@user_errors
def sweep_command(
    model: str = typer.Argument(..., metavar="MODEL",
                                help="keras.applications or zoo name, or a .keras/.h5 file"),
    device: list[str] = typer.Option(
        ..., "--device", metavar="NAME=SOURCE[:xF]",
        help="a device, as for `partition plan` (at least two; the first holds the input and "
             "is the one --speed slows)"),
    mbps: str = typer.Option("0.5:1000", metavar="LOW:HIGH",
                             help="link bandwidths to sweep (Mbit/s, a log grid)"),
    points: int = typer.Option(25, min=1, help="bandwidths in the grid"),
    speed: Optional[str] = typer.Option(
        None, metavar="F1:F2", help="also sweep the first device's speed: its compute times x F "
        "for F over a log grid from F1 to F2 (e.g. 1:16; default: as the profiles say)"),
    speed_points: int = typer.Option(9, min=1, help="speed factors in the grid (with --speed)"),
    rtt_ms: float = typer.Option(0.0, "--rtt-ms", metavar="MS",
                                 help="round-trip time of every link"),
    objective: str = typer.Option("latency", help="latency or throughput"),
    algorithm: str = typer.Option("dp", help="the planner at each point (dp: exact for two "
                                  "devices)"),
    costs: Optional[str] = typer.Option(None, metavar="FILE",
                                        help="measured costs instead of profiles (as for plan)"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", metavar="S",
                                               help="seconds per plan (as for plan)"),
    out: Optional[str] = typer.Option(None, metavar="FILE.json", help="write the sweep as JSON"),
    plot: Optional[str] = typer.Option(
        None, metavar="FILE.png", help="heat map of the gain over the best single device, the "
        "region where splitting gains >= 5% outlined"),
    as_json: bool = typer.Option(False, "--json", help="print the sweep as JSON"),
    input_shape: Optional[str] = typer.Option(None, metavar="H,W,C",
                                              help="input shape without batch"),
    batch: int = typer.Option(1, min=1, help="batch size"),
) -> None:
    """Seed 002's acceleration region: the best plan's gain over a grid of link bandwidth (and
    of the first device's speed); where splitting beats all-local and all-offload."""
    from dnnsplit.partition.costs import DeviceSpec, load_costs, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.sweep import (REGION_GAIN, format_ranges, log_grid, plot_sweep,
                                         sweep)
    from dnnsplit.predictor.files import write_json_atomic
    from dnnsplit.predictor.model_source import load_model

    low, high = _range(mbps, "--mbps")
    speeds = log_grid(*_range(speed, "--speed"), speed_points) if speed else [1.0]
    specs = [DeviceSpec.parse(d) for d in device]
    if len(specs) < 2:
        raise DnnsplitError("give at least two --device: a sweep asks where splitting pays")
    table = load_costs(costs) if costs else None
    tg = TaskGraph.from_keras(load_model(model, parse_shape(input_shape)), batch_size=batch)
    problem = problem_from_graph(tg, specs, parse_links([d.name for d in specs], [], high, 0.0),
                                 table and table.compute_ms, table and table.call_overhead_ms)
    result = sweep(problem, log_grid(low, high, points), speeds, objective, rtt_ms, algorithm,
                   model=tg.name, time_limit_s=time_limit, progress=not as_json)
    if out:
        write_json_atomic(out, result.to_dict())
    if plot:
        plot_sweep(result, plot)
    if as_json:
        echo_json(result.to_dict())
        return
    first = specs[0].name
    unit = "latency" if objective == "latency" else "period"
    typer.echo(f"{tg.name}: {objective}, {len(result.mbps)} bandwidths {low:g}-{high:g} Mbps x "
               f"{len(speeds)} speed(s) of {first}, RTT {rtt_ms:g} ms ({algorithm})")
    typer.echo(f"{first + ' x':>10s} {'best gain':>10s} {'at Mbps':>9s}  "
               "split beats all-local and all-offload (Mbps)   split gains >= 5% (Mbps)")
    for s in speeds:
        row = [p for p in result.points if p.speed == s]
        top = max(row, key=lambda p: p.gain_best)
        beats, region = result.split_ranges(s), result.split_ranges(s, REGION_GAIN)
        typer.echo(f"{s:10.3g} {top.gain_best:9.2f}x {top.mbps:9.3g}  "
                   f"{format_ranges(beats):45s} {format_ranges(region)}")
    typer.echo(f"gain = the best single device's {unit} / the best plan's; "
               f"{len(result.region())} of {len(result.points)} points split with a gain "
               f">= {REGION_GAIN - 1:.0%}" + (f"; sweep written to {out}" if out else "")
               + (f"; plot {plot}" if plot else ""))


def main() -> None:
    run_app(app)
