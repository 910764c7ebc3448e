"""`echo-keras train`: parse the settings, check the run folder, train, print the result."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from echo_keras.cli.common import (
    AS_JSON,
    QUIET,
    RUN_DIR,
    JsonOutput,
    Resume,
    bad_parameter,
    file_path,
    given_settings,
    nonempty_path,
    notice,
    report_of_kept_work,
    setting,
)
from echo_keras.config import TrainConfig, new_config, resumed_config
from echo_keras.errors import ConfigError, UsageError
from echo_keras.memory import memory_problem
from echo_keras.options import PLAIN_DOCUMENTS, as_flags, new_run_problem
from echo_keras.paths import kept_path
from echo_keras.run import fileio
from echo_keras.run.folder import RunFolder


def train(
    run_dir: Path = RUN_DIR,
    num_epochs: int | None = setting("num_epochs"),
    total_series_length: int | None = setting("total_series_length"),
    truncated_backprop_length: int | None = setting("truncated_backprop_length"),
    batch_size: int | None = setting("batch_size"),
    state_size: int | None = setting("state_size"),
    num_classes: int | None = setting("num_classes"),
    echo_step: int | None = setting("echo_step"),
    learning_rate: float | None = setting("learning_rate"),
    seed: int | None = setting("seed"),
    cell: str | None = setting("cell"),
    num_layers: int | None = setting("num_layers"),
    dropout: float | None = setting("dropout"),
    optimizer: str | None = setting("optimizer"),
    data: Path | None = setting("data", parser=file_path),
    data_format: str | None = setting("data_format"),
    task: str | None = setting("task"),
    input_encoding: str | None = setting("input_encoding"),
    documents: bool | None = setting("documents"),
    validation_data: Path | None = setting("validation_data", parser=file_path),
    validation_fraction: float | None = setting("validation_fraction"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing run (once the new one is done)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --run-dir from its last epoch."
    ),
    plot_every: int | None = typer.Option(
        None, help="Redraw RUN_DIR/live.png every N batches while training."
    ),
    tensorboard: Path | None = typer.Option(
        None,
        parser=nonempty_path,
        metavar="<dir>",
        help="Write TensorBoard logs (per-batch loss) to this folder.",
    ),
    plain: bool = typer.Option(
        False,
        "--plain",
        help="Train with a plain model.fit, one window per step (slow; for debugging).",
    ),
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
) -> None:
    """Train a stateful LSTM on the echo task (or your own sequence) into a run folder."""
    Resume.command = Resume.training(run_dir)
    given = given_settings(locals())
    for field in ("data", "validation_data"):  # kept whole: a resume may run elsewhere
        if field in given:
            given[field] = kept_path(given[field])
    if overwrite and resume:
        raise UsageError("--overwrite and --resume cannot be used together")
    if plot_every is not None and plot_every <= 0:
        raise bad_parameter("--plot-every", f"must be positive, got {plot_every}")
    if not resume:  # a setting that cannot work is named before the run folder is looked at
        config = new_config(given)
        _check_new_run(config, run_dir, given, plain)
    folder = RunFolder(run_dir)
    problem = folder.unwritable()
    if problem:
        raise bad_parameter("--run-dir", problem)
    problem = fileio.folder_problem(tensorboard) if tensorboard is not None else None
    if problem:
        raise bad_parameter("--tensorboard", problem)
    if tensorboard is not None and folder.replacing_deletes(
        tensorboard, overwrite=overwrite, resume=resume
    ):
        how = "(--overwrite) " if overwrite else "(it never completed an epoch) "
        raise bad_parameter(
            "--tensorboard", f"inside the run folder, replacing its run {how}deletes it"
        )
    folder.check(overwrite=overwrite, resume=resume)  # again under the lock, once training starts
    if resume:
        config = resumed_config(folder.read_config(), given)
        problem = memory_problem(config)
        if problem:
            raise UsageError(problem)

    notices = not (quiet or as_json)
    if quiet:  # not even the notice that loading Keras overrides another backend
        os.environ["KERAS_BACKEND"] = "tensorflow"
    from echo_keras import training

    result = training.train(
        config,
        run_dir,
        overwrite=overwrite,
        resume=resume,
        progress=notices and sys.stdout.isatty(),
        plain=plain,
        plot_every=plot_every,
        tensorboard_dir=tensorboard,
        notify=(lambda message: notice(as_flags(message))) if notices else None,
    )

    # The run is complete and kept: if its report cannot be printed (a closed or
    # broken stdout), the exit status still says so.
    with report_of_kept_work():
        _report(result, as_json, quiet)


def _check_new_run(config: TrainConfig, run_dir: Path, given: dict, plain: bool) -> None:
    """ConfigError or UsageError for settings a new run cannot train with, as `train` would
    raise them once the run folder is taken: here they come first."""
    problem = new_run_problem(config, run_dir, given)
    if problem:
        raise ConfigError(*problem)
    problem = memory_problem(config)
    if problem:
        raise UsageError(problem)
    if plain and config.documents:
        raise UsageError(PLAIN_DOCUMENTS)


def _epochs_trained(result, num_batches: int) -> str:
    """`5 epochs` for a run trained whole; `epochs 9-20` for a call that continued one."""
    first = result.epochs - result.steps // num_batches + 1
    if first <= 1:
        return f"{result.epochs} epoch{'s' * (result.epochs != 1)}"
    if first == result.epochs:
        return f"epoch {first}"
    return f"epochs {first}-{result.epochs}"


def _report(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        keys = ("run_dir", "epochs", "steps", "final_loss", "train_seconds", "steps_per_second")
        report = {key: getattr(result, key) for key in keys}
        if result.validation:
            report["validation"] = result.validation[-1]
        JsonOutput.echo(json.dumps(report))
    elif not quiet and result.steps == 0:  # a resume of a run whose last save had failed
        typer.echo(
            f"Saved the run: its {result.epochs} epochs were already trained; last epoch's "
            f"mean batch loss {result.final_loss:.5f}"
        )
    elif not quiet:
        typer.echo(
            f"Trained {_epochs_trained(result, result.batches_per_epoch)} ({result.steps} "
            f"batches) in {result.train_seconds:.1f} s, {result.steps_per_second:.0f} "
            f"batches/s; last epoch's mean batch loss {result.final_loss:.5f}"
        )
        if result.validation:
            last = result.validation[-1]
            typer.echo(
                f"Validation after epoch {last['epoch'] + 1}: loss {last['loss']:.4f} "
                f"({last['bits_per_symbol']:.4f} bits per symbol), "
                f"accuracy {last['accuracy']:.4f}"
            )
        typer.echo(f"Run folder: {result.run_dir}")
