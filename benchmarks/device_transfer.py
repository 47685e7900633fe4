"""How unlike are the devices, and how good is a new device after a few minutes of measuring?

    python benchmarks/device_transfer.py collect --device cpu-1t-jax [--minutes 20]
    python benchmarks/device_transfer.py report  [--devices cpu-1t-jax,cpu-2t-tensorflow]
                                                 [--minutes 1,2,5,10,20]

``collect`` runs ``collectors collect --quick --base cpu-1t-tensorflow`` for the device (its
Keras backend and threads from the profile's name, e.g. ``cpu-2t-tensorflow``: TensorFlow
with 2 intra-op threads) for ``--minutes``, into ``datasets/<device>-quick``. The quick order
does not depend on the budget, so the rows measured within the first M minutes (their
timestamps) are what an M-minute run measures: one 20-minute run gives the whole curve.

``report`` writes ``docs/devices.md`` (+ ``.json``, ``devices-curve.png``): per device,

1. per layer type, its kernel times relative to ``cpu-1t-tensorflow`` on the kernels both
   measured at load 0 (milliseconds: the probes differ between backends), median and the
   10th-90th percentile over the grid;
2. held-out accuracy (every evaluation model of ``collectors/data/model_split.json``, against
   the device's own full profile's ground truth, probe-normalised) of: its full profile, the
   quick profile transferred from the base after each of ``--minutes``, and the base scaled
   by one calibration number (the ``device`` form only) on the 5-minute rows.

Nothing here is tuned on held-out models: the transfer's forms, the quick order and the
minutes were fixed before any device was evaluated.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "cpu-1t-tensorflow"
DOCS = ROOT / "docs"
DATASETS = ROOT / "datasets"


def runtime(device: str) -> tuple[str, int]:
    match = re.fullmatch(r"[a-z]+-(\d+)t-([a-z]+)", device)
    if not match:
        raise SystemExit(f"error: {device!r} is not a profile name like cpu-2t-tensorflow")
    return match.group(2), int(match.group(1))


def collect(device: str, minutes: float) -> None:
    backend, threads = runtime(device)
    out = DATASETS / f"{device}-quick"
    command = ["collectors", "collect", "--quick", "--base", BASE, "--threads", str(threads),
               "--budget-minutes", str(minutes), "--out", str(out), "--profile",
               f"{device}-quick", "--load", "0", "--quiet"]
    print(f"KERAS_BACKEND={backend}", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, KERAS_BACKEND=backend))


def prefix_folder(quick: Path, minutes: float, work: Path) -> tuple[Path, int]:
    """A folder with the rows of ``quick`` measured within the first ``minutes``."""
    from dnnsplit.predictor.bundle import kernel_csvs

    rows = {}
    for path in kernel_csvs(quick):
        with path.open(newline="") as handle:
            rows[path.name] = list(csv.DictReader(handle))
    stamps = [datetime.datetime.fromisoformat(r["timestamp"])
              for table in rows.values() for r in table]
    start = min(stamps)
    folder = work / f"{quick.name}-{minutes:g}min"
    folder.mkdir(parents=True)
    kept = 0
    for name, table in rows.items():
        chosen = [r for r in table if (datetime.datetime.fromisoformat(r["timestamp"])
                                       - start).total_seconds() <= minutes * 60]
        if not chosen:
            continue
        kept += len(chosen)
        with (folder / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(chosen)
    return folder, kept


def accuracy(report) -> dict:
    errors = [abs(r.error_norm) for r in report.results]
    return {"within_10": report.fraction_within(0.10), "within_20": report.fraction_within(0.20),
            "spearman": report.spearman(), "median_abs_error": statistics.median(errors),
            "results": len(report.results)}


def kernel_ratios(device: str) -> dict[str, dict]:
    """Per layer type: device ms / base ms on the kernels both measured at load 0."""
    from dnnsplit.predictor.train import load_records

    def by_key(folder):
        return {t: {r["kernel_key"]: float(r["median_ms"]) for r in rows
                    if r["load_target"] == "0"}
                for t, rows in load_records(folder).items()}

    base, other = by_key(DATASETS / BASE), by_key(DATASETS / device)
    out = {}
    for layer_type in sorted(set(base) & set(other)):
        ratios = sorted(other[layer_type][k] / base[layer_type][k]
                        for k in set(base[layer_type]) & set(other[layer_type])
                        if base[layer_type][k] > 0.002 and other[layer_type][k] > 0.002)
        if len(ratios) >= 3:
            deciles = statistics.quantiles(ratios, n=10)
            out[layer_type] = {"kernels": len(ratios), "median": statistics.median(ratios),
                               "p10": deciles[0], "p90": deciles[-1]}
    return out


def device_report(device: str, minutes: list[float]) -> dict:
    from dnnsplit.predictor.evaluate import evaluate_profile
    from dnnsplit.predictor.transfer import train_transfer

    full = DATASETS / device
    quick = DATASETS / f"{device}-quick"
    out: dict = {"device": device, "ratios": kernel_ratios(device)}
    out["full"] = accuracy(evaluate_profile(full))
    out["curve"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in minutes:
            folder, rows = prefix_folder(quick, m, Path(tmp))
            bundle = train_transfer(folder, BASE)
            point = {"minutes": m, "rows": rows,
                     **accuracy(evaluate_profile(folder, bundle=bundle, truth_profile=full))}
            if m == 5:
                scaled = train_transfer(folder, BASE, forms=("device",))
                out["scaled_5min"] = {"rows": rows, **accuracy(evaluate_profile(
                    folder, bundle=scaled, truth_profile=full))}
                out["chosen_5min"] = dict(sorted(bundle.chosen.items()))
            out["curve"].append(point)
            print(device, m, "min:", point, flush=True)
    return out


def write(results: list[dict], minutes: list[float], command: str) -> None:
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    DOCS.mkdir(exist_ok=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Devices: how unlike they are, and a new one in five minutes", "",
             f"Measured {when} on {platform.node()} ({platform.machine()}, "
             f"{os.cpu_count()} cores) with `{command}`. Base profile: `{BASE}`.", "",
             "Each device is a profile of its own (datasets/<device>); `<device>-quick` holds "
             "one run of `collectors collect --quick --base cpu-1t-tensorflow` on it, whose "
             "first M minutes are what an M-minute run measures (the order does not depend on "
             "the budget). Transfer: `predictor train --data <quick> --base cpu-1t-tensorflow` "
             "(predictor/transfer.py). Accuracy: held-out models, probe-normalised, against the "
             "device's own full-profile ground truth.", ""]
    for result in results:
        device = result["device"]
        lines += [f"## {device}", "", "### Kernel times relative to cpu-1t-tensorflow", "",
                  "| layer type | kernels | median | p10 | p90 |", "|---|---|---|---|---|"]
        for layer_type, r in result["ratios"].items():
            lines.append(f"| {layer_type} | {r['kernels']} | {r['median']:.2f}x | "
                         f"{r['p10']:.2f}x | {r['p90']:.2f}x |")
        lines += ["", "### Held-out accuracy", "",
                  "| predictor | kernel rows | within ±10% | within ±20% | Spearman | "
                  "median abs error |", "|---|---|---|---|---|---|"]

        def row(label, acc, rows="—"):
            return (f"| {label} | {rows} | {acc['within_10']:.0%} | {acc['within_20']:.0%} | "
                    f"{acc['spearman']:.3f} | {acc['median_abs_error']:.1%} |")

        lines.append(row("full profile", result["full"]))
        for point in result["curve"]:
            lines.append(row(f"quick, {point['minutes']:g} min, transferred", point,
                             point["rows"]))
        if "scaled_5min" in result:
            lines.append(row("base x one number (5 min rows)", result["scaled_5min"],
                             result["scaled_5min"]["rows"]))
            five = next(p for p in result["curve"] if p["minutes"] == 5)
            gap = five["within_10"] - result["full"]["within_10"]
            lines += ["", f"Share within ±10%: the five-minute transfer {five['within_10']:.0%}, "
                      f"the full profile {result['full']['within_10']:.0%} ({gap * 100:+.0f} "
                      "percentage points; goal: no more than 5 below)."]
        lines += [""]
    lines += ["![accuracy against minutes](devices-curve.png)", ""]
    write_text_atomic(DOCS / "devices.md", "\n".join(lines))
    write_json_atomic(DOCS / "devices.json", {"measured": when, "command": command,
                                              "machine": platform.node(), "minutes": minutes,
                                              "devices": results})
    plot(results)


def plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnnsplit.predictor.files import save_figure_atomic

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, result in enumerate(results):
        color = f"C{i}"
        xs = [p["minutes"] for p in result["curve"]]
        ax.plot(xs, [p["within_10"] * 100 for p in result["curve"]], "o-", color=color,
                label=f"{result['device']}: quick + transfer")
        ax.axhline(result["full"]["within_10"] * 100, color=color, linestyle="--",
                   label=f"{result['device']}: full profile")
        if "scaled_5min" in result:
            ax.plot([5], [result["scaled_5min"]["within_10"] * 100], "x", color=color,
                    markersize=9, label=f"{result['device']}: base x one number")
    ax.set_xscale("log")
    ax.set_xlabel("minutes of quick collection on the device")
    ax.set_ylabel("held-out models within ±10% (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, DOCS / "devices-curve.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--device", required=True)
    c.add_argument("--minutes", type=float, default=20.0)
    r = sub.add_parser("report")
    r.add_argument("--devices", default="cpu-1t-jax,cpu-2t-tensorflow")
    r.add_argument("--minutes", default="1,2,5,10,20")
    args = parser.parse_args()
    if args.step == "collect":
        collect(args.device, args.minutes)
        return
    minutes = [float(m) for m in args.minutes.split(",")]
    results = []
    for device in args.devices.split(","):
        if not (DATASETS / device / "models.csv").exists() or \
                not (DATASETS / f"{device}-quick").is_dir():
            print(f"{device}: no full profile with ground truth or no quick run yet: skipped",
                  flush=True)
            continue
        results.append(device_report(device, minutes))
    if not results:
        raise SystemExit("error: no device has both a full profile and a quick run")
    write(results, minutes, "python benchmarks/device_transfer.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
