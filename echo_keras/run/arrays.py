"""The run folder's array files, last_batch.npz and checkpoint/state.npz: written whole
(`fileio.savez`), read as untrusted (`fileio.read_npz` sees each array's header before
anything large is read; names, shapes and types are checked against the config or the
model). Their names and the rest of the folder's layout are `files`'. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from echo_keras.config import TrainConfig
from echo_keras.errors import RunFolderError, listed
from echo_keras.run import fileio
from echo_keras.run.files import CHECKPOINT, CHECKPOINT_STATE, LAST_BATCH, MODEL

RANDOM = "random_"  # the checkpoint's arrays of the model's random generators' states
GROUPS = ("weight_", "optimizer_", RANDOM)  # the prefixes of its names, in order

# --- npz files, read as untrusted ----------------------------------------------------------


def _read_arrays(
    path: Path, shown: Path, check, required, missing: str = "is missing", only=None
) -> dict[str, np.ndarray]:
    """The arrays of an npz file read as untrusted (`check` sees each header first), holding
    every `required` name; RunFolderError `shown + missing` or `shown is damaged: ...`.
    `only`: as `fileio.read_npz`'s."""
    try:
        arrays = fileio.read_npz(path, check, only)
        absent = sorted(set(required) - set(arrays))
        if absent:
            raise ValueError(f"it has no {listed(absent)}")
        return arrays
    except FileNotFoundError:
        raise RunFolderError(f"{shown} {missing}") from None
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None


# --- last_batch.npz -----------------------------------------------------------------------


def write_last_batch(run_dir: Path, inputs, targets, probabilities) -> None:
    arrays = {"inputs": inputs, "targets": targets, "probabilities": probabilities}
    fileio.savez(Path(run_dir) / LAST_BATCH, arrays)


def read_last_batch(
    run_dir: Path, config: TrainConfig, name: Path | None = None
) -> dict[str, np.ndarray]:
    """inputs, targets (batch, window) and probabilities (batch, window, classes) of the config."""
    path, shown = Path(run_dir) / LAST_BATCH, Path(name or run_dir) / LAST_BATCH
    rows = (config.batch_size, config.truncated_backprop_length)
    shapes = {"inputs": rows, "targets": rows, "probabilities": (*rows, config.num_classes)}

    def check(key, shape, dtype):
        if key not in shapes:
            raise ValueError(f"unexpected array {key!r}")
        if shape != shapes[key] or dtype.kind not in "uif":
            raise ValueError(f"{key} is {dtype}{list(shape)}; config.json says {list(shapes[key])}")

    return _read_arrays(path, shown, check, shapes)


# --- checkpoint/ --------------------------------------------------------------------------


def write_checkpoint(
    run_dir: Path, weights, optimizer_variables, epochs_completed: int, random=()
) -> None:
    """Keep the model's weights, the optimizer's state, the state of the model's random
    generators (`random`: dropout's) and the epoch count in one file.

    A single npz of arrays takes about a millisecond, against tens for a `.keras`
    archive, which matters at one checkpoint per epoch. history.csv is appended
    before the checkpoint is written, so it always holds at least the rows of
    `epochs_completed` epochs; resume drops any beyond.
    """
    folder = Path(run_dir) / CHECKPOINT
    folder.mkdir(exist_ok=True)
    groups = (weights, optimizer_variables, random)
    arrays = {key: np.asarray(value) for key, value in _named(groups)}
    arrays["epochs_completed"] = np.asarray(epochs_completed)
    fileio.savez(folder / CHECKPOINT_STATE, arrays)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE).is_file()


def read_checkpoint(
    run_dir: Path, shapes: dict[str, tuple] | None = None, name: Path | None = None
) -> tuple[int, list, list, list]:
    """(epochs_completed, weights, optimizer variables, random generators' states);
    RunFolderError if missing or damaged.

    `shapes` maps each array name to the shape the model expects (`checkpoint_shapes`);
    without it any shapes are accepted. A checkpoint that keeps no random generator's state
    (written before they were kept) gives [] for them: the model's stay as built.
    """
    path = Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE
    shown = Path(name or run_dir) / CHECKPOINT / CHECKPOINT_STATE
    expected = {"epochs_completed": (), **(shapes or {})}

    def check(key, shape, dtype):
        if shapes is not None and key not in expected:
            raise ValueError(f"it holds {key}, which the model does not have")
        if key in expected and shape != tuple(expected[key]):
            raise ValueError(f"{key} has shape {shape}, the model needs {tuple(expected[key])}")
        kinds, wanted = ("iu", "integers") if key.startswith(RANDOM) else ("iuf", "numbers")
        if dtype.kind not in kinds:
            raise ValueError(f"{key} holds {dtype}, not {wanted}")

    missing = (
        "is missing: no epoch of this run was completed, so there is nothing to resume; "
        "train it again without `resume=True`"
    )
    if (Path(run_dir) / MODEL).is_file():  # saved after the last checkpoint: one was removed
        missing = (
            "is missing, yet the run has its model: the run folder is damaged; "
            "train it again with `overwrite=True`"
        )
    required = [key for key in expected if not key.startswith(RANDOM)]
    data = _read_arrays(path, shown, check, required, missing)
    random = [data[k] for k in sorted(data) if k.startswith(RANDOM)]
    if random and shapes is not None and len(random) != len(expected) - len(required):
        raise RunFolderError(f"{shown} is damaged: it has only some of the random states")
    epochs = _epochs(data, shown)
    weights, optimizer = ([data[k] for k in sorted(data) if k.startswith(p)] for p in GROUPS[:2])
    return epochs, weights, optimizer, random


def checkpoint_epochs(run_dir: Path, name: Path | None = None) -> int:
    """`read_checkpoint`'s epochs_completed alone, its other arrays left unread."""
    path = Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE
    shown = Path(name or run_dir) / CHECKPOINT / CHECKPOINT_STATE

    def check(key, shape, dtype):
        if shape != () or dtype.kind not in "iuf":
            raise ValueError(f"{key} is {dtype}{list(shape)}, not one number")

    data = _read_arrays(path, shown, check, ["epochs_completed"], only={"epochs_completed"})
    return _epochs(data, shown)


def _epochs(data: dict, shown: Path) -> int:
    try:
        epochs = int(data["epochs_completed"])  # its shape, (), was checked
    except (ValueError, TypeError, OverflowError) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None
    if epochs < 1:
        raise RunFolderError(f"{shown} is damaged: epochs_completed is {epochs}")
    return epochs


def checkpoint_shapes(weights, optimizer_variables, random=()) -> dict[str, tuple]:
    """The array names and shapes `write_checkpoint` gives these variables."""
    groups = (weights, optimizer_variables, random)
    return {key: tuple(value.shape) for key, value in _named(groups)}


def _named(groups) -> Iterator[tuple[str, object]]:
    """(array name, value) of the weights, optimizer variables and random states, in order:
    `weight_0000`, ..., `optimizer_0000`, ..., `random_0000`, ..."""
    for prefix, values in zip(GROUPS, groups, strict=True):
        for index, value in enumerate(values):
            yield f"{prefix}{index:04d}", value
