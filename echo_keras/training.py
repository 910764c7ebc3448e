"""Training: `train(config, run_dir)` runs a whole training job into a run folder.

Two paths train the same model the same way, window after window with the
state carried and reset at each epoch start:
- fast (default): `loops.TrainLoop`, many windows per XLA-compiled call;
- plain (`fast=False`): `model.fit(shuffle=False)` one window per step, for debugging.
Both drive the same callbacks with the loss of every single batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_keras import model as model_lib
from echo_keras import rundir
from echo_keras.backend import keras, tf
from echo_keras.callbacks import BatchLossRecorder, ResetStatesAtEpochStart
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
    status: str = "complete"
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
    callback_list = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=config.num_epochs, steps=num_windows, verbose=0
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


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    fast: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """Train `config` into the (new, empty) folder `run_dir` and write every artifact.

    Extra `callbacks` (a progress bar, say) run after the built-in ones.
    """
    config.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_config(run_dir, config, versions=versions(), fast_path=fast)
    rundir.write_status(run_dir, "running")

    model = build_compiled_model(config)
    recorder = BatchLossRecorder(config.num_batches)
    tap = BatchTap()
    all_callbacks = [
        ResetStatesAtEpochStart(),
        recorder,
        keras.callbacks.TerminateOnNaN(),
        *(callbacks or []),
    ]
    started = time.perf_counter()
    steps = fit_epochs(model, config, all_callbacks, fast=fast, tap=tap)
    seconds = time.perf_counter() - started

    rundir.write_history(run_dir, recorder.rows)
    last_epoch = recorder.rows[-1][0] if recorder.rows else 0
    final_loss = recorder.epoch_mean(last_epoch)
    if not all(math.isfinite(row[3]) for row in recorder.rows):
        message = "the loss became NaN or infinite; try a smaller --learning-rate"
        rundir.write_status(run_dir, "failed", message)
        raise TrainingDiverged(message)
    model.save(run_dir / rundir.MODEL)
    rundir.write_last_batch(run_dir, *tap.batch(config.num_batches - 1))
    rundir.write_status(run_dir, "complete")
    return TrainResult(
        run_dir=str(run_dir),
        epochs=config.num_epochs,
        steps=steps,
        final_loss=final_loss,
        train_seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else math.inf,
        history=recorder.rows,
    )


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""
