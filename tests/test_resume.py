"""`train --resume`: a stopped or finished run continues exactly as an uninterrupted one would,
and refuses what it cannot continue (a write failing before the final save: test_run_folder.py).
"""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pytest

from echo_keras.errors import Interrupted
from echo_keras.run import arrays, files
from echo_keras.run.folder import RunFolder
from echo_keras.training import train
from tests.helpers import (
    LONG_FLAGS,
    TINY,
    checkpoint_of,
    invoke,
    one_line_error,
    signal_after_first_checkpoint,
    signal_at_batch,
    start,
    wait_for,
)


def test_resume_continues_to_more_epochs_exactly_as_an_uninterrupted_run(run_copy, tmp_path):
    flags = ["--series-length", "1500", "--window", "10", "--quiet"]
    resumed, straight = run_copy, tmp_path / "straight"  # run_copy: the tiny run, 2 epochs
    result = invoke("train", "--run-dir", resumed, "--epochs", 4, "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Trained epochs 3-4 (60 batches) in ")  # this call's
    assert invoke("train", "--run-dir", straight, "--epochs", 4, *flags).exit_code == 0
    rows, expected = files.read_history(resumed), files.read_history(straight)
    assert [r[:3] for r in rows] == [r[:3] for r in expected]  # one row per batch, none twice
    np.testing.assert_allclose([r[3] for r in rows], [r[3] for r in expected], rtol=1e-5)
    assert files.load_config(resumed).num_epochs == 4
    assert files.read_status(resumed)["status"] == "complete"


@pytest.mark.slow
def test_a_resume_stopped_midway_is_evaluated_at_its_checkpoint_not_its_older_model(tmp_path):
    """model.keras stays from the training a resume went on from; the checkpoint is newer.
    `evaluate` scored the older model.keras without a word (the same numbers as before the
    resume); `predict` and `export`, which use model.keras, say it predates the checkpoint
    (`plot`, which does not, does not)."""
    import dataclasses

    from echo_keras.errors import EchoKerasWarning
    from echo_keras.evaluation import evaluate

    run_dir, one = tmp_path / "run", dataclasses.replace(TINY, num_epochs=1)
    train(one, run_dir)
    before = evaluate(run_dir, seed=3)
    stop = signal_at_batch(signal.SIGINT, 2 * one.num_batches + 5)  # 5 batches into epoch 4
    with pytest.raises(Interrupted):
        train(dataclasses.replace(one, num_epochs=4), run_dir, resume=True, callbacks=[stop])
    assert arrays.read_checkpoint(run_dir)[0] == 3 and (run_dir / files.MODEL).exists()
    with pytest.warns(EchoKerasWarning, match="evaluated at its checkpoint, after epoch 3$"):
        after = evaluate(run_dir, seed=3)
    straight = train(dataclasses.replace(one, num_epochs=3), tmp_path / "straight").run_dir
    assert after == evaluate(straight, seed=3) != before
    said = RunFolder(run_dir).warning()
    assert said.endswith("; its model.keras predates this training (checkpoint: epoch 3)")
    from echo_keras import export_saved_model, load_predictor

    exported = tmp_path / "exported"
    for load in (lambda: load_predictor(run_dir), lambda: export_saved_model(run_dir, exported)):
        with pytest.warns(EchoKerasWarning, match="its model.keras predates this training"):
            load()  # the library's callers are told as the command line's are
    drawn = RunFolder(run_dir).warning(model=False)  # plot's: the figure uses no model
    assert drawn == said.removesuffix(
        "; its model.keras predates this training (checkpoint: epoch 3)"
    )
    assert arrays.checkpoint_epochs(run_dir) == 3


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes_the_run(tmp_path):
    # 12 epochs of 200 windows: stopped after the first, then resumed and trained straight.
    flags = ["--epochs", "12", "--series-length", "15000", "--quiet"]
    run_dir = tmp_path / "run"
    process = start(run_dir, *flags)
    out, err = signal_after_first_checkpoint(process, run_dir, signal.SIGINT)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.rstrip().endswith(f"; resume with echo-keras train --run-dir {run_dir} --resume")
    assert len(err.strip().splitlines()) == 1
    status = files.read_status(run_dir)
    assert status["status"] == "interrupted"
    completed, *_ = arrays.read_checkpoint(run_dir)
    assert 1 <= completed < 12
    rows = files.read_history(run_dir)
    assert len(rows) == completed * 200  # history.csv holds the completed epochs, whole
    assert not (run_dir / "model.keras").exists()

    # The rest needs no process of its own: resumed, and trained straight, in this one.
    resume = invoke("train", "--run-dir", run_dir, "--resume", "--quiet")
    assert resume.exit_code == 0, resume.output
    straight = tmp_path / "straight"
    assert invoke("train", "--run-dir", straight, *flags).exit_code == 0
    rows, expected = files.read_history(run_dir), files.read_history(straight)
    assert [r[:3] for r in rows] == [r[:3] for r in expected]
    np.testing.assert_allclose([r[3] for r in rows], [r[3] for r in expected], rtol=1e-5)
    assert files.read_status(run_dir)["status"] == "complete"


@pytest.mark.slow
def test_after_kill_9_the_run_reads_as_interrupted_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, *LONG_FLAGS, real=True)
    wait_for(checkpoint_of(run_dir), process)
    process.kill()
    process.communicate(timeout=60)
    assert files.read_status(run_dir)["status"] == "running"  # what the file says
    status = RunFolder(run_dir).status()
    assert status["status"] == "interrupted"
    assert "the training process is gone" in status["message"]
    assert "resume with `resume=True`" in status["message"]  # a checkpoint: resume is offered
    again = invoke("train", "--run-dir", run_dir, *LONG_FLAGS)
    assert again.exit_code == 2  # it holds completed epochs: not silently replaced
    one_line_error(again, "--resume")
    resumed = invoke("train", "--run-dir", run_dir, "--resume", "--epochs", "2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert len(files.read_history(run_dir)) == 2 * 200
    assert RunFolder(run_dir).status()["status"] == "complete"


# --- what resume refuses -------------------------------------------------------------------


def test_resume_refuses_changed_settings_and_a_complete_run(run_copy):
    changed = invoke("train", "--run-dir", run_copy, "--resume", "--window", "12")
    one_line_error(changed, "--window", code=2)
    complete = invoke("train", "--run-dir", run_copy, "--resume", "--quiet")
    one_line_error(complete, "already completed", "--epochs", code=2)  # a usage error


def test_resume_refuses_fewer_epochs_than_the_run_completed(run_copy):
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "1", "--quiet")
    one_line_error(result, "already completed 2 epochs", "--epochs 1", code=2)
    assert files.load_config(run_copy).num_epochs == 2


def test_a_failed_resume_leaves_a_complete_run_complete(run_copy):
    history = run_copy / files.HISTORY
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-3]))
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "3", "--quiet")
    one_line_error(result, "history.csv is damaged", code=1)
    assert files.read_status(run_copy)["status"] == "complete"


@pytest.mark.parametrize("name", [files.MODEL, files.LAST_BATCH])
def test_a_file_resume_would_replace_that_is_a_folder_is_refused_before_training(run_copy, name):
    """Such a run trained its epochs, then failed to save them, and read as failed."""
    (run_copy / name).unlink()
    (run_copy / name).mkdir()
    before = (run_copy / files.HISTORY).read_bytes()
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "3", "--quiet")
    one_line_error(result, f"{name} is damaged: it is not a regular file", code=1)
    assert (run_copy / files.HISTORY).read_bytes() == before  # no epoch trained
    assert files.read_status(run_copy)["status"] == "complete"


def test_resume_of_a_missing_run_folder(tmp_path):
    result = invoke("train", "--run-dir", tmp_path / "nothing", "--resume")
    one_line_error(result, "does not exist", code=1)
    assert not (tmp_path / "nothing").exists()


def test_overwrite_and_resume_together_are_refused(tmp_path):
    result = invoke("train", "--run-dir", tmp_path / "r", "--overwrite", "--resume")
    assert result.exit_code == 2 and "cannot be used together" in result.stderr


def test_resuming_a_run_whose_epochs_all_ended_but_not_its_save_only_saves_it(run_copy):
    """Its last save failed (a full disk): the resume trains nothing, says so, and completes."""
    files.write_status(run_copy, "failed", "no space left on device")
    result = invoke("train", "--run-dir", run_copy, "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Saved the run: its 2 epochs were already trained; ")
    assert files.read_status(run_copy)["status"] == "complete"


def test_an_interrupt_says_in_the_librarys_terms_how_the_run_goes_on(tmp_path):
    with pytest.raises(Interrupted) as stopped:
        train(TINY, tmp_path / "run", callbacks=[signal_at_batch(signal.SIGTERM, 3)])
    assert str(stopped.value) == (
        "Interrupted (SIGTERM) after 0 of 2 epochs; no epoch was completed: "
        "train again to start over"
    )
    with pytest.raises(Interrupted) as stopped:  # in the second epoch
        train(
            TINY,
            tmp_path / "run2",
            callbacks=[signal_at_batch(signal.SIGTERM, TINY.num_batches + 3)],
        )
    assert str(stopped.value) == (
        "Interrupted (SIGTERM) after 1 of 2 epochs; resume with `resume=True`"
    )


def test_resuming_a_run_whose_checkpoint_was_removed_says_the_folder_is_damaged(run_copy):
    shutil.rmtree(run_copy / files.CHECKPOINT)
    result = invoke("train", "--run-dir", run_copy, "--resume", "--epochs", "3", "--quiet")
    one_line_error(
        result,
        "checkpoint/state.npz is missing, yet the run has its model: the run folder is "
        "damaged; train it again with --overwrite",
        code=1,
    )


def test_a_resumed_run_draws_the_dropout_masks_an_uninterrupted_one_draws(tmp_path):
    """The checkpoint keeps the random generators' state: without it, a resumed run drew its
    first epoch's dropout masks again, and its losses parted from the uninterrupted run's."""
    flags = ["--dropout", "0.3", "--layers", "2", "--series-length", "1500", "--window", "10"]
    first, straight = tmp_path / "first", tmp_path / "straight"
    assert invoke("train", "--run-dir", first, "--epochs", 1, *flags, "--quiet").exit_code == 0
    assert invoke("train", "--run-dir", straight, "--epochs", 2, *flags, "--quiet").exit_code == 0
    state = first / files.CHECKPOINT / files.CHECKPOINT_STATE
    saved = dict(np.load(state))
    assert sorted(k for k in saved if k.startswith("random_")) == ["random_0000", "random_0001"]

    def resumed(name, **changes):
        run_dir = tmp_path / name
        shutil.copytree(first, run_dir)
        arrays_ = {k: v for k, v in {**saved, **changes}.items() if v is not None}
        np.savez(run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE, **arrays_)
        return run_dir, invoke("train", "--run-dir", run_dir, "--resume", "--epochs", 2)

    run_dir, result = resumed("resumed")
    assert result.exit_code == 0, result.output
    assert files.read_history(run_dir) == files.read_history(straight)  # to the last digit
    # A checkpoint that keeps no random state (written before they were kept) resumes.
    run_dir, result = resumed("older", random_0000=None, random_0001=None)
    assert result.exit_code == 0, result.output
    assert len(files.read_history(run_dir)) == len(files.read_history(straight))
    _, result = resumed("half", random_0001=None)
    one_line_error(result, "state.npz is damaged: it has only some of the random states", code=1)
    _, result = resumed("floats", random_0000=saved["random_0000"].astype(np.float32))
    one_line_error(result, "state.npz is damaged: random_0000 holds float32, not integers", code=1)
