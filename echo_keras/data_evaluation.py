"""Evaluation of a run on its own data: loss in nats and bits per symbol, accuracy, and the
tutorial's question on real data, the first positions of each window against the rest.

The first `boundary_width` positions of a window (`echo_step` for the echo task, up to 5
for the next-symbol task) lean hardest on what came before the window, which only the
carried state knows. A row's first window (and a document's) has no carried state, so its
first positions are counted in neither group. Padding (weight 0) is left out everywhere.

TensorFlow is imported only when a model is evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras.config import TrainConfig
from echo_keras.corpus import file_digest, load_corpus, read_laid_out
from echo_keras.data import Windows, dropped_note
from echo_keras.errors import ConfigError, RunFolderError, UsageError
from echo_keras.vocabulary import Vocabulary

EVAL_WINDOWS = 200  # windows fed to the compiled loop at a time
NEXT_BOUNDARY = 5  # boundary positions of the next-symbol task (fewer in a shorter window)


@dataclass(frozen=True)
class DataMetrics:
    """What `evaluate` measured on a run's own data: losses in nats per symbol (and the
    overall one in bits), accuracies, the boundary positions (first of windows 2..)
    apart from the inner ones (the rest)."""

    loss: float  # mean cross-entropy in nats per symbol, every position
    bits_per_symbol: float  # the same in bits
    accuracy: float  # every position (the echo task on one series: not a row's first
    # echo_step, whose echo is in the row before; they are in the losses, as in training's)
    boundary_loss: float | None  # first boundary_width positions of windows 2.. (None: none)
    boundary_accuracy: float | None
    inner_loss: float | None  # positions boundary_width.. of every window (None: none)
    inner_accuracy: float | None
    windows: int
    positions: int  # the positions the losses cover (padding left out)
    reset_each_window: bool
    scored: int  # the positions the accuracies cover

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Source:
    """The windows to evaluate and, in words, where they came from."""

    windows: Windows
    description: str  # e.g. "its validation data (held.txt)"
    note: str = ""  # said on stderr: e.g. the run has no validation data
    read_with: tuple | None = None  # the run's (config, vocabulary) it was read through


def boundary_width(config: TrainConfig) -> int:
    """Positions at a window's start counted as its boundary: `echo_step` for the echo
    task, min(5, window - 1) for the next-symbol task."""
    window = config.truncated_backprop_length
    if config.task == "echo":
        return min(config.echo_step, window)
    return max(0, min(NEXT_BOUNDARY, window - 1))


def data_source(
    config: TrainConfig,
    vocabulary: Vocabulary,
    data: Path | str | None,
    digests: dict | None = None,
) -> Source:
    """The windows to evaluate: `data` read through the run's vocabulary, or by default the
    run's validation data laid out as in training (its training data when it has none).

    Args:
        config: the run's config.
        vocabulary: the run's vocabulary.
        data: a file to evaluate on; None: the run's own validation data.
        digests: the SHA-256 of each of the run's data files when it was trained
            (vocabulary.json); a file changed since is noted.

    Returns:
        A `Source`: the windows, where they come from, and a note for stderr (or "").

    Raises:
        RunFolderError: the run's own file (`data` None) is no longer there (a dangling
            symlink's too), or no longer a regular file.
        UsageError: a file that cannot be read.
        SymbolError: a symbol outside the run's vocabulary (naming line and column).
        ConfigError: a file too short for one window per row.
    """
    if data is not None:
        windows = read_laid_out(data, config, vocabulary, "data")[0]
        return Source(windows, f"{data}", dropped_note(windows, shown(str(data))) or "")
    own = config.validation_data is not None  # its own file: the training data is not read
    field = "validation_data" if own else "data"
    path = getattr(config, field)
    if not os.path.isfile(path):  # the run's file, not one the caller named
        what = "a regular file" if os.path.exists(path) else "there"  # a folder, a FIFO
        raise RunFolderError(
            f"{shown(path)}, the file the run was trained on (`{field}`), is no longer {what}; "
            "evaluate the run on a file given as `data`"
        )
    try:
        if own:
            validation, digest = read_laid_out(
                config.validation_data, config, vocabulary, "validation_data"
            )
            found = {"validation_data": digest}
        else:
            _, corpus = load_corpus(config, vocabulary)
            found = corpus.digests
    except UsageError as error:
        changed = _changed_files(config, digests, ["validation_data"] if own else None)
        if not changed:
            raise
        detail = error.reason if isinstance(error, ConfigError) else error
        raise UsageError(f"{changed} changed since the run was trained: {detail}") from None
    changed = [
        f"`{field}` {getattr(config, field)}"
        for field, digest in found.items()
        if digests and digests.get(field) not in (None, digest)
    ]
    notes = [f"{' and '.join(changed)} changed since the run was trained"] if changed else []
    if own:
        windows = validation
        where = f"its validation data ({shown(config.validation_data)})"
    elif corpus.validation is not None:
        share = f"{config.validation_fraction * 100:.3g}%"  # 10%, 12.5%, 0.4%
        if corpus.tail_of_a_document:
            where = (
                f"the held-out last {share} of {shown(config.data)}, where no document "
                "starts: the end of its last document, read from a zeroed state"
            )
        elif config.documents:  # cut at a document's start: the documents that start there
            where = f"the documents that start in the last {share} of {shown(config.data)}"
        else:
            where = f"the held-out last {share} of {shown(config.data)}"
        windows = corpus.validation
    else:
        windows, where = corpus.train, f"its training data ({shown(config.data)})"
        notes.append(
            "the run has no validation data (`validation_fraction` 0): evaluated on its "
            "training data, which the model has seen"
        )
    dropped = dropped_note(windows, where)
    if dropped:
        notes.append(dropped)
    return Source(windows, where, "; ".join(notes))


def _changed_files(config: TrainConfig, digests: dict | None, fields: list | None) -> str:
    """The run's data files (of `fields`, or all) whose bytes are no longer those it was
    trained on, named."""
    changed = []
    for field, digest in (digests or {}).items():
        if fields is not None and field not in fields:
            continue
        path = getattr(config, field, None)
        with contextlib.suppress(UsageError):  # a file gone: its own error says so
            if path is not None and file_digest(path, field) != digest:
                changed.append(f"`{field}` {path}")
    return " and ".join(changed)


def shown(path: str) -> str:
    """A data file as messages name it: relative to the working folder when inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class _Tally:
    """Sums of loss, hits and positions of the boundary, inner and other positions."""

    def __init__(self):
        self.loss = np.zeros(5)  # the groups of `_groups` (padding, 3, left at zero)
        self.hits = np.zeros(5)
        self.count = np.zeros(5)

    def add(self, losses, hits, groups) -> None:
        for group in (0, 1, 2, 4):
            mask = groups == group
            self.loss[group] += float(np.sum(losses[mask], dtype=np.float64))
            self.hits[group] += float(np.count_nonzero(hits[mask]))
            self.count[group] += float(np.count_nonzero(mask))

    def mean(self, sums, groups) -> float | None:
        count = self.count[groups].sum()
        return float(sums[groups].sum() / count) if count else None


def _groups(chunk: dict, start: int, width: int, scored=True) -> np.ndarray:
    """Per position: 0 boundary, 1 inner, 2 neither (a first window's boundary), 3 padding,
    4 in the loss alone (not `scored`: `Windows.scored`)."""
    weights = chunk.get("weights")
    shape = chunk["inputs"].shape
    groups = np.ones(shape, np.int8)
    groups[..., :width] = 0
    first = np.zeros(shape[:2], bool)  # (window, row): no state was carried into it
    if start == 0:
        first[0] = True
    if "resets" in chunk:  # a document starts: the same positions, carried or reset
        first |= chunk["resets"]
    groups[..., :width][first] = 2
    groups[~np.broadcast_to(scored, shape)] = 4
    if weights is not None:
        groups[weights == 0] = 3
    return groups


def evaluate_windows(warm, windows: Windows, width: int, reset_each_window: bool = False):
    """`DataMetrics` of the model of `warm` (a `warm.WarmModel`) on `windows`, fed
    EVAL_WINDOWS windows at a time from a zeroed state carried throughout (or zeroed before
    every window)."""
    from echo_keras.loops import PredictLoop, predicted_chunks

    loop = warm.loop(PredictLoop, reset_each_window, windows=windows.num_windows)
    tally = _Tally()
    size = min(EVAL_WINDOWS, windows.num_windows)
    for start, chunk, losses, hits in predicted_chunks(loop, windows, size):
        tally.add(losses, hits, _groups(chunk, start, width, windows.scored(start, len(hits))))
    loss = tally.mean(tally.loss, [0, 1, 2, 4])
    return DataMetrics(
        loss=loss,
        bits_per_symbol=loss / math.log(2),
        accuracy=tally.mean(tally.hits, [0, 1, 2]),
        boundary_loss=tally.mean(tally.loss, [0]),
        boundary_accuracy=tally.mean(tally.hits, [0]),
        inner_loss=tally.mean(tally.loss, [1]),
        inner_accuracy=tally.mean(tally.hits, [1]),
        windows=windows.num_windows,
        positions=int(tally.count.sum()),
        reset_each_window=reset_each_window,
        scored=int(tally.count[[0, 1, 2]].sum()),
    )


def positions_line(positions: int, scored: int, echo_step: int) -> str:
    """The table's count of positions, and of those the accuracies cover when fewer."""
    if scored == positions:
        return str(positions)
    return (
        f"{positions}   accuracy over {scored}: each row's first {echo_step} left out (their "
        "echo: the row before, or padding)"
    )


def format_data_table(metrics: DataMetrics, config: TrainConfig) -> str:
    """The metrics as `echo-keras evaluate` prints them for `config`'s run on its own data."""
    width, window = boundary_width(config), config.truncated_backprop_length

    def number(value):
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    if width == 0:
        boundary, inner = "none: the window is too short", "every position"
    elif width < window:
        boundary = f"first {width} positions of windows 2.., where only the carried state helps"
        inner = f"positions after the first {width} of every window"
    else:
        reach = config.echo_step
        boundary = f"all {window} positions of windows 2.. (the echo reaches {reach} back)"
        inner = "none: no window holds a symbol and its echo"
    state = "zeroed before every window" if metrics.reset_each_window else "carried across windows"
    rows = [
        ("state", state),
        ("loss", f"{number(metrics.loss)} nats per symbol"),
        ("bits per symbol", number(metrics.bits_per_symbol)),
        ("accuracy", number(metrics.accuracy)),
        ("boundary loss", f"{number(metrics.boundary_loss)}   {boundary}"),
        ("boundary accuracy", number(metrics.boundary_accuracy)),
        ("inner loss", f"{number(metrics.inner_loss)}   {inner}"),
        ("inner accuracy", number(metrics.inner_accuracy)),
        ("windows", str(metrics.windows)),
        ("positions", positions_line(metrics.positions, metrics.scored, config.echo_step)),
    ]
    name_width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{name_width}}  {value}" for name, value in rows)
