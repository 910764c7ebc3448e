"""`echo-keras evaluate`: evaluate a trained run on a fresh series (an echo run) or on data
(a run on its own data), and print the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from echo_keras.cli import stdio
from echo_keras.cli.common import (
    AS_JSON,
    RUN_DIR,
    JsonOutput,
    bad_parameter,
    file_path,
    notice,
    output_errors,
    warn_if_unfinished,
)
from echo_keras.errors import WriteError
from echo_keras.options import as_flags
from echo_keras.run.folder import RunFolder


def evaluate(
    run_dir: Path = RUN_DIR,
    data: Path | None = typer.Option(
        None,
        "--data",
        parser=file_path,
        metavar="<file>",
        help="A run on its own data: evaluate on this file, read through the run's "
        "vocabulary.  [default: the run's validation data]",
    ),
    seed: int | None = typer.Option(
        None,
        help="Seed of the fresh series.  [default: the run's seed, on a stream "
        "no training epoch used]",
    ),
    series_length: int | None = typer.Option(
        None, help="Symbols to evaluate on.  [default: the training length]"
    ),
    reset_each_window: bool = typer.Option(
        False, "--reset-each-window", help="Zero the state before every window (the ablation)."
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Evaluate a trained run on fresh data, carrying the state as in training.

    An echo run is evaluated on a fresh series; a run on its own data (train --data) on
    its validation data, or on --data FILE.
    """
    if seed is not None and seed < 0:
        raise bad_parameter("--seed", f"must not be negative, got {seed}")
    config = RunFolder(run_dir).read_config()
    if config.data is not None:
        _evaluate_data(run_dir, config, data, seed, series_length, reset_each_window, as_json)
        return
    if data is not None:
        raise bad_parameter(
            "--data", "only a run trained on its own data takes a data file; an echo run is "
            "evaluated on a fresh series (--seed, --series-length)"
        )  # fmt: skip
    from echo_keras.evaluation import evaluate as run_evaluation
    from echo_keras.evaluation import evaluation_length, evaluation_note, format_table

    length = evaluation_length(config, series_length)  # a bad length is refused before loading
    note = evaluation_note(config, length)
    if note:
        notice(as_flags(f"Note: {note}"))
    _check_stdout()
    metrics = run_evaluation(  # its notes, ignored as warnings (app.py), are printed here
        run_dir, seed=seed, series_length=series_length, reset_each_window=reset_each_window
    )
    warn_if_unfinished(run_dir, checkpoint=True)  # after: a run with no model has its error
    with output_errors("the evaluation"):
        if as_json:
            JsonOutput.echo(json.dumps(metrics.to_dict()))
        else:
            typer.echo(f"Evaluation of {run_dir} on a fresh series:")
            typer.echo(format_table(metrics, config.echo_step, config.truncated_backprop_length))


def _evaluate_data(run_dir, config, data, seed, series_length, reset_each_window, as_json):
    """A run on its own data: its validation data, or `--data`."""
    for flag, value in (("--seed", seed), ("--series-length", series_length)):
        if value is not None:
            raise bad_parameter(
                flag, "only an echo run takes it; a run on its own data is evaluated on its "
                "validation data or on --data"
            )  # fmt: skip
    from echo_keras.data_evaluation import format_data_table
    from echo_keras.evaluation import evaluate_source, evaluation_source

    source = evaluation_source(run_dir, data)  # a bad file is refused before loading
    if source.note:
        notice(as_flags(f"Note: {source.note}"))
    _check_stdout()
    metrics = evaluate_source(run_dir, source, reset_each_window)
    warn_if_unfinished(run_dir, checkpoint=True)
    with output_errors("the evaluation"):
        if as_json:
            JsonOutput.echo(json.dumps(metrics.to_dict()))
        else:
            typer.echo(f"Evaluation of {run_dir} on {source.description}:")
            typer.echo(format_data_table(metrics, config))


def _check_stdout() -> None:
    """WriteError for a closed stdout (`>&-`), once the flags are found good: the metrics
    are all that evaluate makes, and none of them would be seen."""
    if "stdout" in stdio.CLOSED:
        raise WriteError("cannot print the evaluation: stdout is closed")
