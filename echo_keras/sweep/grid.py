"""The sweep's grid: axes given as text (`1,2,4`, `1-12`) -> a `SweepSpec` -> its points.

A point is one TrainConfig: the grid's echo step, window, state size and cell (the axes of
`options.py`), a seed, and the per-run settings shared by every point. The sweep's files
are in `results.py`. Nothing here imports TensorFlow or Ray.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from echo_keras.config import (
    CELLS,
    DATA_FIELDS,
    TrainConfig,
    with_default_rate,
)
from echo_keras.errors import ConfigError, UsageError
from echo_keras.memory import available_memory, memory_problem
from echo_keras.options import AXES
from echo_keras.values import plain, readable

# The default grid: echo steps on both sides of every window, so the cliff at echo step =
# window runs through the middle of the map.
DEFAULT_GRID = {
    "echo_step": [1, 2, 3, 4, 5, 6],
    "truncated_backprop_length": [2, 3, 4, 5, 6, 7],
    "state_size": [4],
    "cell": ["lstm"],
}
DEFAULT_SEEDS = 1
MAX_POINTS = 10_000
MAX_WORKERS = 1024  # a local Ray's CPUs: more than any machine this runs on
GRID_WORDS = ("echo steps", "windows", "state sizes", "cells", "seeds")  # AXES, then seeds
# The per-run settings a sweep takes: config.json's names, in order, without data fields.
SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in DATA_FIELDS)


def parse_ints(text: str, field: str) -> list[int]:
    """`1,2,4`, `1-12` or a mix (`1-3,8`) -> sorted distinct integers; ConfigError otherwise."""
    values: set[int] = set()
    for part in text.split(","):
        # Digits 0-9 only: int() would also take `1_0` (10), `+1` and other scripts' digits
        # (and at most 18 of them: int() refuses thousands).
        match = re.fullmatch(r"\s*([0-9]{1,18})\s*(?:-\s*([0-9]{1,18})\s*)?", part)
        if match is None:
            raise ConfigError(
                field, f"expected integers or ranges such as 1,2,4 or 1-12, got {text!r}"
            )
        start = int(match[1])
        stop = int(match[2]) if match[2] else start
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
        axes = [self.grid[name] for name in AXES]
        return [
            TrainConfig(**self.settings, **dict(zip(AXES, values, strict=True)), seed=seed)
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
    """The sweep's spec, from its axes given as text; what is not given comes from `base`
    (a resumed sweep) or the defaults.

    Args:
        grid_texts: axis (`echo_step`, `truncated_backprop_length`, `state_size`, `cell`)
            -> text such as "1,2,4", "1-12" or "lstm,gru"; None or absent: not given.
        seeds: seeds per point (0..seeds-1); None: not given.
        settings: other TrainConfig fields, the same for every point (None: not given).
        base: the spec of a sweep being resumed.

    Returns:
        A `SweepSpec`, every point validated.

    Raises:
        ConfigError: naming the field (or `seeds`) at fault.
        UsageError: an axis that is not one, a setting that is not a per-run one, or too
            many points.

    Example:

    ```python
    spec = make_spec({"echo_step": "1-6", "truncated_backprop_length": "2-7"}, 1, {})
    run_sweep(spec, "runs/sweep")
    ```
    """
    if not isinstance(grid_texts, dict) or not isinstance(settings, dict):
        raise UsageError("make_spec takes the axes' texts and the settings as dicts")
    if base is not None and not isinstance(base, SweepSpec):
        raise UsageError(f"base must be a SweepSpec or None, got {base!r:.40}")
    unknown = sorted(map(str, set(grid_texts) - set(AXES)))
    if unknown:
        raise UsageError(f"the grid has no axis {', '.join(unknown)}; its axes: {', '.join(AXES)}")
    for name, text in grid_texts.items():
        if text is not None and not isinstance(text, str):
            raise ConfigError(name, f"expected text such as 1,2,4 or 1-12, got {text!r:.40}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral)):
        raise ConfigError("seeds", f"must be a positive whole number, got {seeds!r:.40}")
    seeds = None if seeds is None else int(seeds)
    grid = {}
    for name in AXES:
        text = grid_texts.get(name)
        if text is None:
            grid[name] = list((base.grid if base else DEFAULT_GRID)[name])
        else:
            grid[name] = parse_cells(text) if name == "cell" else parse_ints(text, name)
    if seeds is None:
        seeds = base.seeds if base else DEFAULT_SEEDS
    if seeds <= 0:
        raise ConfigError("seeds", f"must be positive, got {seeds}")
    merged = dict(base.settings) if base else {}
    merged.update({name: plain(value) for name, value in settings.items() if value is not None})
    if settings.get("optimizer") is not None and settings.get("learning_rate") is None:
        merged.pop("learning_rate", None)  # another optimizer brings its own default rate
    spec = SweepSpec(grid, seeds, every_setting(merged))
    check_spec(spec)
    return spec


def plain_spec(spec: SweepSpec) -> SweepSpec:
    """`spec` with numpy numbers in its grid, seeds and settings as Python's own (see
    `plain`); parts of the wrong kind are left for check_spec to name."""
    grid, settings = spec.grid, spec.settings
    if isinstance(grid, dict):
        grid = {k: [plain(v) for v in vs] if isinstance(vs, list) else vs for k, vs in grid.items()}
    if isinstance(settings, dict):
        settings = {k: plain(v) for k, v in settings.items()}
    return dataclasses.replace(spec, grid=grid, seeds=plain(spec.seeds), settings=settings)


def every_setting(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with every per-run setting they leave out at its default (the learning
    rate at the optimizer's), as sweep.json records them."""
    merged = with_default_rate(dict(settings))
    for item in dataclasses.fields(TrainConfig):
        if item.name not in AXES and item.name != "seed" and item.name not in DATA_FIELDS:
            merged.setdefault(item.name, item.default)
    return merged


def spec_problem(grid: Any, seeds: Any, settings: Any) -> str | None:
    """What is wrong with a spec's parts (types and names; values are checked with every
    point's settings), or None. Fields are named as SweepSpec and sweep.json name them."""
    if not isinstance(grid, dict) or set(grid) != set(AXES):
        return f"grid must hold exactly {', '.join(AXES)}"
    for name in AXES:
        values, kind = grid[name], str if name == "cell" else int
        if not isinstance(values, list) or not values:
            return f"grid's {name} must be a non-empty list, got {values!r}"[:300]
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            return f"grid's {name} must hold {kind.__name__}s only, got {values!r}"[:300]
        if len(set(values)) != len(values):
            return f"grid's {name} holds a value twice: {values!r}"[:300]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        return f"seeds must be a positive integer, got {seeds!r}"[:300]
    sizes = [len(grid[name]) for name in AXES] + [seeds]
    count = math.prod(sizes)  # counted, never built: a grid may be far too large
    if count > MAX_POINTS:
        shown = " x ".join(f"{size} {name}" for size, name in zip(sizes, GRID_WORDS, strict=True))
        return f"the grid has {count} points ({shown}); at most {MAX_POINTS} allowed"
    if not isinstance(settings, dict):
        return "settings must be an object"
    unknown = sorted(map(str, set(settings) - set(SETTINGS) | set(settings) & {*AXES, "seed"}))
    if unknown:
        return f"settings holds {', '.join(unknown)}, which is not a per-run setting"
    kinds = (str, int, float, bool, type(None))  # what sweep.json can hold
    odd = sorted(name for name, value in settings.items() if not isinstance(value, kinds))
    if odd:
        shown = repr(settings[odd[0]])[:40]
        return f"settings' {odd[0]} must be a number, text or a bool (as JSON), got {shown}"
    if settings.get("learning_rate", 0) is None:  # a spec records the rate every point uses
        return "settings' learning_rate must be a number, got None"
    return None


def check_spec(spec: SweepSpec) -> None:
    """Refuse, before anything starts, a spec that `make_spec` would not have made: parts
    of the wrong kind (UsageError), more than MAX_POINTS points (UsageError), or a point
    that `train` would refuse (ConfigError naming its field, or UsageError)."""
    problem = spec_problem(spec.grid, spec.seeds, spec.settings)
    if problem and problem.startswith("the grid has"):
        raise UsageError(problem)
    if problem:
        raise UsageError(f"the sweep's spec: {problem}")
    available = available_memory()
    for config in spec.points():  # what `train` refuses, refused before anything starts
        config.validate()
        if problem := config.echo_row_problem():
            raise ConfigError("echo_step", f"{point_words(config)}: {problem}")
        problem = memory_problem(config, available)
        if problem:
            raise UsageError(f"{point_words(config)}: {problem}")


def workers_problem(workers: Any) -> str | None:
    """Why `workers` cannot size a local Ray (None, the usable cores, can), or None."""
    whole = isinstance(workers, numbers.Integral) and not isinstance(workers, bool)
    if workers is None or (whole and 0 < workers <= MAX_WORKERS):
        return None
    shown = readable(workers) if whole else repr(workers)[:40]
    return f"must be from 1 to {MAX_WORKERS}, got {shown}"


def point_words(config: TrainConfig) -> str:
    """A point as a message names it: `echo_step` 3, `truncated_backprop_length` 4, ..."""
    return "the point " + ", ".join(f"`{name}` {getattr(config, name)}" for name in AXES)
