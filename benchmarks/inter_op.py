"""Does one 1-thread worker stay on one core? Whole models with 1 vs 2 TensorFlow inter-op threads.

    python benchmarks/inter_op.py [--models ResNet50 MobileNetV2 VGG16] [--repeats 3]

The threads backend runs every worker in one process, and TensorFlow's inter-op pool is
process-wide: it needs 2 threads so that two workers run at once. A model with parallel
branches (ResNet50's projection shortcuts) can then also run two ops at once on its own,
using the second core. Each measurement is a fresh process (the setting is fixed at start-up)
timing the model by the collectors' protocol (``collectors.timing.time_model``: compiled,
median until stable, empty call subtracted) with 1 intra-op thread; 1 and 2 inter-op threads
alternate.
Writes docs/inter-op.md with command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from dnnsplit.collectors.timing import configure_threads, time_model
configure_threads(1, inter_op={inter_op})
from dnnsplit.predictor.model_source import load_model
print(json.dumps(time_model(load_model({model!r})).median_ms))
"""


def time_in_fresh_process(model: str, inter_op: int) -> float:
    code = CHILD.format(root=str(ROOT), inter_op=inter_op, model=model)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                              KERAS_BACKEND="tensorflow"))
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["ResNet50", "MobileNetV2", "VGG16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "inter-op.md"))
    args = parser.parse_args(argv)
    from dnnsplit.predictor.files import write_text_atomic

    rows = []
    for name in args.models:
        one, two = [], []
        for _ in range(args.repeats):
            one.append(time_in_fresh_process(name, 1))
            two.append(time_in_fresh_process(name, 2))
        ratios = sorted(b / a for a, b in zip(one, two))
        rows.append((name, statistics.median(one), statistics.median(two), ratios))
        print(rows[-1], flush=True)
    lines = [
        "# One worker, one core? Inter-op threads 1 vs 2", "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}"
        f" on {platform.node()} ({platform.machine()}, 2 cores), with", "",
        "    python benchmarks/inter_op.py " + " ".join(argv or sys.argv[1:]), "",
        "Median ms per frame by the timing protocol (`collectors.timing.time_model`), 1 "
        "intra-op thread, each value from a fresh "
        f"process; 1 and 2 inter-op threads alternate {args.repeats} times. The threads "
        "backend needs 2 (its two workers share one process), so its single-worker baseline "
        "in `docs/pipeline.md` can use the second core where a model has parallel branches; "
        "the Ray backend's workers are processes with 1 inter-op thread each.", "",
        "| model | inter-op 1 ms | inter-op 2 ms | 2 / 1 (median, range) |", "|---|---|---|---|"]
    for name, a, b, ratios in rows:
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {ratios[len(ratios) // 2]:.3f} "
                     f"({ratios[0]:.3f}–{ratios[-1]:.3f}) |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
