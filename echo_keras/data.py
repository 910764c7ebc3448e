"""The echo task's data: a random symbol series, its echo, and the stateful window layout.

Everything here is numpy; nothing imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

from echo_keras.config import TrainConfig

# Random streams are separated by a spawn key, so no two uses ever share data:
# training epoch e draws from (seed, TRAIN_STREAM, e), evaluation from (seed, EVAL_STREAM).
TRAIN_STREAM = 0
EVAL_STREAM = 1


def symbol_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds every symbol (uint8 for <= 256)."""
    return np.min_scalar_type(num_classes - 1)


def generate_series(
    rng: np.random.Generator, length: int, num_classes: int, echo_step: int
) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's `generateData` before reshaping.

    `x` is uniform over `num_classes` symbols; `y` is `x` shifted right by
    `echo_step`, its first `echo_step` values 0. Both are stored compactly
    (one byte a symbol for up to 256 classes).
    """
    dtype = symbol_dtype(num_classes)
    x = rng.integers(0, num_classes, size=length, dtype=dtype)
    y = np.zeros_like(x)
    y[echo_step:] = x[: length - echo_step]
    return x, y


def make_windows(series: np.ndarray, batch_size: int, window: int) -> np.ndarray:
    """Cut a series into rows and consecutive windows for a stateful model.

    The series is cut into `batch_size` rows (sub-series, as the tutorial's
    `reshape((batch_size, -1))`), and each row into windows of `window` columns.
    Window k of every row forms batch k, so sample i of batch k+1 continues
    sample i of batch k, which is what lets a stateful layer carry its state::

        series:  a0 a1 a2 a3 a4 a5 | b0 b1 b2 b3 b4 b5 | c0 c1 ...   (+ dropped tail)
                 `--- row 0 ----'   `--- row 1 ----'

                      batch 0     batch 1     batch 2
        row 0:       [a0 a1]  -> [a2 a3]  -> [a4 a5]
        row 1:       [b0 b1]  -> [b2 b3]  -> [b4 b5]
        row 2:       [c0 c1]  -> [c2 c3]  -> [c4 c5]
                    (state carries along each row, left to right)

    Returns a contiguous array of shape (num_windows, batch_size, window), in
    the series' dtype. Symbols past `num_windows * batch_size * window` are
    dropped (the tutorial drops them too).
    """
    num_windows = len(series) // batch_size // window
    used = num_windows * batch_size * window
    rows = series[:used].reshape(batch_size, num_windows, window)
    return np.ascontiguousarray(rows.transpose(1, 0, 2))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of training epoch `epoch`: fresh data each epoch, same for the same seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(TRAIN_STREAM, epoch)))


def eval_rng(seed: int) -> np.random.Generator:
    """A generator that no training epoch of any seed draws from."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,)))


def windows_from_rng(
    rng: np.random.Generator, config: TrainConfig, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a series and return its (inputs, targets) windows."""
    length = config.total_series_length if length is None else length
    x, y = generate_series(rng, length, config.num_classes, config.echo_step)
    inputs = make_windows(x, config.batch_size, config.truncated_backprop_length)
    del x
    targets = make_windows(y, config.batch_size, config.truncated_backprop_length)
    return inputs, targets


def epoch_windows(config: TrainConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The training windows of one epoch: (inputs, targets), each (num_batches, batch, window)."""
    return windows_from_rng(epoch_rng(config.seed, epoch), config)
