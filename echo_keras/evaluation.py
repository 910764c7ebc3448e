"""Evaluation on fresh data, carrying the state exactly as in training.

The first `echo_step` positions of a window echo symbols of the previous window,
so only the carried state can predict them: `boundary_accuracy` measures exactly
that. The accuracies leave out the first `echo_step` positions of every row, whose
echo is not in the row: row 1's are the series' zero padding, and the others echo
the end of the row before, which no model can know (so the first window is left out
of the boundary when the echo is shorter than a window).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras.data import eval_rng, row_columns, series_note, windows_from_rng
from echo_keras.data_evaluation import (
    DataMetrics,
    Source,
    boundary_width,
    data_source,
    positions_line,
)
from echo_keras.errors import ConfigError, UsageError, warn
from echo_keras.memory import memory_problem
from echo_keras.paths import file_path
from echo_keras.run import files
from echo_keras.run.folder import RunFolder
from echo_keras.values import check_seed, check_switch

ECHO_RUN_DATA = (
    "`data` is for a run trained on its own data; an echo run is evaluated on a fresh series"
)
DATA_RUN_SERIES = (
    "`seed` and `series_length` are for an echo run; a run on its own data is evaluated "
    "on its validation data or on `data`"
)


@dataclass(frozen=True)
class Metrics:
    """What `evaluate` measured: loss and accuracies, the boundary (first `echo_step`
    positions of windows 2.., which only the carried state can predict) apart."""

    loss: float  # mean cross-entropy over every position
    accuracy: float  # every position whose echo is in its row (positions echo_step.. of a row)
    boundary_accuracy: float | None  # first echo_step positions of windows 2.. (None if none),
    # their echo in the row
    inner_accuracy: float | None  # positions echo_step.. of every window (None if none)
    windows: int
    positions: int  # every position (the loss's)
    reset_each_window: bool
    scored: int  # the positions the accuracies cover: those whose echo is in their row

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def score(losses: np.ndarray, correct: np.ndarray, echo_step: int, reset: bool) -> Metrics:
    """Metrics from losses (per position, or summed per window: only their total counts)
    and a (windows, batch, window) array of hits (see the module for what is scored)."""
    num_windows, _, window = correct.shape
    column = row_columns(0, num_windows, window)
    in_row = np.broadcast_to(column >= echo_step, correct.shape)  # its echo is in the row
    at_boundary = np.broadcast_to(column % window < echo_step, correct.shape)
    boundary = correct[in_row & at_boundary]
    inner = correct[:, :, echo_step:]
    return Metrics(
        loss=float(losses.sum() / correct.size),
        accuracy=float(correct[in_row].mean()),
        boundary_accuracy=float(boundary.mean()) if boundary.size else None,
        inner_accuracy=float(inner.mean()) if inner.size else None,
        windows=num_windows,
        positions=int(correct.size),
        reset_each_window=reset,
        scored=int(np.count_nonzero(in_row)),
    )


def evaluation_length(config, series_length: int | None) -> int:
    """The series length to evaluate on; ConfigError (naming `series_length`) if it
    cannot work."""
    length = config.total_series_length if series_length is None else series_length
    window, rows = config.truncated_backprop_length, config.batch_size
    shortest = rows * window * (config.echo_step // window + 1)
    reason = (
        f"must be at least {shortest} for the run's `echo_step` ({config.echo_step}): "
        f"{rows} rows of whole windows of {window}, each longer than the echo, got {length}"
    )
    try:
        scaled = dataclasses.replace(config, total_series_length=length, num_epochs=1).validate()
    except ConfigError as error:
        if error.field == "echo_step":  # the run's echo step is fine: the length is not
            raise ConfigError("series_length", reason) from None
        if error.field == "total_series_length":
            raise ConfigError("series_length", error.reason) from None
        raise
    if scaled.echo_row_problem():  # no position whose echo is in its row: none to score
        raise ConfigError("series_length", reason)
    problem = memory_problem(scaled)
    if problem:
        raise ConfigError("series_length", problem.replace("`total_series_length` ", ""))
    return length


def evaluation_note(config, length: int) -> str | None:
    """A note when a fresh series of `length` leaves 1% or more of it out of whole windows."""
    scaled = dataclasses.replace(config, total_series_length=length)
    return series_note(scaled, "the fresh series (`series_length`)")


def evaluate(
    run_dir: Path,
    *,
    data: Path | str | None = None,
    seed: int | None = None,
    series_length: int | None = None,
    reset_each_window: bool = False,
) -> Metrics | DataMetrics:
    """Evaluate the trained model of `run_dir`, carrying the state as in training.
    A run that did not complete is evaluated at its last checkpoint.

    An echo run is evaluated on a fresh series. A run on its own data (`config.data`)
    is evaluated on its validation data, laid out as in training (its validation file,
    or the held-out end of its data; its training data when it has none), or on the
    file `data`, read through the run's vocabulary. The state is zeroed, then carried
    from window to window exactly as in training (or zeroed before every window, the
    ablation).

    Args:
        run_dir: a trained run folder.
        data: a file to evaluate a run on its own data on (as the run's `data_format`
            and `documents` say); not for an echo run.
        seed: seed of the fresh series (echo runs); default: the run's own seed, on a
            random stream that no training epoch draws from.
        series_length: symbols to evaluate on (echo runs); default: the training length.
        reset_each_window: zero the state before every window.

    Returns:
        `Metrics` for an echo run, `DataMetrics` for a run on its own data: the numbers
        of `echo-keras evaluate --json`.

    Warns:
        EchoKerasWarning: what the command line notes: a run not complete (evaluated at
            its checkpoint), a data file changed since training, or windows that leave
            out 1% or more of a file or of the fresh series.

    Raises:
        RunFolderError: the run has no usable model (missing, damaged, not complete).
        ConfigError: a `series_length` or `seed` that cannot work, a file too short, or a
            `run_dir` that is not a path.
        UsageError: `data` for an echo run, `seed` or `series_length` for a run on its
            own data, or a file that cannot be read.
        SymbolError: a symbol outside the run's vocabulary (naming line and column).
        RunBusy: a training has begun in the folder and not yet written its config.json.
    """
    from echo_keras.loops import PredictLoop
    from echo_keras.model import check_same_run, load_run
    from echo_keras.warm import holding

    seed = check_seed(seed)
    reset_each_window = check_switch(reset_each_window, "reset_each_window")
    config = RunFolder(run_dir).read_config()
    if config.data is not None:
        return _evaluate_data(run_dir, config, data, seed, series_length, reset_each_window)
    if data is not None:
        raise UsageError(ECHO_RUN_DATA)
    loaded, model = load_run(run_dir, checkpoint=True)
    check_same_run(run_dir, (config,), (loaded,))  # not a run on its own data meanwhile
    # After: a run that has no model gets its error alone.
    RunFolder(run_dir).warn_if_unfinished(checkpoint=True)
    config = loaded
    length = evaluation_length(config, series_length)
    note = evaluation_note(config, length)
    if note:
        warn(note)
    inputs, targets = windows_from_rng(
        eval_rng(config.seed if seed is None else seed), config, length
    )
    with holding(config, model) as warm:
        loop = warm.loop(PredictLoop, reset_each_window, windows=len(inputs))
        losses, correct = loop(inputs, targets)
    return score(losses.numpy(), correct.numpy(), config.echo_step, reset_each_window)


def evaluation_source(run_dir: Path, data: Path | str | None = None) -> Source:
    """The windows a run on its own data is evaluated on, and where they come from
    (see `evaluate`); read before the model is loaded, so a bad file costs nothing."""
    folder = RunFolder(run_dir)
    data = None if data is None else file_path(data, "data")

    def read(view: Path):
        config = files.load_config(view, folder.path)
        return config, files.read_vocabulary(view, folder.path, config)

    config, (vocabulary, digests) = folder.read(read)
    source = data_source(config, vocabulary, data, digests)
    return dataclasses.replace(source, read_with=(config, vocabulary))


def _evaluate_data(run_dir, config, data, seed, series_length, reset_each_window) -> DataMetrics:
    if seed is not None or series_length is not None:
        raise UsageError(DATA_RUN_SERIES)
    source = evaluation_source(run_dir, data)
    if source.note:
        warn(source.note)
    metrics = evaluate_source(run_dir, source, reset_each_window)
    # After: a run that has no model gets its error alone.
    RunFolder(run_dir).warn_if_unfinished(checkpoint=True)
    return metrics


def evaluate_source(run_dir: Path, source: Source, reset_each_window: bool = False) -> DataMetrics:
    """`DataMetrics` of the model of `run_dir` (a run on its own data) on `source`'s windows
    (`evaluation_source`); RunFolderError when the run has no usable model."""
    from echo_keras.data_evaluation import evaluate_windows
    from echo_keras.model import check_same_run, load_run_and_vocabulary
    from echo_keras.warm import holding

    config, model, record = load_run_and_vocabulary(run_dir, checkpoint=True)
    if source.read_with is not None:  # the windows were read through this very run
        check_same_run(run_dir, source.read_with, (config, record and record[0]))
    with holding(config, model) as warm:
        return evaluate_windows(warm, source.windows, boundary_width(config), reset_each_window)


def format_table(metrics: Metrics, echo_step: int, window: int) -> str:
    def number(value):
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    if echo_step < window:
        boundary = f"first {echo_step} positions of windows 2.."
        inner = f"positions after the first {echo_step} of every window"
    else:  # every echo lies in an earlier window
        boundary = (
            f"all {window} positions of the windows whose echoes are in their row "
            f"(the echo reaches {echo_step} back)"
        )
        inner = "none: no window holds a symbol and its echo"

    state = "zeroed before every window" if metrics.reset_each_window else "carried across windows"
    rows = [
        ("state", state),
        ("loss", number(metrics.loss)),
        ("accuracy", number(metrics.accuracy)),
        (
            "boundary accuracy",
            f"{number(metrics.boundary_accuracy)}   {boundary}, "
            "predictable only from the carried state",
        ),
        ("inner accuracy", f"{number(metrics.inner_accuracy)}   {inner}"),
        ("windows", str(metrics.windows)),
        ("positions", positions_line(metrics.positions, metrics.scored, echo_step)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
