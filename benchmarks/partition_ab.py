"""dp's solver time now vs at an earlier commit, measured in one window (alternating runs).

    python benchmarks/partition_ab.py --base f6f5495 [--rounds 2] [--models ResNet50 ...]

Solver times drift by tens of percent between windows on this machine, so "at least as fast
as before" is only measured by running both versions alternately: each round runs
benchmarks/partition_speed.py (keras.applications, synthetic costs, the same problems) at
``--base`` (a git worktree, imported as ``dnnsplit`` ahead of the installed package) and at
the working tree, in alternating order. Per (model, k, objective) it reports the median dp
time of each version, their ratio, and how each answered (exact or not).
Writes docs/partition-ab.md (and .json) with the command, machine and date.
"""

from __future__ import annotations

import argparse
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
PACKAGES = ("collectors", "predictor", "partition", "executor", "datasets")
ROW = re.compile(r"^\| (\w+) \| (\d+) \| (\w+) \| (latency|throughput) \| ([\d.]+) \| ([^|]+) \|")


def package_view(tree: Path, into: Path) -> Path:
    """A folder holding ``dnnsplit/`` made of links into ``tree``'s top-level packages, so
    that putting it first on PYTHONPATH imports that tree's code as ``dnnsplit``."""
    pkg = into / "dnnsplit"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").symlink_to(tree / "src" / "dnnsplit" / "__init__.py")
    for name in PACKAGES:
        if (tree / name).is_dir():
            (pkg / name).symlink_to(tree / name)
    return into


def run_speed(tree: Path, path_root: Path | None, models: list[str], out: Path) -> dict:
    """One run of the tree's partition_speed.py; {(model, k, objective): (ms, how)}."""
    env = dict(os.environ)
    if path_root is not None:
        env["PYTHONPATH"] = f"{path_root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [sys.executable, str(tree / "benchmarks" / "partition_speed.py"), "--out", str(out)]
    if models:
        command += ["--models", *models]
    subprocess.run(command, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    rows = {}
    for line in out.read_text().splitlines():
        match = ROW.match(line)
        if match:
            model, _, k, objective, ms, how = match.groups()
            rows[(model, k, objective)] = (float(ms), how.strip())
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "docs" / "partition-ab.md"))
    args = parser.parse_args(argv)
    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    started = datetime.datetime.now(datetime.timezone.utc)
    times: dict[str, dict] = {"base": {}, "now": {}}
    with tempfile.TemporaryDirectory(prefix="dnnsplit-ab-") as tmp:
        tmp = Path(tmp)
        tree = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), base], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            view = package_view(tree, tmp / "view")
            for r in range(args.rounds):
                order = [("base", tree, view), ("now", ROOT, None)]
                for label, where, path_root in (order if r % 2 == 0 else order[::-1]):
                    rows = run_speed(where, path_root, args.models, tmp / f"{label}-{r}.md")
                    for key, value in rows.items():
                        times[label].setdefault(key, []).append(value)
                    print(f"round {r + 1}/{args.rounds}: {label} done ({len(rows)} rows)",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)
    rows = []
    for key in sorted(set(times["base"]) & set(times["now"])):
        before, after = times["base"][key], times["now"][key]
        b = statistics.median(ms for ms, _ in before)
        a = statistics.median(ms for ms, _ in after)
        rows.append({"model": key[0], "k": key[1], "objective": key[2], "base_ms": b,
                     "now_ms": a, "ratio": a / b if b else float("nan"),
                     "base_how": before[0][1], "now_how": after[0][1]})
    write_report(rows, args, base, head, started)


def write_report(rows, args, base, head, started) -> None:
    out = Path(args.out)
    ratios = [r["ratio"] for r in rows if r["base_how"] == "exact" and r["now_how"] == "exact"]
    lost = [r for r in rows if r["base_how"] == "exact" and r["now_how"] != "exact"]
    command = "python benchmarks/partition_ab.py --base " + args.base + (
        f" --rounds {args.rounds}" if args.rounds != 2 else "") + (
        " --models " + " ".join(args.models) if args.models else "")
    lines = [
        "# dp's solver time: now vs an earlier commit, one window",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}), with",
        "",
        f"    {command}",
        "",
        f"Base {base}, now {head} (plus the working tree). Each of {args.rounds} rounds ran "
        "benchmarks/partition_speed.py (keras.applications, synthetic costs) at both, in "
        "alternating order; times are the median over the rounds. ratio = now / base.",
        "",
        f"Rows exact in both: {len(ratios)}; median ratio "
        f"{statistics.median(ratios):.2f}, 90th percentile "
        f"{statistics.quantiles(ratios, n=10)[-1]:.2f}, largest {max(ratios):.2f}"
        if ratios else "No row is exact in both.",
        "",
        f"Exact at base but not now: {len(lost)}"
        + (": " + ", ".join(f"{r['model']} k={r['k']} {r['objective']}" for r in lost)
           if lost else "."),
        "",
        "| model | k | objective | base ms | now ms | ratio | base | now |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['k']} | {r['objective']} | {r['base_ms']:.1f} | "
              f"{r['now_ms']:.1f} | {r['ratio']:.2f} | {r['base_how']} | {r['now_how']} |"
              for r in rows]
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic

    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {"measured_at": started.isoformat(),
                                                 "command": command, "base": base,
                                                 "now": head, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
