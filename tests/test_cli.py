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
