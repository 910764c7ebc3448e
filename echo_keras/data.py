"""The echo task's data: a random symbol series, its echo, and the stateful window layout.

Everything here is numpy; nothing imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Windows:
    """A sequence laid out for a stateful model, read one range of windows at a time.

    `inputs` and `targets` are (batch_size, row length) rows, as `make_windows` cuts
    them (views of the data where they can be: no copy of a large file). With
    documents, `weights` is 0 on the padding that fills a document's last window
    (left out of the loss) and `resets[k, i]` says that row i starts a document at
    window k, so its state is zeroed there; without, both are None.
    """

    inputs: np.ndarray
    targets: np.ndarray
    window: int
    weights: np.ndarray | None = None
    resets: np.ndarray | None = None
    dropped: int = 0  # the last targets of a series, too few to fill a window in every row
    # The echo task on one series: every row's first targets, whose echo is in the row
    # before (or none, in the first row): left out of the accuracies.
    unscored: int = 0

    def scored(self, start: int, count: int) -> np.ndarray:
        """(count, 1, window) bools: the positions of windows [start, start + count) that
        the accuracies count (all but every row's first `unscored`)."""
        return row_columns(start, count, self.window) >= self.unscored

    @property
    def num_windows(self) -> int:
        return self.inputs.shape[1] // self.window

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    def chunk(self, start: int, stop: int, size: int | None = None) -> dict[str, np.ndarray]:
        """Windows [start, stop) as (windows, batch, window) arrays, zero-padded to `size`
        windows (one shape for every chunk, so a compiled loop is compiled once)."""
        size = stop - start if size is None else size
        arrays = {"inputs": self.inputs, "targets": self.targets}
        if self.weights is not None:
            arrays["weights"] = self.weights
        out = {}
        for name, rows in arrays.items():
            part = rows[:, start * self.window : stop * self.window]
            part = part.reshape(self.batch_size, stop - start, self.window).transpose(1, 0, 2)
            padded = np.zeros((size, self.batch_size, self.window), rows.dtype)
            padded[: stop - start] = part
            out[name] = padded
        if self.resets is not None:
            out["resets"] = np.zeros((size, self.batch_size), bool)
            out["resets"][: stop - start] = self.resets[start:stop]
        return out


def row_columns(start: int, count: int, window: int) -> np.ndarray:
    """(count, 1, window): where each position of windows [start, start + count) stands in
    its row (rows laid out window after window, as `make_windows` lays them)."""
    return (start + np.arange(count))[:, None, None] * window + np.arange(window)


def series_windows(
    x: np.ndarray, y: np.ndarray, batch_size: int, window: int, unscored: int = 0
) -> Windows:
    """`Windows` of a series and its targets in `batch_size` contiguous rows (no copy);
    symbols past the last whole window are dropped, as `make_windows` drops them."""
    used = len(x) // batch_size // window * batch_size * window
    rows = x[:used].reshape(batch_size, -1), y[:used].reshape(batch_size, -1)
    return Windows(*rows, window, dropped=len(x) - used, unscored=unscored)


def dropped_note(windows: Windows, what: str) -> str | None:
    """A note saying how much of `what` (a series) `windows` leaves out, if 1% or more of
    its targets; None otherwise."""
    used = windows.num_windows * windows.batch_size * windows.window
    shape = (windows.num_windows, windows.batch_size, windows.window)
    return _dropped(what, "targets", used, windows.dropped, shape)


def series_note(config: TrainConfig, what: str = "the echo series (`total_series_length`)"):
    """The same note for the echo series of `config` (`what`: which, its length's field),
    whose last symbols short of a whole window in every row are dropped (the tutorial's
    50,000 drop 50: no note)."""
    shape = (config.num_batches, config.batch_size, config.truncated_backprop_length)
    dropped = config.total_series_length - config.used_length
    return _dropped(what, "symbols", config.used_length, dropped, shape)


def _dropped(what: str, unit: str, used: int, dropped: int, shape: tuple) -> str | None:
    if dropped * 100 < used + dropped:
        return None
    windows, batch_size, window = shape
    return (
        f"{what}: {used + dropped} {unit} do not fill whole windows; using {used} "
        f"({windows} window{'s' * (windows != 1)} of {batch_size} x {window}), dropping the "
        f"last {dropped}"
    )


def task_pairs(ids: np.ndarray, task: str, echo_step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(inputs, targets, first position with a target) of a sequence for a task: `next`
    predicts each symbol's successor (views, no copy); `echo` its echo `echo_step` back."""
    if task == "next":
        return ids[:-1], ids[1:], 0
    targets = np.zeros_like(ids)
    if echo_step < len(ids):  # else no symbol has its echo in the sequence
        targets[echo_step:] = ids[: len(ids) - echo_step]
    return ids, targets, echo_step


def document_windows(
    ids: np.ndarray, starts: np.ndarray, batch_size: int, window: int, task: str, echo_step: int
) -> Windows:
    """`Windows` of documents: each padded to whole windows and placed whole in the row
    that is shortest so far (in file order), rows padded to the longest; a row's state
    is zeroed at the window where each of its documents starts."""
    ends = np.append(starts[1:], len(ids))
    pieces = []  # (row, offset in row, inputs, targets, first position with a target)
    lengths = np.zeros(batch_size, np.int64)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        x, y, first = task_pairs(ids[start:end], task, echo_step)
        if len(x) <= first:
            continue  # too short to hold a single target
        row = int(np.argmin(lengths))
        pieces.append((row, int(lengths[row]), x, y, first))
        lengths[row] += -(-len(x) // window) * window
    length = int(lengths.max())
    inputs = np.zeros((batch_size, length), ids.dtype)
    targets = np.zeros((batch_size, length), ids.dtype)
    weights = np.zeros((batch_size, length), np.uint8)
    resets = np.zeros((length // window, batch_size), bool)
    for row, offset, x, y, first in pieces:
        inputs[row, offset : offset + len(x)] = x
        targets[row, offset : offset + len(y)] = y
        weights[row, offset + first : offset + len(x)] = 1
        resets[offset // window, row] = True
    return Windows(inputs, targets, window, weights, resets)
