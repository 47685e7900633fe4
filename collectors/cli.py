"""``collectors``: microbenchmarks, link profiles and whole-model ground truth."""

from __future__ import annotations

import typer

from predictor.cli_support import echo_json, new_app

app = new_app("Measure layers, fused kernels, links and whole models on this machine.")


@app.callback()
def _main() -> None:
    """Measure layers, fused kernels, links and whole models on this machine."""


@app.command("columns")
def columns_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The columns of a measurement record (the CSV contract shared with the predictor)."""
    from predictor.features import RECORD_COLUMNS

    if as_json:
        echo_json(RECORD_COLUMNS)
        return
    for name, meaning in RECORD_COLUMNS.items():
        typer.echo(f"{name:16s} {meaning}")


def main() -> None:
    app()
