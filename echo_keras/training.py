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
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_keras import model as model_lib
from echo_keras import rundir
from echo_keras.backend import keras, tf
from echo_keras.callbacks import (
    BatchLossRecorder,
    EpochCheckpoint,
    ResetStatesAtEpochStart,
    RunTensorBoard,
    StopOnSignal,
)
from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows
from echo_keras.loops import TrainLoop

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


class DirectCallbacks:
    """Call each callback's hook directly, with plain-float logs.

    Keras's CallbackList converts the logs of every batch to Python numbers, which
    costs more (about 45 us) than the fast path takes to train the batch.
    """

    def __init__(self, callbacks: list, model: keras.Model, params: dict):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params(params)

    def __getattr__(self, hook: str):
        methods = [getattr(callback, hook) for callback in self.callbacks]

        def call(*args):
            for method in methods:
                method(*args)

        self.__dict__[hook] = call  # bind once: the batch hook is called for every batch
        return call


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


class RunExists(TrainingError):
    """The run folder already holds a run and neither overwrite nor resume was asked for."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped training; `signal` is its number."""

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
) -> TrainResult:
    """Train `config` into `run_dir` and write every artifact.

    `existing` says what to do with a run already in `run_dir`: "refuse"
    (RunExists), "overwrite" (train beside it, then swap: the old run stays
    until the new one is complete) or "resume" (continue it from its last
    completed epoch; `config` may only raise `num_epochs`). Extra `callbacks`
    (a progress bar, say) run after the built-in ones.

    Raises TrainingError (RunExists, TrainingDiverged, TrainingInterrupted) or
    RunFolderError, always with a message for people.
    """
    if existing not in ("refuse", "overwrite", "resume"):
        raise ValueError(f"existing must be refuse, overwrite or resume, not {existing!r}")
    config.validate()
    run_dir = Path(run_dir)
    occupied = rundir.holds_run(run_dir)
    if occupied and existing == "refuse":
        raise RunExists(rundir.run_exists_message(run_dir))
    with StopOnSignal() as stopper:  # from here on, Ctrl-C stops training cleanly
        if existing == "resume":
            first_epoch, rows, model = _load_resume(config, run_dir)
            work_dir = run_dir
        else:
            first_epoch, rows = 0, []
            work_dir = _fresh_folder(run_dir) if occupied else run_dir
            work_dir.mkdir(parents=True, exist_ok=True)
            model = build_compiled_model(config)
        try:
            rundir.write_config(work_dir, config, versions=versions(), fast_path=fast)
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
                EpochCheckpoint(work_dir, recorder),
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
            return _finish(config, run_dir, work_dir, model, recorder, tap, stopper, steps, seconds)
        except Exception as error:
            if not isinstance(error, TrainingError):
                rundir.write_status(work_dir, "failed", f"{type(error).__name__}: {error}")
            if work_dir != run_dir:
                shutil.rmtree(work_dir, ignore_errors=True)  # the old run stays as it was
            raise


def _optional_callbacks(work_dir, recorder, tap, first_step, plot_every, tensorboard_dir):
    """The live plot and TensorBoard, when asked for; each has a close()."""
    extras = []
    if plot_every:
        from echo_keras.live import LivePlot

        extras.append(LivePlot(work_dir / "live.png", plot_every, recorder, tap))
    if tensorboard_dir is not None:
        extras.append(RunTensorBoard(tensorboard_dir, first_step))
    return extras


def _load_resume(config: TrainConfig, run_dir: Path):
    saved = rundir.read_config(run_dir)
    completed, weights, optimizer_variables = rundir.read_checkpoint(run_dir)
    if config != dataclasses.replace(saved, num_epochs=config.num_epochs):
        raise TrainingError(f"--resume continues the run in {run_dir} with its own settings")
    if completed >= config.num_epochs:
        raise TrainingError(
            f"{run_dir} already completed {completed} of {config.num_epochs} epochs; "
            "pass a larger --epochs to train further"
        )
    rows = [row for row in rundir.read_history(run_dir) if row[0] < completed]
    if len(rows) != completed * config.num_batches:
        raise rundir.RunFolderError(
            f"{run_dir / rundir.HISTORY} is damaged: it has {len(rows)} rows for "
            f"{completed} completed epochs, expected {completed * config.num_batches}"
        )
    model = build_compiled_model(config)
    try:
        model_lib.restore_checkpoint_state(model, weights, optimizer_variables)
    except ValueError as error:
        path = run_dir / rundir.CHECKPOINT / rundir.CHECKPOINT_STATE
        raise rundir.RunFolderError(f"{path} does not fit the run's config: {error}") from None
    return completed, rows, model


def _fresh_folder(run_dir: Path) -> Path:
    """An empty folder beside `run_dir` to train a replacement in."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.new-"))


def _swap_in(work_dir: Path, run_dir: Path) -> None:
    """Replace `run_dir` by the finished `work_dir`; the old run is deleted only after."""
    old = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.old-"))
    os.replace(run_dir, old / "run")
    os.replace(work_dir, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _finish(config, run_dir, work_dir, model, recorder, tap, stopper, steps, seconds):
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
        if work_dir != run_dir:
            raise TrainingInterrupted(
                f"Interrupted ({name}); the previous run in {run_dir} is unchanged",
                stopper.received,
            )
        hint = f"echo-keras train --run-dir {run_dir} --resume"
        if completed == 0:
            hint = "no epoch was completed; start again with --overwrite"
        raise TrainingInterrupted(
            f"Interrupted ({name}) after {completed} of {config.num_epochs} epochs; "
            f"resume with: {hint}",
            stopper.received,
        )
    # history.csv is already whole: EpochCheckpoint wrote it at the last epoch's end.
    model.save(work_dir / rundir.MODEL)
    rundir.write_last_batch(work_dir, *tap.batch(config.num_batches - 1))
    rundir.write_status(work_dir, "complete")
    if work_dir != run_dir:
        _swap_in(work_dir, run_dir)
    return TrainResult(
        run_dir=str(run_dir),
        epochs=completed,
        steps=steps,
        final_loss=recorder.epoch_mean(completed - 1),
        train_seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else math.inf,
        history=rows,
    )
