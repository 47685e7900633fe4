"""A slower device that really is slower: processes confined to a fraction of a CPU.

>>> with CpuQuota(0.25, name="phone") as quota:     # doctest: +SKIP
...     quota.add(worker.pid)                         # the worker now gets 25% of one CPU

A Linux CPU controller group (cgroup) with a bandwidth limit: in every ``period_us`` the group's
processes may run for ``fraction * period_us`` microseconds in all, then wait for the next
period. cgroup v1 (``/sys/fs/cgroup/cpu/<group>/cpu.cfs_quota_us``, ``cpu.cfs_period_us``,
``cgroup.procs``) and v2 (``cpu.max`` = ``"quota period"``) are supported; both need root (or
a delegated subtree). A fraction is of one CPU: a process pinned to one core and given 0.25
runs at most a quarter of the time, so compute-bound work takes about 4x as long.

The period matters for millisecond kernels: with a long period (the kernel's default, 100 ms)
a process runs 25 ms at full speed, then is stopped for 75 ms, so single kernels are either
fast or stalled; with a short one the stalls are short and every kernel is slowed about
evenly. ``DEFAULT_PERIOD_US`` (10 ms) was chosen by ``benchmarks/throttle.py``
(docs/throttle.md). The quota may not be below 1 ms (the kernel's minimum), so the period is
raised where ``fraction * period`` would be.

Groups are made under ``dnnsplit`` named ``<name>-<pid of the maker>``; :meth:`CpuQuota.close`
moves any process left in the group back to the root group and removes it, and
:func:`remove_stale` removes groups whose maker is gone (a run killed before it cleaned up).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from dnnsplit.predictor.errors import DnnsplitError

ROOT = Path("/sys/fs/cgroup")
PARENT = "dnnsplit"
DEFAULT_PERIOD_US = 10_000
MIN_QUOTA_US = 1_000


class ThrottleError(DnnsplitError):
    """CPU quotas are not available here (no cgroup CPU controller, or not root)."""


def cgroup_root() -> tuple[str, Path]:
    """``("v1", /sys/fs/cgroup/cpu)`` or ``("v2", /sys/fs/cgroup)``, whichever this machine
    has; ThrottleError when neither."""
    v1 = ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return "v2", ROOT
    raise ThrottleError("CPU quotas need a cgroup CPU controller (cgroup v1 "
                        "/sys/fs/cgroup/cpu or v2 with the cpu controller): none here")


def available() -> bool:
    """Whether this process can make CPU quota groups (cgroups present and writable)."""
    try:
        _, base = cgroup_root()
    except ThrottleError:
        return False
    return os.access(base, os.W_OK)


def quota_for(fraction: float, period_us: int = DEFAULT_PERIOD_US) -> tuple[int, int]:
    """``(quota_us, period_us)`` giving ``fraction`` of one CPU, the period raised so that the
    quota is at least the kernel's 1 ms minimum."""
    if not (0 < fraction <= 1):
        raise ThrottleError(f"a CPU fraction must be in (0, 1], got {fraction:g}")
    period = max(int(period_us), int(round(MIN_QUOTA_US / fraction)))
    return int(round(fraction * period)), period


class CpuQuota:
    """A cgroup limiting its processes to ``fraction`` of one CPU, or of ``cpus`` CPUs (a
    device with several threads) (see the module docstring)."""

    def __init__(self, fraction: float, name: str = "device",
                 period_us: int = DEFAULT_PERIOD_US, cpus: int = 1):
        if not re.fullmatch(r"[A-Za-z0-9_.#-]+", name):
            raise ThrottleError(f"a quota group name may hold letters, digits and _.#- only, "
                                f"not {name!r}")
        self.fraction, self.cpus = fraction, int(cpus)
        quota, self.period_us = quota_for(fraction, period_us)
        self.quota_us = quota * self.cpus  # the fraction of each of the device's CPUs
        self.version, base = cgroup_root()
        self.path = base / PARENT / f"{name.replace('#', '_')}-{os.getpid()}"
        self._made = False

    def __enter__(self) -> "CpuQuota":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        remove_stale()
        try:
            self.path.parent.mkdir(exist_ok=True)
            if self.version == "v2":
                _enable_cpu_controller(self.path.parent)
            self.path.mkdir(exist_ok=True)
            self._made = True
            if self.version == "v1":
                (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
                (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            else:
                (self.path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
        except OSError as exc:
            self.close()
            raise ThrottleError(f"cannot make the CPU quota group {self.path}: {exc} (CPU "
                                "quotas need root)") from None

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        try:
            (self.path / "cgroup.procs").write_text(str(int(pid)))
        except OSError as exc:
            raise ThrottleError(f"cannot move process {pid} into {self.path}: {exc}") from None

    def pids(self) -> list[int]:
        """The processes in the group now."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def throttled(self) -> dict[str, float]:
        """The kernel's count of periods the group ran out of quota, and for how long (s)."""
        try:
            stat = dict(line.split() for line in
                        (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        except OSError:
            return {}
        if "throttled_usec" in stat:  # v2
            seconds = int(stat["throttled_usec"]) / 1e6
        else:
            seconds = int(stat.get("throttled_time", 0)) / 1e9
        return {"periods": int(stat.get("nr_periods", 0)),
                "throttled_periods": int(stat.get("nr_throttled", 0)),
                "throttled_s": seconds}

    def close(self) -> None:
        """Move what is left back to the root group and remove the group (idempotent)."""
        if self._made or self.path.exists():
            _remove_group(self.path)
        self._made = False


def _enable_cpu_controller(parent: Path) -> None:
    control = parent / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def _remove_group(path: Path, tries: int = 20) -> None:
    """Move what is left to the root group and remove ``path``, retrying for up to about a
    second while a process that was just killed is still leaving it."""
    import time

    for _ in range(tries):
        _try_remove_group(path)
        if not path.exists():
            return
        time.sleep(0.05)


def _try_remove_group(path: Path) -> None:
    if not path.exists():
        return
    root_procs = path.parent.parent / "cgroup.procs"
    try:
        left = (path / "cgroup.procs").read_text().split()
    except OSError:
        left = []
    for pid in left:
        try:
            root_procs.write_text(pid)
        except OSError:  # gone meanwhile
            pass
    try:
        path.rmdir()
    except OSError:
        pass


def _made_groups() -> list[Path]:
    """The quota group folders this library made that exist now."""
    try:
        _, base = cgroup_root()
    except ThrottleError:
        return []
    parent = base / PARENT
    return sorted(g for g in parent.iterdir() if g.is_dir()) if parent.is_dir() else []


def remove_stale() -> list[str]:
    """Remove the quota groups whose maker process is gone; their names."""
    removed = []
    for group in _made_groups():
        match = re.fullmatch(r".+-(\d+)", group.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _remove_group(group)
            removed.append(group.name)
    return removed


def groups() -> list[str]:
    """Names of the quota groups this library made that exist now (a test's leak check)."""
    return [g.name for g in _made_groups()]


@contextlib.contextmanager
def throttled_here(fraction: float | None, name: str = "collect", cpus: int = 1):
    """This process (its threads, and the processes it starts meanwhile) confined to
    ``fraction`` of ``cpus`` CPUs for the block, to profile or calibrate a slower device on
    this machine; no-op when ``fraction`` is None."""
    if fraction is None:
        yield None
        return
    with CpuQuota(fraction, name=name, cpus=cpus) as quota:
        quota.add(os.getpid())
        yield quota
