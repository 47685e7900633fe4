"""``predictor``: what each layer of a model is (and, with the predictor issue, what it costs)."""

from __future__ import annotations

from typing import Optional

import typer

from predictor.cli_support import echo_json, new_app, parse_shape, user_errors

app = new_app("Per-layer descriptions and latency predictions of Keras models.")


@app.callback()
def _main() -> None:
    """Per-layer descriptions and latency predictions of Keras models."""


@app.command("spec")
@user_errors
def spec_command(
    model: str = typer.Argument(..., help="keras.applications name or a .keras/.h5 file"),
    as_json: bool = typer.Option(False, "--json", help="print one record per layer call"),
    input_shape: Optional[str] = typer.Option(None, help="input shape without batch, e.g. 160,160,3"),
    batch: int = typer.Option(1, min=1, help="batch size"),
) -> None:
    """The LayerSpec of every operation call of MODEL: type, output shape, FLOPs, parameters."""
    from partition.graph import TaskGraph
    from predictor.model_source import load_model

    tg = TaskGraph.from_keras(load_model(model, parse_shape(input_shape)), batch_size=batch)
    if as_json:
        echo_json([{"name": n, **tg.spec(n).to_record()} for n in tg.nodes])
        return
    typer.echo(f"{'name':40s} {'type':24s} {'output':>18s} {'MFLOPs':>10s} {'params':>10s}")
    for node in tg.nodes:
        spec = tg.spec(node)
        out = "x".join(map(str, spec.output_shapes[0])) if spec.output_shapes else ""
        mark = "" if spec.modelled else "  (unmodelled)"
        typer.echo(
            f"{node[:40]:40s} {spec.layer_type[:24]:24s} {out:>18s} "
            f"{spec.flops / 1e6:10.2f} {spec.params:10d}{mark}"
        )
    typer.echo(f"total: {len(tg)} calls, {tg.flops / 1e9:.3f} GFLOPs, {tg.params:,} parameters")


def main() -> None:
    app()
