"""Training: `train(config, run_dir)` runs a whole training job into a run folder.

Two paths train the same model the same way, window after window with the
state carried and reset at each epoch start:
- fast (default): `loops.TrainLoop`, many windows per XLA-compiled call;
- plain (`fast=False`): `model.fit(shuffle=False)` one window per step, for debugging.
Both drive the same callbacks with the loss of every single batch.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_keras import fileio, rundir
from echo_keras import model as model_lib
from echo_keras.backend import keras, tf
from echo_keras.callbacks import (
    BatchLossRecorder,
    DirectCallbacks,
    EpochCheckpoint,
    ResetStatesAtEpochStart,
    RunTensorBoard,
    StopOnSignal,
)
from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows
from echo_keras.loops import TrainLoop
from echo_keras.runfolder import RunFolder, RunRefused, resume_command

# The fast path returns to Python (progress bar, Ctrl-C, live plot) at least this often.
CHUNK_WINDOWS = 100


@dataclass
class TrainResult:
    run_dir: str
    epochs: int  # epochs completed in the run folder
    steps: int  # batches trained by this call
    final_loss: float  # mean batch loss of the last completed epoch
    train_seconds: float
    steps_per_second: float
    history: list = field(default_factory=list, repr=False)


class BatchTap:
    """Where callbacks find the current epoch's windows and the latest batch's logits."""

    def __init__(self):
        self.inputs = self.targets = None
        self.logits_source = None

    def batch(self, index: int):
        """(inputs, targets, class probabilities) of batch `index` of the current epoch."""
        logits = np.asarray(self.logits_source(), dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return self.inputs[index], self.targets[index], shifted / shifted.sum(-1, keepdims=True)


def fit_epochs(
    model: keras.Model,
    config: TrainConfig,
    callbacks: list,
    *,
    first_epoch: int = 0,
    fast: bool = True,
    tap: BatchTap | None = None,
    chunk_stops=None,
) -> int:
    """Train epochs first_epoch..num_epochs-1 on fresh data; return the number of batches run.

    `callbacks` should include ResetStatesAtEpochStart. Stops early when a
    callback sets `model.stop_training`.
    """
    tap = tap or BatchTap()
    runner = _fit_fast if fast else _fit_plain
    return runner(model, config, callbacks, first_epoch, tap, chunk_stops or default_chunk_stops)


def default_chunk_stops(start: int, num_windows: int, epoch: int) -> int:
    return min(num_windows, start + CHUNK_WINDOWS)


def aligned_chunk_stops(every: int):
    """Chunk stops that also end a chunk on every `every`-th batch of the whole run,
    so the live plot sees the predictions of exactly that batch."""

    def stops(start: int, num_windows: int, epoch: int) -> int:
        step = epoch * num_windows + start
        next_due = (step // every + 1) * every - epoch * num_windows
        return min(default_chunk_stops(start, num_windows, epoch), next_due)

    return stops


def _fit_plain(model, config, callbacks, first_epoch, tap, chunk_stops) -> int:
    # Keras builds the compiled metrics on the first step, so look the metric up late.
    tap.logits_source = lambda: model_lib.batch_loss_metric(model).logits.numpy()
    steps = 0
    model.stop_training = False
    for epoch in range(first_epoch, config.num_epochs):
        tap.inputs, tap.targets = epoch_windows(config, epoch)
        x = tap.inputs.reshape(-1, config.truncated_backprop_length, 1).astype(np.float32)
        y = tap.targets.reshape(-1, config.truncated_backprop_length).astype(np.int32)
        history = model.fit(
            x,
            y,
            batch_size=config.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        steps += len(tap.inputs) if not model.stop_training else 0
        if model.stop_training or not history.history:
            break
    return steps


def _fit_fast(model, config, callbacks, first_epoch, tap, chunk_stops) -> int:
    num_windows = config.num_batches
    loop = TrainLoop(model, num_windows)
    callback_list = DirectCallbacks(
        callbacks, model, {"epochs": config.num_epochs, "steps": num_windows, "verbose": 0}
    )
    logits = tf.zeros(())
    tap.logits_source = lambda: logits.numpy()
    steps = 0
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(first_epoch, config.num_epochs):
        tap.inputs, tap.targets = epoch_windows(config, epoch)
        inputs, targets = tf.constant(tap.inputs), tf.constant(tap.targets)
        callback_list.on_epoch_begin(epoch)
        total, start = 0.0, 0
        while start < num_windows and not model.stop_training:
            stop = chunk_stops(start, num_windows, epoch)
            losses, logits = loop(inputs, targets, start, stop)
            for batch, loss in enumerate(losses.numpy()[start:stop].tolist(), start):
                total += loss
                steps += 1
                logs = {"loss": total / (batch + 1), "batch_loss": loss}
                callback_list.on_train_batch_begin(batch)  # after the fact: it already ran
                callback_list.on_train_batch_end(batch, logs)
                if model.stop_training:
                    break
            start = stop
        if model.stop_training and start < num_windows:
            break
        callback_list.on_epoch_end(epoch, {"loss": total / num_windows})
        if model.stop_training:
            break
    callback_list.on_train_end()
    return steps


def build_compiled_model(config: TrainConfig) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    return model_lib.compile_model(model_lib.build_model(config), config)


def versions() -> dict[str, str]:
    return {"keras": keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__}


class TrainingError(RuntimeError):
    """Training could not finish; the message says why and what to do."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(TrainingError):
    """SIGINT, SIGTERM or SIGHUP stopped training; `signal` is its number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signal = signum


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    existing: str = "refuse",
    fast: bool = True,
    callbacks: list | None = None,
    plot_every: int | None = None,
    tensorboard_dir: Path | None = None,
    notify=None,
) -> TrainResult:
    """Train `config` into `run_dir` and write every artifact.

    `existing` says what to do with a run already in `run_dir`: "refuse"
    (RunExists, unless that run never completed an epoch: then it is replaced
    and `notify` is told), "overwrite" (train beside it, then swap: the old run
    stays until the new one is complete) or "resume" (continue it from its last
    completed epoch; `config` may only raise `num_epochs`). Extra `callbacks`
    (a progress bar, say) run after the built-in ones. The folder is locked for
    the whole call.

    Raises RunRefused (RunBusy, RunExists), TrainingError (TrainingDiverged,
    TrainingInterrupted), RunFolderError or OSError, always with a message for people.
    """
    if existing not in ("refuse", "overwrite", "resume"):
        raise ValueError(f"existing must be refuse, overwrite or resume, not {existing!r}")
    config.validate()
    folder = RunFolder(run_dir)
    # From here on, Ctrl-C stops training cleanly; the lock is held until the end.
    with StopOnSignal() as stopper, folder.writing():
        work_dir = folder.begin(existing, notify)
        changed = False
        try:
            if existing == "resume":
                first_epoch, rows, model = _load_resume(config, folder)
            else:
                first_epoch, rows, model = 0, [], build_compiled_model(config)
            rundir.write_config(work_dir, config, versions=versions(), fast_path=fast)
            changed = True  # from here on, a failure is the run's own
            rundir.write_status(work_dir, "running")
            recorder = BatchLossRecorder(config.num_batches, rows)
            tap = BatchTap()
            extras = _optional_callbacks(
                work_dir, recorder, tap, len(rows), plot_every, tensorboard_dir
            )
            all_callbacks = [
                ResetStatesAtEpochStart(),
                recorder,
                keras.callbacks.TerminateOnNaN(),
                EpochCheckpoint(work_dir, recorder, tap),
                *extras,
                *(callbacks or []),
                stopper,
            ]
            started = time.perf_counter()
            try:
                steps = fit_epochs(
                    model,
                    config,
                    all_callbacks,
                    first_epoch=first_epoch,
                    fast=fast,
                    tap=tap,
                    chunk_stops=aligned_chunk_stops(plot_every) if plot_every else None,
                )
            finally:
                seconds = time.perf_counter() - started
                for callback in extras:
                    callback.close()
            return _finish(config, folder, work_dir, model, recorder, stopper, steps, seconds)
        except BaseException as error:
            if changed and not isinstance(error, TrainingError):
                _try_write_status(work_dir, "failed", f"{type(error).__name__}: {error}")
            folder.abandon(work_dir)  # a replacement goes; the run in place stays as it was
            raise


def _try_write_status(work_dir: Path, status: str, message: str) -> None:
    """Record a failure if the disk lets us; a `running` left behind reads as interrupted."""
    try:
        if work_dir.is_dir():
            rundir.write_status(work_dir, status, message)
    except OSError:
        pass


def _optional_callbacks(work_dir, recorder, tap, first_step, plot_every, tensorboard_dir):
    """The live plot and TensorBoard, when asked for; each has a close()."""
    extras = []
    if plot_every:
        from echo_keras.live import LivePlot

        extras.append(LivePlot(work_dir / "live.png", plot_every, recorder, tap))
    if tensorboard_dir is not None:
        extras.append(RunTensorBoard(tensorboard_dir, first_step))
    return extras


def _load_resume(config: TrainConfig, folder: RunFolder):
    """(completed epochs, their history rows, the model with its optimizer) of a run to resume.

    history.csv may hold rows beyond the checkpoint (a failure between the two
    writes, or a torn last line): they are dropped, so the run continues from
    exactly the checkpoint.
    """
    run_dir, name = folder.real, folder.path
    saved = rundir.read_config(run_dir, name)
    if config != dataclasses.replace(saved, num_epochs=config.num_epochs):
        raise TrainingError(f"--resume continues the run in {name} with its own settings")
    model = build_compiled_model(config)
    weights, optimizer_variables = model_lib.checkpoint_variables(model)
    shapes = rundir.checkpoint_shapes(weights, optimizer_variables)
    completed, weights, optimizer_variables = rundir.read_checkpoint(run_dir, shapes, name)
    if completed > config.num_epochs:
        raise RunRefused(
            f"{name} already completed {completed} epochs; --epochs {config.num_epochs} "
            "would end it before that"
        )
    if completed == config.num_epochs and folder.status()["status"] == "complete":
        raise TrainingError(
            f"{name} already completed {completed} of {config.num_epochs} epochs; "
            "pass a larger --epochs to train further"
        )
    expected = completed * config.num_batches
    rows = []
    for row in rundir.iter_history(run_dir, name):
        if len(rows) == expected:
            break
        rows.append(row)
    if len(rows) != expected:
        raise rundir.RunFolderError(
            f"{name / rundir.HISTORY} is damaged: it has {len(rows)} rows for "
            f"{completed} completed epochs, expected {expected}"
        )
    # Rows beyond the checkpoint (a failure between the two writes, a torn line) go.
    rundir.write_history(run_dir, rundir.history_lines(rows))
    model_lib.restore_checkpoint_state(model, weights, optimizer_variables)
    return completed, rows, model


def _finish(config, folder, work_dir, model, recorder, stopper, steps, seconds):
    rows = recorder.rows
    completed = len(rows) // config.num_batches
    if not all(math.isfinite(row[3]) for row in rows):
        message = (
            "the loss became NaN or infinite; no model was saved. Try a smaller --learning-rate"
        )
        rundir.write_status(work_dir, "failed", message)
        raise TrainingDiverged(message)
    if stopper.received is not None:
        name = signal.Signals(stopper.received).name
        message = f"interrupted by {name} after {completed} of {config.num_epochs} epochs"
        rundir.write_status(work_dir, "interrupted", message)
        if work_dir != folder.real:
            raise TrainingInterrupted(
                f"Interrupted ({name}); the previous run in {folder.path} is unchanged",
                stopper.received,
            )
        hint = resume_command(folder.path)
        if completed == 0:
            hint = "no epoch was completed; train again to start over"
        raise TrainingInterrupted(
            f"Interrupted ({name}) after {completed} of {config.num_epochs} epochs; "
            f"resume with: {hint}",
            stopper.received,
        )
    # history.csv, last_batch.npz and the checkpoint were written at the last epoch's end.
    fileio.atomic_write(work_dir / rundir.MODEL, lambda tmp: model.save(tmp))
    rundir.write_status(work_dir, "complete")
    folder.finish(work_dir)
    return TrainResult(
        run_dir=str(folder.path),
        epochs=completed,
        steps=steps,
        final_loss=recorder.epoch_mean(completed - 1),
        train_seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else math.inf,
        history=rows,
    )
