"""The run folder: what training writes, and how every command reads it back.

Layout of a run folder::

    config.json      every setting (tutorial names), package versions, training path
    status.json      running | complete | interrupted | failed, with a message
    history.csv      one row per batch: epoch,batch,step,loss
    last_batch.npz   inputs, targets, probabilities of the final batch (for the plot)
    model.keras      the trained model (written only when training completed)
    checkpoint/      weights, optimizer state and epoch count after the last completed epoch

Every file is written atomically (a temporary file beside it, then a rename), so
a reader never sees half a file. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
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
STATUSES = ("running", "complete", "interrupted", "failed")


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunFolderError(Exception):
    """A run folder, or one of its files, is missing or damaged. The message names the file."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary path beside `path` (same suffix), then rename it over.

    On any error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` exists with something in it (an empty folder is free to use)."""
    run_dir = Path(run_dir)
    return run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))


def run_exists_message(run_dir: Path) -> str:
    return (
        f"{run_dir} already holds a run; pass --overwrite to replace it or --resume to continue it"
    )


# --- config.json --------------------------------------------------------------------------


def write_config(run_dir: Path, config: TrainConfig, **extra) -> None:
    atomic_write_text(run_dir / CONFIG, config.to_json(**extra))


def read_config(run_dir: Path) -> TrainConfig:
    """The run's TrainConfig; RunFolderError if the folder or config.json is missing or broken."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist")
    path = run_dir / CONFIG
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return TrainConfig.from_dict(data).validate()
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (ValueError, TypeError, ConfigError) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None


# --- status.json --------------------------------------------------------------------------


def write_status(run_dir: Path, status: str, message: str = "") -> None:
    assert status in STATUSES, status
    record = {
        "status": status,
        "message": message,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(Path(run_dir) / STATUS, json.dumps(record, indent=2) + "\n")


def read_status(run_dir: Path) -> dict:
    """The run's status record; a folder without one reads as {"status": "unknown"}."""
    try:
        record = json.loads((Path(run_dir) / STATUS).read_text())
        if isinstance(record, dict) and record.get("status") in STATUSES:
            return record
    except (OSError, ValueError):
        pass
    return {"status": "unknown", "message": ""}


def status_warning(run_dir: Path) -> str | None:
    """A one-line warning when the run is not complete, else None."""
    record = read_status(run_dir)
    if record["status"] == "complete":
        return None
    detail = f": {record['message']}" if record.get("message") else ""
    return f"Warning: run {run_dir} is {record['status']}{detail}"


# --- history.csv --------------------------------------------------------------------------


def history_lines(rows) -> str:
    """CSV lines (no header) for history rows; losses keep every digit (repr)."""
    return "".join(f"{epoch},{batch},{step},{float(loss)!r}\n" for epoch, batch, step, loss in rows)


def write_history(run_dir: Path, lines: str) -> None:
    """Write history.csv: the header, then `history_lines` text."""
    atomic_write_text(Path(run_dir) / HISTORY, ",".join(HISTORY_COLUMNS) + "\n" + lines)


def read_history(run_dir: Path) -> list[tuple[int, int, int, float]]:
    """The rows of history.csv; RunFolderError if it is missing, truncated or inconsistent."""
    path = Path(run_dir) / HISTORY
    try:
        text = path.read_text()
        if not text.endswith("\n"):
            raise ValueError("it ends in the middle of a line (truncated)")
        reader = csv.reader(io.StringIO(text))
        if tuple(next(reader, ())) != HISTORY_COLUMNS:
            raise ValueError(f"expected the header {','.join(HISTORY_COLUMNS)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            if len(record) != 4:
                raise ValueError(f"line {line} has {len(record)} fields, expected 4")
            epoch, batch, step, loss = (
                int(record[0]),
                int(record[1]),
                int(record[2]),
                float(record[3]),
            )
            previous = rows[-1] if rows else (epoch, -1, -1, 0.0)
            next_batch = previous[1] + 1 if epoch == previous[0] else 0
            if step != previous[2] + 1 or batch != next_batch or epoch < previous[0]:
                raise ValueError(f"line {line} does not continue the line before it")
            rows.append((epoch, batch, step, loss))
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError, csv.Error) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    if not rows:
        raise RunFolderError(f"{path} is damaged: it has no rows")
    return rows


# --- last_batch.npz -----------------------------------------------------------------------


def write_last_batch(run_dir: Path, inputs, targets, probabilities) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, inputs=inputs, targets=targets, probabilities=probabilities)

    atomic_write(Path(run_dir) / LAST_BATCH, write)


def read_last_batch(run_dir: Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / LAST_BATCH
    try:
        with np.load(path) as data:
            batch = {key: data[key] for key in ("inputs", "targets", "probabilities")}
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    inputs, targets, probabilities = batch["inputs"], batch["targets"], batch["probabilities"]
    if inputs.ndim != 2 or targets.shape != inputs.shape or probabilities.shape[:2] != inputs.shape:
        raise RunFolderError(f"{path} is damaged: its arrays have inconsistent shapes")
    return batch


# --- checkpoint/ --------------------------------------------------------------------------


def write_checkpoint(run_dir: Path, weights, optimizer_variables, epochs_completed: int) -> None:
    """Keep the model's weights, the optimizer's state and the epoch count in one file.

    A single npz of arrays takes about a millisecond, against tens for a `.keras`
    archive, which matters at one checkpoint per epoch.
    """
    folder = Path(run_dir) / CHECKPOINT
    folder.mkdir(exist_ok=True)
    arrays = {f"weight_{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"optimizer_{i:04d}": np.asarray(v) for i, v in enumerate(optimizer_variables)})
    arrays["epochs_completed"] = np.asarray(epochs_completed)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(folder / CHECKPOINT_STATE, write)


def read_checkpoint(run_dir: Path) -> tuple[int, list, list]:
    """(epochs_completed, weights, optimizer variables); RunFolderError if missing or damaged."""
    path = Path(run_dir) / CHECKPOINT / CHECKPOINT_STATE
    try:
        with np.load(path) as data:
            epochs = int(data["epochs_completed"])
            weights = [data[k] for k in sorted(data.files) if k.startswith("weight_")]
            optimizer = [data[k] for k in sorted(data.files) if k.startswith("optimizer_")]
        if epochs < 1:
            raise ValueError(f"epochs_completed is {epochs}")
    except FileNotFoundError:
        raise RunFolderError(
            f"{path} is missing: no epoch of this run was completed, so there is nothing to resume"
        ) from None
    except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    return epochs, weights, optimizer
