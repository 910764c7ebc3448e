"""The tutorial's figure: the loss of every batch, and the last batch row by row.

Reads only `history.csv` and `last_batch.npz`, and draws with matplotlib's Agg
canvas directly (no pyplot, no TensorFlow), so `echo-keras plot` answers at once
and the live plot can draw from a background thread.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from echo_keras import rundir

MAX_ROW_PANELS = 5  # the tutorial shows the 5 rows of its batch
MAX_LOSS_POINTS = 20000  # longer histories are thinned for drawing (not for the file)
COLORS = {"input": "blue", "target": "red", "prediction": "green"}


def draw_figure(history, batch: dict, title: str = ""):
    """Build the figure. `history` is a sequence of (epoch, batch, step, loss) rows;
    `batch` holds `inputs`, `targets` (batch, window) and `probabilities` (batch, window, classes).
    """
    from matplotlib.figure import Figure
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

    _draw_loss(axes[0], history)
    top = max(2.0, float(max(inputs.max(), targets.max(), predictions.max())) + 1)
    offsets = np.arange(window)
    for row in range(shown):
        ax = axes[1 + row]
        ax.bar(offsets, inputs[row], width=1, color=COLORS["input"], align="edge")
        ax.bar(offsets, targets[row] * 0.5, width=1, color=COLORS["target"], align="edge")
        ax.bar(offsets, predictions[row] * 0.3, width=1, color=COLORS["prediction"], align="edge")
        ax.set_xlim(0, window)
        ax.set_ylim(0, top)
        ax.set_title(f"Last batch, row {row}")
        ax.set_xlabel("time step in window")
        ax.set_ylabel("symbol")
    handles = [
        Patch(color=COLORS["input"], label="input x"),
        Patch(color=COLORS["target"], label="target y (x 0.5)"),
        Patch(color=COLORS["prediction"], label="predicted class (x 0.3)"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=3)
    if title:
        figure.suptitle(title)
    return figure


def _draw_loss(ax, history) -> None:
    history = np.asarray(history, dtype=np.float64).reshape(-1, 4)
    epochs, steps, losses = history[:, 0], history[:, 2], history[:, 3]
    stride = max(1, len(losses) // MAX_LOSS_POINTS)
    finite = np.where(np.isfinite(losses), np.maximum(losses, 1e-12), np.nan)
    ax.plot(steps[::stride], finite[::stride], lw=0.6, color="tab:blue", label="batch loss")
    starts = steps[1:][np.diff(epochs) != 0] if len(epochs) else []
    for index, step in enumerate(starts):
        ax.axvline(step, color="grey", ls="--", lw=0.8, label="epoch start" if index == 0 else None)
    if np.any(finite > 0):
        ax.set_yscale("log")  # the loss falls over orders of magnitude
    ax.set_title("Loss of every batch")
    ax.set_xlabel("batch (step)")
    ax.set_ylabel("cross-entropy")
    ax.legend(loc="upper right", fontsize="small")


def save_figure(figure, path: Path) -> None:
    """Write the figure as a PNG atomically (a temporary file, then a rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    rundir.atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw the figure of a run folder into `out` (default RUN_DIR/plot.png); return the path.

    RunFolderError names the file when history.csv or last_batch.npz is missing or damaged.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise rundir.RunFolderError(f"run folder {run_dir} does not exist")
    history = rundir.read_history(run_dir)
    batch = rundir.read_last_batch(run_dir)
    epochs = history[-1][0] + 1
    title = f"{run_dir.name}: {epochs} epochs, {len(history)} batches"
    out = Path(out) if out is not None else run_dir / "plot.png"
    save_figure(draw_figure(history, batch, title), out)
    return out


LIVE_MIN_INTERVAL = 0.5  # seconds between live frames: the figure is for eyes, not a film


def live_worker(conn, path: str) -> None:
    """The drawing process of the live plot: draw each frame received, say when ready.

    It runs at a lower priority and draws at most two frames a second, so that on
    a small machine it takes little from training.
    """
    import os
    import time

    os.nice(10)
    history = []
    conn.send("ready")
    while True:
        try:
            frame = conn.recv()
        except EOFError:
            return
        if frame is None:
            return
        started = time.monotonic()
        history.extend(frame["new_rows"])
        save_figure(draw_figure(history, frame["batch"], frame["title"]), Path(path))
        time.sleep(max(0.0, LIVE_MIN_INTERVAL - (time.monotonic() - started)))
        conn.send("ready")
