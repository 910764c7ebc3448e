"""The `echo-keras` command line: a thin layer that parses options, calls the library, prints.

TensorFlow is imported only inside the commands that need it, so `--help` and
`plot` answer at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from echo_keras import stdio
from echo_keras.config import ConfigError, TrainConfig, memory_problem, new_config, resumed_config
from echo_keras.rundir import RunFolderError
from echo_keras.runfolder import RunFolder, RunRefused

EXIT_USAGE = 2


class _OneLineErrors(TyperGroup):
    """Report every usage error as one line, `Error: ...`, with exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.TyperException as error:
            notice(f"Error: {error.format_message()}")
            sys.exit(getattr(error, "exit_code", 1))
        except typer.Abort:
            notice("Aborted.")
            sys.exit(1)
        except BrokenPipeError:  # the reader of our output went away (`| head`): not a bug
            sys.exit(1)
        except Exception as error:  # a bug or an environment problem: still one line
            if os.environ.get("ECHO_KERAS_DEBUG"):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            notice(
                f"Error: unexpected {type(error).__name__}: {reason} "
                "(set ECHO_KERAS_DEBUG=1 to see the traceback)"
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Train, evaluate, plot, run and export a stateful Keras LSTM on the echo task "
    "(truncated backpropagation through time, state carried across windows), "
    "and sweep how far truncated backprop reaches.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Train, evaluate, plot, run and export a stateful Keras LSTM on the echo task."""


def _folder_path(value: str | Path) -> Path:
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("must not be empty")
    return Path(value)


RUN_DIR = typer.Option(Path("runs/echo"), "--run-dir", parser=_folder_path, help="The run folder.")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `Error: message` on stderr; return the Exit to raise."""
    notice(f"Error: {message}")
    return typer.Exit(code)


def notice(message: str) -> None:
    """A line on stderr (errors, notices, warnings); lost, not fatal, if stderr is broken."""
    with contextlib.suppress(OSError, ValueError):
        typer.echo(message, err=True)


class UsageProblem(typer.TyperException):
    """A bad combination of flags or a refused run folder: exit status 2, like a bad value."""

    exit_code = EXIT_USAGE


def bad_parameter(flag: str, reason: str) -> typer.BadParameter:
    return typer.BadParameter(reason, param_hint=f"'{flag}'")


@app.command()
def train(
    run_dir: Path = RUN_DIR,
    epochs: int | None = typer.Option(None, help="Epochs, each on a fresh series.  [default: 5]"),
    series_length: int | None = typer.Option(
        None, help="Symbols per epoch (total_series_length).  [default: 50000]"
    ),
    window: int | None = typer.Option(
        None, help="Steps per window (truncated_backprop_length).  [default: 15]"
    ),
    batch_size: int | None = typer.Option(
        None, help="Rows the series is cut into; fixed in the model.  [default: 5]"
    ),
    state_size: int | None = typer.Option(None, help="Units per recurrent layer.  [default: 4]"),
    num_classes: int | None = typer.Option(None, help="Symbols of the alphabet.  [default: 2]"),
    echo_step: int | None = typer.Option(None, help="Delay of the echo.  [default: 3]"),
    learning_rate: float | None = typer.Option(
        None, help="Learning rate.  [default: 0.3 for adagrad; adam, rmsprop 0.01; sgd 0.5]"
    ),
    seed: int | None = typer.Option(None, help="Seed of data and weights.  [default: 0]"),
    cell: str | None = typer.Option(
        None, help="Recurrent cell: lstm, gru or simple.  [default: lstm]"
    ),
    layers: int | None = typer.Option(
        None, "--layers", help="Stacked recurrent layers.  [default: 1]"
    ),
    dropout: float | None = typer.Option(
        None, help="Dropout on the recurrent layers' inputs, training only.  [default: 0]"
    ),
    optimizer: str | None = typer.Option(
        None, help="adagrad, adam, rmsprop or sgd.  [default: adagrad]"
    ),
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
        None, help="Write TensorBoard logs (per-batch loss) to this folder."
    ),
    plain: bool = typer.Option(
        False,
        "--plain",
        help="Train with a plain model.fit, one window per step (slow; for debugging).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or notices."),
) -> None:
    """Train a stateful LSTM on the echo task into a run folder."""
    given = {
        "num_epochs": epochs,
        "total_series_length": series_length,
        "truncated_backprop_length": window,
        "batch_size": batch_size,
        "state_size": state_size,
        "num_classes": num_classes,
        "echo_step": echo_step,
        "learning_rate": learning_rate,
        "seed": seed,
        "cell": cell,
        "num_layers": layers,
        "dropout": dropout,
        "optimizer": optimizer,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if overwrite and resume:
        raise UsageProblem("--overwrite and --resume cannot be used together")
    if plot_every is not None and plot_every <= 0:
        raise bad_parameter("--plot-every", f"must be positive, got {plot_every}")
    problem = RunFolder(run_dir).unwritable()
    if problem:
        raise bad_parameter("--run-dir", problem)
    if tensorboard is not None and tensorboard.exists() and not tensorboard.is_dir():
        raise bad_parameter("--tensorboard", f"{tensorboard} is a file, not a folder")
    if (
        overwrite
        and tensorboard is not None
        and tensorboard.resolve().is_relative_to(run_dir.resolve())
    ):
        raise bad_parameter(
            "--tensorboard", "inside the run folder, --overwrite would delete it with the old run"
        )
    existing = "resume" if resume else "overwrite" if overwrite else "refuse"
    try:
        RunFolder(run_dir).check(existing)  # again under the lock, once training starts
    except RunRefused as error:
        raise UsageProblem(str(error)) from None
    except RunFolderError as error:
        raise fail(str(error)) from None
    config = _config(run_dir, given, resume)
    problem = memory_problem(config)
    if problem:
        raise UsageProblem(problem)

    notices = not (quiet or as_json)
    if notices and config.used_length < config.total_series_length:
        notice(
            f"Note: {config.total_series_length} symbols do not fill whole windows; "
            f"using {config.used_length} ({config.num_batches} windows of "
            f"{config.batch_size} x {config.truncated_backprop_length}), "
            f"dropping the last {config.total_series_length - config.used_length}."
        )
    if notices and config.echo_outside_window:
        notice(
            f"Warning: --echo-step {config.echo_step} >= --window "
            f"{config.truncated_backprop_length}: no window holds both a symbol and its echo, "
            "so truncated backprop cannot learn it; expect chance at the boundary."
        )
    from echo_keras import training
    from echo_keras.callbacks import ProgressBar

    callbacks = []
    if notices and sys.stdout.isatty():
        callbacks.append(ProgressBar(config.num_epochs, config.num_batches))
    try:
        result = training.train(
            config,
            run_dir,
            existing=existing,
            fast=not plain,
            callbacks=callbacks,
            plot_every=plot_every,
            tensorboard_dir=tensorboard,
            notify=notice if notices else None,
        )
    except training.TrainingInterrupted as error:
        raise fail(str(error), 128 + error.signal) from None
    except RunRefused as error:
        raise UsageProblem(str(error)) from None
    except (training.TrainingError, RunFolderError) as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"cannot write the run: {error}") from None

    # The run is complete and kept: if its report cannot be printed (a closed or
    # broken stdout), the exit status still says so.
    with contextlib.suppress(OSError):
        _report_training(result, as_json, quiet)


def _report_training(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        keys = ("run_dir", "epochs", "steps", "final_loss", "train_seconds", "steps_per_second")
        typer.echo(json.dumps({key: getattr(result, key) for key in keys}))
    elif not quiet:
        typer.echo(
            f"Trained {result.epochs} epoch{'s' * (result.epochs != 1)} "
            f"({result.steps} batches) in "
            f"{result.train_seconds:.1f} s, {result.steps_per_second:.0f} batches/s; "
            f"last epoch's mean batch loss {result.final_loss:.5f}"
        )
        typer.echo(f"Run folder: {result.run_dir}")


@app.command()
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
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    """Evaluate a trained run on fresh data, carrying the state as in training."""
    if seed is not None and seed < 0:
        raise bad_parameter("--seed", f"must not be negative, got {seed}")
    folder = RunFolder(run_dir)
    try:
        config = folder.read_config()
    except RunFolderError as error:
        raise fail(str(error)) from None
    from echo_keras.evaluation import evaluate as run_evaluation
    from echo_keras.evaluation import evaluation_length, format_table

    try:
        evaluation_length(config, series_length)
    except ConfigError as error:
        raise bad_parameter("--series-length", error.reason) from None
    warning = folder.warning()
    if warning and not as_json:
        notice(warning)
    try:
        metrics = run_evaluation(
            run_dir, seed=seed, series_length=series_length, reset_each_window=reset_each_window
        )
    except RunFolderError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(metrics.to_dict()))
    else:
        typer.echo(f"Evaluation of {run_dir} on a fresh series:")
        typer.echo(format_table(metrics, config.echo_step, config.truncated_backprop_length))


@app.command()
def plot(
    run_dir: Path = RUN_DIR,
    out: Path | None = typer.Option(
        None,
        help="Where to write the figure; the extension picks the format (png, svg, pdf, "
        "jpg, ...).  [default: RUN_DIR/plot.png]",
    ),
) -> None:
    """Draw the tutorial's figure (loss curve and the last batch) from a run folder."""
    from echo_keras.plotting import figure_target, plot_run

    try:
        if out is not None:
            figure_target(out)
        path = plot_run(run_dir, out)
    except ValueError as error:
        raise bad_parameter("--out", str(error)) from None
    except RunFolderError as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"cannot write the figure: {error}") from None
    warning = RunFolder(run_dir).warning()
    if warning:
        notice(warning)
    typer.echo(str(path))


def _config(run_dir: Path, given: dict, resume: bool) -> TrainConfig:
    """The config to train: from the flags, or the run's own for --resume."""
    try:
        if not resume:
            return new_config(given)
        saved = RunFolder(run_dir).read_config()
        return resumed_config(saved, given)
    except RunFolderError as error:
        raise fail(str(error)) from None
    except ConfigError as error:
        raise bad_parameter(error.flag, error.reason) from None
    except ValueError as error:  # settings that --resume may not change
        raise UsageProblem(str(error)) from None


from echo_keras import cli_stream, cli_sweep  # noqa: E402,F401  (register their commands)


def main() -> None:
    stdio.open_standard_streams()
    try:
        app()
        code = 0
    except SystemExit as exit:
        code = exit.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    stdio.flush_standard_streams()
    if "tensorflow" in sys.modules:
        # Every file is written and closed by now. TensorFlow's teardown at interpreter
        # exit takes most of a second and does nothing for us: skip it.
        os._exit(code or 0)
    sys.exit(code)
