"""The files of a run folder: their formats, and how each is written and read back.

Layout of a run folder::

    config.json      every setting (tutorial names), package versions, training path
    status.json      running | complete | interrupted | failed, with a message
    history.csv      one row per batch: epoch,batch,step,loss (appended at every epoch end)
    last_batch.npz   inputs, targets, probabilities of the last trained batch (for the plot)
    model.keras      the trained model (written only when training completed)
    checkpoint/      weights, optimizer state and epoch count after the last completed epoch

Every file but history.csv is written atomically (a temporary file beside it,
flushed to disk, then renamed over), so a reader never sees half a file.
history.csv only grows: each epoch's rows are appended and flushed, and a reader
drops a torn last line. Readers treat every file as untrusted: types, ranges and
array shapes are checked before anything large is read. The folder's life cycle
(lock, status, swap, recovery) is `runfolder.RunFolder`'s. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from echo_keras.config import ConfigError, TrainConfig

CONFIG = "config.json"
STATUS = "status.json"
HISTORY = "history.csv"
LAST_BATCH = "last_batch.npz"
MODEL = "model.keras"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = "state.npz"

HISTORY_COLUMNS = ("epoch", "batch", "step", "loss")
HISTORY_HEADER = ",".join(HISTORY_COLUMNS) + "\n"
STATUSES = ("running", "complete", "interrupted", "failed")
MAX_JSON_BYTES = 1 << 20  # config.json and status.json are a few hundred bytes


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunFolderError(Exception):
    """A run folder, or one of its files, is missing or damaged. The message names the file."""


# --- writing: every byte of a run goes through atomic_write or append ----------------------


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary path beside `path` (same suffix), then rename it over.

    The data is flushed to disk before the rename, so after a crash `path` holds
    the old file or the new one, whole. On any error the temporary file is
    removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def append(path: Path, data: str) -> None:
    """Append `data` to `path` (created if missing) and flush it to disk."""
    with open(path, "a") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_json(path: Path) -> object:
    with open(path, "rb") as handle:
        data = handle.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"it is larger than {MAX_JSON_BYTES} bytes")
    return json.loads(data)


# --- config.json --------------------------------------------------------------------------


def write_config(run_dir: Path, config: TrainConfig, **extra) -> None:
    atomic_write_text(Path(run_dir) / CONFIG, config.to_json(**extra))


def read_config(run_dir: Path, name: Path | None = None) -> TrainConfig:
    """The run's TrainConfig; RunFolderError if the folder or config.json is missing or broken.

    Every value is checked for type and range. `name` is how the folder is named
    in messages (default `run_dir`).
    """
    run_dir = Path(run_dir)
    path = Path(name or run_dir) / CONFIG
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {name or run_dir} does not exist")
    try:
        data = _read_json(run_dir / CONFIG)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return TrainConfig.from_dict(data).validate()
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except ConfigError as error:
        raise RunFolderError(f"{path} is damaged: {error.field} {error.reason}") from None
    except (ValueError, TypeError, OSError) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None


# --- status.json --------------------------------------------------------------------------


def write_status(run_dir: Path, status: str, message: str = "") -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    record = {
        "status": status,
        "message": message,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
    }
    atomic_write_text(Path(run_dir) / STATUS, json.dumps(record, indent=2) + "\n")


def read_status(run_dir: Path) -> dict:
    """The status record as written; a folder without a readable one gives {"status": "unknown"}.

    `runfolder.RunFolder.status` is what commands use: it also knows whether a
    `running` run still has its training process.
    """
    try:
        record = _read_json(Path(run_dir) / STATUS)
        if isinstance(record, dict) and record.get("status") in STATUSES:
            return {**record, "message": str(record.get("message", ""))}
    except (OSError, ValueError):
        pass
    return {"status": "unknown", "message": ""}


# --- history.csv --------------------------------------------------------------------------


def history_lines(rows) -> str:
    """CSV lines (no header) for history rows; losses keep every digit (repr)."""
    return "".join(f"{epoch},{batch},{step},{float(loss)!r}\n" for epoch, batch, step, loss in rows)


def append_history(run_dir: Path, lines: str) -> None:
    """Append `history_lines` text to history.csv, starting the file with its header."""
    path = Path(run_dir) / HISTORY
    append(path, lines if path.exists() and path.stat().st_size else HISTORY_HEADER + lines)


def write_history(run_dir: Path, lines: str) -> None:
    """Replace history.csv with the header and `history_lines` text (atomically)."""
    atomic_write_text(Path(run_dir) / HISTORY, HISTORY_HEADER + lines)


def iter_history(run_dir: Path, name: Path | None = None) -> Iterator[tuple[int, int, int, float]]:
    """Stream the rows of history.csv, checking that each continues the one before.

    A last line without its newline is a torn append (the process died while
    writing it) and is dropped. RunFolderError if the file is missing or damaged.
    """
    path = Path(run_dir) / HISTORY
    shown = Path(name or run_dir) / HISTORY
    try:
        with open(path, encoding="ascii", newline="") as handle:
            header = handle.readline()
            if header.rstrip("\r\n") != HISTORY_HEADER.rstrip("\n"):
                if not header.endswith("\n") and HISTORY_HEADER.startswith(header):
                    return  # torn while the header was written: no rows yet
                raise ValueError(f"expected the header {HISTORY_HEADER.strip()}")
            previous = (0, -1, -1)
            for number, line in enumerate(handle, start=2):
                if not line.endswith("\n"):
                    return  # a torn append
                fields = line.split(",")
                if len(fields) != 4:
                    raise ValueError(f"line {number} has {len(fields)} fields, expected 4")
                epoch, batch, step = int(fields[0]), int(fields[1]), int(fields[2])
                loss = float(fields[3])
                next_batch = previous[1] + 1 if epoch == previous[0] else 0
                if step != previous[2] + 1 or batch != next_batch or epoch < previous[0]:
                    raise ValueError(f"line {number} does not continue the line before it")
                previous = (epoch, batch, step)
                yield epoch, batch, step, loss
    except FileNotFoundError:
        raise RunFolderError(f"{shown} is missing") from None
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None


def read_history(run_dir: Path, name: Path | None = None) -> list[tuple[int, int, int, float]]:
    """Every row of history.csv (see `iter_history`); RunFolderError if there is none."""
    rows = list(iter_history(run_dir, name))
    if not rows:
        raise RunFolderError(f"{Path(name or run_dir) / HISTORY} is damaged: it has no rows")
    return rows


# --- npz files, read as untrusted ----------------------------------------------------------


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_npz(path: Path, check: Callable[[str, tuple, np.dtype], None]) -> dict[str, np.ndarray]:
    """Load an uncompressed npz whose arrays `check(name, shape, dtype)` accepts.

    Each array's header is read and checked before its data, and its stored size
    must be what the header promises, so a hostile file (an array a million times
    larger than expected, a zip bomb) is refused without being read.
    Raises ValueError, OSError or zipfile.BadZipFile for a damaged file.
    """
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected member {info.filename!r}")
            name = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _HEADER_READERS:
                    raise ValueError(f"{name} has npy format version {version}")
                shape, fortran, dtype = _HEADER_READERS[version](member)
                if dtype.hasobject:
                    raise ValueError(f"{name} holds Python objects")
                check(name, shape, dtype)
                expected = member.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size != expected:
                    raise ValueError(
                        f"{name} is {info.file_size} bytes, its header says {expected}"
                    )
                data = member.read()
            array = np.frombuffer(data, dtype=dtype)
            arrays[name] = array.reshape(shape, order="F" if fortran else "C")
    return arrays


def _savez(path: Path, arrays: dict) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


# --- last_batch.npz -----------------------------------------------------------------------


def write_last_batch(run_dir: Path, inputs, targets, probabilities) -> None:
    arrays = {"inputs": inputs, "targets": targets, "probabilities": probabilities}
    _savez(Path(run_dir) / LAST_BATCH, arrays)


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

    try:
        batch = read_npz(path, check)
        missing = sorted(set(shapes) - set(batch))
        if missing:
            raise ValueError(f"it has no {', '.join(missing)}")
    except FileNotFoundError:
        raise RunFolderError(f"{shown} is missing") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None
    return batch


# --- checkpoint/ --------------------------------------------------------------------------


def write_checkpoint(run_dir: Path, weights, optimizer_variables, epochs_completed: int) -> None:
    """Keep the model's weights, the optimizer's state and the epoch count in one file.

    A single npz of arrays takes about a millisecond, against tens for a `.keras`
    archive, which matters at one checkpoint per epoch. history.csv is appended
    before the checkpoint is written, so it always holds at least the rows of
    `epochs_completed` epochs; resume drops any beyond.
    """
    folder = Path(run_dir) / CHECKPOINT
    folder.mkdir(exist_ok=True)
    arrays = {f"weight_{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"optimizer_{i:04d}": np.asarray(v) for i, v in enumerate(optimizer_variables)})
    arrays["epochs_completed"] = np.asarray(epochs_completed)
    _savez(folder / CHECKPOINT_STATE, arrays)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE).is_file()


def read_checkpoint(
    run_dir: Path, shapes: dict[str, tuple] | None = None, name: Path | None = None
) -> tuple[int, list, list]:
    """(epochs_completed, weights, optimizer variables); RunFolderError if missing or damaged.

    `shapes` maps each array name to the shape the model expects (`checkpoint_shapes`);
    without it any shapes are accepted.
    """
    path = Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE
    shown = Path(name or run_dir) / CHECKPOINT / CHECKPOINT_STATE
    expected = {"epochs_completed": (), **(shapes or {})}

    def check(key, shape, dtype):
        if shapes is not None and key not in expected:
            raise ValueError(f"it holds {key}, which the model does not have")
        if key in expected and shape != tuple(expected[key]):
            raise ValueError(f"{key} has shape {shape}, the model needs {tuple(expected[key])}")

    try:
        data = read_npz(path, check)
        missing = sorted(set(expected) - set(data))
        if missing:
            raise ValueError(f"it has no {', '.join(missing[:3])}")
        epochs = int(data["epochs_completed"])
        if epochs < 1:
            raise ValueError(f"epochs_completed is {epochs}")
        weights = [data[k] for k in sorted(data) if k.startswith("weight_")]
        optimizer = [data[k] for k in sorted(data) if k.startswith("optimizer_")]
    except FileNotFoundError:
        raise RunFolderError(
            f"{shown} is missing: no epoch of this run was completed, so there is nothing to resume"
        ) from None
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None
    return epochs, weights, optimizer


def checkpoint_shapes(weights, optimizer_variables) -> dict[str, tuple]:
    """The array names and shapes `write_checkpoint` gives these variables."""
    shapes = {f"weight_{i:04d}": tuple(w.shape) for i, w in enumerate(weights)}
    shapes.update({f"optimizer_{i:04d}": tuple(v.shape) for i, v in enumerate(optimizer_variables)})
    return shapes
