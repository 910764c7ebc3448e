"""Evaluation of a run on its own data (`train --data`): its validation data or another file,
loss in nats and bits per symbol, the boundary positions carried against reset, symbols
outside the vocabulary, and the values `evaluate` refuses for such a run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest

import echo_keras as ek
from echo_keras.config import TrainConfig
from echo_keras.corpus import laid_out, read_symbols
from echo_keras.data import Windows, series_windows
from echo_keras.data_evaluation import _groups, boundary_width
from echo_keras.run import files
from tests.helpers import invoke, one_line_error

KEYS = {
    "loss",
    "bits_per_symbol",
    "accuracy",
    "boundary_loss",
    "boundary_accuracy",
    "inner_loss",
    "inner_accuracy",
    "windows",
    "positions",
    "scored",
    "reset_each_window",
}
SMALL = {"batch_size": 5, "truncated_backprop_length": 10, "optimizer": "adam"}


def _train(folder, text: str, **settings):
    from echo_keras.training import train

    (folder / "data.txt").write_text(text)
    config = TrainConfig(data=str(folder / "data.txt"), **{**SMALL, **settings})
    train(config, folder / "run", progress=False, notify=[].append)  # its notes unsaid
    return folder / "run"


@pytest.fixture(scope="module")
def cycle_run(tmp_path_factory):
    """Lines of "abcd", the next-symbol task: every next symbol is certain (60 windows)."""
    folder = tmp_path_factory.mktemp("cycle")
    return _train(folder, "abcd\n" * 640, num_epochs=3, state_size=8, learning_rate=0.02)


@pytest.fixture(scope="module")
def echo_text_run(tmp_path_factory):
    """Random a/b text, the echo task 2 back: a window's first 2 targets lie in the window
    before, which only the carried state remembers (120 windows)."""
    folder = tmp_path_factory.mktemp("echo-text")
    text = "".join(np.random.default_rng(0).choice(list("ab"), 6000))
    return _train(
        folder, text, task="echo", echo_step=2, num_epochs=4, state_size=16, learning_rate=0.02
    )


# --- without a model -----------------------------------------------------------------------


def test_boundary_width_is_the_echo_step_or_five_positions_of_the_next_symbol():
    assert boundary_width(TrainConfig(data="x", task="echo", echo_step=3)) == 3
    assert boundary_width(TrainConfig(data="x", truncated_backprop_length=20)) == 5
    assert boundary_width(TrainConfig(data="x", truncated_backprop_length=4)) == 3
    assert boundary_width(TrainConfig(data="x", truncated_backprop_length=1)) == 0


def test_groups_leave_out_padding_and_the_first_window_of_each_row_and_document():
    windows = series_windows(np.arange(40), np.arange(40), 2, 5)  # 4 windows of 2 rows
    groups = _groups(windows.chunk(0, 4), 0, 2)
    assert (groups[0, :, :2] == 2).all() and (groups[1:, :, :2] == 0).all()
    assert (groups[..., 2:] == 1).all()
    assert (_groups(windows.chunk(2, 4), 2, 2)[:, :, :2] == 0).all()  # a later chunk
    weights = np.ones((2, 20), np.uint8)
    weights[1, 17:] = 0
    resets = np.zeros((4, 2), bool)
    resets[[0, 2], 1] = True  # row 1 starts a document at windows 0 and 2
    documents = Windows(windows.inputs, windows.targets, 5, weights, resets)
    groups = _groups(documents.chunk(0, 4), 0, 2)
    assert (groups[2, 1, :2] == 2).all() and (groups[2, 0, :2] == 0).all()
    assert (groups[3, 1, 2:] == 3).all() and (groups[3, 0] != 3).all()


def test_an_echo_on_one_series_scores_no_accuracy_where_the_echo_is_in_the_row_before():
    """An echo of 7 in windows of 5: a row's positions 0-6 echo the row before (row 1's,
    zeros): in the loss, as training's, not in any accuracy; the boundary starts at 7."""
    config = TrainConfig(data="x", task="echo", echo_step=7, batch_size=2,
                         truncated_backprop_length=5)  # fmt: skip
    windows = laid_out(np.arange(47) % 3, None, config, "data")  # 4 windows of 2 rows
    assert windows.unscored == 7 and windows.scored(0, 4)[:, 0].ravel().tolist() == [
        column >= 7 for column in range(20)
    ]
    groups = _groups(windows.chunk(0, 4), 0, 5, windows.scored(0, 4))
    assert (groups[0] == 4).all() and (groups[1, :, :2] == 4).all()
    assert (groups[1, :, 2:] == 0).all() and (groups[2:] == 0).all()
    later = _groups(windows.chunk(1, 3), 1, 5, windows.scored(1, 2))  # a chunk's own start
    assert (later == groups[1:3]).all()
    next_task = laid_out(np.arange(47) % 3, None, dataclasses.replace(config, task="next"), "x")
    assert next_task.unscored == 0 and next_task.scored(0, 4).all()


def test_too_short_a_file_names_the_field():
    config = TrainConfig(data="x", batch_size=5, truncated_backprop_length=10)
    with pytest.raises(ek.ConfigError, match="`data` has 50 symbols, too few") as error:
        laid_out(np.zeros(50, np.uint8), None, config, "data")  # 49 pairs for the next symbol
    assert error.value.field == "data"
    echo = dataclasses.replace(config, task="echo", echo_step=60)
    with pytest.raises(ek.ConfigError, match="`data` has 60 symbols, too few for the echo task"):
        laid_out(np.zeros(60, np.uint8), None, echo, "data")  # windows, yet not one echo
    assert len(laid_out(np.zeros(61, np.uint8), None, echo, "data").inputs)


# --- trained runs --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_certain_grammar_is_learned_and_validation_matches_training(cycle_run):
    with pytest.warns(ek.EchoKerasWarning, match="319 targets do not fill whole windows"):
        metrics = ek.evaluate(cycle_run)  # 19 of the held-out end's: noted
    assert isinstance(metrics, ek.DataMetrics) and not metrics.reset_each_window
    assert metrics.loss < 0.05 and metrics.accuracy == 1.0
    assert metrics.bits_per_symbol == pytest.approx(metrics.loss / math.log(2))
    assert metrics.boundary_loss < 0.05 and metrics.inner_loss < 0.05
    # By default, the held-out end of the data, scored as training scored it.
    last = files.read_validation(cycle_run)[-1]
    assert metrics.loss == pytest.approx(last["loss"], rel=1e-4)
    assert metrics.accuracy == pytest.approx(last["accuracy"])
    assert metrics.windows == 6 and metrics.positions == 6 * 5 * 10


@pytest.mark.slow
def test_only_the_carried_state_predicts_a_windows_first_positions(echo_text_run):
    carried = ek.evaluate(echo_text_run)
    reset = ek.evaluate(echo_text_run, reset_each_window=True)
    assert reset.reset_each_window
    assert carried.boundary_loss < 0.1 and carried.boundary_accuracy > 0.95
    assert reset.boundary_loss > 0.5 and reset.boundary_accuracy < 0.75  # chance: ln 2, 0.5
    assert carried.inner_loss < 0.1 and reset.inner_loss < 0.1  # within the window: no need
    assert carried.boundary_loss < reset.boundary_loss
    last = files.read_validation(echo_text_run)[-1]  # each row's first 2 left out alike
    assert carried.accuracy == pytest.approx(last["accuracy"])
    assert carried.loss == pytest.approx(last["loss"], rel=1e-4)


@pytest.mark.slow
def test_evaluate_data_file_and_json(echo_text_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("".join(np.random.default_rng(1).choice(list("ab"), 3000)))
    result = invoke("evaluate", "--run-dir", echo_text_run, "--data", other, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown) == KEYS and shown["windows"] == 60 and shown["positions"] == 3000
    rows = files.load_config(echo_text_run).batch_size  # each row's first 2: no accuracy
    assert shown["scored"] == 3000 - 2 * rows
    assert shown == ek.evaluate(echo_text_run, data=other).to_dict()
    assert shown["boundary_accuracy"] > 0.95
    table = invoke("evaluate", "--run-dir", echo_text_run, "--data", other)
    assert table.exit_code == 0, table.output
    assert f"on {other}:" in table.stdout
    assert f"3000   accuracy over {3000 - 2 * rows}: each row's first 2 left out" in table.stdout
    for row in ("bits per symbol", "boundary loss", "inner loss", "first 2 positions"):
        assert row in table.stdout


@pytest.mark.slow
def test_a_run_without_validation_is_evaluated_on_its_training_data_and_says_so(
    cycle_run, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "validation_fraction": 0.0}))
    result = invoke("evaluate", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "on its training data" in result.stdout
    assert "--validation-fraction" in result.stderr and "training data" in result.stderr
    assert "windows            63" in result.stdout  # 3199 pairs: 63 windows of 5 x 10


@pytest.mark.slow
def test_a_symbol_outside_the_vocabulary_names_line_and_column(cycle_run, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("abcd\n" * 20 + "abXd")
    before = {path.name: path.stat().st_mtime_ns for path in cycle_run.iterdir()}
    for flags in ([], ["--json"]):
        result = invoke("evaluate", "--run-dir", cycle_run, "--data", bad, *flags)
        one_line_error(result, str(bad), "line 21, column 3", "'X'", code=2)
        if flags:
            assert json.loads(result.stdout)["exit_status"] == 2
        else:
            assert result.stdout == ""
    assert {path.name: path.stat().st_mtime_ns for path in cycle_run.iterdir()} == before
    with pytest.raises(ek.UsageError, match="line 21, column 3"):
        ek.evaluate(cycle_run, data=bad)
    with pytest.raises(ek.ConfigError, match="^data: .*bad.txt/ ends in /, so it names a fo"):
        ek.evaluate(cycle_run, data=f"{bad}/")  # not the file bad.txt


@pytest.mark.slow
def test_a_data_run_refuses_the_echo_series_options(cycle_run):
    for flag, value in (("--seed", "3"), ("--series-length", "1000")):
        one_line_error(invoke("evaluate", "--run-dir", cycle_run, flag, value), flag, code=2)
    with pytest.raises(ek.UsageError, match="series_length"):
        ek.evaluate(cycle_run, series_length=1000)


def test_an_echo_run_refuses_data(tiny_run, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("0101")
    result = invoke("evaluate", "--run-dir", tiny_run, "--data", data)
    one_line_error(result, "--data", "echo run", code=2)
    with pytest.raises(ek.UsageError, match="echo run"):
        ek.evaluate(tiny_run, data=data)


@pytest.mark.slow
def test_documents_are_evaluated_from_a_zeroed_state_without_their_padding(cycle_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "documents": True}))
    lengths = [40, 57, 80, 23, 100, 61, 44]  # characters of each document
    data = tmp_path / "documents.txt"
    data.write_text("\n\n".join(("abcd\n" * 30)[:length] for length in lengths))
    symbols = read_symbols(data, vocabulary=files.read_vocabulary(run_dir)[0], documents=True)
    sizes = np.diff(np.append(symbols.doc_starts, len(symbols.ids)))
    assert len(sizes) == len(lengths)
    metrics = ek.evaluate(run_dir, data=data)
    assert metrics.positions == int(np.sum(sizes - 1))  # a target for each but the first
    assert metrics.accuracy > 0.95  # a document cut mid-line: a line end where "c" was due


@pytest.mark.slow
def test_data_changed_since_training_is_noted(cycle_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    changed = tmp_path / "changed.txt"
    changed.write_text("abcd\n" * 630 + "dcba\n" * 10)
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "data": str(changed)}))
    result = invoke("evaluate", "--run-dir", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert f"--data {changed} changed since the run was trained" in result.stderr
    assert set(json.loads(result.stdout)) == KEYS


@pytest.mark.slow
def test_data_too_changed_to_evaluate_says_it_changed(cycle_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    short = tmp_path / "short.txt"
    short.write_text("abcd\n" * 20)  # too short for its held-out end to fill a window a row
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "data": str(short)}))
    result = invoke("evaluate", "--run-dir", run_dir)
    one_line_error(result, f"--data {short} changed since the run was trained", "too few", code=2)
    assert "Invalid value" not in result.stderr  # no flag of evaluate's is at fault


def test_a_runs_own_data_file_gone_is_said_so_not_blamed_on_a_flag_never_given(cycle_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    gone = tmp_path / "gone.txt"
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "data": str(gone)}))
    result = invoke("evaluate", "--run-dir", run_dir)
    one_line_error(result, f"{gone}, the file the run was trained on (--data), is no lo", code=1)
    assert "Invalid value" not in result.stderr
    with pytest.raises(ek.RunFolderError, match="evaluate the run on a file given as `data`"):
        ek.evaluate(run_dir)
    os.symlink(gone.parent / "nowhere", gone)  # a dangling symlink: no longer there either
    with pytest.raises(ek.RunFolderError, match="on .`data`., is no longer there; "):
        ek.evaluate(run_dir)
    os.unlink(gone)
    os.mkfifo(gone)  # there, but no file to read (reading it would wait for a writer)
    with pytest.raises(ek.RunFolderError, match="on .`data`., is no longer a regular file; "):
        ek.evaluate(run_dir)


def test_a_vocabulary_that_config_json_contradicts_is_the_run_folders_fault(cycle_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run, run_dir)
    vocabulary = json.loads((run_dir / files.VOCABULARY).read_text())
    vocabulary["symbols"] = vocabulary["symbols"][:-1]  # one symbol lost
    (run_dir / files.VOCABULARY).write_text(json.dumps(vocabulary))
    for command in ("evaluate", "predict"):
        result = invoke(command, "--run-dir", run_dir, *(["ab"] if command == "predict" else []))
        one_line_error(result, "vocabulary.json holds 4 symbols; config.json says 5", code=1)
    # The same number of symbols, of another kind: integers for a text run.
    count = len(vocabulary["symbols"]) + 1
    (run_dir / files.VOCABULARY).write_text(
        json.dumps({**vocabulary, "kind": "ints", "symbols": list(range(count))})
    )
    for command in ("evaluate", "predict"):
        result = invoke(command, "--run-dir", run_dir, *(["ab"] if command == "predict" else []))
        one_line_error(
            result, "vocabulary.json holds a vocabulary of ints; config.json says the data is text"
        )
    with pytest.raises(ek.RunFolderError, match="vocabulary of ints"):
        ek.load_predictor(run_dir)


def test_a_small_held_out_share_is_shown_as_it_is(cycle_run, tmp_path):
    from echo_keras.data_evaluation import data_source

    config = files.load_config(cycle_run)
    vocabulary = files.read_vocabulary(cycle_run)[0]
    for fraction, shown in ((0.1, "last 10% of"), (0.125, "last 12.5% of"), (0.04, "last 4% of")):
        changed = dataclasses.replace(config, validation_fraction=fraction)
        assert shown in data_source(changed, vocabulary, None).description


def test_an_echo_beyond_the_window_names_its_own_step(echo_text_run):
    from echo_keras.data_evaluation import DataMetrics, format_data_table

    config = files.load_config(echo_text_run)
    far = dataclasses.replace(config, echo_step=12)
    metrics = DataMetrics(*[0.5] * 7, windows=1, positions=10, reset_each_window=False, scored=10)
    assert "all 10 positions of windows 2.. (the echo reaches 12 back)" in format_data_table(
        metrics, far
    )


def test_a_run_with_its_own_validation_file_is_evaluated_without_its_training_file(tmp_path):
    """Only the validation file is scored, so only it is read: the training file may be gone."""
    (tmp_path / "held.txt").write_text("abcd\n" * 100)
    held = str(tmp_path / "held.txt")
    run_dir = _train(tmp_path, "abcd\n" * 200, validation_data=held, num_epochs=1, state_size=4)
    (tmp_path / "data.txt").unlink()
    result = invoke("evaluate", "--run-dir", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == KEYS
    (tmp_path / "held.txt").write_text("abcd\n" * 99 + "abcz\n")
    result = invoke("evaluate", "--run-dir", run_dir)
    one_line_error(result, f"--validation {held} changed since the run was trained", code=2)


def test_a_run_replaced_between_its_reads_is_refused_never_mixed(
    cycle_run, echo_text_run, tmp_path, monkeypatch
):
    """`train --overwrite` may swap the folder after the data was read through the run's
    vocabulary and before the model loads (evaluate, and predict's input check): one line,
    exit 1, never one run's model on the other's windows."""
    from echo_keras.evaluation import evaluate_source, evaluation_source
    from echo_keras.stream import model as stream_model

    run_dir = tmp_path / "run"

    def swap(into):
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(into, run_dir)

    swap(cycle_run)
    source = evaluation_source(run_dir)
    swap(echo_text_run)
    with pytest.raises(ek.RunFolderError, match="was replaced while it was read"):
        evaluate_source(run_dir, source)
    swap(cycle_run)
    source = evaluation_source(run_dir)
    saved = json.loads((run_dir / files.CONFIG).read_text())  # a resume began: more epochs
    (run_dir / files.CONFIG).write_text(json.dumps({**saved, "num_epochs": 9}))
    assert evaluate_source(run_dir, source).windows > 0  # the same run, not a replacement

    swap(cycle_run)
    load = stream_model.load_stream_model

    def swapped_first(path, **read):
        swap(echo_text_run)
        return load(path, **read)

    monkeypatch.setattr(stream_model, "load_stream_model", swapped_first)
    result = invoke("predict", "--run-dir", run_dir, "abcd")
    one_line_error(result, f"the run in {run_dir} was replaced while it was read", code=1)


def test_the_held_out_documents_are_named_as_what_they_are(tmp_path):
    """A documents run's held-out end starts at a document's start, past the fraction's cut:
    the header says which documents, not the fraction alone (a long first document left
    almost nothing held out while it said "the last 50%")."""
    data = tmp_path / "documents.txt"
    data.write_text("abcd\n" * 60 + "\n" + "abcd\n" * 4)
    flags = ["--batch-size", "1", "--window", "4", "--state-size", "4", "--epochs", "1"]
    run_dir = tmp_path / "run"
    result = invoke("train", "--data", data, "--documents", "--validation-fraction", "0.5",
                    "--run-dir", run_dir, *flags, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    shown = f"on the documents that start in the last 50% of {data}:"
    assert result.stdout.splitlines()[0] == f"Evaluation of {run_dir} {shown}"


def test_a_flag_for_the_other_kind_of_run_is_named_in_its_message(cycle_run, tiny_run):
    wrong = invoke("evaluate", "--run-dir", tiny_run, "--data", cycle_run / "config.json")
    one_line_error(wrong, "'--data': only a run trained on its own data takes a data", code=2)
    for flag in ("--seed", "--series-length"):
        wrong = invoke("evaluate", "--run-dir", cycle_run, flag, "5")
        one_line_error(wrong, f"'{flag}': only an echo run takes it", code=2)
