"""Gantt chart of a pipeline run: one lane per device and link, one bar per frame (a device's
later visits, in a plan that comes back to it, on its lane, hatched and labelled ``frame#k``)."""

from __future__ import annotations

from pathlib import Path

from dnnsplit.predictor.files import save_figure_atomic

from dnnsplit.executor.pipeline import RunResult

MAX_FRAMES = 8


def timeline_rows(result: RunResult) -> dict[str, str]:
    """Event lane -> the row it is drawn on: a stage's device, or the lane itself (links)."""
    return {**{e.lane: e.lane for e in result.events}, **result.stage_devices}


def plot_timeline(result: RunResult, path: str | Path, frames: int = MAX_FRAMES) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [e for e in result.events if e.frame < frames]
    if not events:
        raise ValueError("no events to plot")
    t0 = min(e.start for e in events)
    row = timeline_rows(result)
    lanes = list(dict.fromkeys(row[e.lane] for e in events))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.6 * len(lanes)))
    for e in events:
        y = lanes.index(row[e.lane])
        visit = e.lane[len(row[e.lane]):] if row[e.lane] != e.lane else ""  # "#2", ...
        ax.barh(y, (e.end - e.start) * 1000, left=(e.start - t0) * 1000,
                color=cmap(e.frame % 10), edgecolor="black", linewidth=0.3,
                hatch="//" if visit else None)
        ax.text((e.start - t0) * 1000 + (e.end - e.start) * 500, y, f"{e.frame}{visit}",
                ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the first frame started")
    ax.set_title(f"measured pipeline: period {result.period_ms:.2f} ms "
                 f"({result.throughput_fps:.1f} fps); bars numbered by frame")
    fig.tight_layout()
    return save_figure_atomic(fig, path)
