"""``executor``: run a split plan as a pipeline of Keras sub-models on devices."""

from __future__ import annotations

import typer

from predictor.cli_support import echo_json, new_app

app = new_app("Run a split plan as a pipeline of Keras sub-models on devices.")


@app.callback()
def _main() -> None:
    """Run a split plan as a pipeline of Keras sub-models on devices."""


@app.command("devices")
def devices_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The devices the current Keras backend can place stages on (e.g. cpu:0, gpu:0)."""
    from predictor.keras_env import import_keras

    keras = import_keras()
    devices = [str(d).lower() for d in keras.distribution.list_devices()]
    if as_json:
        echo_json({"backend": keras.backend.backend(), "devices": devices})
        return
    typer.echo(f"backend {keras.backend.backend()}: {', '.join(devices)}")


def main() -> None:
    app()
