"""How repeatable is whole-model ground truth? Rounds within a window, and window vs window.

    collectors models --load 0,0.5 --new-window      # optional: measure one more window
    python benchmarks/ground_truth_repeat.py [--profile cpu-1t-tensorflow]

Reads the profile's ``models-rounds.csv`` (every measurement of ``collectors models``, with its
window and round), all probe-normalised, and reports

- within a window: each round against the median of its (model, load, window) rounds;
- between windows: for each pair of windows, the window medians of each (model, load) they
  share, the later against the earlier.

The between-window spread is the floor under any whole-model accuracy figure: a predictor that
matched one window exactly would be off by that much in another. Writes
docs/ground-truth-repeat.md (and .json) with the command, machine and the windows' dates.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def compare(rounds: list[dict]) -> dict:
    """Within- and between-window spreads of ground-truth rounds (rows of models-rounds.csv)."""
    norm: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    split = {}
    for r in rounds:
        # rows measured once before rounds existed: one window per row, together the first
        window = "earlier" if r["window"].startswith("earlier:") else r["window"]
        norm[(r["model"], r["load_target"], window)].append(
            float(r["median_ms"]) / float(r["ref_probe_ms"]))
        split[r["model"]] = r["split"]
    medians = {key: statistics.median(values) for key, values in norm.items()}
    windows = sorted({key[2] for key in norm}, key=lambda w: (w != "earlier", w))
    loads = sorted({key[1] for key in norm})
    within = {}
    for load in loads:
        devs = [abs(v / medians[key] - 1) for key, values in norm.items()
                if key[1] == load and len(values) > 1 for v in values]
        if devs:
            within[load] = {"median": statistics.median(devs),
                            "p90": float(np.quantile(devs, 0.9)), "max": max(devs),
                            "n": len(devs)}
    between = []
    for a, b in itertools.combinations(windows, 2):
        for load in loads:
            ratios = [medians[(m, load, b)] / medians[(m, load, a)]
                      for m, lt, w in medians if lt == load and w == a and (m, load, b) in medians]
            if ratios:
                gaps = [abs(r - 1) for r in ratios]
                between.append({"earlier": a, "later": b, "load": load,
                                "median_abs": statistics.median(gaps),
                                "within_10": float(np.mean([g <= 0.10 for g in gaps])),
                                "within_20": float(np.mean([g <= 0.20 for g in gaps])),
                                "min": min(ratios), "max": max(ratios), "n": len(ratios)})
    models = [{"model": m, "split": split[m], "load": lt,
               "windows": {w: round(medians[(m, lt, w)], 4) for w in windows
                           if (m, lt, w) in medians}}
              for m, lt in sorted({(m, lt) for m, lt, _ in medians}, key=lambda x: (x[1], x[0]))]
    probes = [float(r["ref_probe_ms"]) for r in rounds]
    return {"windows": windows, "within": within, "between": between, "models": models,
            "probe_ms": {"min": min(probes), "median": statistics.median(probes),
                         "max": max(probes)}}


def _label(window: str) -> str:
    return "each row's first measurement" if window == "earlier" else window[:16] + " UTC"


def write_report(result: dict, out: Path, command: str) -> None:
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    windows = result["windows"]
    names = {w: f"w{i + 1}" for i, w in enumerate(windows)}
    p = result["probe_ms"]
    lines = [
        "# Whole-model ground truth: how repeatable",
        "",
        f"Reported on {platform.node()} ({platform.machine()}) from the profile's "
        "`models-rounds.csv`, with",
        "",
        f"    {command}",
        "",
        "Windows (runs of `collectors models`): "
        + "; ".join(f"{names[w]} = {_label(w)}" for w in windows)
        + f". All probe-normalised; the probe ranged {p['min']:.1f}-{p['max']:.1f} ms "
        f"(median {p['median']:.1f}).",
        "",
        "Within a window (a round against its (model, load, window) median):",
        "",
        "| load | median | 90th percentile | max |",
        "|---|---|---|---|",
    ]
    lines += [f"| {load} | {w['median']:.1%} | {w['p90']:.1%} | {w['max']:.1%} |"
              for load, w in result["within"].items()]
    lines += ["", "Between windows (the later window's median / the earlier's, per model):", "",
              "| windows | load | median abs | within ±10% | within ±20% | range | models |",
              "|---|---|---|---|---|---|---|"]
    for b in result["between"]:
        lines.append(f"| {names[b['earlier']]} vs {names[b['later']]} | {b['load']} | "
                     f"{b['median_abs']:.1%} | "
                     f"{b['within_10']:.0%} | {b['within_20']:.0%} | "
                     f"{b['min']:.2f}-{b['max']:.2f} | {b['n']} |")
    lines += ["", "Read: the between-window rows are the floor under any whole-model accuracy "
              "figure here. A predictor that matched one window exactly would be within ±10% "
              "of another on only the share shown.", "",
              "| model | split | load | window medians (time / probe) |", "|---|---|---|---|"]
    for m in result["models"]:
        lines.append(f"| {m['model']} | {m['split']} | {m['load']} | "
                     + ", ".join(f"{v:.3f}" for v in m["windows"].values()) + " |")
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {"command": command, **result})
    print(f"wrote {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=str(ROOT / "docs" / "ground-truth-repeat.md"))
    args = parser.parse_args(argv)
    from dnnsplit.predictor.bundle import GROUND_TRUTH_ROUNDS_NAME, profile_dir
    from dnnsplit.predictor.records import read_rows

    rounds = read_rows(profile_dir(args.profile) / GROUND_TRUTH_ROUNDS_NAME)
    command = "python benchmarks/ground_truth_repeat.py" + (
        f" --profile {args.profile}" if args.profile != "cpu-1t-tensorflow" else "")
    write_report(compare(rounds), Path(args.out), command)


if __name__ == "__main__":
    main()
