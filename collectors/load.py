"""Background CPU load while measuring: a feature of the latency model, as in the seeds.

>>> with BackgroundLoad(0.5) as load:     # half of every core busy, in child processes
...     ...                               # measure
...     observed = load.observed()        # fraction of the machine the load really used

Each worker process spins for ``fraction`` of every 10 ms window and sleeps the rest, on every
core. Workers exit on their own if the parent dies (they watch its pid), and the context
manager always stops them, also on an exception or Ctrl-C.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

WINDOW_S = 0.01


def load_key(fraction: float) -> str:
    """How a load level is written in a record's ``load_target`` column, e.g. '0', '0.5'."""
    return f"{float(fraction):g}"


def _spin(fraction: float, parent: int) -> None:
    busy = WINDOW_S * fraction
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < busy:
            pass
        rest = WINDOW_S - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)
        if os.getppid() != parent:  # the parent died: do not linger
            return


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux); 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(seconds: float = 0.25) -> float | None:
    """How many CPUs' worth of work other processes did during the next ``seconds``, while
    this process sleeps (e.g. 0.97 = about one core busy): the machine's busy time less this
    process's own (threads finishing their work). None where /proc/stat is not available."""
    before, own = _cpu_times(), _cpu_seconds(os.getpid())
    time.sleep(seconds)
    after, own = _cpu_times(), _cpu_seconds(os.getpid()) - own
    if before is None or after is None or after[1] <= before[1]:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    wall = (after[1] - before[1]) / ((os.cpu_count() or 1) * hz)  # seconds the window lasted
    return max(0.0, ((after[0] - before[0]) / hz - own) / wall)


class BackgroundLoad:
    """Keep ``fraction`` (0..1) of every core busy in child processes while inside the block."""

    def __init__(self, fraction: float, cores: int | None = None):
        if not 0 <= fraction <= 1:
            raise ValueError(f"load fraction must be within 0..1, got {fraction}")
        self.fraction = fraction
        self.cores = cores or os.cpu_count() or 1
        self.workers: list[mp.Process] = []
        self._mark: tuple[float, float] | None = None

    def __enter__(self) -> "BackgroundLoad":
        if self.fraction > 0:
            ctx = mp.get_context("spawn")
            for _ in range(self.cores):
                worker = ctx.Process(target=_spin, args=(self.fraction, os.getpid()),
                                     daemon=True)
                worker.start()
                self.workers.append(worker)
            time.sleep(0.05)
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()
        for worker in self.workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)
        self.workers = []

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    def reset(self) -> None:
        """Start a new observation window."""
        self._mark = (time.perf_counter(), self._cpu())

    def _cpu(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids)

    def observed(self) -> float:
        """Fraction of the whole machine the load used since :meth:`reset` (0 with no load)."""
        if not self.workers or self._mark is None:
            return 0.0
        wall = time.perf_counter() - self._mark[0]
        if wall <= 0:
            return self.fraction
        used = self._cpu() - self._mark[1]
        return max(0.0, min(1.0, used / (wall * self.cores)))
