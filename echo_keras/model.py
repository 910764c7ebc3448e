"""The stateful recurrent model, its optimizer, and helpers for its carried state.

Importing this module imports Keras (and TensorFlow): keep it out of fast paths.
"""

from __future__ import annotations

from pathlib import Path

from echo_keras.backend import keras
from echo_keras.config import TrainConfig

layers, ops = keras.layers, keras.ops

RECURRENT_LAYERS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple": layers.SimpleRNN}


def build_model(config: TrainConfig) -> keras.Model:
    """Input(batch_shape=(batch, window, 1)) -> stateful RNN layer(s) -> Dense(num_classes) logits.

    The batch size is fixed because a stateful layer keeps one state row per sample.
    """
    inputs = keras.Input(
        batch_shape=(config.batch_size, config.truncated_backprop_length, 1), name="symbols"
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
    return keras.Model(inputs, logits, name="echo")


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
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


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
    from echo_keras.rundir import RunFolderError

    shown = name or path
    if not path.exists() and not path.is_symlink():
        raise RunFolderError(f"{shown} is missing")
    if path.is_symlink() or not path.is_file():
        raise RunFolderError(f"{shown} is damaged: it is not a regular file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
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
    expected_input = (config.batch_size, config.truncated_backprop_length, 1)
    actual_input = tuple(model.inputs[0].shape) if model.inputs else None
    if actual_input != expected_input:
        return (
            f"batch_size x truncated_backprop_length is {expected_input[:2]}, model {actual_input}"
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


def checkpoint_variables(model: keras.Model) -> tuple[list, list]:
    """The variables a checkpoint holds: the model's weights and its optimizer's."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.weights), list(model.optimizer.variables)


def checkpoint_state(model: keras.Model) -> tuple[list, list]:
    """The arrays that let training continue: model weights and optimizer variables."""
    return (
        [v.numpy() for v in model.weights],
        [v.numpy() for v in model.optimizer.variables],
    )


def restore_checkpoint_state(model: keras.Model, weights: list, optimizer_variables: list) -> None:
    """Load `checkpoint_state` arrays into a compiled model built from the same config.

    Raises ValueError when the arrays do not fit the model.
    """
    for variables, values in zip(
        checkpoint_variables(model), (weights, optimizer_variables), strict=True
    ):
        if len(variables) != len(values):
            raise ValueError(f"it holds {len(values)} arrays where the model has {len(variables)}")
        for variable, value in zip(variables, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{variable.path} has shape {tuple(variable.shape)}, not {value.shape}"
                )
            variable.assign(value)
