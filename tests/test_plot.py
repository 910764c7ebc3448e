"""The figure, the `plot` command and its --out, and the live figure's drawing; damaged run
files named, hostile outputs refused, a huge history bounded (live plot while training:
test_train.py)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest

from echo_keras.errors import ConfigError
from echo_keras.plots.figure import draw_figure, loss_curve, plot_run
from echo_keras.run import files
from tests.helpers import ECHO_KERAS, invoke, one_line_error, png_size, run_process

# --- the figure ----------------------------------------------------------------------------


def test_figure_has_the_tutorial_layout():
    history = [(e, b, e * 10 + b, 1.0 / (1 + e * 10 + b)) for e in range(3) for b in range(10)]
    batch = {
        "inputs": np.array([[1, 0, 1, 1]] * 5),
        "targets": np.array([[0, 1, 0, 1]] * 5),
        "probabilities": np.tile([[0.9, 0.1]], (5, 4, 1)),
    }
    figure = draw_figure(loss_curve(history), batch)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert len(visible) == 6  # loss + one panel per row, 2 x 3 as in the tutorial
    loss_axis = visible[0]
    assert loss_axis.get_yscale() == "log"
    assert len([line for line in loss_axis.lines if line.get_linestyle() == "--"]) == 2
    row = visible[1]
    heights = [patch.get_height() for patch in row.patches]
    assert heights == [1, 0, 1, 1, 0, 0.5, 0, 0.5, 0, 0, 0, 0]  # input, target x .5, pred x .3
    colors = {tuple(np.round(patch.get_facecolor()[:3], 2)) for patch in row.patches}
    assert colors == {(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.5, 0.0)}
    assert row.get_xlabel() and row.get_ylabel() and row.get_title()
    assert figure.legends
    # Predicted 0 everywhere against targets 0 1 0 1: positions 1 and 3 are marked wrong.
    (marks,) = row.lines
    assert list(marks.get_xdata()) == [1.5, 3.5] and row.get_title().endswith("2 wrong of 4")
    legend = figure.legends[0]
    labels = [text.get_text() for text in legend.get_texts()]
    assert "wrong prediction" in labels and "only tell the three apart" in (
        legend.get_title().get_text()
    )
    assert all(patch.get_edgecolor() == patch.get_facecolor() for patch in row.patches)


def test_a_runs_figure_names_its_settings(tiny_run):
    from echo_keras.plots.figure import draw_run

    title = draw_run(tiny_run)._suptitle.get_text()
    assert "echo step 3, window 10, LSTM of 4 units; 2 epochs, 60 batches" in title


def test_a_dollar_in_a_runs_name_is_drawn_as_a_dollar(tiny_run, tmp_path):
    """Matplotlib reads text between two $ as mathematics, and fails on `$x^$`."""
    from echo_keras.plots.figure import draw_run

    run_dir = tmp_path / "e$x^$"
    shutil.copytree(tiny_run, run_dir)
    result = invoke("plot", "--run-dir", run_dir, "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "p.png")
    assert "e$x^$" in draw_run(run_dir)._suptitle.get_text()


@pytest.mark.parametrize("rows, panels", [(1, 2), (3, 4), (8, 6)])
def test_grid_adapts_to_the_batch_size(rows, panels):
    batch = {
        "inputs": np.zeros((rows, 6), dtype=int),
        "targets": np.zeros((rows, 6), dtype=int),
        "probabilities": np.full((rows, 6, 2), 0.5),
    }
    figure = draw_figure(loss_curve([(0, 0, 0, 0.7)]), batch)
    assert len([ax for ax in figure.axes if ax.get_visible()]) == panels


# --- the plot command ----------------------------------------------------------------------


def test_plot_writes_a_png_and_prints_its_path(tiny_run, tmp_path):
    out = tmp_path / "figure.png"
    result = invoke("plot", "--run-dir", tiny_run, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    width, height = png_size(out)
    assert 800 <= width <= 2000 and 500 <= height <= 1500


def test_plot_defaults_to_run_dir_plot_png(run_copy):
    result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 0, result.output
    png_size(run_copy / "plot.png")


def test_plot_of_a_missing_run_folder(tmp_path):
    result = invoke("plot", "--run-dir", tmp_path / "nothing")
    assert result.exit_code == 1 and "does not exist" in result.stderr


@pytest.mark.parametrize(
    "name, damage",
    [
        (files.HISTORY, "missing"),
        (files.HISTORY, "garbled"),
        (files.LAST_BATCH, "missing"),
        (files.LAST_BATCH, "truncated"),
    ],
)
def test_missing_or_damaged_files_are_named(run_copy, name, damage):
    run_dir = run_copy
    (run_dir / "plot.png").unlink(missing_ok=True)
    target = run_dir / name
    if damage == "missing":
        target.unlink()
    elif damage == "garbled":
        lines = target.read_text().splitlines(keepends=True)
        target.write_text("".join(lines[:5] + ["0,4,x,0.5\n"] + lines[6:]))
    else:
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    result = invoke("plot", "--run-dir", run_dir)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output
    assert not (run_dir / "plot.png").exists()


def test_a_torn_last_history_line_is_dropped(run_copy):
    """A process killed while appending leaves half a line: the reader drops it."""
    run_dir = run_copy
    rows = files.read_history(run_dir)
    history = run_dir / files.HISTORY
    history.write_bytes(history.read_bytes()[:-7])
    assert files.read_history(run_dir) == rows[:-1]
    result = invoke("plot", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "plot.png").stat().st_size > 0


def test_a_loss_near_the_floats_limit_is_drawn_without_warnings(run_copy):
    lines = (run_copy / files.HISTORY).read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",1e308"
    (run_copy / files.HISTORY).write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's overflow in the log scale
        result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 0 and result.stderr == "", result.output


@pytest.mark.slow
def test_plot_of_three_million_history_rows_is_bounded(run_copy):
    batches = 3000
    with open(run_copy / files.HISTORY, "w") as handle:
        handle.write(files.HISTORY_HEADER)
        for epoch in range(1000):
            base = epoch * batches
            handle.write(
                "".join(
                    f"{epoch},{b},{base + b},{1.0 / (1 + base + b)!r}\n" for b in range(batches)
                )
            )
    code, seconds, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 0, err
    assert seconds < 45 and peak_mib < 1024, (seconds, peak_mib)
    assert (run_copy / "plot.png").stat().st_size > 0


def test_a_run_folder_named_with_bytes_that_are_not_utf8_is_drawn(run_copy, tmp_path):
    """matplotlib refuses the lone surrogate Python keeps such a byte as: the title shows
    U+FFFD, as a terminal does."""
    from echo_keras.plots.figure import draw_run

    odd = tmp_path / os.fsdecode(b"run\xffdir")
    run_copy.rename(odd)
    done = subprocess.run([*ECHO_KERAS, "plot", "--run-dir", odd], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == os.fsencode(odd / "plot.png") + b"\n"  # the name's own bytes
    assert png_size(odd / "plot.png")
    assert draw_run(odd).get_suptitle().startswith("run\ufffddir: echo step")


def test_plot_never_writes_through_a_run_folders_own_plot_png_link(run_copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run_copy / "plot.png").unlink(missing_ok=True)
    (run_copy / "plot.png").symlink_to(victim)
    result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep"
    assert not (run_copy / "plot.png").is_symlink()
    assert (run_copy / "plot.png").read_bytes().startswith(MAGIC["png"])


# --- plot --out ----------------------------------------------------------------------------

MAGIC = {
    "png": b"\x89PNG",
    "svg": b"<?xml",
    "pdf": b"%PDF",
    "jpg": b"\xff\xd8\xff",
    "eps": b"%!PS",
}


@pytest.mark.parametrize("extension", sorted(MAGIC))
def test_plot_out_honours_the_extension(tiny_run, tmp_path, extension, caplog):
    """And says nothing else: matplotlib's PostScript backend logs that it draws the
    translucent lines opaque, a line that is not ours to print."""
    out = tmp_path / f"figure.{extension}"
    result = invoke("plot", "--run-dir", tiny_run, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(MAGIC[extension])
    assert result.stderr == "" and caplog.records == []


@pytest.mark.parametrize("name", ["figure.xyz", "figure"])
def test_plot_out_refuses_an_unknown_format(tiny_run, tmp_path, name):
    result = invoke("plot", "--run-dir", tiny_run, "--out", tmp_path / name)
    one_line_error(result, "--out", "unknown image format", code=2)
    assert not (tmp_path / name).exists()


def test_plot_out_refuses_pgf_which_needs_latex(tiny_run, tmp_path):
    result = invoke("plot", "--run-dir", tiny_run, "--out", tmp_path / "figure.pgf")
    one_line_error(result, "unknown image format", code=2)


@pytest.mark.parametrize("where", ["folder", "missing parent"])
def test_plot_out_must_be_a_file_in_an_existing_folder(tiny_run, tmp_path, where):
    out = tmp_path if where == "folder" else tmp_path / "no" / "such" / "plot.png"
    result = invoke("plot", "--run-dir", tiny_run, "--out", out)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0]


def test_plot_out_that_is_a_symlink_loop_is_a_usage_error(tiny_run, tmp_path):
    loop = tmp_path / "plot.png"
    loop.symlink_to(loop)
    result = invoke("plot", "--run-dir", tiny_run, "--out", loop)
    one_line_error(result, "--out", "symlink", code=2)
    assert loop.is_symlink()


def test_plot_out_writes_through_a_symlink(tiny_run, tmp_path):
    target, link = tmp_path / "real.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    result = invoke("plot", "--run-dir", tiny_run, "--out", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_bytes().startswith(MAGIC["png"])


def _special_files(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    specials = [fifo, folder]
    if os.geteuid() == 0:  # a device node of our own, never the system's /dev/null
        device = tmp_path / "null.png"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        specials.append(device)
    return specials


def test_plot_out_refuses_devices_fifos_and_folders(tiny_run, tmp_path):
    for path in _special_files(tmp_path):
        before = path.lstat()
        result = invoke("plot", "--run-dir", tiny_run, "--out", path)
        one_line_error(result, "--out", code=2)
        after = path.lstat()
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# --- the live figure's drawing -------------------------------------------------------------


def test_live_plot_writes_while_training_runs(tmp_path):
    """The live figure appears before training ends, not only at close()."""
    from echo_keras.callbacks import BatchLossRecorder
    from echo_keras.data import series_windows
    from echo_keras.fitting import BatchTap
    from echo_keras.plots.live import LivePlot

    recorder = BatchLossRecorder(num_batches=10)
    tap = BatchTap()
    symbols = np.zeros(10 * 5 * 15, dtype=np.uint8)
    tap.windows = series_windows(symbols, symbols, batch_size=5, window=15)
    tap.logits_source = lambda: np.zeros((5, 15, 2))
    live = LivePlot(tmp_path / "live.png", 5, recorder, tap)
    try:
        recorder.on_epoch_begin(0)
        for batch in range(5):
            recorder.on_train_batch_end(batch, {"batch_loss": 0.7})
            live.on_train_batch_end(batch)
        deadline = time.monotonic() + 60
        while not (tmp_path / "live.png").exists():
            assert time.monotonic() < deadline, "no live figure while training"
            time.sleep(0.05)
            live.on_train_batch_end(4)  # training goes on; the due frame is sent when ready
        assert live.frames_sent >= 1
    finally:
        live.close()
    png_size(tmp_path / "live.png")


@pytest.mark.parametrize("how", ["a signal", "the deadline"])
def test_a_drawing_process_that_stalls_never_holds_training_up(tmp_path, monkeypatch, how):
    """close() waits for the last frame at most CLOSE_SECONDS, and not at all once a signal
    has asked training to stop; the stalled drawer is killed, live.png keeps its last frame."""
    from echo_keras.callbacks import BatchLossRecorder
    from echo_keras.data import series_windows
    from echo_keras.fitting import BatchTap
    from echo_keras.plots import live as live_module

    recorder = BatchLossRecorder(num_batches=10)
    tap = BatchTap()
    symbols = np.zeros(10 * 5 * 15, dtype=np.uint8)
    tap.windows = series_windows(symbols, symbols, batch_size=5, window=15)
    tap.logits_source = lambda: np.zeros((5, 15, 2))
    monkeypatch.setattr(live_module, "CLOSE_SECONDS", 1 if how == "the deadline" else 600)
    stopped = lambda: how == "a signal"  # noqa: E731
    live = live_module.LivePlot(tmp_path / "live.png", 5, recorder, tap, stopped=stopped)
    recorder.on_epoch_begin(0)
    for batch in range(5):
        recorder.on_train_batch_end(batch, {"batch_loss": 0.7})
    os.kill(live._process.pid, signal.SIGSTOP)  # stalled: it will never say it is ready
    for batch in range(5, 10):
        recorder.on_train_batch_end(batch, {"batch_loss": 0.7})
        live.on_train_batch_end(batch)
    closing = threading.Thread(target=live.close, daemon=True)
    try:
        closing.start()
        closing.join(timeout=20)
        assert not closing.is_alive(), "close() waits for a drawing process that cannot answer"
        assert live._process.poll() is not None  # killed, stopped as it was
    finally:
        live._process.kill()


def test_out_never_replaces_a_file_of_the_run_even_through_a_link(run_copy, tmp_path):
    history = (run_copy / "history.csv").read_bytes()
    other = tmp_path / "other"  # another run: its files are no image either
    shutil.copytree(run_copy, other)
    (tmp_path / "link.png").symlink_to(run_copy / "history.csv")
    (tmp_path / "other.png").symlink_to(other / "history.csv")
    for out in (tmp_path / "link.png", tmp_path / "other.png"):
        result = invoke("plot", "--run-dir", run_copy, "--out", out)
        one_line_error(result, f"{out} leads to ", "history.csv, which is not an image", code=2)
        with pytest.raises(ConfigError, match="^out: .* which is not an image; choose another"):
            plot_run(run_copy, out)
    out = run_copy / "checkpoint" / "state.png"
    out.write_bytes(b"the run's")  # a file of the run's, named as an image
    one_line_error(invoke("plot", "--run-dir", run_copy, "--out", out), "a file of the run", code=2)
    assert (run_copy / "history.csv").read_bytes() == (other / "history.csv").read_bytes()
    assert (run_copy / "history.csv").read_bytes() == history
    for _ in range(2):  # an image of the user's beside the run's files: written, then replaced
        assert invoke("plot", "--run-dir", run_copy, "--out", run_copy / "plot.svg").exit_code == 0
