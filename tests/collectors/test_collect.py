"""Collectors on tiny grids: a run, kill-and-resume, overhead subtraction, errors, load process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dnnsplit.collectors.grids import Grid, GridError, load_grids, random_configs
from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.collectors.load import BackgroundLoad
from dnnsplit.collectors.store import CsvStore, StoreError, read_rows
from dnnsplit.predictor.features import RECORD_COLUMNS

pytestmark = pytest.mark.usefixtures("fresh_keras_session")
ROOT = Path(__file__).resolve().parents[2]


def tiny_grids(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Conv2D.json").write_text(json.dumps({
        "layer_type": "Conv2D", "family": "conv", "random": n, "seed": 1, "from_models": False,
        "space": {"hw": [8, 12], "cin": [4, 8], "cout": [8], "kernel": [1, 3],
                  "tail": [[], ["BatchNormalization", "Activation:relu"]]}}))
    (folder / "Add.json").write_text(json.dumps({
        "layer_type": "Add", "family": "merge", "random": n, "seed": 2, "from_models": False,
        "space": {"hw": [8, 10, 12], "c": [4, 8, 16, 32]}}))
    return folder


FAST_RULE = "StopRule(min_repeats=3, max_repeats=20, min_time_s=0.0, max_time_s=0.05, warmup=1, batch=3)"


def run_collect_script(out: Path, grids: Path, n_configs: int, loads=(0.0,)) -> str:
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from dnnsplit.collectors.collect import CollectSettings, collect
        from dnnsplit.collectors.timing import StopRule
        settings = CollectSettings(out_dir={str(out)!r}, grid_dir={str(grids)!r}, models=[],
                                   loads={tuple(loads)!r}, rule={FAST_RULE}, probe_every_s=60)
        report = collect(settings, progress=False)
        print("MEASURED", report.measured, "DONE", report.already_done)
    """)


def test_collect_writes_one_row_per_config_with_all_columns(tmp_path):
    grids = tiny_grids(tmp_path / "grids")
    out = tmp_path / "out"
    script = run_collect_script(out, grids, 3)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MEASURED 6 DONE 0" in done.stdout
    rows = read_rows(out / "Conv2D.csv", RECORD_COLUMNS)
    assert len(rows) == 3
    for row in rows:
        assert float(row["median_ms"]) >= 0 and float(row["ref_probe_ms"]) > 0
        assert float(row["p10_ms"]) <= float(row["median_ms"]) <= float(row["p90_ms"])
        config = KernelConfig.from_json(row["kernel_config"])
        assert config.key == row["kernel_key"] and config.pattern == row["fused_pattern"]
        assert row["layer_type"] == "Conv2D" and row["threads"] == "1"


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path):
    grids = tiny_grids(tmp_path / "grids", n=12)
    out = tmp_path / "out"
    script = run_collect_script(out, grids, 12)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        n = sum(len(read_rows(p)) for p in out.glob("*.csv")) if out.exists() else 0
        if n >= 4:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["kernel_key"] for p in out.glob("*.csv") for r in read_rows(p)}
    assert 4 <= len(before) < 24
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # resumed: what was there is counted as done, not measured twice
    assert f"MEASURED {24 - len(before)} DONE {len(before)}" in done.stdout
    rows = [r for p in out.glob("*.csv") for r in read_rows(p, RECORD_COLUMNS)]
    keys = [r["kernel_key"] for r in rows]
    assert len(keys) == len(set(keys)) == 24
    assert before <= set(keys)


def test_a_torn_last_line_is_repaired_and_measured_again(tmp_path):
    path = tmp_path / "x.csv"
    store = CsvStore(path, ["kernel_key", "load_target", "v"], ["kernel_key", "load_target"])
    store.append({"kernel_key": "a", "load_target": "0", "v": 1})
    with open(path, "a") as handle:
        handle.write("b,0,")  # killed in the middle of a row
    reopened = CsvStore(path, ["kernel_key", "load_target", "v"], ["kernel_key", "load_target"])
    assert reopened.done() == {("a", "0")}
    assert reopened.append({"kernel_key": "b", "load_target": "0", "v": 2})
    assert not reopened.append({"kernel_key": "b", "load_target": "0", "v": 3})
    assert [r["kernel_key"] for r in read_rows(path)] == ["a", "b"]


def test_malformed_csv_and_grid_files_give_clear_errors(tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    with pytest.raises(StoreError, match="not a dnnsplit measurement file"):
        read_rows(bad_csv, RECORD_COLUMNS)
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "Conv2D.json").write_text("{not json")
    with pytest.raises(GridError, match="is not JSON"):
        load_grids(grids)
    (grids / "Conv2D.json").write_text(json.dumps({"layer_type": "Conv2D", "family": "conv"}))
    with pytest.raises(GridError, match="malformed"):
        load_grids(grids)
    (grids / "Conv2D.json").write_text(json.dumps(
        {"layer_type": "Conv2D", "family": "nope", "random": 1, "space": {}}))
    with pytest.raises(GridError, match="unknown family"):
        load_grids(grids)
    with pytest.raises(GridError, match="no grid file for Dense"):
        load_grids(grids, ["Dense"])


def test_shipped_grids_load_and_sample_within_their_flops_cap():
    grids = load_grids()
    assert {g.layer_type for g in grids} >= {
        "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense",
        "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
        "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "Softmax",
        "Add", "Multiply", "Concatenate", "ZeroPadding2D", "UpSampling2D", "Flatten", "Reshape",
        "Dropout", "Rescaling", "Normalization"}
    conv = next(g for g in grids if g.layer_type == "Conv2D")
    small = Grid(conv.layer_type, conv.family, 5, conv.seed, False, conv.space, conv.max_gflops)
    configs = random_configs(small)
    assert len(configs) == 5 and configs == random_configs(small)  # reproducible
    assert all(c.record()["flops"] <= conv.max_gflops * 1e9 for c in configs)


def test_an_extra_block_adds_draws_and_never_changes_the_earlier_ones():
    space = {"hw": [8, 12, 16], "cin": [4, 8], "cout": [8, 16], "kernel": [1, 3]}
    base = Grid("Conv2D", "conv", 6, 1, False, space)
    extra = Grid("Conv2D", "conv", 6, 1, False, space,
                 extra=({"random": 4, "seed": 5, "space": {"kernel": [2, 4]}},))
    before, after = random_configs(base), random_configs(extra)
    assert after[:6] == before and len(after) == 10
    assert {dict(c.layers[0][1])["kernel_size"] for c in after[6:]} <= {(2, 2), (4, 4)}
    assert len({c.key for c in after}) == 10


def test_an_extra_block_with_a_params_range_draws_only_kernels_with_that_many_weights():
    space = {"hw": [2, 4], "cin": [16, 64, 256], "cout": [16, 64, 256], "kernel": [1, 3, 5]}
    grid = Grid("Conv2D", "conv", 3, 1, False, space,
                extra=({"random": 5, "seed": 2, "space": {}, "params": (1e5, 1e6)},))
    configs = random_configs(grid)
    assert len(configs) == 8
    assert all(1e5 <= c.record()["params"] <= 1e6 for c in configs[3:])
    # the same block without the range draws outside it (the range is what keeps them inside)
    free = Grid("Conv2D", "conv", 3, 1, False, space,
                extra=({"random": 5, "seed": 2, "space": {}},))
    assert any(not 1e5 <= c.record()["params"] <= 1e6 for c in random_configs(free)[3:])


def test_an_extra_block_that_excludes_evaluation_never_draws_their_layers(monkeypatch):
    from dnnsplit.collectors import grids as grids_module

    # the held-out set, for this test: the autoencoder, whose transposed convolutions are
    # 8->16 (128 filters), 16->32 (64), 32->64 (32) and 64->128 (16), kernel 3, stride 2
    monkeypatch.setattr(grids_module, "model_split", lambda: {"evaluation": ["ConvAutoencoder"]})
    grids_module.evaluation_signatures.cache_clear()
    space = {"hw": [8, 16], "cin": [256, 128, 64], "cout": [128, 64, 96], "kernel": [3],
             "strides": [2], "padding": ["same"], "use_bias": [True, False],
             "tail": [[], ["BatchNormalization"]], "batch": [1, 2]}
    block = {"random": 30, "seed": 3, "space": {}}
    free = random_configs(Grid("Conv2DTranspose", "conv", 0, 1, False, space, extra=(block,)))
    held_out = {(8, 256, 128), (16, 128, 64)}  # (in size, in channels, filters) of its layers

    def geometry(config):
        return (config.input_shapes[0][1], config.input_shapes[0][3],
                dict(config.layers[0][1])["filters"])

    assert held_out & {geometry(c) for c in free}  # the space holds them: drawn when allowed
    kept = random_configs(Grid("Conv2DTranspose", "conv", 0, 1, False, space,
                               extra=({**block, "exclude_evaluation": True},)))
    assert kept and not held_out & {geometry(c) for c in kept}  # any bias, tail or batch
    grids_module.evaluation_signatures.cache_clear()


def test_a_params_range_must_be_low_then_high(tmp_path):
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "Conv2D.json").write_text(json.dumps(
        {"layer_type": "Conv2D", "family": "conv", "random": 1, "space": {"hw": [8]},
         "extra": [{"random": 2, "space": {}, "params": [5e6, 1e6]}]}))
    with pytest.raises(GridError, match="params range"):
        load_grids(grids)


def test_a_malformed_extra_block_is_refused(tmp_path):
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "Conv2D.json").write_text(json.dumps(
        {"layer_type": "Conv2D", "family": "conv", "random": 1, "space": {"hw": [8]},
         "extra": [{"seed": 1, "space": {}}]}))
    with pytest.raises(GridError, match="malformed"):
        load_grids(grids)
    (grids / "Conv2D.json").write_text(json.dumps(
        {"layer_type": "Conv2D", "family": "conv", "random": 1, "space": {"hw": [8]},
         "extra": [{"random": 2, "space": {"kernel": {"values": [1, 3], "weights": [1]}}}]}))
    with pytest.raises(GridError, match="'kernel'"):
        load_grids(grids)


def test_empty_call_overhead_is_subtracted():
    from dnnsplit.collectors.timing import StopRule, compile_identity, measure, place_inputs, \
        random_inputs, summarise

    inputs = place_inputs(random_inputs([(1, 8, 8, 4)]))
    rule = StopRule(min_repeats=20, max_repeats=60, min_time_s=0.0, max_time_s=0.5)
    raw = measure(compile_identity(), inputs, 0.0, rule)
    assert raw.median_ms > 0
    corrected = summarise([raw.median_ms] * 5, overhead_ms=raw.median_ms)
    assert corrected.median_ms == 0.0 and corrected.overhead_ms == raw.median_ms
    assert summarise([3.0, 3.0, 3.0], overhead_ms=1.0).median_ms == pytest.approx(2.0)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[1].split()[0] != "Z"


def test_background_load_starts_is_observed_and_always_stops():
    with BackgroundLoad(0.5, cores=1) as load:
        pids = load.pids
        assert len(pids) == 1 and all(_alive(p) for p in pids)
        time.sleep(0.6)
        assert 0.25 <= load.observed() <= 0.8
    assert not any(_alive(p) for p in pids)
    with pytest.raises(RuntimeError):
        with BackgroundLoad(0.3, cores=1) as load:
            pids = load.pids
            raise RuntimeError("a measurement failed")
    assert not any(_alive(p) for p in pids)
    with BackgroundLoad(0.0) as load:
        assert load.pids == [] and load.observed() == 0.0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_busy_cpus_counts_other_processes_work_and_not_this_ones():
    import threading

    from dnnsplit.collectors.load import busy_cpus

    with BackgroundLoad(1.0, cores=1):  # another process spinning: about one CPU
        assert 0.6 <= busy_cpus(0.5) <= 1.5
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()  # this process's own thread spinning is not "other work"
    try:
        assert busy_cpus(0.5) < 0.5
    finally:
        stop.set()
        spinner.join()


def test_a_merge_with_a_constant_operand_is_built_as_that_op_with_the_same_record():
    """MobileNetV3's hard sigmoid (``x + 3`` then ReLU6, ``* (1/6)``): one tensor input."""
    import keras
    import numpy as np

    from dnnsplit.predictor.fusion import find_kernels, kernel_record
    from dnnsplit.predictor.model_graph import TaskGraph

    x = keras.Input((1, 1, 16))
    y = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    tg = TaskGraph.from_keras(keras.Model(x, keras.layers.Multiply()([x, y])))
    constant = [k for k in find_kernels(tg)
                if len(tg.spec(k.nodes[0]).input_shapes) == 1
                and tg.graph.nodes[k.nodes[0]]["layer_type"] in ("ops.Add", "ops.Multiply")]
    assert len(constant) == 2  # x + 3 (fused with the ReLU) and * (1/6)
    for kernel in constant:
        specs = [tg.spec(n) for n in kernel.nodes]
        config = KernelConfig.from_specs(specs)
        model = config.build()
        assert config.record(model) == kernel_record(specs)
        ones = np.ones(config.input_shapes[0], "float32")
        assert not np.allclose(np.asarray(model(ones)), ones)  # the constant is applied


def test_the_budget_counts_from_the_first_measurement_and_each_step_is_said(tmp_path,
                                                                            monkeypatch):
    """Set-up (reading models, drawing grids, the probe) is not charged to --budget-minutes:
    here it takes longer than the whole budget, and a kernel is still measured."""
    import dnnsplit.collectors.collect as collect_module
    from dnnsplit.collectors.collect import (CollectSettings, collect, collection_plan,
                                             summary_sentence)
    from dnnsplit.collectors.timing import StopRule  # noqa: F401 - FAST_RULE names it

    def slow_plan(*args, **kwargs):
        time.sleep(1.5)
        return collection_plan(*args, **kwargs)

    monkeypatch.setattr(collect_module, "configure_threads", lambda threads: None)
    monkeypatch.setattr(collect_module, "collection_plan", slow_plan)
    grids = tiny_grids(tmp_path / "grids", n=12)
    said = []
    settings = CollectSettings(out_dir=tmp_path / "out", grid_dir=grids, models=[],
                               budget_minutes=0.01, rule=eval(FAST_RULE), probe_every_s=60)
    report = collect(settings, progress=False, say=said.append)
    planned = int(said[0].split()[0])
    assert said == [f"{planned} kernel configuration(s) to measure (0 already in "
                    f"{tmp_path / 'out'})"]
    assert report.measured >= 1  # the 1.5 s of set-up did not use up the 0.6 s budget
    assert report.measured + report.remaining == planned
    sentence = summary_sentence(report, tmp_path / "out")
    if report.remaining:
        assert report.budget_exhausted
        assert sentence.endswith(f"{report.remaining} remain (the budget ran out): run the "
                                 "same command to continue")
    done = summary_sentence(type(report)(measured=3, already_done=77), tmp_path / "out")
    assert done == (f"3 kernel configuration(s) measured in 0.0 min; 77 were already there: "
                    f"every planned configuration is in {tmp_path / 'out'}")
