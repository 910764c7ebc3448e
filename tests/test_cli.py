"""The command line, driven through typer's CliRunner, and its start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app

runner = CliRunner()
TINY_FLAGS = ["--epochs", "2", "--series-length", "1500", "--window", "10", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["plot"]])
def test_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from echo_keras.cli.app import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0, r.output; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_train_json_prints_one_object_and_writes_the_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {
        "run_dir",
        "epochs",
        "steps",
        "final_loss",
        "train_seconds",
        "steps_per_second",
    }
    assert payload["run_dir"] == str(run_dir)
    assert payload["epochs"] == 2 and payload["steps"] == 2 * 30
    assert payload["steps_per_second"] > 0
    for name in ("config.json", "model.keras", "history.csv", "last_batch.npz"):
        assert (run_dir / name).is_file()
    config = json.loads((run_dir / "config.json").read_text())
    for key in (
        "num_epochs",
        "total_series_length",
        "truncated_backprop_length",
        "state_size",
        "num_classes",
        "echo_step",
        "batch_size",
        "learning_rate",
        "seed",
    ):
        assert key in config
    assert config["truncated_backprop_length"] == 10
    assert {"keras", "tensorflow", "numpy"} <= set(config["versions"])


def test_train_summary_and_the_dropped_remainder_notice(tmp_path):
    result = invoke(
        "train",
        "--run-dir",
        tmp_path / "run",
        "--epochs",
        "1",
        "--series-length",
        "1503",
        "--window",
        "10",
    )
    assert result.exit_code == 0, result.output
    assert "dropping the last 3" in result.stderr
    assert "Trained 1 epoch" in result.stdout and "batches/s" in result.stdout


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--window", "-3"], "--window"),
        (["--state-size", "0"], "--state-size"),
        (["--series-length", "0"], "--series-length"),
        (["--num-classes", "1"], "--num-classes"),
        (["--echo-step", "-1"], "--echo-step"),
        (["--echo-step", "50000"], "--echo-step"),
        (["--series-length", "20"], "--series-length"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--learning-rate", "inf"], "--learning-rate"),
        (["--epochs", "five"], "--epochs"),
        (["--learning-rate", "fast"], "--learning-rate"),
        (["--plot-every", "0"], "--plot-every"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_values_get_one_line_and_exit_2_and_write_nothing(tmp_path, args, flag):
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and flag in lines[0]
    assert "Traceback" not in result.output
    assert not run_dir.exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    result = invoke("train", "--run-dir", target, *TINY_FLAGS)
    assert result.exit_code == 2 and "--run-dir" in result.stderr
    assert target.read_text() == "mine"


def test_unwritable_run_dir_is_refused():
    # /proc refuses new entries even to root, which ignores permission bits.
    result = invoke("train", "--run-dir", "/proc/echo-keras-run", *TINY_FLAGS)
    assert result.exit_code == 2, result.output
    assert "--run-dir" in result.stderr and "cannot be written" in result.stderr


def test_an_existing_run_is_refused_without_overwrite_or_resume(tiny_run):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()}
    result = invoke("train", "--run-dir", tiny_run, *TINY_FLAGS)
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr and "--resume" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()} == before


def test_overwrite_and_resume_together_are_refused(tmp_path):
    result = invoke("train", "--run-dir", tmp_path / "r", "--overwrite", "--resume")
    assert result.exit_code == 2 and "cannot be used together" in result.stderr


def test_no_progress_bar_when_stdout_is_not_a_terminal(tmp_path):
    result = invoke(
        "train",
        "--run-dir",
        tmp_path / "run",
        "--epochs",
        "1",
        "--series-length",
        "1500",
        "--window",
        "10",
    )
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stdout and "Epoch 1/1" not in result.stdout


def test_python_dash_m_runs_the_tool():
    out = subprocess.run(
        [sys.executable, "-m", "echo_keras", "--help"], capture_output=True, text=True, check=True
    )
    assert "train" in out.stdout and "evaluate" in out.stdout and "plot" in out.stdout
