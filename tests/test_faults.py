"""Every write of a run fails in turn, as SQLite's test harness does it: nothing is torn, the
failure is one line, and once the disk has room again the run completes."""

from __future__ import annotations

import errno
import shutil

import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app
from echo_keras.config import TrainConfig
from echo_keras.run import fileio, files
from echo_keras.run import folder as runfolder
from echo_keras.run.folder import RunFolder

runner = CliRunner()
# 2 epochs of 2 windows: every kind of write happens, twice where it repeats per epoch.
FLAGS = ["--epochs", "2", "--series-length", "100", "--window", "10", "--quiet"]
CONFIG = TrainConfig(num_epochs=2, total_series_length=100, truncated_backprop_length=10)


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
    return runner.invoke(app, ["train", "--run-dir", str(run_dir), *FLAGS, *flags])


def assert_nothing_torn(run_dir):
    """Every file in the folder reads whole, and no temporary file or folder is left."""
    parent = run_dir.parent
    assert sorted(p.name for p in parent.iterdir()) in (["run"], []), list(parent.iterdir())
    if not run_dir.exists():
        return
    names = [p.name for p in run_dir.rglob("*")]
    assert not [name for name in names if name.startswith(".")], names
    config = files.load_config(run_dir) if (run_dir / files.CONFIG).exists() else CONFIG
    if (run_dir / files.STATUS).exists():
        assert files.read_status(run_dir)["status"] != "unknown"
    if (run_dir / files.HISTORY).exists():
        list(files.iter_history(run_dir))
    if (run_dir / files.LAST_BATCH).exists():
        files.read_last_batch(run_dir, config)
    if files.has_checkpoint(run_dir):
        files.read_checkpoint(run_dir)
    if (run_dir / files.MODEL).exists():
        from echo_keras.model import load_model

        load_model(run_dir / files.MODEL, config)


def assert_complete(run_dir, seed=0):
    assert RunFolder(run_dir).status()["status"] == "complete"
    assert files.load_config(run_dir).seed == seed
    rows = files.read_history(run_dir)
    assert [row[2] for row in rows] == list(range(CONFIG.num_epochs * CONFIG.num_batches))
    assert_nothing_torn(run_dir)


def count_writes(monkeypatch, run_dir, *flags) -> list:
    """The writes of `train` into `run_dir`, in order."""
    disk = Disk(monkeypatch)
    assert train(run_dir, *flags).exit_code == 0
    monkeypatch.undo()
    return disk.writes


@pytest.mark.slow
def test_a_full_disk_at_any_write_of_a_fresh_run(monkeypatch, tmp_path):
    writes = count_writes(monkeypatch, tmp_path / "count" / "run")
    kinds = {kind for kind, _ in writes}
    assert len(writes) >= 10 and kinds == {"atomic_write", "append"}, writes
    for fail_at in range(1, len(writes) + 1):
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
        again = train(run_dir, "--resume") if files.has_checkpoint(run_dir) else train(run_dir)
        assert again.exit_code == 0, (what, again.output)
        assert_complete(run_dir)


@pytest.mark.slow
def test_a_full_disk_at_any_write_of_an_overwrite_keeps_the_old_run(monkeypatch, tmp_path):
    base = tmp_path / "base" / "run"
    assert train(base).exit_code == 0
    counted = tmp_path / "count" / "run"
    shutil.copytree(base, counted)
    writes = count_writes(monkeypatch, counted, "--overwrite", "--seed", "3")
    assert [kind for kind, _ in writes[-2:]] == ["rename", "rename"], writes
    for fail_at in range(1, len(writes) + 1):
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
    monkeypatch, tmp_path
):
    run_dir = tmp_path / "final" / "run"
    writes = count_writes(monkeypatch, tmp_path / "count" / "run")
    model_write = [name for _, name in writes].index(files.MODEL) + 1
    with monkeypatch.context() as patch:
        Disk(patch, model_write)
        assert train(run_dir).exit_code == 1
    rows = files.read_history(run_dir)
    assert not (run_dir / files.MODEL).exists()
    resumed = runner.invoke(app, ["train", "--run-dir", str(run_dir), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert '"steps": 0' in resumed.stdout  # nothing trained again
    assert files.read_history(run_dir) == rows
    assert_complete(run_dir)
