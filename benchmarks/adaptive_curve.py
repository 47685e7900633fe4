"""Held-out accuracy against minutes of collection: more grid, or adaptive rounds?

    python benchmarks/adaptive_curve.py collect  [--minutes 30] [--work /tmp/adaptive-curve]
                                                 [--arms grid adaptive] [--resume]
    python benchmarks/adaptive_curve.py evaluate [--points 5]   [--work /tmp/adaptive-curve]

Both arms start from a copy of the shipped profile (its grid collection) and get the same
minutes of measuring on this machine, one after the other:

- ``grid``: ``collectors collect --random-scale 4`` (more random draws from the same grids);
- ``adaptive``: ``collectors collect --adaptive`` (rounds where the models are least sure,
  across each type's realistic space; their choosing counts against the minutes too).

``evaluate`` retrains the predictor on the shipped rows plus each arm's rows measured within
the first t minutes, for t at ``--points`` evenly spaced checkpoints, and reports the held-out
accuracy (every evaluation model of ``collectors/data/model_split.json``, probe-normalised) at
each: docs/adaptive-sampling.md and .png, with command, machine and dates. Nothing is tuned on
the held-out models; the arms and checkpoints are fixed before anything is evaluated.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "datasets" / "cpu-1t-tensorflow"
ARMS = ("grid", "adaptive")
#: The grid arm draws this many times each grid's random configurations (enough not to run
#: out within the minutes: twice ran out after 16 of 30 minutes on 2026-11-30).
GRID_SCALE = 4.0


def collect_arms(work: Path, minutes: float, arms=ARMS, resume: bool = False) -> None:
    """Collect each arm for ``minutes`` from a copy of the shipped profile; with ``resume``,
    continue an arm's folder for the minutes it still lacks (a run stopped part-way)."""
    from dnnsplit.collectors.adaptive import collect_adaptive
    from dnnsplit.collectors.collect import CollectSettings, collect

    for arm in arms:
        folder = work / arm
        meta_path = folder / "arm.json"
        meta = json.loads(meta_path.read_text()) if resume and meta_path.exists() else None
        if meta is None and resume and folder.exists():
            meta = _recovered_meta(folder, arm, minutes)
        if meta is None:
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(SHIPPED, folder)  # its bundle tells adaptive rounds each family
            meta = {"arm": arm, "minutes": minutes, "sessions": [], "measured": 0}
        left = minutes - _active_minutes(meta["sessions"])
        if left <= 0.05:
            print(arm, "already collected", flush=True)
            continue
        settings = CollectSettings(out_dir=folder, loads=(0.0, 0.5), threads=1,
                                   budget_minutes=left, random_scale=GRID_SCALE,
                                   profile="cpu-1t-tensorflow")
        started = _now()
        report = (collect_adaptive(settings, progress=False) if arm == "adaptive"
                  else collect(settings, progress=False))
        meta["sessions"].append([started, _now()])
        meta["measured"] += report.measured
        meta["minutes"] = minutes
        meta_path.write_text(json.dumps(meta))
        print(arm, report.measured, "rows", flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _active_minutes(sessions) -> float:
    return sum((datetime.datetime.fromisoformat(b) - datetime.datetime.fromisoformat(a))
               .total_seconds() / 60 for a, b in sessions)


def _recovered_meta(folder: Path, arm: str, minutes: float) -> dict | None:
    """The session of an arm stopped before it wrote arm.json: from the start of its first
    adaptive round to its last measured row (grid arms cannot be recovered: start again)."""
    log = folder / "adaptive.json"
    if arm != "adaptive" or not log.exists():
        return None
    first = json.loads(log.read_text())["rounds"][0]
    start = (datetime.datetime.fromisoformat(first["ended"])
             - datetime.timedelta(seconds=first["seconds"]))
    base = _keys(SHIPPED)
    from dnnsplit.predictor.bundle import kernel_csvs

    new = [r for path in kernel_csvs(folder) for r in csv.DictReader(path.open())
           if (r["kernel_key"], r["load_target"]) not in base]
    end = max(r["timestamp"] for r in new)
    return {"arm": arm, "minutes": minutes, "measured": len(new),
            "sessions": [[start.isoformat(timespec="seconds"), end]]}


def _wall_clock(sessions, minutes: float) -> datetime.datetime:
    """The moment at which the sessions had collected for ``minutes``."""
    for a, b in sessions:
        start, end = (datetime.datetime.fromisoformat(a), datetime.datetime.fromisoformat(b))
        span = (end - start).total_seconds() / 60
        if minutes <= span:
            return start + datetime.timedelta(minutes=minutes)
        minutes -= span
    return datetime.datetime.fromisoformat(sessions[-1][1])


def evaluate_arms(work: Path, points: int, out: Path) -> None:
    from dnnsplit.predictor.evaluate import evaluate_profile
    from dnnsplit.predictor.train import train

    base = _keys(SHIPPED)
    rows = []
    for arm in ARMS:
        folder = work / arm
        meta = json.loads((folder / "arm.json").read_text())
        for i in range(points):
            minutes = meta["minutes"] * i / (points - 1)
            cut = work / f"{arm}-{i}"
            kept = _cut(folder, cut, base, _wall_clock(meta["sessions"], minutes))
            bundle = train(cut)
            report = evaluate_profile(cut, bundle=bundle)
            errors = {f"{r.model}@{r.load_target}": r.error_norm for r in report.results}
            rows.append({"arm": arm, "minutes": round(minutes, 1), "new_rows": kept,
                         "within_10": report.fraction_within(0.10),
                         "within_20": report.fraction_within(0.20),
                         "spearman": report.spearman(), "errors": errors})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "errors"}), flush=True)
    _write(out, rows, work)


def _keys(folder: Path) -> set[tuple[str, str]]:
    from dnnsplit.predictor.bundle import kernel_csvs

    return {(r["kernel_key"], r["load_target"]) for path in kernel_csvs(folder)
            for r in csv.DictReader(path.open())}


def _cut(folder: Path, cut: Path, base: set, until: datetime.datetime) -> int:
    """A profile folder with the shipped rows and ``folder``'s new rows measured until
    ``until``; the number of new rows kept."""
    if cut.exists():
        shutil.rmtree(cut)
    cut.mkdir(parents=True)
    kept = 0
    for path in folder.iterdir():
        if path.suffix != ".csv" or path.name == "models.csv":
            if path.name in ("models.csv", "weight-streaming.json", "evaluation_caveats.json",
                             "repeatability.json"):
                shutil.copy(path, cut / path.name)
            continue
        with path.open() as handle, (cut / path.name).open("w", newline="") as target:
            reader = csv.DictReader(handle)
            writer = csv.DictWriter(target, fieldnames=reader.fieldnames)
            writer.writeheader()
            for row in reader:
                new = (row["kernel_key"], row["load_target"]) not in base
                if new and datetime.datetime.fromisoformat(row["timestamp"]) > until:
                    continue
                kept += new
                writer.writerow(row)
    return kept


def _span(metas: dict) -> str:
    moments = [t for m in metas.values() for session in m["sessions"] for t in session]
    count = sum(len(m["sessions"]) for m in metas.values())
    return f"{min(moments)} to {max(moments)}, {count} sessions"


def _write(out: Path, rows: list[dict], work: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnnsplit.predictor.files import save_figure_atomic, write_json_atomic, write_text_atomic

    metas = {arm: json.loads((work / arm / "arm.json").read_text()) for arm in ARMS}
    write_json_atomic(out / "adaptive-sampling.json", {"rows": rows, "arms": metas})
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in ARMS:
        points = [r for r in rows if r["arm"] == arm]
        ax.plot([r["minutes"] for r in points], [100 * r["within_10"] for r in points],
                marker="o", label=f"{arm}: within ±10%")
        ax.plot([r["minutes"] for r in points], [100 * r["within_20"] for r in points],
                marker="s", linestyle="--", label=f"{arm}: within ±20%")
    ax.set_xlabel("minutes of collection after the shipped grid")
    ax.set_ylabel("held-out results (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure_atomic(fig, out / "adaptive-sampling.png")
    lines = [
        "# Held-out accuracy against minutes of collection: grid or adaptive rounds",
        "",
        f"`python benchmarks/adaptive_curve.py collect --minutes {metas['grid']['minutes']:g}` "
        f"({_span(metas)}) and "
        f"`python benchmarks/adaptive_curve.py evaluate` "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC), on "
        f"{platform.node()} ({platform.machine()}), 1 TensorFlow thread, loads 0 and 0.5.",
        "",
        "Both arms start from the shipped profile's grid collection and measure for the same "
        "minutes: `grid` more random draws from the same grids (`--random-scale 4`), "
        "`adaptive` adaptive rounds (`--adaptive`, choosing included). At each checkpoint the "
        "predictor is retrained on the shipped rows plus the arm's rows measured so far, and "
        "judged on every held-out model (probe-normalised errors).",
        "",
        "![curve](adaptive-sampling.png)",
        "",
        "| arm | minutes | new rows | within ±10% | within ±20% | Spearman | U-Nets (errors) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unets = ", ".join(f"{v:+.0%}" for k, v in sorted(r["errors"].items())
                          if k.startswith("Pix2PixUNet"))
        lines.append(f"| {r['arm']} | {r['minutes']:g} | {r['new_rows']} | "
                     f"{r['within_10']:.0%} | {r['within_20']:.0%} | {r['spearman']:.3f} | "
                     f"{unets} |")
    write_text_atomic(out / "adaptive-sampling.md", "\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["collect", "evaluate"])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--work", default="/tmp/adaptive-curve")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS,
                        help="collect: the arms to (re)collect")
    parser.add_argument("--resume", action="store_true",
                        help="collect: continue stopped arms for the minutes they lack")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.step == "collect":
        collect_arms(work, args.minutes, args.arms, args.resume)
    else:
        evaluate_arms(work, args.points, Path(args.out))
    print(f"done in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
