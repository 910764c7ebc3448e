"""`echo-keras evaluate`: evaluate a trained run on a fresh series and print the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from echo_keras.cli.common import AS_JSON, RUN_DIR, JsonOutput, bad_parameter, warn_if_unfinished
from echo_keras.run.folder import RunFolder


def evaluate(
    run_dir: Path = RUN_DIR,
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
    """Evaluate a trained run on fresh data, carrying the state as in training."""
    if seed is not None and seed < 0:
        raise bad_parameter("--seed", f"must not be negative, got {seed}")
    config = RunFolder(run_dir).read_config()
    from echo_keras.evaluation import evaluate as run_evaluation
    from echo_keras.evaluation import evaluation_length, format_table

    evaluation_length(config, series_length)  # a bad length is refused before loading
    metrics = run_evaluation(
        run_dir, seed=seed, series_length=series_length, reset_each_window=reset_each_window
    )
    if not as_json:  # after: a run that has no model gets its one-line error alone
        warn_if_unfinished(run_dir, checkpoint=True)
    if as_json:
        JsonOutput.echo(json.dumps(metrics.to_dict()))
    else:
        typer.echo(f"Evaluation of {run_dir} on a fresh series:")
        typer.echo(format_table(metrics, config.echo_step, config.truncated_backprop_length))
