"""``predictor``: what each layer of a model is (and, with the predictor issue, what it costs)."""

from __future__ import annotations

import math
from typing import Optional

import typer

from dnnsplit.predictor.cli_support import echo_json, new_app, parse_shape, run_app, user_errors

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
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

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


@app.command("train")
@user_errors
def train_command(
    data: str = typer.Option(..., help="profile folder of collected CSVs (datasets/<profile>)"),
    out: Optional[str] = typer.Option(None, help="where to write bundle.json (default: DATA)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    constant_probe: bool = typer.Option(
        False, "--constant-probe",
        help="normalise every row by the profile's median probe, not its own window's"),
    base: Optional[str] = typer.Option(
        None, help="fit DATA as a transform of this profile's predictor (few rows: a new "
                   "device measured with `collectors collect --quick`)"),
    forms: Optional[str] = typer.Option(
        None, help="--base: the ratio forms allowed, comma-separated (device,type,trend,trees; "
                   "`device` alone: the base scaled by one number)"),
) -> None:
    """Fit per-layer-type regressors (k-fold CV picks the family) and save the bundle; with
    --base, fit the device as the base's predictor times per-type ratios."""
    from pathlib import Path

    from dnnsplit.predictor.bundle import BUNDLE_NAME
    from dnnsplit.predictor.errors import DnnsplitError
    from dnnsplit.predictor.estimators import FAMILIES, TransferFamily
    from dnnsplit.predictor.train import train
    from dnnsplit.predictor.transfer import train_transfer

    if base is None:
        if forms is not None:
            raise DnnsplitError("--forms needs --base")
        bundle = train(data, progress=not quiet, per_row_probe=not constant_probe)
        families = list(FAMILIES)
    else:
        chosen_forms = tuple(f.strip() for f in (forms or ",".join(TransferFamily.FORMS))
                             .split(",") if f.strip())
        unknown = sorted(set(chosen_forms) - set(TransferFamily.FORMS))
        if unknown or not chosen_forms:
            raise DnnsplitError(f"--forms: unknown {', '.join(unknown) or '(none given)'}; "
                                f"choose from {', '.join(TransferFamily.FORMS)}")
        bundle = train_transfer(data, base, forms=chosen_forms, progress=not quiet)
        families = list(chosen_forms)
    path = bundle.save(Path(out or data) / BUNDLE_NAME if not str(out or "").endswith(".json")
                       else Path(out))
    typer.echo(f"{'type':24s} {'rows':>5s} " + " ".join(f"{f:>9s}" for f in families)
               + "  chosen")
    for layer_type in sorted(bundle.cv):
        scores = bundle.cv[layer_type]
        cells = " ".join((f"{scores[f]:9.3f}" if base else f"{scores[f]:9.1%}")
                         if f in scores and scores[f] == scores[f] else f"{'':>9s}"
                         for f in families)
        typer.echo(f"{layer_type:24s} {bundle.rows[layer_type]:5d} {cells}  "
                   f"{bundle.chosen[layer_type]}")
    if base is not None:
        typer.echo("(cells: CV mean absolute log error of each ratio form)")
        typer.echo(f"transferred from {base}: the device in one number "
                   f"x{math.exp(bundle.meta['device_log_ratio']):.3f} of the base's time "
                   f"(probe units); types lean on it with {bundle.meta['prior_rows']:.1f} "
                   "pseudo-rows")
    typer.echo(f"model-level correction x{bundle.correction:.3f} "
               f"({bundle.meta.get('correction')}); bundle written to {path}")


@app.command("predict")
@user_errors
def predict_command(
    model: str = typer.Argument(..., help="keras.applications/zoo name or a .keras file"),
    device: str = typer.Option(..., help="device profile name or folder"),
    load: float = typer.Option(0.0, min=0.0, max=1.0, help="background load fraction"),
    calibrate: bool = typer.Option(False, "--calibrate",
                                   help="time the reference probe now and scale to it"),
    as_json: bool = typer.Option(False, "--json"),
    input_shape: Optional[str] = typer.Option(None, metavar="H,W,C",
                                              help="input shape without batch"),
    batch: int = typer.Option(1, min=1, help="batch size the model is predicted for"),
) -> None:
    """Per-layer and total latency of MODEL on a device profile, without running it there."""
    from dnnsplit.predictor.bundle import load_bundle
    from dnnsplit.predictor.compose import predict_graph
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    bundle = load_bundle(device)
    probe_ms = None
    if calibrate:
        # CLI glue only: the library takes probe_ms; timing the probe is the collectors' job
        from dnnsplit.collectors.calibrate import calibrate as time_probe

        probe_ms = time_probe(threads=int(bundle.meta.get("threads", 1)))["probe_ms"]
    tg = TaskGraph.from_keras(load_model(model, parse_shape(input_shape)), batch_size=batch)
    prediction = predict_graph(bundle, tg, load=load, probe_ms=probe_ms)
    inside = prediction.node_inside
    layers = [{"name": n, "type": tg.graph.nodes[n]["layer_type"], "ms": prediction.node_ms[n],
               "inside_measured": inside[n]} for n in tg.nodes]
    warning = prediction.coverage_warning(bundle.profile)
    if as_json:
        share, nodes = prediction.outside()
        echo_json({"model": tg.name, "device": bundle.profile, "total_ms": prediction.total_ms,
                   "layers": layers, "call_overhead_ms": prediction.call_overhead_ms,
                   "probe_ms": prediction.probe_ms, "calibrated": calibrate,
                   "unmodelled": prediction.unmodelled,
                   "outside_measured": {"share_of_time": share, "layers": nodes,
                                        "warning": warning}})
        return
    typer.echo(f"{'layer':40s} {'type':26s} {'ms':>9s}  measured range")
    marks = {True: "inside", False: "OUTSIDE", None: "?"}
    for layer in layers:
        typer.echo(f"{layer['name'][:40]:40s} {layer['type'][:26]:26s} {layer['ms']:9.3f}  "
                   f"{marks[layer['inside_measured']]}")
    for layer_type, fallback in prediction.unmodelled.items():
        typer.echo(f"unmodelled: {layer_type} (predicted by the {fallback})")
    note = f", scaled to the probe timed now ({prediction.probe_ms:.3f} ms)" if calibrate else ""
    typer.echo(f"total {prediction.total_ms:.2f} ms on {bundle.profile} at load {load:g}"
               f" (incl. {prediction.call_overhead_ms:.2f} ms call overhead){note}")
    if warning:
        typer.echo(f"warning: {warning}")


@app.command("evaluate")
@user_errors
def evaluate_command(
    device: str = typer.Option(..., help="device profile name or folder"),
    docs: str = typer.Option("docs", help="folder for accuracy-<profile>.md and .png"),
    as_json: bool = typer.Option(False, "--json"),
    truth: Optional[str] = typer.Option(
        None, help="the profile whose ground truth (models.csv) to compare with (default: "
                   "DEVICE's own; e.g. the full profile of the device a quick one measured)"),
) -> None:
    """Measured vs predicted on the held-out models; writes the accuracy report and plot."""
    import sys

    from dnnsplit.predictor.evaluate import evaluate_profile, write_report

    report = evaluate_profile(device, truth_profile=truth)
    md, png = write_report(report, docs, command="predictor " + " ".join(sys.argv[1:]))
    summary = {"profile": report.profile, "models": len(report.results),
               "within_10": report.fraction_within(0.10), "within_20": report.fraction_within(0.20),
               "spearman": report.spearman(), "within_10_raw": report.fraction_within(0.10, False),
               "spearman_raw": report.spearman(False), "report": str(md), "plot": str(png)}
    if as_json:
        echo_json(summary)
        return
    for r in report.results:
        typer.echo(f"{r.model:22s} load {r.load_target:4s} measured {r.measured_ms:9.2f} ms "
                   f"predicted {r.predicted_ms:9.2f} ms ({r.error_raw:+.1%} raw, "
                   f"{r.error_norm:+.1%} normalised)")
    typer.echo(f"within ±10%: {summary['within_10']:.0%} (normalised), ±20%: "
               f"{summary['within_20']:.0%}; Spearman {summary['spearman']:.3f}; report {md}")


def main() -> None:
    run_app(app)
