"""The run folder's life cycle: one writer, a status that cannot lie, the swap and its recovery,
consistent reads, and up-front refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from echo_keras.cli.app import app
from echo_keras.run import files
from echo_keras.run import folder as runfolder
from echo_keras.run.folder import RunBusy, RunFolder
from tests.cli_helpers import invoke, one_line_error, runner

TINY_FLAGS = ["--epochs", "2", "--series-length", "1500", "--window", "10", "--quiet"]
LONG_FLAGS = ["--epochs", "40", "--series-length", "15000", "--quiet"]


def start(run_dir, *flags, command="train"):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "echo_keras", command, "--run-dir", str(run_dir), *flags]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def checkpoint_of(run_dir):
    return run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE


# --- one writer at a time -------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    run_dir = tmp_path / "run"
    with RunFolder(run_dir).writing():
        with pytest.raises(RunBusy, match=f"pid {os.getpid()}"):
            with RunFolder(run_dir).writing():
                pass
        for flags in ([], ["--resume"], ["--overwrite"]):
            result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, *flags)
            assert result.exit_code == 2, result.output
            one_line_error(result, "is being trained by another process", f"pid {os.getpid()}")
    assert not (tmp_path / ".run.lock").exists()  # released and removed
    with RunFolder(run_dir).writing():  # free again
        pass


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
    process = start(run_dir, "--epochs", "100000", *LONG_FLAGS[2:])  # stopped below
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


# --- a status that cannot lie ----------------------------------------------------------------


@pytest.mark.slow
def test_after_kill_9_the_run_reads_as_interrupted_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, *LONG_FLAGS)
    wait_for(checkpoint_of(run_dir), process)
    process.kill()
    process.communicate(timeout=60)
    assert files.read_status(run_dir)["status"] == "running"  # what the file says
    status = RunFolder(run_dir).status()
    assert status["status"] == "interrupted"
    assert "the training process is gone" in status["message"]
    assert "--resume" in status["message"]  # a checkpoint exists, so resume is offered
    again = invoke("train", "--run-dir", run_dir, *LONG_FLAGS)
    assert again.exit_code == 2  # it holds completed epochs: not silently replaced
    one_line_error(again, "--resume")
    resumed = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert len(files.read_history(run_dir)) == 2 * 200
    assert RunFolder(run_dir).status()["status"] == "complete"


def test_a_running_status_without_its_process_reads_as_interrupted(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    files.write_status(run_dir, "running")
    shutil.rmtree(run_dir / files.CHECKPOINT)
    status = RunFolder(run_dir).status()
    assert status["status"] == "interrupted"
    assert "gone" in status["message"] and "--resume" not in status["message"]
    with RunFolder(run_dir).writing():  # while a writer holds the lock, it is running
        assert RunFolder(run_dir).status()["status"] == "running"
    result = invoke("evaluate", "--run-dir", run_dir)
    assert result.exit_code == 0
    assert "is interrupted: the training process is gone" in result.stderr


@pytest.mark.slow
def test_sighup_stops_training_like_sigterm(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, *LONG_FLAGS)
    wait_for(checkpoint_of(run_dir), process)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 129, err
    assert "SIGHUP" in err and "--resume" in err and "Traceback" not in err
    assert files.read_status(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_sighup_from_a_hung_up_terminal_exits_129(tmp_path):
    import pty

    run_dir = tmp_path / "run"
    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "echo_keras", "train", "--run-dir", str(run_dir), *LONG_FLAGS]
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    wait_for(checkpoint_of(run_dir), process)
    os.close(master)  # the terminal is gone: every write to it now fails
    time.sleep(0.2)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == 129
    assert files.read_status(run_dir)["status"] == "interrupted"


# --- a run that never completed an epoch does not block a retry ------------------------------


def test_a_run_that_failed_in_its_first_epoch_is_replaced_by_a_retry(tmp_path):
    run_dir = tmp_path / "run"
    failed = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, "--learning-rate", "1e38")
    assert failed.exit_code == 1
    assert not checkpoint_of(run_dir).exists()
    retry = runner.invoke(app, ["train", "--run-dir", str(run_dir), *TINY_FLAGS[:-1]])
    assert retry.exit_code == 0, retry.output
    assert "replacing the unfinished run" in retry.stderr
    assert files.read_status(run_dir)["status"] == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    (run_dir / "config.json").write_text('{"name": "my app"}')  # not ours, though it is named so
    for flags in ([], ["--overwrite"]):
        result = invoke("train", "--run-dir", run_dir, *TINY_FLAGS, *flags)
        assert result.exit_code == 2
        one_line_error(result, "already holds a run" if not flags else "no run")
    assert (run_dir / "notes.txt").read_text() == "keep me"


def test_a_failed_resume_leaves_a_complete_run_complete(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    history = run_dir / files.HISTORY
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-3]))
    result = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "3", "--quiet")
    assert result.exit_code == 1
    one_line_error(result, "history.csv is damaged")
    assert files.read_status(run_dir)["status"] == "complete"


def test_resume_refuses_fewer_epochs_than_the_run_completed(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    result = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "1", "--quiet")
    assert result.exit_code == 2
    one_line_error(result, "already completed 2 epochs", "--epochs 1")
    assert files.load_config(run_dir).num_epochs == 2


def test_the_run_folder_may_be_named_dot(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert invoke("train", "--run-dir", ".", *TINY_FLAGS).exit_code == 0
    assert files.read_status(empty)["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    result = invoke("train", "--run-dir", ".", *TINY_FLAGS, "--overwrite", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert files.load_config(empty).seed == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_symlinked_lock_file_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    (tmp_path / ".run.lock").symlink_to(victim)
    result = invoke("train", "--run-dir", tmp_path / "run", *TINY_FLAGS)
    assert result.exit_code == 1
    one_line_error(result, "lock file is a symlink")
    assert victim.read_text() == "secret"


def test_a_lock_file_left_read_only_does_not_block_training(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    lock = tmp_path / ".run.lock"
    lock.write_text("1\n")
    lock.chmod(0o444)  # another user's, say: opened read-only, flock still works
    result = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output


def test_a_symlink_loop_as_run_dir_is_a_usage_error(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = invoke("train", "--run-dir", loop, *TINY_FLAGS)
    assert result.exit_code == 2
    one_line_error(result, "--run-dir")


def test_the_resume_hint_quotes_the_folder(tmp_path):
    run_dir = tmp_path / "my run"
    run_dir.mkdir()
    files.write_status(run_dir, "running")
    (run_dir / files.CHECKPOINT).mkdir()
    (run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE).write_bytes(b"")
    message = RunFolder(run_dir).status()["message"]
    assert f"--run-dir '{run_dir}' --resume" in message


def test_tensorboard_inside_the_run_folder_is_refused_with_overwrite(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    result = invoke(
        "train", "--run-dir", run_dir, *TINY_FLAGS, "--overwrite", "--tensorboard", run_dir / "tb"
    )
    assert result.exit_code == 2
    one_line_error(result, "--tensorboard", "--overwrite")


# --- the --overwrite swap --------------------------------------------------------------------


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


def test_a_kill_between_the_two_renames_of_a_swap_is_repaired(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    old_model = (run_dir / files.MODEL).read_bytes()
    argv = [sys.executable, "-c", KILL_AT_SECOND_RENAME, "train", "--run-dir", str(run_dir)]
    killed = subprocess.run([*argv, *TINY_FLAGS, "--overwrite"], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not run_dir.exists()  # the moment the issue describes: the folder is gone
    leftovers = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert leftovers == [".run.lock", ".run.new", ".run.old"]  # the dead one's lock file stays
    result = invoke("evaluate", "--run-dir", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert "restored the previous run" in result.stderr
    assert (run_dir / files.MODEL).read_bytes() == old_model
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_leftovers_of_dead_processes_are_removed_by_the_next_writer(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (tmp_path / ".run.new-1-abc123").mkdir()
    shutil.copytree(tiny_run, tmp_path / ".run.old-1-def456")
    (tmp_path / ".run.old-1-def456.new-2-aaaaaa").mkdir()  # another run's (".run.old-1-...")
    result = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.old-1-def456.new-2-aaaaaa", "run"]


# --- consistent reads ------------------------------------------------------------------------


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


# --- refused up front, before TensorFlow and before anything is written ----------------------


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--series-length", str(10**12)], "memory"),
        (["--state-size", "1000000"], "memory"),
        (["--layers", "1000"], "--layers"),
        (["--learning-rate", "1e-300"], "0 in float32"),
        (["--learning-rate", "1e39"], "inf in float32"),
        (["--seed", str(2**32)], "--seed"),
        (["--num-classes", "70000"], "--num-classes"),
    ],
)
def test_configurations_that_cannot_work_are_refused_up_front(tmp_path, flags, fragment):
    result = invoke("train", "--run-dir", tmp_path / "run", *flags)
    assert result.exit_code == 2, result.output
    one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_run_dir_is_refused(tmp_path):
    for command in ("train", "evaluate", "plot"):
        result = runner.invoke(app, [command, "--run-dir", ""])
        assert result.exit_code == 2
        one_line_error(result, "--run-dir", "must not be empty")


def test_up_front_refusals_import_no_tensorflow(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from echo_keras.cli.app import app; "
        f"r = CliRunner().invoke(app, ['train', '--run-dir', {str(tmp_path / 'r')!r}, "
        "'--state-size', '1000000']); assert r.exit_code == 2, r.output; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_echo_beyond_the_window_is_warned_and_evaluated_in_its_own_words(tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--epochs", "1", "--series-length", "300", "--window", "6", "--echo-step", "8"]
    result = invoke("train", "--run-dir", run_dir, *flags)
    assert result.exit_code == 0, result.output
    assert "--echo-step 8 >= --window 6" in result.stderr
    quiet = invoke("train", "--run-dir", tmp_path / "quiet", *flags, "--json")
    assert "Warning" not in quiet.stderr
    table = invoke("evaluate", "--run-dir", run_dir).stdout
    assert "all 6 positions of windows 2.." in table and "first 8 positions" not in table


# --- closed or broken standard streams -------------------------------------------------------


def _train_with(tmp_path, **popen):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "echo_keras", "train", "--run-dir", str(run_dir)]
    process = subprocess.Popen([*argv, *TINY_FLAGS[:-1], "--json"], **popen)
    process.wait(timeout=300)
    return process.returncode, run_dir


@pytest.mark.parametrize("closed", [1, 2])
def test_a_closed_stdout_or_stderr_gives_no_traceback(tmp_path, closed):
    other = tmp_path / "other-stream.txt"  # the stream left open
    with open(other, "w") as stream:
        code, run_dir = _train_with(
            tmp_path,
            stderr=stream if closed == 1 else None,
            stdout=stream if closed == 2 else None,
            preexec_fn=lambda: os.close(closed),
        )
    assert code == 0
    text = other.read_text()
    assert "Traceback" not in text
    if closed == 2:
        assert json.loads(text)["epochs"] == 2  # stdout still holds its JSON, alone
    assert files.read_status(run_dir)["status"] == "complete"
    assert json.loads((run_dir / files.CONFIG).read_text())["seed"] == 0  # no stray output


def test_a_broken_stdout_pipe_keeps_the_run_and_exits_0(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: every write gets EPIPE
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        code, run_dir = _train_with(tmp_path, stdout=write_end, stderr=stderr)
    os.close(write_end)
    assert code == 0
    assert "Traceback" not in err.read_text()
    assert files.read_status(run_dir)["status"] == "complete"
