"""Time the reference probe now, and compare with the probe times recorded in a profile.

``factor`` = probe now / median probe of the profile's rows at load 0: multiply a prediction
made from that profile by it to get the machine's present speed.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from collectors.probe import Probe
from predictor.records import StoreError, read_rows
from collectors.timing import configure_threads


def profile_probe_ms(data_dir: str | Path) -> float:
    """Median reference-probe time of the unloaded rows of a profile folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"profile folder {str(data_dir)!r} does not exist")
    values = []
    for path in sorted(data_dir.glob("*.csv")):
        for row in read_rows(path):
            if row.get("load_target", "0") in ("0", "0.0") and row.get("ref_probe_ms"):
                values.append(float(row["ref_probe_ms"]))
    if not values:
        raise StoreError(f"no rows with a reference probe time in {data_dir}")
    return statistics.median(values)


def calibrate(threads: int = 1, data_dir: str | Path | None = None) -> dict:
    configure_threads(threads)
    now = Probe().time_ms()
    result = {"probe_ms": now, "threads": threads, "profile_probe_ms": None, "factor": None}
    if data_dir is not None:
        reference = profile_probe_ms(data_dir)
        result.update(profile_probe_ms=reference, factor=now / reference)
    return result
