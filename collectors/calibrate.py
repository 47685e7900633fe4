"""Time the reference probe now, and compare with the probe times recorded in a profile.

``factor`` = probe now / the profile's reference probe time (the one its predictor is trained
at): multiply a prediction made from that profile by it to get the machine's present speed.
"""

from __future__ import annotations

from pathlib import Path

from collectors.probe import Probe
from collectors.timing import configure_threads
from predictor.bundle import kernel_csvs
from predictor.records import StoreError, read_rows, reference_probe_ms


def profile_probe_ms(data_dir: str | Path) -> float:
    """The reference probe time of a profile folder's kernel rows."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"profile folder {str(data_dir)!r} does not exist")
    return reference_probe_ms(r for path in kernel_csvs(data_dir) for r in read_rows(path))


def calibrate(threads: int = 1, data_dir: str | Path | None = None) -> dict:
    configure_threads(threads)
    now = Probe().time_ms()
    result = {"probe_ms": now, "threads": threads, "profile_probe_ms": None, "factor": None}
    if data_dir is not None:
        reference = profile_probe_ms(data_dir)
        result.update(profile_probe_ms=reference, factor=now / reference)
    return result
