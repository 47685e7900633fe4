"""Draw a plan: the model cut into its stages, and a timeline of three frames through them.

>>> plot_plan(plan, "plan.png")  # doctest: +SKIP

Top: every node in running order (stage after stage, each stage's nodes in topological order),
coloured by device; an edge between nodes that are not neighbours (a skip connection, a
branch) is an arc above the line, red where its tensor crosses to a later stage (a transfer
the plan pays). Each stage is labelled with its device, its number of layers, its first and
last layer and its predicted time.

Bottom: one lane per stage and one per stage's outgoing link, named as ``executor run``
reports them (``w1->w2`` is all that stage ``w1`` sends to the stages after it, ``+`` when
that is more than the next one; ``return`` carries the outputs made off the first device back
to it). A throughput plan shows three frames through the pipeline: step s of frame f starts at
``(f + s) * period`` (a stage is one step, its outgoing link the next). A latency plan shows
one frame, each step starting when the one before ends (they add up to its latency).
"""

from __future__ import annotations

from pathlib import Path

from dnnsplit.partition.cost import stage_ms
from dnnsplit.partition.plan import Plan
from dnnsplit.predictor.files import save_figure_atomic

FRAMES = 3


def stage_names(stages: list[dict]) -> list[str]:
    """``device``, ``device#2`` for a second visit, ... (as the executor names stages)."""
    seen: dict[str, int] = {}
    names = []
    for stage in stages:
        seen[stage["device"]] = seen.get(stage["device"], 0) + 1
        count = seen[stage["device"]]
        names.append(stage["device"] + (f"#{count}" if count > 1 else ""))
    return names


def link_lanes(plan: Plan) -> list[tuple[str, int, float]]:
    """``(lane name, index of the sending stage, predicted ms)`` for each stage whose tensors
    stages after it read, and ``("return", last stage, ms)`` for the outputs' way back to the
    first device. The plan times a link per device pair: a pair is drawn at the first stage
    that sends over it (a plan that comes back to a device sends over a pair once)."""
    problem, stages = plan.problem, plan.stages
    names = stage_names(stages)
    index = {d: i for i, d in enumerate(problem.devices)}
    links = plan.predicted.link_ms
    drawn: set[tuple[int, int]] = set()
    lanes = []
    for i, stage in enumerate(stages[:-1]):
        sender = index[stage["device"]]
        later = {index[s["device"]] for s in stages[i + 1:]} - {sender}
        pairs = [(sender, b) for b in sorted(later)
                 if (sender, b) in links and (sender, b) not in drawn]
        drawn.update(pairs)
        ms = sum(links[pair] for pair in pairs)
        if ms > 0:
            plus = "+" if len(later) > 1 else ""
            lanes.append((f"{names[i]}->{names[i + 1]}{plus}", i, ms))
    back = sum(ms for pair, ms in links.items() if pair not in drawn and pair[1] == 0)
    if back > 0:
        lanes.append(("return", len(stages) - 1, back))
    return lanes


def plot_plan(plan: Plan, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Arc

    problem, stages = plan.problem, plan.stages
    names = stage_names(stages)
    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(problem.devices)}
    order = [n for stage in stages for n in stage["nodes"]]
    x = {n: i for i, n in enumerate(order)}
    stage_of = {n: s for s, stage in enumerate(stages) for n in stage["nodes"]}
    times = stage_ms(problem, [(s["device"], s["nodes"]) for s in stages])

    fig, (ax_graph, ax_time) = plt.subplots(2, 1, figsize=(13, 7.5),
                                            gridspec_kw={"height_ratios": [1.1, 1]})
    span_max = max((abs(x[v] - x[u]) for u, v in problem.edges), default=1)
    for u, v in problem.edges:
        span = abs(x[v] - x[u])
        if span <= 1 and stage_of[u] == stage_of[v]:
            continue  # neighbours: the line of nodes shows them
        crosses = stage_of[u] != stage_of[v]
        height = 0.25 + 0.75 * span / span_max
        ax_graph.add_patch(Arc(((x[u] + x[v]) / 2, 0), span, 2 * height, theta1=0, theta2=180,
                               color="crimson" if crosses else "grey",
                               linewidth=1.0 if crosses else 0.5,
                               alpha=0.9 if crosses else 0.5))
    for s, stage in enumerate(stages):
        xs = [x[n] for n in stage["nodes"]]
        ax_graph.scatter(xs, [0] * len(xs), s=max(2, 400 / len(order)), zorder=3,
                         color=colours[stage["device"]])
        first, last = min(xs), max(xs)
        if s:
            ax_graph.axvline(first - 0.5, color="black", linestyle="--", linewidth=0.8)
        layers = [n for n in stage["nodes"] if n not in problem.input_nodes]
        text = (f"{names[s]}: {len(layers)} layers, {times[s]:.2f} ms\n"
                + (f"{layers[0][:28]}\n... {layers[-1][:28]}" if layers else "inputs only"))
        ax_graph.text((first + last) / 2, -0.12, text, ha="center", va="top", fontsize=8,
                      color=colours[stage["device"]])
    ax_graph.set_xlim(-1, len(order))
    ax_graph.set_ylim(-0.75, 1.1)
    ax_graph.set_axis_off()
    ax_graph.set_title(f"{plan.algorithm} plan ({plan.objective}): {len(order)} nodes in running "
                       "order; arcs: skip connections and branches, red where a tensor crosses "
                       "to a later stage", fontsize=10)

    predicted = plan.predicted
    lanes = [(names[s], 2 * s, times[s], stage["device"], 1.0)
             for s, stage in enumerate(stages)]
    for name, sender, ms in link_lanes(plan):
        step = 2 * len(stages) - 1 if name == "return" else 2 * sender + 1
        lanes.append((name, step, ms, stages[sender]["device"], 0.5))
    lanes.sort(key=lambda lane: lane[1])  # running order: a stage, then what it sends on
    pipelined = plan.objective == "throughput" and predicted.monotone
    if pipelined:  # step s of frame f starts at (f + s) * period
        starts = {(f, s): (f + s) * predicted.period_ms
                  for f in range(FRAMES) for s in range(2 * len(stages))}
        title = (f"{FRAMES} frames through the pipeline: period {predicted.period_ms:.2f} ms "
                 f"({predicted.throughput_fps:.1f} fps), one-frame latency "
                 f"{predicted.latency_ms:.2f} ms")
    else:  # one frame, each step after the one before
        starts, clock = {}, 0.0
        for _, step, ms, _, _ in sorted(lanes, key=lambda lane: lane[1]):
            starts[(0, step)] = clock
            clock += ms
        title = f"one frame, step after step: latency {predicted.latency_ms:.2f} ms"
    for lane, (name, step, ms, device, alpha) in enumerate(lanes):
        for frame in range(FRAMES if pipelined else 1):
            if ms <= 0:
                continue
            start = starts[(frame, step)]
            ax_time.barh(lane, ms, left=start, color=colours[device], alpha=alpha,
                         edgecolor="black", linewidth=0.3)
            ax_time.text(start + ms / 2, lane, f"f{frame}" if pipelined else f"{ms:.1f}",
                         ha="center", va="center", fontsize=7)
    ax_time.set_yticks(range(len(lanes)), [lane[0] for lane in lanes])
    ax_time.invert_yaxis()
    ax_time.set_xlabel("ms")
    ax_time.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[d]) for d in problem.devices]
    fig.legend(handles, problem.devices, loc="upper right", fontsize=8, title="device",
               bbox_to_anchor=(0.995, 0.995))
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return save_figure_atomic(fig, path)
