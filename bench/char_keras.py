"""The char-rnn bench's Keras trainers: a plain `model.fit`, and echo-keras through its API.

    python bench/char_keras.py fit CORPUS EPOCHS
    python bench/char_keras.py echo-keras CORPUS EPOCHS RUN_DIR

Both print one JSON object as `char_torch.py` does. Both models are scored the same
way here, on the same validation windows: the state carried, then zeroed before
every window; the sample comes from a copy of the model with batch size 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import char_data as data
import numpy as np

from echo_keras.backend import keras, tf
from echo_keras.callbacks import ResetStatesAtEpochStart
from echo_keras.model import reset_states

layers, ops = keras.layers, keras.ops


@keras.saving.register_keras_serializable(package="bench")
class OneHot(layers.Layer):
    """Integer symbols (batch, window) -> one-hot float32 (batch, window, vocab)."""

    def __init__(self, vocab: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab = vocab

    def call(self, symbols):
        return ops.one_hot(ops.cast(symbols, "int32"), self.vocab)

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab}


def build_fit_model(vocab: int) -> keras.Model:
    """char-rnn's model, stateful: one-hot -> 2 x LSTM(128) -> Dense(vocab) logits."""
    inputs = keras.Input(batch_shape=(data.BATCH_SIZE, data.WINDOW), dtype="int32")
    hidden = OneHot(vocab)(inputs)
    for index in range(data.NUM_LAYERS):
        hidden = layers.LSTM(
            data.STATE_SIZE, stateful=True, return_sequences=True, name=f"lstm_{index}"
        )(hidden)
    model = keras.Model(inputs, layers.Dense(vocab, name="logits")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(data.LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class EpochClock(keras.callbacks.Callback):
    """Records the training seconds of every epoch: from its start to the end of its last
    batch (what runs after that, such as echo-keras's validation and checkpoint, is left out).
    """

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.trained = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.trained = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self.trained - self.started)


def encoder(model: keras.Model, vocab: int):
    """A function from symbols (batch, window) to what `model` takes as input: the
    symbols themselves, or as (..., 1) floats, or one-hot (..., vocab)."""
    shape = model.inputs[0].shape
    if len(shape) == 2:
        return lambda symbols: tf.cast(symbols, model.inputs[0].dtype)
    if shape[-1] == 1:
        return lambda symbols: tf.cast(symbols, tf.float32)[..., None]
    if shape[-1] == vocab:
        return lambda symbols: tf.one_hot(symbols, vocab)
    raise SystemExit(f"bench: cannot feed symbols to a model whose input is {tuple(shape)}")


def position_losses(model, inputs, targets, vocab: int, reset_each_window: bool) -> np.ndarray:
    """Cross-entropy (nats) at every position of every window, (windows, batch, window),
    the state zeroed first and then carried (or zeroed before every window)."""
    encode = encoder(model, vocab)

    @tf.function
    def score(x, y):
        logits = tf.cast(model(encode(x), training=False), tf.float32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    reset_states(model)
    out = []
    for x, y in zip(inputs.astype(np.int32), targets.astype(np.int32), strict=True):
        if reset_each_window:
            reset_states(model)
        out.append(score(x, y).numpy())
    return np.stack(out)


def generate(model: keras.Model, alphabet: str) -> str:
    """The sample, from a copy of `model` that takes one symbol of one row at a time."""
    config = model.get_config()
    for layer in config["layers"]:
        layer.pop("build_config", None)  # built again, for the new batch shape
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [1, 1, *layer["config"]["batch_shape"][2:]]
    single = model.__class__.from_config(config)
    single.set_weights(model.get_weights())
    reset_states(single)
    encode = encoder(single, len(alphabet))
    predict = tf.function(lambda x: single(encode(x), training=False))

    def step(symbol: int) -> np.ndarray:
        return predict(tf.constant([[symbol]], tf.int32)).numpy()[0, -1]

    return data.sample(step, alphabet)


def train_fit(inputs, targets, vocab: int, epochs: int, clock: EpochClock) -> keras.Model:
    """`model.fit` on the windows in order, one window per step, the state reset at
    each epoch start."""
    model = build_fit_model(vocab)
    model.fit(
        inputs.reshape(-1, data.WINDOW).astype(np.int32),
        targets.reshape(-1, data.WINDOW).astype(np.int32),
        batch_size=data.BATCH_SIZE,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[ResetStatesAtEpochStart(), clock],
    )
    return model


def train_echo_keras(corpus: Path, alphabet: str, epochs: int, run_dir: Path, clock: EpochClock):
    """echo-keras's `train` on the corpus file: (the trained model, its own report)."""
    from echo_keras import TrainConfig, train

    config = TrainConfig(
        data=str(corpus),
        task="next",
        input_encoding="onehot",
        num_layers=data.NUM_LAYERS,
        state_size=data.STATE_SIZE,
        batch_size=data.BATCH_SIZE,
        truncated_backprop_length=data.WINDOW,
        optimizer="adam",
        learning_rate=data.LEARNING_RATE,
        num_epochs=epochs,
        validation_fraction=data.VALIDATION_FRACTION,
        seed=data.SEED,
    )
    result = train(config, run_dir, overwrite=True, callbacks=[clock])
    symbols = json.loads((run_dir / "vocabulary.json").read_text())["symbols"]
    if "".join(symbols) != alphabet:
        raise SystemExit("bench: echo-keras's vocabulary is not the corpus's sorted characters")
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    own = {
        "own_steps_per_second": result.steps_per_second,
        "own_validation_bpc": result.validation[-1]["bits_per_symbol"],
    }
    return model, own


def main(trainer: str, corpus: Path, epochs: int, run_dir: Path | None) -> None:
    threads = data.threads()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(data.SEED)
    alphabet, symbols = data.read_corpus(corpus)
    training, validation = data.split(symbols)
    inputs, targets = data.windows(training)
    clock, own = EpochClock(), {}
    started = time.perf_counter()
    if trainer == "fit":
        model = train_fit(inputs, targets, len(alphabet), epochs, clock)
    else:
        model, own = train_echo_keras(corpus, alphabet, epochs, run_dir, clock)
    whole = time.perf_counter() - started
    if model.output_shape[-1] != len(alphabet):
        raise SystemExit(
            f"bench: the model has {model.output_shape[-1]} classes, the corpus "
            f"{len(alphabet)} characters"
        )
    val_inputs, val_targets = data.windows(validation)
    carried = position_losses(model, val_inputs, val_targets, len(alphabet), False)
    reset = position_losses(model, val_inputs, val_targets, len(alphabet), True)
    result = {
        "windows": epochs * len(inputs),
        "epoch_windows": len(inputs),
        "train_seconds": sum(clock.seconds),
        "epoch_seconds": clock.seconds,
        "call_seconds": whole,
        **data.summary(carried, reset),
        "sample": generate(model, alphabet),
        **own,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(
        arguments[0],
        Path(arguments[1]),
        int(arguments[2]),
        Path(arguments[3]) if len(arguments) > 3 else None,
    )
