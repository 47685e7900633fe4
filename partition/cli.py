"""``partition``: task graphs of Keras models (and, with the partition issue, split plans)."""

from __future__ import annotations

from typing import Optional

import typer

from predictor.cli_support import echo_json, new_app, parse_shape, user_errors

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
    list_models: bool = typer.Option(False, "--list", help="list keras.applications names"),
) -> None:
    """Nodes, edges, FLOPs, parameters, the largest tensor and unmodelled layer types."""
    from predictor.model_source import application_names, load_model

    if list_models:
        typer.echo("\n".join(application_names()))
        return
    if model is None:
        raise typer.BadParameter("give a MODEL (or --list)")
    from partition.graph import TaskGraph

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


def main() -> None:
    app()
