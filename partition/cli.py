"""``partition``: task graphs of Keras models (and, with the partition issue, split plans)."""

from __future__ import annotations

from typing import Optional

import typer

from dnnsplit.predictor.cli_support import echo_json, new_app, parse_shape, user_errors

app = new_app("Task graphs of Keras models and where to split them across devices.")


@app.callback()
def _main() -> None:
    """Task graphs of Keras models and where to split them across devices."""


@app.command("graph")
@user_errors
def graph_command(
    model: Optional[str] = typer.Argument(
        None, help="keras.applications name (any case) or a .keras/.h5 file"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    input_shape: Optional[str] = typer.Option(
        None, help="input shape without batch for keras.applications, e.g. 160,160,3"
    ),
    batch: int = typer.Option(1, min=1, help="batch size for FLOPs and tensor bytes"),
    list_models: bool = typer.Option(False, "--list", help="list the model names (keras.applications and zoo)"),
) -> None:
    """Nodes, edges, FLOPs, parameters, the largest tensor and unmodelled layer types."""
    from dnnsplit.predictor.model_source import load_model, model_names

    if list_models:
        typer.echo("\n".join(model_names()))
        return
    if model is None:
        raise typer.BadParameter("give a MODEL (or --list)")
    from dnnsplit.partition.graph import TaskGraph

    tg = TaskGraph.from_keras(load_model(model, parse_shape(input_shape)), batch_size=batch)
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
    model: str = typer.Argument(..., help="keras.applications name or a .keras/.h5 file"),
    device: list[str] = typer.Option(
        ..., "--device", help="NAME=PROFILE[:xFACTOR] in pipeline order, repeat per device"),
    link: list[str] = typer.Option([], "--link", help="A-B=FILE link profile (JSON)"),
    mbps: Optional[float] = typer.Option(None, help="bandwidth of every link not given by --link"),
    rtt_ms: Optional[float] = typer.Option(None, "--rtt-ms", help="round-trip time of those links"),
    costs: Optional[str] = typer.Option(
        None, help="JSON of measured costs {compute_ms: {node: {device: ms}}} instead of profiles"),
    objective: str = typer.Option("latency", help="latency or throughput"),
    algorithm: str = typer.Option("all", help="dp, dads, neurosurgeon, milp, brute or all"),
    out: Optional[str] = typer.Option(None, help="folder to write plan-<algorithm>.json into"),
    as_json: bool = typer.Option(False, "--json", help='print {"plans": [plan, ...]}'),
    plot: Optional[str] = typer.Option(
        None, help="PNG of the first plan: DAG by device and stage timeline"),
    input_shape: Optional[str] = typer.Option(None, help="input shape without batch"),
    batch: int = typer.Option(1, min=1, help="batch size (tensor bytes scale with it)"),
    split_layer: list[str] = typer.Option(
        [], "--split-layer",
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
            raise typer.BadParameter("--split-layer needs predicted costs: a --costs table "
                                     "has no times for the parts of a split layer")
        if split_layer == ["auto"]:
            first, keras_model = plan_with_layer_splits(
                keras_model,
                lambda m: make_plans(graph_and_problem(m)[1], objective, algorithms[:1])[0])
            splits = first.layer_splits
        else:
            splits = parse_layer_splits(split_layer)
            keras_model = split_layers(keras_model, splits)
    tg, problem = graph_and_problem(keras_model)
    plans = [plan.with_layer_splits(splits)
             for plan in make_plans(problem, objective, algorithms)]
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
    best_single = min(b.value for b in baselines)
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
    typer.echo(f"{'plan':20s} {unit:>12s} {'speed-up':>9s} {'solver ms':>10s} {'exact':>6s}  stages")
    for b in baselines:
        typer.echo(f"{'only ' + b.device:20s} {b.value:12.3f} {best_single / b.value:9.2f}x")
    for plan in plans:
        stages = " | ".join(f"{s['device']}:{len(s['nodes'])}" for s in plan.stages)
        typer.echo(f"{plan.algorithm:20s} {plan.value:12.3f} {best_single / plan.value:9.2f}x "
                   f"{plan.solver_ms:10.1f} {str(plan.exact):>6s}  {stages}")
    if out:
        typer.echo(f"plans written to {out}/")


def main() -> None:
    app()
