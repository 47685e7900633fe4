"""Draw a plan: the DAG coloured by device, and a timeline of its stages.

>>> plot_plan(plan, "plan.png")  # doctest: +SKIP

The timeline shows three frames going through the pipeline, each device and each link being
one pipeline step (device, its outgoing links, the next device, ...): step s of frame f starts
at ``(f + s) * period``.
"""

from __future__ import annotations

from pathlib import Path

from dnnsplit.predictor.files import save_figure_atomic

import networkx as nx

from dnnsplit.partition.plan import Plan

FRAMES = 3


def plot_plan(plan: Plan, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem = plan.problem
    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(problem.devices)}
    graph = nx.DiGraph()
    graph.add_nodes_from(problem.nodes)
    graph.add_edges_from(problem.edges)
    position = {}
    for depth, generation in enumerate(nx.topological_generations(graph)):
        for j, node in enumerate(sorted(generation, key=problem.nodes.index)):
            position[node] = (depth, -j)

    fig, (ax_graph, ax_time) = plt.subplots(2, 1, figsize=(12, 7),
                                            gridspec_kw={"height_ratios": [1.2, 1]})
    size = max(4, 300 / max(1, len(problem.nodes) ** 0.5))
    nx.draw_networkx_edges(graph, position, ax=ax_graph, width=0.4, alpha=0.4, arrows=False)
    for device in problem.devices:
        nodes = [n for n in problem.nodes if plan.assignment[n] == device]
        nx.draw_networkx_nodes(graph, position, nodelist=nodes, node_size=size,
                               node_color=[colours[device]], ax=ax_graph, label=device)
    ax_graph.set_title(f"{plan.algorithm} plan ({plan.objective}): nodes by depth, "
                       "coloured by device")
    ax_graph.legend(loc="upper right", fontsize=8)
    ax_graph.set_axis_off()

    predicted = plan.predicted
    period = predicted.period_ms
    index = {d: i for i, d in enumerate(problem.devices)}
    lanes = [d for d in problem.devices] + [
        f"{problem.devices[a]}->{problem.devices[b]}" for (a, b) in sorted(predicted.link_ms)]
    loads = list(predicted.device_ms) + [predicted.link_ms[key] for key in sorted(predicted.link_ms)]
    stage_of: dict[str, int] = {}  # device -> its first stage (a latency plan may come back)
    for s, stage in enumerate(plan.stages):
        stage_of.setdefault(stage["device"], s)

    def step(name: str) -> int:
        source, _, target = name.partition("->")
        s = 2 * stage_of.get(source, index[source])
        if not target:
            return s
        return 2 * len(plan.stages) - 1 if index[target] < index[source] else s + 1

    for frame in range(FRAMES):
        for lane, (name, load) in enumerate(zip(lanes, loads)):
            if load <= 0:
                continue
            device = name.split("->")[0]
            start = (frame + step(name)) * period
            colour = colours[device]
            ax_time.barh(lane, load, left=start, color=colour,
                         alpha=1.0 if "->" not in name else 0.5, edgecolor="black", linewidth=0.3)
            ax_time.text(start + load / 2, lane, f"f{frame}", ha="center", va="center", fontsize=7)
    ax_time.set_yticks(range(len(lanes)), lanes)
    ax_time.invert_yaxis()
    ax_time.set_xlabel("ms")
    ax_time.set_title(f"pipeline of {FRAMES} frames: period {period:.2f} ms "
                      f"({predicted.throughput_fps:.1f} fps), one-frame latency "
                      f"{predicted.latency_ms:.2f} ms")
    fig.tight_layout()
    return save_figure_atomic(fig, path)
