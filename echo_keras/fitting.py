"""The two ways of training epochs, window after window with the state carried and reset
at each epoch start:
- fast (default): `loops.TrainLoop`, many windows per XLA-compiled call, fed one chunk
  of windows at a time (so a large data file is never copied whole into TensorFlow);
- plain (`plain=True`): `model.fit(shuffle=False)` one window per step, for debugging.
Both drive the same callbacks with the loss of every single batch.
"""

from __future__ import annotations

import numpy as np

from echo_keras import model as model_lib
from echo_keras.backend import keras, tf
from echo_keras.config import TrainConfig
from echo_keras.corpus import Corpus
from echo_keras.data import Windows, epoch_rng, generate_series, series_windows
from echo_keras.loops import TrainLoop

# The fast path returns to Python (progress bar, Ctrl-C, live plot) at least this often.
CHUNK_WINDOWS = 100


class BatchTap:
    """Where callbacks find the current epoch's windows and the latest batch's logits."""

    def __init__(self):
        self.windows: Windows | None = None
        self.logits_source = None

    def batch(self, index: int):
        """(inputs, targets, class probabilities) of batch `index` of the current epoch."""
        chunk = self.windows.chunk(index, index + 1)
        return chunk["inputs"][0], chunk["targets"][0], probabilities(self.logits_source())


def epoch_data(config: TrainConfig, epoch: int, corpus: Corpus | None = None) -> Windows:
    """The windows of training epoch `epoch`: a fresh echo series, or the run's own data."""
    if corpus is not None:
        return corpus.train
    x, y = generate_series(
        epoch_rng(config.seed, epoch),
        config.total_series_length,
        config.num_classes,
        config.echo_step,
    )
    return series_windows(x, y, config.batch_size, config.truncated_backprop_length)


def probabilities(logits) -> np.ndarray:
    """The softmax of logits over the last axis, in float64 (as last_batch.npz keeps it)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def fit_epochs(
    model: keras.Model,
    config: TrainConfig,
    callbacks: list,
    *,
    first_epoch: int = 0,
    plain: bool = False,
    tap: BatchTap | None = None,
    chunk_stops=None,
    corpus: Corpus | None = None,
    warm=None,
) -> int:
    """Train epochs first_epoch..num_epochs-1 on fresh data (or `corpus`, the run's own);
    return the number of batches run.

    `callbacks` should include ResetStatesAtEpochStart. Stops early when a
    callback sets `model.stop_training`. `warm`: the `warm.WarmModel` that `model` is, whose
    compiled loop the fast path reuses.
    """
    tap = tap or BatchTap()
    if plain:
        return _fit_plain(model, config, callbacks, first_epoch, tap, corpus)
    stops = chunk_stops or default_chunk_stops
    return _fit_fast(model, config, callbacks, first_epoch, tap, stops, corpus, warm)


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


def _fit_plain(model, config, callbacks, first_epoch, tap, corpus) -> int:
    # Keras builds the compiled metrics on the first step, so look the metric up late.
    tap.logits_source = lambda: model_lib.batch_loss_metric(model).logits.numpy()
    callback_list = _OneTraining(
        callbacks,
        add_history=True,
        model=model,
        epochs=config.num_epochs,
        steps=config.num_batches,
        verbose=0,
    )
    model.stop_training = False
    callback_list.begin()
    for epoch in range(first_epoch, config.num_epochs):
        if model.stop_training:  # a callback's on_train_begin, which fit would forget
            break
        tap.windows = epoch_data(config, epoch, corpus)
        windows = tap.windows.chunk(0, tap.windows.num_windows)
        window = config.truncated_backprop_length
        x = windows["inputs"].reshape(-1, window)
        x = np.eye(config.num_classes, dtype=np.float32)[x] if config.input_width > 1 else x
        x = x.reshape(-1, window, config.input_width).astype(np.float32)
        y = windows["targets"].reshape(-1, window).astype(np.int32)
        model.fit(
            x,
            y,
            batch_size=config.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=callback_list,
        )
        if model.stop_training:
            break
    callback_list.end()
    return callback_list.total


class _OneTraining(keras.callbacks.CallbackList):
    """The callbacks of a whole training, handed to one `model.fit` per epoch, told what
    the fast path tells them: `on_train_begin` and `on_train_end` once (`begin`, `end`),
    not at every fit, so a callback that counts epochs (EarlyStopping's patience) sees one
    training; and no `on_epoch_end` for an epoch cut short, which fit would still end.
    `total` counts the batches run, a stopped epoch's too."""

    def __init__(self, callbacks, *, steps: int, **options):
        super().__init__(callbacks, steps=steps, **options)
        self.steps, self.batches, self.total = steps, 0, 0

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = 0
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.batches, self.total = self.batches + 1, self.total + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.batches == self.steps:
            super().on_epoch_end(epoch, logs)

    def begin(self):
        super().on_train_begin()

    def end(self):
        super().on_train_end()


def _fit_fast(model, config, callbacks, first_epoch, tap, chunk_stops, corpus, warm) -> int:
    num_windows = config.num_batches
    size = min(CHUNK_WINDOWS, num_windows)  # every chunk is fed padded to this many windows
    if warm is None:
        loop = TrainLoop(model, size, windows=num_windows)
    else:
        loop = warm.loop(TrainLoop, size, windows=num_windows)
    callback_list = DirectCallbacks(
        callbacks, model, {"epochs": config.num_epochs, "steps": num_windows, "verbose": 0}
    )
    logits = tf.zeros(())
    tap.logits_source = lambda: logits.numpy()
    steps = 0
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(first_epoch, config.num_epochs):
        tap.windows = epoch_data(config, epoch, corpus)
        callback_list.on_epoch_begin(epoch)
        total, start, done = 0.0, 0, 0
        while start < num_windows and not model.stop_training:
            stop = chunk_stops(start, num_windows, epoch)
            chunk = {k: tf.constant(v) for k, v in tap.windows.chunk(start, stop, size).items()}
            losses, logits = loop(**chunk, start=0, stop=stop - start)
            for batch, loss in enumerate(losses.numpy()[: stop - start].tolist(), start):
                total += loss
                steps, done = steps + 1, done + 1
                logs = {"loss": total / (batch + 1), "batch_loss": loss}
                callback_list.on_train_batch_begin(batch)  # after the fact: it already ran
                callback_list.on_train_batch_end(batch, logs)
                if model.stop_training:
                    break
            start = stop
        if done < num_windows:  # cut short: not an epoch that ended
            break
        callback_list.on_epoch_end(epoch, {"loss": total / num_windows})
        if model.stop_training:
            break
    callback_list.on_train_end()
    return steps


def build_compiled_model(config: TrainConfig) -> keras.Model:
    return model_lib.compile_model(model_lib.build_seeded(config), config)


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
