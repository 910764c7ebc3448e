"""The one table of settings: config field, command-line flag, help text, and its role in a sweep.

`train` declares its options from this table, `sweep` its grid axes and shared settings,
and the command line words a library error about a field (`ConfigError.field`) with the
field's flag. The settings a new run refuses (`new_run_problem`) are checked here for the
library and the command line alike. Nothing here imports anything heavy.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from echo_keras.config import TrainConfig
from echo_keras.paths import inside

AXIS, SETTING = "axis", "setting"  # a sweep's grid dimension, or one value for every point


@dataclass(frozen=True)
class Option:
    field: str  # the TrainConfig field (or the argument) it sets
    flag: str  # how the command line spells it
    help: str  # one line, without the default
    sweep: str | None = None  # AXIS, SETTING, or None: not a sweep option
    default: str | None = None  # the default as help shows it (None: the config's own)
    metavar: str | None = None  # the placeholder help shows (None: the type's)

    def help_text(self) -> str:
        """The help line with its default, as `train --help` shows it."""
        default = self.default if self.default is not None else getattr(TrainConfig, self.field)
        return f"{self.help}  [default: {default}]"


OPTIONS = {
    option.field: option
    for option in (
        Option("num_epochs", "--epochs", "Epochs, each on a fresh series.", SETTING),
        Option(
            "total_series_length",
            "--series-length",
            "Symbols per epoch (total_series_length).",
            SETTING,
        ),
        # The sweep's axes in the order of its grid (and of results.csv's rows).
        Option("echo_step", "--echo-step", "Delay of the echo.", AXIS),
        Option(
            "truncated_backprop_length",
            "--window",
            "Steps per window (truncated_backprop_length).",
            AXIS,
        ),
        Option("state_size", "--state-size", "Units per recurrent layer.", AXIS),
        Option("cell", "--cell", "Recurrent cell: lstm, gru or simple.", AXIS),
        Option(
            "batch_size",
            "--batch-size",
            "Rows the series is cut into; fixed in the model.",
            SETTING,
        ),
        Option("num_classes", "--num-classes", "Symbols of the alphabet."),
        Option(
            "learning_rate",
            "--learning-rate",
            "Learning rate.",
            SETTING,
            default="0.3 for adagrad; adam, rmsprop 0.01; sgd 0.5",
        ),
        Option("seed", "--seed", "Seed of data and weights."),
        Option("num_layers", "--layers", "Stacked recurrent layers.", SETTING),
        Option("dropout", "--dropout", "Dropout on the recurrent layers' inputs, training only."),
        Option("optimizer", "--optimizer", "adagrad, adam, rmsprop or sgd.", SETTING),
        # A user's own sequence (train only).
        Option(
            "data",
            "--data",
            "Train on this file's symbols instead of the echo series.",
            default="the echo series",
            metavar="<file>",
        ),
        Option(
            "data_format",
            "--data-format",
            "text (UTF-8, a symbol a character) or ints (integers 0..K-1).",
        ),
        Option(
            "task",
            "--task",
            "echo (the echo of each symbol) or next (predict the next symbol).",
            default="next with --data, else echo",
        ),
        Option(
            "input_encoding",
            "--input",
            "How a symbol is fed: scalar (one float, the tutorial's) or onehot.",
            default="onehot with --data or --num-classes above 2, else scalar",
        ),
        Option(
            "documents",
            "--documents",
            "Blank lines separate documents; each starts from a zeroed state.",
            default="off",
        ),
        Option(
            "validation_data",
            "--validation",
            "Validate on this file after every epoch (state carried).",
            default="the end of --data",
            metavar="<file>",
        ),
        Option(
            "validation_fraction",
            "--validation-fraction",
            "Share of --data held out from its end for validation (0: none).",
        ),
    )
}

# Names that are not config fields but reach messages: arguments of the library's functions.
EXTRA_FLAGS = {
    "run_dir": "--run-dir",
    "series_length": "--series-length",
    "out": "--out",
    "seeds": "--seeds",
    "temperature": "--temperature",
    "tensorboard_dir": "--tensorboard",
    "overwrite=True": "--overwrite",
    "resume=True": "--resume",
    "plain=True": "--plain",
    "keep_runs=True": "--keep-runs",
}

AXES = tuple(name for name, option in OPTIONS.items() if option.sweep == AXIS)
SETTINGS = tuple(name for name, option in OPTIONS.items() if option.sweep == SETTING)


def flag(field: str) -> str:
    """The flag that sets `field` (the field itself when no flag does)."""
    if field in OPTIONS:
        return OPTIONS[field].flag
    return EXTRA_FLAGS.get(field, field)


# How the library says that a run or a sweep can go on; the command line names the command.
RESUME_HINT = "resume with `resume=True`"


def as_flags(message: str, resume: str | None = None) -> str:
    """A library message worded for the command line: each `field` it quotes becomes its
    flag, and RESUME_HINT names `resume`, the command that resumes, when the caller knows it."""
    if resume:
        message = message.replace(RESUME_HINT, f"resume with {resume}")
    return re.sub(r"`([^`]+)`", lambda m: _quoted_flag(m.group(1)), message)


def _quoted_flag(name: str) -> str:
    known = name in OPTIONS or name in EXTRA_FLAGS
    return flag(name) if known else f"`{name}`"


# Settings a new run would leave unused: (field, whether unused given the config, why).
UNUSED = (
    # A config completed from its data (`data_windows`) has its vocabulary's `num_classes`.
    ("num_classes", lambda c: c.data is not None and not c.data_windows, "is set by `data`"),
    ("total_series_length", lambda c: c.data is not None and not c.data_windows,
     "is set by `data`: an epoch is the whole file"),
    ("data_format", lambda c: c.data is None, "has no use without `data`: no file is read"),
    ("validation_fraction", lambda c: c.data is None, "has no use without `data`"),
    ("validation_fraction", lambda c: c.validation_data is not None, "has no use with "
     "`validation_data`: that file validates instead"),
    ("echo_step", lambda c: c.task == "next", "has no use with the `next` task"),
)  # fmt: skip
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


PLAIN_DOCUMENTS = "`plain=True` cannot train `documents`: model.fit cannot zero one row"


def new_run_problem(
    config: TrainConfig, run_dir: Path, given: Collection[str] | None = None
) -> tuple[str, str] | None:
    """(field, reason) when a new run of `config` in `run_dir` cannot be trained as asked:
    a setting the others leave unused (`given`: the fields set, as the command line knows
    them; None: those not at their defaults), or a data file inside the run folder (which
    training fills and an overwrite replaces whole). None when all is well."""
    for field, unused, reason in UNUSED:
        chosen = field in given if given is not None else getattr(config, field) != _DEFAULTS[field]
        if chosen and unused(config):
            return field, reason
    problem = config.echo_row_problem()
    if problem:
        return "echo_step", problem
    for field in ("data", "validation_data"):
        path = getattr(config, field)  # (a `run_dir` that is a file is refused as such)
        if path is not None and inside(path, run_dir) and not Path(run_dir).is_file():
            return field, f"{path} is inside the run folder {run_dir}; keep data beside it"
    return None
