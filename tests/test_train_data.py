"""`train --data`: a user's own sequence, the next-symbol task, one-hot input, documents that
each start from a zeroed state, validation after every epoch, and input that is refused."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from echo_keras.config import TrainConfig
from echo_keras.errors import ConfigError, EchoKerasWarning, RunFolderError
from echo_keras.evaluation import evaluate
from echo_keras.run import files
from tests.helpers import invoke, one_line_error, stop_at

# "abcd" repeated: every next symbol is certain.
SMALL = {"batch_size": 4, "truncated_backprop_length": 10, "state_size": 16}


@pytest.fixture(scope="module")
def cycle_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cycle.txt"
    path.write_text("abcd" * 1500)
    return path


@pytest.fixture(scope="module")
def cycle_run(cycle_file, tmp_path_factory):
    from echo_keras.training import train

    config = TrainConfig(
        data=str(cycle_file), num_epochs=2, optimizer="adam", learning_rate=0.02, **SMALL
    )
    run_dir = tmp_path_factory.mktemp("runs") / "cycle"
    return config, run_dir, train(config, run_dir)


def test_a_certain_next_symbol_is_learned_and_validated_every_epoch(cycle_run):
    config, run_dir, result = cycle_run
    assert [row["epoch"] for row in result.validation] == [0, 1]
    last = result.validation[-1]
    assert last["accuracy"] > 0.99 and last["bits_per_symbol"] < 0.1
    assert math.isclose(last["bits_per_symbol"], last["loss"] / math.log(2))
    assert files.read_validation(run_dir) == result.validation
    vocabulary, digests = files.read_vocabulary(run_dir)
    assert vocabulary.symbols == ("a", "b", "c", "d")
    assert set(digests) == {"data"}
    saved = files.load_config(run_dir)
    assert (saved.task, saved.input_encoding, saved.num_classes) == ("next", "onehot", 4)
    assert saved.num_batches == (5400 - 1) // 4 // 10  # 10% of 6000 held out


def test_resume_continues_a_data_run_exactly(cycle_file, cycle_run, tmp_path):
    from echo_keras.training import train

    config, _, whole = cycle_run
    run_dir = tmp_path / "resumed"
    train(dataclasses.replace(config, num_epochs=1), run_dir)
    resumed = train(config, run_dir, resume=True)
    assert resumed.history == whole.history
    assert resumed.validation == whole.validation


def test_resume_refuses_a_damaged_validation_csv(cycle_run, tmp_path):
    """validation.csv gets each epoch's row before its checkpoint: fewer rows is damage, as
    a history.csv short of rows is, not rows to drop silently."""
    from echo_keras.training import train

    config, run_dir, _ = cycle_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / files.VALIDATION).write_text("epoch,loss\nx,y\n")
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    longer = dataclasses.replace(config, num_epochs=3)
    with pytest.raises(
        RunFolderError, match="validation.csv is damaged: a row of a completed epoch is missing"
    ):
        train(longer, copy, resume=True)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_a_stop_inside_an_epoch_keeps_only_what_its_completed_epochs_validated(cycle_run, tmp_path):
    """134 batches an epoch: the fast path feeds them in two chunks. Stopped in either, the
    epoch has no end (no callback hears of one) and no validation row; on the plain path,
    where Keras ends the epoch anyway, its row is dropped."""
    from echo_keras.backend import keras
    from echo_keras.training import train

    config, _, whole = cycle_run
    ended = []

    class Ends(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ended.append(epoch)

    for batch in (10, 120):  # in the first chunk, in the last
        ended.clear()
        run_dir = tmp_path / f"fast-{batch}"
        result = train(config, run_dir, callbacks=[stop_at(1, batch), Ends()])
        assert (result.epochs, ended) == (1, [0])
        assert result.validation == whole.validation[:1] == files.read_validation(run_dir)
    ended.clear()
    plain = train(config, tmp_path / "plain", callbacks=[stop_at(1, 120), Ends()], plain=True)
    assert (plain.epochs, ended, len(plain.validation)) == (1, [0], 1)
    assert plain.validation == files.read_validation(tmp_path / "plain")


def test_the_cli_trains_on_a_file_and_prints_its_validation(cycle_file, tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--batch-size", "4", "--window", "10", "--state-size", "8", "--epochs", "1"]
    result = invoke("train", "--data", cycle_file, "--run-dir", run_dir, *flags)
    assert result.exit_code == 0, result.output
    assert "Validation after epoch 1: loss " in result.stdout
    assert "bits per symbol" in result.stdout
    config = files.load_config(run_dir)
    assert config.data == str(cycle_file.resolve())


@pytest.mark.parametrize(
    ("content", "flags", "fragments"),
    [
        (b"", [], ["is empty"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00", [], ["not UTF-8", "binary"]),
        (b"abab" * 100, ["--num-classes", "3"], ["--num-classes", "--data"]),
        (b"abab" * 100, ["--documents", "--plain"], ["--plain", "--documents"]),
        # Too short even whole: the file's fault, whatever the fraction held out.
        (b"abab" * 10, [], ["'--data': /", "data.txt has 40 symbols, too few"]),
        (b"abab" * 10, ["--validation-fraction", "0"], ["--data", "too few"]),
        (b"1 2 x", ["--data-format", "ints"], ["line 1, column 5", "'x'"]),
        (b"abab" * 100, ["--series-length", "100"], ["--series-length", "is set by --data"]),
        # The echo task on pieces shorter than its echo: documents, the held-out end, all
        # (--quiet: not the warning that no window holds an echo).
        (b"abcde\n\n" * 200, ["--documents", "--task", "echo", "--echo-step", "10", "--quiet"],
         ["'--data'", "no document of 11 symbols"]),
        (b"abab" * 1500, ["--task", "echo", "--echo-step", "700", "--quiet"],
         ["--validation-fraction", "has 600 symbols, too few for the echo task", "701"]),
        (b"abab" * 500, ["--task", "echo", "--echo-step", "2500", "--validation-fraction", "0",
                         "--quiet"],
         ["--data", "has 2000 symbols, too few for the echo task"]),
        # An echo step past the default series length: the data's length is what counts.
        (b"abab" * 500, ["--task", "echo", "--echo-step", "9999999999", "--quiet"],
         ["--data", "has 2000 symbols, too few for the echo task", "10000000000"]),
    ],
)  # fmt: skip
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, content, flags, fragments):
    data = tmp_path / "data.txt"
    data.write_bytes(content)
    run_dir = tmp_path / "run"
    result = invoke("train", "--data", data, "--run-dir", run_dir, "--window", "10", *flags)
    one_line_error(result, *fragments, code=2)
    assert not run_dir.exists()


def test_a_file_of_fewer_symbols_than_the_default_echo_step_trains_the_next_task(tmp_path):
    """The next task has no echo step: its default (3) is no bar to a 3-symbol file."""
    (tmp_path / "t.txt").write_bytes(b"abc")
    flags = ["--batch-size", "1", "--window", "1", "--state-size", "1", "--epochs", "1"]
    result = invoke("train", "--data", tmp_path / "t.txt", "--run-dir", tmp_path / "run",
                    "--validation-fraction", "0", *flags, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", ["symlink loop", "pipe"])
def test_a_data_path_that_is_no_file_is_named_as_given(tmp_path, kind):
    """Resolved, a loop raised Python's RuntimeError, and /dev/fd/N became a name no one
    can open ("No such file")."""
    if kind == "symlink loop":
        data = tmp_path / "loop1"
        data.symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(data)
        fragment = f"--data {data} cannot be read: Too many levels of symbolic links"
    else:
        read_end, write_end = os.pipe()
        os.close(write_end)
        data = Path(f"/dev/fd/{read_end}")
        fragment = f"--data {data} is not a regular file"
    try:
        for flag in ("--data", "--validation"):
            flags = ["--data", tmp_path / "x.txt"] if flag == "--validation" else []
            (tmp_path / "x.txt").write_text("some text\n" * 50)
            result = invoke("train", *flags, flag, data, "--run-dir", tmp_path / "run")
            one_line_error(result, fragment.replace("--data", flag), code=2)
    finally:
        if kind == "pipe":
            os.close(read_end)
    assert not (tmp_path / "run").exists()


def test_a_vocabulary_too_large_for_memory_is_refused_once_the_data_is_read(tmp_path, monkeypatch):
    """Before the file is read, the model has 2 classes and fits; with the file's 3,000
    it would not: refused then, before the run folder is made, and before the note on the
    targets its windows leave out (the command line printed it above its one-line error)."""
    from echo_keras import memory
    from echo_keras.errors import UsageError
    from echo_keras.training import train

    data = tmp_path / "data.txt"
    data.write_text(" ".join(str(i % 3000) for i in range(60_000)))
    config = TrainConfig(data=str(data), data_format="ints", batch_size=100, **{
        "truncated_backprop_length": 100, "validation_fraction": 0})  # fmt: skip
    monkeypatch.setattr(memory, "available_memory", lambda: 256 * 1024**2)
    assert memory.memory_problem(dataclasses.replace(config, num_classes=2)) is None
    with pytest.raises(UsageError, match="3000 symbols, .*more than the 256.0 MiB available"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", EchoKerasWarning)  # no note first
            train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_error_naming_a_file_with_a_line_break_stays_one_line(tmp_path):
    data = tmp_path / "bad\nname.txt"
    data.write_bytes(b"ab\xffcd\n")
    result = invoke("train", "--data", data, "--run-dir", tmp_path / "run", "--json")
    one_line_error(result, "bad\\nname.txt line 1, column 3: not UTF-8", code=2)
    assert json.loads(result.stdout)["error"].startswith(f"{tmp_path}/bad\\nname.txt")


def test_resume_on_a_changed_or_another_file_is_refused(cycle_file, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("abcd" * 300)
    run_dir = tmp_path / "run"
    flags = ["--run-dir", run_dir, "--batch-size", "4", "--window", "10", "--state-size", "4"]
    assert invoke("train", "--data", data, *flags, "--epochs", "1").exit_code == 0
    before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    other = invoke("train", "--data", cycle_file, *flags, "--epochs", "2", "--resume")
    one_line_error(other, "--data", "only --epochs may change", code=2)
    data.write_text("abcd" * 301)
    changed = invoke("train", "--data", data, *flags, "--epochs", "2", "--resume")
    one_line_error(changed, "--data", "not the file the run", "was trained on", code=2)
    data.rename(tmp_path / "moved.txt")  # no way on but to put it back: say so
    moved = invoke("train", *flags, "--epochs", "2", "--resume")
    one_line_error(moved, f"--data {data}, which the run in", "put it back there", code=2)
    after = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    assert after == before


# --- documents: each starts from a zeroed state, in training and in scoring ----------------


@pytest.fixture(scope="module")
def documents():
    """Documents of random lengths over 3 symbols, as ids, and where each starts."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, size=30)
    ids = rng.integers(0, 3, size=int(lengths.sum())).astype(np.uint8)
    return ids, np.concatenate([[0], np.cumsum(lengths)[:-1]])


def _model(config):
    from echo_keras.fitting import build_compiled_model

    return build_compiled_model(config)


def test_a_document_is_scored_as_if_it_were_alone(documents):
    """The loss of documents laid out together equals the sum of each one's loss scored
    alone from a zeroed state; carrying the state across them would change it."""
    from echo_keras.data import Windows, document_windows
    from echo_keras.loops import PredictLoop, score_windows

    ids, starts = documents
    config = TrainConfig(
        data="unused", num_classes=3, data_windows=1, batch_size=3, **{"state_size": 8}
    )
    window = config.truncated_backprop_length
    loop = PredictLoop(_model(config))

    def total(windows):
        mean, _ = score_windows(loop, windows)
        return mean * float(windows.weights.sum())

    together = document_windows(ids, starts, 3, window, "next", 0)
    ends = [*starts[1:], len(ids)]
    alone = sum(
        total(document_windows(ids[s:e], np.array([0]), 3, window, "next", 0))
        for s, e in zip(starts, ends, strict=True)
    )
    assert total(together) == pytest.approx(alone, rel=1e-5)
    leaked = Windows(together.inputs, together.targets, window, together.weights, None)
    assert abs(total(leaked) - alone) > 1e-4 * alone  # 10 times the tolerance above


def test_training_zeroes_a_rows_state_where_its_next_document_starts(documents):
    """With a learning rate too small to move a weight, the compiled training loop's loss
    of every window equals the masked loss of scoring it with the state reset per document."""
    import tensorflow as tf

    from echo_keras.data import document_windows
    from echo_keras.loops import PredictLoop, TrainLoop

    ids, starts = documents
    config = TrainConfig(
        data="unused",
        num_classes=3,
        data_windows=1,
        batch_size=3,
        state_size=8,
        optimizer="sgd",
        learning_rate=1e-30,
    )
    windows = document_windows(ids, starts, 3, config.truncated_backprop_length, "next", 0)
    count = windows.num_windows
    chunk = {k: tf.constant(v) for k, v in windows.chunk(0, count).items()}
    model = _model(config)
    trained, _ = TrainLoop(model, count)(**chunk, start=0, stop=count)
    from echo_keras.model import reset_states

    reset_states(model)
    inputs, targets, padding = chunk["inputs"], chunk["targets"], chunk["weights"].numpy()

    def sums_of(losses):  # per window, padding left out
        return (losses.numpy() * padding).reshape(count, -1).sum(axis=1)

    sums = sums_of(PredictLoop(model)(inputs, targets, count, chunk["resets"])[0])
    weights = padding.reshape(count, -1).sum(axis=1)
    assert np.allclose(trained.numpy(), sums / np.maximum(weights, 1), rtol=1e-5)
    reset_states(model)
    leaked = sums_of(PredictLoop(model)(inputs, targets, count)[0])
    assert not np.allclose(sums, leaked, rtol=1e-3)


def test_a_documents_run_trains_and_validates(tmp_path):
    from echo_keras.training import train

    data = tmp_path / "docs.txt"
    rng = np.random.default_rng(1)
    docs = ["".join(rng.choice(list("xyz"), size=rng.integers(5, 50))) for _ in range(200)]
    data.write_text("\n\n".join(docs))
    config = TrainConfig(data=str(data), documents=True, num_epochs=1, **SMALL)
    result = train(config, tmp_path / "run")
    assert len(result.validation) == 1 and math.isfinite(result.validation[0]["loss"])
    assert files.load_config(tmp_path / "run").documents is True


def test_data_that_does_not_fill_whole_windows_is_noted_by_train_and_evaluate(tmp_path):
    """As for the tutorial's series: 95 symbols (94 targets) in rows of 4 x 8 leave 30 out,
    a note; 1,000 (999 targets) leave 7, under 1%: no note."""
    flags = ["--epochs", "1", "--batch-size", "4", "--window", "8", "--state-size", "4"]
    flags += ["--validation-fraction", "0"]
    note = "94 targets do not fill whole windows; using 64 (2 windows of 4 x 8), dropping the"
    short, longer = tmp_path / "sh{0}rt}.txt", tmp_path / "longer.txt"  # braces: no format
    short.write_text("abcd" * 23 + "abc")
    longer.write_text("abcd" * 250)
    trained = invoke("train", "--data", short, "--run-dir", tmp_path / "run", *flags)
    assert trained.exit_code == 0, trained.output
    assert f"Note: --data: {note} last 30." in trained.stderr
    for data in ([], ["--data", short]):
        evaluated = invoke("evaluate", "--run-dir", tmp_path / "run", *data)
        assert evaluated.exit_code == 0 and note in evaluated.stderr, evaluated.output
    with pytest.warns(EchoKerasWarning, match=re.escape(note)):
        evaluate(tmp_path / "run", data=short)  # the library's caller is warned
    quiet = invoke("train", "--data", longer, "--run-dir", tmp_path / "other", *flags)
    assert quiet.exit_code == 0 and "whole windows" not in quiet.stderr, quiet.output
    evaluated = invoke("evaluate", "--run-dir", tmp_path / "run", "--data", longer)
    assert evaluated.exit_code == 0 and "whole windows" not in evaluated.stderr


def test_a_held_out_end_where_no_document_starts_is_said_to_be_a_documents_end(tmp_path):
    """With no document starting in the held-out end, the end of the last document
    validates: training notes it, and evaluate does not claim documents that start there."""
    data = tmp_path / "one.txt"
    rng = np.random.default_rng(2)
    data.write_text("\n".join("".join(rng.choice(list("xyz"), size=20)) for _ in range(60)))
    run_dir = tmp_path / "run"
    flags = ["--epochs", "1", "--batch-size", "4", "--window", "10", "--state-size", "8"]
    trained = invoke("train", "--data", data, "--documents", "--run-dir", run_dir, *flags)
    assert trained.exit_code == 0, trained.output
    assert (
        "Note: no document starts in the last 10% of --data: the end of its last document "
        "validates, read from a zeroed state"
    ) in trained.stderr
    evaluated = invoke("evaluate", "--run-dir", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert (
        f"on the held-out last 10% of {data}, where no document starts: the end of its last "
        "document, read from a zeroed state"
    ) in evaluated.stdout
    assert "documents that start" not in evaluated.stdout


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--data-format", "ints"], "--data-format"),
        (["--validation-fraction", "0.5"], "--validation-fraction"),
        (["--data", "D", "--validation", "D", "--validation-fraction", "0.1"], "--validation-fr"),
        (["--data", "D", "--echo-step", "7"], "--echo-step"),
        (["--data", "D", "--num-classes", "5"], "--num-classes"),
    ],
)
def test_a_setting_the_others_would_leave_unused_is_refused(cycle_file, tmp_path, flags, flag):
    flags = [str(cycle_file) if word == "D" else word for word in flags]
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, "--epochs", "1", *flags)
    one_line_error(
        result,
        f"Invalid value for '{flag}",
        "has no use" if "num" not in flag else "is set by --data",
        code=2,
    )
    assert not run_dir.exists()


def test_the_library_keeps_data_paths_whole_and_refuses_what_a_new_run_leaves_unused(
    cycle_file, tmp_path, monkeypatch
):
    from echo_keras.training import train

    monkeypatch.chdir(cycle_file.parent)
    # Kept whole, as the command line keeps them: a resume may run in another folder.
    assert TrainConfig(data=Path(cycle_file.name)).data == str(cycle_file)
    assert TrainConfig(validation_data=cycle_file.name).validation_data == str(cycle_file)
    refused = [
        ({"data": cycle_file.name, "num_classes": 5}, "num_classes: is set by `data`"),
        ({"data_format": "ints"}, "data_format: has no use without `data`"),
        ({"validation_fraction": 0.5}, "validation_fraction: has no use without `data`"),
        ({"data": "a", "validation_data": "b", "validation_fraction": 0.2}, "with `validation"),
        ({"data": cycle_file.name, "echo_step": 5}, "echo_step: has no use with the `next`"),
    ]
    for settings, message in refused:
        with pytest.raises(ConfigError, match=message):
            train(TrainConfig(**{**SMALL, **settings}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # A run that an earlier version wrote with such a setting still reads.
    assert TrainConfig.from_dict({"data_format": "ints", "echo_step": 5}).validate()


def test_a_resume_whose_vocabulary_contradicts_its_config_is_the_folders_fault(
    cycle_file, cycle_run, tmp_path
):
    from echo_keras.training import train

    config, trained, _ = cycle_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    vocabulary = json.loads((run_dir / files.VOCABULARY).read_text())
    (run_dir / files.VOCABULARY).write_text(json.dumps({**vocabulary, "symbols": list("abc")}))
    with pytest.raises(RunFolderError, match="holds 3 symbols; config.json says 4"):
        train(dataclasses.replace(config, num_epochs=3), run_dir, resume=True)


def test_data_inside_the_run_folder_is_refused_and_kept(cycle_file, cycle_run, tmp_path):
    from echo_keras.training import train

    run_dir = tmp_path / "run"
    shutil.copytree(cycle_run[1], run_dir)
    mine = run_dir / "mine.txt"
    shutil.copy(cycle_file, mine)
    flags = ["--batch-size", "4", "--window", "10", "--state-size", "8", "--epochs", "1"]
    for data in (["--data", mine], ["--data", cycle_file, "--validation", mine]):
        result = invoke("train", "--run-dir", run_dir, "--overwrite", *data, *flags)
        one_line_error(result, "inside the run folder", code=2)
    with pytest.raises(ConfigError, match="data: .* is inside the run folder"):
        train(TrainConfig(data=str(mine), **SMALL), run_dir, overwrite=True)
    assert mine.read_bytes() == cycle_file.read_bytes()
    assert (run_dir / files.MODEL).read_bytes() == (cycle_run[1] / files.MODEL).read_bytes()
    # The data file itself as the run folder: a file, not a folder, not data inside a run.
    itself = invoke("train", "--run-dir", mine, "--data", mine, *flags)
    one_line_error(itself, "--run-dir", "is a file, not a folder", code=2)
    assert mine.read_bytes() == cycle_file.read_bytes()


def test_the_echo_of_a_files_symbols_beyond_the_window_is_warned_of(cycle_file, tmp_path):
    flags = ["--batch-size", "4", "--window", "10", "--state-size", "4", "--epochs", "1"]
    run_dir = tmp_path / "run"
    result = invoke(
        "train", "--data", cycle_file, "--task", "echo", "--echo-step", "12", "--run-dir",
        run_dir, *flags,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Warning: --echo-step 12 >= --window 10" in result.stderr
    too_far = ["--task", "echo", "--echo-step", "5000", "--run-dir", tmp_path / "far", *flags]
    refused = invoke("train", "--data", cycle_file, *too_far)  # no warning before the error
    one_line_error(refused, "too few for the echo task", code=2)
