"""The run folder: where a run may live, one writer at a time, a status that cannot lie, the
--overwrite swap and its recovery, consistent reads; damaged and hostile run files, and every
write failing in turn (resuming: test_resume.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib

import numpy as np
import pytest

from echo_keras.config import TrainConfig
from echo_keras.errors import EchoKerasWarning, RunFolderError
from echo_keras.run import arrays, fileio, files
from echo_keras.run import folder as runfolder
from echo_keras.run.folder import RunBusy, RunExists, RunFolder
from tests.helpers import (
    LONG_FLAGS,
    TINY,
    TINY_FLAGS,
    checkpoint_of,
    invoke,
    one_line_error,
    run_process,
    signal_at_batch,
    small_tmpfs,
    start,
    wait_for,
)

# --- where a run may live ------------------------------------------------------------------


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    result = invoke("train", "--run-dir", target, *TINY_FLAGS)
    assert result.exit_code == 2 and "--run-dir" in result.stderr
    assert target.read_text() == "mine"


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder of our own that refuses new entries, even to root (who ignores permissions)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr to make a folder immutable to root")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_run_dir_is_refused(unwritable_folder):
    result = invoke("train", "--run-dir", unwritable_folder / "echo-keras-run", *TINY_FLAGS)
    assert result.exit_code == 2, result.output
    assert "--run-dir" in result.stderr and "cannot be written" in result.stderr


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    (run_dir / "config.json").write_text('{"name": "my app"}')  # not ours, though it is named so
    for flags in ([], ["--overwrite"]):
        result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, *flags)
        assert result.exit_code == 2
        one_line_error(result, "holds files but no run", "a new or empty folder")
    assert (run_dir / "notes.txt").read_text() == "keep me"


def test_the_run_folder_may_be_named_dot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert invoke("train", "--run-dir", ".", *TINY_FLAGS).exit_code == 0
    assert files.read_status(empty)["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    result = invoke("train", "--run-dir", ".", *TINY_FLAGS, "--epochs", "3", "--resume")
    assert result.exit_code == 0, result.output  # resumed in place
    assert files.read_status(empty)["status"] == "complete"
    # Replacing it would leave the shell that ran the command in a deleted folder.
    result = invoke("train", "--run-dir", ".", *TINY_FLAGS, "--overwrite", "--seed", "4")
    one_line_error(result, "--run-dir", "holds the current folder", code=2)
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--run-dir", "empty", *TINY_FLAGS, "--overwrite", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert files.load_config(empty).seed == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_symlink_loop_as_run_dir_is_a_usage_error(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = invoke("train", "--run-dir", loop, *TINY_FLAGS)
    assert result.exit_code == 2
    one_line_error(result, "--run-dir")


@pytest.mark.parametrize("command", ["evaluate", "plot"])
def test_missing_run_folder(tmp_path, command):
    result = invoke(command, "--run-dir", tmp_path / "nothing")
    one_line_error(result, "does not exist", code=1)


def test_an_existing_run_is_refused_without_overwrite_or_resume(run_copy):
    before = {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()}
    result = invoke("train", "--run-dir", run_copy, *TINY_FLAGS)
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr and "--resume" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()} == before


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--cell", "foo"], "--cell"),
        (["--data", "x.txt", "--num-classes", "3"], "--num-classes"),
        (["--series-length", "100000000000"], "memory"),
        (["--data", "x.txt", "--documents", "--plain"], "--plain cannot train --documents"),
    ],
)
def test_a_setting_that_cannot_work_is_named_before_an_existing_run_is(run_copy, flags, fragment):
    """Told the run exists, a user who adds --overwrite would only then meet the bad flag."""
    (run_copy.parent / "x.txt").write_text("some text\n" * 50)
    with contextlib.chdir(run_copy.parent):
        result = invoke("train", "--run-dir", run_copy, *flags)
    one_line_error(result, fragment, code=2)


def test_a_run_that_failed_in_its_first_epoch_is_replaced_by_a_retry(tmp_path):
    run_dir = tmp_path / "run"
    failed = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--learning-rate", "1e38")
    assert failed.exit_code == 1
    assert not checkpoint_of(run_dir).exists()
    plotted = invoke("plot", "--run-dir", run_dir)  # not "last_batch.npz is missing"
    one_line_error(
        plotted, "has nothing to draw yet: the run is failed and has not completed an epoch "
        "(train it again)", code=1,
    )  # fmt: skip
    config_only = tmp_path / "config-only"  # a run killed before it wrote its status
    config_only.mkdir()
    shutil.copy(run_dir / files.CONFIG, config_only)
    plotted = invoke("plot", "--run-dir", config_only)
    one_line_error(plotted, "nothing to draw yet: the run is interrupted", code=1)
    shutil.rmtree(config_only)
    retry = invoke("train", "--run-dir", run_dir, *TINY_FLAGS[:-1])
    assert retry.exit_code == 0, retry.output
    assert "replacing the unfinished run" in retry.stderr
    assert files.read_status(run_dir)["status"] == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.slow
def test_a_run_killed_in_its_first_epoch_is_replaced_by_the_same_command(tmp_path):
    run_dir = tmp_path / "k1"
    process = start(run_dir, "--series-length", "3000000", "--epochs", "1", "--quiet", real=True)
    wait_for(run_dir / files.STATUS, process)
    process.kill()  # kill -9, in its first epoch: 3,000,000 symbols take far longer
    process.communicate(timeout=60)
    assert files.read_status(run_dir)["status"] == "running"
    assert not checkpoint_of(run_dir).exists()
    evaluated = invoke("evaluate", "--run-dir", run_dir)
    one_line_error(evaluated, "nothing to resume", "train it again", code=1)
    assert "--resume" not in evaluated.stderr
    resumed = invoke("train", "--run-dir", run_dir, "--resume", "--quiet")
    one_line_error(resumed, "nothing to resume", "train it again without --resume", code=1)
    retry = invoke("train", "--run-dir", run_dir, *TINY_FLAGS[:-1])
    assert retry.exit_code == 0, retry.output
    assert "replacing the unfinished run" in retry.stderr
    assert RunFolder(run_dir).status()["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]


def test_under_its_own_lock_a_writer_reads_a_dead_runs_status_as_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    files.write_config(run_dir, TrainConfig())
    files.write_status(run_dir, "running")
    record = json.loads((run_dir / files.STATUS).read_text())
    (run_dir / files.STATUS).write_text(json.dumps({**record, "pid": 1}))  # another process
    folder = RunFolder(run_dir)
    with folder.writing():
        assert folder.status()["status"] == "interrupted"
        assert folder.restartable()
        files.write_status(run_dir, "running")  # now this process's own record
        assert folder.status()["status"] == "running"


def test_a_run_without_an_epoch_is_replaced_only_when_it_holds_nothing_of_the_users(tmp_path):
    """A run stopped in its first epoch is replaced by the same command, but never with the
    user's files in it (they were deleted with it); a folder holding only what an atomic
    write of a killed training left (no config.json yet), or a data run's config.json and
    vocabulary.json alone, is one a training takes again (it was refused)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    files.write_config(run_dir, TINY)
    files.write_status(run_dir, "interrupted", "no epoch was completed")
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "data").mkdir()
    folder = RunFolder(run_dir)
    assert not folder.restartable()
    with pytest.raises(RunExists, match=r"never completed an epoch and files no run writes "
                       r"\(data, notes.txt\); move them out"):  # fmt: skip
        folder.check()
    result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS)
    one_line_error(result, "(data, notes.txt)", "or pass --overwrite to replace", code=2)
    assert (run_dir / "notes.txt").read_text() == "mine"
    (run_dir / "notes.txt").unlink()
    (run_dir / "data").rmdir()
    (run_dir / f".{files.CONFIG}.bak").write_text("mine")  # the user's, though hidden
    assert files.not_first_epoch(run_dir) == [f".{files.CONFIG}.bak"]
    assert not folder.restartable()
    (run_dir / f".{files.CONFIG}.bak").unlink()
    (run_dir / f".{files.LIVE}.k2x9_q0z.png").write_text("")  # its own files, and temporaries
    (run_dir / files.LIVE).write_text("")
    assert folder.restartable()
    # Killed before its config.json was in place: a temporary alone.
    early = tmp_path / "early"
    early.mkdir()
    (early / f".{files.CONFIG}.a1b2c3d4.json").write_text('{"trunc')
    result = invoke("train", "--run-dir", early, *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    assert not [p.name for p in early.iterdir() if p.name.startswith(".")]  # removed
    # A data run killed after its config.json and vocabulary.json, before its status.
    data = tmp_path / "data"
    data.mkdir()
    files.write_config(data, TrainConfig(data=str(tmp_path / "t.txt")))
    (data / files.VOCABULARY).write_text("{}")
    assert RunFolder(data).status()["status"] == "interrupted" and RunFolder(data).restartable()


def test_a_config_json_of_another_program_alone_is_not_a_run(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"seed": 3}')  # loads as a config, but not ours
    for flags in ([], ["--overwrite"]):
        result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, *flags)
        one_line_error(result, "holds files but no run", code=2)
    assert (run_dir / "config.json").read_text() == '{"seed": 3}'


# --- one writer at a time ------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    run_dir = tmp_path / "run"
    with RunFolder(run_dir).writing():
        with pytest.raises(RunBusy, match="is being trained by this process, in another call"):
            with RunFolder(run_dir).writing():
                pass
        for flags in ([], ["--resume"], ["--overwrite"]):
            result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, *flags)
            assert result.exit_code == 2, result.output
            one_line_error(result, "is being trained by this process")  # the lock's: ours
    assert not (tmp_path / ".run.lock").exists()  # released and removed
    with RunFolder(run_dir).writing():  # free again
        run_dir.mkdir()  # a training that has not written its config.json yet
        from echo_keras import evaluate  # no TensorFlow before the config is read

        for read in (RunFolder(run_dir).read_config, lambda: evaluate(run_dir)):
            with pytest.raises(RunBusy, match="by this process, in another call and "
                               "has no config.json yet: wait for it$"):  # fmt: skip
                read()  # not "config.json is missing", as of a damaged run
    with pytest.raises(RunFolderError, match="config.json is missing"):
        RunFolder(run_dir).read_config()  # no training: what it is


@pytest.mark.slow
def test_of_two_trainings_started_together_exactly_one_trains(tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--epochs", "12", "--series-length", "15000", "--quiet"]
    first, second = start(run_dir, *flags), start(run_dir, *flags)
    results = [process.communicate(timeout=300) for process in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], results
    loser = results[[first.returncode, second.returncode].index(2)][1]
    assert "Traceback" not in loser and len(loser.strip().splitlines()) == 1
    assert "being trained by another process (pid" in loser
    rows = files.read_history(run_dir)
    assert len(rows) == 12 * 200  # one run's rows, once
    assert files.read_status(run_dir)["status"] == "complete"


@pytest.mark.slow
def test_resume_and_overwrite_are_refused_while_another_process_trains(tmp_path):
    run_dir = tmp_path / "run"
    # For real: the refusal names the trainer's pid, which a relay's is not.
    process = start(run_dir, "--epochs", "100000", *LONG_FLAGS[2:], real=True)  # stopped below
    try:
        wait_for(checkpoint_of(run_dir), process)
        for flags in (["--resume"], ["--overwrite"]):
            result = invoke("train", "--run-dir", run_dir, "--quiet", *flags)
            assert result.exit_code == 2
            one_line_error(result, f"pid {process.pid}")
        assert RunFolder(run_dir).status()["status"] == "running"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)


def test_a_symlinked_lock_file_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    (tmp_path / ".run.lock").symlink_to(victim)
    result = invoke("train", "--run-dir", tmp_path / "run", *TINY_FLAGS)
    assert result.exit_code == 1
    one_line_error(result, "lock file is a symlink")
    assert victim.read_text() == "secret"


def test_a_lock_file_left_read_only_does_not_block_training(run_copy):
    lock = run_copy.parent / ".run.lock"
    lock.write_text("1\n")
    lock.chmod(0o444)  # another user's, say: opened read-only, flock still works
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output


# --- a status that cannot lie --------------------------------------------------------------


def test_a_running_status_without_its_process_reads_as_interrupted(run_copy):
    files.write_status(run_copy, "running")
    shutil.rmtree(run_copy / files.CHECKPOINT)
    status = RunFolder(run_copy).status()
    assert status["status"] == "interrupted"
    assert "gone" in status["message"] and "resume" not in status["message"]
    with RunFolder(run_copy).writing():  # while a writer holds the lock, it is running
        assert RunFolder(run_copy).status()["status"] == "running"
    result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 0
    assert "is interrupted: the training process is gone" in result.stderr


@pytest.mark.filterwarnings("error::echo_keras.errors.EchoKerasWarning")  # said once, as a note
def test_evaluate_and_plot_say_when_a_run_is_not_complete(run_copy):
    files.write_status(run_copy, "interrupted", "interrupted by SIGINT after 1 of 2 epochs")
    for command in ("evaluate", "plot"):
        result = invoke(command, "--run-dir", run_copy)
        assert result.exit_code == 0, result.output
        assert result.stderr.count("is interrupted") == 1, result.stderr  # not the library's too
    (run_copy / files.STATUS).write_text("garbage")  # the file is named, not just "unknown"
    result = invoke("plot", "--run-dir", run_copy)
    assert result.stderr.endswith(
        "is unknown: status.json is missing or damaged, so it may be unfinished\n"
    ), result.stderr


def test_the_resume_hint_quotes_the_folder(tmp_path, capsys):
    from echo_keras.cli.common import warn_if_unfinished

    run_dir = tmp_path / "my run"
    run_dir.mkdir()
    files.write_status(run_dir, "running")
    (run_dir / files.CHECKPOINT).mkdir()
    (run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE).write_bytes(b"")
    assert RunFolder(run_dir).status()["message"].endswith("; resume with `resume=True`")
    warn_if_unfinished(run_dir)  # the command line names the command, its folder quoted
    assert f"resume with echo-keras train --run-dir '{run_dir}' --resume" in capsys.readouterr().err


# --- the --overwrite swap ------------------------------------------------------------------


def test_overwrite_replaces_the_run_only_once_the_new_one_is_complete(run_copy):
    run_dir, parent = run_copy, run_copy.parent
    old_model = (run_dir / "model.keras").read_bytes()
    # A replacement that diverges leaves the old run exactly as it was.
    failed = invoke(
        "train", "--run-dir", run_dir, *TINY_FLAGS, "--overwrite", "--learning-rate", "1e38"
    )
    assert failed.exit_code == 1
    assert (run_dir / "model.keras").read_bytes() == old_model
    assert files.read_status(run_dir)["status"] == "complete"
    assert [p.name for p in parent.iterdir()] == ["run"]  # no temporary folder left
    # A replacement that completes takes its place.
    done = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--overwrite", "--seed", "5")
    assert done.exit_code == 0, done.output
    assert files.load_config(run_dir).seed == 5
    assert [p.name for p in parent.iterdir()] == ["run"]


def test_an_interrupted_replacement_keeps_a_complete_run_and_replaces_an_unfinished_one(
    run_copy, tmp_path
):
    """Interrupted in its second epoch, a replacement leaves a complete run as it was; but
    in place of a run that never completed an epoch it stays, to be resumed (its epoch was
    thrown away, and the worthless run kept), the user's files beside it given up only to
    an overwrite."""
    from echo_keras import train
    from echo_keras.errors import Interrupted, TrainingDiverged

    def sigint_at(batch):
        return [signal_at_batch(signal.SIGINT, batch)]

    second_epoch = TINY.num_batches + 3
    model = (run_copy / files.MODEL).read_bytes()
    with pytest.raises(Interrupted, match="the previous run in .* is unchanged"):
        train(TINY, run_copy, overwrite=True, callbacks=sigint_at(second_epoch))
    assert (run_copy / files.MODEL).read_bytes() == model
    unfinished = tmp_path / "unfinished"
    with pytest.raises(TrainingDiverged):
        train(dataclasses.replace(TINY, learning_rate=1e38), unfinished)
    for overwrite in (False, True):
        with pytest.raises(Interrupted, match="after 1 of 2 epochs; resume with `resume=True`"):
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                train(TINY, unfinished, overwrite=overwrite, callbacks=sigint_at(second_epoch))
        replacing = [
            str(w.message) for w in said if "replacing the unfinished run" in str(w.message)
        ]
        assert len(replacing) == (not overwrite)  # without overwrite=True, said as a warning
        assert files.read_status(unfinished)["status"] == "interrupted"
        assert checkpoint_of(unfinished).exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "unfinished"]
        shutil.rmtree(unfinished / files.CHECKPOINT)  # unfinished again, for the next turn
        files.write_status(unfinished, "interrupted", "in its first epoch")
    with pytest.raises(Interrupted, match="is unchanged"):  # in its first epoch: no better
        with pytest.warns(EchoKerasWarning, match="^replacing the unfinished run in "):
            train(TINY, unfinished, callbacks=sigint_at(3))
    assert files.read_status(unfinished)["message"] == "in its first epoch"
    # With the user's files beside it, only `overwrite=True` replaces it, and gives them up.
    (unfinished / "notes.txt").write_text("mine")
    with pytest.raises(Interrupted, match="after 1 of 2 epochs; resume with `resume=True`"):
        train(TINY, unfinished, overwrite=True, callbacks=sigint_at(second_epoch))
    assert checkpoint_of(unfinished).exists() and not (unfinished / "notes.txt").exists()


def test_overwrite_keeps_the_folder_mode_and_writes_through_a_symlink(tiny_run, tmp_path):
    target = tmp_path / "store" / "run"
    target.parent.mkdir()
    shutil.copytree(tiny_run, target)
    os.chmod(target, 0o750)
    link = tmp_path / "link"
    link.symlink_to(target)
    result = invoke("train", "--run-dir", link, *TINY_FLAGS, "--overwrite", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert files.load_config(target).seed == 7
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(p.name for p in target.parent.iterdir()) == ["run"]  # no leftovers


KILL_AT_SECOND_RENAME = """
import os, signal, sys
from echo_keras.run import folder as runfolder
renames = []
original = runfolder._rename
def rename(source, target):
    renames.append(target)
    if len(renames) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    original(source, target)
runfolder._rename = rename
from echo_keras.cli.app import main
sys.argv = ["echo-keras", *sys.argv[1:]]
main()
"""


def test_a_kill_between_the_two_renames_of_a_swap_is_repaired(run_copy):
    run_dir, parent = run_copy, run_copy.parent
    old_model = (run_dir / files.MODEL).read_bytes()
    argv = [sys.executable, "-c", KILL_AT_SECOND_RENAME, "train", "--run-dir", str(run_dir)]
    killed = subprocess.run([*argv, *TINY_FLAGS, "--overwrite"], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not run_dir.exists()  # the moment the issue describes: the folder is gone
    leftovers = sorted(p.name.split("-")[0] for p in parent.iterdir())
    assert leftovers == [".run.lock", ".run.new", ".run.old"]  # the dead one's lock file stays
    result = invoke("evaluate", "--run-dir", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert "restored the previous run" in result.stderr
    assert (run_dir / files.MODEL).read_bytes() == old_model
    assert [p.name for p in parent.iterdir()] == ["run"]


def test_leftovers_of_dead_processes_are_removed_by_the_next_writer(tiny_run, run_copy):
    parent = run_copy.parent
    (parent / ".run.new-1-abc123").mkdir()
    shutil.copytree(tiny_run, parent / ".run.old-1-def456")
    (parent / ".run.old-1-def456.new-2-aaaaaa").mkdir()  # another run's (".run.old-1-...")
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in parent.iterdir()) == [".run.old-1-def456.new-2-aaaaaa", "run"]


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


# --- consistent reads ----------------------------------------------------------------------


def _fake_run(folder, seed):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "model.keras").write_text(str(seed))


def test_a_reader_sees_one_version_of_the_folder_across_a_swap(tmp_path):
    run_dir, new = tmp_path / "run", tmp_path / "incoming"
    _fake_run(run_dir, 1)
    _fake_run(new, 2)
    folder = RunFolder(run_dir)
    seen = []

    def read(view):
        seen.append(json.loads((view / "config.json").read_text())["seed"])
        if len(seen) == 1:
            folder.finish(new)  # swapped, and the old folder deleted, in the middle of the read
        return seen[-1], (view / "model.keras").read_text()

    assert folder.read(read) == (2, "2")  # the old folder vanished: read again, whole
    assert seen == [1, 2]


def test_a_reader_pinned_to_the_old_folder_reads_it_whole(tmp_path):
    run_dir, new = tmp_path / "run", tmp_path / "incoming"
    _fake_run(run_dir, 1)
    _fake_run(new, 2)
    folder = RunFolder(run_dir)
    original = shutil.rmtree

    def read(view):
        seed = json.loads((view / "config.json").read_text())["seed"]
        if new.exists():
            runfolder.shutil.rmtree = lambda *a, **k: None  # the old folder stays a moment
            try:
                folder.finish(new)
            finally:
                runfolder.shutil.rmtree = original
        return seed, (view / "model.keras").read_text()

    assert folder.read(read) == (1, "1")  # not the old config with the new model


# --- damaged run files ---------------------------------------------------------------------


def damage(run_dir, name, how):
    target = run_dir / name
    if how == "missing":
        target.unlink()
    elif how == "corrupt":
        target.write_bytes(b"\x00garbage\xff" * 10)
    elif how == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])


EVALUATE = ["evaluate"]
PLOT = ["plot"]
RESUME = ["train", "--resume", "--epochs", "3", "--quiet"]


@pytest.mark.parametrize(
    "command, name, how",
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
def test_a_damaged_file_is_named_in_one_line(run_copy, command, name, how):
    damage(run_copy, name, how)
    result = invoke(*command, "--run-dir", run_copy)
    line = one_line_error(result, name.split("/")[-1], code=1)
    # The file as the user names it, never the handle it was read through, nor "not found".
    assert "/proc/" not in line
    assert how == "missing" or "not found" not in line.lower()


# --- hostile run files: config.json --------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("num_classes", 2.5, "must be an integer"),
        ("num_classes", 10**30, "num_classes"),
        ("learning_rate", "0.3", "must be a number"),
        ("cell", 5, "cell"),
        ("batch_size", 3, "does not match model.keras"),
        ("state_size", 8, "does not match model.keras"),
        ("num_classes", 3, "does not match model.keras"),
    ],
)
def test_a_hostile_config_is_called_damaged(run_copy, key, value, fragment):
    path = run_copy / files.CONFIG
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, key: value}))
    result = invoke("evaluate", "--run-dir", run_copy)
    one_line_error(result, "config.json is damaged", fragment, code=1)


@pytest.mark.parametrize(
    "key", ["state_size", "total_series_length", "num_epochs", "learning_rate"]
)
def test_a_config_number_past_any_float_is_called_damaged(run_copy, key):
    path = run_copy / files.CONFIG
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, key: 10**400}))  # 401 digits, no float holds it
    for command in (["evaluate"], ["plot"], ["predict", "0110"]):
        result = invoke(*command, "--run-dir", run_copy)
        one_line_error(result, "config.json is damaged", "1.00e+400", code=1)


def test_a_huge_config_json_is_not_read(run_copy):
    (run_copy / files.CONFIG).write_text('{"seed": 0, "x": "' + "a" * (2 << 20) + '"}')
    result = invoke("evaluate", "--run-dir", run_copy)
    one_line_error(result, "config.json is damaged", "larger than", code=1)


def test_a_deeply_nested_config_is_called_damaged(run_copy):
    (run_copy / files.CONFIG).write_text("[" * 100000 + "]" * 100000)
    result = invoke("evaluate", "--run-dir", run_copy)
    one_line_error(result, "config.json is damaged", "nested too deeply", code=1)


# --- hostile run files: last_batch.npz -----------------------------------------------------


def _npz_member(name, header_shape, payload: bytes, dtype="<i8"):
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return name + ".npy", buffer.getvalue() + payload


def _write_npz(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)


def test_an_array_larger_than_the_config_allows_is_refused_from_its_header(run_copy):
    batch = arrays.read_last_batch(run_copy, files.load_config(run_copy))
    members = [
        _npz_member("inputs", (100000, 100000), b"\0" * 64),  # 80 GB promised
        _npz_member("targets", batch["targets"].shape, batch["targets"].astype("<i8").tobytes()),
    ]
    _write_npz(run_copy / files.LAST_BATCH, members)
    result = invoke("plot", "--run-dir", run_copy)
    one_line_error(result, "last_batch.npz is damaged", "config.json says", code=1)


def test_a_zip_bomb_is_refused_without_inflating_it(run_copy):
    config = files.load_config(run_copy)
    shape = (config.batch_size, config.truncated_backprop_length)
    bomb = np.zeros(200 << 20, dtype=np.uint8).tobytes()  # 200 MiB of zeros, about 200 KB zipped
    members = [
        _npz_member("inputs", shape, bomb),
        _npz_member("targets", shape, np.zeros(shape, "<i8").tobytes()),
        _npz_member("probabilities", (*shape, 2), np.zeros((*shape, 2), "<f8").tobytes(), "<f8"),
    ]
    _write_npz(run_copy / files.LAST_BATCH, members, zipfile.ZIP_DEFLATED)
    assert (run_copy / files.LAST_BATCH).stat().st_size < 2 << 20
    code, seconds, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 1, err
    assert "last_batch.npz is damaged" in err and "its header says" in err
    assert peak_mib < 200, peak_mib  # the 200 MiB were never inflated


def test_a_zip_member_that_inflates_past_its_declared_size_is_never_inflated(run_copy):
    """The zip's own sizes say 928 bytes; the deflate stream holds 200 MiB more."""
    config = files.load_config(run_copy)
    shape = (config.batch_size, config.truncated_backprop_length)
    members = {
        "inputs": np.zeros(shape, "<i8"),
        "targets": np.zeros(shape, "<i8"),
        "probabilities": np.full((*shape, 2), 0.5),
    }
    out, central = io.BytesIO(), []
    for name, array in members.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        data, filename = buffer.getvalue(), f"{name}.npy".encode()
        extra = b"\0" * (200 << 20) if name == "probabilities" else b""
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = packer.compress(data + extra) + packer.flush()
        crc, offset = zlib.crc32(data), out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed),
                              len(data), len(filename), 0) + filename + packed)  # fmt: skip
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                                   len(packed), len(data), len(filename), 0, 0, 0, 0, 0,
                                   offset) + filename)  # fmt: skip
    begin, directory = out.tell(), b"".join(central)
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 3, 3, len(directory), begin, 0))
    (run_copy / files.LAST_BATCH).write_bytes(out.getvalue())
    code, _, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 0, err  # the declared 928 bytes are all that is read
    assert peak_mib < 200, peak_mib


# --- hostile run files: history.csv, and files that are not what they claim ----------------


def test_a_history_line_of_megabytes_is_refused(run_copy):
    with open(run_copy / files.HISTORY, "a") as handle:
        handle.write("2,0,60," + "9" * (1 << 20) + "\n")
    result = invoke("plot", "--run-dir", run_copy)
    one_line_error(result, "history.csv is damaged", "longer than", code=1)


@pytest.mark.parametrize(
    "name, command", [("config.json", "plot"), ("history.csv", "plot"), ("config.json", "evaluate")]
)
@pytest.mark.parametrize("kind", ["fifo", "symlink to /dev/zero"])
def test_run_files_that_are_not_regular_files_are_refused(run_copy, name, command, kind):
    target = run_copy / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)  # reading it would block forever
    else:
        target.symlink_to("/dev/zero")  # reading it would never end (read, never written)
    result = invoke(command, "--run-dir", run_copy)
    one_line_error(result, f"{name} is damaged", code=1)


# --- faults: every write of a run fails in turn --------------------------------------------
# As SQLite's test harness does it: nothing is torn, the failure is one line, and once the disk
# has room again the run completes. The writes are counted once per session; each test is split
# into shards (every SHARDS-th write) that can run side by side. The failing runs run their
# TensorFlow functions eagerly (`eagerly`): these tests are about the writes, which are the same
# either way (the counting fixtures check it), and 4 windows train in a third of the time
# without compiling.

# 2 epochs of 2 windows: every kind of write happens, twice where it repeats per epoch.
FAULT_FLAGS = ["--epochs", "2", "--series-length", "100", "--window", "10", "--quiet"]
FAULT_CONFIG = TrainConfig(num_epochs=2, total_series_length=100, truncated_backprop_length=10)
SHARDS = 4


def no_space(what):
    return OSError(errno.ENOSPC, f"No space left on device (injected, {what})")


class Disk:
    """Counts each write of a run (atomic files, appends, folder renames); fails number `fail_at`.

    A failing atomic write has written its temporary file whole; a failing append
    has written half its data (a torn line), as a full disk leaves them.
    """

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.fail_at, self.writes = fail_at, []
        originals = {
            "atomic_write": fileio.atomic_write,
            "append": fileio.append,
            "_rename": runfolder._rename,
        }

        def atomic_write(path, write):
            if self._fails("atomic_write", path):

                def torn(tmp):
                    write(tmp)
                    raise no_space(path.name)

                return originals["atomic_write"](path, torn)
            return originals["atomic_write"](path, write)

        def append(path, data):
            if self._fails("append", path):
                with open(path, "a") as handle:
                    handle.write(data[: len(data) // 2])
                raise no_space(path.name)
            return originals["append"](path, data)

        def rename(source, target):
            if self._fails("rename", target):
                raise no_space(target.name)
            return originals["_rename"](source, target)

        monkeypatch.setattr(fileio, "atomic_write", atomic_write)
        monkeypatch.setattr(fileio, "append", append)
        monkeypatch.setattr(runfolder, "_rename", rename)

    def _fails(self, kind, path) -> bool:
        self.writes.append((kind, path.name))
        return len(self.writes) == self.fail_at


def train(run_dir, *flags):
    return invoke("train", "--run-dir", run_dir, *FAULT_FLAGS, *flags)


def assert_nothing_torn(run_dir):
    """Every file in the folder reads whole, and no temporary file or folder is left."""
    parent = run_dir.parent
    assert sorted(p.name for p in parent.iterdir()) in (["run"], []), list(parent.iterdir())
    if not run_dir.exists():
        return
    names = [p.name for p in run_dir.rglob("*")]
    assert not [name for name in names if name.startswith(".")], names
    config = files.load_config(run_dir) if (run_dir / files.CONFIG).exists() else FAULT_CONFIG
    if (run_dir / files.STATUS).exists():
        assert files.read_status(run_dir)["status"] != "unknown"
    if (run_dir / files.HISTORY).exists():
        list(files.iter_history(run_dir))
    if (run_dir / files.LAST_BATCH).exists():
        arrays.read_last_batch(run_dir, config)
    if arrays.has_checkpoint(run_dir):
        arrays.read_checkpoint(run_dir)
    if (run_dir / files.MODEL).exists():
        from echo_keras.model import load_model

        load_model(run_dir / files.MODEL, config)


def assert_complete(run_dir, seed=0):
    assert RunFolder(run_dir).status()["status"] == "complete"
    assert files.load_config(run_dir).seed == seed
    rows = files.read_history(run_dir)
    assert [row[2] for row in rows] == list(
        range(FAULT_CONFIG.num_epochs * FAULT_CONFIG.num_batches)
    )
    assert_nothing_torn(run_dir)


def count_writes(run_dir, *flags) -> list:
    """The writes of `train` into `run_dir`, in order."""
    with pytest.MonkeyPatch.context() as patch:
        disk = Disk(patch)
        assert train(run_dir, *flags).exit_code == 0
    return disk.writes


@contextlib.contextmanager
def functions_run_eagerly():
    from echo_keras.backend import tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture
def eagerly():
    """TensorFlow functions run eagerly in this test (see the section's comment)."""
    with functions_run_eagerly():
        yield


def count_writes_both_ways(folder, *flags) -> list:
    """The writes of `train` into folder/compiled/run, in order; checked to be the same when
    TensorFlow's functions run eagerly (into folder/eager/run)."""
    writes = count_writes(folder / "compiled" / "run", *flags)
    with functions_run_eagerly():
        eager = count_writes(folder / "eager" / "run", *flags)

    def unnumbered(writes):  # a swap's folders are named with a pid and a random suffix
        return [(kind, re.sub(r"-\d+-[0-9a-f]{6}$", "", name)) for kind, name in writes]

    assert unnumbered(eager) == unnumbered(writes)
    return writes


@pytest.fixture(scope="session")
def fresh_writes(shared):
    """The writes of a fresh run, in order (counted once a session)."""
    return shared.get("fault-fresh", count_writes_both_ways)[1]


@pytest.fixture(scope="session")
def overwritten(shared):
    """(a complete run, the writes of --overwrite --seed 3 over a copy of it)."""

    def make(folder):
        assert train(folder / "base" / "run").exit_code == 0
        for way in ("compiled", "eager"):
            shutil.copytree(folder / "base" / "run", folder / way / "run")
        return count_writes_both_ways(folder, "--overwrite", "--seed", "3")

    folder, writes = shared.get("fault-overwrite", make)
    return folder / "base" / "run", writes


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_a_full_disk_at_any_write_of_a_fresh_run(
    monkeypatch, tmp_path, eagerly, fresh_writes, shard
):
    writes = fresh_writes
    kinds = {kind for kind, _ in writes}
    assert len(writes) >= 10 and kinds == {"atomic_write", "append"}, writes
    for fail_at in range(1 + shard, len(writes) + 1, SHARDS):
        run_dir = tmp_path / str(fail_at) / "run"
        with monkeypatch.context() as patch:
            Disk(patch, fail_at)
            failed = train(run_dir)
        what = writes[fail_at - 1]
        assert failed.exit_code == 1, (what, failed.output)
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], (what, lines)
        assert_nothing_torn(run_dir)
        # The disk has room again: resume what can be resumed, else simply train again.
        status = RunFolder(run_dir).status()["status"] if run_dir.exists() else "none"
        assert status != "running", what
        again = train(run_dir, "--resume") if arrays.has_checkpoint(run_dir) else train(run_dir)
        assert again.exit_code == 0, (what, again.output)
        assert_complete(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_a_full_disk_at_any_write_of_an_overwrite_keeps_the_old_run(
    monkeypatch, tmp_path, eagerly, overwritten, shard
):
    base, writes = overwritten
    assert [kind for kind, _ in writes[-2:]] == ["rename", "rename"], writes
    for fail_at in range(1 + shard, len(writes) + 1, SHARDS):
        run_dir = tmp_path / str(fail_at) / "run"
        shutil.copytree(base, run_dir)
        model = (run_dir / files.MODEL).read_bytes()
        with monkeypatch.context() as patch:
            Disk(patch, fail_at)
            failed = train(run_dir, "--overwrite", "--seed", "3")
        what = writes[fail_at - 1]
        assert failed.exit_code == 1, (what, failed.output)
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert (run_dir / files.MODEL).read_bytes() == model, what  # the old run, untouched
        assert_complete(run_dir)
        again = train(run_dir, "--overwrite", "--seed", "3")
        assert again.exit_code == 0, (what, again.output)
        assert_complete(run_dir, seed=3)


@pytest.mark.slow
def test_a_run_whose_final_save_failed_is_finished_by_resume_without_training(
    monkeypatch, tmp_path, eagerly, fresh_writes
):
    run_dir = tmp_path / "final" / "run"
    model_write = [name for _, name in fresh_writes].index(files.MODEL) + 1
    with monkeypatch.context() as patch:
        Disk(patch, model_write)
        assert train(run_dir).exit_code == 1
    rows = files.read_history(run_dir)
    assert not (run_dir / files.MODEL).exists()
    resumed = invoke("train", "--run-dir", run_dir, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert '"steps": 0' in resumed.stdout  # nothing trained again
    assert files.read_history(run_dir) == rows
    assert_complete(run_dir)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 KB tmpfs of our own inside tmp_path (`small_tmpfs`); `grow` gives it room."""
    with small_tmpfs(tmp_path / "disk", "16k") as mount:
        yield mount


def grow(disk):
    """Give the `small_disk` room (8 MB)."""
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True, capture_output=True)


@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["same command", "overwrite"])
def test_a_run_whose_disk_filled_before_its_first_status_is_trained_again(small_disk, flags):
    (small_disk / "filler").write_bytes(bytes(8192))  # room for the lock and config.json only
    run_dir = small_disk / "k1"
    failed = invoke("train", "--run-dir", run_dir, *TINY_FLAGS)
    one_line_error(failed, "No space left on device", code=1)
    assert [p.name for p in run_dir.iterdir()] == [files.CONFIG]  # not even status.json
    status = RunFolder(run_dir).status()
    assert status["status"] == "interrupted" and "no epoch was completed" in status["message"]
    evaluated = invoke("evaluate", "--run-dir", run_dir)
    one_line_error(evaluated, "nothing to resume", code=1)
    grow(small_disk)
    (small_disk / "filler").unlink()
    again = invoke("train", "--run-dir", run_dir, *TINY_FLAGS[:-1], *flags)
    assert again.exit_code == 0, again.output
    assert ("replacing the unfinished run" in again.stderr) == (not flags)
    assert RunFolder(run_dir).status()["status"] == "complete"
    assert sorted(p.name for p in small_disk.iterdir()) == ["k1"]


def test_the_warning_of_an_unfinished_run_is_one_line_whatever_its_message(run_copy):
    """A failed run records its error whole; a callback's error may hold newlines."""
    folder = runfolder.RunFolder(run_copy)
    files.write_status(run_copy, "failed", "ValueError: bad value\n  in the second line\n")
    assert folder.warning() == f"Warning: run {run_copy} is failed: ValueError: bad value ..."
    files.write_status(run_copy, "interrupted", "interrupted by SIGINT after 1 of 2 epochs")
    assert folder.warning().endswith("is interrupted: interrupted by SIGINT after 1 of 2 epochs")
    files.write_status(run_copy, "failed", "")
    assert folder.warning() == f"Warning: run {run_copy} is failed"
