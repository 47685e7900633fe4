"""How repeatable are the kernel measurements? The noise floor the predictor is up against.

    python benchmarks/repeatability.py --data datasets/cpu-1t-tensorflow [--n 50] [--seed 0]

Picks N unloaded rows of the profile at random (seeded), measures the same kernel
configurations again now with the same protocol, and reports the median relative difference
between the two collections, raw and normalised by the reference probe timed in each window
(median_ms / ref_probe_ms). Writes <data>/repeatability.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/cpu-1t-tensorflow")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-ms", type=float, default=0.02,
                        help="ignore kernels faster than this (relative error undefined at 0)")
    args = parser.parse_args(argv)

    from dnnsplit.collectors.timing import configure_threads

    configure_threads(args.threads)
    from dnnsplit.collectors.kernels import KernelConfig
    from dnnsplit.collectors.probe import Probe
    from dnnsplit.collectors.store import read_rows
    from dnnsplit.predictor.bundle import kernel_csvs
    from dnnsplit.collectors.timing import (compile_forward, empty_call_overhead, measure,
                                            model_inputs)

    data = Path(args.data)
    rows = [r for p in kernel_csvs(data) for r in read_rows(p)
            if r["load_target"] == "0" and float(r["median_ms"]) >= args.min_ms]
    chosen = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    probe = Probe()
    raw, normalised, details = [], [], []
    for row in chosen:
        config = KernelConfig.from_json(row["kernel_config"])
        model = config.build()
        inputs = model_inputs(model)
        overhead = empty_call_overhead(inputs)
        new = measure(compile_forward(model), inputs, overhead).median_ms
        new_probe = probe.time_ms()
        old, old_probe = float(row["median_ms"]), float(row["ref_probe_ms"])
        raw.append(abs(new - old) / old)
        normalised.append(abs(new / new_probe - old / old_probe) / (old / old_probe))
        details.append({"pattern": row["fused_pattern"], "old_ms": old, "new_ms": new,
                        "old_probe_ms": old_probe, "new_probe_ms": new_probe})
    result = {
        "n": len(chosen), "median_rel_diff_raw": statistics.median(raw),
        "median_rel_diff_probe_normalised": statistics.median(normalised),
        "p90_rel_diff_raw": sorted(raw)[int(0.9 * (len(raw) - 1))],
        "p90_rel_diff_probe_normalised": sorted(normalised)[int(0.9 * (len(normalised) - 1))],
        "command": "python benchmarks/repeatability.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.node()} ({platform.machine()})",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "details": details,
    }
    from dnnsplit.predictor.files import write_json_atomic

    write_json_atomic(data / "repeatability.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=1))


if __name__ == "__main__":
    main()
