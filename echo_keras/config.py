"""The one typed configuration of a training run, and its validation.

Field names follow the tutorial ("Using the LSTM API in TensorFlow", part 3) so a
`config.json` reads like its code. Errors (`ConfigError`) name the field; the command
line words it as the flag that sets it (`options.py`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from echo_keras.errors import ConfigError, UsageError
from echo_keras.paths import file_path, kept_path
from echo_keras.values import finite, float32, plain, readable

CELLS = ("lstm", "gru", "simple")
TASKS = ("echo", "next")  # the tutorial's echo, or predicting each symbol's successor
INPUTS = ("scalar", "onehot")  # a symbol fed as one float (the tutorial), or one-hot
DATA_FORMATS = ("text", "ints")
OPTIMIZERS = ("adagrad", "adam", "rmsprop", "sgd")

# The tutorial's learning rate for Adagrad; the other optimizers get Keras's usual one.
DEFAULT_LEARNING_RATES = {"adagrad": 0.3, "adam": 0.01, "rmsprop": 0.01, "sgd": 0.5}

INTEGER_FIELDS = (
    "num_epochs",
    "total_series_length",
    "truncated_backprop_length",
    "state_size",
    "num_classes",
    "echo_step",
    "batch_size",
    "seed",
    "num_layers",
)
NUMBER_FIELDS = ("learning_rate", "dropout", "validation_fraction")
POSITIVE_FIELDS = (
    "num_epochs",
    "total_series_length",
    "truncated_backprop_length",
    "state_size",
    "batch_size",
    "num_layers",
)
MAX_CLASSES = 65536  # symbols travel as float32 and are stored as uint16 at most
MAX_LAYERS = 64  # deeper stacks of recurrent layers are not a thing anyone trains here
MAX_SEED = 2**32 - 1  # numpy's and Keras's global seeds take no more
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32; below it, 0 on CPUs
HISTORY_ROW_BYTES = 150  # one recorded (epoch, batch, step, loss) row kept in memory
LONGEST_SYMBOL = 18  # digits of the longest symbol token read (an int64 holds any of them)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run, under the tutorial's names; the defaults are its own.

    Frozen: `dataclasses.replace(config, num_epochs=10)` makes a changed copy (which keeps
    `config`'s learning rate: to change the optimizer and take its default rate, replace
    `learning_rate=None` too).
    `validate()` raises ConfigError naming the first field that cannot work.

    Example:

    ```python
    config = TrainConfig(echo_step=5, truncated_backprop_length=20).validate()
    config.num_batches  # windows per epoch
    ```
    """

    num_epochs: int = 5  # tutorial: num_epochs = 5 (#100 in its comment)
    total_series_length: int = 50000  # tutorial: total_series_length
    truncated_backprop_length: int = 15  # tutorial: truncated_backprop_length
    state_size: int = 4  # tutorial: state_size (LSTM units)
    num_classes: int = 2  # tutorial: num_classes
    echo_step: int = 3  # tutorial: echo_step
    batch_size: int = 5  # tutorial: batch_size (rows carried in parallel)
    # None: the optimizer's own (DEFAULT_LEARNING_RATES); adagrad's 0.3 is the tutorial's.
    learning_rate: float | None = None  # tutorial: AdagradOptimizer(0.3)
    seed: int = 0  # ours: the tutorial used numpy's global random state
    cell: str = "lstm"  # tutorial part 3; "simple" is parts 1-2, "gru" an alternative
    num_layers: int = 1  # tutorial part 4 stacks layers
    dropout: float = 0.0  # tutorial part 6 adds dropout
    optimizer: str = "adagrad"  # tutorial: AdagradOptimizer
    # Ours: a user's own sequence instead of the tutorial's random one (corpus.py).
    data: str | None = None  # a text (or `data_format` "ints") file; None: the echo series
    data_format: str = "text"
    task: str | None = None  # "echo" or "next"; None: "next" with `data`, else "echo"
    input_encoding: str | None = None  # None: "onehot" with `data` or > 2 classes
    documents: bool = False  # blank lines separate documents, each from a zeroed state
    validation_data: str | None = None  # a file to validate on, else the end of `data`
    validation_fraction: float = 0.1  # of `data`, taken from its end (0: no validation)
    data_windows: int = 0  # windows per epoch of `data`, set once it is read

    def __post_init__(self):
        if self.learning_rate is None and isinstance(self.optimizer, str):  # else validate says
            rate = DEFAULT_LEARNING_RATES.get(self.optimizer)
            object.__setattr__(self, "learning_rate", rate)
        for field in (*INTEGER_FIELDS, *NUMBER_FIELDS):  # numpy scalars as Python's own
            value = getattr(self, field)
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
                object.__setattr__(self, field, plain(value))
        if isinstance(self.documents, np.bool_):  # as numpy's numbers: Python's own
            object.__setattr__(self, "documents", bool(self.documents))
        for field in ("data", "validation_data"):  # kept whole: a resume may run elsewhere
            value = getattr(self, field)
            if isinstance(value, os.PathLike) or (isinstance(value, str) and value):
                object.__setattr__(self, field, kept_path(file_path(value, field)))
        if self.task is None:
            object.__setattr__(self, "task", "next" if self.data is not None else "echo")
        if self.input_encoding is None:
            onehot = self.data is not None or (
                isinstance(self.num_classes, int) and self.num_classes > 2
            )
            object.__setattr__(self, "input_encoding", "onehot" if onehot else "scalar")

    @property
    def num_batches(self) -> int:
        """Windows per epoch, as the tutorial computes `num_batches` (for `data`, its layout's);
        validate()'s ConfigError if a length it is computed from cannot work."""
        if self.data is not None:
            return self.data_windows
        self._check_lengths("total_series_length", "batch_size", "truncated_backprop_length")
        return self.total_series_length // self.batch_size // self.truncated_backprop_length

    def echo_row_problem(self) -> str | None:
        """Why the echo series of this (valid) config leaves no symbol whose echo is in its
        row, or None: a new run, a sweep's point or an evaluation is refused then. Not part
        of `validate`, so that a run saved before the rule still loads."""
        row = self.num_batches * self.truncated_backprop_length
        if self.data is not None or self.echo_step < row:
            return None
        return (
            f"must be shorter than a row of the series ({row} symbols: `total_series_length` "
            f"in `batch_size` rows of whole windows), got {readable(self.echo_step)}: every "
            "echo in a row would be of the row before it"
        )

    @property
    def used_length(self) -> int:
        """Symbols of the series that fill whole windows; the rest is dropped."""
        self._check_lengths("batch_size", "truncated_backprop_length")
        return self.num_batches * self.batch_size * self.truncated_backprop_length

    def _check_lengths(self, *fields: str) -> None:
        """validate()'s ConfigError unless every field is a positive integer, as it wants."""
        values = [getattr(self, field) for field in fields]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            self.validate()  # checks those before it computes anything from them: raises

    def validate(self) -> TrainConfig:
        """Raise ConfigError for the first setting that cannot work; return self.

        Checks types too: a config.json written by hand (or by an enemy) goes through here.
        """
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ConfigError("cell", f"must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                "optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for field in INTEGER_FIELDS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(field, f"must be an integer, got {value!r}")
        for field in ("learning_rate", "dropout"):  # validation_fraction: with the data fields
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(field, f"must be a number, got {value!r}")
        for field in POSITIVE_FIELDS:
            value = getattr(self, field)
            if value <= 0:
                raise ConfigError(field, f"must be positive, got {readable(value)}")
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ConfigError(
                "num_classes", f"must be from 2 to {MAX_CLASSES}, got {readable(self.num_classes)}"
            )
        if self.num_layers > MAX_LAYERS:
            raise ConfigError(
                "num_layers", f"must be at most {MAX_LAYERS}, got {readable(self.num_layers)}"
            )
        if self.echo_step < 0:
            raise ConfigError("echo_step", f"must not be negative, got {readable(self.echo_step)}")
        # A run on its own data: its length is known once it is read (`corpus`), and the
        # next task has no echo step.
        if self.data is None and self.echo_step >= self.total_series_length:
            raise ConfigError(
                "echo_step",
                f"must be shorter than the series ({self.total_series_length}), "
                f"got {readable(self.echo_step)}",
            )
        self._validate_data()
        if self.num_batches == 0 and (self.data is None or self.data_windows):
            raise ConfigError(
                "total_series_length",
                f"{readable(self.total_series_length)} is too short for one window per row: "
                "it needs at least `batch_size` x `truncated_backprop_length` = "
                f"{readable(self.batch_size * self.truncated_backprop_length)}",
            )
        if not finite(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError(
                "learning_rate",
                f"must be a positive finite number, got {readable(self.learning_rate)}",
            )
        as_float32 = float32(self.learning_rate)
        if as_float32 < FLOAT32_TINY or math.isinf(as_float32):
            shown = "inf" if math.isinf(as_float32) else "0"
            raise ConfigError(
                "learning_rate",
                f"{self.learning_rate} is {shown} in float32, the precision the optimizer "
                "computes in (CPU kernels flush numbers below 1.2e-38 to 0)",
            )
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError("dropout", f"must be in [0, 1), got {readable(self.dropout)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", f"must be from 0 to {MAX_SEED}, got {readable(self.seed)}")
        return self

    def _validate_data(self) -> None:
        choices = {
            "task": TASKS,
            "input_encoding": INPUTS,
            "data_format": DATA_FORMATS,
        }
        for field, allowed in choices.items():
            value = getattr(self, field)
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(field, f"must be one of {', '.join(allowed)}, got {value!r}")
        for field in ("data", "validation_data"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(field, f"must be a file name, got {value!r}")
        if not isinstance(self.documents, bool):
            raise ConfigError("documents", f"must be true or false, got {self.documents!r}")
        if self.data is None:
            for field in ("validation_data", "documents"):
                if getattr(self, field):
                    raise ConfigError(field, "needs `data`: the echo series has neither")
            if self.task == "next":
                raise ConfigError("task", "`next` needs `data` (the echo series is random)")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ConfigError("validation_fraction", f"must be a number, got {fraction!r}")
        if not 0 <= fraction < 1:
            raise ConfigError("validation_fraction", f"must be in [0, 1), got {fraction}")
        windows = self.data_windows
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 0:
            raise ConfigError("data_windows", f"must be a whole number, got {windows!r}")

    @property
    def input_width(self) -> int:
        """Features per step the model takes: 1 (a symbol as a float) or one per class."""
        return self.num_classes if self.input_encoding == "onehot" else 1

    @property
    def echo_outside_window(self) -> bool:
        """The echo task, with no window holding both a symbol and its echo: truncated
        backprop cannot learn it."""
        return self.task == "echo" and self.echo_step >= self.truncated_backprop_length

    def memory_estimate(self) -> dict[str, int]:
        """Bytes the training process needs, estimated from the settings alone.

        `data`: one epoch's series, its windows and their TensorFlow copies (about six
        bytes per symbol for up to 256 classes). `history`: the loss of every batch of
        the run, kept for history.csv. `model`: weights, gradients and optimizer slots,
        plus one window's activations kept for backprop. Rough on purpose: it only
        has to tell a run that fits from one that cannot. ConfigError: settings that
        `validate` refuses.
        """
        self.validate()  # ConfigError for settings no estimate can be made of
        symbol_bytes = 1 if self.num_classes <= 256 else 2
        data = 6 * self.total_series_length * symbol_bytes
        history = HISTORY_ROW_BYTES * self.num_epochs * self.num_batches
        gates = {"lstm": 4, "gru": 3, "simple": 1}[self.cell]
        units, params, inputs = self.state_size, 0, self.input_width
        for _ in range(self.num_layers):
            params += gates * (inputs + units + 2) * units
            inputs = units
        params += (units + 1) * self.num_classes
        slots = {"adagrad": 1, "adam": 2, "rmsprop": 1, "sgd": 0}.get(self.optimizer, 2)
        steps = self.batch_size * self.truncated_backprop_length
        activations = steps * (self.num_layers * units * (gates + 2) + 3 * self.num_classes)
        model = 4 * (params * (2 + slots) + 2 * activations)
        return {"data": data, "history": history, "model": model}

    def to_dict(self) -> dict[str, Any]:
        """Every field, except those of a user's own data that keep their defaults: the
        tutorial's config.json reads as it always has."""
        values = dataclasses.asdict(self)
        for name in DATA_FIELDS:
            if values[name] == DATA_DEFAULTS[name]:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a `config.json` mapping; unknown keys (versions, notes) are ignored.

        A field of a user's own data that is missing keeps its default: the echo task,
        a scalar input (every run written before those fields existed)."""
        if not isinstance(data, Mapping):
            raise UsageError(f"a config must be a mapping of fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in data.items() if k in names}
        if given.get("learning_rate", 0) is None:  # a file says what it trained with
            raise ConfigError("learning_rate", "must be a number, got None")
        return cls(**{**DATA_DEFAULTS, **given})

    def to_json(self, **extra: Any) -> str:
        return json.dumps({**self.to_dict(), **extra}, indent=2) + "\n"


DATA_FIELDS = (
    "data",
    "data_format",
    "task",
    "input_encoding",
    "documents",
    "validation_data",
    "validation_fraction",
    "data_windows",
)
# What config.json leaves out, and a missing field means (the tutorial's own settings).
DATA_DEFAULTS = {
    **{name: getattr(TrainConfig, name) for name in DATA_FIELDS},
    "task": "echo",
    "input_encoding": "scalar",
}


# What a compiled model and its loops do not depend on (see `shape_key`).
UNCOMPILED = ("echo_step", "seed", "num_epochs")


def shape_key(config: TrainConfig) -> tuple:
    """What a compiled model and its loops depend on: every setting but UNCOMPILED. Runs of
    one key can share one compiled model (`warm`, the sweep's `point.PointTrainer`)."""
    return tuple(
        (name, value) for name, value in config.to_dict().items() if name not in UNCOMPILED
    )


def with_default_rate(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with the optimizer's default learning rate, unless one is given (a sweep
    records every setting it trains with)."""
    if "learning_rate" in settings:  # a null one stays, and is refused as damage
        return settings
    optimizer = settings.get("optimizer", TrainConfig.optimizer)
    rate = DEFAULT_LEARNING_RATES.get(optimizer, DEFAULT_LEARNING_RATES["adagrad"])
    return {**settings, "learning_rate": rate}


def new_config(given: dict[str, Any]) -> TrainConfig:
    """The config of the settings given (field -> value), checked; the rest are defaults,
    the learning rate that of the optimizer."""
    return TrainConfig(**given).validate()


def resumed_config(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """A saved run's config with the settings given to resume it: only `num_epochs` may change.

    UsageError names the fields that would change anything else; ConfigError a bad value.
    """
    changed = [name for name, value in given.items() if value != getattr(saved, name)]
    changed = [name for name in changed if name != "num_epochs"]
    if changed:
        fields = ", ".join(f"`{name}`" for name in changed)
        raise UsageError(
            "`resume=True` continues with the run's own settings; "
            f"only `num_epochs` may change (drop {fields})"
        )
    epochs = {"num_epochs": given["num_epochs"]} if "num_epochs" in given else {}
    return dataclasses.replace(saved, **epochs).validate()


def changed_fields(old: TrainConfig, new: TrainConfig) -> list[str]:
    """The names of the fields whose values differ, in the config's order."""
    fields = dataclasses.fields(TrainConfig)
    return [f.name for f in fields if getattr(old, f.name) != getattr(new, f.name)]
