"""Where does a whole-model prediction error come from? Regressors vs composition, by layer type.

    python benchmarks/error_sources.py [--models Pix2PixUNet MobileNetV3Large ...]
                                       [--profile cpu-1t-tensorflow]

A held-out model's predicted time can be wrong for two reasons: the per-type regressors
mispredict its kernels, or its kernels timed alone do not add up to the whole model (fusion,
scheduling, caches). For each model (load 0, one thread) this times, in one window: the whole
model, then every distinct kernel of its task graph alone (fusion rules applied, empty-call
overhead subtracted; identical kernels timed once), with the reference probe before and after.
It then predicts the same kernels from the profile's bundle at the probe's present speed and
reports per model

- composition = sum of kernels measured alone / whole model measured,
- regressors = sum of kernels predicted / sum of kernels measured,
- the full prediction (model-level correction and call overhead included) / whole measured,

and per layer type the error the regressors contribute (predicted - measured, ms and % of the
whole model). Only the evaluation models' kernels are timed here; nothing is trained on them.
Writes docs/error-sources-<profile>.md (and .json, which ``predictor evaluate`` summarises in
its report) with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the held-out models outside +-10% in docs/accuracy-*.md, and one inside for contrast
DEFAULT_MODELS = ["Pix2PixUNet", "EfficientNetB3", "EfficientNetB2", "ResNet101",
                  "InceptionResNetV2", "MobileNetV3Large", "DenseNet169"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from dnnsplit.collectors.timing import configure_threads

    configure_threads(1)
    from dnnsplit.collectors.kernels import KernelConfig, KernelError
    from dnnsplit.collectors.probe import Probe
    from dnnsplit.collectors.timing import (StopRule, compile_forward, empty_call_overhead, measure,
                                            model_inputs, time_model)
    from dnnsplit.predictor.bundle import load_bundle, profile_dir
    from dnnsplit.predictor.compose import FREE_TYPES, predict_graph
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.fusion import OPS_AS_LAYERS
    from dnnsplit.predictor.keras_env import import_keras
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    keras = import_keras()
    bundle = load_bundle(args.profile)
    out = Path(args.out or ROOT / "docs" / f"error-sources-{profile_dir(args.profile).name}.md")
    probe = Probe()
    rule = StopRule(min_repeats=10, max_time_s=1.0)
    summary, by_type_rows, kernel_rows = [], [], []
    for name in args.models:
        model = load_model(name)
        tg = TaskGraph.from_keras(model)
        before = probe.time_ms()
        whole = time_model(model, rule=StopRule(min_repeats=10, max_time_s=4.0)).median_ms
        timed: dict[str, float | None] = {}
        measured_by_type: dict[str, float] = defaultdict(float)
        predicted_by_type: dict[str, float] = defaultdict(float)
        kernel_entries = []
        for kernel in _kernels(tg, FREE_TYPES):
            config = KernelConfig.from_specs([tg.spec(n) for n in kernel.nodes])
            if config.key not in timed:
                try:
                    sub = config.build()
                    inputs = model_inputs(sub)
                    overhead = empty_call_overhead(inputs, rule=rule)
                    timed[config.key] = measure(compile_forward(sub), inputs, overhead,
                                                rule).median_ms
                except KernelError:
                    timed[config.key] = None  # a kernel that cannot be built on its own
            kernel_entries.append((kernel, timed[config.key]))
        after = probe.time_ms()
        probe_now = (before + after) / 2
        raw = predict_graph(bundle, tg, load=0.0, probe_ms=probe_now, corrected=False,
                            streaming=False)
        full = predict_graph(bundle, tg, load=0.0, probe_ms=probe_now).total_ms
        predicted = {tuple(k.nodes): ms for k, ms in raw.kernel_ms}
        skipped = 0
        for kernel, ms in kernel_entries:
            if ms is None:
                skipped += 1
                continue
            kind = OPS_AS_LAYERS.get(tg.graph.nodes[kernel.nodes[0]]["layer_type"],
                                     tg.graph.nodes[kernel.nodes[0]]["layer_type"])
            measured_by_type[kind] += ms
            predicted_by_type[kind] += predicted[tuple(kernel.nodes)]
            kernel_rows.append({"model": name, "type": kind, "nodes": list(kernel.nodes),
                                "layers": [_described(tg.spec(n)) for n in kernel.nodes],
                                "measured_ms": ms, "predicted_ms": predicted[tuple(kernel.nodes)]})
        measured_sum, predicted_sum = sum(measured_by_type.values()), sum(
            predicted_by_type.values())
        summary.append((name, whole, len(kernel_entries), len(timed), skipped, measured_sum,
                        predicted_sum, full, before, after))
        for kind in measured_by_type:
            by_type_rows.append((name, kind, measured_by_type[kind], predicted_by_type[kind],
                                 whole))
        print(f"{name}: whole {whole:.1f} ms; kernels measured {measured_sum:.1f}, predicted "
              f"{predicted_sum:.1f}; full prediction {full:.1f}; probe {before:.2f} -> "
              f"{after:.2f} ms", flush=True)
        keras.backend.clear_session()

    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    command = ("python benchmarks/error_sources.py " + " ".join(argv or sys.argv[1:])).strip()
    lines = [
        f"# Where the prediction error comes from ({profile_dir(args.profile).name})",
        "",
        f"Measured {when} on {platform.node()} ({platform.machine()}), TensorFlow, 1 thread, "
        "load 0, with",
        "",
        "    " + command,
        "",
        "Per model, in one window: whole model measured; every distinct kernel measured alone "
        "(empty call subtracted); the same kernels predicted by the bundle at the probe's "
        "present speed (no model-level correction). composition = kernels measured / whole; "
        "regressors = kernels predicted / kernels measured; full = the prediction `predictor "
        "predict` makes (correction and call overhead included) / whole. Kernels that cannot "
        "be built alone are left out of both kernel sums.",
        "",
        "| model | whole ms | kernels (distinct, not buildable) | kernels measured ms | "
        "composition | kernels predicted ms | regressors | full prediction ms | full / whole "
        "| probe before -> after ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, whole, n, distinct, skipped, meas, pred, full, before, after) in summary:
        lines.append(f"| {name} | {whole:.1f} | {n} ({distinct}, {skipped}) | {meas:.1f} | "
                     f"{meas / whole:.2f}x | {pred:.1f} | {pred / meas:.2f}x | {full:.1f} | "
                     f"{full / whole:.2f}x | {before:.2f} -> {after:.2f} |")
    lines += ["", "## Per layer type: what the regressors add to the error",
              "",
              "Kernels grouped by their first layer's type; the largest contributions (by "
              "|predicted - measured|) of each model.", "",
              "| model | type | measured ms | predicted ms | predicted - measured ms | "
              "% of whole model |", "|---|---|---|---|---|---|"]
    for name in args.models:
        rows = sorted((r for r in by_type_rows if r[0] == name),
                      key=lambda r: -abs(r[3] - r[2]))[:5]
        for _, kind, meas, pred, whole in rows:
            lines.append(f"| {name} | {kind} | {meas:.2f} | {pred:.2f} | {pred - meas:+.2f} | "
                         f"{(pred - meas) / whole:+.1%} |")
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {
        "measured_at": when, "command": command,
        "models": [{"model": name, "whole_ms": whole, "kernels": n, "not_buildable": skipped,
                    "kernels_measured_ms": meas, "kernels_predicted_ms": pred,
                    "full_prediction_ms": full, "composition": meas / whole,
                    "regressors": pred / meas, "full_over_whole": full / whole}
                   for (name, whole, n, distinct, skipped, meas, pred, full, _, _) in summary],
        "by_type": [{"model": name, "type": kind, "measured_ms": meas, "predicted_ms": pred,
                     "whole_ms": whole} for name, kind, meas, pred, whole in by_type_rows],
        "kernels": kernel_rows})
    print(f"wrote {out} and {out.with_suffix('.json').name}")


def _described(spec) -> dict:
    """A layer's spec as JSON: type, shapes, FLOPs, parameters and its plain config values."""
    plain = (int, float, str, bool, list, tuple, type(None))
    return {"type": spec.layer_type, "input_shapes": spec.input_shapes,
            "output_shapes": spec.output_shapes, "flops": spec.flops, "params": spec.params,
            "config": {k: v for k, v in spec.config.items() if isinstance(v, plain)}}


def _kernels(tg, free_types):
    from dnnsplit.predictor.fusion import find_kernels

    return [k for k in find_kernels(tg)
            if tg.graph.nodes[k.nodes[0]]["layer_type"] not in free_types]


if __name__ == "__main__":
    main()
