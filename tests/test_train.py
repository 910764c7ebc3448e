"""Training: the carried state, the per-batch losses, the two paths (fast and plain), learning the
echo, the `train` command's output, the variants (cells, layers, dropout, K symbols, optimizers),
the live plot and TensorBoard logs, divergence, and the signals that stop a run."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from echo_keras import loops
from echo_keras.backend import keras
from echo_keras.callbacks import BatchLossRecorder, ProgressBar, ResetStatesAtEpochStart
from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows
from echo_keras.errors import ConfigError, EchoKerasWarning
from echo_keras.evaluation import evaluate
from echo_keras.loops import PredictLoop, TrainLoop
from echo_keras.model import (
    UNROLL_MAX_STEPS,
    loss_function,
    planned_window_work,
    reset_states,
    state_variables,
    stateful_layers,
    window_work,
)
from echo_keras.run import arrays, files
from echo_keras.training import build_compiled_model, fit_epochs, train
from tests.helpers import (
    ECHO_KERAS,
    LONG_FLAGS,
    THREADS,
    TINY,
    TINY_FLAGS,
    checkpoint_of,
    invoke,
    one_line_error,
    png_size,
    signal_after_first_checkpoint,
    small_tmpfs,
    start,
    wait_for,
)


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


# --- the carried state and the per-batch losses --------------------------------------------


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


def test_xla_compiles_only_a_small_models_loops_that_run_enough_windows(tiny_config):
    model = build_compiled_model(tiny_config)  # 30 windows an epoch
    assert not loops.worth_xla(model, tiny_config.num_batches)
    assert loops.worth_xla(model, loops.XLA_MIN_WINDOWS) and loops.worth_xla(model)
    assert TrainLoop(model, 30)._run._jit_compile is False
    assert TrainLoop(model, 100, windows=666)._run._jit_compile is True  # fed in chunks
    assert PredictLoop(model, windows=666)._run._jit_compile is True
    wide = dataclasses.replace(tiny_config, state_size=1024, batch_size=50)  # 60M a window
    assert not loops.worth_xla(build_compiled_model(wide), 10_000)


def test_training_chooses_xla_by_the_windows_of_an_epoch_not_of_a_chunk(monkeypatch):
    chosen = []

    def spy(model, num_windows, jit_compile=None, windows=None):
        chosen.append(TrainLoop(model, num_windows, jit_compile, windows)._run._jit_compile)
        raise KeyboardInterrupt  # enough: nothing is trained

    monkeypatch.setattr("echo_keras.fitting.TrainLoop", spy)
    for length in (1500, 50_000):  # 30 and 666 windows an epoch, fed 100 at a time
        config = dataclasses.replace(TINY, total_series_length=length, truncated_backprop_length=15)
        with pytest.raises(KeyboardInterrupt):
            fit_epochs(build_compiled_model(config), config, [], plain=False)
    assert chosen == [False, True]


def test_the_xla_loop_and_tensorflows_own_kernels_train_alike(tiny_config):
    """Whichever `worth_xla` picks, a run trains the same (to float rounding)."""
    x, y = epoch_windows(tiny_config, 0)
    losses = []
    for jit_compile in (True, False):
        model = build_compiled_model(tiny_config)
        count = tiny_config.num_batches
        trained, _ = TrainLoop(model, count, jit_compile=jit_compile)(x, y, 0, count)
        losses.append(trained.numpy())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4, atol=1e-6)
    assert losses[0][-1] < losses[0][0]


def test_a_large_models_layers_run_unrolled_and_train_as_the_looped_ones_do(tiny_config, tmp_path):
    """A model past LARGE_WINDOW_WORK runs its recurrent layers unrolled, for windows of up
    to UNROLL_MAX_STEPS steps, whatever its number of epochs (a run resumed with more epochs
    is built as the uninterrupted run is), and is saved so; unrolled, a model trains as
    looped does."""

    def unrolled(config):
        return [layer.unroll for layer in stateful_layers(build_compiled_model(config))]

    assert unrolled(tiny_config) == [False]
    wide = dataclasses.replace(  # 50 x 10 x 0.5M weights a window
        tiny_config, state_size=200, batch_size=50, num_layers=2, total_series_length=50_000
    )
    assert unrolled(wide) == [True, True]
    assert unrolled(dataclasses.replace(wide, num_epochs=1)) == [True, True]
    assert unrolled(dataclasses.replace(wide, num_epochs=50)) == [True, True]
    longer = dataclasses.replace(wide, truncated_backprop_length=UNROLL_MAX_STEPS + 1)
    assert unrolled(longer) == [False, False]
    x, y = epoch_windows(tiny_config, 0)
    count, losses, looped = tiny_config.num_batches, [], build_compiled_model(tiny_config)
    for unroll in (False, True):
        model = build_compiled_model(tiny_config)
        model.set_weights(looped.get_weights())
        stateful_layers(model)[0].unroll = unroll
        trained, _ = TrainLoop(model, count, jit_compile=False)(x, y, 0, count)
        losses.append(trained.numpy())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5, atol=1e-7)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert [layer.unroll for layer in stateful_layers(loaded)] == [True]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cell": "gru", "num_layers": 2, "num_classes": 3},  # one-hot input
        {"cell": "simple", "input_encoding": "onehot", "state_size": 7},
        {"num_layers": 3, "num_classes": 12, "input_encoding": "scalar", "batch_size": 2},
    ],
)
def test_a_configs_planned_window_work_is_its_built_models(tiny_config, changes):
    """What decides a training's threads before its model exists: the built model's own."""
    config = dataclasses.replace(tiny_config, **changes)
    assert planned_window_work(config) == window_work(build_compiled_model(config))


def test_a_small_models_training_runs_each_op_on_one_thread_in_a_process_of_our_own(
    tiny_config, tmp_path, monkeypatch
):
    """On two cores, TensorFlow's default of an op spread over every core makes a small
    model's training a quarter slower for half again the CPU. echo-keras's own process
    (the command line) runs it on one thread; a large model and a caller's process (a
    notebook) keep TensorFlow's default."""
    code = (  # the command line's train, then the setting it left
        "import sys\n"
        "from echo_keras import startup; startup.own_process()\n"
        "from echo_keras.cli.app import app\n"
        "try:\n"
        "    app(['train', '--run-dir', *sys.argv[1:]])\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "from echo_keras.backend import tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    # As a shell starts it: without the thread settings the suite gives the processes its
    # workers start (conftest).
    env = {key: value for key, value in os.environ.items() if key not in THREADS}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "own"), *TINY_FLAGS],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.split() == ["1"], done.stderr
    pinned = []
    monkeypatch.setattr("echo_keras.training.use_one_intra_op_thread", lambda: pinned.append(1))
    train(tiny_config, tmp_path / "library", progress=False)  # this process is no CLI's
    assert pinned == []
    monkeypatch.setattr("echo_keras.training.is_own_process", lambda: True)
    train(tiny_config, tmp_path / "small", progress=False)
    assert pinned == [1]
    monkeypatch.setattr("echo_keras.model.LARGE_WINDOW_WORK", 0)  # every model is large
    train(tiny_config, tmp_path / "large", progress=False)
    assert pinned == [1]


# --- what a run leaves, and learning the echo ----------------------------------------------


def test_train_writes_every_artifact(tiny_run, tiny_config):
    names = {path.name for path in tiny_run.iterdir()}
    assert {"config.json", "model.keras", "history.csv", "last_batch.npz", "status.json"} <= names
    assert files.load_config(tiny_run) == tiny_config
    assert files.read_status(tiny_run)["status"] == "complete"
    rows = files.read_history(tiny_run)
    assert len(rows) == tiny_config.num_epochs * tiny_config.num_batches
    assert [row[2] for row in rows] == list(range(len(rows)))
    assert rows[-1][:2] == (tiny_config.num_epochs - 1, tiny_config.num_batches - 1)
    batch = arrays.read_last_batch(tiny_run, tiny_config)
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


def _run_files(run_dir):
    """What a run computed: its history, last batch, checkpoint and saved model's weights."""
    saved = keras.saving.load_model(run_dir / files.MODEL, compile=False)
    return (
        files.read_history(run_dir),
        dict(np.load(run_dir / files.LAST_BATCH)),
        [v.numpy() for v in saved.weights],
        dict(np.load(run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE)),
    )


@pytest.mark.parametrize("kind", ["dropout-adam", "documents"])
def test_a_training_on_its_shapes_warm_model_computes_what_a_fresh_model_does(tmp_path, kind):
    """The compiled model of a shape is kept in the process: a later training of that shape,
    after one of another seed (and echo step) has moved its weights, optimizer and random
    generators, trains on it exactly what a model compiled afresh trains."""
    from echo_keras import warm

    config = dataclasses.replace(TINY, dropout=0.2, optimizer="adam", learning_rate=0.05)
    if kind == "documents":
        data = tmp_path / "docs.txt"
        rng = np.random.default_rng(1)
        docs = ["".join(rng.choice(list("xyz"), size=rng.integers(5, 40))) for _ in range(60)]
        data.write_text("\n\n".join(docs))
        config = TrainConfig(data=str(data), documents=True, num_epochs=2, batch_size=4,
                             truncated_backprop_length=10, state_size=8)  # fmt: skip
    warm.clear()
    np.random.seed(7)
    untouched = np.random.random()
    np.random.seed(7)
    train(config, tmp_path / "afresh")
    afresh, after_afresh = _run_files(tmp_path / "afresh"), np.random.random()
    other = dataclasses.replace(config, seed=3, **({} if config.data else {"echo_step": 2}))
    train(other, tmp_path / "other")
    ((key, kept),) = warm._kept.items()
    loops = list(kept._loops.values())
    np.random.seed(7)
    train(config, tmp_path / "warm")
    assert list(warm._kept.values()) == [kept]  # the same model and loop, compiled once
    traced = [loop._run.experimental_get_tracing_count() for loop in loops]
    assert traced == ([1, 1] if config.data else [1])  # training (and validation) loops
    again, after_again = _run_files(tmp_path / "warm"), np.random.random()
    assert again[0] == afresh[0]  # every batch's loss, to the bit
    for ours, theirs in zip(again[2], afresh[2], strict=True):
        assert np.array_equal(ours, theirs)
    for arrays_, expected in ((again[1], afresh[1]), (again[3], afresh[3])):
        assert arrays_.keys() == expected.keys()  # the last batch; the checkpoint: weights,
        for name, values in expected.items():  # optimizer and random generators
            assert np.array_equal(arrays_[name], values), name
    assert after_again == after_afresh == untouched  # the caller's global generator as it was
    assert _run_files(tmp_path / "other")[0] != afresh[0]


def test_warm_models_are_given_up_by_the_bytes_of_their_variables_not_their_number(
    monkeypatch,
):
    """What TensorFlow compiled for a shape stays for the life of the process (about 5 MB)
    whether its warm model is kept or not: a notebook that cycled through 10 shapes gave up
    the least recently used of 8 kept and compiled it again, 50 MB more a round. Now small
    models are all kept; only large ones (their variables) are given up."""
    from echo_keras import warm
    from echo_keras.fitting import build_compiled_model

    monkeypatch.setattr(warm, "_kept", type(warm._kept)())
    built = warm.WarmModel(build_compiled_model(TINY))
    variables = [*built.model.variables, *built.model.optimizer.variables]
    assert built.bytes == sum(v.numpy().nbytes for v in variables) > 0
    small = [types.SimpleNamespace(bytes=10_000) for _ in range(50)]
    for key, model in enumerate(small):
        warm._keep(key, model)
    assert list(warm._kept.values()) == small  # 50 shapes: none compiles twice
    monkeypatch.setattr(warm, "KEPT_BYTES", 100_000)
    large = types.SimpleNamespace(bytes=80_000)
    warm._keep("large", large)
    assert list(warm._kept.values()) == [*small[-2:], large]  # the least recently used go
    warm._keep("larger", types.SimpleNamespace(bytes=10**9))
    assert list(warm._kept) == ["larger"]  # the last is kept, whatever its size


def test_the_model_a_callback_of_the_callers_was_given_stays_its_own(tmp_path):
    """A caller's callback may keep its model after training: it is never a warm model that
    a later training of the same shape would change."""
    from echo_keras import warm

    class Keep(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.weights = [v.numpy() for v in self.model.weights]

    keep = Keep()
    train(TINY, tmp_path / "kept", callbacks=[keep])
    train(dataclasses.replace(TINY, seed=4), tmp_path / "later")
    assert all(kept.model is not keep.model for kept in warm._kept.values())
    for variable, value in zip(keep.model.weights, keep.weights, strict=True):
        assert np.array_equal(variable.numpy(), value)


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


# --- the train command: output, progress, warnings -----------------------------------------


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
        "1600",
        "--window",
        "30",
    )
    assert result.exit_code == 0, result.output
    assert "using 1500 (10 windows of 5 x 30), dropping the last 100." in result.stderr
    assert "Trained 1 epoch" in result.stdout and "batches/s" in result.stdout


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


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_progress_bar_shows_epoch_batch_and_recent_loss(tiny_config, plain):
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


def test_a_progress_bar_with_nowhere_to_draw_never_stops_training(tmp_path, monkeypatch):
    """stdout None (a GUI's pythonw) or closed: the bar is only a display."""
    closed = io.StringIO()
    closed.close()
    for name, stdout in (("none", None), ("closed", closed)):
        monkeypatch.setattr(sys, "stdout", stdout)
        assert train(TINY, tmp_path / name, progress=True).epochs == TINY.num_epochs
        assert files.read_status(tmp_path / name)["status"] == "complete"


def test_echo_beyond_the_window_is_warned_and_evaluated_in_its_own_words(tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--epochs", "1", "--series-length", "300", "--window", "6", "--echo-step", "8"]
    result = invoke("train", "--run-dir", run_dir, *flags)
    assert result.exit_code == 0, result.output
    assert "--echo-step 8 >= --window 6" in result.stderr
    quiet = invoke("train", "--run-dir", tmp_path / "quiet", *flags, "--json")
    assert "Warning" not in quiet.stderr
    table = invoke("evaluate", "--run-dir", run_dir).stdout
    assert "all 6 positions of the windows whose echoes are in their row" in table
    assert "first 8 positions" not in table
    # A library caller without `notify` is warned of it, and of the symbols left out.
    config = TrainConfig(num_epochs=1, total_series_length=310, truncated_backprop_length=6,
                         echo_step=8, batch_size=5)  # fmt: skip
    with pytest.warns(EchoKerasWarning) as seen:
        line = inspect.currentframe().f_lineno + 1
        train(config, tmp_path / "library")
    ours = [warning for warning in seen if warning.category is EchoKerasWarning]
    said = [str(warning.message) for warning in ours]
    assert said[0].startswith("the echo series (`total_series_length`): 310 symbols do not")
    assert said[-1].startswith("`echo_step` 8 >= `truncated_backprop_length` 6: no window")
    assert {(w.filename, w.lineno) for w in ours} == {(__file__, line)}  # the caller's line


def test_another_keras_backend_is_overridden_with_a_notice_unless_quiet(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    short = [flag for flag in TINY_FLAGS if flag != "--quiet"]
    for quiet in ([], ["--quiet"]):
        run_dir = tmp_path / f"run{len(quiet)}"
        command = [*ECHO_KERAS, "train", "--run-dir", str(run_dir), *short, "--json", *quiet]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        notices = [line for line in done.stderr.splitlines() if "KERAS_BACKEND=jax" in line]
        assert len(notices) == (0 if quiet else 1)
        assert all("tensorflow" in notice for notice in notices)
        assert json.loads(done.stdout)["epochs"] == 2  # stdout still holds only the JSON


# --- divergence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, noted",
    [([], False), (["--series-length", "1000", "--window", "30"], True)],
)
def test_a_dropped_tail_is_noted_only_when_it_is_a_real_share_of_the_data(tmp_path, flags, noted):
    """The tutorial's 50,000 symbols drop 50 (0.1%): silence. 1,000 in windows of 5 x 30
    drop 100 (10%): a note, in the flags' terms; not again when the run is resumed."""
    result = invoke("train", "--run-dir", tmp_path / "run", *flags, "--epochs", "1")
    assert result.exit_code == 0, result.output
    note = (
        "Note: the echo series (--series-length): 1000 symbols do not fill whole windows; "
        "using 900 (6 windows of 5 x 30), dropping the last 100.\n"
    )
    assert (note in result.stderr) == noted, result.stderr
    assert noted or "whole windows" not in result.stderr
    resumed = invoke("train", "--run-dir", tmp_path / "run", "--resume", "--epochs", "2")
    assert resumed.exit_code == 0 and "whole windows" not in resumed.stderr, resumed.output


def test_the_library_notes_a_dropped_tail_of_the_echo_series_in_its_own_terms(tmp_path):
    told = []
    config = dataclasses.replace(TINY, total_series_length=TINY.total_series_length + 37)
    train(config, tmp_path / "run", notify=told.append)
    assert told == [
        f"Note: the echo series (`total_series_length`): {config.total_series_length} symbols "
        f"do not fill whole windows; using {config.used_length} ({config.num_batches} windows "
        f"of {config.batch_size} x {config.truncated_backprop_length}), dropping the last 37."
    ]


def test_divergence_stops_with_a_clear_message_and_no_model(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--learning-rate", "1e38")
    one_line_error(result, "NaN or infinite", "--learning-rate", code=1)
    assert files.read_status(run_dir)["status"] == "failed"
    assert not (run_dir / "model.keras").exists()
    for path in ([], ["--plain"]):  # stdout: the error's object, not Keras's "Invalid loss"
        again = invoke(
            "train", "--run-dir", tmp_path / f"json{len(path)}", *TINY_FLAGS, *path,
            "--learning-rate", "1e38", "--json",
        )  # fmt: skip
        assert again.exit_code == 1 and json.loads(again.stdout) == {  # one object: the error
            "error": again.stderr.strip().removeprefix("Error: "),
            "exit_status": 1,
        }


# --- variants ------------------------------------------------------------------------------

# 200 windows of 5 x 15 per epoch, 5 epochs: enough for every variant to learn the echo.
LEARNABLE = TrainConfig(total_series_length=15000)
LEARNABLE_CHANGES = [
    {"cell": "gru"},
    {"cell": "simple"},
    {"num_layers": 2},
    {"dropout": 0.1},
    {"num_classes": 3},
    {"optimizer": "adam", "learning_rate": 0.01},
    {"optimizer": "rmsprop", "learning_rate": 0.01},
    {"optimizer": "sgd", "learning_rate": 0.5},
]


def changes_id(changes):
    return "-".join(f"{k}={v}" for k, v in changes.items())


@pytest.fixture(scope="session")
def learned(shared):
    """`learned(changes)`: the run folder of LEARNABLE with `changes`, trained once."""

    def learned(changes):
        config = dataclasses.replace(LEARNABLE, **changes)
        return shared.run(f"learnable-{changes_id(changes)}", config)[0], config

    return learned


@pytest.mark.parametrize("changes", LEARNABLE_CHANGES, ids=changes_id)
def test_each_variant_learns_the_echo_through_the_carried_state(learned, changes):
    run_dir, config = learned(changes)
    assert files.load_config(run_dir) == config
    metrics = evaluate(run_dir)
    assert metrics.accuracy >= 0.97, metrics
    assert metrics.boundary_accuracy >= 0.97, metrics


def test_a_stacked_model_carries_and_resets_every_layers_state(learned):
    config = dataclasses.replace(LEARNABLE, num_layers=3, num_epochs=2, total_series_length=3000)
    model = build_compiled_model(config)
    assert len(state_variables(model)) == 3 * 2  # hidden and cell state of each LSTM layer
    probe = StateProbe()
    fit_epochs(model, config, [ResetStatesAtEpochStart(), probe])
    assert all(np.all(s == 0) for s in probe.at_epoch_begin[1])
    assert all(not np.allclose(s, 0) for s in probe.at_epoch_end[1])

    run_dir, _ = learned({"num_layers": 2})  # LEARNABLE with two layers, as trained above
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


# --- the live plot, training side (its drawing: test_plot.py) ------------------------------


def test_plot_every_writes_live_png(tmp_path, tiny_config):
    run_dir = tmp_path / "run"
    train(tiny_config, run_dir, plot_every=np.int64(7))  # a numpy integer is a whole number
    width, _ = png_size(run_dir / "live.png")
    assert width > 500
    assert not list(run_dir.glob(".live*"))  # no temporary file left behind
    # Overwritten, the run trains beside the one it replaces: the note says where to look.
    notes = []
    train(tiny_config, run_dir, overwrite=True, plot_every=7, notify=notes.append)
    (note,) = [note for note in notes if "live figure" in note]
    assert note.startswith(f"Note: the live figure is {tmp_path}/.run.new-")
    assert note.endswith(f"/live.png until this run replaces the one in {run_dir}")
    notes.clear()
    more = dataclasses.replace(tiny_config, num_epochs=tiny_config.num_epochs + 1)
    train(more, run_dir, resume=True, plot_every=7, notify=notes.append)  # in place
    assert not [note for note in notes if "live figure" in note]
    with warnings.catch_warnings():  # a note made an error: the replacement goes with it
        warnings.simplefilter("error", EchoKerasWarning)
        with pytest.raises(EchoKerasWarning, match="^the live figure is "):
            train(tiny_config, run_dir, overwrite=True, plot_every=7)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no .run.new-*


SCRIPT_WITHOUT_A_GUARD = """
import echo_keras
config = echo_keras.TrainConfig(
    num_epochs=1, total_series_length=1500, truncated_backprop_length=10
)
echo_keras.train(config, {run!r}, plot_every=7)
print("trained")
"""


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_live_plot_works_from_a_script_without_a_main_guard_and_from_stdin(tmp_path, how):
    """Its drawing process is a fresh interpreter: nothing of the caller's runs again."""
    run_dir = tmp_path / "run"
    code = SCRIPT_WITHOUT_A_GUARD.format(run=str(run_dir))
    script = tmp_path / "script.py"
    script.write_text(code)
    argv = [sys.executable, str(script)] if how == "script" else [sys.executable, "-"]
    done = subprocess.run(
        argv, input=None if how == "script" else code, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "trained\n" and "Traceback" not in done.stderr, done.stderr
    assert png_size(run_dir / "live.png")[0] > 500


def test_the_live_plot_draws_a_last_frame_of_the_last_batch(tmp_path):
    from echo_keras.plots.live import LivePlot

    class Recorder:
        epoch, rows = 0, [(0, batch, batch, 0.5) for batch in range(3)]

    class Tap:
        def batch(self, index):
            return np.zeros((5, 10)), np.zeros((5, 10)), np.full((5, 10, 2), 0.5)

    live = LivePlot(tmp_path / "live.png", 2, Recorder(), Tap())
    live.on_train_batch_end(1)  # step 2 of every 2: a frame
    live.close()  # the run ended at step 3, which was not framed: the last frame shows it
    assert live._framed_step == 2 and live.frames_sent >= 1
    assert png_size(tmp_path / "live.png")[0] > 500


def test_a_live_plot_that_cannot_write_does_not_stop_training(run_copy):
    (run_copy / "live.png").mkdir()  # every frame's rename onto it fails
    (run_copy / "live.png" / "x").touch()
    result = invoke(
        "train", "--run-dir", run_copy, "--resume", "--epochs", "4", "--plot-every", "5", "--quiet"
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "live plot" in line]
    assert len(warnings) == 1 and "cannot write" in warnings[0]
    assert files.read_status(run_copy)["status"] == "complete"


# --- TensorBoard ---------------------------------------------------------------------------


def test_tensorboard_logs_the_loss_of_every_batch(tmp_path):
    from tensorflow.core.util import event_pb2

    from echo_keras.backend import tf

    logs = tmp_path / "logs"
    result = invoke("train", "--run-dir", tmp_path / "run", *TINY_FLAGS, "--tensorboard", logs)
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


def test_tensorboard_logs_that_cannot_be_written_do_not_stop_training(tmp_path, monkeypatch):
    """As with the live plot's frames: one warning, the run completes (on either path), and
    no broken writer is left as TensorFlow's default one. The disk fills at the sixth flush
    (Keras flushes at every batch's start), as a real one does: in the middle of leaving
    the writer's context."""
    from tensorflow.python.ops import summary_ops_v2

    from echo_keras.backend import tf

    writer_class, flushes = summary_ops_v2._ResourceSummaryWriter, []
    flush = writer_class.flush

    def full_after_five(self):
        flushes.append(self)
        if len(flushes) > 5 and not self._closed:  # a closed writer flushes nothing
            raise tf.errors.ResourceExhaustedError(None, None, "x.v2; No space left on device")
        return flush(self)

    monkeypatch.setattr(writer_class, "flush", full_after_five)
    logs = tmp_path / "logs"
    for path in ("fast", "plain"):
        flushes.clear()
        flags = ["--plain"] if path == "plain" else []
        run_dir = tmp_path / path
        result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--tensorboard", logs, *flags)
        assert result.exit_code == 0, result.output
        assert [line for line in result.stderr.splitlines() if "TensorBoard" in line] == [
            f"Warning: TensorBoard: cannot write to {logs}: No space left on device; "
            "training goes on without its logs"
        ]
        assert files.read_status(run_dir)["status"] == "complete"
        assert len(files.read_history(run_dir)) == 60
        assert summary_ops_v2._summary_state.writer is None  # no broken default writer


def test_tensorboard_on_a_disk_full_from_the_start_warns_and_the_run_completes(tmp_path):
    """Keras writes the first event (the graph) as soon as it is given the model."""
    with small_tmpfs(tmp_path / "small", "8k") as small:
        (small / "filler").write_bytes(bytes(8192))
        result = invoke("train", "--run-dir", tmp_path / "run", *TINY_FLAGS, "--tensorboard", small)
        assert result.exit_code == 0, result.output
        (warning,) = [line for line in result.stderr.splitlines() if "TensorBoard" in line]
        assert "No space left on device; training goes on without its logs" in warning
        assert files.read_status(tmp_path / "run")["status"] == "complete"


def test_tensorboard_inside_the_run_folder_is_refused_with_overwrite(run_copy):
    result = invoke(
        "train", "--run-dir", run_copy, *TINY_FLAGS, "--overwrite", "--tensorboard", run_copy / "tb"
    )
    one_line_error(result, "--tensorboard", "--overwrite", code=2)
    before = sorted(path.name for path in run_copy.iterdir())
    with pytest.raises(ConfigError, match="^tensorboard_dir: .*inside the run folder, which rep"):
        train(TINY, run_copy, overwrite=True, tensorboard_dir=run_copy / "tb")
    assert sorted(path.name for path in run_copy.iterdir()) == before
    unfinished(run_copy)  # replaced without --overwrite: the same swap
    result = invoke("train", "--run-dir", run_copy, *TINY_FLAGS, "--tensorboard", run_copy / "tb")
    one_line_error(result, "--tensorboard", "inside the run folder", code=2)
    with pytest.raises(ConfigError, match="^tensorboard_dir: .*inside the run folder"):
        train(TINY, run_copy, tensorboard_dir=run_copy / "tb")
    assert not (run_copy / "tb").exists()
    fresh = run_copy.parent / "fresh"  # a new run's logs in its own folder: nothing replaced
    result = invoke("train", "--run-dir", fresh, *TINY_FLAGS, "--tensorboard", fresh / "tb")
    assert result.exit_code == 0, result.output
    assert any((fresh / "tb").iterdir())


def unfinished(run_dir):
    """Make `run_dir` a run that failed in its first epoch (a new run replaces it)."""
    (run_dir / files.MODEL).unlink()
    shutil.rmtree(run_dir / files.CHECKPOINT)
    files.write_status(run_dir, "failed", "failed in its first epoch")


def test_a_run_holding_the_current_folder_is_never_replaced(run_copy, tmp_path, monkeypatch):
    """Replacing the run would delete the process's current folder under it."""
    before = sorted(path.name for path in run_copy.iterdir())
    for here in (run_copy, run_copy / files.CHECKPOINT):
        monkeypatch.chdir(here)
        result = invoke("train", "--run-dir", run_copy, *TINY_FLAGS, "--overwrite")
        one_line_error(result, "--run-dir", "holds the current folder", code=2)
        with pytest.raises(ConfigError, match="^run_dir: .* holds the current folder, which"):
            train(TINY, "." if here == run_copy else run_copy, overwrite=True)
        assert Path.cwd() == here.resolve()
    assert sorted(path.name for path in run_copy.iterdir()) == before
    unfinished(run_copy)  # replaced without --overwrite: the same swap
    monkeypatch.chdir(run_copy)
    one_line_error(invoke("train", "--run-dir", ".", *TINY_FLAGS), "holds the current", code=2)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")  # an empty folder is trained in, not replaced
    assert train(TINY, ".").epochs == TINY.num_epochs


def test_a_run_inside_another_run_folder_is_refused(run_copy, tmp_path):
    """Replacing the outer run (overwrite) would delete the inner one with it."""
    (tmp_path / "link").symlink_to(run_copy)
    for inner in (run_copy / "inner", tmp_path / "link" / "deeper" / "inner"):
        result = invoke("train", "--run-dir", inner, *TINY_FLAGS)
        one_line_error(result, "--run-dir", "lies inside the run folder", code=2)
        assert not inner.exists()
        with pytest.raises(ConfigError, match="run_dir: .* lies inside the run folder"):
            train(TINY, inner)
    # A folder of another program's, with names a run also has, is no run folder.
    project = tmp_path / "project"
    (project / "checkpoint").mkdir(parents=True)
    (project / "history.csv").write_text("not ours")
    assert train(TINY, project / "runs" / "echo").epochs == TINY.num_epochs


def test_tensorboard_writes_through_a_symlink_to_a_folder_yet_to_be_made(tmp_path):
    link = tmp_path / "tb"
    link.symlink_to(tmp_path / "logs" / "echo")
    result = invoke("train", "--run-dir", tmp_path / "run", *TINY_FLAGS, "--tensorboard", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and any((tmp_path / "logs" / "echo" / "train").iterdir())


@pytest.mark.parametrize("where", ["symlink loop", "under a file"])
def test_a_tensorboard_folder_that_cannot_be_made_is_refused_before_any_write(tmp_path, where):
    if where == "symlink loop":
        logs = tmp_path / "tb"
        logs.symlink_to(logs)
    else:
        (tmp_path / "file").write_text("mine")
        logs = tmp_path / "file" / "tb"
    run_dir = tmp_path / "runs" / "run"
    result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--tensorboard", logs)
    one_line_error(result, "--tensorboard", code=2)
    with pytest.raises(ConfigError) as refused:
        train(TINY, run_dir, tensorboard_dir=logs)
    assert refused.value.field == "tensorboard_dir"
    assert not (tmp_path / "runs").exists()  # no run folder, no lock file


# --- signals: stopped runs say so and can resume (resuming: test_resume.py) ----------------


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, *LONG_FLAGS)
    _, err = signal_after_first_checkpoint(process, run_dir, signal.SIGTERM)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err
    assert files.read_status(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_sighup_stops_training_like_sigterm(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, *LONG_FLAGS)
    _, err = signal_after_first_checkpoint(process, run_dir, signal.SIGHUP)
    assert process.returncode == 129, err
    assert "SIGHUP" in err and "--resume" in err and "Traceback" not in err
    assert files.read_status(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_under_nohup_a_hangup_does_not_stop_training(tmp_path):
    """A signal the starter ignored (`nohup` ignores SIGHUP) stays ignored."""
    run_dir = tmp_path / "run"
    ignore_hangups = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)  # noqa: E731
    flags = ["--epochs", "4", "--series-length", "15000", "--quiet"]
    process = start(run_dir, *flags, preexec_fn=ignore_hangups)
    wait_for(checkpoint_of(run_dir), process)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert files.read_status(run_dir)["status"] == "complete"
    assert len(files.read_history(run_dir)) == 4 * 200


@pytest.mark.slow
def test_sighup_from_a_hung_up_terminal_exits_129(tmp_path):
    run_dir = tmp_path / "run"
    master, slave = pty.openpty()
    argv = [*ECHO_KERAS, "train", "--run-dir", str(run_dir), *LONG_FLAGS]
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    wait_for(checkpoint_of(run_dir), process)
    os.close(master)  # the terminal is gone: every write to it now fails
    time.sleep(0.2)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == 129
    assert files.read_status(run_dir)["status"] == "interrupted"
