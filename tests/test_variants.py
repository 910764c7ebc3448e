"""The tutorial series' variants: cells, stacked layers, dropout, K symbols, optimizers, logs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app
from echo_keras.config import TrainConfig
from echo_keras.evaluation import evaluate
from echo_keras.run import files
from echo_keras.training import train

runner = CliRunner()
# 200 windows of 5 x 15 per epoch, 5 epochs: enough for every variant to learn the echo.
LEARNABLE = TrainConfig(total_series_length=15000)


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize(
    "changes",
    [
        {"cell": "gru"},
        {"cell": "simple"},
        {"num_layers": 2},
        {"dropout": 0.1},
        {"num_classes": 3},
        {"optimizer": "adam", "learning_rate": 0.01},
        {"optimizer": "rmsprop", "learning_rate": 0.01},
        {"optimizer": "sgd", "learning_rate": 0.5},
    ],
    ids=lambda changes: "-".join(f"{k}={v}" for k, v in changes.items()),
)
def test_each_variant_learns_the_echo_through_the_carried_state(tmp_path, changes):
    config = dataclasses.replace(LEARNABLE, **changes)
    train(config, tmp_path / "run")
    assert files.load_config(tmp_path / "run") == config
    metrics = evaluate(tmp_path / "run")
    assert metrics.accuracy >= 0.97, metrics
    assert metrics.boundary_accuracy >= 0.97, metrics


def test_a_stacked_model_carries_and_resets_every_layers_state(tmp_path):
    from echo_keras.callbacks import ResetStatesAtEpochStart
    from echo_keras.model import state_variables
    from echo_keras.training import build_compiled_model, fit_epochs
    from tests.test_training import StateProbe

    config = dataclasses.replace(LEARNABLE, num_layers=3, num_epochs=2, total_series_length=3000)
    model = build_compiled_model(config)
    assert len(state_variables(model)) == 3 * 2  # hidden and cell state of each LSTM layer
    probe = StateProbe()
    fit_epochs(model, config, [ResetStatesAtEpochStart(), probe])
    assert all(np.all(s == 0) for s in probe.at_epoch_begin[1])
    assert all(not np.allclose(s, 0) for s in probe.at_epoch_end[1])

    run_dir = tmp_path / "stacked"
    train(dataclasses.replace(LEARNABLE, num_layers=2), run_dir)
    carried = evaluate(run_dir)
    reset = evaluate(run_dir, reset_each_window=True)
    assert carried.boundary_accuracy >= 0.97
    assert reset.boundary_accuracy <= 0.8 < carried.boundary_accuracy


def test_a_variant_works_through_plain_path_resume_evaluate_and_plot(tmp_path):
    run_dir = tmp_path / "gru"
    flags = ["--cell", "gru", "--layers", "2", "--dropout", "0.1", "--series-length", "3000"]
    first = invoke("train", "--run-dir", run_dir, *flags, "--epochs", 1, "--quiet", "--plain")
    assert first.exit_code == 0, first.output
    resumed = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", 2, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["cell"], saved["num_layers"], saved["dropout"]) == ("gru", 2, 0.1)
    assert len(files.read_history(run_dir)) == 2 * 40
    assert invoke("evaluate", "--run-dir", run_dir, "--json").exit_code == 0
    assert invoke("plot", "--run-dir", run_dir).exit_code == 0


def test_optimizers_get_their_own_default_learning_rate(tmp_path):
    result = invoke(
        "train",
        "--run-dir",
        tmp_path / "r",
        "--optimizer",
        "adam",
        "--series-length",
        "750",
        "--epochs",
        1,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert files.load_config(tmp_path / "r").learning_rate == 0.01


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--cell", "lstmm"], "--cell"),
        (["--optimizer", "adadelta"], "--optimizer"),
        (["--layers", "0"], "--layers"),
        (["--dropout", "1.0"], "--dropout"),
        (["--dropout", "-0.1"], "--dropout"),
        (["--dropout", "nan"], "--dropout"),
        (["--tensorboard", "README.md"], "--tensorboard"),
    ],
)
def test_bad_variant_values(tmp_path, args, flag):
    result = invoke("train", "--run-dir", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
    assert not (tmp_path / "run").exists()


def test_tensorboard_logs_the_loss_of_every_batch(tmp_path):
    from tensorflow.core.util import event_pb2

    from echo_keras.backend import tf

    logs = tmp_path / "logs"
    result = invoke(
        "train",
        "--run-dir",
        tmp_path / "run",
        "--series-length",
        "1500",
        "--window",
        "10",
        "--epochs",
        2,
        "--quiet",
        "--tensorboard",
        logs,
    )
    assert result.exit_code == 0, result.output
    steps, losses = [], []
    for path in sorted((logs / "train").iterdir()):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "batch_batch_loss":
                    steps.append(event.step)
                    losses.append(float(tf.make_ndarray(value.tensor)))
    assert steps == list(range(1, 61))
    recorded = [row[3] for row in files.read_history(tmp_path / "run")]
    np.testing.assert_allclose(losses, recorded, rtol=1e-6)
