"""The four commands, in-process: help is instant, output is right, user mistakes are one line."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnnsplit.collectors.cli import app as collectors_app
from dnnsplit.executor.cli import app as executor_app
from dnnsplit.partition.cli import app as partition_app
from dnnsplit.predictor.cli import app as predictor_app
from dnnsplit.predictor.features import RECORD_COLUMNS

pytestmark = pytest.mark.usefixtures("fresh_keras_session")

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_partition_graph_json_keys_and_values():
    result = runner.invoke(partition_app, ["graph", "MobileNetV2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"model", "nodes", "edges", "flops", "params", "unmodelled"} <= set(summary)
    assert summary["nodes"] == 156 and summary["params"] == 3538984
    assert summary["unmodelled"] == []


def test_partition_graph_table_and_batch():
    one = runner.invoke(partition_app, ["graph", "vgg16", "--json"])
    four = runner.invoke(partition_app, ["graph", "vgg16", "--json", "--batch", "4"])
    assert json.loads(four.stdout)["flops"] == 4 * json.loads(one.stdout)["flops"]
    table = runner.invoke(partition_app, ["graph", "vgg16"])
    assert "GFLOPs" in table.stdout and "unmodelled  none" in table.stdout


def test_partition_graph_list_and_missing_model():
    listed = runner.invoke(partition_app, ["graph", "--list"])
    assert "ResNet50" in listed.stdout.split()
    assert runner.invoke(partition_app, ["graph"]).exit_code == 2
    both = runner.invoke(partition_app, ["graph", "MobileNetV2", "--list"])  # not ignored
    assert both.exit_code == 2 and both.stdout == ""
    assert both.stderr.strip() == "error: --list lists the model names: give it alone, " \
                                  "without MODEL"


def test_partition_graph_nodes_lists_every_node_a_costs_file_needs():
    table = runner.invoke(partition_app, ["graph", "MobileNetV2", "--nodes"])
    assert table.exit_code == 0, table.output
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["name", "type", "MFLOPs"] and len(rows) == 1 + 156
    assert rows[2].split()[:2] == ["Conv1", "Conv2D"] and rows[2].split()[-1] == "input_layer"
    as_json = json.loads(runner.invoke(partition_app, ["graph", "MobileNetV2", "--nodes",
                                                       "--json"]).stdout)
    assert as_json["nodes"][0]["type"] == "InputLayer" and as_json["nodes"][1]["name"] == "Conv1"
    conv = as_json["nodes"][1]
    assert conv["type"] == "Conv2D" and conv["params"] == 864
    assert conv["inputs"] == [as_json["nodes"][0]["name"]]
    assert conv["output_bytes"] == 112 * 112 * 32 * 4 and conv["flops"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["graph", "nosuchnet"], "neither a model file"),
        (["graph", "missing.keras"], "does not exist"),
        (["graph", "resnet50", "--input-shape", "a,b"], "not a list of integers"),
    ],
)
def test_user_mistakes_give_one_error_line(args, message):
    result = runner.invoke(partition_app, args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_predictor_spec_json_records():
    result = runner.invoke(predictor_app, ["spec", "mobilenet", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 91
    conv = next(r for r in records if r["name"] == "conv1")
    assert conv["layer_type"] == "Conv2D" and conv["stride_h"] == 2 and conv["filters"] == 32


def test_collectors_columns_and_executor_devices():
    cols = runner.invoke(collectors_app, ["columns", "--json"])
    assert json.loads(cols.stdout) == RECORD_COLUMNS
    devices = runner.invoke(executor_app, ["devices", "--json"])
    assert "cpu:0" in json.loads(devices.stdout)["devices"]


@pytest.mark.parametrize("app, args, message", [
    (partition_app, ["plan", "MobileNetV2"], "error: Missing option '--device'. (see `"),
    (partition_app, ["graph", "--batch", "x", "MobileNetV2"], "error: Invalid value for "
                                                                "'--batch'"),
    (predictor_app, ["nope"], "error: No such command 'nope'."),
])
def test_command_line_mistakes_are_one_error_line_too(app, args, message, capsys):
    from dnnsplit.predictor.cli_support import run_app

    with pytest.raises(SystemExit) as exit_info:
        run_app(app, args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message) and "--help`)" in lines[0]


@pytest.mark.parametrize("command, usage", [
    ("partition plan", "Usage: partition plan [OPTIONS] MODEL"),
    ("partition graph", "Usage: partition graph [OPTIONS] [MODEL]"),
    ("collectors models", "Usage: collectors models [OPTIONS] [NAMES]..."),
    ("executor run", "Usage: executor run [OPTIONS] MODEL"),
])
def test_usage_lines_name_values_plainly(command, usage):
    name, sub = command.split()
    app = {"partition": partition_app, "collectors": collectors_app,
           "executor": executor_app}[name]
    text = runner.invoke(app, [sub, "--help"], prog_name=name).stdout
    assert text.splitlines()[0] == usage
    assert "<str>" not in text and "<list[str]>" not in text and "<int" not in text


def test_partition_plan_help_explains_sources_factors_and_call_overhead():
    text = " ".join(runner.invoke(partition_app, ["plan", "--help"]).stdout.split())
    for phrase in ("--device NAME=SOURCE[:xF]", "a device profile", "the folder of one you "
                   "collected", "with --costs a column of that file", ":x4 four times slower",
                   "call_overhead_ms", "one compiled call per frame"):
        assert phrase in text


def test_the_quick_starts_plans_folder_is_ignored_by_git():
    sys.path.insert(0, str(ROOT / ".ci"))
    from readme_command import quick_start_commands

    first = quick_start_commands((ROOT / "README.md").read_text())[0].split()
    out = first[first.index("--out") + 1]
    assert f"/{out}/" in (ROOT / ".gitignore").read_text().split()


def test_options_that_lacked_help_have_it():
    run = runner.invoke(executor_app, ["run", "--help"]).stdout
    assert "print the report as JSON" in run
    predict = runner.invoke(predictor_app, ["predict", "--help"]).stdout
    batch = predict[predict.index("--batch"):].split("\n")[0]
    assert "batch size" in batch


@pytest.mark.parametrize("command", ["collectors", "predictor", "partition", "executor"])
def test_help_is_instant(command):
    code = (f"import sys; sys.argv=['{command}', '--help']; "
            f"from dnnsplit.{command}.cli import main; main()")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0 and "Usage" in done.stdout
    assert "keras" not in done.stderr
    assert elapsed < 2.0  # well under a second on an idle machine; no keras/TF import
    probe = (f"import dnnsplit.{command}.cli, sys; "
             "print('keras' in sys.modules, 'numpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True
                          ).stdout.split() == ["False", "False"]


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    sys.path.insert(0, str(ROOT / ".ci"))
    from readme_command import quick_start_commands

    commands = quick_start_commands((ROOT / "README.md").read_text())
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "pytest" in commands[1] and ".[test]" in commands[1]
    assert "readme_command.py test" in (ROOT / ".ci" / "run").read_text()
