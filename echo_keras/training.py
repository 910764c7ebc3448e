"""Training: `train(config, run_dir)` runs a whole training job into a run folder.

It owns the run folder's life cycle (lock, status, checkpoints, resume, the final
swap); `fitting.py` trains the epochs, on the fast or the plain path, and `resuming.py`
reads and checks what a resumed run continues from.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

from echo_keras import model as model_lib
from echo_keras import resuming
from echo_keras.backend import keras, use_one_intra_op_thread
from echo_keras.callbacks import (
    BatchLossRecorder,
    EpochCheckpoint,
    ProgressBar,
    ResetStatesAtEpochStart,
    StopOnNaN,
    StopOnSignal,
    raised_in_hook,
)
from echo_keras.config import TrainConfig
from echo_keras.corpus import load_corpus
from echo_keras.data import dropped_note, series_note
from echo_keras.errors import (
    ConfigError,
    EchoKerasError,
    Interrupted,
    TrainingDiverged,
    TrainingError,
    UsageError,
    warn,
    write_error,
)
from echo_keras.fitting import BatchTap, aligned_chunk_stops, build_compiled_model, fit_epochs
from echo_keras.loops import PredictLoop
from echo_keras.memory import memory_problem
from echo_keras.options import PLAIN_DOCUMENTS, RESUME_HINT, new_run_problem
from echo_keras.paths import as_path
from echo_keras.run import fileio, files
from echo_keras.run.folder import RunFolder
from echo_keras.startup import is_own_process
from echo_keras.stream.generate import sample
from echo_keras.tensorboard import RunTensorBoard
from echo_keras.values import check_switch
from echo_keras.warm import fresh_model

SAMPLE_LENGTH = 500  # symbols of text generated into sample.txt at the end of a data run
DIVERGED = "the loss became NaN or infinite; no model was saved. Try a smaller `learning_rate`"


@dataclass
class TrainResult:
    """What `train` did: the run folder, its completed epochs, and this call's batches and speed."""

    run_dir: str
    epochs: int  # epochs completed in the run folder
    steps: int  # batches trained by this call
    final_loss: float  # mean batch loss of the last completed epoch
    train_seconds: float
    steps_per_second: float
    batches_per_epoch: int
    history: list = field(default_factory=list, repr=False)
    # With `data`: one dict an epoch ("epoch", "loss" in nats, "bits_per_symbol",
    # "accuracy"), the validation windows scored with the state carried.
    validation: list = field(default_factory=list, repr=False)


def train(
    config: TrainConfig,
    run_dir: Path | str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    plain: bool = False,
    plot_every: int | None = None,
    tensorboard_dir: Path | None = None,
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `config` into the run folder `run_dir` and write every artifact.

    The state is carried from window to window and zeroed at every epoch start;
    each epoch trains on a fresh series. The folder is locked for the whole call,
    and every file is written atomically, so a kill leaves a run that can resume.

    The compiled model of each shape is kept in this process (`warm`, eight shapes at
    most): a later training of that shape starts it exactly as a new model starts, and
    skips the second or so its compilation takes. A training given callbacks (which may
    keep their model) and a plain one get a model of their own.

    Args:
        config: the settings; `TrainConfig()` is the tutorial's.
        run_dir: the run folder (created if needed).
        overwrite: replace a run already in `run_dir`: the new run trains beside it
            and is swapped in only once complete.
        resume: continue the run in `run_dir` from its last completed epoch; `config`
            may only raise `num_epochs`.
        progress: draw a progress bar on stdout.
        callbacks: Keras callbacks to run after the built-in ones. One that sets
            `model.stop_training` ends the run, complete, at its last completed epoch
            and its weights (a stop inside an epoch drops that epoch's batches);
            the status says so, and `resume=True` continues it. The saved model is
            always the last checkpoint: EarlyStopping's `restore_best_weights` is not
            followed. An error one raises reaches the caller as it is (the run: failed).
        plain: train with `model.fit`, one window per step (slow; for debugging).
        plot_every: redraw RUN_DIR/live.png every this many batches.
        tensorboard_dir: write TensorBoard logs (per-batch loss) here.
        notify: told notices (a replaced unfinished run, symbols left out of whole windows,
            an echo longer than a window), one line each; None gives each as an
            EchoKerasWarning instead.

    Returns:
        A `TrainResult`.

    Raises:
        ConfigError: a setting that cannot work; a `run_dir` or `tensorboard_dir` that
            cannot be written (a file in the way, a symlink loop), a `run_dir` that holds the
            current folder or a `tensorboard_dir` inside it when its run would be replaced;
            `overwrite`, `resume`, `progress` or `plain` not True or False; a `notify` that
            is not a function.
        UsageError: a resume that would change the run's settings, or a config that
            cannot fit in memory.
        RunRefused: RunBusy (another process trains it), RunExists (it holds a run and
            neither `overwrite` nor `resume` was asked for; a run that never completed an
            epoch is replaced, with a notice), or a resume to no more epochs than the run
            has completed.
        TrainingError: TrainingDiverged (NaN loss), or a callback that stopped training
            before the first epoch ended.
        Interrupted: SIGINT, SIGTERM or SIGHUP stopped training (the run can resume).
        RunFolderError: the run to resume is damaged.
        WriteError: a file could not be written (a full disk); also an OSError.

    Warns:
        EchoKerasWarning: each note, when no `notify` is given.
    """
    overwrite, resume = check_switch(overwrite, "overwrite"), check_switch(resume, "resume")
    progress, plain = check_switch(progress, "progress"), check_switch(plain, "plain")
    if overwrite and resume:
        raise UsageError("`overwrite=True` and `resume=True` cannot be used together")
    if not isinstance(config, TrainConfig):
        raise UsageError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    callbacks, plot_every = _check_arguments(run_dir, plot_every, callbacks, notify)
    notify = warn if notify is None else notify  # the command line prints them in its words
    problem = memory_problem(config)  # before anything is built, as the command line does
    if problem:
        raise UsageError(problem)
    if plain and config.documents:
        raise UsageError(PLAIN_DOCUMENTS)
    folder = RunFolder(run_dir)
    if tensorboard_dir is not None:  # refused before the run folder is touched
        tensorboard_dir = as_path(tensorboard_dir, "tensorboard_dir")
        problem = fileio.folder_problem(tensorboard_dir)
        if not problem and folder.replacing_deletes(
            tensorboard_dir, overwrite=overwrite, resume=resume
        ):
            problem = f"{tensorboard_dir} is inside the run folder, which replacing its run deletes"
        if problem:
            raise ConfigError("tensorboard_dir", problem)
    problem = folder.unwritable()
    if problem:
        raise ConfigError("run_dir", problem)
    corpus = None
    problem = None if resume else new_run_problem(config, run_dir)
    if problem:  # refused before the run folder is touched
        raise ConfigError(*problem)
    if config.data is not None:  # read before the run folder is touched
        vocabulary = resuming.same_data(config, folder) if resume else None
        config, corpus = load_corpus(config, vocabulary)
        problem = memory_problem(config)  # again, with the data's vocabulary and length
        if problem:
            raise UsageError(problem)
        if corpus.tail_of_a_document and not resume:
            notify(
                f"Note: no document starts in the last {config.validation_fraction * 100:.3g}% "
                "of `data`: the end of its last document validates, read from a zeroed state"
            )
        held_out = corpus.validation is not None and config.validation_data is None
        what = "what `validation_fraction` leaves of `data`" if held_out else "`data`"
        note = dropped_note(corpus.train, what)
        if note and not resume:
            notify(f"Note: {note}.")
    elif not resume and (note := series_note(config)):
        notify(f"Note: {note}.")
    if config.echo_outside_window:  # once the data is known to fit
        notify(
            f"Warning: `echo_step` {config.echo_step} >= `truncated_backprop_length` "
            f"{config.truncated_backprop_length}: no window holds both a symbol and its echo, "
            "so truncated backprop cannot learn it; expect chance at the boundary."
        )
    if is_own_process() and model_lib.planned_window_work(config) <= model_lib.LARGE_WINDOW_WORK:
        use_one_intra_op_thread()  # a small model, in echo-keras's own process (see backend)
    own = [ProgressBar(config.num_epochs, config.num_batches)] if progress else []
    own += callbacks  # the caller's, after the built-in ones
    # From here on, Ctrl-C stops training cleanly; the lock is held until the end.
    with StopOnSignal() as stopper, folder.writing(), contextlib.ExitStack() as lent:
        work_dir = folder.begin(overwrite=overwrite, resume=resume, notify=notify)
        changed = False
        try:  # (a notify that raises, a warning made an error, abandons work_dir too)
            if plot_every and work_dir != folder.real:
                notify(  # a replacement is trained beside the run it replaces: live.png too
                    f"Note: the live figure is {work_dir / files.LIVE} until this run "
                    f"replaces the one in {folder.path}"
                )
            warm = model = None  # a caller's callback may keep its model: then one of its own
            if not (plain or callbacks):  # compiled once per shape in this process
                warm = lent.enter_context(fresh_model(config))
                model = warm.model
            if resume:
                first_epoch, rows, model = resuming.load(config, folder, model)
            else:
                first_epoch, rows = 0, []
                if model is None:
                    model = build_compiled_model(config)
            validation = resuming.validation(corpus, folder if resume else None, first_epoch)
            if warm is not None and validation:
                windows = validation[0].windows.num_windows
                validation[0].loop = warm.loop(PredictLoop, windows=windows)
            versions = files.package_versions("keras", "tensorflow", "numpy")
            files.write_config(work_dir, config, versions=versions, fast_path=not plain)
            if corpus is not None:
                files.write_vocabulary(work_dir, corpus.record())
            changed = True  # from here on, a failure is the run's own
            files.write_status(work_dir, "running")
            recorder = BatchLossRecorder(config.num_batches, rows)
            tap = BatchTap()
            extras = _optional_callbacks(
                work_dir,
                recorder,
                tap,
                len(rows),
                plot_every,
                tensorboard_dir,
                corpus is not None,
                stopped=lambda: stopper.received is not None,
            )
            all_callbacks = [
                ResetStatesAtEpochStart(),
                recorder,
                StopOnNaN(),
                *validation,
                EpochCheckpoint(work_dir, recorder, tap, *validation),
                *extras,
                *own,
                stopper,
            ]
            started = time.perf_counter()
            try:
                steps = fit_epochs(
                    model,
                    config,
                    all_callbacks,
                    first_epoch=first_epoch,
                    plain=plain,
                    tap=tap,
                    chunk_stops=aligned_chunk_stops(plot_every) if plot_every else None,
                    corpus=corpus,
                    warm=warm,
                )
            finally:
                seconds = time.perf_counter() - started
                for callback in extras:
                    callback.close()
            result = _finish(
                config,
                folder,
                work_dir,
                model,
                recorder,
                stopper,
                steps,
                seconds,
                corpus,
                overwrite,
            )
            result.validation = list(validation[0].rows[: result.epochs]) if validation else []
            return result
        except BaseException as error:
            if changed and not isinstance(error, (TrainingError, Interrupted)):
                name = type(error).__name__  # an error of no words: its class alone
                _try_write_status(work_dir, "failed", f"{name}: {error}" if str(error) else name)
            folder.abandon(work_dir)  # a replacement goes; the run in place stays as it was
            if (
                isinstance(error, OSError)
                and not isinstance(error, (EchoKerasError, BrokenPipeError))
                and not raised_in_hook(error, callbacks)  # a caller's callback's error is its own
            ):
                raise write_error(f"the run {folder.path}", error) from error
            raise


def _check_arguments(run_dir, plot_every, callbacks, notify) -> tuple[list, int | None]:
    """The caller's callbacks as a list (None: none) and plot_every as an int (a numpy one
    too); ConfigError for a run folder that is not named, a plot_every that is not a whole
    number from 1 (the command line checks its flags the same way), a callback that is
    not a Keras callback, or a notify that is not a function."""
    as_path(run_dir, "run_dir")
    if notify is not None and not callable(notify):
        raise ConfigError("notify", f"must be a function or None, got {notify!r:.40}")
    callbacks = () if callbacks is None else callbacks
    single = isinstance(callbacks, (str, bytes, keras.callbacks.Callback))
    if single or not isinstance(callbacks, Iterable):
        raise ConfigError("callbacks", f"must be a list of Keras callbacks, got {callbacks!r:.40}")
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError("callbacks", f"must be Keras callbacks, got {callback!r:.40}")
    bad = isinstance(plot_every, bool) or not isinstance(plot_every, (Integral, type(None)))
    if bad or (plot_every is not None and plot_every < 1):
        raise ConfigError("plot_every", f"must be a whole number from 1, got {plot_every!r}")
    return callbacks, None if plot_every is None else int(plot_every)


def _try_write_status(work_dir: Path, status: str, message: str) -> None:
    """Record a failure if the disk lets us; a `running` left behind reads as interrupted."""
    try:
        if work_dir.is_dir():
            files.write_status(work_dir, status, message)
    except OSError:
        pass


def _optional_callbacks(
    work_dir, recorder, tap, first_step, plot_every, tensorboard_dir, data, stopped
):
    """The live plot and TensorBoard, when asked for; each has a close() (the live plot's
    returns at once when `stopped()`, a signal, is true)."""
    extras = []
    if plot_every:
        from echo_keras.plots.live import LivePlot

        live = LivePlot(work_dir / files.LIVE, plot_every, recorder, tap, data, stopped)
        extras.append(live)
    if tensorboard_dir is not None:
        # Resolved: a symlink to a folder yet to be made is written through (TensorFlow
        # would fail on the link itself), as every output path is.
        extras.append(RunTensorBoard(Path(tensorboard_dir).resolve(), first_step))
    return extras


def _finish(config, folder, work_dir, model, recorder, stopper, steps, seconds, corpus, overwrite):
    rows = recorder.rows
    completed = len(rows) // config.num_batches
    if not all(math.isfinite(row[3]) for row in rows):
        files.write_status(work_dir, "failed", DIVERGED)
        raise TrainingDiverged(DIVERGED)
    if stopper.received is not None:
        name = stopper.catcher.signal_name
        message = f"interrupted by {name} after {completed} of {config.num_epochs} epochs"
        files.write_status(work_dir, "interrupted", message)
        if work_dir != folder.real:
            unchanged = Interrupted(
                f"Interrupted ({name}); the previous run in {folder.path} is unchanged",
                stopper.received,
            )
            if completed == 0 or not folder.yields_to(overwrite=overwrite):
                raise unchanged
            # The run it replaces never completed an epoch: this one, which did, takes its
            # place, to be resumed (if it can: else the old run stays, as for any other).
            try:
                folder.finish(work_dir)
            except OSError:
                raise unchanged from None
        hint = RESUME_HINT
        if completed == 0:
            hint = "no epoch was completed: train again to start over"
        raise Interrupted(
            f"Interrupted ({name}) after {completed} of {config.num_epochs} epochs; {hint}",
            stopper.received,
        )
    message = ""
    if completed < config.num_epochs:  # a callback of the caller's set `stop_training`
        rows = _stopped_early(config, work_dir, rows, completed)
        message = f"stopped by a callback after {completed} of {config.num_epochs} epochs"
    # The model is its last checkpoint: a stop inside an epoch leaves weights that no
    # history row or checkpoint describes, and a callback may have changed them since
    # (EarlyStopping's `restore_best_weights`, at the end of training).
    model_lib.restore_checkpoint(work_dir, model)
    model_lib.reset_states(model)
    # history.csv, last_batch.npz and the checkpoint were written at the last epoch's end.
    if corpus is not None and config.task == "next":
        text, _ = sample(model, config, corpus.vocabulary, SAMPLE_LENGTH, seed=config.seed)
        fileio.atomic_write_text(work_dir / files.SAMPLE, text)
    fileio.atomic_write(work_dir / files.MODEL, lambda tmp: model.save(tmp))
    files.write_status(work_dir, "complete", message)
    folder.finish(work_dir)
    return TrainResult(
        run_dir=str(folder.path),
        epochs=completed,
        steps=steps,
        final_loss=recorder.epoch_mean(completed - 1),  # not the stopped epoch, if any
        train_seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else math.inf,
        batches_per_epoch=config.num_batches,
        history=rows,
    )


def _stopped_early(config, work_dir, rows, completed):
    """The rows of the completed epochs when a callback stopped training early (the run
    keeps its last completed epoch); TrainingError if none was completed."""
    if completed == 0:
        message = "a callback stopped training in the first epoch; no epoch was completed"
        files.write_status(work_dir, "failed", message)
        raise TrainingError(f"{message} and no model was saved")
    return rows[: completed * config.num_batches]
