"""The figure of a run on its own data: training loss per batch (smoothed) and validation
loss per epoch, both in bits per symbol, and a sample of the text the model generates.

Drawn with matplotlib's Agg canvas directly, as the echo figure is (no pyplot, no
TensorFlow). The loss curve is `plots.figure.LossCurve` (losses in nats); validation rows
are validation.csv's.
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
from pathlib import Path

import numpy as np

from echo_keras.run import fileio, files

MAX_SAMPLE_BYTES = 64 * 1024  # read no more of it: the panel shows a few hundred characters
SAMPLE_CHARACTERS = 600  # shown of the sample, at most
SAMPLE_WIDTH = 90  # characters a line
SAMPLE_LINES = 16  # lines shown, at most
SMOOTHING_SHARE = 1 / 40  # the smoothed loss averages over about this share of the batches
MAX_SMOOTHING_SPAN = 200  # batches, at most
SHOWN = {"\n": "\u21b5", "\t": "\u2192"}  # newline and tab, drawn as arrows


def read_sample(run_dir: Path) -> str | None:
    """The start of RUN_DIR/sample.txt as text (bad UTF-8 replaced), None when there is none
    (missing, not a regular file, unreadable)."""
    try:
        with fileio.open_regular(Path(run_dir) / files.SAMPLE, "rb") as handle:
            data = handle.read(MAX_SAMPLE_BYTES)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def readable(character: str) -> str:
    """A character as the sample panel shows it: control and invisible format characters
    as escapes (\\x07, \\u200b), a newline and a tab as arrows, the rest as they are."""
    if character in SHOWN:
        return SHOWN[character]
    if unicodedata.category(character) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        code = ord(character)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return character


def sample_lines(text: str) -> list[str]:
    """The first SAMPLE_CHARACTERS characters of `text`, readable, wrapped; a line break
    after each newline (shown as an arrow); at most SAMPLE_LINES lines ("..." if cut)."""
    logical = text[:SAMPLE_CHARACTERS].split("\n")
    marked = []
    for number, line in enumerate(logical):
        shown = "".join(readable(c) for c in line)
        if number < len(logical) - 1:
            shown += SHOWN["\n"]
        marked.extend(_wrapped(shown) or [""])
    cut = len(text) > SAMPLE_CHARACTERS or len(marked) > SAMPLE_LINES
    marked = marked[:SAMPLE_LINES]
    if cut:
        marked[-1] += " ..."
    return marked


def _wrapped(line: str) -> list[str]:
    """`line` in lines of at most SAMPLE_WIDTH columns of a monospace font: at spaces when
    every character is one column wide; else character by character, a wide one (CJK)
    two columns, a combining one none."""
    widths = [
        2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
        for c in line
    ]
    if all(width == 1 for width in widths):
        return textwrap.wrap(line, SAMPLE_WIDTH, drop_whitespace=False)
    lines, start, used = [], 0, 0
    for index, width in enumerate(widths):
        if used + width > SAMPLE_WIDTH:
            lines.append(line[start:index])
            start, used = index, 0
        used += width
    return [*lines, line[start:]] if line[start:] else lines


def smoothed(losses: np.ndarray, stride: int = 1, batches: int | None = None) -> np.ndarray:
    """An exponential moving average of the loss (debiased at the start) over about 1/40
    of the `batches` (at most 200), of points `stride` batches apart: each weighs as the
    batches it stands for."""
    batches = len(losses) * stride if batches is None else batches
    span = min(max(batches * SMOOTHING_SHARE, 1.0), MAX_SMOOTHING_SPAN)
    alpha = 1 - (1 - 2 / (span + 1)) ** max(stride, 1)
    out = np.empty(len(losses))
    average, weight = 0.0, 0.0
    for index, loss in enumerate(losses):
        if np.isfinite(loss):
            average = (1 - alpha) * average + alpha * loss
            weight = (1 - alpha) * weight + alpha
        out[index] = average / weight if weight else np.nan
    return out


def draw_data_figure(
    curve,
    validation: list[dict] | None = None,
    sample: str | None = None,
    title: str = "",
    batches_per_epoch: int | None = None,
):
    """Build the figure of a run on its own data.

    Args:
        curve: the thinned training history (`plots.figure.loss_curve`; nats).
        validation: validation.csv's rows, one an epoch (drawn at each epoch's end,
            `batches_per_epoch` apart); none: no validation line.
        sample: generated text for the sample panel; None: the loss panel alone.
        title: the figure's title.
        batches_per_epoch: batches (steps) per epoch.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    if sample is None:
        figure = Figure(figsize=(10, 4.6), layout="constrained")
        loss_axis = figure.subplots()
    else:
        figure = Figure(figsize=(10, 8.2), layout="constrained")
        loss_axis, sample_axis = figure.subplots(2, 1, height_ratios=[3, 2])
        _draw_sample(sample_axis, sample)
    _draw_bits(loss_axis, curve, validation or [], batches_per_epoch)
    if title:
        figure.suptitle(title, parse_math=False)  # a $ in a name is a dollar
    return figure


def _draw_bits(ax, curve, validation: list[dict], batches_per_epoch: int | None) -> None:
    bits = np.asarray(curve.losses, dtype=np.float64) / math.log(2)
    steps = np.asarray(curve.steps, dtype=np.float64)
    stride = int(steps[1] - steps[0]) if len(steps) > 1 else 1
    ax.plot(steps, bits, lw=0.5, color="tab:blue", alpha=0.3, label="training, every batch")
    ax.plot(
        steps,
        smoothed(bits, stride, curve.batches),
        lw=1.6,
        color="tab:blue",
        label="training, smoothed",
    )
    if validation and batches_per_epoch:
        ends = [(row["epoch"] + 1) * batches_per_epoch - 1 for row in validation]
        values = [row["bits_per_symbol"] for row in validation]
        ax.plot(ends, values, "o-", color="tab:orange", ms=4, label="validation, each epoch")
    for index, step in enumerate(curve.epoch_starts or []):
        ax.axvline(step, color="grey", ls="--", lw=0.8, label="epoch start" if index == 0 else None)
    finite = bits[np.isfinite(bits) & (bits > 0)]
    if len(finite) and finite.max() / finite.min() > 30:
        log_scale(ax)
    ax.set_title("Loss (bits per symbol)")
    ax.set_xlabel("batch (step)")
    ax.set_ylabel("cross-entropy, bits per symbol")
    ax.legend(loc="upper right", fontsize="small")


def _draw_sample(ax, sample: str) -> None:
    ax.set_axis_off()
    shown = min(len(sample), SAMPLE_CHARACTERS)
    lines = sample_lines(sample)
    title = f"Generated text ({files.SAMPLE}, first {shown} characters)"
    if missing := missing_glyphs("".join(lines)):
        many = len(missing) > 1
        kinds = f"{len(missing)} of its characters" if many else "one of its characters"
        first = f"U+{ord(missing[0]):04X}{'...' * many}"
        title += f"\nthe font lacks {kinds} ({first}): each is drawn as a box"
    ax.set_title(title, loc="left")
    ax.text(
        0.0,
        1.0,
        "\n".join(lines),
        transform=ax.transAxes,
        va="top",
        ha="left",
        family="monospace",
        fontsize=9,
        parse_math=False,  # a $ in the text is a dollar, not mathematics
        in_layout=False,  # text wider than measured (glyphs a font lacks) never squeezes the plot
    )


def missing_glyphs(text: str) -> list[str]:
    """The distinct characters of `text` (spaces aside) that the panel's monospace font
    cannot draw, in order of appearance: matplotlib draws each as a box. Its fallback goes
    through the families a text names, and the panel names one: "monospace", whose first
    font found is the one that draws (not the next of `font.monospace`)."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont("monospace"))
    seen = dict.fromkeys(c for c in text if not c.isspace())
    return [c for c in seen if font.get_char_index(ord(c)) == 0]


def log_scale(ax) -> None:
    """A loss axis on a log scale (the loss falls over orders of magnitude), without numpy's
    overflow warnings when a loss near 1e308 pushes the scale's margins past every float."""
    with np.errstate(over="ignore"):
        ax.set_yscale("log")
