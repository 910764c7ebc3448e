"""TensorBoard logs of a run: Keras's callback, with one step count across epochs and
resumes, and logs that cannot be written ending without stopping training."""

from __future__ import annotations

import contextlib

from echo_keras.backend import keras, tf
from echo_keras.errors import tell, write_reason


class RunTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, logging every batch, with one step count for the whole run.

    The plain path calls `fit` once per epoch (fresh data each time) and a resumed
    run starts mid-way; Keras's callback would restart its step at every
    `on_train_begin`. This one keeps counting from `first_step`. Logs that cannot be
    written (a full disk) do not stop training, as a live plot's frames do not: one
    warning on stderr, and the logs end there.

    Args:
        log_dir: where the event files go.
        first_step: batches trained before this call (a resumed run).

    Example:

    ```python
    model.fit(..., callbacks=[RunTensorBoard("logs/echo")])
    ```
    """

    def __init__(self, log_dir, first_step: int = 0):
        super().__init__(log_dir=str(log_dir), update_freq="batch")
        self._next_step = first_step
        self.failed = False

    def _logging(self, hook, *args) -> None:
        """Call Keras's `hook`, unless the logs failed; a failed write ends them."""
        if self.failed:
            return
        entered = list(self._prev_summary_state)  # a hook that fails may have left one
        try:
            hook(*args)
        except (OSError, tf.errors.OpError) as error:
            self.failed = True
            self._let_go(entered)
            tell(
                f"Warning: TensorBoard: cannot write to {self.log_dir}: "
                f"{write_reason(error)}; training goes on without its logs"
            )

    def _let_go(self, entered: list) -> None:
        """Close the writers (a closed one flushes nothing more), then leave every context
        that made one TensorFlow's default: those Keras still holds, and those `entered`
        before a hook whose leaving a failed flush cut short. No broken writer stays the
        default."""
        for writer in self._writers.values():
            with contextlib.suppress(OSError, RuntimeError, tf.errors.OpError):
                writer.close()
        held = entered + [pair for pair in self._prev_summary_state if pair not in entered]
        for pair in reversed(held):
            for context in reversed(pair):  # leaving one twice does nothing more
                with contextlib.suppress(OSError, RuntimeError, tf.errors.OpError):
                    context.__exit__(None, None, None)
        self._prev_summary_state.clear()

    def set_model(self, model):
        self._logging(super().set_model, model)  # it writes the graph: a first event

    def on_train_begin(self, logs=None):
        self._logging(super().on_train_begin, logs)
        self._global_train_batch = self._next_step

    def on_train_end(self, logs=None):
        self._next_step = self._global_train_batch
        self._logging(super().on_train_end, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._logging(super().on_epoch_begin, epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._logging(super().on_epoch_end, epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._logging(super().on_train_batch_begin, batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._logging(super().on_train_batch_end, batch, logs)

    def close(self) -> None:
        """Flush and close the event files (on_train_end does it too; closing twice is fine)."""
        self._logging(self._close_writers)
