"""The sweep's heat map: boundary accuracy over echo step x window, one panel per state size and
cell, every cell annotated, the line echo step = window drawn.

The boundary positions (the first echo_step of each window) can only be predicted from the state
carried across windows; past the line, every target lies beyond the window, so no gradient links
it to its input. Draws with matplotlib's Agg canvas directly (no pyplot, no TensorFlow).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from echo_keras.plots.figure import save_figure


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def cell_means(rows: list[dict]) -> dict[tuple, dict[tuple[int, int], tuple[float, int, int]]]:
    """(state_size, cell) -> {(echo_step, window): (mean boundary accuracy of the ok rows,
    ok rows, failed rows)}. Rows may hold text (read back from results.csv) or numbers."""
    panels: dict[tuple, dict[tuple[int, int], list]] = {}
    for row in rows:
        panel = (int(row["state_size"]), str(row["cell"]))
        point = (int(row["echo_step"]), int(row["truncated_backprop_length"]))
        values = panels.setdefault(panel, {}).setdefault(point, [[], 0])
        if row["status"] == "ok":
            values[0].append(_number(row["boundary_accuracy"]))
        else:
            values[1] += 1
    return {
        panel: {
            point: (float(np.mean(ok)) if ok else math.nan, len(ok), failed)
            for point, (ok, failed) in cells.items()
        }
        for panel, cells in sorted(panels.items())
    }


def import_matplotlib() -> None:
    """Import what drawing the heat map needs (about 0.4 s): the sweep does it in a thread
    while its workers train, so that the map is drawn sooner at the end. An import that
    fails is left for the drawing to report (a thread's error would be a traceback)."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        _colormap()
    except Exception:
        pass


def draw_heatmap(rows: list[dict], seeds: int = 1):
    """The figure for results.csv rows (any number of state sizes and cells)."""
    from matplotlib.figure import Figure

    panels = cell_means(rows)
    echoes = sorted({int(row["echo_step"]) for row in rows})
    windows = sorted({int(row["truncated_backprop_length"]) for row in rows})
    classes = max((int(row["num_classes"]) for row in rows), default=2)
    chance = 1.0 / classes
    count = max(1, len(panels))
    columns = min(3, count)
    grid_rows = math.ceil(count / columns)
    width = 1.0 + 0.75 * max(4, len(windows))
    height = 1.4 + 0.55 * max(4, len(echoes))
    figure = Figure(figsize=(width * columns + 1.2, height * grid_rows + 0.5), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
    for unused in axes[count:]:
        unused.set_visible(False)
    image = None
    for ax, ((state_size, cell), cells) in zip(axes, panels.items(), strict=False):
        image = _draw_panel(ax, cells, echoes, windows, chance)
        ax.set_title(f"{cell.upper()}, state size {state_size}")
    if image is not None:
        bar = figure.colorbar(image, ax=list(axes[:count]), shrink=0.9)
        bar.set_label(f"boundary accuracy (chance {chance:.2f})")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", fontsize="small")
    over = "one seed" if seeds == 1 else f"mean over {seeds} seeds"
    caption = textwrap.fill(
        "the share of right predictions at the first echo-step positions of windows 2.., "
        f"which only the state carried from the window before can predict (chance {chance:.2f})",
        width=int(figure.get_figwidth() * 11),
    )
    figure.suptitle(
        f"Boundary accuracy with the state carried ({over})\n{caption}", fontsize="medium"
    )
    return figure


def _draw_panel(ax, cells: dict, echoes: list[int], windows: list[int], chance: float):
    values = np.full((len(echoes), len(windows)), np.nan)
    for (echo, window), (mean, _, _) in cells.items():
        values[echoes.index(echo), windows.index(window)] = mean
    colormap = _colormap()
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=colormap,
        vmin=chance,
        vmax=1.0,
        origin="lower",
        aspect="auto",
    )
    for y, echo in enumerate(echoes):
        for x, window in enumerate(windows):
            mean, ok, failed = cells.get((echo, window), (math.nan, 0, 0))
            if ok:
                text = f"{mean:.2f}" if not math.isnan(mean) else "n/a"
            else:
                text = "failed" if failed else "–"
            shade = (mean - chance) / (1 - chance) if not math.isnan(mean) else 1.0
            ax.text(
                x,
                y,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="black" if shade > 0.6 else "white",
            )
    _draw_diagonal(ax, echoes, windows)
    ax.set_xticks(range(len(windows)), [str(w) for w in windows])
    ax.set_yticks(range(len(echoes)), [str(e) for e in echoes])
    ax.set_xlabel("window (truncated_backprop_length)")
    ax.set_ylabel("echo step")
    return image


def _colormap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="lightgrey")  # bad: no ok row for the cell


def _draw_diagonal(ax, echoes: list[int], windows: list[int]) -> None:
    """The border between echo step < window (below: the echo lies inside the window) and
    echo step >= window, drawn along the cells' edges as a staircase, so that it never
    runs through a number."""
    edges = [sum(echo < window for echo in echoes) - 0.5 for window in windows]
    if all(edge == edges[0] for edge in edges) and edges[0] in (-0.5, len(echoes) - 0.5):
        return  # the whole panel lies on one side of it
    xs, ys = [], []
    for x, edge in enumerate(edges):
        xs += [x - 0.5, x + 0.5]
        ys += [edge, edge]
    ax.plot(xs, ys, color="red", lw=2, ls="--", label="echo step = window: below, the echo "
            "lies inside the window; on and above, beyond it")  # fmt: skip


def save_heatmap(rows: list[dict], path: Path, seeds: int = 1) -> Path:
    """Draw the heat map of `rows` into `path` (PNG, written atomically); return the path."""
    save_figure(draw_heatmap(rows, seeds), Path(path))
    return Path(path)
