"""How well are the parts of a model predicted that a partition plan cuts it into?

    python benchmarks/stage_accuracy.py [--models ResNet50 MobileNetV2 ...] [--stages 2 3]
                                        [--rounds 2] [--profile cpu-1t-tensorflow]

The partitioner balances stages by per-layer predictions, so a pipeline's period is only as
right as the prediction of each stage, not of the whole model. For each model and each k in
``--stages``: the throughput plan (dp) over k identical workers of the profile (10 Gbps links),
its stages cut into sub-models (``executor.stages.build_stages``), then in one window the whole
model and every stage timed alone by the collectors' protocol (one thread, no co-runner), with
the reference probe before and after; ``--rounds`` such rounds back to back (ratios are the
geometric mean over rounds, times the mean). Each is compared with its prediction at the
probe's present speed:

- whole: ``predictor predict``'s total (kernels x model-level correction + one call overhead);
- stage: the plan's stage time (the per-layer shares of the kernel predictions it balanced,
  plus the one call overhead the plan counts per stage: a stage is one compiled call).

Times include the empty call (a stage in a pipeline pays it). ``stage / whole`` divides a
stage's error by its model's: what is left is the error the whole-model figure hides (per-type
errors that cancel over the model but not over a part, fusions broken by the cut), i.e. what
unbalances a pipeline. Also reported: predicted vs measured period (the slowest stage alone).
Writes docs/stage-accuracy-<profile>.md and .json with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ["ResNet50", "MobileNetV2", "VGG16", "DenseNet121", "EfficientNetB0",
                  "ResNet101", "DenseNet169", "EfficientNetB1", "MobileNetV3Large"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--stages", nargs="*", type=int, default=[2, 3])
    parser.add_argument("--rounds", type=int, default=2,
                        help="times each model and its stages are timed (back to back)")
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="",
                        help="appended to the report's name: stage-accuracy-<profile>-<tag>.md")
    args = parser.parse_args(argv)

    from dnnsplit.collectors.timing import configure_threads

    configure_threads(1)
    from tqdm import tqdm

    from dnnsplit.collectors.calibrate import profile_probe_ms
    from dnnsplit.collectors.probe import Probe
    from dnnsplit.collectors.timing import time_model
    from dnnsplit.executor.stages import build_stages
    from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.partition.problem import Link
    from dnnsplit.predictor.bundle import load_bundle, profile_dir
    from dnnsplit.predictor.compose import predict_graph
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    keras = import_keras()
    bundle = load_bundle(args.profile)
    profile_probe = profile_probe_ms(profile_dir(args.profile))
    split = _split()
    name_out = profile_dir(args.profile).name + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out or ROOT / "docs")
    probe = Probe()
    rows, models = [], []
    for name in tqdm(args.models, desc="models", unit="model"):
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        plans = []
        for k in args.stages:
            devices = [DeviceSpec(f"w{i + 1}", args.profile) for i in range(k)]
            links = {(a.name, b.name): Link(0.0, 10_000.0)
                     for a in devices for b in devices if a != b}
            problem = problem_from_graph(tg, devices, links)
            plans.append((k, problem, make_plans(problem, "throughput", ["dp"])[0]))
        stage_lists = [build_stages(model, plan, tg) for _, _, plan in plans]
        whole_pred_ms = predict_graph(bundle, tg).total_ms
        rounds = [_one_round(model, stage_lists, probe, time_model) for _ in range(args.rounds)]
        whole_ms, whole_ratio, probes = [], [], []
        for before, after, whole, _ in rounds:
            speed = (before + after) / 2 / profile_probe
            whole_ms.append(whole)
            whole_ratio.append(whole / (whole_pred_ms * speed))
            probes.append((before, after))
        models.append({"model": name, "split": split.get(name, "-"),
                       "whole_ms": statistics.mean(whole_ms),
                       "predicted_ms": whole_pred_ms * _mean_speed(rounds, profile_probe),
                       "ratio": _geomean(whole_ratio), "ratio_rounds": whole_ratio,
                       "probe_ms": probes})
        for p, ((k, problem, plan), stages) in enumerate(zip(plans, stage_lists)):
            index = {d: i for i, d in enumerate(problem.devices)}
            alone, predicted = [], []
            for position, stage in enumerate(stages):
                base = plan.predicted.device_ms[index[stage.device]]
                ratios, relative, times = [], [], []
                for (before, after, _, timed), w in zip(rounds, whole_ratio):
                    speed = (before + after) / 2 / profile_probe
                    ms = timed[p][position]
                    times.append(ms)
                    ratios.append(ms / (base * speed))  # the plan counts the stage's call
                    relative.append(ratios[-1] / w)
                pred = base * _mean_speed(rounds, profile_probe)
                alone.append(statistics.mean(times))
                predicted.append(pred)
                rows.append({"model": name, "k": k, "stage": position + 1,
                             "last": position == len(stages) - 1,
                             "layers": len(stage.nodes), "predicted_ms": pred,
                             "alone_ms": alone[-1], "ratio": _geomean(ratios),
                             "relative": _geomean(relative), "relative_rounds": relative})
            models[-1][f"period_k{k}"] = {"predicted_ms": max(predicted),
                                          "alone_max_ms": max(alone),
                                          "sum_over_whole": sum(alone) / models[-1]["whole_ms"],
                                          "imbalance": max(alone) / (sum(alone) / len(alone))}
        print(models[-1], flush=True)
        keras.backend.clear_session()
    report = _report(args, argv, rows, models, name_out)
    write_text_atomic(out / f"stage-accuracy-{name_out}.md", report)
    write_json_atomic(out / f"stage-accuracy-{name_out}.json", {"models": models, "stages": rows})
    print(report)


def _one_round(model, stage_lists, probe, time_model):
    """Probe, whole model, every stage of every plan, probe: (before, after, whole, stages)."""
    before = probe.time_ms()
    whole = time_model(model)
    timed = []
    for stages in stage_lists:
        timed.append([])
        for stage in stages:
            timing = time_model(stage.model)
            timed[-1].append(timing.median_ms + timing.overhead_ms)
    return before, probe.time_ms(), whole.median_ms + whole.overhead_ms, timed


def _mean_speed(rounds, profile_probe: float) -> float:
    return statistics.mean((before + after) / 2 for before, after, _, _ in rounds) / profile_probe


def _geomean(values) -> float:
    return math.exp(statistics.mean(math.log(v) for v in values))


def _split() -> dict[str, str]:
    import json

    data = json.loads((ROOT / "collectors" / "data" / "model_split.json").read_text())
    return {m: s for s in ("train", "evaluation") for m in data[s]}


def _method() -> list[str]:
    """The docstring's description as markdown paragraphs (bullets kept)."""
    text = __doc__.split("\n\n", 2)[2].split("Writes docs")[0].strip()
    paragraphs = [p.replace("\n  ", " ").replace("\n", " ") if not p.startswith("- ")
                  else p.replace("\n  ", " ") for p in text.split("\n\n")]
    return [line for p in paragraphs for line in (p, "")][:-1]


def _abs_log_median(values) -> float:
    return math.exp(statistics.median(abs(math.log(v)) for v in values)) - 1


def _within(values, tol) -> float:
    return sum(abs(v - 1) <= tol for v in values) / len(values)


def _report(args, argv, rows, models, profile) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    whole = [m["ratio"] for m in models]
    stage = [r["ratio"] for r in rows]
    relative = [r["relative"] for r in rows]
    first = [r["relative"] for r in rows if r["stage"] == 1]
    last = [r["relative"] for r in rows if r["last"]]
    sums = [m[f"period_k{k}"]["sum_over_whole"] for m in models for k in args.stages]
    repeat = [max(r["relative_rounds"]) / min(r["relative_rounds"]) for r in rows]
    lines = [
        f"# Prediction of the stages a plan cuts a model into ({profile})", "",
        f"Measured {when} on {platform.node()} ({platform.machine()}), TensorFlow, 1 thread, "
        "load 0, with", "",
        "    python benchmarks/stage_accuracy.py " + " ".join(argv or sys.argv[1:]), "",
        *_method(), "",
        "## Summary", "",
        "| | n | median abs error | within ±10% | within ±20% |", "|---|---|---|---|---|",
        f"| whole models (measured / predicted) | {len(whole)} | "
        f"{_abs_log_median(whole):.1%} | {_within(whole, .1):.0%} | {_within(whole, .2):.0%} |",
        f"| stages (measured / predicted) | {len(stage)} | {_abs_log_median(stage):.1%} | "
        f"{_within(stage, .1):.0%} | {_within(stage, .2):.0%} |",
        f"| stages relative to their model (stage ratio / whole ratio) | {len(relative)} | "
        f"{_abs_log_median(relative):.1%} | {_within(relative, .1):.0%} | "
        f"{_within(relative, .2):.0%} |", "",
        f"Stage ratio / whole ratio by position: first stages median "
        f"{statistics.median(first):.3f} (range {min(first):.3f}–{max(first):.3f}), last "
        f"stages {statistics.median(last):.3f} ({min(last):.3f}–{max(last):.3f}). Stages "
        f"alone added up / whole model: median {statistics.median(sums):.3f} (range "
        f"{min(sums):.3f}–{max(sums):.3f})."
        + (f" Noise of these figures: a stage's ratio / whole ratio differs between the "
           f"{args.rounds} back-to-back rounds by a median {statistics.median(repeat) - 1:.1%} "
           f"(max {max(repeat) - 1:.1%}; max / min over rounds)." if args.rounds > 1 else ""),
        "",
        "## Whole models and periods", "",
        "Period: the slowest stage alone vs the plan's slowest stage (both with one call each); "
        "imbalance = slowest stage alone / mean stage alone (1.0 = the plan balanced the real "
        "times perfectly); sum / whole = the stages alone added up / the whole model (what "
        "cutting costs: broken fusions, one call per stage, and timing noise).", "",
        "| model | split | whole ms | predicted ms | ratio (rounds min–max) | "
        + " | ".join(f"k={k} period ms measured (predicted) | k={k} imbalance | k={k} sum / whole"
                     for k in args.stages) + " | probe before -> after ms |",
        "|---|---|---|---|---|" + "---|---|---|" * len(args.stages) + "---|"]
    for m in models:
        periods = " | ".join(
            f"{m[f'period_k{k}']['alone_max_ms']:.1f} ({m[f'period_k{k}']['predicted_ms']:.1f})"
            f" | {m[f'period_k{k}']['imbalance']:.3f} | {m[f'period_k{k}']['sum_over_whole']:.3f}"
            for k in args.stages)
        lines.append(f"| {m['model']} | {m['split']} | {m['whole_ms']:.1f} | "
                     f"{m['predicted_ms']:.1f} | {m['ratio']:.3f} ({min(m['ratio_rounds']):.3f}"
                     f"–{max(m['ratio_rounds']):.3f}) | {periods} | "
                     + ", ".join(f"{a:.2f} -> {b:.2f}" for a, b in m["probe_ms"]) + " |")
    lines += ["", "## Every stage", "",
              "| model | k | stage | layers | predicted ms | alone ms | ratio | ratio / whole "
              "(rounds min–max) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['k']} | {r['stage']} | {r['layers']} | "
                     f"{r['predicted_ms']:.2f} | {r['alone_ms']:.2f} | {r['ratio']:.3f} | "
                     f"{r['relative']:.3f} ({min(r['relative_rounds']):.3f}–"
                     f"{max(r['relative_rounds']):.3f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
