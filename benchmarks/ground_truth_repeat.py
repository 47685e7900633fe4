"""How repeatable is whole-model ground truth? Rounds within one window, and one window vs another.

    python benchmarks/ground_truth_repeat.py [--rounds 3] [--data DIR] [--profile cpu-1t-tensorflow]
    python benchmarks/ground_truth_repeat.py --report-only DIR

Measures every training and evaluation model at loads 0 and 0.5 again, as ``collectors models
--rounds N --load 0,0.5`` does (into DIR, default a temporary folder; resumable there), and
compares it with the profile's shipped ``models.csv``, all probe-normalised:

- within the window: each round against the median of its (model, load) rounds;
- between windows: the new rows (median of the rounds) against the shipped ones.

The between-window spread is the floor under any whole-model accuracy figure: a predictor that
matched one window exactly would be off by that much in the other. Writes
docs/ground-truth-repeat.md (and .json, with every round) with the command, machine and date.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _norm(row) -> float:
    return float(row["median_ms"]) / float(row["ref_probe_ms"])


def _quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def compare(data: Path, shipped: Path) -> dict:
    from dnnsplit.collectors.ground_truth import rounds_path
    from dnnsplit.predictor.records import read_rows

    rounds = read_rows(rounds_path(data / "models.csv"))
    new = {(r["model"], r["load_target"]): r for r in read_rows(data / "models.csv")}
    old = {(r["model"], r["load_target"]): r for r in read_rows(shipped)}
    within, between, per_model = {}, {}, []
    for load in sorted({r["load_target"] for r in rounds}):
        devs = []
        for (model, lt), row in new.items():
            if lt != load:
                continue
            mine = [_norm(r) for r in rounds if r["model"] == model and r["load_target"] == lt]
            med = statistics.median(mine)
            devs += [abs(v / med - 1) for v in mine]
            ratio = _norm(row) / _norm(old[(model, lt)]) if (model, lt) in old else None
            per_model.append({"model": model, "split": row["split"], "load": lt,
                              "rounds": [round(v, 4) for v in mine],
                              "spread": max(mine) / min(mine) - 1, "ratio": ratio,
                              "shipped_measured": old[(model, lt)]["timestamp"]
                              if (model, lt) in old else None})
        within[load] = {"median": statistics.median(devs), "p90": _quantile(devs, 0.9),
                        "max": max(devs), "n": len(devs)}
        ratios = [m["ratio"] for m in per_model if m["load"] == load and m["ratio"]]
        between[load] = {"median_abs": statistics.median(abs(r - 1) for r in ratios),
                         "within_10": sum(abs(r - 1) <= 0.10 for r in ratios) / len(ratios),
                         "within_20": sum(abs(r - 1) <= 0.20 for r in ratios) / len(ratios),
                         "min": min(ratios), "max": max(ratios), "n": len(ratios)}
    probes = [float(r["ref_probe_ms"]) for r in rounds]
    stamps = sorted(r["timestamp"] for r in rounds)
    return {"within": within, "between": between, "models": per_model,
            "probe_ms": {"min": min(probes), "median": statistics.median(probes),
                         "max": max(probes)},
            "window": [stamps[0], stamps[-1]], "rounds_rows": rounds}


def write_report(result: dict, out: Path, command: str) -> None:
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    w, b, p = result["within"], result["between"], result["probe_ms"]
    lines = [
        "# Whole-model ground truth: how repeatable",
        "",
        f"Measured {result['window'][0]} to {result['window'][1]} on {platform.node()} "
        f"({platform.machine()}), with",
        "",
        f"    {command}",
        "",
        "Every training and evaluation model at loads 0 and 0.5, each measured in separate "
        "passes over all the models (`collectors models --rounds`), probe-normalised; compared "
        "with the shipped `models.csv` (one measurement per row, 2026-11-24 for "
        "keras.applications, 2026-11-30 for the zoo). The probe ranged "
        f"{p['min']:.1f}-{p['max']:.1f} ms (median {p['median']:.1f}) during the passes.",
        "",
        "| load | a round vs its rows' median: median | 90th pct | max | new vs shipped: median "
        "abs | within ±10% | within ±20% | range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in w:
        lines.append(
            f"| {load} | {w[load]['median']:.1%} | {w[load]['p90']:.1%} | {w[load]['max']:.1%} "
            f"| {b[load]['median_abs']:.1%} | {b[load]['within_10']:.0%} | "
            f"{b[load]['within_20']:.0%} | {b[load]['min']:.2f}-{b[load]['max']:.2f} |")
    lines += [
        "",
        "Read: the between-window column is the floor under any whole-model accuracy figure "
        "here. A predictor that matched the shipped window exactly would be within ±10% of "
        "this window on only the share shown, and the other way round.",
        "",
        "| model | split | load | rounds (time / probe) | spread (max/min - 1) | new / shipped |",
        "|---|---|---|---|---|---|",
    ]
    for m in sorted(result["models"], key=lambda m: (m["load"], m["split"], m["model"])):
        ratio = f"{m['ratio']:.2f}" if m["ratio"] else ""
        lines.append(f"| {m['model']} | {m['split']} | {m['load']} | "
                     f"{', '.join(f'{v:.3f}' for v in m['rounds'])} | {m['spread']:.0%} | "
                     f"{ratio} |")
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {"command": command, **result})
    print(f"wrote {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=None, help="folder for the new models.csv")
    parser.add_argument("--report-only", default=None, metavar="DIR",
                        help="report on a folder measured earlier, without measuring")
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=str(ROOT / "docs" / "ground-truth-repeat.md"))
    args = parser.parse_args(argv)
    from dnnsplit.predictor.bundle import GROUND_TRUTH_NAME, profile_dir

    shipped = profile_dir(args.profile) / GROUND_TRUTH_NAME
    command = "python benchmarks/ground_truth_repeat.py" + (
        f" --rounds {args.rounds}" if args.rounds != 3 else "")
    if args.report_only:
        data = Path(args.report_only)
        command = (f"collectors models --out DIR/models.csv --threads 1 --load 0,0.5 --rounds "
                   f"{args.rounds}   # what this script runs, then\n    python "
                   "benchmarks/ground_truth_repeat.py --report-only DIR")
    else:
        data = Path(args.data or tempfile.mkdtemp(prefix="dnnsplit-truth-"))
        from dnnsplit.collectors.ground_truth import default_models, measure_models

        print(f"measuring into {data} (resumable: pass --data {data} to continue)")
        measure_models(default_models(), data / GROUND_TRUTH_NAME, threads=1,
                       loads=(0.0, 0.5), profile=args.profile, rounds=args.rounds)
    write_report(compare(data, shipped), Path(args.out), command)


if __name__ == "__main__":
    main()
