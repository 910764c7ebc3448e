"""The tutorial's figure: the loss of every batch, and the last batch row by row.

Reads only `config.json`, `history.csv` and `last_batch.npz`, and draws with
matplotlib's Agg canvas directly (no pyplot, no TensorFlow), so `echo-keras plot`
answers at once and the live plot can draw from a background process. The history
is streamed and thinned as it is read, so a history of millions of rows costs
seconds and little memory.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras.errors import ConfigError, RunFolderError, write_error
from echo_keras.paths import file_path, real_path
from echo_keras.plots.data_figure import draw_data_figure, log_scale, read_sample
from echo_keras.run import arrays, fileio, files
from echo_keras.run.folder import RunFolder

MAX_ROW_PANELS = 5  # the tutorial shows the 5 rows of its batch
MAX_LOSS_POINTS = 20000  # longer histories are thinned for drawing (not for the file)
MAX_EPOCH_LINES = 100  # more epoch starts than this would only paint the panel grey


@dataclass
class LossCurve:
    """The loss panel's data: every `stride`-th batch's step and loss, and the epoch starts."""

    steps: np.ndarray
    losses: np.ndarray
    epoch_starts: list[int] | None  # None when there are too many to draw
    epochs: int
    batches: int


def loss_curve(rows: Iterable[tuple], max_points: int = MAX_LOSS_POINTS) -> LossCurve:
    """Thin (epoch, batch, step, loss) rows to at most 2 * max_points points, in one pass.

    Memory stays bounded however many rows stream by: whenever the kept points
    reach twice the limit, every other one is dropped and the stride doubles.
    """
    steps, losses, starts = [], [], []
    stride, count, epoch, epochs = 1, 0, None, 0
    for row_epoch, _, step, loss in rows:
        if row_epoch != epoch:
            epochs += 1
            if epoch is not None and len(starts) <= MAX_EPOCH_LINES:
                starts.append(step)
            epoch = row_epoch
        if count % stride == 0:
            steps.append(step)
            losses.append(loss)
            if len(steps) >= 2 * max_points:
                steps, losses, stride = steps[::2], losses[::2], stride * 2
        count += 1
    return LossCurve(
        np.asarray(steps, dtype=np.float64),
        np.asarray(losses, dtype=np.float64),
        starts if len(starts) <= MAX_EPOCH_LINES else None,
        epochs,
        count,
    )


COLORS = {"input": "blue", "target": "red", "prediction": "green"}


def draw_figure(curve: LossCurve, batch: dict, title: str = ""):
    """Build the figure. `curve` is the thinned history (`loss_curve`);
    `batch` holds `inputs`, `targets` (batch, window) and `probabilities` (batch, window, classes).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    inputs, targets = batch["inputs"], batch["targets"]
    predictions = np.argmax(batch["probabilities"], axis=-1)
    num_rows, window = inputs.shape
    shown = min(num_rows, MAX_ROW_PANELS)
    panels = 1 + shown
    columns = min(3, panels)
    grid_rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.3 * grid_rows + 0.6), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)

    _draw_loss(axes[0], curve)
    top = max(2.0, float(max(inputs.max(), targets.max(), predictions.max())) + 1)
    offsets = np.arange(window)
    for row in range(shown):
        ax = axes[1 + row]
        for values, scale, name in (
            (inputs[row], 1.0, "input"),
            (targets[row], 0.5, "target"),
            (predictions[row], 0.3, "prediction"),
        ):
            # An edge of the bar's own colour closes the seams between neighbouring bars.
            color = COLORS[name]
            ax.bar(offsets, values * scale, width=1, color=color, edgecolor=color, lw=0.6,
                   align="edge")  # fmt: skip
        wrong = np.flatnonzero(predictions[row] != targets[row])
        ax.plot(wrong + 0.5, np.full(len(wrong), top * 0.92), "kx", ms=6, mew=1.5)
        ax.set_xlim(0, window)
        ax.set_ylim(0, top)
        ax.set_title(f"Last batch, row {row}: {len(wrong)} wrong of {window}")
        ax.set_xlabel("time step in window")
        ax.set_ylabel("symbol")
    handles = [
        Patch(color=COLORS["input"], label="input x"),
        Patch(color=COLORS["target"], label="target y (x 0.5)"),
        Patch(color=COLORS["prediction"], label="predicted class (x 0.3)"),
        Line2D([], [], color="black", marker="x", ls="", mew=1.5, label="wrong prediction"),
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=4,
        title="bar height = symbol x 1, 0.5 or 0.3: the factors only tell the three apart",
        title_fontsize="small",
    )
    if title:
        figure.suptitle(title, parse_math=False)  # a $ in a name is a dollar
    return figure


def _draw_loss(ax, curve: LossCurve) -> None:
    losses = curve.losses
    finite = np.where(np.isfinite(losses), np.maximum(losses, 1e-12), np.nan)
    ax.plot(curve.steps, finite, lw=0.6, color="tab:blue", label="batch loss")
    for index, step in enumerate(curve.epoch_starts or []):
        ax.axvline(step, color="grey", ls="--", lw=0.8, label="epoch start" if index == 0 else None)
    if np.any(finite > 0):
        log_scale(ax)
    ax.set_title("Loss of every batch")
    ax.set_xlabel("batch (step)")
    ax.set_ylabel("cross-entropy")
    ax.legend(loc="upper right", fontsize="small")


def image_formats() -> dict[str, str]:
    """The file extensions matplotlib writes by itself (pgf needs LaTeX), with descriptions."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = dict(FigureCanvasBase.get_supported_filetypes())
    formats.pop("pgf", None)
    return formats


def figure_target(out: Path, follow: bool = True) -> Path:
    """Where a figure asked for at `out` is written; ValueError for a path that cannot be one.

    With `follow`, a symlink is written through (its target is replaced, the link
    stays); without, the link itself is replaced (a run folder's own plot.png,
    which a hostile folder could point anywhere). An existing device, FIFO,
    socket or folder is refused, never replaced; the extension must name a
    format matplotlib writes, and so must that of the file a link leads to (a link to
    another run's history.csv is never replaced by an image).
    """
    out = Path(out)
    formats = image_formats()
    extension = out.suffix.lower().lstrip(".")
    if extension not in formats:
        known = ", ".join(sorted(formats))
        raise ValueError(
            f"{out}: unknown image format {out.suffix or '(no extension)'}; use {known}"
        )
    if not follow and out.is_symlink():
        return out
    target = fileio.output_path(out)
    if target.suffix.lower().lstrip(".") not in formats:  # through a link: another file
        raise ValueError(f"{out} leads to {target}, which is not an image; choose another")
    return target


def _runs_own_file(target: Path, run_dir: Path) -> bool:
    """Whether writing `target` (through any symlink) would replace a file the run keeps:
    any in its folder but an image of the user's beside its files (the live plot's
    live.png is training's own)."""
    real = real_path(target)
    if not real.is_relative_to(run_dir) or not real.exists():
        return False
    image = real.suffix.lower().lstrip(".") in image_formats() and real.name != files.LIVE
    return not (image and real.parent == run_dir)


def save_figure(figure, path: Path, image_format: str = "png") -> None:
    """Write the figure atomically (a temporary file, then a rename). A character that the
    font lacks (in a data run's sample: an emoji, say) is drawn as a box, without a warning
    per character; PostScript draws the translucent lines opaque, without matplotlib's
    line about it on stderr."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    postscript = logging.getLogger("matplotlib.backends.backend_ps")
    level = postscript.level
    postscript.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            fileio.atomic_write(
                Path(path), lambda tmp: figure.savefig(tmp, format=image_format, dpi=100)
            )
    finally:
        postscript.setLevel(level)


def _run_figure(run_dir: Path):
    """(figure, folder) of a run folder, its files read from one version of the folder."""
    folder = RunFolder(run_dir)

    def read(view: Path):
        config = files.load_config(view, folder.path)
        status = folder.status()["status"]  # a dead process's "running": interrupted
        unfinished = status in ("running", "interrupted", "failed")
        if unfinished and not arrays.has_checkpoint(view):
            how = "wait for it" if status == "running" else "train it again"
            raise RunFolderError(
                f"{folder.path} has nothing to draw yet: the run is {status} and has not "
                f"completed an epoch ({how})"
            )
        if config.data is not None:  # a run on its own data: no echo panels
            extra = files.read_validation(view), read_sample(view)
        else:
            extra = arrays.read_last_batch(view, config, folder.path)
        curve = loss_curve(files.iter_history(view, folder.path))
        return config, extra, curve

    config, extra, curve = folder.read(read)
    if not curve.batches:
        raise RunFolderError(f"{folder.path / files.HISTORY} is damaged: it has no rows")
    folder.warn_if_unfinished(model=False)  # not complete: said to the caller
    trained = f"; {curve.epochs} epoch{'s' * (curve.epochs != 1)}, {curve.batches} batches"
    model = f"{config.cell.upper()} of {config.state_size} units"
    if config.data is not None:
        validation, sample = extra
        task = "next symbol" if config.task == "next" else f"echo step {config.echo_step}"
        title = (
            f"{_shown(folder.path.name)}: {_shown(Path(config.data).name)}, {task}, window "
            f"{config.truncated_backprop_length}, {model}{trained}"
        )
        figure = draw_data_figure(curve, validation, sample, title, config.num_batches)
        return figure, folder
    title = (
        f"{_shown(folder.path.name)}: echo step {config.echo_step}, window "
        f"{config.truncated_backprop_length}, {model}{trained}"
    )
    return draw_figure(curve, extra, title), folder


def _shown(name: str) -> str:
    """A file name as a title can show it: bytes that are not UTF-8 (which Python keeps as
    lone surrogates, and matplotlib refuses) shown as U+FFFD, as a terminal shows them."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no file name's byte gives
        return name.encode("utf-8", "replace").decode("utf-8")


def draw_run(run_dir: Path | str):
    """The tutorial's figure of a run (loss curve and the last batch), not saved. A run on
    its own data shows its training and validation loss in bits per symbol and, when
    the folder has sample.txt, a sample of generated text.

    A notebook shows the returned `matplotlib.figure.Figure` inline.

    Args:
        run_dir: a trained run folder.

    Returns:
        The figure.

    Raises:
        RunFolderError: config.json, history.csv or (an echo run's) last_batch.npz is
            missing or damaged.
        ConfigError: a `run_dir` that is not a path.

    Warns:
        EchoKerasWarning: the run is not complete (failed, interrupted, still training):
            the figure shows its epochs so far.
    """
    return _run_figure(run_dir)[0]


def plot_run(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Draw the figure of a run folder into `out` (default RUN_DIR/plot.png); return the path.

    Args:
        run_dir: a trained run folder.
        out: the image to write; its extension picks the format (png, svg, pdf, ...).

    Returns:
        The path written, as given (`out`, or RUN_DIR/plot.png).

    Raises:
        RunFolderError: a file of the run is missing or damaged.
        ConfigError: `out` cannot be an image (see `figure_target`), ends in / (a folder),
            is (or links to) a file of the run, or it or `run_dir` is not a path.
        WriteError: the image could not be written (also an OSError).

    Warns:
        EchoKerasWarning: the run is not complete (as `draw_run`).
    """
    out = file_path(out, "out") if out is not None else None
    try:  # refused before any reading
        target = figure_target(out) if out is not None else None
    except ValueError as error:
        raise ConfigError("out", str(error)) from None
    figure, folder = _run_figure(run_dir)
    if target is not None and _runs_own_file(target, folder.real):
        raise ConfigError("out", f"{out} is a file of the run in {folder.path}; choose another")
    if target is None:  # the folder's own plot.png: a link there is replaced, not followed
        target = figure_target(folder.real / "plot.png", follow=False)
    out = out if out is not None else folder.path / "plot.png"
    try:
        save_figure(figure, target, out.suffix.lower().lstrip("."))
    except OSError as error:
        raise write_error(f"the figure {out}", error) from None
    return out
