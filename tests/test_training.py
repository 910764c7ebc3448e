"""Training: the carried state, the per-batch losses, the two paths, and learning the echo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from echo_keras.backend import keras
from echo_keras.callbacks import BatchLossRecorder, ResetStatesAtEpochStart
from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows
from echo_keras.model import loss_function, reset_states, state_variables
from echo_keras.run import files
from echo_keras.training import build_compiled_model, fit_epochs, train


def frozen_model(config: TrainConfig):
    """A compiled model whose optimizer cannot move the weights (learning rate 0)."""
    model = build_compiled_model(config)
    model.optimizer.learning_rate.assign(0.0)
    return model


def sequential_losses_and_final_state(model, config: TrainConfig, epoch: int):
    """Reference: call the model window after window from a zero state, in plain eager code."""
    inputs, targets = epoch_windows(config, epoch)
    loss = loss_function()
    reset_states(model)
    losses = []
    for x, y in zip(inputs, targets, strict=True):
        logits = model(x[..., None].astype("float32"), training=False)
        losses.append(float(loss(y.astype("int32"), logits)))
    return np.array(losses), [v.numpy().copy() for v in state_variables(model)]


class StateProbe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.at_epoch_begin, self.at_epoch_end = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.at_epoch_begin.append([v.numpy().copy() for v in state_variables(self.model)])

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append([v.numpy().copy() for v in state_variables(self.model)])


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_recorded_losses_are_each_batchs_own_loss_with_the_state_carried(tiny_config, plain):
    config = dataclasses.replace(tiny_config, num_epochs=1)
    model = frozen_model(config)
    recorder = BatchLossRecorder(config.num_batches)
    probe = StateProbe()
    fit_epochs(model, config, [ResetStatesAtEpochStart(), probe, recorder], plain=plain)

    recorded = np.array([row[3] for row in recorder.rows])
    trained_state = [v.numpy().copy() for v in state_variables(model)]
    expected, expected_state = sequential_losses_and_final_state(model, config, epoch=0)
    # Each recorded loss is that batch's loss, not Keras's running mean.
    np.testing.assert_allclose(recorded, expected, rtol=1e-5, atol=1e-7)
    running_mean = np.cumsum(expected) / np.arange(1, len(expected) + 1)
    assert not np.allclose(recorded, running_mean, rtol=1e-3)
    # Training carried the state from window to window exactly as sequential calls do.
    for got, want in zip(trained_state, expected_state, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert all(not np.allclose(s, 0) for s in trained_state)


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_state_is_zero_at_every_epoch_start(tiny_config, plain):
    model = build_compiled_model(tiny_config)
    probe = StateProbe()
    fit_epochs(model, tiny_config, [ResetStatesAtEpochStart(), probe], plain=plain)
    assert len(probe.at_epoch_begin) == tiny_config.num_epochs
    for states in probe.at_epoch_begin:
        assert all(np.all(s == 0) for s in states)
    assert all(not np.allclose(s, 0) for s in probe.at_epoch_end[0])


def test_without_the_reset_the_next_epoch_would_start_from_the_carried_state(tiny_config):
    model = build_compiled_model(tiny_config)
    probe = StateProbe()
    fit_epochs(model, tiny_config, [probe], plain=False)  # no ResetStatesAtEpochStart
    assert any(not np.allclose(s, 0) for s in probe.at_epoch_begin[1])


def test_fast_and_plain_paths_give_the_same_losses(tiny_config):
    losses = {}
    for plain in (False, True):
        model = build_compiled_model(tiny_config)
        recorder = BatchLossRecorder(tiny_config.num_batches)
        fit_epochs(model, tiny_config, [ResetStatesAtEpochStart(), recorder], plain=plain)
        losses[plain] = np.array([row[3] for row in recorder.rows])
    assert len(losses[True]) == tiny_config.num_epochs * tiny_config.num_batches
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4, atol=1e-6)


def test_train_writes_every_artifact(tiny_run, tiny_config):
    names = {path.name for path in tiny_run.iterdir()}
    assert {"config.json", "model.keras", "history.csv", "last_batch.npz", "status.json"} <= names
    assert files.load_config(tiny_run) == tiny_config
    assert files.read_status(tiny_run)["status"] == "complete"
    rows = files.read_history(tiny_run)
    assert len(rows) == tiny_config.num_epochs * tiny_config.num_batches
    assert [row[2] for row in rows] == list(range(len(rows)))
    assert rows[-1][:2] == (tiny_config.num_epochs - 1, tiny_config.num_batches - 1)
    batch = files.read_last_batch(tiny_run, tiny_config)
    shape = (tiny_config.batch_size, tiny_config.truncated_backprop_length)
    assert batch["inputs"].shape == batch["targets"].shape == shape
    assert batch["probabilities"].shape == (*shape, tiny_config.num_classes)
    np.testing.assert_allclose(batch["probabilities"].sum(-1), 1.0, rtol=1e-6)
    # The final batch is the last window of the last epoch's series.
    inputs, targets = epoch_windows(tiny_config, tiny_config.num_epochs - 1)
    assert np.array_equal(batch["inputs"], inputs[-1])
    assert np.array_equal(batch["targets"], targets[-1])


def test_same_seed_same_losses(tiny_config, tmp_path):
    first = train(tiny_config, tmp_path / "a")
    second = train(tiny_config, tmp_path / "b")
    assert [row[3] for row in first.history] == [row[3] for row in second.history]


@pytest.mark.slow
def test_the_tutorial_configuration_learns_the_echo(default_run):
    run_dir, result = default_run
    rows = files.read_history(run_dir)
    last_epoch = [row[3] for row in rows if row[0] == 4]
    assert len(last_epoch) == 666
    assert np.mean(last_epoch) < 0.01
    assert result.final_loss == pytest.approx(np.mean(last_epoch))
    first_batches = [row[3] for row in rows[:10]]
    assert np.mean(first_batches) > 0.5  # it started at chance


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_progress_bar_shows_epoch_batch_and_recent_loss(tiny_config, plain):
    import io

    from echo_keras.callbacks import ProgressBar

    stream = io.StringIO()
    model = build_compiled_model(tiny_config)
    bar = ProgressBar(tiny_config.num_epochs, tiny_config.num_batches, stream=stream)
    fit_epochs(model, tiny_config, [ResetStatesAtEpochStart(), bar], plain=plain)
    text = stream.getvalue()
    assert (
        "\rEpoch 1/2 [" in text and f"{tiny_config.num_batches}/{tiny_config.num_batches}" in text
    )
    assert "loss 0." in text
    assert text.count("mean batch loss") == 2 and text.endswith("\n")
