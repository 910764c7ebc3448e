"""Resuming a run: what the run folder holds of its completed epochs, checked against the
configuration and the data before anything is written, so that a refused resume leaves the
run as it was. `training` owns the life cycle; this module reads what it continues from.
"""

from __future__ import annotations

import dataclasses
import os

from echo_keras import model as model_lib
from echo_keras.backend import keras
from echo_keras.callbacks import ValidateEachEpoch
from echo_keras.config import TrainConfig, changed_fields
from echo_keras.corpus import Corpus, file_digest
from echo_keras.errors import RunFolderError, RunRefused, UsageError, listed
from echo_keras.fitting import build_compiled_model
from echo_keras.run import files
from echo_keras.run.folder import RunFolder


def same_data(config: TrainConfig, folder: RunFolder):
    """The vocabulary of the run to resume; UsageError if its data files changed since."""
    saved = files.load_config(folder.real, folder.path)
    vocabulary, digests = files.read_vocabulary(folder.real, folder.path, saved)
    for name in ("data", "validation_data"):
        path = getattr(config, name)
        if path is not None and not os.path.lexists(path):  # moved: say where it must be
            raise UsageError(
                f"`{name}` {path}, which the run in {folder.path} was trained on, is gone; "
                "a resume reads it where it was: put it back there"
            )
        if path is not None and digests.get(name) != file_digest(path, name):
            raise UsageError(
                f"`{name}` {path} is not the file the run in {folder.path} was trained on "
                "(its contents changed)"
            )
    return vocabulary


def validation(corpus: Corpus | None, folder: RunFolder | None, first_epoch: int) -> list:
    """The callback that scores the validation windows after every epoch, if there are any
    (with the rows of the epochs already completed, when resuming the run in `folder`).
    Called before anything is written: a resume refused here leaves the run as it was."""
    if corpus is None or corpus.validation is None:
        return []
    rows = files.read_validation(folder.real)[:first_epoch] if folder is not None else []
    if [row["epoch"] for row in rows] != list(range(first_epoch)):  # each before its
        name = folder.path / files.VALIDATION  # checkpoint: a row short is damage
        raise RunFolderError(f"{name} is damaged: a row of a completed epoch is missing")
    return [ValidateEachEpoch(corpus.validation, rows)]


def load(config: TrainConfig, folder: RunFolder, model: keras.Model | None = None):
    """(completed epochs, their history rows, the model with its optimizer) of a run to resume:
    `model` (a compiled model of the run's shape, as built afresh) or a new one, restored.

    history.csv may hold rows beyond the checkpoint (a failure between the two
    writes, or a torn last line): they are dropped, so the run continues from
    exactly the checkpoint.
    """
    run_dir, name = folder.real, folder.path
    saved = files.load_config(run_dir, name)
    if config != dataclasses.replace(saved, num_epochs=config.num_epochs):
        raise UsageError(
            f"`resume=True` continues the run in {name} with its own settings; only "
            f"`num_epochs` may change ({_differences(saved, config)})"
        )
    model = build_compiled_model(config) if model is None else model
    completed = model_lib.restore_checkpoint(run_dir, model, name)
    if completed > config.num_epochs:
        raise RunRefused(
            f"{name} already completed {completed} epochs; `num_epochs` {config.num_epochs} "
            "would end it before that"
        )
    if completed == config.num_epochs and folder.status()["status"] == "complete":
        raise RunRefused(
            f"{name} already completed {completed} of {config.num_epochs} epochs; "
            "pass a larger `num_epochs` to train further"
        )
    expected = completed * config.num_batches
    rows = []
    for row in files.iter_history(run_dir, name):
        if len(rows) == expected:
            break
        rows.append(row)
    if len(rows) != expected:
        raise RunFolderError(
            f"{name / files.HISTORY} is damaged: it has {len(rows)} rows for "
            f"{completed} completed epochs, expected {expected}"
        )
    # Rows beyond the checkpoint (a failure between the two writes, a torn line) go.
    files.write_history(run_dir, files.history_lines(rows))
    return completed, rows, model


def _differences(saved: TrainConfig, config: TrainConfig) -> str:
    """The run's own settings that `config` changes, for a message (three at most)."""
    names = [name for name in changed_fields(saved, config) if name != "num_epochs"]
    shown = [f"`{n}` {getattr(saved, n)!r:.40}, not {getattr(config, n)!r:.40}" for n in names]
    return "the run's " + listed(shown, "; ")
