"""Accuracy on models held out from training and grid design: the promise, checked.

>>> report = evaluate_profile("cpu-1t-tensorflow")          # doctest: +SKIP
>>> report.within_10, report.spearman                         # doctest: +SKIP

For every ground-truth row (``models.csv``) of the *evaluation* split, the whole-model latency
is predicted at the row's observed load and compared with the measurement:

- raw: measured ms vs predicted ms at the profile's reference speed;
- normalised: measured ms / the reference probe timed in the same window vs the prediction in
  probe units (the machines drift; this is the number that says whether the model is right).

``write_report`` writes ``docs/accuracy-<profile>.md`` and a predicted-vs-measured PNG.
"""

from __future__ import annotations

import datetime
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnnsplit.predictor.bundle import Bundle, ProfileError, load_bundle, profile_dir
from dnnsplit.predictor.files import read_json, save_figure_atomic

#: A profile's ``{model: why}`` for held-out models that shaped the data after all.
CAVEATS_NAME = "evaluation_caveats.json"

#: The accuracy the project promises on held-out models (normalised errors).
GOAL_WITHIN_10 = 0.90
GOAL_MAX_ERROR = 0.20
GOAL_SPEARMAN = 0.98
#: U-Net generators (what seed 003 splits) are held to a tighter bound than the rest
GOAL_UNET_ERROR = 0.15


@dataclass
class ModelResult:
    model: str
    load_target: str
    measured_ms: float
    predicted_ms: float
    measured_norm: float
    predicted_norm: float
    #: windows (runs of ``collectors models``) and measurements the measured time combines
    windows: int = 1
    rounds: int = 1

    @property
    def error_raw(self) -> float:
        return self.predicted_ms / self.measured_ms - 1

    @property
    def error_norm(self) -> float:
        return self.predicted_norm / self.measured_norm - 1


@dataclass
class AccuracyReport:
    profile: str
    results: list[ModelResult]
    cv: dict[str, dict[str, float]] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    noise_floor: dict | None = None
    #: held-out models that are not fully blind, and why (``evaluation_caveats.json``)
    caveats: dict[str, str] = field(default_factory=dict)

    def fraction_within(self, limit: float, normalised: bool = True) -> float:
        errors = [abs(r.error_norm if normalised else r.error_raw) for r in self.results]
        return sum(e <= limit for e in errors) / len(errors) if errors else float("nan")

    def spearman(self, normalised: bool = True) -> float:
        from scipy.stats import spearmanr

        if len(self.results) < 3:
            return float("nan")
        measured = [r.measured_norm if normalised else r.measured_ms for r in self.results]
        predicted = [r.predicted_norm if normalised else r.predicted_ms for r in self.results]
        return float(spearmanr(measured, predicted).statistic)

    def goal_verdict(self) -> str:
        """One markdown line: the promised accuracy, and whether these results meet it."""
        far = [r for r in self.results if abs(r.error_norm) > GOAL_MAX_ERROR]
        beyond, n_beyond = sorted({r.model for r in far}), len(far)
        unets = sorted({r.model for r in self.results
                        if "UNet" in r.model and abs(r.error_norm) > GOAL_UNET_ERROR})
        within, rho = self.fraction_within(0.10), self.spearman()
        met = within >= GOAL_WITHIN_10 and not beyond and not unets and rho >= GOAL_SPEARMAN
        return (f"**Goal** (at least {GOAL_WITHIN_10:.0%} of held-out results within ±10%, "
                f"none beyond ±{GOAL_MAX_ERROR:.0%}, every U-Net generator within "
                f"±{GOAL_UNET_ERROR:.0%}, Spearman ≥ {GOAL_SPEARMAN}, normalised): "
                + ("**met**" if met else "**not met**")
                + f": {within:.0%} within ±10%, {n_beyond} beyond ±{GOAL_MAX_ERROR:.0%}"
                + (f" ({', '.join(beyond)})" if beyond else "")
                + (f", U-Nets beyond ±{GOAL_UNET_ERROR:.0%}: {', '.join(unets)}" if unets else "")
                + f", Spearman {rho:.3f}.")


def evaluate_profile(profile: str | Path, split: str = "evaluation",
                     bundle: Bundle | None = None,
                     truth_profile: str | Path | None = None) -> AccuracyReport:
    """``profile``'s predictor against the ground truth of ``truth_profile`` (default: its own;
    e.g. a quick profile of a device against the device's full profile's ``models.csv``)."""
    from dnnsplit.predictor.compose import predict_model_normalised

    from dnnsplit.predictor.train import read_ground_truth

    folder = profile_dir(profile)
    truth_folder = profile_dir(truth_profile) if truth_profile is not None else folder
    truth = read_ground_truth(truth_folder)
    if truth is None:
        raise ProfileError(f"no ground truth in {truth_folder}: run `collectors models` first"
                           + ("" if truth_profile else ", or give --truth PROFILE of the same "
                              "device"))
    bundle = bundle or load_bundle(folder)
    rows = [row for row in truth if row["split"] == split]
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    predicted = {}
    for model, model_rows in by_model.items():
        totals = predict_model_normalised(bundle, model, [float(r["load"]) for r in model_rows])
        predicted.update({id(r): t for r, t in zip(model_rows, totals)})
    results = []
    for row in rows:
        measured_ms = float(row["median_ms"])
        results.append(ModelResult(
            model=row["model"], load_target=row["load_target"], measured_ms=measured_ms,
            predicted_ms=predicted[id(row)] * bundle.reference_probe_ms,
            measured_norm=measured_ms / float(row["ref_probe_ms"]),
            predicted_norm=predicted[id(row)], windows=int(row.get("windows") or 1),
            rounds=int(row.get("rounds") or 1)))
    if not results:
        raise ProfileError(f"no {split} models in {truth}")
    noise = None
    repeat = truth_folder / "repeatability.json"
    if repeat.exists():
        import json

        noise = {k: v for k, v in json.loads(repeat.read_text()).items() if k != "details"}
    caveats_file = truth_folder / CAVEATS_NAME
    caveats = read_json(caveats_file, "caveats file", ProfileError) if caveats_file.exists() \
        else {}
    return AccuracyReport(folder.name, results, bundle.cv, bundle.chosen, bundle.rows, noise,
                          {str(k): str(v) for k, v in caveats.items()})


def _truth_line(results: list[ModelResult]) -> str:
    """How the measured times were formed (windows and rounds of ``collectors models``)."""
    windows = sorted({r.windows for r in results})
    rounds = sorted({r.rounds for r in results})
    span = (lambda v: f"{v[0]}" if len(v) == 1 else f"{v[0]}-{v[-1]}")
    return (f"Measured times: each the median over {span(windows)} window(s) of the median over "
            f"a window's rounds ({span(rounds)} measurements per row; `models-rounds.csv` keeps "
            "them). How far one window lies from another, the floor under these figures: "
            "[ground-truth-repeat](ground-truth-repeat.md).")


def write_report(report: AccuracyReport, docs_dir: str | Path = "docs",
                 command: str = "") -> tuple[Path, Path]:
    from dnnsplit.predictor.files import write_text_atomic

    docs = Path(docs_dir)
    png = docs / f"accuracy-{report.profile}.png"
    lines = [
        f"# Predictor accuracy: {report.profile}",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.node()} "
        f"({platform.machine()}), with "
        f"`{command or 'predictor evaluate --device ' + report.profile}`.",
        "",
        "Whole-model latency of the **held-out evaluation models** (never used for grids, "
        "training or the model-level correction), predicted from kernel microbenchmarks.",
        "Normalised = divided by the reference probe timed in the same window (the machine "
        "drifts); raw = milliseconds at the profile's reference speed.",
        "",
        _truth_line(report.results),
        "",
        "| | within ±10% | within ±20% | Spearman | median abs error |",
        "|---|---|---|---|---|",
    ]
    for label, norm in (("normalised", True), ("raw", False)):
        errors = [abs(r.error_norm if norm else r.error_raw) for r in report.results]
        lines.append(f"| {label} | {report.fraction_within(0.10, norm):.0%} | "
                     f"{report.fraction_within(0.20, norm):.0%} | {report.spearman(norm):.3f} | "
                     f"{statistics.median(errors):.1%} |")
    lines += ["", report.goal_verdict()]
    for model, why in sorted(report.caveats.items()):
        lines += ["", f"**Not fully blind: {model}.** {why}"]
    lines += ["", f"![predicted vs measured]({png.name})", "",
              "| model | load | measured ms | predicted ms | error raw | measured/probe | "
              "predicted/probe | error normalised |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(report.results, key=lambda r: (r.load_target, r.model)):
        lines.append(f"| {r.model} | {r.load_target} | {r.measured_ms:.2f} | "
                     f"{r.predicted_ms:.2f} | {r.error_raw:+.1%} | {r.measured_norm:.2f} | "
                     f"{r.predicted_norm:.2f} | {r.error_norm:+.1%} |")
    lines += _error_sources(docs / f"error-sources-{report.profile}.json")
    if report.noise_floor:
        lines += ["", "Noise floor (two collections of the same kernel configurations, "
                      "`benchmarks/repeatability.py`): median relative difference "
                      f"{report.noise_floor.get('median_rel_diff_raw', float('nan')):.1%} raw, "
                      + format(report.noise_floor.get('median_rel_diff_probe_normalised',
                                                      float('nan')), '.1%')
                      + " normalised by the probe."]
    lines += ["", "## Per layer type: k-fold CV error of each family (mean relative error)", "",
              "| type | rows | chosen | " + " | ".join(_families(report)) + " |",
              "|---|---|---|" + "---|" * len(_families(report))]
    for layer_type in sorted(report.cv):
        scores = report.cv[layer_type]
        cells = [f"{scores[f]:.1%}" if f in scores and scores[f] == scores[f] else ""
                 for f in _families(report)]
        lines.append(f"| {layer_type} | {report.rows.get(layer_type, '')} | "
                     f"{report.chosen.get(layer_type, '')} | " + " | ".join(cells) + " |")
    _scatter(report, png)  # after every input was read: a bad one leaves nothing written
    md = write_text_atomic(docs / f"accuracy-{report.profile}.md", "\n".join(lines) + "\n")
    return md, png


def _error_sources(path: Path, top: int = 8) -> list[str]:
    """The summary of ``benchmarks/error_sources.py``'s measurements, when they exist."""
    lines = ["", "## Where the error comes from", ""]
    if not path.exists():
        return lines + [f"Not measured yet: `python benchmarks/error_sources.py` times every "
                        f"kernel of the worst held-out models and writes {path.name}."]
    data = read_json(path, "error-sources file", ProfileError)
    try:
        return lines + _error_sources_tables(data, path, top)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ProfileError(f"error-sources file {str(path)!r} is malformed ({exc!r}): re-run "
                           "python benchmarks/error_sources.py") from None


def _error_sources_tables(data: dict, path: Path, top: int) -> list[str]:
    lines = [
        f"Measured {data['measured_at']} with `{data['command']}` (details in "
        f"[{path.with_suffix('.md').name}]({path.with_suffix('.md').name})): each model and "
        "every distinct kernel of it timed alone in one window. composition = kernels "
        "measured alone, added up / whole model (what summing kernels misses: fusion, caches, "
        "per-kernel fixed costs); regressors = kernels predicted / kernels measured (the "
        "per-type models' error on these kernels); full = the prediction / whole model, all "
        "at the probe's present speed.", "",
        "| model | whole ms | composition | regressors | full / whole |", "|---|---|---|---|---|"]
    for m in data["models"]:
        lines.append(f"| {m['model']} | {m['whole_ms']:.1f} | {m['composition']:.2f}x | "
                     f"{m['regressors']:.2f}x | {m['full_over_whole']:.2f}x |")
    worst = sorted(data["by_type"], key=lambda r: -abs(r["predicted_ms"] - r["measured_ms"])
                   / r["whole_ms"])[:top]
    lines += ["", "The largest per-type contributions of the regressors (kernels grouped by "
              "their first layer's type; % of the whole model's time):", "",
              "| model | type | measured ms | predicted ms | % of whole model |",
              "|---|---|---|---|---|"]
    for r in worst:
        lines.append(f"| {r['model']} | {r['type']} | {r['measured_ms']:.2f} | "
                     f"{r['predicted_ms']:.2f} | "
                     f"{(r['predicted_ms'] - r['measured_ms']) / r['whole_ms']:+.1%} |")
    return lines


def _families(report: AccuracyReport) -> list[str]:
    from dnnsplit.predictor.estimators import FAMILIES

    return list(FAMILIES)


def _scatter(report: AccuracyReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, norm, unit in ((axes[0], True, "probe units"), (axes[1], False, "ms")):
        measured = np.array([r.measured_norm if norm else r.measured_ms for r in report.results])
        predicted = np.array([r.predicted_norm if norm else r.predicted_ms
                              for r in report.results])
        ax.scatter(measured, predicted, s=18)
        for r, x, y in zip(report.results, measured, predicted):
            ax.annotate(r.model, (x, y), fontsize=6, alpha=0.7)
        lo, hi = min(measured.min(), predicted.min()) * 0.8, max(measured.max(),
                                                               predicted.max()) * 1.2
        grid = np.array([lo, hi])
        ax.plot(grid, grid, "k-", lw=0.8)
        for f in (0.9, 1.1):
            ax.plot(grid, grid * f, "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(("normalised by the probe" if norm else "raw") + ": ±10% dotted")
    fig.suptitle(f"{report.profile}: held-out models")
    fig.tight_layout()
    save_figure_atomic(fig, path)
