"""The plot command and the live plot."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app
from echo_keras.plots.figure import draw_figure, loss_curve
from echo_keras.run import files

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png_and_prints_its_path(tiny_run, tmp_path):
    out = tmp_path / "figure.png"
    result = runner.invoke(app, ["plot", "--run-dir", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    width, height = png_size(out)
    assert 800 <= width <= 2000 and 500 <= height <= 1500


def test_plot_defaults_to_run_dir_plot_png(tiny_run):
    result = runner.invoke(app, ["plot", "--run-dir", str(tiny_run)])
    assert result.exit_code == 0, result.output
    png_size(tiny_run / "plot.png")


def test_plot_does_not_import_tensorflow(tiny_run, tmp_path):
    code = (
        "import sys; from echo_keras.cli.app import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['plot', '--run-dir', {str(tiny_run)!r}, "
        f"'--out', {str(tmp_path / 'p.png')!r}]); assert r.exit_code == 0, r.output; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


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


@pytest.mark.parametrize("rows, panels", [(1, 2), (3, 4), (8, 6)])
def test_grid_adapts_to_the_batch_size(rows, panels):
    batch = {
        "inputs": np.zeros((rows, 6), dtype=int),
        "targets": np.zeros((rows, 6), dtype=int),
        "probabilities": np.full((rows, 6, 2), 0.5),
    }
    figure = draw_figure(loss_curve([(0, 0, 0, 0.7)]), batch)
    assert len([ax for ax in figure.axes if ax.get_visible()]) == panels


@pytest.mark.parametrize(
    "name, damage",
    [
        (files.HISTORY, "missing"),
        (files.HISTORY, "garbled"),
        (files.LAST_BATCH, "missing"),
        (files.LAST_BATCH, "truncated"),
    ],
)
def test_missing_or_damaged_files_are_named(tiny_run, tmp_path, name, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "plot.png").unlink(missing_ok=True)
    target = run_dir / name
    if damage == "missing":
        target.unlink()
    elif damage == "garbled":
        lines = target.read_text().splitlines(keepends=True)
        target.write_text("".join(lines[:5] + ["0,4,x,0.5\n"] + lines[6:]))
    else:
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    result = runner.invoke(app, ["plot", "--run-dir", str(run_dir)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output
    assert not (run_dir / "plot.png").exists()


def test_a_torn_last_history_line_is_dropped(tiny_run, tmp_path):
    """A process killed while appending leaves half a line: the reader drops it."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    rows = files.read_history(run_dir)
    history = run_dir / files.HISTORY
    history.write_bytes(history.read_bytes()[:-7])
    assert files.read_history(run_dir) == rows[:-1]
    result = runner.invoke(app, ["plot", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "plot.png").stat().st_size > 0


def test_plot_of_a_missing_run_folder(tmp_path):
    result = runner.invoke(app, ["plot", "--run-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_plot_every_writes_live_png(tmp_path, tiny_config):
    from echo_keras.training import train

    run_dir = tmp_path / "run"
    train(tiny_config, run_dir, plot_every=7)
    width, _ = png_size(run_dir / "live.png")
    assert width > 500
    assert not list(run_dir.glob(".live*"))  # no temporary file left behind


def test_live_plot_writes_while_training_runs(tmp_path):
    """The live figure appears before training ends, not only at close()."""
    import time

    from echo_keras.callbacks import BatchLossRecorder
    from echo_keras.plots.live import LivePlot
    from echo_keras.training import BatchTap

    recorder = BatchLossRecorder(num_batches=10)
    tap = BatchTap()
    tap.inputs = np.zeros((10, 5, 15), dtype=np.uint8)
    tap.targets = np.zeros((10, 5, 15), dtype=np.uint8)
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


@pytest.mark.parametrize("where", ["folder", "missing parent"])
def test_plot_out_must_be_a_file_in_an_existing_folder(tiny_run, tmp_path, where):
    out = tmp_path if where == "folder" else tmp_path / "no" / "such" / "plot.png"
    result = runner.invoke(app, ["plot", "--run-dir", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0]
