"""The one typed configuration of a training run, and its validation.

Field names follow the tutorial ("Using the LSTM API in TensorFlow", part 3) so a
`config.json` reads like its code. Errors name the command-line flag, since that
is what a person typed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

CELLS = ("lstm", "gru", "simple")
OPTIMIZERS = ("adagrad", "adam", "rmsprop", "sgd")

# The tutorial's learning rate for Adagrad; the other optimizers get Keras's usual one.
DEFAULT_LEARNING_RATES = {"adagrad": 0.3, "adam": 0.01, "rmsprop": 0.01, "sgd": 0.5}

# Config field -> the flag that sets it, for error messages.
FLAGS = {
    "num_epochs": "--epochs",
    "total_series_length": "--series-length",
    "truncated_backprop_length": "--window",
    "state_size": "--state-size",
    "num_classes": "--num-classes",
    "echo_step": "--echo-step",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "seed": "--seed",
    "cell": "--cell",
    "num_layers": "--layers",
    "dropout": "--dropout",
    "optimizer": "--optimizer",
}


class ConfigError(ValueError):
    """A setting that cannot work; `field` names the offending config field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{FLAGS.get(field, field)}: {message}")
        self.field = field
        self.flag = FLAGS.get(field, field)
        self.reason = message


@dataclass(frozen=True)
class TrainConfig:
    num_epochs: int = 5  # tutorial: num_epochs = 5 (#100 in its comment)
    total_series_length: int = 50000  # tutorial: total_series_length
    truncated_backprop_length: int = 15  # tutorial: truncated_backprop_length
    state_size: int = 4  # tutorial: state_size (LSTM units)
    num_classes: int = 2  # tutorial: num_classes
    echo_step: int = 3  # tutorial: echo_step
    batch_size: int = 5  # tutorial: batch_size (rows carried in parallel)
    learning_rate: float = 0.3  # tutorial: AdagradOptimizer(0.3)
    seed: int = 0  # ours: the tutorial used numpy's global random state
    cell: str = "lstm"  # tutorial part 3; "simple" is parts 1-2, "gru" an alternative
    num_layers: int = 1  # tutorial part 4 stacks layers
    dropout: float = 0.0  # tutorial part 6 adds dropout
    optimizer: str = "adagrad"  # tutorial: AdagradOptimizer

    @property
    def num_batches(self) -> int:
        """Windows per epoch, as the tutorial computes `num_batches`."""
        return self.total_series_length // self.batch_size // self.truncated_backprop_length

    @property
    def used_length(self) -> int:
        """Symbols of the series that fill whole windows; the rest is dropped."""
        return self.num_batches * self.batch_size * self.truncated_backprop_length

    def validate(self) -> TrainConfig:
        """Raise ConfigError for the first setting that cannot work; return self."""
        for field in (
            "num_epochs",
            "total_series_length",
            "truncated_backprop_length",
            "state_size",
            "batch_size",
            "num_layers",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(field, f"must be an integer, got {value!r}")
            if value <= 0:
                raise ConfigError(field, f"must be positive, got {value}")
        if self.num_classes < 2:
            raise ConfigError("num_classes", f"must be at least 2, got {self.num_classes}")
        if self.echo_step < 0:
            raise ConfigError("echo_step", f"must not be negative, got {self.echo_step}")
        if self.echo_step >= self.total_series_length:
            raise ConfigError(
                "echo_step",
                f"must be shorter than the series ({self.total_series_length}), "
                f"got {self.echo_step}",
            )
        if self.num_batches == 0:
            raise ConfigError(
                "total_series_length",
                f"{self.total_series_length} is too short for one window per row: "
                f"it needs at least --batch-size x --window = "
                f"{self.batch_size * self.truncated_backprop_length}",
            )
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError(
                "learning_rate", f"must be a positive finite number, got {self.learning_rate}"
            )
        if self.cell not in CELLS:
            raise ConfigError("cell", f"must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                "optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.seed < 0:
            raise ConfigError("seed", f"must not be negative, got {self.seed}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a `config.json` mapping; unknown keys (versions, notes) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self, **extra: Any) -> str:
        return json.dumps({**self.to_dict(), **extra}, indent=2) + "\n"
