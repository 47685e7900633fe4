"""Time the reference probe now, and compare with the probe times recorded in a profile.

``factor`` = probe now / the profile's reference probe time (the one its predictor is trained
at): multiply a prediction made from that profile by it to get the machine's present speed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from dnnsplit.collectors.probe import Probe
from dnnsplit.collectors.timing import configure_threads, one_cpu
from dnnsplit.predictor.bundle import kernel_csvs, profile_dir
from dnnsplit.predictor.records import StoreError, read_rows, reference_probe_ms


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


class ProbeWindow:
    """The reference probe timed before some work (on creation) and after it (:meth:`factor`).

    With ``one_thread`` (workers of one intra-op thread, as the profile's probe was timed) it
    is timed on one CPU: a process whose inter-op pool holds a thread per worker would
    otherwise run the probe's parallel ops on more than one core.

    >>> window = ProbeWindow("cpu-1t-tensorflow")   # doctest: +SKIP
    >>> ...                                         # the work, e.g. a pipelined run
    >>> window.factor(), window.probe_ms             # doctest: +SKIP
    """

    def __init__(self, profile: str, one_thread: bool = True):
        self.reference = profile_probe_ms(profile_dir(profile))
        self._probe = Probe()
        self._one_thread = one_thread
        self._before = self._time()
        self.probe_ms = self._before

    def _time(self) -> float:
        with one_cpu() if self._one_thread else contextlib.nullcontext():
            return self._probe.time_ms()

    def factor(self) -> float:
        """Present speed vs the profile: mean probe time around the work / the profile's."""
        self.probe_ms = (self._before + self._time()) / 2
        return self.probe_ms / self.reference
