"""The sweep's grid and its files: grid flags (`1,2,4`, `1-12`) -> points, results.csv, sweep.json.

A point is one TrainConfig: the grid's echo step, window, state size and cell, a seed, and the
per-run settings shared by every point. results.csv holds one row per point: its settings under
their config.json names, then its metrics, host, status and error. Nothing here imports
TensorFlow or Ray.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo_keras import fileio
from echo_keras.config import CELLS, DEFAULT_LEARNING_RATES, ConfigError, TrainConfig

RESULTS, SWEEP_JSON, HEATMAP, RUNS = "results.csv", "sweep.json", "heatmap.png", "runs"

# The grid's dimensions (config field -> flag) and the default grid: echo steps on both sides of
# every window, so the cliff at echo step = window runs through the middle of the map.
GRID_FLAGS = {
    "echo_step": "--echo-step",
    "truncated_backprop_length": "--window",
    "state_size": "--state-size",
    "cell": "--cell",
}
DEFAULT_GRID = {
    "echo_step": [1, 2, 3, 4, 5, 6],
    "truncated_backprop_length": [2, 3, 4, 5, 6, 7],
    "state_size": [4],
    "cell": ["lstm"],
}
DEFAULT_SEEDS = 1
MAX_POINTS = 10_000

SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))  # config.json names, in order
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


class SweepError(RuntimeError):
    """The sweep could not run (a damaged results.csv, an unreachable cluster); says why."""


def parse_ints(text: str, field: str) -> list[int]:
    """`1,2,4`, `1-12` or a mix (`1-3,8`) -> sorted distinct integers; ConfigError otherwise."""
    values: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            start = int(low)
            stop = int(high) if dash else start
        except ValueError:
            raise ConfigError(
                field, f"expected integers or ranges such as 1,2,4 or 1-12, got {text!r}"
            ) from None
        if stop < start:
            raise ConfigError(field, f"the range {part.strip()} runs backwards")
        if stop - start >= MAX_POINTS:
            raise ConfigError(field, f"the range {part.strip()} is too long")
        values.update(range(start, stop + 1))
    return sorted(values)


def parse_cells(text: str) -> list[str]:
    cells = [part.strip().lower() for part in text.split(",")]
    for cell in cells:
        if cell not in CELLS:
            raise ConfigError("cell", f"must be a list of {', '.join(CELLS)}, got {text!r}")
    return list(dict.fromkeys(cells))


@dataclass
class SweepSpec:
    """The grid (config field -> values), the number of seeds, and the per-run settings."""

    grid: dict[str, list]
    seeds: int
    settings: dict[str, Any]  # the other TrainConfig fields, the same for every point

    def points(self) -> list[TrainConfig]:
        """One config per grid point and seed (seeds 0..seeds-1)."""
        axes = [self.grid[name] for name in GRID_FLAGS]
        return [
            TrainConfig(**self.settings, **dict(zip(GRID_FLAGS, values, strict=True)), seed=seed)
            for *values, seed in itertools.product(*axes, range(self.seeds))
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_spec(
    grid_texts: dict[str, str | None],
    seeds: int | None,
    settings: dict[str, Any],
    base: SweepSpec | None = None,
) -> SweepSpec:
    """The spec from the flags given (None: not given); the others come from `base` (a resumed
    sweep) or the defaults. Every point is validated: ConfigError names the flag at fault."""
    grid = {}
    for name in GRID_FLAGS:
        text = grid_texts.get(name)
        if text is None:
            grid[name] = list((base.grid if base else DEFAULT_GRID)[name])
        else:
            grid[name] = parse_cells(text) if name == "cell" else parse_ints(text, name)
    if seeds is None:
        seeds = base.seeds if base else DEFAULT_SEEDS
    if seeds <= 0:
        raise ConfigError("--seeds", f"must be positive, got {seeds}")
    merged = dict(base.settings) if base else {}
    merged.update({name: value for name, value in settings.items() if value is not None})
    if settings.get("optimizer") is not None and settings.get("learning_rate") is None:
        merged.pop("learning_rate", None)  # another optimizer brings its own default rate
    if "learning_rate" not in merged:
        optimizer = merged.get("optimizer", TrainConfig.optimizer)
        merged["learning_rate"] = DEFAULT_LEARNING_RATES.get(optimizer, TrainConfig.learning_rate)
    for name in SETTINGS:  # sweep.json records every setting, not only those given
        if name not in GRID_FLAGS and name != "seed":
            merged.setdefault(name, getattr(TrainConfig, name))
    count = seeds * len(list(itertools.product(*grid.values())))
    if count > MAX_POINTS:
        raise ConfigError("--seeds", f"the grid has {count} points; at most {MAX_POINTS} allowed")
    spec = SweepSpec(grid, seeds, merged)
    for config in spec.points():
        config.validate()
    return spec


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
    fileio.atomic_write_text(Path(out) / SWEEP_JSON, json.dumps(record, indent=2) + "\n")


def read_spec(out: Path) -> SweepSpec:
    """The spec of the sweep in `out` (from sweep.json); SweepError if missing or damaged."""
    path = Path(out) / SWEEP_JSON
    try:
        data = fileio.read_json(path)
        return SweepSpec(dict(data["grid"]), int(data["seeds"]), dict(data["settings"]))
    except FileNotFoundError:
        raise SweepError(f"{path} is missing: {out} holds no sweep to resume") from None
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise SweepError(f"{path} is damaged: {error}") from None


def clear(out: Path) -> None:
    """Remove an earlier sweep's files from `out` (for --overwrite)."""
    for name in (RESULTS, SWEEP_JSON, HEATMAP):
        (Path(out) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(out) / RUNS, ignore_errors=True)
