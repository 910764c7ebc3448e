"""The stateful recurrent model: build, compile, load (a run's too), checkpoint, carried state.

Importing this module imports Keras (and TensorFlow): keep it out of fast paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from echo_keras.backend import keras, keras_building, tf
from echo_keras.config import TrainConfig
from echo_keras.errors import RunFolderError, first_line
from echo_keras.run import arrays, files
from echo_keras.run.folder import RunFolder

layers, ops = keras.layers, keras.ops

RECURRENT_LAYERS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple": layers.SimpleRNN}
SEED_STATE = "seed_generator_state"  # a Keras SeedGenerator's variable: where its draws stand
# Above this many multiply-adds per window (`window_work`) a model is large: XLA's CPU loops
# lose to TensorFlow's own kernels on it (char-rnn's 2 x LSTM(128), batch 50 x window 50:
# 22,000 against 32,000 symbols/s on one thread), and its recurrent layers are unrolled.
LARGE_WINDOW_WORK = 50_000_000
# A large model's recurrent layers run their steps unrolled, without TensorFlow's while
# loop, for windows of up to this many steps: char-rnn's model then trains 30-50% faster on
# one thread (the loop's bookkeeping at every step, forward and backward, is what costs),
# for about 5 s more of graph building once; past it, building grows too long. Not on a
# GPU, where Keras runs looped layers with cuDNN's fused kernels. The number of epochs has
# no say, though a short run may not win the building time back (the scale bench's one
# epoch of 312 windows trains about 4 s slower): a run is built the same way whatever its
# epochs, so one resumed with more epochs computes, to the last digit, what an
# uninterrupted run computes (unrolled and looped layers differ in rounding).
UNROLL_MAX_STEPS = 64


def build_model(config: TrainConfig) -> keras.Model:
    """Input(batch_shape=(batch, window, features)) -> stateful RNN layer(s) -> Dense logits.

    A symbol is one float feature (the tutorial's scalar input) or `num_classes` of them
    (one-hot). The batch size is fixed because a stateful layer keeps one state row per
    sample. A large model's recurrent layers run unrolled (see UNROLL_MAX_STEPS).
    """
    with keras_building():  # (its layers draw their seeds from Python's `random`)
        inputs = keras.Input(
            batch_shape=(config.batch_size, config.truncated_backprop_length, config.input_width),
            name="symbols",
        )
        hidden = inputs
        recurrent = RECURRENT_LAYERS[config.cell]
        for index in range(config.num_layers):
            hidden = recurrent(
                config.state_size,
                stateful=True,
                return_sequences=True,
                dropout=config.dropout,
                name=f"{config.cell}_{index}",
            )(hidden)
        logits = layers.Dense(config.num_classes, name="logits")(hidden)
        model = keras.Model(inputs, logits, name="echo")
        large = window_work(model) > LARGE_WINDOW_WORK and inputs.shape[1] <= UNROLL_MAX_STEPS
        if large and not tf.config.list_physical_devices("GPU"):  # else cuDNN's
            for layer in stateful_layers(model):
                layer.unroll = True  # read when the layer runs, and saved with its config
        return model


def build_seeded(config: TrainConfig) -> keras.Model:
    """`build_model(config)` with the weights (and dropout seeds) `config.seed` draws, as
    `keras.utils.set_random_seed(config.seed)` makes them (`keras_building`: one build at a
    time), leaving the caller's random state as it was: Python's `random`, numpy's global
    generator, and TensorFlow's global seed set back to its value (its draws restart)."""
    with keras_building(), _numpy_and_tensorflow_kept(config.seed):
        keras.utils.set_random_seed(config.seed)
        return build_model(config)


@contextlib.contextmanager
def _numpy_and_tensorflow_kept(seed: int):
    from tensorflow.python.eager import context  # where TensorFlow keeps its global seed

    kept = np.random.get_state(), context.global_seed()
    try:
        yield
    finally:
        np.random.set_state(kept[0])
        if kept[1] != seed:  # setting it again would restart its draws
            tf.random.set_seed(kept[1])


def window_work(model: keras.Model) -> int:
    """About the multiply-adds of one window through `model`: batch x window x weights."""
    batch, window = model.inputs[0].shape[0], model.inputs[0].shape[1]
    return batch * window * model.count_params()


# Weights of a recurrent layer of u units on d inputs: per gate a kernel, a recurrent kernel
# and a bias (Keras's GRU keeps two biases a gate: its reset gate acts after the product).
GATES = {"lstm": (4, 1), "gru": (3, 2), "simple": (1, 1)}  # gates, biases per gate


def planned_window_work(config: TrainConfig) -> int:
    """`window_work` of the model `build_model(config)` builds, known before it is built."""
    gates, biases = GATES[config.cell]
    units, inputs, weights = config.state_size, config.input_width, 0
    for _ in range(config.num_layers):
        weights += gates * units * (inputs + units + biases)
        inputs = units
    weights += (units + 1) * config.num_classes  # the Dense head
    return config.batch_size * config.truncated_backprop_length * weights


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "adagrad":
        # TF1's AdagradOptimizer started its accumulators at 0.1; the tutorial used it.
        return keras.optimizers.Adagrad(config.learning_rate, initial_accumulator_value=0.1)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(config.learning_rate)
    return keras.optimizers.SGD(config.learning_rate)


def loss_function() -> keras.losses.Loss:
    """Mean cross-entropy of the softmax over classes, at every step (the tutorial's loss)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable(package="echo_keras")
class BatchLoss(keras.metrics.Metric):
    """The loss of the latest batch alone, and its logits.

    Keras hands callbacks the epoch's running mean as `logs["loss"]`; this metric
    reports the loss of that very batch as `logs["batch_loss"]`, and keeps the
    batch's logits for the live plot and `last_batch.npz`.

    Args:
        batch_shape: (batch_size, window, num_classes) of the model's output.
    """

    def __init__(self, batch_shape, name="batch_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.batch_shape = tuple(batch_shape)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")
        self.logits = self.add_variable(shape=self.batch_shape, initializer="zeros", name="logits")

    def update_state(self, y_true, y_pred, sample_weight=None):
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        self.value.assign(ops.mean(loss))
        self.logits.assign(ops.cast(y_pred, self.logits.dtype))

    def result(self):
        return self.value

    def get_config(self):
        return {"name": self.name, "batch_shape": self.batch_shape}


def compile_model(model: keras.Model, config: TrainConfig, jit_compile="auto") -> keras.Model:
    batch_shape = (config.batch_size, config.truncated_backprop_length, config.num_classes)
    model.compile(
        optimizer=make_optimizer(config),
        loss=loss_function(),
        metrics=[BatchLoss(batch_shape)],
        jit_compile=jit_compile,
    )
    return model


def batch_loss_metric(model: keras.Model) -> BatchLoss:
    for metric in model.metrics:
        for inner in [metric, *getattr(metric, "metrics", [])]:
            if isinstance(inner, BatchLoss):
                return inner
    raise LookupError("the model was not compiled with BatchLoss")


def stateful_layers(model: keras.Model) -> list:
    """The stateful layers of `model`, in order, those of models nested in it included."""
    found = []
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += stateful_layers(layer)
    return found


def state_variables(model: keras.Model) -> list:
    """Every carried state variable (an LSTM layer has two: hidden and cell)."""
    return [v for layer in stateful_layers(model) for v in layer.states]


def reset_states(model: keras.Model) -> None:
    """Zero the state of every stateful layer (keras.Model has no reset_state of its own)."""
    for layer in stateful_layers(model):
        layer.reset_state()


def load_model(path, config: TrainConfig | None = None, name=None) -> keras.Model:
    """Load a saved model for inference; RunFolderError naming the file if missing or damaged.

    With `config`, the model must be the one config.json describes (batch, window,
    cell, layers, units, classes); if not, config.json is called damaged. `name`
    is how the file is named in messages (default `path`).
    """
    shown = name or path
    if not path.exists() and not path.is_symlink():
        raise RunFolderError(f"{shown} is missing")
    if path.is_symlink() or not path.is_file():
        raise RunFolderError(f"{shown} is damaged: it is not a regular file")
    try:
        # Keras calls a file that is not a zip archive "not found"; say what it is. (Not
        # zipfile.is_zipfile, which would call an I/O error that too.)
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile:
            raise RunFolderError(
                f"{shown} is damaged: it is not a .keras archive (a zip file)"
            ) from None
        with keras_building():
            model = keras.models.load_model(path, compile=False)
    except RunFolderError:
        raise
    except Exception as error:  # Keras raises many types for a damaged archive
        reason = first_line(error) or type(error).__name__
        reason = reason.replace(str(path), str(shown))  # not the handle it was read through
        raise RunFolderError(f"{shown} is damaged: {reason[:200]}") from None
    if config is not None:
        mismatch = _mismatch(model, config)
        if mismatch:
            raise RunFolderError(
                f"{Path(shown).parent / 'config.json'} is damaged: it does not match "
                f"{Path(shown).name} ({mismatch})"
            )
    return model


def _mismatch(model: keras.Model, config: TrainConfig) -> str | None:
    """What of `config` the model disagrees with, or None."""
    expected_input = (config.batch_size, config.truncated_backprop_length, config.input_width)
    actual_input = tuple(model.inputs[0].shape) if model.inputs else None
    if actual_input != expected_input:
        return (
            "batch_size x truncated_backprop_length x input width is "
            f"{expected_input}, model {actual_input}"
        )
    recurrent = [
        layer for layer in model.layers if isinstance(layer, tuple(RECURRENT_LAYERS.values()))
    ]
    kinds = [
        name
        for layer in recurrent
        for name, kind in RECURRENT_LAYERS.items()
        if type(layer) is kind
    ]
    if kinds != [config.cell] * config.num_layers:
        return f"cell x num_layers is {config.cell} x {config.num_layers}, model {kinds}"
    units = {layer.units for layer in recurrent}
    if units != {config.state_size}:
        return f"state_size is {config.state_size}, model {sorted(units)}"
    if model.output_shape[-1] != config.num_classes:
        return f"num_classes is {config.num_classes}, model {model.output_shape[-1]}"
    return None


def load_run(run_dir: Path, checkpoint: bool = False) -> tuple[TrainConfig, keras.Model]:
    """(config, trained model) of a run, both read from one version of the folder.

    With `checkpoint`, a run not complete (interrupted, failed, still training) that has a
    checkpoint gives the model of its last completed epoch, even beside a model.keras (that
    of the training a resume went on from).
    RunFolderError names the file when either is missing, damaged, or they disagree.
    """
    config, model, _ = load_run_and_vocabulary(run_dir, checkpoint)
    return config, model


def load_run_and_vocabulary(run_dir: Path, checkpoint: bool = False):
    """(config, trained model, (vocabulary, data digests) or None for an echo run), all read
    from one version of the folder, so a run replaced meanwhile (`--overwrite`) can never
    pair one run's model with another's vocabulary. As `load_run` otherwise."""
    folder = RunFolder(run_dir)

    def read(view: Path):
        config = files.load_config(view, folder.path)
        vocabulary = None
        if config.data is not None:
            vocabulary = files.read_vocabulary(view, folder.path, config)
        path = view / files.MODEL
        status = folder.status()
        # A run not complete (a resume too, whose model.keras is from before it) is newest
        # in its checkpoint, written after every epoch.
        if status["status"] != "complete" and checkpoint and arrays.has_checkpoint(view):
            return config, _checkpoint_model(view, config, folder.path), vocabulary
        if not path.exists():
            if status["status"] != "complete":
                raise RunFolderError(
                    f"{folder.path / files.MODEL} is missing: the run is {status['status']}, "
                    "and a model is saved only once training completes "
                    + _way_forward(view, status["status"])
                )
        return config, load_model(path, config, folder.path / files.MODEL), vocabulary

    return folder.read(read)


def check_same_run(run_dir: Path, read: tuple, loaded: tuple) -> None:
    """RunFolderError unless what was `loaded` with the model, (config, vocabulary), is what
    was `read` from the run before it: a run replaced in between (`--overwrite`) is never
    used half old, half new. A resume, which rewrites config.json's `num_epochs` in place,
    is no replacement."""

    def settings(values: tuple) -> tuple:
        return tuple(
            dataclasses.replace(value, num_epochs=1) if isinstance(value, TrainConfig) else value
            for value in values
        )

    if settings(read) != settings(loaded):
        raise RunFolderError(
            f"the run in {run_dir} was replaced while it was read (trained again with "
            "overwrite); run this again"
        )


def _checkpoint_model(run_dir: Path, config: TrainConfig, name: Path) -> keras.Model:
    """The model of a run's last checkpoint (its weights only)."""
    model = build_model(config)
    _, weights, _, _ = arrays.read_checkpoint(run_dir, None, name)
    if [w.shape for w in weights] != [tuple(v.shape) for v in model.weights]:
        raise RunFolderError(
            f"{name / files.CHECKPOINT / files.CHECKPOINT_STATE} is damaged: its weights do "
            "not fit the model config.json describes"
        )
    for variable, value in zip(model.weights, weights, strict=True):
        variable.assign(value)
    return model


def _way_forward(run_dir: Path, status: str) -> str:
    """How an unfinished run gets its model: wait for it, resume it, or (no epoch kept)
    train it again."""
    if status == "running":
        return "(it is training now: wait for it to finish)"
    if arrays.has_checkpoint(run_dir):
        return "(resume it with `resume=True`)"
    return "(no epoch was completed, so there is nothing to resume: train it again)"


def checkpoint_variables(model: keras.Model) -> tuple[list, list, list]:
    """The variables a checkpoint holds: the model's weights, its optimizer's, and the state
    of its random generators (dropout's: without it, a resumed run would draw its first
    epoch's dropout masks again)."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    random = [variable for variable in model.variables if variable.path.endswith(SEED_STATE)]
    return list(model.weights), list(model.optimizer.variables), random


def save_checkpoint(run_dir: Path, model: keras.Model, epochs_completed: int) -> None:
    """Write the checkpoint of `model` (weights, optimizer, random generators) after
    `epochs_completed`."""
    groups = [[v.numpy() for v in group] for group in checkpoint_variables(model)]
    arrays.write_checkpoint(run_dir, *groups[:2], epochs_completed, random=groups[2])


def restore_checkpoint(run_dir: Path, model: keras.Model, name: Path | None = None) -> int:
    """Load the run's checkpoint into a compiled model built from its config; return the
    epochs it completed. RunFolderError (naming the file as `name`) if missing or damaged."""
    variables = checkpoint_variables(model)
    shapes = arrays.checkpoint_shapes(*variables)
    completed, *values = arrays.read_checkpoint(run_dir, shapes, name)
    if not values[2]:  # kept no random state (written before they were): as built
        variables, values = variables[:2], values[:2]
    for own, saved in zip(variables, values, strict=True):
        for variable, value in zip(own, saved, strict=True):
            variable.assign(value)
    return completed
