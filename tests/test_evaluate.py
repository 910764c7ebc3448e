"""Evaluation: carried-state accuracy, the boundary positions, the reset-each-window ablation,
the `evaluate` command and the values it refuses."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import warnings

import numpy as np
import pytest

from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows, eval_rng, windows_from_rng
from echo_keras.errors import ConfigError, EchoKerasWarning
from echo_keras.evaluation import evaluate, evaluation_length, format_table, score
from echo_keras.model import build_model
from echo_keras.run import files
from tests.helpers import TINY, invoke, one_line_error, rss_mib

KEYS = {
    "loss",
    "accuracy",
    "boundary_accuracy",
    "inner_accuracy",
    "windows",
    "positions",
    "scored",
    "reset_each_window",
}


def test_score_splits_boundary_and_inner_positions():
    correct = np.ones((3, 2, 5), dtype=bool)
    correct[0, :, :2] = False  # first window's boundary: left out of boundary accuracy
    correct[1, 0, 1] = False  # a boundary miss
    correct[2, 1, 4] = False  # an inner miss
    metrics = score(np.full(3, 2.0), correct, echo_step=2, reset=False)
    assert metrics.boundary_accuracy == pytest.approx(7 / 8)
    assert metrics.inner_accuracy == pytest.approx(17 / 18)
    assert metrics.accuracy == pytest.approx(24 / 26)  # not the first 2 of a row: no echo there
    assert metrics.loss == pytest.approx(6 / 30)
    assert (metrics.windows, metrics.positions, metrics.scored) == (3, 30, 26)
    table = format_table(metrics, 2, 5).splitlines()
    assert table[-3].split("   ")[-1] == "positions after the first 2 of every window"
    assert table[-1].split() == [
        "positions", "30", "accuracy", "over", "26:", "each", "row's", "first", "2", "left",
        "out", "(their", "echo:", "the", "row", "before,", "or", "padding)",
    ]  # fmt: skip


def test_positions_whose_echo_is_in_another_row_are_scored_by_no_accuracy():
    """An echo of 4 in windows of 3: a row's positions 0-3 echo the row before it (row 1's
    are zeros), so the boundary starts at position 4, inside the second window."""
    correct = np.ones((4, 2, 3), dtype=bool)
    correct[1, :, 0] = False  # position 3: its echo is in the row before
    correct[1, 0, 2] = False  # position 5: a miss
    metrics = score(np.zeros(4), correct, echo_step=4, reset=False)
    assert metrics.accuracy == pytest.approx(15 / 16)
    assert metrics.boundary_accuracy == pytest.approx(15 / 16)
    assert metrics.inner_accuracy is None


def test_an_echo_no_shorter_than_a_row_is_refused_for_a_run_a_sweep_and_evaluate(tmp_path):
    """Such a run, saved before the rule, still loads (its config is valid)."""
    from echo_keras.sweep.grid import make_spec
    from echo_keras.training import train

    config = TrainConfig(echo_step=12, truncated_backprop_length=4, total_series_length=60)
    expected = r"^echo_step: must be shorter than a row .*\(12 symbols"  # 5 rows of 3 x 4
    with pytest.raises(ConfigError, match=expected):
        train(config.validate(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="^echo_step: the point `echo_step` 12, .*shorter than a"):
        make_spec({"echo_step": "12", "truncated_backprop_length": "4"}, 1,
                  {"total_series_length": 60})  # fmt: skip
    with pytest.raises(ConfigError, match="^series_length: must be at least 80"):
        evaluation_length(config, 60)
    longer = dataclasses.replace(config, total_series_length=80).validate()  # rows of 16
    with pytest.raises(ConfigError, match="^series_length: must be at least 80 for the run's"):
        evaluation_length(longer, 79)
    assert evaluation_length(longer, 80) == 80


def test_score_without_boundary_positions_reports_none():
    metrics = score(np.zeros(2), np.ones((2, 1, 4), dtype=bool), echo_step=0, reset=False)
    assert metrics.boundary_accuracy is None and metrics.inner_accuracy == 1.0


@pytest.mark.slow
def test_trained_model_predicts_the_boundary_from_the_carried_state(default_run):
    run_dir, _ = default_run
    carried = evaluate(run_dir)
    assert carried.accuracy >= 0.995
    assert carried.boundary_accuracy >= 0.99
    assert carried.windows == 666 and carried.positions == 666 * 5 * 15
    reset = evaluate(run_dir, reset_each_window=True)
    assert reset.reset_each_window
    assert reset.boundary_accuracy <= 0.8  # chance: the state that held the answer is gone
    assert reset.inner_accuracy >= 0.9  # the echo within the window still works
    assert reset.loss > carried.loss


def test_untrained_model_scores_near_chance(tmp_path, tiny_config):
    run_dir = tmp_path / "untrained"
    run_dir.mkdir()
    files.write_config(run_dir, tiny_config)
    build_model(tiny_config).save(run_dir / files.MODEL)
    files.write_status(run_dir, "complete")  # a run folder made by hand, as train ends one
    metrics = evaluate(run_dir, series_length=20000)
    assert 0.4 <= metrics.accuracy <= 0.6
    assert 0.35 <= metrics.boundary_accuracy <= 0.65


def test_runs_of_one_shape_evaluated_in_turn_each_get_their_own_metrics_in_flat_memory(
    tiny_run, tmp_path
):
    """A process evaluating again and again (a notebook) keeps one model per shape and its
    traced loops, the weights of each run set in it; before, every call traced its loop anew
    and TensorFlow kept what it compiled: about 1 MB a call."""
    from echo_keras import warm
    from echo_keras.training import train

    other = train(dataclasses.replace(TINY, seed=7), tmp_path / "other").run_dir
    warm.clear()
    first = evaluate(tiny_run, seed=3)  # the run's own loaded model, then kept
    first_reset = evaluate(tiny_run, seed=3, reset_each_window=True)
    theirs = evaluate(other, seed=3)  # the kept model, with the other run's weights
    assert theirs != first  # the same series: only the weights differ
    assert evaluate(tiny_run, seed=3) == first and evaluate(other, seed=3) == theirs
    assert evaluate(tiny_run, seed=3, reset_each_window=True) == first_reset
    short = [evaluate(run, seed=3, series_length=1000) for run in (tiny_run, other)]
    before = rss_mib()
    for _ in range(20):
        assert [evaluate(run, seed=3, series_length=1000) for run in (tiny_run, other)] == short
    assert rss_mib() - before < 8  # 40 evaluations: some 40 MB before


def test_default_seed_gives_data_no_training_epoch_saw():
    config = TrainConfig(num_epochs=5)
    evaluation, _ = windows_from_rng(eval_rng(config.seed), config)
    for epoch in range(config.num_epochs):
        training, _ = epoch_windows(config, epoch)
        assert np.mean(evaluation == training) < 0.6  # unrelated series agree half the time


def test_evaluate_json_and_table(tiny_run):
    result = invoke("evaluate", "--run-dir", tiny_run, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == KEYS
    assert payload["reset_each_window"] is False
    table = invoke("evaluate", "--run-dir", tiny_run, "--reset-each-window")
    assert table.exit_code == 0, table.output
    assert "boundary accuracy" in table.stdout and "zeroed before every window" in table.stdout


def test_evaluate_seed_and_length(tiny_run):
    def run(*args):
        result = invoke("evaluate", "--run-dir", tiny_run, "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("--seed", "7") == run("--seed", "7")
    assert run("--series-length", "3000")["windows"] == 60
    assert run("--series-length", "3007")["positions"] == 3000  # remainder dropped


@pytest.mark.parametrize(
    "args, flag", [(["--series-length", "10"], "--series-length"), (["--seed", "-1"], "--seed")]
)
def test_evaluate_bad_values(tiny_run, args, flag):
    result = invoke("evaluate", "--run-dir", tiny_run, *args)
    assert result.exit_code == 2
    assert flag in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("length", [10**11, 10**400], ids=["1e11", "1e400 (past any float)"])
def test_evaluate_refuses_a_series_that_cannot_fit_in_memory(tiny_run, length):
    result = invoke("evaluate", "--run-dir", tiny_run, "--series-length", str(length))
    one_line_error(result, "--series-length", "memory", code=2)
    with pytest.raises(ConfigError, match=r"^series_length: \S+ needs .*memory") as refused:
        evaluate(tiny_run, series_length=length)  # the library names its own argument, once
    assert "total_series_length" not in str(refused.value)


def test_the_library_names_series_length_as_its_caller_wrote_it(tiny_run):
    for length, reason in ((2000.0, "must be an integer"), (1, "must be at least 50 for")):
        with pytest.raises(ConfigError, match=f"^series_length: {reason}"):
            evaluate(tiny_run, series_length=length)


def test_an_interrupted_run_is_evaluated_at_its_checkpoint_with_a_warning(run_copy):
    complete = invoke("evaluate", "--run-dir", run_copy, "--json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete run: nothing to warn of
        evaluate(run_copy)
    (run_copy / "model.keras").unlink()  # the tiny run's checkpoint is of its last epoch, 2
    files.write_status(run_copy, "interrupted", "interrupted by SIGINT after 2 of 4 epochs")
    with warnings.catch_warnings():
        warnings.simplefilter("error", EchoKerasWarning)  # the command says it in its note
        result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip().splitlines()[-1]
    assert "is interrupted" in warning and "evaluated at its checkpoint, after epoch 2" in warning
    as_json = invoke("evaluate", "--run-dir", run_copy, "--json")
    assert json.loads(as_json.stdout) == json.loads(complete.stdout)  # the same weights
    assert as_json.stderr.strip().splitlines()[-1] == warning  # stderr is free under --json
    with pytest.warns(EchoKerasWarning, match=r"is interrupted.*checkpoint, after epoch 2$"):
        evaluate(run_copy)  # the library's caller is told as the command line's user is


def test_evaluate_an_unfinished_run_without_a_checkpoint_says_why_there_is_no_model(run_copy):
    (run_copy / "model.keras").unlink()
    shutil.rmtree(run_copy / "checkpoint")
    files.write_status(run_copy, "interrupted", "interrupted by SIGINT in its first epoch")
    result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 1
    assert "model.keras is missing: the run is interrupted" in result.stderr
    assert "nothing to resume" in result.stderr and "Traceback" not in result.output


def test_a_series_too_short_for_the_run_is_named_for_what_it_is(tiny_run):
    result = invoke("evaluate", "--run-dir", tiny_run, "--series-length", "1")
    expected = "must be at least 50 for the run's --echo-step (3): 5 rows of whole windows of 10"
    one_line_error(result, "--series-length", expected, code=2)


def test_a_fresh_series_that_does_not_fill_whole_windows_is_noted(tiny_run):
    """1,537 symbols in 5 rows of windows of 10 leave 37 out (2%): noted, to the library's
    caller as a warning; 1,500 fill them: nothing to note."""
    note = (
        "the fresh series (--series-length): 1537 symbols do not fill whole windows; using "
        "1500 (30 windows of 5 x 10), dropping the last 37"
    )
    result = invoke("evaluate", "--run-dir", tiny_run, "--series-length", "1537")
    assert result.exit_code == 0 and f"Note: {note}\n" in result.stderr, result.output
    with pytest.warns(
        EchoKerasWarning, match=re.escape(note.replace("--series-length", "`series_length`"))
    ):
        evaluate(tiny_run, series_length=1537)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(tiny_run, series_length=1500)
