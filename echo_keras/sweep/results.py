"""The sweep's files: results.csv (a row per point), sweep.json (its spec), and their names.

results.csv holds one row per point: its settings under their config.json names, then its
metrics, host, status and error; it is rewritten atomically after every point. Nothing
here imports TensorFlow or Ray.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from echo_keras.config import TrainConfig, changed_fields
from echo_keras.errors import (
    ConfigError,
    EchoKerasError,
    SweepError,
    UsageError,
    listed,
    write_reason,
)
from echo_keras.run import fileio, files
from echo_keras.run.folder import RunFolder
from echo_keras.sweep.grid import SETTINGS, SweepSpec, every_setting, spec_problem

RESULTS, SWEEP_JSON, HEATMAP, RUNS = "results.csv", "sweep.json", "heatmap.png", "runs"

METRICS = (
    "accuracy",
    "boundary_accuracy",
    "inner_accuracy",
    "reset_boundary_accuracy",
    "final_loss",
    "train_seconds",
    "host",
    "status",
    "error",
)
COLUMNS = SETTINGS + METRICS


def point_name(settings: dict[str, Any]) -> str:
    """A point's short name, from its settings (a config's to_dict() or a results.csv row)."""
    return (
        f"echo{settings['echo_step']}-window{settings['truncated_backprop_length']}-"
        f"state{settings['state_size']}-{settings['cell']}-seed{settings['seed']}"
    )


def as_text(value: Any) -> str:
    """A value as results.csv writes it: floats with every digit, None empty."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def point_key(row: dict[str, Any]) -> tuple[str, ...]:
    """A point's identity: its settings as results.csv writes them."""
    return tuple(as_text(row[name]) for name in SETTINGS)


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write results.csv atomically: a reader sees the old file or the new one, whole."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([as_text(row.get(name)) for name in COLUMNS] for row in rows)
    fileio.atomic_write_text(path, buffer.getvalue())


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of results.csv (values as text); [] if there is none; SweepError if damaged."""
    path = Path(path)
    try:
        with fileio.open_regular(path, "r") as handle:  # never a FIFO or a link to /dev/zero
            text = handle.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise SweepError(f"cannot read {path}: {error}") from None
    if text and not text.endswith("\n"):
        raise SweepError(f"{path} is damaged: it ends in the middle of a line")
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise SweepError(f"{path} is damaged: {error}") from None
    if not records or tuple(records[0]) != COLUMNS:
        raise SweepError(f"{path} is damaged: expected the header {','.join(COLUMNS)}")
    for line, record in enumerate(records[1:], start=2):
        if len(record) != len(COLUMNS):
            raise SweepError(f"{path} is damaged: line {line} has {len(record)} fields")
    return [dict(zip(COLUMNS, record, strict=True)) for record in records[1:]]


def write_spec(out: Path, spec: SweepSpec, **extra: Any) -> None:
    record = {**spec.to_dict(), "points": len(spec.points()), **extra}
    record["settings"] = every_setting(spec.settings)  # a spec built by hand may leave some out
    fileio.atomic_write_text(Path(out) / SWEEP_JSON, json.dumps(record, indent=2) + "\n")


def _no_sweep(out: Path) -> str:
    return f"{Path(out) / SWEEP_JSON} is missing: {out} holds no sweep to resume"


def read_spec(out: Path) -> SweepSpec:
    """The spec of the sweep in `out` (from sweep.json); SweepError if missing or damaged."""
    path = Path(out) / SWEEP_JSON
    try:
        data = fileio.read_json(path)
    except FileNotFoundError:
        raise SweepError(_no_sweep(out)) from None
    except (ValueError, OSError) as error:
        raise SweepError(f"{path} is damaged: {error}") from None
    problem = _spec_problem(data)
    if problem:
        raise SweepError(f"{path} is damaged: {problem}")
    return SweepSpec(dict(data["grid"]), data["seeds"], dict(data["settings"]))


def _spec_problem(data: Any) -> str | None:
    """What is wrong with sweep.json's record, or None (see `grid.spec_problem`)."""
    if not isinstance(data, dict):
        return "it is not a JSON object"
    return spec_problem(data.get("grid"), data.get("seeds"), data.get("settings"))


def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder `out` that cannot be made or written (ConfigError: a symbolic link
    that leads nowhere, a file in the way, no permission); refuse (UsageError) to write a
    sweep into `out` when that would lose a user's files: a folder with anything in it
    takes a new sweep only with `overwrite`, and only when it holds an earlier sweep (a
    valid sweep.json); `resume` needs that sweep (its sweep.json, at least)."""
    out = Path(out)
    if problem := fileio.lookup_problem(out):  # a name too long, say
        raise ConfigError("out", f"{fileio.shortened(out)} cannot be made ({problem})")
    missing = out
    while not missing.exists():  # a sweep folder is made, never written through a link
        if missing.is_symlink():  # exists() is False for a dangling link or a loop
            raise ConfigError("out", f"{missing} is a symbolic link that leads nowhere")
        missing = missing.parent
    problem = fileio.folder_problem(out)
    around = files.run_folder_around(out)
    if problem is None and around is not None:
        problem = f"{out} is inside {around}, which `overwrite=True` replaces whole"
    if problem:
        raise ConfigError("out", problem)
    if resume and not os.path.lexists(out / SWEEP_JSON):  # as train refuses a missing run
        raise UsageError(_no_sweep(out))  # (one that is there but damaged: read_spec says)
    if resume or not out.is_dir() or not any(out.iterdir()):
        return
    try:
        read_spec(out)
    except SweepError:  # said first: neither `resume` nor `overwrite` would take it
        raise UsageError(
            f"{out} holds files but no sweep (no valid {SWEEP_JSON}); `overwrite=True` only "
            "replaces an earlier sweep: choose another folder"
        ) from None
    if not overwrite:
        raise UsageError(
            f"{out} holds a sweep; pass `resume=True` to continue it or `overwrite=True` to "
            "start afresh"
        )


def clear(out: Path) -> None:
    """Remove an earlier sweep's files from `out` (for `overwrite`): its own files and the
    run folders it kept (those named after a point of its grid), nothing else."""
    out = Path(out)
    try:
        kept = {point_name(config.to_dict()) for config in read_spec(out).points()}
    except (SweepError, TypeError, ValueError):  # no sweep (an empty folder), or a damaged one
        kept = set()
    for name in (RESULTS, SWEEP_JSON, HEATMAP):
        (out / name).unlink(missing_ok=True)
    runs = out / RUNS
    if runs.is_dir() and not runs.is_symlink():
        for entry in runs.iterdir():
            if entry.name in kept and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
        if not any(runs.iterdir()):
            runs.rmdir()


# --- run folders kept (--keep-runs) -------------------------------------------------------

STAGING = ".new-"  # runs/.NAME.new-XXXX: a run folder being unpacked


def keep_run(archive: bytes, runs: Path, name: str) -> str | None:
    """Unpack a point's zipped run folder into runs/NAME, replacing an earlier one whole
    (never half-written: a failed unpacking leaves nothing behind). None when done, else
    why not, in one line: the point is then recorded as failed, and runs again on resume."""
    target = runs / name
    ours = target.is_dir() and not target.is_symlink() and RunFolder(target).is_run()
    if os.path.lexists(target) and not ours:  # a file, a link, a folder of other files
        return f"{target} is not a folder the sweep made; it is left as it is"
    staging = None
    try:
        runs.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=runs, prefix=f".{name}{STAGING}"))
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            zipped.extractall(staging / name)
        if target.exists():  # the earlier run goes aside, into the staging folder, then goes
            os.replace(target, staging / f"{name}.old")
        os.replace(staging / name, target)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return write_reason(error)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return None


def remove_staging(runs: Path) -> None:
    """Remove what a sweep killed while it unpacked a run folder left in runs/ (the sweep's
    lock is held: no other sweep writes there)."""
    if runs.is_dir() and not runs.is_symlink():
        for entry in runs.glob(f".*{STAGING}*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


def kept_run_conflict(runs: Path, todo: list[TrainConfig]) -> str | None:
    """Why keeping the run folders of `todo` would replace a kept run of other settings
    (a resume that changed `num_epochs`, say: run folders are named by the grid's axes and
    seed alone), or None. A kept folder that is damaged is replaced."""
    for config in todo:
        folder = runs / point_name(config.to_dict())
        try:
            kept = files.load_config(folder)
        except (EchoKerasError, OSError):
            continue  # none, or damaged
        if kept != config:
            changed = [f"`{name}`" for name in changed_fields(kept, config)]
            return (
                f"{folder} holds a run of other settings ({listed(changed)}), which "
                "`keep_runs=True` would replace; resume without it, or start this sweep "
                "in another folder"
            )
    return None
