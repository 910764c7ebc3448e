"""The files of a run folder: their formats, and how each is written and read back.

Layout of a run folder::

    config.json      every setting (tutorial names), package versions, training path
    status.json      running | complete | interrupted | failed, with a message
    history.csv      one row per batch: epoch,batch,step,loss (appended at every epoch end)
    last_batch.npz   inputs, targets, probabilities of the last trained batch (for the plot)
    model.keras      the trained model (written only when training completed)
    checkpoint/      weights, optimizer and random state, epoch count after the last epoch
    vocabulary.json  a run on its own data: the symbols, and the SHA-256 of the files
    validation.csv   a run on its own data: one row per epoch, the validation loss
    sample.txt       a run on its own data (next task): text the trained model generated

Every file but history.csv is written atomically (`fileio.atomic_write`), so a
reader never sees half a file. history.csv only grows: each epoch's rows are
appended and flushed, and a reader drops a torn last line. Readers treat every
file as untrusted: types, ranges and array shapes are checked before anything
large is read. The folder's life cycle (lock, status, swap, recovery) is
`folder.RunFolder`'s; the two npz files' formats are `arrays`'. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from echo_keras.config import DATA_FIELDS, TrainConfig
from echo_keras.errors import ConfigError, RunFolderError
from echo_keras.memory import memory_problem
from echo_keras.paths import inside, real_path
from echo_keras.run import fileio
from echo_keras.vocabulary import Vocabulary

CONFIG = "config.json"
STATUS = "status.json"
HISTORY = "history.csv"
LAST_BATCH = "last_batch.npz"
MODEL = "model.keras"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = "state.npz"

VOCABULARY = "vocabulary.json"
VALIDATION = "validation.csv"
SAMPLE = "sample.txt"
VALIDATION_HEADER = "epoch,loss,bits_per_symbol,accuracy\n"
# What a resumed run replaces in its folder as it trains and when it ends.
REPLACED = (STATUS, HISTORY, LAST_BATCH, MODEL, VALIDATION, SAMPLE)
LIVE = "live.png"
# What a run writes before it completes its first epoch (a TensorBoard folder aside, which
# the user names; its checkpoint folder when the first checkpoint failed, a full disk say):
# a folder holding nothing else, the temporaries of its atomic writes aside (`is_temporary`),
# holds nothing of the user's.
FIRST_EPOCH = (CONFIG, STATUS, HISTORY, VOCABULARY, VALIDATION, SAMPLE, LAST_BATCH, LIVE,
               CHECKPOINT)  # fmt: skip
MAX_VOCABULARY_BYTES = 4 * 1024 * 1024  # 65536 symbols, each a few JSON characters
MAX_VALIDATION_BYTES = 64 * 1024 * 1024
HISTORY_COLUMNS = ("epoch", "batch", "step", "loss")
HISTORY_HEADER = ",".join(HISTORY_COLUMNS) + "\n"
STATUSES = ("running", "complete", "interrupted", "failed")
MAX_HISTORY_LINE = 200  # "epoch,batch,step,loss": a few dozen characters


def package_versions(*packages: str) -> dict[str, str | None]:
    """The installed version of each package (None if it is not installed), for the records."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


# --- config.json --------------------------------------------------------------------------


def write_config(run_dir: Path, config: TrainConfig, **extra) -> None:
    fileio.atomic_write_text(Path(run_dir) / CONFIG, config.to_json(**extra))


def load_config(run_dir: Path, name: Path | None = None) -> TrainConfig:
    """The run's TrainConfig; RunFolderError if the folder or config.json is missing or broken.

    Every value is checked for type and range. `name` is how the folder is named
    in messages (default `run_dir`).
    """
    run_dir = Path(run_dir)
    path = Path(name or run_dir) / CONFIG
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {name or run_dir} does not exist")
    try:
        data = fileio.read_json(run_dir / CONFIG)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        config = TrainConfig.from_dict(data).validate()
        problem = memory_problem(config)
        if problem:
            raise ValueError(f"its settings cannot fit in memory: {problem}")
        return config
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except ConfigError as error:
        raise RunFolderError(f"{path} is damaged: {error.field} {error.reason}") from None
    except (ValueError, TypeError) as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    except OSError as error:
        raise RunFolderError(f"{path} is damaged: {error.strerror or error}") from None


# `fileio.atomic_write`'s temporary of NAME: mkstemp's ".NAME." + 8 random characters + suffix.
_TEMPORARY = re.compile(
    "|".join(
        rf"\.{re.escape(own)}\.[a-z0-9_]{{8}}{re.escape(Path(own).suffix)}" for own in FIRST_EPOCH
    )
)


def is_temporary(name: str) -> bool:
    """Whether `name` is the temporary file of an atomic write of a file of FIRST_EPOCH (and
    not, say, the user's `.config.json.bak` or an editor's `.config.json.swp`)."""
    return _TEMPORARY.fullmatch(name) is not None


def _names(run_dir: Path) -> list[str] | None:
    try:
        return [entry.name for entry in Path(run_dir).iterdir()]
    except OSError:
        return None


def not_first_epoch(run_dir: Path) -> list[str]:
    """The entries of `run_dir` that no run writes before its first epoch ends (the user's
    files, most likely), sorted; ["?"] if the folder cannot be listed."""
    names = _names(run_dir)
    if names is None:
        return ["?"]
    return sorted(name for name in names if name not in FIRST_EPOCH and not is_temporary(name))


def only_temporaries(run_dir: Path) -> bool:
    """Whether `run_dir` holds temporary files of atomic writes and nothing else: what a
    training killed before its config.json was in place leaves."""
    names = _names(run_dir)
    return bool(names) and all(is_temporary(name) for name in names)


def remove_temporaries(run_dir: Path) -> None:
    """Delete what atomic writes of killed processes left in `run_dir` (for a writer that
    holds the run's lock: no other writer is at work)."""
    for name in _names(run_dir) or []:
        if is_temporary(name):
            with contextlib.suppress(OSError):
                (Path(run_dir) / name).unlink()


def config_only(run_dir: Path) -> bool:
    """Whether `run_dir` holds this program's config.json (with a data run's vocabulary.json)
    and nothing else but temporary files of atomic writes: what training leaves when it
    stops before its first status is written."""
    names = _names(run_dir)
    if names is None or CONFIG not in names:
        return False
    others = [n for n in names if n not in (CONFIG, VOCABULARY) and not is_temporary(n)]
    return not others and is_written_config(run_dir)


def is_written_config(run_dir: Path) -> bool:
    """Whether config.json is one `write_config` wrote: a JSON object naming every setting.

    It marks a run of ours even before status.json exists; a config.json of some
    other program (`{}` would load as the defaults) does not.
    """
    try:
        data = fileio.read_json(Path(run_dir) / CONFIG)
    except (OSError, ValueError):
        return False
    fields = {field.name for field in dataclasses.fields(TrainConfig)} - set(DATA_FIELDS)
    return isinstance(data, dict) and fields <= set(data)


def enclosing_run(path: Path) -> Path | None:
    """The run folder that `path` is, or lies in (symlinks followed), or None: an output
    there would go with the run when an overwrite replaces it whole."""
    real = real_path(path)
    return next((folder for folder in (real, *real.parents) if is_written_config(folder)), None)


def run_folder_around(path: Path, run_dir: Path | None = None) -> str | None:
    """How a message names the run folder an output at `path` would lie in: "the run folder
    R" for any run's (`enclosing_run`), "the run folder" for `run_dir` when it holds no
    run's config yet; None when it lies in neither."""
    above = enclosing_run(path)
    if above is not None:
        return f"the run folder {above}"
    if run_dir is not None and inside(path, run_dir):
        return "the run folder"
    return None


# --- vocabulary.json ----------------------------------------------------------------------


def write_vocabulary(run_dir: Path, record: dict) -> None:
    fileio.atomic_write_text(Path(run_dir) / VOCABULARY, json.dumps(record) + "\n")


def read_vocabulary(
    run_dir: Path, name: Path | None = None, config: TrainConfig | None = None
) -> tuple[Vocabulary, dict]:
    """(vocabulary, SHA-256 of each data file) of a run on its own data; RunFolderError
    naming the file when it is missing or damaged, or when it disagrees with `config`
    (config.json's), if given: another number of symbols, or of another data format."""
    path = Path(name or run_dir) / VOCABULARY
    try:
        data = fileio.read_json(Path(run_dir) / VOCABULARY, MAX_VOCABULARY_BYTES)
        digests = data.get("sha256", {}) if isinstance(data, dict) else None
        if not isinstance(digests, dict):
            raise ValueError('"sha256" must be an object')
        vocabulary = Vocabulary.from_json(data)
        if config is not None and vocabulary.size != config.num_classes:
            raise RunFolderError(
                f"{path} holds {vocabulary.size} symbols; config.json says {config.num_classes}"
            )
        if config is not None and vocabulary.kind != config.data_format:
            raise RunFolderError(
                f"{path} holds a vocabulary of {vocabulary.kind}; config.json says the data "
                f"is {config.data_format}"
            )
        return vocabulary, digests
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except ValueError as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    except OSError as error:
        raise RunFolderError(f"{path} is damaged: {error.strerror or error}") from None


# --- validation.csv -----------------------------------------------------------------------


def write_validation(run_dir: Path, rows) -> None:
    """Replace validation.csv with one line per epoch (atomically)."""
    lines = "".join(
        f"{row['epoch']},{row['loss']!r},{row['bits_per_symbol']!r},{row['accuracy']!r}\n"
        for row in rows
    )
    fileio.atomic_write_text(Path(run_dir) / VALIDATION, VALIDATION_HEADER + lines)


def read_validation(run_dir: Path) -> list[dict]:
    """validation.csv's rows (none when it is missing); a damaged line ends them."""
    rows = []
    try:
        with fileio.open_regular(Path(run_dir) / VALIDATION, "r", encoding="utf-8") as handle:
            lines = handle.read(MAX_VALIDATION_BYTES).splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            epoch, loss, bits, accuracy = line.split(",")
            rows.append(
                {
                    "epoch": int(epoch),
                    "loss": float(loss),
                    "bits_per_symbol": float(bits),
                    "accuracy": float(accuracy),
                }
            )
        except ValueError:
            break
    return rows


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
    fileio.atomic_write_text(Path(run_dir) / STATUS, json.dumps(record, indent=2) + "\n")


def read_status(run_dir: Path) -> dict:
    """The status record as written; a folder without a readable one gives {"status": "unknown"}.

    `RunFolder.status` is what commands use: it also knows whether a
    `running` run still has its training process.
    """
    try:
        record = fileio.read_json(Path(run_dir) / STATUS)
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
    fileio.append(path, lines if path.exists() and path.stat().st_size else HISTORY_HEADER + lines)


def write_history(run_dir: Path, lines: str) -> None:
    """Replace history.csv with the header and `history_lines` text (atomically)."""
    fileio.atomic_write_text(Path(run_dir) / HISTORY, HISTORY_HEADER + lines)


def iter_history(run_dir: Path, name: Path | None = None) -> Iterator[tuple[int, int, int, float]]:
    """Stream the rows of history.csv, checking that each continues the one before.

    A last line without its newline is a torn append (the process died while
    writing it) and is dropped. RunFolderError if the file is missing or damaged.
    """
    path = Path(run_dir) / HISTORY
    shown = Path(name or run_dir) / HISTORY
    try:
        with fileio.open_regular(path, "r", encoding="ascii", newline="") as handle:
            header = handle.readline(MAX_HISTORY_LINE)
            if header.rstrip("\r\n") != HISTORY_HEADER.rstrip("\n"):
                if not header.endswith("\n") and HISTORY_HEADER.startswith(header):
                    return  # torn while the header was written: no rows yet
                raise ValueError(f"expected the header {HISTORY_HEADER.strip()}")
            previous = (0, -1, -1)
            for number, line in enumerate(iter(lambda: handle.readline(MAX_HISTORY_LINE), ""), 2):
                if not line.endswith("\n"):
                    if len(line) == MAX_HISTORY_LINE:
                        raise ValueError(f"line {number} is longer than {MAX_HISTORY_LINE} bytes")
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
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{shown} is damaged: {error}") from None
    except OSError as error:
        raise RunFolderError(f"{shown} is damaged: {error.strerror or error}") from None


def read_history(run_dir: Path, name: Path | None = None) -> list[tuple[int, int, int, float]]:
    """Every row of history.csv (see `iter_history`); RunFolderError if there is none."""
    rows = list(iter_history(run_dir, name))
    if not rows:
        raise RunFolderError(f"{Path(name or run_dir) / HISTORY} is damaged: it has no rows")
    return rows


def unreplaceable(run_dir: Path) -> Path | None:
    """The first file a resumed run would replace that is there but is no file (a folder,
    a FIFO, a device: never replaced, so the run would fail when it writes it), or None."""
    for name in REPLACED:
        with contextlib.suppress(OSError):  # (it cannot be looked at: the write will say)
            if fileio.never_replaced(run_dir / name):
                return run_dir / name
    return None
