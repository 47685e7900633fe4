"""Train on a synthetic profile; bundles round-trip, and stale ones are rebuilt or refused."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from dnnsplit.predictor.bundle import BUNDLE_NAME, Bundle, ProfileError, load_bundle
from dnnsplit.predictor.cli import app
from dnnsplit.predictor.compose import predict_graph
from dnnsplit.predictor.estimators import BundleFormatError
from dnnsplit.predictor.model_graph import TaskGraph
from synthetic_profile import make_profile

pytestmark = pytest.mark.usefixtures("fresh_keras_session")
runner = CliRunner()


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    folder = make_profile(tmp_path_factory.mktemp("profiles") / "synthetic-cpu")
    result = runner.invoke(app, ["train", "--data", str(folder), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Conv2D" in result.stdout and "chosen" in result.stdout
    return folder


def small_model():
    import keras

    x = keras.Input((14, 14, 8), name="x")
    y = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.Activation("relu", name="act")(y)
    z = keras.layers.Conv2D(16, 1, name="c2")(x)
    y = keras.layers.Add(name="add")([y, z])
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(10, name="fc")(y), name="small")


def test_bundle_round_trip_gives_identical_predictions(profile):
    bundle = load_bundle(profile)
    again = Bundle.from_dict(json.loads(json.dumps(bundle.to_dict())))
    tg = TaskGraph.from_keras(small_model())
    first, second = predict_graph(bundle, tg), predict_graph(again, tg)
    assert first.node_ms == second.node_ms and first.total_ms == second.total_ms
    assert set(bundle.cv) == {"Add", "Conv2D", "Dense"}
    assert bundle.chosen["Conv2D"] in bundle.cv["Conv2D"]


def test_prediction_follows_the_known_cost_law(profile):
    from synthetic_profile import synthetic_ms

    from dnnsplit.predictor.fusion import find_kernels, kernel_record

    bundle = load_bundle(profile)
    tg = TaskGraph.from_keras(small_model())
    prediction = predict_graph(bundle, tg, probe_ms=2.0)
    expected = 0.0
    for kernel in find_kernels(tg):
        record = kernel_record([tg.spec(n) for n in kernel.nodes])
        if record["layer_type"] in ("Conv2D", "Dense", "Add"):
            expected += synthetic_ms(record)
    modelled = sum(ms for k, ms in prediction.kernel_ms
                   if tg.graph.nodes[k.nodes[0]]["layer_type"] in ("Conv2D", "Dense", "Add"))
    assert modelled == pytest.approx(expected, rel=0.35)
    assert "GlobalAveragePooling2D" in prediction.unmodelled  # fallback is reported
    assert sum(prediction.node_ms.values()) + prediction.call_overhead_ms == \
        pytest.approx(prediction.total_ms)


def test_bundle_from_another_xgboost_is_rebuilt_from_the_csvs(profile, tmp_path):
    copy = tmp_path / "synthetic-cpu"
    shutil.copytree(profile, copy)
    data = json.loads((copy / BUNDLE_NAME).read_text())
    data["versions"]["xgboost"] = "1.0.0"
    (copy / BUNDLE_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleFormatError, match="XGBoost 1.x"):
        load_bundle(copy, rebuild=False)
    rebuilt = load_bundle(copy)
    assert rebuilt.versions["xgboost"] != "1.0.0"
    assert json.loads((copy / BUNDLE_NAME).read_text())["versions"]["xgboost"] != "1.0.0"


def test_bundle_without_csvs_is_refused_clearly(profile, tmp_path):
    lone = tmp_path / "lonely"
    lone.mkdir()
    data = json.loads((profile / BUNDLE_NAME).read_text())
    data["format"] = 999
    (lone / BUNDLE_NAME).write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="no CSVs"):
        load_bundle(lone)
    with pytest.raises(ProfileError, match="unknown device profile"):
        load_bundle("cpu-0t-nonexistent")


def test_predict_cli_json_and_errors(profile, tmp_path):
    path = tmp_path / "small.keras"
    small_model().save(path)
    result = runner.invoke(app, ["predict", str(path), "--device", str(profile), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"model", "device", "total_ms", "layers"} <= set(out)
    assert [l["name"] for l in out["layers"]][:2] == ["x", "c1"]
    assert out["total_ms"] == pytest.approx(sum(l["ms"] for l in out["layers"])
                                            + out["call_overhead_ms"])
    bad = runner.invoke(app, ["predict", str(path), "--device", "no-such-profile"])
    assert bad.exit_code == 2 and "unknown device profile" in bad.stderr
    table = runner.invoke(app, ["predict", str(path), "--device", str(profile)])
    assert "unmodelled: GlobalAveragePooling2D" in table.stdout


def test_train_on_a_malformed_csv_gives_one_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "Conv2D.csv").write_text("layer_type,median_ms\nConv2D,1\n")
    result = runner.invoke(app, ["train", "--data", str(folder), "--quiet"])
    assert result.exit_code == 2 and "not a dnnsplit measurement file" in result.stderr


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        result.output
    return lines[0]


@pytest.mark.parametrize("column, value, says", [
    ("median_ms", "oops", "median_ms is 'oops', not a number"),
    ("ref_probe_ms", "0", "ref_probe_ms is 0, it must be above 0"),
    ("flops", "nan", "flops is 'nan', not a number"),
])
def test_a_well_formed_row_with_a_bad_number_is_refused_before_training(profile, tmp_path,
                                                                        column, value, says):
    import csv

    folder = tmp_path / "bad-number"
    shutil.copytree(profile, folder)
    (folder / BUNDLE_NAME).unlink()
    path = folder / "Dense.csv"
    rows = list(csv.DictReader(path.open()))
    rows[4][column] = value  # line 6 of the file (the header is line 1)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(app, ["train", "--data", str(folder), "--quiet"])
    line = _one_error_line(result)
    assert f"{path}, line 6: {says}" in line
    assert not (folder / BUNDLE_NAME).exists()


def test_a_bad_number_in_the_ground_truth_is_refused_before_training(profile, tmp_path):
    folder = tmp_path / "bad-truth"
    shutil.copytree(profile, folder)
    (folder / "models.csv").write_text(
        "model,split,load_target,load,ref_probe_ms,median_ms\nResNet50,train,0,0,16,fast\n")
    line = _one_error_line(runner.invoke(app, ["train", "--data", str(folder), "--quiet"]))
    assert "models.csv, line 2: median_ms is 'fast', not a number" in line


def test_train_on_a_folder_that_does_not_exist_says_so(tmp_path):
    line = _one_error_line(runner.invoke(app, ["train", "--data", str(tmp_path / "nope")]))
    assert f"{tmp_path / 'nope'} is not a folder" in line


def test_evaluate_writes_a_report_and_plot_with_consistent_numbers(profile, tmp_path):
    import shutil

    from dnnsplit.collectors.ground_truth import GROUND_TRUTH_COLUMNS
    from dnnsplit.collectors.store import CsvStore
    from dnnsplit.predictor.evaluate import evaluate_profile, write_report

    folder = tmp_path / "synthetic-cpu"
    shutil.copytree(profile, folder)
    store = CsvStore(folder / "models.csv", list(GROUND_TRUTH_COLUMNS), ("model", "load_target"))
    for name, ms in (("SqueezeNet", 9.0), ("AlexNet", 30.0), ("MobileNet", 18.0)):
        row = {c: "" for c in GROUND_TRUTH_COLUMNS}
        row.update(model=name, split="evaluation", load_target="0", load=0.0,
                   ref_probe_ms=2.0, median_ms=ms)
        store.append(row)
    report = evaluate_profile(str(folder))
    assert [r.model for r in report.results] == ["SqueezeNet", "AlexNet", "MobileNet"]
    for r in report.results:
        assert r.measured_norm == pytest.approx(r.measured_ms / 2.0)
        assert r.predicted_ms == pytest.approx(r.predicted_norm * load_bundle(folder)
                                               .reference_probe_ms)
    within = report.fraction_within(0.10, normalised=False)
    assert within == sum(abs(r.error_raw) <= 0.10 for r in report.results) / 3
    md, png = write_report(report, tmp_path / "docs", command="predictor evaluate")
    text = md.read_text()
    assert "SqueezeNet" in text and "within ±10%" in text and f"{within:.0%}" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ProfileError, match="no train models"):
        evaluate_profile(str(folder), split="train")
    (folder / "evaluation_caveats.json").write_text('{"AlexNet": "its grid was widened"}')
    md, _ = write_report(evaluate_profile(str(folder)), tmp_path / "docs")
    assert "**Not fully blind: AlexNet.** its grid was widened" in md.read_text()
    (folder / "evaluation_caveats.json").write_text("{not json")
    with pytest.raises(ProfileError, match="caveats file .* is not JSON"):
        evaluate_profile(str(folder))


def _result(model, predicted_norm, measured_norm=1.0):
    from dnnsplit.predictor.evaluate import ModelResult

    return ModelResult(model, "0", measured_norm * 10, predicted_norm * 10, measured_norm,
                       predicted_norm)


def test_goal_verdict_says_met_only_when_every_part_of_the_goal_holds():
    from dnnsplit.predictor.evaluate import AccuracyReport

    good = [_result(f"m{i}", (1 + i) * 1.02, 1 + i) for i in range(20)]
    assert "**met**" in AccuracyReport("p", good).goal_verdict()
    # one result beyond +-20%: 95% are still within 10%, but the goal is not met, and it is named
    one_far = good[:19] + [_result("far", 20 * 1.25, 20)]
    verdict = AccuracyReport("p", one_far).goal_verdict()
    assert "**not met**" in verdict and "1 beyond ±20% (far)" in verdict and "95% within" in verdict
    # three of twenty at +15%: 85% within 10%, below the 90% goal; two of twenty: met
    three_off = good[:17] + [_result(m, n * 1.15, n) for m, n in (("a", 18), ("b", 19), ("c", 20))]
    verdict = AccuracyReport("p", three_off).goal_verdict()
    assert "**not met**" in verdict and "85% within ±10%" in verdict and "0 beyond" in verdict
    assert "**met**" in AccuracyReport("p", good[:18] + three_off[18:]).goal_verdict()
    # a U-Net generator at -17%: inside +-20% but outside its own +-15%
    unet = good[:19] + [_result("Pix2PixUNet64", 20 * 0.83, 20)]
    verdict = AccuracyReport("p", unet).goal_verdict()
    assert "**not met**" in verdict and "U-Nets beyond ±15%: Pix2PixUNet64" in verdict
    # every error small but the ranking reversed: Spearman fails the goal
    reversed_ = [_result(f"m{i}", 1.0 + 0.001 * (19 - i), 1.0 + 0.001 * i) for i in range(20)]
    verdict = AccuracyReport("p", reversed_).goal_verdict()
    assert "100% within" in verdict and "**not met**" in verdict


def test_report_summarises_measured_error_sources_when_present(tmp_path):
    import json

    from dnnsplit.predictor.evaluate import AccuracyReport, write_report

    report = AccuracyReport("p", [_result("m1", 1.3), _result("m2", 1.0), _result("m3", 2.1, 2)])
    md, _ = write_report(report, tmp_path)
    assert "## Where the error comes from" in md.read_text()
    assert "Not measured yet" in md.read_text()
    (tmp_path / "error-sources-p.json").write_text(json.dumps({
        "measured_at": "2026-11-24T18:00+00:00", "command": "python benchmarks/error_sources.py",
        "models": [{"model": "m1", "whole_ms": 200.0, "composition": 1.02, "regressors": 0.71,
                    "full_over_whole": 0.67}],
        "by_type": [{"model": "m1", "type": "Conv2D", "measured_ms": 44.0,
                     "predicted_ms": 43.0, "whole_ms": 200.0},
                    {"model": "m1", "type": "Conv2DTranspose", "measured_ms": 165.0,
                     "predicted_ms": 105.0, "whole_ms": 200.0}]}))
    text = write_report(report, tmp_path)[0].read_text()
    assert "| m1 | 200.0 | 1.02x | 0.71x | 0.67x |" in text
    section = text.split("largest per-type contributions")[1]
    # ordered by the size of the contribution: the transposed convolutions first
    assert section.index("Conv2DTranspose") < section.index("| Conv2D |")
    assert "-30.0%" in section and "-0.5%" in section


def test_an_assignment_breaks_fusions_and_adds_one_call_per_device(profile):
    bundle = load_bundle(profile)
    tg = TaskGraph.from_keras(small_model())
    whole = predict_graph(bundle, tg)
    same = predict_graph(bundle, tg, assignment={n: "a" for n in tg.nodes})
    assert same.total_ms == pytest.approx(whole.total_ms)
    # c1 -> bn -> act is one fused kernel; put bn and everything after it on a second device
    order = list(tg.nodes)
    split = {n: ("a" if order.index(n) < order.index("bn") else "b") for n in order}
    cut = predict_graph(bundle, tg, assignment=split)
    assert cut.call_overhead_ms == pytest.approx(2 * whole.call_overhead_ms)
    assert len(cut.kernel_ms) == len(whole.kernel_ms) + 1
    fused = {k.nodes[0]: k.nodes for k, _ in whole.kernel_ms}
    assert "bn" in fused["c1"] and "bn" not in {n for k, _ in cut.kernel_ms
                                               if k.nodes[0] == "c1" for n in k.nodes}


def test_a_malformed_error_sources_file_is_one_clear_error(tmp_path):
    from dnnsplit.predictor.evaluate import AccuracyReport, write_report

    (tmp_path / "error-sources-p.json").write_text('{"models": [{"model": "m1"}]}')
    with pytest.raises(ProfileError, match="error-sources file .* is malformed.*re-run"):
        write_report(AccuracyReport("p", [_result("m1", 1.3), _result("m2", 1.0),
                                          _result("m3", 2.1, 2)]), tmp_path)
    assert not list(tmp_path.glob("accuracy-*")), "nothing half-written"


def test_streaming_cost_is_linear_above_the_threshold_and_zero_beyond_the_cache(profile):
    bundle = load_bundle(profile)
    assert bundle.streaming == {} and bundle.streaming_cost(10 * 2 ** 20) == 0.0
    bundle.streaming = {"per_mib": 0.01, "threshold_mib": 1.0, "cache_mib": 32.0}
    assert bundle.streaming_cost(0.5 * 2 ** 20) == 0.0
    assert bundle.streaming_cost(5 * 2 ** 20) == pytest.approx(0.04)
    assert bundle.streaming_cost(33 * 2 ** 20) == 0.0  # streamed when timed alone too


def test_each_kernel_pays_its_streaming_cost_scaled_like_its_time(profile):
    bundle = load_bundle(profile)
    tg = TaskGraph.from_keras(small_model())
    plain = {tuple(k.nodes): ms for k, ms in predict_graph(bundle, tg, probe_ms=2.0).kernel_ms}
    bundle.streaming = {"per_mib": 1.0, "threshold_mib": 0.0, "cache_mib": 32.0}
    streamed = predict_graph(bundle, tg, probe_ms=2.0)
    assert predict_graph(bundle, tg, probe_ms=2.0, streaming=False).total_ms == \
        pytest.approx(sum(plain.values()) + streamed.call_overhead_ms)
    for kernel, ms in streamed.kernel_ms:
        weights = 4 * sum(tg.spec(n).params or 0 for n in kernel.nodes)
        expected = 1.0 * weights / 2 ** 20 * 2.0 * bundle.correction
        assert ms - plain[tuple(kernel.nodes)] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert sum(ms for _, ms in streamed.kernel_ms) > sum(plain.values())


def test_a_streaming_fit_beside_the_csvs_is_trained_in_and_makes_the_bundle_stale(profile,
                                                                                 tmp_path):
    from dnnsplit.predictor.bundle import STREAMING_NAME, data_hash

    copy = tmp_path / "synthetic-cpu"
    shutil.copytree(profile, copy)
    before = data_hash(copy)
    fit = {"per_mib": 0.002, "threshold_mib": 0.5, "cache_mib": 32.0, "kernels": []}
    (copy / STREAMING_NAME).write_text(json.dumps(fit))
    assert data_hash(copy) != before
    with pytest.raises(BundleFormatError, match="data .* changed since it was trained"):
        load_bundle(copy, rebuild=False)
    rebuilt = load_bundle(copy)
    assert rebuilt.streaming == {"per_mib": 0.002, "threshold_mib": 0.5, "cache_mib": 32.0}
    assert Bundle.from_dict(json.loads((copy / BUNDLE_NAME).read_text())).streaming == \
        rebuilt.streaming
    (copy / STREAMING_NAME).write_text('{"per_mib": 0.002}')
    with pytest.raises(ProfileError, match="not a weight-streaming fit"):
        load_bundle(copy)
    (copy / STREAMING_NAME).write_text("per_mib = 0.002")
    with pytest.raises(ProfileError, match="weight-streaming fit .* is not JSON"):
        load_bundle(copy)


def test_a_profile_says_which_backend_and_threads_it_was_measured_with(profile):
    bundle = load_bundle(profile)
    assert bundle.meta["backend"] == "tensorflow" and bundle.meta["threads"] == 1
    assert bundle.runtime == ("tensorflow", 1)
    # a bundle without them (trained before they were recorded): from the profile's name
    for name, runtime in (("cpu-2t-jax", ("jax", 2)), ("gpu-1t-tensorflow", ("tensorflow", 1)),
                          ("phone", ("tensorflow", 1))):
        bare = Bundle.from_dict({**bundle.to_dict(), "profile": name,
                                 "meta": {"target": "per-row probe"}})
        assert bare.runtime == runtime
    two = Bundle.from_dict({**bundle.to_dict(), "meta": {"backend": "jax", "threads": 2}})
    assert two.runtime == ("jax", 2)
