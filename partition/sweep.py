"""Where does splitting pay? Plans over a grid of link bandwidth and device speed ratio.

>>> result = sweep(problem, mbps=log_grid(0.5, 1000, 25), speeds=[1, 2, 4])  # doctest: +SKIP
>>> result.region(1.05)                                                        # doctest: +SKIP

Seed 002's *acceleration region*: the network and device conditions under which partitioning a
model between two devices beats running it on either one. At every point of the grid the
problem's links all get the point's bandwidth (and the given round-trip time), the first
device's compute times (and call overhead) are multiplied by the point's speed factor (``F``:
the first device ``F`` times slower than its profile, as ``:xF`` does), and the best plan is
found by ``algorithm`` (dp, exact for two devices). Each point records the plan's objective
value, whether it really splits (runs layers on more than one device), and its gain over

- the best single device (everything, inputs aside, on the one device the objective favours;
  ``gain_best`` >= 1 since running on one device is one of the plans), and
- the first device alone (``gain_first``: the gain over not offloading at all).

A point is in the region at ``threshold`` when it splits and ``gain_best >= threshold``.
:meth:`Sweep.split_ranges` gives, per speed, the bandwidth intervals where a split beats both
all-local (the first device) and all-offload (the other device), the seed's headline interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from dnnsplit.partition.cost import objective_value
from dnnsplit.partition.planner import make_plans, single_device_baselines
from dnnsplit.partition.problem import Link, PlanError, Problem

#: Default gain for the region: a split must shorten the best single device by 5%.
REGION_GAIN = 1.05


@dataclass(frozen=True)
class SweepPoint:
    mbps: float
    speed: float
    value_ms: float  # the plan's latency or period
    splits: bool
    best_single: str
    best_single_ms: float
    first_ms: float
    other_ms: float  # the best of the devices other than the first
    gain_best: float
    gain_first: float
    stages: str  # e.g. "phone:12 | server:165"


@dataclass
class Sweep:
    model: str
    objective: str
    devices: list[str]
    rtt_ms: float
    mbps: list[float]
    speeds: list[float]
    algorithm: str
    points: list[SweepPoint] = field(default_factory=list)

    def at(self, mbps: float, speed: float) -> SweepPoint:
        return next(p for p in self.points if p.mbps == mbps and p.speed == speed)

    def region(self, threshold: float = REGION_GAIN) -> list[SweepPoint]:
        """The points where a split gains at least ``threshold`` over the best single device."""
        return [p for p in self.points if p.splits and p.gain_best >= threshold - 1e-12]

    def split_ranges(self, speed: float, threshold: float = 1.0) -> list[tuple[float, float]]:
        """The bandwidth intervals at ``speed`` where a split beats both the first device alone
        and the others alone by ``threshold``: each interval a maximal run of neighbouring grid
        points (the region can come in pieces: for ResNet50's throughput at a 4x slower phone a
        split wins below ~16 Mbit/s and again above ~80, offloading everything between)."""
        row = sorted((p for p in self.points if p.speed == speed), key=lambda p: p.mbps)
        runs: list[tuple[float, float]] = []
        previous_won = False
        for p in row:
            won = (p.splits and p.value_ms < min(p.first_ms, p.other_ms)
                   and min(p.first_ms, p.other_ms) / p.value_ms >= threshold - 1e-12)
            if won and previous_won:
                runs[-1] = (runs[-1][0], p.mbps)
            elif won:
                runs.append((p.mbps, p.mbps))
            previous_won = won
        return runs

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "objective": self.objective, "devices": self.devices,
                "rtt_ms": self.rtt_ms, "mbps": self.mbps, "speeds": self.speeds,
                "algorithm": self.algorithm, "region_gain": REGION_GAIN,
                "split_ranges": {f"{s:g}": self.split_ranges(s) for s in self.speeds},
                "region_ranges": {f"{s:g}": self.split_ranges(s, REGION_GAIN)
                                  for s in self.speeds},
                "points": [asdict(p) for p in self.points]}


def format_ranges(runs: Sequence[tuple[float, float]]) -> str:
    """Intervals as text, e.g. ``"0.5 - 16.3, 79.4 - 1e+03"`` (``"never"`` for none)."""
    return ", ".join(f"{low:.3g} - {high:.3g}" for low, high in runs) or "never"


def log_grid(low: float, high: float, points: int) -> list[float]:
    """``points`` values from ``low`` to ``high``, evenly spaced in log (one if they are equal)."""
    if not (low > 0 and high >= low):
        raise PlanError(f"a grid needs 0 < low <= high, got {low:g}:{high:g}")
    if points < 1:
        raise PlanError("a grid needs at least one point")
    if points == 1 or low == high:
        return [low]
    step = (math.log(high) - math.log(low)) / (points - 1)
    return [float(math.exp(math.log(low) + i * step)) for i in range(points)]


def at_point(problem: Problem, mbps: float, speed: float, rtt_ms: float) -> Problem:
    """``problem`` with every link at ``mbps`` (one-way latency rtt/2) and the first device's
    compute and call overhead times ``speed``."""
    first = problem.devices[0]
    compute = {n: {d: ms * (speed if d == first else 1.0) for d, ms in row.items()}
               for n, row in problem.compute_ms.items()}
    overhead = {d: ms * (speed if d == first else 1.0)
                for d, ms in problem.call_overhead_ms.items()}
    links = {pair: Link(rtt_ms / 2, mbps) for pair in problem.links}
    return replace(problem, compute_ms=compute, call_overhead_ms=overhead, links=links)


def sweep(problem: Problem, mbps: Sequence[float], speeds: Sequence[float] = (1.0,),
          objective: str = "latency", rtt_ms: float = 0.0, algorithm: str = "dp",
          model: str = "", time_limit_s: float | None = None, progress: bool = False) -> Sweep:
    """Plan ``problem`` at every (bandwidth, speed) point (see the module docstring)."""
    if len(problem.devices) < 2:
        raise PlanError("a sweep needs at least two devices: where splitting pays is a "
                        "question about two or more")
    if not (math.isfinite(rtt_ms) and rtt_ms >= 0):
        raise PlanError(f"--rtt-ms must be >= 0, got {rtt_ms:g}")
    if any(not (s > 0) for s in speeds):
        raise PlanError("speed factors must be > 0")
    result = Sweep(model, objective, list(problem.devices), rtt_ms, list(mbps), list(speeds),
                   algorithm)
    grid = [(s, b) for s in speeds for b in mbps]
    if progress:
        from tqdm import tqdm

        grid = tqdm(grid, desc="sweep", unit="point")
    inputs = set(problem.input_nodes)
    for speed, bandwidth in grid:
        here = at_point(problem, bandwidth, speed, rtt_ms)
        plan = make_plans(here, objective, [algorithm], time_limit_s)[0]
        value = objective_value(plan.predicted, objective)
        baselines = {b.device: b.value for b in single_device_baselines(here, objective)}
        best = min(baselines, key=baselines.get)
        used = {plan.assignment[n] for n in here.nodes if n not in inputs}
        result.points.append(SweepPoint(
            mbps=bandwidth, speed=speed, value_ms=value, splits=len(used) > 1,
            best_single=best, best_single_ms=baselines[best],
            first_ms=baselines[here.devices[0]],
            other_ms=min(v for d, v in baselines.items() if d != here.devices[0]),
            gain_best=baselines[best] / value, gain_first=baselines[here.devices[0]] / value,
            stages=" | ".join(f"{s['device']}:{len(s['nodes'])}" for s in plan.stages)))
    return result


def plot_sweep(result: Sweep, path, threshold: float = REGION_GAIN) -> None:
    """A heat map of the gain over the best single device (bandwidth x speed), the region where
    splitting gains >= ``threshold`` outlined and labelled; one speed: the gains against
    bandwidth, the region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dnnsplit.predictor.files import save_figure_atomic

    first, others = result.devices[0], ", ".join(result.devices[1:])
    unit = "latency" if result.objective == "latency" else "throughput"
    gains = np.array([[result.at(b, s).gain_best for b in result.mbps] for s in result.speeds])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    title = (f"{result.model}: gain in {unit} of the best plan over the best single device"
             f"\n({first} first, {others}; RTT {result.rtt_ms:g} ms)")
    if len(result.speeds) > 1:
        mesh = ax.pcolormesh(result.mbps, result.speeds, gains, shading="nearest",
                             cmap="viridis", vmin=1.0, vmax=max(float(gains.max()), 1.1))
        fig.colorbar(mesh, ax=ax, label="gain over the best single device (x)")
        if gains.max() >= threshold > gains.min():
            contour = ax.contour(result.mbps, result.speeds, gains, levels=[threshold],
                                 colors="white", linewidths=2)
            ax.clabel(contour, fmt={threshold: f"split gains >= {threshold - 1:.0%}"},
                      fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no split gains >= {threshold - 1:.0%} anywhere",
                    transform=ax.transAxes, ha="center", color="white", fontsize=10)
        # where all-local and all-offload break even: offload wins to the right
        local_vs_offload = np.log([[result.at(b, s).first_ms / result.at(b, s).other_ms
                                    for b in result.mbps] for s in result.speeds])
        if local_vs_offload.max() > 0 > local_vs_offload.min():
            even = ax.contour(result.mbps, result.speeds, local_vs_offload, levels=[0.0],
                              colors="orange", linewidths=1.5, linestyles="dashed")
            ax.clabel(even, fmt={0.0: f"{first} alone = offload"}, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{first} slowed by (x, compute time factor)")
    else:
        speed = result.speeds[0]
        ax.plot(result.mbps, gains[0], "o-", label="over the best single device")
        ax.plot(result.mbps, [result.at(b, speed).gain_first for b in result.mbps], "s--",
                label=f"over {first} alone")
        inside = [b for b in result.mbps if result.at(b, speed).splits
                  and result.at(b, speed).gain_best >= threshold]
        if inside:
            ax.axvspan(min(inside), max(inside), color="C2", alpha=0.15,
                       label=f"split gains >= {threshold - 1:.0%}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel("gain (x)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("link bandwidth (Mbit/s)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path)
