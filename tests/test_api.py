"""The public Python API: what a notebook or script imports from `echo_keras`, and nothing else.

One tiny run is trained through the API, then evaluated, drawn, streamed and exported
through it; every number is compared with what the command line gives for the same run,
and every library error's `exit_status` with the command line's exit status.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import echo_keras as ek
from tests.helpers import invoke as cli
from tests.helpers import stop_at

SMALL = dict(num_epochs=2, total_series_length=1500, truncated_backprop_length=10)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("api") / "run"
    result = ek.train(ek.TrainConfig(**SMALL), run_dir)
    return run_dir, result


@pytest.fixture(scope="module")
def predictor(api_run):
    return ek.load_predictor(api_run[0])


def test_importing_the_package_loads_no_tensorflow_keras_or_ray():
    code = (
        "import sys, echo_keras\n"
        "echo_keras.TrainConfig, echo_keras.EchoKerasError, echo_keras.RunFolder\n"
        "echo_keras.plot_run, echo_keras.draw_run, echo_keras.SweepSpec\n"
        "loaded = {'tensorflow', 'keras', 'ray'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_public_name_resolves_and_is_listed():
    for name in ek.__all__:
        assert getattr(ek, name) is not None
        assert name in dir(ek)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ek.nothing  # noqa: B018
    from echo_keras import errors

    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.EchoKerasError)
    }
    assert tree <= set(ek.__all__), "every error a caller may catch is public"


def test_train_returns_its_result_and_writes_a_run(api_run):
    run_dir, result = api_run
    assert isinstance(result, ek.TrainResult)
    assert result.epochs == 2 and result.steps == 2 * ek.TrainConfig(**SMALL).num_batches
    assert ek.RunFolder(run_dir).status()["status"] == "complete"
    assert ek.RunFolder(run_dir).read_config() == ek.TrainConfig(**SMALL)


def test_evaluate_equals_the_command_line_with_and_without_the_carried_state(api_run):
    run_dir, _ = api_run
    for reset in (False, True):
        metrics = ek.evaluate(run_dir, reset_each_window=reset)
        assert isinstance(metrics, ek.Metrics) and metrics.reset_each_window is reset
        flags = ["--reset-each-window"] if reset else []
        shown = json.loads(cli("evaluate", "--run-dir", run_dir, "--json", *flags).stdout)
        assert shown == metrics.to_dict()
    other = ek.evaluate(run_dir, seed=7, series_length=3000)
    assert other.positions == 3000 and other != ek.evaluate(run_dir)


def test_draw_run_returns_the_figure_and_plot_run_writes_it(api_run, tmp_path):
    from matplotlib.figure import Figure

    run_dir, _ = api_run
    figure = ek.draw_run(run_dir)
    assert isinstance(figure, Figure) and len(figure.axes) >= 2
    assert "2 epochs" in figure.get_suptitle()
    out = ek.plot_run(run_dir, tmp_path / "figure.svg")
    assert out == tmp_path / "figure.svg" and out.read_text().startswith("<?xml")
    # A run not complete is drawn with a warning, as the command line's `plot` notes it.
    failed = tmp_path / "failed"
    shutil.copytree(run_dir, failed)
    (failed / "status.json").write_text(json.dumps({"status": "failed", "message": "boom"}))
    for draw in (ek.draw_run, ek.plot_run):
        with pytest.warns(ek.EchoKerasWarning, match=f"^run {failed} is failed: boom$") as seen:
            line = inspect.currentframe().f_lineno + 1
            draw(failed)
        assert (seen[0].filename, seen[0].lineno) == (__file__, line)  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ek.draw_run(run_dir)  # a complete run: no warning


def test_a_stream_predicted_in_two_calls_equals_one_call_and_the_command_line(api_run, predictor):
    run_dir, _ = api_run
    symbols = np.random.default_rng(3).integers(0, 2, 60)
    whole, end = predictor.predict(symbols)
    first, state = predictor.predict(symbols[:23])
    second, state = predictor.predict(list(symbols[23:]), state)  # any 1-D int sequence
    assert whole.shape == (60, 2) and whole.dtype == np.float32
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=1e-5)
    assert set(state) == {"lstm_0_h", "lstm_0_c"} == set(predictor.state_names)
    for name in state:
        np.testing.assert_allclose(state[name], end[name], atol=1e-5)
    result = cli(
        "predict", "--run-dir", run_dir, "--json", "--probabilities", "".join(map(str, symbols))
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(json.loads(result.stdout)["probabilities"], whole, atol=1e-5)


def test_a_state_saved_by_the_api_continues_the_stream_on_the_command_line(
    api_run, predictor, tmp_path
):
    run_dir, _ = api_run
    symbols = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1]
    _, state = predictor.predict(symbols[:6])
    predictor.save_state(tmp_path / "state.npz", state)
    for name, value in predictor.load_state(tmp_path / "state.npz").items():
        np.testing.assert_array_equal(value, state[name])
    rest, _ = predictor.predict(symbols[6:], state)
    text = "".join(map(str, symbols[6:]))
    args = ("predict", "--run-dir", run_dir, "--state-in", tmp_path / "state.npz", "--json")
    shown = json.loads(cli(*args, "--probabilities", text).stdout)
    np.testing.assert_allclose(shown["probabilities"], rest, atol=1e-5)


def test_the_predictor_refuses_symbols_and_states_that_are_not_the_runs(predictor):
    zero = predictor.zero_state()
    for symbols in ([[0, 1]], [0.5]):
        with pytest.raises(ek.ConfigError) as error:
            predictor.predict(symbols)
        assert error.value.field == "symbols" and error.value.exit_status == 2
    for symbols in ([0, 2], [-1]):  # integers, but not the run's symbols
        with pytest.raises(ek.SymbolError, match="is not a symbol of the run") as error:
            predictor.predict(symbols)
        assert error.value.exit_status == 2
    for state in ({"lstm_0_h": zero["lstm_0_h"]}, {**zero, "lstm_0_c": np.full((1, 4), np.nan)}):
        with pytest.raises(ek.ConfigError, match="state"):
            predictor.predict([0, 1], state)
    probabilities, state = predictor.predict([])
    assert probabilities.shape == (0, 2) and set(state) == set(zero)
    with pytest.raises(ek.SymbolError, match=r"^symbols\[2\] = 2 is not a symbol of the run"):
        predictor.predict([1, 0, 2])  # the symbols of the run are 0..1
    with pytest.raises(ek.SymbolError, match=r"^symbols\[1\] = 1180591620717411303424 is not"):
        predictor.predict([1, 2**70])  # an integer past 64 bits is out of range, not "object"
    huge = {name: np.full((1, 4), 1e300) for name in zero}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning before the error
        with pytest.raises(ek.ConfigError, match="^state: lstm_0_h must be finite"):
            predictor.predict([0], huge)
    for symbols, hint in (("0110", r"such as \[0, 1, 1, 0\], got '0110'$"), (3, "symbols, got 3$")):
        with pytest.raises(ek.ConfigError, match="must be a 1-D sequence of integer symbols"):
            predictor.predict(symbols)
        with pytest.raises(ek.ConfigError, match=hint):
            predictor.predict(symbols)


def test_export_writes_a_verified_saved_model(api_run, tmp_path):
    run_dir, _ = api_run
    report = ek.export_saved_model(run_dir, tmp_path / "export", seed=np.int64(0))  # numpy's too
    assert isinstance(report, ek.ExportReport)
    assert report.state_names == ("lstm_0_h", "lstm_0_c") and report.max_difference <= 1e-5
    assert (tmp_path / "export" / "saved_model.pb").is_file()


def test_library_errors_carry_the_exit_status_of_the_command_line(api_run, tmp_path):
    run_dir, _ = api_run
    cases = [
        (lambda: ek.train(ek.TrainConfig(**SMALL), run_dir), ("train", "--run-dir", run_dir)),
        (lambda: ek.evaluate(tmp_path / "none"), ("evaluate", "--run-dir", tmp_path / "none")),
        (
            lambda: ek.train(ek.TrainConfig(state_size=0), tmp_path / "r"),
            ("train", "--run-dir", tmp_path / "r", "--state-size", "0"),
        ),
        (
            lambda: ek.evaluate(run_dir, series_length=10),
            ("evaluate", "--run-dir", run_dir, "--series-length", "10"),
        ),
        (
            lambda: ek.train(ek.TrainConfig(**SMALL), tmp_path / "new", resume=True),
            ("train", "--run-dir", tmp_path / "new", "--resume"),
        ),
        (
            lambda: ek.train(ek.TrainConfig(**{**SMALL, "state_size": 8}), run_dir, resume=True),
            ("train", "--run-dir", run_dir, "--resume", "--state-size", "8"),
        ),
    ]
    for call, args in cases:
        with pytest.raises(ek.EchoKerasError) as error:
            call()
        result = cli(*args)
        assert result.exit_code == error.value.exit_status, (args, result.output)
    assert [ek.UsageError.exit_status, ek.RunFolderError.exit_status] == [2, 1]
    assert ek.Interrupted("stopped", 15).exit_status == 143
    # A resume with other settings is told which ones (it had to guess them back).
    other = ek.TrainConfig(**{**SMALL, "state_size": 8, "cell": "gru", "num_epochs": 9})
    with pytest.raises(ek.UsageError, match=r"may change \(the run's `state_size` 4, not 8; "
                       r"`cell` 'lstm', not 'gru'\)$"):  # fmt: skip
        ek.train(other, run_dir, resume=True)


def test_every_error_crosses_a_process_boundary_whole():
    """A process pool pickles an error to hand it back: each class comes back the same,
    its message, fields and exit status kept."""
    import pickle

    errors = [
        ek.ConfigError("state_size", "must be positive, got 0"),
        ek.StateFileError("s.npz holds other states", damaged=False),
        ek.Interrupted("Interrupted (SIGTERM) after 1 of 2 epochs", 15),
        ek.WriteError("cannot write the run r: No space left on device"),
        *(
            getattr(ek, name)("it went wrong")
            for name in ek.__all__
            if name not in ("ConfigError", "StateFileError", "WriteError", "Interrupted")
            and isinstance(getattr(ek, name), type)
            and issubclass(getattr(ek, name), ek.EchoKerasError)
        ),
    ]
    assert len(errors) == 15  # every class of the tree
    for error in errors:
        error.add_note("a note added on the way")
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert back.exit_status == error.exit_status
        assert vars(back) == vars(error)


def test_library_errors_name_fields_and_the_command_line_names_flags(tmp_path):
    with pytest.raises(ek.ConfigError) as error:
        ek.TrainConfig(truncated_backprop_length=0).validate()
    assert str(error.value) == "truncated_backprop_length: must be positive, got 0"
    assert "--" not in str(error.value)
    result = cli("train", "--run-dir", tmp_path / "r", "--window", "0")
    assert result.stderr.strip() == "Error: Invalid value for '--window': must be positive, got 0"


@pytest.mark.parametrize("nested", [False, True])
def test_the_callbacks_serve_a_users_own_model_fit(nested):
    """Also with the stateful layer inside a model nested in the user's."""
    import keras

    from echo_keras.callbacks import BatchLossRecorder, ResetStatesAtEpochStart

    keras.utils.set_random_seed(0)
    inputs = keras.Input(batch_shape=(2, 5, 1))
    lstm = keras.layers.LSTM(3, stateful=True, return_sequences=True)
    if nested:
        lstm = keras.Sequential([keras.Input(batch_shape=(2, 5, 1)), lstm])
    model = keras.Model(inputs, keras.layers.Dense(2)(lstm(inputs)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(0, 2, (8, 5, 1)).astype("float32")
    y = np.roll(x[..., 0], 1, axis=1).astype("int32")
    states = {"start": [], "end": []}
    layer = lstm.layers[-1] if nested else lstm

    def size() -> float:
        return float(np.abs(layer.states[0].numpy()).sum())

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            states["start"].append(size())

        def on_epoch_end(self, epoch, logs=None):
            states["end"].append(size())

    recorder = BatchLossRecorder(num_batches=4)
    history = model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[ResetStatesAtEpochStart(), Probe(), recorder],
    )
    assert [row[:3] for row in recorder.rows] == [
        (e, b, 4 * e + b) for e in (0, 1) for b in range(4)
    ]
    assert states["end"][0] > 0 and states["start"] == [0.0, 0.0]  # zeroed at every start
    for epoch in (0, 1):  # each batch's own loss, recovered from Keras's running mean
        assert recorder.epoch_mean(epoch) == pytest.approx(history.history["loss"][epoch], 1e-5)
    assert len({round(row[3], 6) for row in recorder.rows}) > 1


def test_the_progress_bar_and_the_recorder_under_a_plain_fit_and_its_chunks():
    """Keras hands a plain fit's callbacks the running mean alone (no `batch_loss`): the bar
    shows it (it raised KeyError); with steps_per_execution > 1 the recorder, which cannot
    recover the batches Keras skipped, says so (it recorded wrong losses)."""
    import keras

    from echo_keras.callbacks import BatchLossRecorder, ProgressBar

    x = np.random.default_rng(0).random((8, 5, 1)).astype("float32")
    for chunk in (1, 4):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5, 1)), keras.layers.Dense(1)])
        model.compile("sgd", "mse", steps_per_execution=chunk)
        screen, recorder = io.StringIO(), BatchLossRecorder(num_batches=4)
        bar = ProgressBar(epochs=1, num_batches=4, stream=screen)
        if chunk == 1:
            history = model.fit(x, x, batch_size=2, verbose=0, callbacks=[bar, recorder])
            assert f"4/4  loss {history.history['loss'][0]:.4f}\r" in screen.getvalue()
            assert len(recorder.rows) == 4
        else:
            with pytest.raises(ek.ConfigError, match="steps_per_execution=1"):
                model.fit(x, x, batch_size=2, verbose=0, callbacks=[recorder])
    recorder = BatchLossRecorder(num_batches=4)
    recorder.on_train_batch_end(0, None)  # a batch with no loss reported: nothing recorded
    recorder.on_train_batch_end(1, {"loss": 0.5})  # counted (no skip), but the mean before
    recorder.on_train_batch_end(2, {"batch_loss": 0.25})  # it is unknown: no loss made up
    assert recorder.rows == [(0, 2, 2, 0.25)]
    recorder.on_epoch_begin(1)
    recorder.on_train_batch_end(0, {"loss": 0.5})
    assert recorder.rows[-1] == (1, 0, 4, 0.5)
    with pytest.raises(ek.ConfigError, match="reported batch 4 after batch 0: compile"):
        recorder.on_train_batch_end(4, {"batch_loss": 0.5})  # a skip, whichever loss


def test_evaluating_again_and_again_in_a_notebook_warns_of_nothing(api_run, caplog):
    """Each evaluate (each predictor too) compiles its own loop once, by design: TensorFlow,
    which counts them together, must not warn of retracing after the fifth."""
    for _ in range(6):  # TensorFlow warns at the fifth
        ek.evaluate(api_run[0], series_length=1500)
    assert "retracing" not in caplog.text


def test_a_run_being_trained_by_this_very_process_is_said_to_be(tmp_path):
    """From a callback (or another thread): the run is being trained here, not by "another
    process", and its model is coming, not to be resumed."""
    import keras

    run_dir, seen = tmp_path / "run", {}

    class Meddle(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and not seen:
                for name, call in (
                    ("train", lambda: ek.train(ek.TrainConfig(**SMALL), run_dir, overwrite=True)),
                    ("load", lambda: ek.load_predictor(run_dir)),
                ):
                    try:
                        call()
                    except ek.EchoKerasError as error:
                        seen[name] = error

    ek.train(ek.TrainConfig(**SMALL), run_dir, callbacks=[Meddle()])
    assert isinstance(seen["train"], ek.RunBusy)
    assert str(seen["train"]) == f"{run_dir} is being trained by this process, in another call"
    assert isinstance(seen["load"], ek.RunFolderError)
    assert str(seen["load"]).endswith("(it is training now: wait for it to finish)")


def test_train_leaves_the_callers_random_state_and_threads_get_their_seeds_weights(tmp_path):
    """Keras draws a model's weights from Python's `random`, the process's: `train` seeds it
    for its build alone, so a notebook's own draws go on as they would have, and two
    trainings in two threads each get the weights (and losses) of their seed."""
    import random
    import threading

    import echo_keras.training  # noqa: F401  (importing TensorFlow may draw: not train's)

    config = ek.TrainConfig(**SMALL, dropout=0.1)
    np.random.seed(123)
    random.seed(123)
    expected = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    seeded = {seed: dataclasses.replace(config, seed=seed) for seed in (0, 5)}
    alone = [ek.train(seeded[seed], tmp_path / f"alone{seed}") for seed in (0, 5)]
    ek.load_predictor(tmp_path / "alone0").predict([0, 1])  # layers of their own, built
    ek.evaluate(tmp_path / "alone5")  # and loaded: none of their draws are the caller's
    assert (np.random.rand(), random.random()) == expected
    together = {}

    def train(seed):
        together[seed] = ek.train(seeded[seed], tmp_path / f"together{seed}")

    threads = [threading.Thread(target=train, args=(seed,)) for seed in (0, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[seed].history for seed in (0, 5)] == [run.history for run in alone]


def test_the_first_call_that_loads_tensorflow_leaves_the_callers_random_state():
    """TensorFlow's import draws from Python's `random`: the first `train` or `evaluate` of
    a process, which imports it, must not move the caller's draws either."""
    code = (
        "import random, echo_keras as ek\n"
        "random.seed(5)\n"
        "ek.TrainConfig().num_batches\n"
        "import echo_keras.training  # what the first train imports\n"
        "print(random.random())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import random

    assert float(done.stdout) == random.Random(5).random()


def test_an_oserror_of_a_callers_callback_is_its_own_not_a_failed_write(tmp_path):
    import keras

    class Refused(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise PermissionError(13, "not allowed", "/the/callers/file")

    def refuse(epoch, logs):
        raise PermissionError(13, "not allowed", "/the/callers/file")

    lambda_callback = keras.callbacks.LambdaCallback(on_epoch_end=refuse)
    for name, callback in (("run", Refused()), ("lambda", lambda_callback)):
        with pytest.raises(PermissionError) as raised:
            ek.train(ek.TrainConfig(**SMALL), tmp_path / name, callbacks=[callback])
        assert not isinstance(raised.value, ek.WriteError)
        assert raised.value.filename == "/the/callers/file"
        assert ek.RunFolder(tmp_path / name).status()["status"] == "failed"

    class Wordless(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyError()

    with pytest.raises(KeyError):
        ek.train(ek.TrainConfig(**SMALL), tmp_path / "wordless", callbacks=[Wordless()])
    assert ek.RunFolder(tmp_path / "wordless").status()["message"] == "KeyError"  # no ": "


def test_an_error_passed_on_by_keras_own_callback_methods_is_no_callers():
    """Keras's Callback passes `on_train_batch_end` on to `on_batch_end`: that base method
    belongs to every callback that does not override it, so it tells no caller's error."""
    import keras

    from echo_keras.callbacks import raised_in_hook

    class Ours(keras.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        Ours().on_train_batch_end(0)
    assert not raised_in_hook(raised.value, [keras.callbacks.Callback()])
    assert raised_in_hook(raised.value, [Ours()])


def test_a_callback_that_stops_training_ends_the_run_at_its_last_completed_epoch(tmp_path):
    """Stopped at an epoch's end or inside the next one, the run is the same: two completed
    epochs, their rows, their weights; it says so and resumes. Stopped inside the first epoch,
    nothing is kept."""
    import keras

    from echo_keras.errors import TrainingError

    config = ek.TrainConfig(**{**SMALL, "num_epochs": 3})
    at_end = ek.train(config, tmp_path / "end", callbacks=[stop_at(1, None)])
    inside = ek.train(config, tmp_path / "inside", callbacks=[stop_at(2, 3)])
    for result in (at_end, inside):
        assert result.epochs == 2 and len(result.history) == 2 * config.num_batches
        status = ek.RunFolder(result.run_dir).status()
        assert status["status"] == "complete"
        assert status["message"] == "stopped by a callback after 2 of 3 epochs"
    assert inside.history == at_end.history and inside.final_loss == at_end.final_loss
    assert ek.evaluate(tmp_path / "inside") == ek.evaluate(tmp_path / "end")
    assert len((tmp_path / "inside" / "history.csv").read_text().splitlines()) == 61
    plain = ek.train(config, tmp_path / "plain", callbacks=[stop_at(2, 3)], plain=True)
    for result in (inside, plain):  # the batches run, those of the stopped epoch too
        assert result.steps == 2 * config.num_batches + 4
    assert plain.epochs == 2 and [row[:3] for row in plain.history] == [
        row[:3] for row in at_end.history
    ]
    assert [row[3] for row in plain.history] == pytest.approx([r[3] for r in at_end.history], 1e-4)

    resumed = ek.train(config, tmp_path / "inside", resume=True)
    assert resumed.epochs == 3 and ek.RunFolder(tmp_path / "inside").status()["message"] == ""

    # Keras's EarlyStopping, on both paths: no improvement by 10 after epoch 0 stops at the
    # end of epoch 1. The weights it restores (epoch 0's) are not followed: the run is its
    # checkpoint, as its history says.
    def early():
        return keras.callbacks.EarlyStopping("loss", 10, 0, restore_best_weights=True)

    for plain in (False, True):
        stopped = ek.train(config, tmp_path / f"early-{plain}", callbacks=[early()], plain=plain)
        assert (stopped.epochs, len(stopped.history)) == (2, 2 * config.num_batches)
    assert ek.evaluate(tmp_path / "early-False") == ek.evaluate(tmp_path / "end")
    # Never stopping, it still puts the best weights back at the end of training: not
    # followed either, the run is the one its history describes.
    never = keras.callbacks.EarlyStopping("loss", mode="max", patience=9, restore_best_weights=True)
    assert ek.train(config, tmp_path / "never", callbacks=[never]).epochs == 3
    assert ek.evaluate(tmp_path / "never") == ek.evaluate(tmp_path / "inside")  # resumed to 3

    class StopBeforeStarting(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.stop_training = True

    for plain in (False, True):  # model.fit would forget it
        with pytest.raises(TrainingError, match="stopped training in the first epoch"):
            stopper = [StopBeforeStarting()]
            ek.train(config, tmp_path / f"never-{plain}", callbacks=stopper, plain=plain)

    with pytest.raises(TrainingError, match="stopped training in the first epoch") as error:
        ek.train(config, tmp_path / "first", callbacks=[stop_at(0, 2)])
    assert error.value.exit_status == 1
    assert ek.RunFolder(tmp_path / "first").status()["status"] == "failed"
    assert not (tmp_path / "first" / "model.keras").exists()


def test_save_state_replaces_only_a_state_file_of_this_run_outside_the_run_folder(
    api_run, predictor, tmp_path
):
    run_dir, _ = api_run
    _, state = predictor.predict([0, 1, 1])
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    (tmp_path / "folder").mkdir()
    config_before = (run_dir / "config.json").read_bytes()
    refused = [
        (run_dir / "config.json", "inside the run folder"),
        (notes, "exists and is not a state file of this run"),
        (tmp_path / "folder", "not a regular file"),
        (tmp_path / "missing" / "s.npz", "does not exist"),
    ]
    for path, message in refused:
        with pytest.raises(ek.ConfigError, match=message) as error:
            predictor.save_state(path, state)
        assert error.value.exit_status == 2
    assert (run_dir / "config.json").read_bytes() == config_before
    assert notes.read_text() == "keep me"
    saved, link = tmp_path / "saved.npz", tmp_path / "link.npz"
    predictor.save_state(saved, state)
    link.symlink_to(saved)
    predictor.save_state(link, state)  # written through; the link stays a link
    assert link.is_symlink() and predictor.load_state(link).keys() == state.keys()
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(ek.StateFileError, match="loop1 is a symlink that leads nowhere"):
        predictor.load_state(tmp_path / "loop1")


def test_train_and_evaluate_check_their_arguments_before_building_anything(api_run, tmp_path):
    run_dir, _ = api_run
    new = tmp_path / "new"
    refused = [
        (lambda: ek.train(ek.TrainConfig(state_size=10**7), new), ek.UsageError, "memory"),
        (lambda: ek.train(ek.TrainConfig(num_epochs=10**9), new), ek.UsageError, "memory"),
        (lambda: ek.train(ek.TrainConfig(**SMALL), ""), ek.ConfigError, "run_dir"),
        (lambda: ek.train(ek.TrainConfig(**SMALL), new, plot_every=-1), ek.ConfigError, "plot"),
        (lambda: ek.train(ek.TrainConfig(**SMALL), new, plot_every="5"), ek.ConfigError, "plot"),
        (lambda: ek.train({"num_epochs": 1}, new), ek.UsageError, "TrainConfig"),
        (lambda: ek.evaluate(run_dir, seed=1.5), ek.ConfigError, "seed"),
        (lambda: ek.evaluate(run_dir, reset_each_window="no"), ek.ConfigError, "reset_each"),
        (lambda: ek.export_saved_model(run_dir, run_dir / "exp"), ek.UsageError, "inside the run"),
    ]
    small = ek.TrainConfig(**SMALL)
    for name in ("overwrite", "resume", "progress", "plain"):  # "no" is not a yes
        refusal = f"^{name}: must be True or False, got 'no'$"
        call = lambda n=name: ek.train(small, run_dir, **{n: "no"})  # noqa: E731
        refused.append((call, ek.ConfigError, refusal))
    refused.append((lambda: ek.train(small, run_dir, overwrite=1), ek.ConfigError, "^overwrite: "))
    refused.append((lambda: ek.train(small, new, notify=5), ek.ConfigError, "^notify: must be a f"))
    for call, error, message in refused:
        with pytest.raises(error, match=message):
            call()
    assert not new.exists() and not (run_dir / "exp").exists()
    assert ek.RunFolder(run_dir).status()["status"] == "complete"  # not replaced by "no"
    assert ek.evaluate(run_dir, reset_each_window=np.True_).reset_each_window is True
    assert not any(path.name in ("config.json", "status.json") for path in Path.cwd().iterdir())
    config = ek.TrainConfig(num_epochs=np.int64(2), learning_rate=np.float32(0.5)).validate()
    assert (type(config.num_epochs), type(config.learning_rate)) == (int, float)
    assert ek.TrainConfig(documents=np.True_).documents is True  # as reset_each_window's
    assert ek.evaluate(run_dir, series_length=np.int32(1000)).windows > 0
    with pytest.raises(ek.ConfigError, match="^cell: must be one of"):
        ek.TrainConfig(cell="foo").memory_estimate()  # not a KeyError
    with pytest.raises(ek.UsageError, match="load_predictor"):
        ek.Predictor(run_dir)  # a run folder is loaded by load_predictor, not given here
    with pytest.raises(ek.ConfigError, match="^run_dir: must be a path"):
        ek.Predictor(ek.load_predictor(run_dir).model, 5)  # not a TypeError


def test_states_and_probabilities_are_arrays_of_the_callers_own(predictor, tmp_path):
    """Writable numpy arrays, as zero_state's are: a caller may edit a state in place."""
    probabilities, state = predictor.predict([0, 1, 1])
    predictor.save_state(tmp_path / "s.npz", state)
    for values in (
        probabilities,
        *state.values(),
        *predictor.load_state(tmp_path / "s.npz").values(),
    ):
        assert isinstance(values, np.ndarray) and values.flags.writeable
    state["lstm_0_h"][:] = 0  # and the next call starts from the edited state
    again, _ = predictor.predict([1], state)
    assert np.allclose(again, predictor.predict([1], {**state, "lstm_0_h": np.zeros((1, 4))})[0])


def test_odd_symbols_states_and_paths_are_the_librarys_own_errors(api_run, predictor, tmp_path):
    from echo_keras.callbacks import BatchLossRecorder
    from echo_keras.errors import StateFileError

    run_dir, _ = api_run
    state = predictor.zero_state()
    complex_state = {name: value + 1j for name, value in state.items()}
    config = ek.TrainConfig(**SMALL)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    refused = [
        (lambda: predictor.predict([[0], [1, 0]]), ek.ConfigError, "symbols"),
        (lambda: predictor.predict([0], dict.fromkeys(state, "abc")), ek.ConfigError, "state"),
        (lambda: predictor.predict([0], complex_state), ek.ConfigError, "state"),
        (lambda: ek.plot_run(run_dir, tmp_path / "p.nope"), ek.ConfigError, "unknown image format"),
        (lambda: ek.train(config, a_file), ek.ConfigError, "is a file, not a folder"),
        (lambda: ek.train(config, a_file / "sub"), ek.ConfigError, "is a file, not a folder"),
        (lambda: BatchLossRecorder(num_batches=1.5), ek.ConfigError, "num_batches"),
        (lambda: predictor.load_state(tmp_path), StateFileError, "is a folder, not a state"),
        (lambda: predictor.save_state(tmp_path / "s.npz", None), ek.ConfigError, "state: must be"),
    ]  # fmt: skip
    for call, error, message in refused:
        with pytest.raises(error, match=message) as raised:
            call()
        assert raised.value.exit_status == 2
    assert not (tmp_path / "s.npz").exists()
    assert BatchLossRecorder(num_batches=np.int64(40)).num_batches == 40  # numpy's ints too


def test_what_is_not_a_path_or_a_callback_is_named_as_the_librarys_own_error(
    api_run, predictor, tmp_path
):
    run_dir, _ = api_run
    config = ek.TrainConfig(**SMALL)
    spec = ek.make_spec({"echo_step": "1", "truncated_backprop_length": "3"}, None, {})
    refused = [
        (lambda: ek.evaluate(None), "run_dir: must be a path"),
        (lambda: ek.evaluate(str(run_dir).encode()), "run_dir: must be a path"),
        (lambda: ek.evaluate(""), "run_dir: must name a file or folder"),
        (lambda: ek.draw_run(3), "run_dir: must be a path"),
        (lambda: ek.plot_run(run_dir, out=b"p.png"), "out: must be a path"),
        (lambda: ek.load_predictor(None), "run_dir: must be a path"),
        (lambda: ek.export_saved_model(run_dir, None), "out: must be a path"),
        (lambda: ek.RunFolder(None), "run_dir: must be a path"),
        (lambda: predictor.save_state(None, predictor.zero_state()), "path: must be a path"),
        (lambda: predictor.load_state(None), "path: must be a path"),
        (lambda: ek.train(config, tmp_path / "r", callbacks=[1]), "callbacks: must be Keras"),
        (lambda: ek.train(config, tmp_path / "r", callbacks="x"), "callbacks: must be a list"),
        (lambda: ek.train(config, tmp_path / "r", tensorboard_dir=1), "tensorboard_dir: must"),
        (lambda: ek.run_sweep(None, tmp_path / "s"), "spec must be a SweepSpec"),
        (lambda: ek.run_sweep(spec, None), "out: must be a path"),
    ]  # fmt: skip
    for call, message in refused:
        with pytest.raises(ek.UsageError, match=message) as raised:
            call()
        assert raised.value.exit_status == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert ek.train(config, tmp_path / "r", callbacks=None).epochs == 2  # None: no callbacks


def test_no_output_goes_inside_another_runs_folder_which_its_overwrite_would_delete(
    api_run, predictor, tmp_path
):
    """A state file, an export or a sweep inside any run folder, not only the one in hand."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(api_run[0], other)
    spec = ek.make_spec({"echo_step": "1", "truncated_backprop_length": "3"}, None, {})
    refused = [
        (lambda: predictor.save_state(other / "s.npz", predictor.zero_state()), ek.ConfigError),
        (lambda: ek.export_saved_model(api_run[0], other / "exp"), ek.UsageError),
        (lambda: ek.run_sweep(spec, other / "sweep"), ek.ConfigError),  # before Ray starts
    ]
    before = sorted(path.name for path in other.iterdir())
    for call, error in refused:
        with pytest.raises(error, match=f"inside the run folder {other}"):
            call()
    assert sorted(path.name for path in other.iterdir()) == before


def test_a_state_that_cannot_be_written_is_a_state_file_error(predictor, tmp_path, monkeypatch):
    """A full disk: the library's own error (exit status 1, as `predict --state-out`), and
    the state file there stays as it was."""
    from echo_keras.errors import StateFileError

    path = tmp_path / "state.npz"
    predictor.save_state(path, predictor.zero_state())
    earlier = path.read_bytes()

    def full_disk(handle, **arrays):
        handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(StateFileError, match="cannot write .*No space left") as raised:
        predictor.save_state(path, predictor.zero_state())
    assert raised.value.exit_status == 1
    assert path.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_a_full_disk_is_the_librarys_own_error_that_is_also_an_oserror(
    api_run, tmp_path, monkeypatch
):
    """train and plot_run: a WriteError (exit status 1, as the command line's), one line
    naming what could not be written, and an OSError as before."""
    from echo_keras.errors import WriteError
    from echo_keras.plots import figure
    from echo_keras.run import files

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "append_history", full_disk)
    with pytest.raises(WriteError, match="cannot write the run .*: No space left") as raised:
        ek.train(ek.TrainConfig(**SMALL), tmp_path / "run")
    assert raised.value.exit_status == 1 and isinstance(raised.value, OSError)
    monkeypatch.setattr(figure, "save_figure", full_disk)
    out = tmp_path / "figure.png"
    with pytest.raises(ek.EchoKerasError, match=f"cannot write the figure {out}: No space"):
        ek.plot_run(api_run[0], out)


def test_a_files_path_written_as_a_folders_is_refused_not_read_as_the_file(
    api_run, predictor, tmp_path
):
    """A file's path that ends in / names a folder, as the command line's file options say:
    a ConfigError naming the argument (exit status 2), never the file of that name read,
    written or replaced (evaluate's data: test_evaluate_data.py)."""
    run_dir, _ = api_run
    image, state, data = tmp_path / "p.png", tmp_path / "s.npz", tmp_path / "d.txt"
    data.write_text("abcabc\n")
    predictor.save_state(state, predictor.zero_state())
    kept = state.read_bytes()
    refused = [
        (lambda: ek.plot_run(run_dir, f"{image}/"), "^out: .*p.png/ ends in /, so it names"),
        (lambda: predictor.save_state(f"{state}/", predictor.zero_state()), "^path: .*folder"),
        (lambda: predictor.load_state(f"{state}/"), "^path: .*s.npz/ ends in /"),
        (lambda: ek.TrainConfig(data=f"{data}/"), "^data: .*d.txt/ ends in /"),
        (lambda: ek.TrainConfig(data=str(data), validation_data=f"{data}/"), "^validation_d"),
    ]  # fmt: skip
    for call, message in refused:
        with pytest.raises(ek.ConfigError, match=message) as raised:
            call()
        assert raised.value.exit_status == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.txt", "s.npz"]
    assert state.read_bytes() == kept


def test_paths_and_values_no_system_call_takes_are_config_errors(api_run, predictor, tmp_path):
    """A NUL in a path, a name too long, a value past every float: each a ConfigError (or a
    StateFileError) naming the argument, not Python's ValueError, OSError or OverflowError
    (generate's temperature alike: test_config.py)."""
    run_dir, _ = api_run
    nul = str(tmp_path / "a\0b")
    refused = [
        (lambda: ek.load_predictor(nul), ek.ConfigError, "run_dir: must not hold a NUL"),
        (lambda: ek.TrainConfig(data=nul), ek.ConfigError, "^data: must not hold a NUL"),
        (lambda: ek.TrainConfig(data="x", validation_data=nul), ek.ConfigError, "validation_"),
        (lambda: ek.evaluate(nul), ek.ConfigError, "run_dir: must not hold a NUL"),
        (lambda: ek.draw_run(nul), ek.ConfigError, "run_dir: must not hold a NUL"),
        (lambda: ek.RunFolder(nul).status(), ek.ConfigError, "run_dir: must not hold a NUL"),
        (lambda: ek.export_saved_model(nul, tmp_path / "o"), ek.ConfigError, "run_dir: .* NUL"),
        (lambda: ek.export_saved_model(run_dir, nul), ek.ConfigError, "out: must not hold a NUL"),
        (lambda: predictor.load_state(nul), ek.ConfigError, "path: must not hold a NUL"),
        (lambda: predictor.load_state("x" * 300), ek.StateFileError, "cannot be read"),
        (
            lambda: predictor.predict([0], {n: [[10**400] * 4] for n in predictor.state_names}),
            ek.ConfigError,
            "state: must hold float arrays",
        ),
    ]
    for call, error, message in refused:
        with pytest.raises(error, match=message):
            call()
