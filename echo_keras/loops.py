"""Compiled loops over consecutive windows: the fast training path and evaluation.

A plain `model.fit` pays Python and dispatch overhead on every batch (about 2 ms
here, for a model that computes in 0.1 ms). These loops run a whole range of
windows inside one compiled `tf.while_loop`, with XLA where it pays (`worth_xla`).
The carried state lives in the stateful layers' own variables, exactly as under
`fit`: each window reads it at the start (a variable read, so gradients stop at
the window edge) and assigns the new state at the end.
"""

from __future__ import annotations

import numpy as np

from echo_keras.backend import graph_function, keras, tf
from echo_keras.model import (
    LARGE_WINDOW_WORK,
    loss_function,
    reset_states,
    state_variables,
    window_work,
)

SCORE_WINDOWS = 200  # windows `score_windows` feeds the compiled loop at a time
# Below this many windows a pass, XLA's compilation costs about as much as it saves, or more:
# for the tutorial's model it takes 0.8-1.2 s more than tracing and saves about 1.5 ms a window
# (paying from about 700 windows: 5 epochs of 200); a tiny run of 2 epochs of 30 windows
# trains in 1 s, not 2.3 s.
XLA_MIN_WINDOWS = 200


def worth_xla(model: keras.Model, windows: int | None = None) -> bool:
    """Whether a loop over `model`'s windows should be XLA-compiled: when the model is not
    large (`model.LARGE_WINDOW_WORK`: on a small one the per-window dispatch XLA saves is
    what costs), and a pass runs enough windows (`windows`, when given) to pay for the
    compilation."""
    if windows is not None and windows < XLA_MIN_WINDOWS:
        return False
    return window_work(model) <= LARGE_WINDOW_WORK


def one_hot_classes(model: keras.Model) -> int | None:
    """The classes a model takes one-hot, or None when it takes a symbol as one float."""
    width = model.inputs[0].shape[-1]
    return int(width) if width > 1 else None


def features(symbols, classes: int | None):
    """Symbols as the model takes them: one float each (batch, window, 1), or one-hot."""
    if classes:
        return tf.one_hot(tf.cast(symbols, tf.int32), classes)
    return tf.cast(symbols, tf.float32)[..., None]


def _window(inputs, targets, k, classes=None):
    """Window k as the model takes it: its input features and int targets."""
    return features(inputs[k], classes), tf.cast(targets[k], tf.int32)


def _zero_rows(states, resets) -> None:
    """Zero the state of the rows whose document starts here (`resets`, one bool a row)."""
    keep = 1.0 - tf.cast(resets, tf.float32)
    for variable in states:
        variable.assign(variable * tf.cast(keep, variable.dtype)[:, None])


def _cross_entropy(y, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=tf.cast(logits, tf.float32)
    )


def masked_mean(y, logits, weights):
    """Mean cross-entropy over the positions whose weight is 1 (padding is 0)."""
    weights = tf.cast(weights, tf.float32)
    total = tf.reduce_sum(_cross_entropy(y, logits) * weights)
    return total / tf.maximum(tf.reduce_sum(weights), 1.0)


def _predicted(model, x, y):
    """(cross-entropy, hit) per position of the model's predictions for one window."""
    logits = tf.cast(model(x, training=False), tf.float32)
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
    return _cross_entropy(y, logits), hits


def _scored(model, x, y):
    """(summed cross-entropy, hit per position) of the model's predictions for one window."""
    losses, hits = _predicted(model, x, y)
    return tf.reduce_sum(losses), hits


def _zero(states) -> None:
    for variable in states:
        variable.assign(tf.zeros_like(variable))


class TrainLoop:
    """Train on windows [start, stop) of an epoch in one compiled call.

    Calling it returns the loss of every window in [start, stop) (a vector as long
    as the epoch, zero elsewhere) and the logits of window stop-1, computed before
    that window's update, as the tutorial's `_predictions_series` were.

    Args:
        model: a compiled stateful model; its optimizer is used and updated.
        num_windows: windows a call takes (an epoch, or the chunk it is fed at a time).
        jit_compile: compile with XLA (the point of this loop for small models); None: when
            `worth_xla` says so for `windows`, the windows of an epoch (default num_windows).
    """

    def __init__(
        self,
        model: keras.Model,
        num_windows: int,
        jit_compile: bool | None = None,
        windows: int | None = None,
    ):
        self.model = model
        windows = num_windows if windows is None else windows
        jit_compile = worth_xla(model, windows) if jit_compile is None else jit_compile
        self.num_windows = num_windows
        self.loss = loss_function()
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._run = graph_function(self._loop, jit_compile=jit_compile)

    def _loop(self, inputs, targets, start, stop, weights=None, resets=None):
        model, optimizer, variables = (
            self.model,
            self.model.optimizer,
            self.model.trainable_variables,
        )
        batch, window = inputs.shape[1], inputs.shape[2]
        logits_shape = (batch, window, model.output_shape[-1])
        classes, states = one_hot_classes(model), state_variables(model)

        def body(k, losses, _):
            x, y = _window(inputs, targets, k, classes)
            if resets is not None:
                _zero_rows(states, resets[k])
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                if weights is None:
                    loss = self.loss(y, logits)
                else:
                    loss = masked_mean(y, logits, weights[k])
            optimizer.apply(tape.gradient(loss, variables), variables)
            return k + 1, losses.write(k, loss), tf.cast(logits, tf.float32)

        losses = tf.TensorArray(tf.float32, size=self.num_windows, element_shape=())
        _, losses, logits = tf.while_loop(
            lambda k, *_: k < stop, body, (start, losses, tf.zeros(logits_shape))
        )
        return losses.stack(), logits

    def __call__(self, inputs, targets, start: int, stop: int, weights=None, resets=None):
        """Train windows [start, stop); with documents, `weights` (0 on padding) and
        `resets` (a row's state zeroed before the window) as `data.Windows.chunk` gives them."""
        return self._run(inputs, targets, tf.constant(start), tf.constant(stop), weights, resets)


class PredictLoop:
    """Predict every window in order, carrying the state, in one compiled call.

    Returns, per position of every window, the cross-entropy and whether the predicted
    class was right: two (windows, batch, window) arrays. The caller leaves out what it
    does not count (padding, the positions of a first window).

    Args:
        model: a stateful model (weights are not changed).
        reset_each_window: zero the state before every window (the ablation).
        windows: the windows a pass runs, to choose XLA by (`worth_xla`); jit_compile: as
            `TrainLoop`'s.
    """

    def __init__(
        self,
        model: keras.Model,
        reset_each_window: bool = False,
        jit_compile: bool | None = None,
        windows: int | None = None,
    ):
        self.model = model
        jit_compile = worth_xla(model, windows) if jit_compile is None else jit_compile
        self.reset_each_window = reset_each_window
        self._run = graph_function(self._loop, jit_compile=jit_compile)

    def _loop(self, inputs, targets, stop, resets=None):
        model, states = self.model, state_variables(self.model)
        num_windows, classes = inputs.shape[0], one_hot_classes(model)

        def body(k, losses, correct):
            if self.reset_each_window:
                _zero(states)
            elif resets is not None:
                _zero_rows(states, resets[k])
            loss, hits = _predicted(model, *_window(inputs, targets, k, classes))
            return k + 1, losses.write(k, loss), correct.write(k, hits)

        def positions(dtype):
            return tf.TensorArray(dtype, size=num_windows, element_shape=inputs.shape[1:])

        _, losses, correct = tf.while_loop(
            lambda k, *_: k < stop,
            body,
            (tf.constant(0), positions(tf.float32), positions(tf.bool)),
        )
        return losses.stack(), correct.stack()

    def __call__(self, inputs, targets, stop=None, resets=None):
        """Run windows [0, stop) (default all); with documents, `resets` (a row's state zeroed
        before the window) as `data.Windows.chunk` gives them. Windows past `stop` are left
        unwritten (zero)."""
        inputs, targets = tf.convert_to_tensor(inputs), tf.convert_to_tensor(targets)
        stop = inputs.shape[0] if stop is None else stop
        return self._run(inputs, targets, tf.constant(stop), resets)


class PairedPredictLoop:
    """Predict every window twice in one compiled call, from one pass over the data: with the
    state carried (as `PredictLoop`) and with it zeroed before the window (the ablation).

    After each window the carried state is put back, so the carried results are those of
    `PredictLoop(model)` and the reset ones those of `PredictLoop(model, True)`. Returns
    (carried loss sums, carried hits, reset loss sums, reset hits), as `PredictLoop` does;
    `stop` windows are run (default all; 0 compiles the loop and runs nothing). `windows` and
    `jit_compile`: as `PredictLoop`'s.
    """

    def __init__(
        self, model: keras.Model, jit_compile: bool | None = None, windows: int | None = None
    ):
        self.model = model
        jit_compile = worth_xla(model, windows) if jit_compile is None else jit_compile
        self._run = graph_function(self._loop, jit_compile=jit_compile)

    def _loop(self, inputs, targets, stop):
        model, states = self.model, state_variables(self.model)
        num_windows = inputs.shape[0]

        classes = one_hot_classes(model)

        def body(k, carried_sums, carried_hits, reset_sums, reset_hits):
            x, y = _window(inputs, targets, k, classes)
            carried_loss, carried_hit = _scored(model, x, y)
            carried = [tf.identity(variable.value) for variable in states]
            _zero(states)
            reset_loss, reset_hit = _scored(model, x, y)
            for variable, value in zip(states, carried, strict=True):
                variable.assign(value)
            return (
                k + 1,
                carried_sums.write(k, carried_loss),
                carried_hits.write(k, carried_hit),
                reset_sums.write(k, reset_loss),
                reset_hits.write(k, reset_hit),
            )

        def sums():
            return tf.TensorArray(tf.float32, size=num_windows, element_shape=())

        def hits():
            return tf.TensorArray(tf.bool, size=num_windows, element_shape=inputs.shape[1:])

        _, *arrays = tf.while_loop(
            lambda k, *_: k < stop, body, (tf.constant(0), sums(), hits(), sums(), hits())
        )
        return tuple(array.stack() for array in arrays)

    def __call__(self, inputs, targets, stop: int | None = None):
        inputs, targets = tf.convert_to_tensor(inputs), tf.convert_to_tensor(targets)
        stop = inputs.shape[0] if stop is None else stop
        return self._run(inputs, targets, tf.constant(stop))


def predicted_chunks(loop: PredictLoop, windows, size: int):
    """Run `loop` over `data.Windows`, `size` windows at a time (each chunk padded to `size`:
    one compilation for any data), from a zeroed state carried throughout. Yields, for each
    chunk, (its first window, the chunk as `Windows.chunk` gives it, the losses, the hits),
    all cut to the windows it really holds."""
    reset_states(loop.model)
    for start in range(0, windows.num_windows, size):
        stop = min(start + size, windows.num_windows)
        chunk = windows.chunk(start, stop, size)
        losses, hits = loop(chunk["inputs"], chunk["targets"], stop - start, chunk.get("resets"))
        used = stop - start
        chunk = {name: values[:used] for name, values in chunk.items()}
        yield start, chunk, losses.numpy()[:used], hits.numpy()[:used]


def score_windows(loop: PredictLoop, windows, size: int = SCORE_WINDOWS) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy) of `loop`'s model over `data.Windows`, fed as
    `predicted_chunks` feeds it (padding left out; the accuracy counts `Windows.scored`)."""
    total = weight = hits = counted = 0.0
    for start, chunk, losses, correct in predicted_chunks(loop, windows, size):
        mask = chunk["weights"].astype(bool) if "weights" in chunk else np.ones(correct.shape, bool)
        scored = mask & windows.scored(start, len(correct))
        total += float(np.sum(losses[mask], dtype=np.float64))
        weight += float(np.count_nonzero(mask))
        hits += float(np.count_nonzero(correct[scored]))
        counted += float(np.count_nonzero(scored))
    return total / max(weight, 1.0), hits / max(counted, 1.0)
