"""State files: the carried state of a stream, saved between calls (`predict --state-out`).

One npz file, one float32 (1, units) array per state name (`lstm_0_h`, `lstm_0_c`, ...),
and `weights_digest`, 16 bytes that name the weights it was computed with; written
atomically. Read as untrusted: every array's name and shape is checked from its header
before its data is read. A state computed with other weights (another run of the same
shapes, or this run before it trained further) means nothing to this model, and is
refused; a file from before the digest was kept is taken on its shapes alone.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from echo_keras.corpus import BLANK_LINE_MAX, BLANK_LINE_SPACES
from echo_keras.errors import ConfigError, StateFileError, write_reason
from echo_keras.paths import real_path
from echo_keras.run import fileio, files
from echo_keras.stream.model import StreamModel

DIGEST = "weights_digest"  # the array that names the weights a state was computed with
# A run on documents: where the stream stands in its line (`documents.DocumentSplitter.line`):
# whether only whitespace is on it so far, and that whitespace (UTF-8), not yet read.
LINE_START, LINE_HELD = "line_start", "line_held"
MAX_HELD = BLANK_LINE_MAX  # bytes of whitespace a line may hold back (ASCII: one a byte)


class _OtherRun(ValueError):
    """A well-formed state file whose states are not this run's."""


def read_state(path: Path, model: StreamModel, same_weights: bool = True) -> list[np.ndarray]:
    """The state saved by `write_state`; StateFileError if damaged or from another model
    (with `same_weights`, also if computed with other weights than `model`'s).

    Every array's name and shape is checked from its header before its data is read.
    """
    return read_state_and_line(path, model, same_weights)[0]


def read_state_and_line(path: Path, model: StreamModel, same_weights: bool = True):
    """(state, line): `read_state`'s state, and for a run on documents where the stream
    stood in its line (None when the file does not say: at a line's start)."""
    wanted = (1, model.units)

    def check(name, shape, dtype):
        if name in (LINE_START, LINE_HELD):
            if name == LINE_START:
                fits = shape == (1,) and dtype == np.bool_
            else:
                fits = len(shape) == 1 and shape[0] <= MAX_HELD and dtype == np.uint8
            if not fits:
                raise ValueError(f"{name} has shape {shape} and type {dtype}")
            return
        if name == DIGEST:
            if shape != (len(model.weights_digest),) or dtype != np.uint8:
                raise ValueError(f"{name} has shape {shape} and type {dtype}")
            return
        if name not in model.names:
            raise _OtherRun(
                f"{path} holds an array {name}, and this run carries {', '.join(model.names)}: "
                "it is another run's state file, or no state file"
            )
        if shape != wanted:
            raise _OtherRun(
                f"{path}: {name} has shape {shape}, this run needs {wanted}: "
                "it was written for another run"
            )
        if dtype.kind != "f":
            raise ValueError(f"{name} holds {dtype}, not floats")

    target = real_path(path)  # a link the user made is fine; a loop fails to open below
    try:
        exists = target.exists()
    except OSError as error:  # a name too long, say
        raise StateFileError(f"{path} cannot be read ({error.strerror})", damaged=False) from None
    if not exists and target.is_symlink():
        raise StateFileError(f"{path} is a symlink that leads nowhere (a loop?)", damaged=False)
    if exists and not target.is_file():  # the user's mistake, not a damaged file
        what = "a folder" if target.is_dir() else "not a regular file"
        raise StateFileError(f"{path} is {what}, not a state file", damaged=False)
    try:
        arrays = fileio.read_npz(target, check)
    except FileNotFoundError:
        raise StateFileError(f"{path} does not exist", damaged=False) from None
    except _OtherRun as error:
        raise StateFileError(str(error), damaged=False) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise StateFileError(f"{path} is damaged: {error}", damaged=True) from None
    missing = [name for name in model.names if name not in arrays]
    if missing:
        raise StateFileError(
            f"{path} lacks the states {', '.join(missing)} of this run: "
            "it was written for another run",
            damaged=False,
        )
    digest = arrays.get(DIGEST)
    if same_weights and digest is not None and digest.tobytes() != model.weights_digest:
        raise StateFileError(
            f"{path} was computed with other weights (another run of the same shapes, or "
            "this run before it trained further): its state means nothing to this model",
            damaged=False,
        )
    state = []
    for name in model.names:
        with np.errstate(over="ignore", invalid="ignore"):
            value = arrays[name].astype(np.float32)  # what the model computes in
        if not np.all(np.isfinite(value)):
            raise StateFileError(f"{path} is damaged: {name} is not finite", damaged=True)
        state.append(value)
    return state, _line(path, arrays)


def _line(path: Path, arrays: dict) -> tuple[bool, str] | None:
    if LINE_START not in arrays:
        return None
    try:
        held = arrays.get(LINE_HELD, np.zeros(0, np.uint8)).tobytes().decode("utf-8")
    except UnicodeDecodeError:
        held = None
    if held is None or held.strip(BLANK_LINE_SPACES) or (held and not arrays[LINE_START][0]):
        message = f"{path} is damaged: {LINE_HELD} is not whitespace at a line's start"
        raise StateFileError(message, damaged=True)
    return bool(arrays[LINE_START][0]), held


def write_state(path: Path, model: StreamModel, state: list, line: tuple | None = None) -> None:
    """Write the state (one array per name, batch 1) to an npz file, atomically, with
    `line` (a run on documents: where the stream stands in its line); StateFileError (exit
    status 1) if it cannot be written: what was there stays."""
    try:
        fileio.savez(Path(path), _arrays(model, state, line))
    except OSError as error:
        raise _unwritable(path, error) from None


def stage_state(path: Path, model: StreamModel, state: list, line: tuple | None = None):
    """`write_state`'s file written beside `path` and flushed, not yet in its place
    (`commit_state` puts it there; `discard()` drops it); StateFileError as `write_state`."""
    try:
        return fileio.staged_savez(Path(path), _arrays(model, state, line))
    except OSError as error:
        raise _unwritable(path, error) from None


def _arrays(model: StreamModel, state: list, line: tuple | None) -> dict:
    arrays = {
        name: np.asarray(value, np.float32) for name, value in zip(model.names, state, strict=True)
    }
    arrays[DIGEST] = np.frombuffer(model.weights_digest, np.uint8)
    if line is not None:
        arrays[LINE_START] = np.array([line[0]], bool)
        arrays[LINE_HELD] = np.frombuffer(line[1].encode("utf-8"), np.uint8)
    return arrays


def commit_state(staged: fileio.Staged) -> None:
    """Put a staged state file in its place; StateFileError as `write_state`."""
    try:
        staged.commit()
    except OSError as error:
        raise _unwritable(staged.path, error) from None


def _unwritable(path: Path, error: OSError) -> StateFileError:
    return StateFileError(f"cannot write {path}: {write_reason(error)}", damaged=True)


def state_target(path: Path, model: StreamModel, run_dir: Path | None = None) -> Path:
    """Where a state file for `path` is written (through a symlink); ConfigError, naming
    `path`, for what must not be replaced: anything but a regular file, a file that is not
    a state file of this run, or a place inside the run folder `run_dir`. A state file of
    this run's shapes is replaced whatever weights it was computed with."""
    try:
        target = fileio.output_path(path)
    except ValueError as error:
        raise ConfigError("path", str(error)) from None
    around = files.run_folder_around(target, run_dir)  # this run's, or another's
    if around is not None:
        raise ConfigError("path", f"{path} is inside {around}; keep state files beside it")
    if target.exists():
        try:
            read_state(target, model, same_weights=False)
        except StateFileError:
            mine = f"{path} exists and is not a state file of this run"
            raise ConfigError("path", mine) from None
    return target
