"""The figure of a run on its own data (`train --data`): training and validation loss in bits
per symbol, a sample of generated text from sample.txt, `plot` without TensorFlow, and the
live plot of such a run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from echo_keras.plots.data_figure import (
    SAMPLE_CHARACTERS,
    SAMPLE_LINES,
    SAMPLE_WIDTH,
    draw_data_figure,
    readable,
    sample_lines,
    smoothed,
)
from echo_keras.plots.figure import loss_curve
from echo_keras.run import files
from tests.helpers import invoke, png_size

TEXT = "the cat sat.\na dog ran!\nwe go home.\n" * 60  # 2160 characters: 38 windows of 5 x 10


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """A tiny run on its own text, trained once for this module: read it, never change it."""
    from echo_keras.config import TrainConfig
    from echo_keras.training import train

    folder = tmp_path_factory.mktemp("data-plot")
    (folder / "text.txt").write_text(TEXT)
    config = TrainConfig(
        data=str(folder / "text.txt"),
        num_epochs=2,
        batch_size=5,
        truncated_backprop_length=10,
        state_size=8,
        optimizer="adam",
    )
    train(config, folder / "run", progress=False, notify=[].append)  # its notes unsaid
    # Training wrote its sample; the tests below add their own, so it moves aside.
    (folder / "run" / files.SAMPLE).rename(folder / "trained-sample.txt")
    return folder / "run"


def test_a_dollar_in_a_data_files_name_is_drawn_as_a_dollar(data_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir)
    config = json.loads((run_dir / files.CONFIG).read_text())
    (run_dir / files.CONFIG).write_text(json.dumps({**config, "data": "/data/pay$\\frac$.txt"}))
    result = invoke("plot", "--run-dir", run_dir, "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "p.png")


@pytest.mark.slow
def test_training_ends_with_a_sample_of_the_runs_own_symbols(data_run):
    sample = (data_run.parent / "trained-sample.txt").read_text(encoding="utf-8")
    assert len(sample) == 500 and set(sample) <= set(TEXT)


def _texts(figure) -> str:
    return "\n".join(text.get_text() for ax in figure.axes for text in ax.texts)


# --- the figure ----------------------------------------------------------------------------


def test_loss_and_validation_are_drawn_in_bits_per_symbol():
    history = [(e, b, e * 10 + b, 2.0 / (1 + e * 10 + b)) for e in range(3) for b in range(10)]
    validation = [
        {"epoch": e, "loss": 1.0 / (e + 1), "bits_per_symbol": 1.0 / (e + 1) / math.log(2)}
        for e in range(3)
    ]
    figure = draw_data_figure(loss_curve(history), validation, None, "a title", 10)
    (ax,) = figure.axes  # no echo panels, and no sample without one
    raw, smooth, held = ax.lines[:3]
    np.testing.assert_allclose(raw.get_ydata(), [row[3] / math.log(2) for row in history])
    assert len(smooth.get_ydata()) == 30 and smooth.get_ydata()[0] == raw.get_ydata()[0]
    assert list(held.get_xdata()) == [9, 19, 29]
    np.testing.assert_allclose(held.get_ydata(), [row["bits_per_symbol"] for row in validation])
    assert len([line for line in ax.lines if line.get_linestyle() == "--"]) == 2  # epochs
    assert "bits per symbol" in ax.get_ylabel() and figure._suptitle.get_text() == "a title"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "validation, each epoch" in labels and "training, smoothed" in labels


def test_smoothing_follows_the_loss_and_skips_what_is_not_finite():
    steady = smoothed(np.full(100, 2.0))
    np.testing.assert_allclose(steady, 2.0)
    noisy = smoothed(np.array([1.0, np.nan, 3.0, 1.0, 3.0] * 40), batches=200)
    assert np.isfinite(noisy).all() and noisy[-50:].std() < 1.0


def test_the_sample_panel_shows_control_characters_readably():
    sample = "one $x$ line\nand\ta bell \x07 and a zero-width\u200bspace\n"
    figure = draw_data_figure(loss_curve([(0, 0, 0, 1.0)]), [], sample)
    assert len(figure.axes) == 2
    shown = _texts(figure)
    assert "one $x$ line\u21b5\nand\u2192a bell \\x07 and a zero-width\\u200bspace\u21b5" in shown
    (text,) = figure.axes[1].texts
    assert not text.get_parse_math() and text.get_fontfamily() == ["monospace"]
    assert files.SAMPLE in figure.axes[1].get_title(loc="left")
    assert [readable(c) for c in "a\r\x1b"] == ["a", "\\x0d", "\\x1b"]


def test_the_sample_panel_says_which_characters_its_font_cannot_draw():
    """They are drawn as boxes (no font here has them): the title says so, and names one."""
    curve = loss_curve([(0, 0, 0, 1.0)])
    title = lambda figure: figure.axes[1].get_title(loc="left")  # noqa: E731
    assert "lacks" not in title(draw_data_figure(curve, [], "plain text, caf\u00e9 \u00e0 la\n"))
    figure = draw_data_figure(curve, [], "a \U0001f600 b \U0001f40d c \U0001f600\n")
    assert title(figure).endswith(
        "\nthe font lacks 2 of its characters (U+1F600...): each is drawn as a box"
    )
    assert "lacks one of its characters (U+1F40D):" in title(
        draw_data_figure(curve, [], "\U0001f40d")
    )


def test_a_long_sample_is_cut_and_wrapped():
    lines = sample_lines("word " * 1000)
    assert len(lines) <= SAMPLE_LINES and all(len(line) <= SAMPLE_WIDTH + 4 for line in lines)
    assert lines[-1].endswith(" ...")
    assert sum(len(line) for line in lines) <= SAMPLE_CHARACTERS + 4
    assert sample_lines("short") == ["short"]
    assert len(sample_lines("\n" * 100)) == SAMPLE_LINES


def test_a_sample_of_wide_characters_is_wrapped_by_columns_and_never_squeezes_the_loss():
    """CJK characters take two columns of a monospace font, combining ones none; glyphs the
    font lacks (drawn as boxes, wider than measured) must not squeeze the loss panel."""
    wide = "".join(chr(0x4E00 + (7 * i) % 5000) for i in range(400))
    lines = sample_lines(wide)
    assert all(len(line) <= SAMPLE_WIDTH // 2 for line in lines) and len(lines) > 1
    assert "".join(lines).rstrip(" .") == wide[: sum(len(line) for line in lines)].rstrip(" .")
    accents = sample_lines("e\u0301" * 100)  # 100 columns: 90 and 10
    assert [len(line) for line in accents] == [180, 20]
    curve = loss_curve([(0, b, b, 1.0) for b in range(20)])
    widths = []
    for sample in ("plain text " * 60, wide + "\U0001f600" * 50):
        figure = draw_data_figure(curve, [], sample)
        with warnings.catch_warnings():  # the glyphs the font lacks, drawn as boxes
            warnings.simplefilter("ignore")
            figure.draw_without_rendering()  # the constrained layout is made when drawn
        widths.append(figure.axes[0].get_position().width)
    assert widths[1] == pytest.approx(widths[0], rel=0.02) and widths[0] > 0.8


# --- a trained run -------------------------------------------------------------------------


@pytest.mark.slow
def test_plot_of_a_data_run_writes_a_png_without_tensorflow(data_run, tmp_path):
    out = tmp_path / "p.png"
    code = (
        "import sys; from typer.testing import CliRunner; from echo_keras.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['plot', '--run-dir', {str(data_run)!r}, "
        f"'--out', {str(out)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(*(m in sys.modules for m in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    assert png_size(out) == (1000, 460)  # the loss panel alone: no sample.txt


@pytest.mark.slow
def test_a_data_runs_figure_shows_its_loss_and_its_sample(data_run, tmp_path):
    from echo_keras.plots.figure import draw_run

    figure = draw_run(data_run)
    (ax,) = figure.axes
    assert "text.txt, next symbol, window 10, LSTM of 8 units; 2 epochs" in (
        figure._suptitle.get_text()
    )
    validation = files.read_validation(data_run)
    assert len(validation) == 2
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [r["bits_per_symbol"] for r in validation])
    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir)
    (run_dir / files.SAMPLE).write_text("the cat ran.\nwe sat\x07 home.", encoding="utf-8")
    (run_dir / files.LAST_BATCH).unlink()  # a run on its own data does not need it
    figure = draw_run(run_dir)
    assert len(figure.axes) == 2
    assert "the cat ran.\u21b5\nwe sat\\x07 home." in _texts(figure)
    result = invoke("plot", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    width, height = png_size(run_dir / "plot.png")
    assert width == 1000 and height > 460


@pytest.mark.slow
def test_a_sample_that_is_not_utf8_is_shown_with_replacements(data_run, tmp_path):
    from echo_keras.plots.figure import draw_run

    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir)
    (run_dir / files.SAMPLE).write_bytes(b"ok \xff\xfe done")
    assert "ok \ufffd\ufffd done" in _texts(draw_run(run_dir))


@pytest.mark.slow
def test_the_live_plot_of_a_data_run_draws_its_loss(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    run_dir = tmp_path / "run"
    flags = ["--batch-size", "5", "--window", "10", "--state-size", "8", "--optimizer", "adam"]
    result = invoke(
        "train", "--data", tmp_path / "text.txt", "--run-dir", run_dir, "--epochs", "1",
        *flags, "--plot-every", "10", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert png_size(run_dir / "live.png") == (1000, 460)  # the loss panel, no echo bars


def test_characters_the_font_lacks_are_drawn_without_a_warning_each(data_run, tmp_path):
    from echo_keras.plots.figure import plot_run

    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir)
    (run_dir / "sample.txt").write_text("a 😀 b 🐍 c\n" * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_run(run_dir, tmp_path / "p.png")
    assert png_size(out)[0] == 1000
