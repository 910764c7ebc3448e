"""Reliability: damaged run folders, interruption and resume, divergence, overwrite, backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app
from echo_keras.run import fileio, files

runner = CliRunner()
TINY_FLAGS = ["--epochs", "2", "--series-length", "1500", "--window", "10", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def one_line_error(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def damaged_copy(source, tmp_path, name, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    target = run_dir / name
    if damage == "missing":
        target.unlink()
    elif damage == "corrupt":
        target.write_bytes(b"\x00garbage\xff" * 10)
    elif damage == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    return run_dir


# --- damaged run folders --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "plot"])
def test_missing_run_folder(tmp_path, command):
    result = invoke(command, "--run-dir", tmp_path / "nothing")
    assert result.exit_code == 1
    one_line_error(result, "does not exist")


EVALUATE = ["evaluate"]
PLOT = ["plot"]
RESUME = ["train", "--resume", "--epochs", "3", "--quiet"]


@pytest.mark.parametrize(
    "command, name, damage",
    [
        (EVALUATE, "model.keras", "missing"),
        (EVALUATE, "model.keras", "corrupt"),
        (EVALUATE, "model.keras", "truncated"),
        (EVALUATE, "config.json", "missing"),
        (EVALUATE, "config.json", "corrupt"),
        (EVALUATE, "config.json", "truncated"),
        (PLOT, "history.csv", "corrupt"),
        (PLOT, "history.csv", "missing"),
        (PLOT, "last_batch.npz", "missing"),
        (PLOT, "last_batch.npz", "corrupt"),
        (RESUME, "config.json", "corrupt"),
        (RESUME, "history.csv", "truncated"),
        (RESUME, "checkpoint/state.npz", "missing"),
        (RESUME, "checkpoint/state.npz", "corrupt"),
    ],
)
def test_a_damaged_file_is_named_in_one_line(tiny_run, tmp_path, command, name, damage):
    run_dir = damaged_copy(tiny_run, tmp_path, name, damage)
    result = invoke(*command, "--run-dir", run_dir)
    assert result.exit_code == 1
    one_line_error(result, name.split("/")[-1])


def test_evaluate_and_plot_say_when_a_run_is_not_complete(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    files.write_status(run_dir, "interrupted", "interrupted by SIGINT after 1 of 2 epochs")
    for command in ("evaluate", "plot"):
        result = invoke(command, "--run-dir", run_dir)
        assert result.exit_code == 0, result.output
        assert "is interrupted" in result.stderr


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        fileio.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


# --- overwrite ------------------------------------------------------------------------------


def test_overwrite_replaces_the_run_only_once_the_new_one_is_complete(tmp_path):
    run_dir = tmp_path / "run"
    assert invoke("train", "--run-dir", run_dir, *TINY_FLAGS).exit_code == 0
    old_model = (run_dir / "model.keras").read_bytes()
    # A replacement that diverges leaves the old run exactly as it was.
    failed = invoke(
        "train", "--run-dir", run_dir, *TINY_FLAGS, "--overwrite", "--learning-rate", "1e38"
    )
    assert failed.exit_code == 1
    assert (run_dir / "model.keras").read_bytes() == old_model
    assert files.read_status(run_dir)["status"] == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left
    # A replacement that completes takes its place.
    done = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--overwrite", "--seed", "5")
    assert done.exit_code == 0, done.output
    assert files.load_config(run_dir).seed == 5
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


# --- divergence -----------------------------------------------------------------------------


def test_divergence_stops_with_a_clear_message_and_no_model(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--learning-rate", "1e38")
    assert result.exit_code == 1
    one_line_error(result, "NaN or infinite", "--learning-rate")
    assert files.read_status(run_dir)["status"] == "failed"
    assert not (run_dir / "model.keras").exists()


# --- resume ---------------------------------------------------------------------------------


def test_resume_continues_to_more_epochs_exactly_as_an_uninterrupted_run(tmp_path):
    flags = ["--series-length", "1500", "--window", "10", "--quiet"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    assert invoke("train", "--run-dir", resumed, "--epochs", 2, *flags).exit_code == 0
    result = invoke("train", "--run-dir", resumed, "--epochs", 4, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert invoke("train", "--run-dir", straight, "--epochs", 4, *flags).exit_code == 0
    rows, expected = files.read_history(resumed), files.read_history(straight)
    assert [r[:3] for r in rows] == [r[:3] for r in expected]  # one row per batch, none twice
    np.testing.assert_allclose([r[3] for r in rows], [r[3] for r in expected], rtol=1e-5)
    assert files.load_config(resumed).num_epochs == 4
    assert files.read_status(resumed)["status"] == "complete"


def test_resume_refuses_changed_settings_and_a_complete_run(tiny_run):
    changed = invoke("train", "--run-dir", tiny_run, "--resume", "--window", "12")
    assert changed.exit_code == 2
    one_line_error(changed, "--window")
    complete = invoke("train", "--run-dir", tiny_run, "--resume", "--quiet")
    assert complete.exit_code == 1
    one_line_error(complete, "already completed", "--epochs")


def _start_training(run_dir, *flags):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "echo_keras", "train", "--run-dir", str(run_dir), *flags]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _signal_after_first_checkpoint(process, run_dir, signum):
    checkpoint = run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signum)
    return process.communicate(timeout=120)


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes_the_run(tmp_path):
    flags = ["--epochs", "40", "--series-length", "15000", "--quiet"]
    run_dir = tmp_path / "run"
    process = _start_training(run_dir, *flags)
    out, err = _signal_after_first_checkpoint(process, run_dir, signal.SIGINT)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    status = files.read_status(run_dir)
    assert status["status"] == "interrupted"
    completed, _, _ = files.read_checkpoint(run_dir)
    assert 1 <= completed < 40
    rows = files.read_history(run_dir)
    assert len(rows) == completed * 200  # history.csv holds the completed epochs, whole
    assert not (run_dir / "model.keras").exists()

    resume = _start_training(run_dir, "--resume", "--quiet")
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    straight = tmp_path / "straight"
    done = _start_training(straight, *flags)
    assert done.wait(timeout=300) == 0
    rows, expected = files.read_history(run_dir), files.read_history(straight)
    assert [r[:3] for r in rows] == [r[:3] for r in expected]
    np.testing.assert_allclose([r[3] for r in rows], [r[3] for r in expected], rtol=1e-5)
    assert files.read_status(run_dir)["status"] == "complete"


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    process = _start_training(run_dir, "--epochs", "40", "--series-length", "15000", "--quiet")
    _, err = _signal_after_first_checkpoint(process, run_dir, signal.SIGTERM)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err
    assert files.read_status(run_dir)["status"] == "interrupted"


# --- environment ----------------------------------------------------------------------------


def test_another_keras_backend_is_overridden_with_a_notice(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    command = [
        sys.executable,
        "-m",
        "echo_keras",
        "train",
        "--run-dir",
        str(tmp_path / "run"),
        *TINY_FLAGS,
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if "KERAS_BACKEND=jax" in line]
    assert len(notices) == 1 and "tensorflow" in notices[0]
    assert json.loads(done.stdout)["epochs"] == 2  # stdout still holds only the JSON


def test_resume_of_a_missing_run_folder(tmp_path):
    result = invoke("train", "--run-dir", tmp_path / "nothing", "--resume")
    assert result.exit_code == 1
    one_line_error(result, "does not exist")
    assert not (tmp_path / "nothing").exists()


def test_evaluate_an_unfinished_run_says_why_there_is_no_model(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "model.keras").unlink()
    files.write_status(run_dir, "interrupted", "interrupted by SIGINT after 1 of 2 epochs")
    result = invoke("evaluate", "--run-dir", run_dir)
    assert result.exit_code == 1
    assert "model.keras is missing: the run is interrupted" in result.stderr
    assert "Traceback" not in result.output
