"""Small Keras callbacks, one job each, shared by the plain and the fast training paths.

Both paths call `on_epoch_begin`, `on_train_batch_end` with
`logs = {"loss": <epoch's running mean>, "batch_loss": <this batch's loss>}` and
`on_epoch_end`; the fast path calls `on_train_batch_begin` and `on_train_batch_end`
for each batch of a compiled chunk once the chunk returns.
"""

from __future__ import annotations

import math
import numbers
import sys
import time

from echo_keras.backend import keras
from echo_keras.errors import ConfigError
from echo_keras.loops import PredictLoop, score_windows
from echo_keras.model import reset_states, save_checkpoint
from echo_keras.run import arrays, files
from echo_keras.signals import SignalCatcher


class ResetStatesAtEpochStart(keras.callbacks.Callback):
    """Zero the state of every stateful layer at the start of each epoch.

    Each epoch brings a fresh series, so the state carried from the previous
    epoch's last window belongs to a different series.

    Example:

    ```python
    model.fit(x, y, batch_size=5, shuffle=False, callbacks=[ResetStatesAtEpochStart()])
    ```
    """

    def on_epoch_begin(self, epoch, logs=None):
        reset_states(self.model)


class BatchLossRecorder(keras.callbacks.Callback):
    """Record the loss of every single batch as `(epoch, batch, step, loss)` rows.

    Reads `logs["batch_loss"]` (the batch's own loss, which echo-keras's models
    report) when it is there. Under a plain `model.fit`, Keras hands callbacks only
    `logs["loss"]`, the epoch's running mean; the batch's own loss is then recovered
    from two consecutive means, which holds when every batch has one size (a stateful
    model's do; a short last batch of another model would be recorded wrong). Keras keeps
    that mean in float32, so a recovered loss carries its rounding times the batch's index:
    about 4e-4 off by batch 20,000 of one epoch. echo-keras's own models report each batch's
    loss itself, exactly. A batch that reports no loss is recorded by no row, and leaves the
    running mean unknown: the rest of its epoch is recorded only from `batch_loss`.

    Raises:
        ConfigError: (`steps_per_execution`) Keras reported batches out of turn: a model
            compiled with `steps_per_execution` above 1 hands callbacks every Nth batch.

    Args:
        num_batches: batches per epoch, to number steps across epochs.
        rows: rows recorded earlier (a resumed run), to continue from.

    Example:

    ```python
    recorder = BatchLossRecorder(num_batches=666)
    model.fit(..., shuffle=False, callbacks=[ResetStatesAtEpochStart(), recorder])
    recorder.rows[-1]  # (epoch, batch, step, loss)
    ```
    """

    def __init__(self, num_batches: int, rows=None):
        super().__init__()
        whole = isinstance(num_batches, numbers.Integral) and not isinstance(num_batches, bool)
        if not whole or num_batches < 1:
            raise ConfigError("num_batches", f"must be a whole number from 1, got {num_batches!r}")
        self.num_batches = int(num_batches)  # numpy's too
        self.rows = list(rows or [])
        self.epoch = 0
        self._mean: float | None = 0.0  # the epoch's running mean after the previous batch
        self._next = 0  # the batch whose loss comes next

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._mean = 0.0
        self._next = 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if batch != self._next:  # Keras skipped batches: their losses are lost
            after = f"after batch {self._next - 1}" if self._next else "as the first of its epoch"
            raise ConfigError(
                "steps_per_execution",
                f"BatchLossRecorder records every batch, but Keras reported batch {batch} "
                f"{after}: compile the model with steps_per_execution=1",
            )
        self._next = batch + 1
        if "batch_loss" in logs:
            loss = float(logs["batch_loss"])
        elif "loss" not in logs or self._mean is None:
            self._mean = None  # no loss reported: the running mean is unknown till next epoch
            return
        else:  # mean_k = (k * mean_(k-1) + loss_k) / (k + 1)
            mean = float(logs["loss"])
            loss, self._mean = (batch + 1) * mean - batch * self._mean, mean
        self.rows.append((self.epoch, batch, self.epoch * self.num_batches + batch, loss))

    def epoch_mean(self, epoch: int) -> float:
        losses = [row[3] for row in self.rows if row[0] == epoch]
        return sum(losses) / len(losses) if losses else math.nan


class ProgressBar(keras.callbacks.Callback):
    """A one-line progress bar: epoch, batch and the recent loss, redrawn at most 10 times a second.

    The loss shown is an average of the last batches' own losses (`logs["batch_loss"]`, which
    echo-keras's models report); under a plain `model.fit`, the epoch's running mean.

    Args:
        epochs: the number of epochs of the run.
        num_batches: batches per epoch.
        stream: where to draw (a terminal).

    Example:

    ```python
    model.fit(..., verbose=0, callbacks=[ProgressBar(epochs=5, num_batches=666)])
    ```
    """

    width = 30

    def __init__(self, epochs: int, num_batches: int, stream=None):
        super().__init__()
        self.epochs = epochs
        self.num_batches = num_batches
        self.stream = stream or sys.stdout
        self.recent = math.nan
        self.last_draw = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.recent = math.nan
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if "batch_loss" in logs:  # an exponential moving average over about 20 batches
            loss = float(logs["batch_loss"])
            self.recent = loss if math.isnan(self.recent) else 0.95 * self.recent + 0.05 * loss
        elif "loss" in logs:  # a plain model.fit's: the epoch's running mean
            self.recent = float(logs["loss"])
        now = time.perf_counter()
        if now - self.last_draw >= 0.1 or batch + 1 == self.num_batches:
            self.last_draw = now
            self._draw(batch + 1)

    def _draw(self, done: int) -> None:
        filled = self.width * done // self.num_batches
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        self._write(
            f"\rEpoch {self.epoch + 1}/{self.epochs} [{bar[: self.width]}] "
            f"{done}/{self.num_batches}  loss {self.recent:.4f}"
        )

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        mean = (logs or {}).get("loss", math.nan)
        self._write(
            f"\rEpoch {epoch + 1}/{self.epochs}: mean batch loss {float(mean):.4f}  "
            f"({seconds:.1f} s){' ' * 30}\n"
        )

    def _write(self, text: str) -> None:
        """Draw `text`. The bar is only a display: a stream that cannot take it (None,
        closed, a pipe whose reader left) ends the drawing, never the training."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None


class EpochCheckpoint(keras.callbacks.Callback):
    """At the end of every completed epoch, make the run folder resumable from there.

    In this order: append the epoch's rows to `history.csv`, write `last_batch.npz`,
    then write the checkpoint (weights, optimizer state, epoch count). A failure or
    a kill at any point leaves a folder that `--resume` can continue: the
    checkpoint never counts an epoch that history.csv lacks, and resume drops
    rows beyond the checkpoint. An epoch cut short (Ctrl-C, divergence) is not
    checkpointed: the last checkpoint stays the last completed epoch.

    Args:
        run_dir: the run folder being written.
        recorder: the run's BatchLossRecorder, whose rows go to `history.csv`.
        tap: the run's BatchTap (the epoch's last batch and its predictions).

    Example:

    ```python
    model.fit(..., callbacks=[recorder, EpochCheckpoint(run_dir, recorder, tap)])
    ```
    """

    def __init__(self, run_dir, recorder: BatchLossRecorder, tap, validation=None):
        super().__init__()
        self.run_dir = run_dir
        self.recorder = recorder
        self.tap = tap
        self.validation = validation  # a ValidateEachEpoch, whose rows go to validation.csv
        self._rows_written = len(recorder.rows)

    def on_epoch_end(self, epoch, logs=None):
        epoch_rows = [row for row in self.recorder.rows[self._rows_written :] if row[0] == epoch]
        if len(epoch_rows) < self.recorder.num_batches:
            return  # cut short
        if not all(math.isfinite(row[3]) for row in epoch_rows):
            return  # diverged: keep the last good checkpoint
        files.append_history(self.run_dir, files.history_lines(epoch_rows))
        self._rows_written = len(self.recorder.rows)
        if self.validation is not None:
            files.write_validation(self.run_dir, self.validation.rows)
        arrays.write_last_batch(self.run_dir, *self.tap.batch(self.recorder.num_batches - 1))
        save_checkpoint(self.run_dir, self.model, epoch + 1)


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite, silently.

    Keras's TerminateOnNaN does the same but prints a line on stdout, which would break
    `--json`'s one object; the run's own message says what happened.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("batch_loss", logs.get("loss"))
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


class ValidateEachEpoch(keras.callbacks.Callback):
    """After every epoch, score held-out windows with the state carried from a zeroed start.

    Appends `{"epoch", "loss", "bits_per_symbol", "accuracy"}` to `rows` (loss in nats
    per symbol, padding left out) and puts `val_loss` into the epoch's logs. The
    training state is not restored: every epoch starts from a zeroed state anyway.

    Args:
        windows: the validation `data.Windows`, laid out for the model's batch.
        rows: rows of epochs completed earlier (a resumed run), to continue from.

    Attributes:
        loop: the model's compiled `PredictLoop` to score with (None: one is made at the
            first epoch's end).
    """

    def __init__(self, windows, rows=None):
        super().__init__()
        self.windows = windows
        self.rows = list(rows or [])
        self.loop = None

    def on_epoch_end(self, epoch, logs=None):
        if self.loop is None:
            self.loop = PredictLoop(self.model, windows=self.windows.num_windows)
        loss, accuracy = score_windows(self.loop, self.windows)
        row = {
            "epoch": epoch,
            "loss": loss,
            "bits_per_symbol": loss / math.log(2),
            "accuracy": accuracy,
        }
        self.rows.append(row)
        if logs is not None:
            logs["val_loss"] = loss


class StopOnSignal(keras.callbacks.Callback):
    """Stop training at the next batch end after SIGINT (Ctrl-C), SIGTERM or SIGHUP.

    Use as a context manager around training, which installs the handlers
    (`signals.SignalCatcher`); `received` then holds the signal number, or None.

    Example:

    ```python
    with StopOnSignal() as stopper:
        model.fit(..., callbacks=[stopper])
    if stopper.received: ...
    ```
    """

    def __init__(self):
        super().__init__()
        self.catcher = SignalCatcher(on_signal=lambda signum: self._stop())

    @property
    def received(self) -> int | None:
        return self.catcher.received

    def _stop(self) -> None:
        if self.model is not None:
            self.model.stop_training = True

    def __enter__(self):
        self.catcher.install()
        return self

    def __exit__(self, *exc_info):
        self.catcher.restore()

    def on_train_batch_end(self, batch, logs=None):
        if self.received is not None:
            self._stop()

    on_epoch_begin = on_train_batch_end


def raised_in_hook(error: BaseException, callbacks: list) -> bool:
    """Whether `error` was raised inside a hook of one of `callbacks` (a caller's): one of
    its methods, or a function it holds as a hook (LambdaCallback's), or what they call.
    Keras's own Callback methods are no one's: one passes its call on (`on_train_batch_end`
    calls `on_batch_end`), ours included."""
    hooks = set()
    for callback in callbacks:
        for name in dir(callback):
            if name.startswith("on_"):
                hook = getattr(callback, name, None)
                code = getattr(getattr(hook, "__func__", hook), "__code__", None)
                if code is not None:
                    hooks.add(code)
    hooks -= {getattr(hook, "__code__", None) for hook in vars(keras.callbacks.Callback).values()}
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code in hooks:
            return True
        trace = trace.tb_next
    return False
