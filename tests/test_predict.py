"""`echo-keras predict`: the state carried across chunks, lines and calls, agreement with the
trained stateful model, output, bad input, state files, pipes and long streams; and its input
and output without a model: symbols parsed a block at a time, the layout of the answers, the
line and column of a bad symbol, the echo score."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from echo_keras.errors import SymbolError
from echo_keras.run import files
from echo_keras.stream.symbols import BLOCK, EchoScore, Layout, SymbolParser, check_stream
from tests.helpers import (
    ECHO_KERAS,
    VARIANTS,
    as_text,
    assert_same_stream,
    assert_unsaved_state_is_the_json_error,
    full_device,
    invoke,
    one_line_error,
    predict_json,
    random_symbols,
    rss_mib,
    small_tmpfs,
)

# --- the carried state: chunks, lines, calls ------------------------------------------------


def run_in_chunks(model, symbols, cuts):
    state, pieces, start = model.zero_state(), [], 0
    for length in cuts:
        probabilities, state = model.run(symbols[start : start + length], state)
        pieces.append(probabilities)
        start += length
    assert start == len(symbols)
    return np.concatenate(pieces), [np.asarray(s) for s in state]


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_symbol_at_a_time_and_chunks_of_any_length_give_one_pass(stream_model, variant):
    model = stream_model(variant)
    symbols = random_symbols(model.config.num_classes, 600, seed=1)
    whole, final = run_in_chunks(model, symbols, [600])
    one_by_one, one_final = run_in_chunks(model, symbols[:300], [1] * 300)
    assert_same_stream(one_by_one, whole[:300], one_by_one.argmax(-1))
    rng = np.random.default_rng(2)
    cuts = []
    while sum(cuts) < 600:
        cuts.append(int(min(rng.choice([1, 2, 5, 17, 255, 256, 257, 300]), 600 - sum(cuts))))
    chunked, chunked_final = run_in_chunks(model, symbols, cuts)
    assert_same_stream(chunked, whole, chunked.argmax(-1))
    for a, b in zip(chunked_final, final, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pieces_longer_than_a_chunk_carry_the_state(stream_model, monkeypatch):
    from echo_keras.stream import model as streaming

    model = stream_model("lstm")
    symbols = random_symbols(2, 1000, seed=4)
    whole, _ = model.run(symbols, model.zero_state())
    monkeypatch.setattr(streaming, "LENGTHS", (64, 300))  # 1000 = 300 + 300 + 300 + 100
    model._runners.clear()
    try:
        chunked, _ = model.run(symbols, model.zero_state())
    finally:
        model._runners.clear()
    assert_same_stream(chunked, whole, chunked.argmax(-1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_calls_with_state_files_give_one_pass(trained, stream_model, variant, tmp_path):
    run_dir = trained(variant)
    k = stream_model(variant).config.num_classes
    symbols = random_symbols(k, 120, seed=5)
    whole = predict_json(run_dir, as_text(symbols, k))
    assert whole["symbols"] == symbols.tolist()
    state = tmp_path / "state.npz"
    first = predict_json(run_dir, as_text(symbols[:47], k), "--state-out", state)
    # The second part as lines of a stream, read from stdin.
    lines = "\n".join(as_text(symbols[i : i + 10], k) for i in range(47, 120, 10)) + "\n"
    second = predict_json(run_dir, "--state-in", state, input=lines)
    probabilities = np.array(first["probabilities"] + second["probabilities"])
    assert_same_stream(
        probabilities, whole["probabilities"], first["predictions"] + second["predictions"]
    )
    with np.load(state) as saved:
        assert sorted(saved.files) == sorted([*stream_model(variant).names, "weights_digest"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_one_agrees_with_the_batch_5_stateful_training_model(trained, stream_model, variant):
    """Row i of a series, streamed alone, gets what the trained stateful model predicts for
    row i when it runs over the windows in order (state carried, as in training)."""
    from echo_keras.backend import tf
    from echo_keras.data import make_windows
    from echo_keras.model import load_model, reset_states
    from echo_keras.run import files

    model = stream_model(variant)
    config = model.config
    trained_model = load_model(trained(variant) / files.MODEL)
    series = random_symbols(config.num_classes, 1000, seed=6)
    windows = make_windows(series, config.batch_size, config.truncated_backprop_length)
    reset_states(trained_model)
    batch_probabilities = np.stack(
        [
            tf.nn.softmax(trained_model(window[..., None].astype(np.float32), training=False))
            for window in windows
        ]
    )  # windows, rows, steps, classes
    row_length = windows.shape[0] * windows.shape[2]
    for row in range(config.batch_size):
        expected = batch_probabilities[:, row].reshape(row_length, config.num_classes)
        row_symbols = series[row * row_length : (row + 1) * row_length]
        np.testing.assert_array_equal(row_symbols, windows[:, row].ravel())
        probabilities, _ = model.run(row_symbols, model.zero_state())
        assert_same_stream(probabilities, expected, probabilities.argmax(-1))


# --- a process that loads runs again and again ---------------------------------------------


def test_loading_a_run_again_and_again_compiles_its_step_once_and_keeps_memory_flat(tiny_run):
    """Before, every load compiled a step of its own, and TensorFlow kept what XLA compiled
    for it: about 2 MB a load, for the life of the process."""
    import echo_keras as ek
    from echo_keras.stream.engine import ENGINES

    symbols = random_symbols(2, 50, seed=3)
    first, state = ek.load_predictor(tiny_run).predict(symbols)
    for _ in range(3):  # the engines of this worker's earlier tests given back, one kept
        ek.load_predictor(tiny_run).predict(symbols)
    built, before = ENGINES.built, rss_mib()
    for _ in range(15):
        probabilities, again = ek.load_predictor(tiny_run).predict(symbols)
        np.testing.assert_array_equal(probabilities, first)
        assert all(np.array_equal(again[name], state[name]) for name in state)
    assert ENGINES.built == built
    assert rss_mib() - before < 10  # 15 loads: some 30 MB before


def test_models_alive_at_once_keep_their_own_weights_and_a_later_one_reuses_a_step(tiny_run):
    import echo_keras as ek
    from echo_keras.model import load_run_and_vocabulary
    from echo_keras.stream.engine import ENGINES
    from echo_keras.stream.model import StreamModel

    symbols = random_symbols(2, 50, seed=5)
    kept = ek.load_predictor(tiny_run).model
    expected, _ = kept.run(symbols, kept.zero_state())
    config, trained, _ = load_run_and_vocabulary(tiny_run)
    for variable in trained.weights:
        variable.assign(variable * 0.5)
    other = StreamModel(config, trained)
    assert other.cells[0] is not kept.cells[0] and other.weights_digest != kept.weights_digest
    halved, _ = other.run(symbols, other.zero_state())
    assert np.abs(halved - expected).max() > 1e-3
    np.testing.assert_array_equal(kept.run(symbols, kept.zero_state())[0], expected)
    cells, built = other.cells[0], ENGINES.built
    del other
    again = StreamModel(config, trained)  # the step that `other` gave back
    assert again.cells[0] is cells and ENGINES.built == built
    np.testing.assert_array_equal(again.run(symbols, again.zero_state())[0], halved)


# --- output ---------------------------------------------------------------------------------


def test_plain_output_keeps_the_layout_and_ends_with_the_accuracy(tiny_run):
    result = invoke("predict", "--run-dir", tiny_run, input="0110 1\n\n100\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[3] == ""
    assert len(lines[0]) == 6 and lines[0][4] == " " and set(lines[0]) <= set("01 ")
    assert lines[1] == "" and len(lines[2]) == 3
    assert result.stderr.startswith("Accuracy ") and "over 5 positions" in result.stderr
    payload = predict_json(tiny_run, "0110 1\n\n100")
    assert "".join(map(str, payload["predictions"])) == lines[0].replace(" ", "") + lines[2]
    hits = [
        p == s for p, s in zip(payload["predictions"][3:], payload["symbols"][:-3], strict=True)
    ]
    assert payload["accuracy"] == pytest.approx(sum(hits) / 5)
    assert set(payload) == {"predictions", "symbols", "accuracy", "probabilities"}
    plain = invoke("predict", "--run-dir", tiny_run, "--json", "011")
    assert set(json.loads(plain.stdout)) == {"predictions", "symbols", "accuracy"}
    assert json.loads(plain.stdout)["accuracy"] is None  # no position has an echo yet


def test_probabilities_in_plain_output(tiny_run):
    result = invoke("predict", "--run-dir", tiny_run, "--probabilities", input="01\n1\n")
    assert result.exit_code == 0, result.output
    rows = [
        [[float(p) for p in group.split(",")] for group in line.split()]
        for line in result.stdout.splitlines()
    ]
    assert [len(row) for row in rows] == [2, 1]
    payload = predict_json(tiny_run, "011")
    np.testing.assert_allclose(sum(rows, []), payload["probabilities"], atol=1e-6)


def test_more_than_ten_classes_print_integers_line_by_line(trained):
    run_dir = trained("classes12")
    result = invoke("predict", "--run-dir", run_dir, input="11 0 7\n3\n10  11 2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [len(line.split()) for line in lines] == [3, 1, 3]
    assert all(0 <= int(v) < 12 for line in lines for v in line.split())


# --- bad input ------------------------------------------------------------------------------


def test_bad_symbols_and_usage_problems_exit_2_and_write_no_state(tiny_run, tmp_path):
    state = tmp_path / "state.npz"
    cases = [
        (["01x1"], "line 1, column 3: 'x' is not a symbol"),
        (["0121"], "symbol 2 is outside 0..1"),
        ([" "], "the input holds no symbols"),
        (["01", "--input", tmp_path / "f"], "either as an argument or with --input"),
        (["--input", tmp_path / "missing"], "--input"),
        (["--input", tmp_path], "is a folder"),
        (["01", "--state-in", tmp_path / "missing.npz"], "--state-in"),
        (["01", "--state-out", tmp_path / "no" / "s.npz"], "--state-out"),
        (["01", "--state-out", tmp_path], "--state-out"),
    ]
    for args, fragment in cases:
        result = invoke("predict", "--run-dir", tiny_run, "--state-out", state, *args)
        one_line_error(result, fragment, code=2)
        assert not state.exists() and result.stdout == ""
    empty = invoke("predict", "--run-dir", tiny_run, input="\n\n")
    one_line_error(empty, "no symbols", code=2)


def test_a_bad_symbol_late_in_a_file_stops_before_any_output(tiny_run, tmp_path):
    source = tmp_path / "symbols.txt"
    source.write_text("0110\n" * 1000 + "01 21\n")
    state = tmp_path / "state.npz"
    result = invoke("predict", "--run-dir", tiny_run, "--input", source, "--state-out", state)
    one_line_error(result, "line 1001, column 4: symbol 2 is outside 0..1", code=2)
    assert result.stdout == "" and not state.exists()


def test_state_files_from_another_run_or_damaged(trained, tiny_run, tmp_path):
    other = tmp_path / "gru.npz"
    assert invoke("predict", "--run-dir", trained("gru"), "01", "--state-out", other).exit_code == 0
    wrong_shape = tmp_path / "wide.npz"
    np.savez(wrong_shape, lstm_0_h=np.zeros((1, 8), np.float32), lstm_0_c=np.zeros((1, 8)))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00not a zip\xff" * 20)
    truncated = tmp_path / "truncated.npz"
    invoke("predict", "--run-dir", tiny_run, "01", "--state-out", truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    not_finite = tmp_path / "nan.npz"
    np.savez(not_finite, lstm_0_h=np.full((1, 4), np.nan, np.float32), lstm_0_c=np.zeros((1, 4)))
    twice = tmp_path / "twice.npz"  # which lstm_0_h counts? Neither: it is damaged
    with zipfile.ZipFile(twice, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the name written twice
        for name in ("lstm_0_h", "lstm_0_c", "lstm_0_h"):
            archive.writestr(f"{name}.npy", _npy(np.zeros((1, 4), np.float32)))
    state = tmp_path / "out.npz"
    state.write_bytes(b"earlier state")
    for path, code, fragment in [
        (other, 2, "another run"),
        (tiny_run / files.LAST_BATCH, 2, "holds an array inputs, and this run carries"),
        (wrong_shape, 2, "shape (1, 8)"),
        (garbage, 1, "is damaged"),
        (truncated, 1, "is damaged"),
        (not_finite, 1, "is damaged"),
        (twice, 1, "lstm_0_h is in it twice"),
    ]:
        result = invoke(
            "predict", "--run-dir", tiny_run, "0110", "--state-in", path, "--state-out", state
        )
        one_line_error(result, str(path.name), fragment, code=code)
        assert state.read_bytes() == b"earlier state" and result.stdout == ""


def test_a_state_computed_with_other_weights_is_refused_yet_may_be_replaced(trained, tmp_path):
    """The tiny runs "lstm" and "dropout" carry states of the same names and shapes, from
    different weights: one's state is no start for the other. A state file from before the
    digest was kept is read on its shapes alone."""
    lstm, dropout, state = trained("lstm"), trained("dropout"), tmp_path / "state.npz"
    assert invoke("predict", "--run-dir", lstm, "0110", "--state-out", state).exit_code == 0
    saved = state.read_bytes()
    result = invoke("predict", "--run-dir", dropout, "1", "--state-in", state)
    one_line_error(result, "state.npz was computed with other weights", code=2)
    assert result.stdout == "" and state.read_bytes() == saved
    again = invoke("predict", "--run-dir", lstm, "1", "--state-in", state, "--state-out", state)
    assert again.exit_code == 0, again.output  # its own weights: read, and written anew
    replaced = invoke("predict", "--run-dir", dropout, "1", "--state-out", state)
    assert replaced.exit_code == 0, replaced.output  # a state file of these shapes: replaced
    assert invoke("predict", "--run-dir", dropout, "1", "--state-in", state).exit_code == 0
    with np.load(state) as arrays:
        older = {name: arrays[name] for name in arrays.files if name != "weights_digest"}
    np.savez(state, **older)
    assert invoke("predict", "--run-dir", lstm, "1", "--state-in", state).exit_code == 0


def test_a_state_dict_of_other_weights_is_refused_as_its_file_would_be(trained, tmp_path):
    """A library caller's state dict remembers its weights: one run's is no start for the
    other's, nor saved as the other's state (it was, and then read back as the other's)."""
    from echo_keras import ConfigError, load_predictor

    lstm, dropout = load_predictor(trained("lstm")), load_predictor(trained("dropout"))
    _, state = lstm.predict([0, 1, 1, 0])
    for use in (
        lambda: dropout.predict([1], state),
        lambda: dropout.save_state(tmp_path / "s.npz", state),
    ):
        with pytest.raises(ConfigError, match="^state: was computed with other weights"):
            use()
    assert not (tmp_path / "s.npz").exists()
    again = load_predictor(trained("lstm")).predict([1], state)[0]  # the same weights
    assert np.array_equal(again, lstm.predict([1], state)[0])
    for start in (dropout.zero_state(), dict(state)):  # zeros are no run's; a plain dict's
        assert dropout.predict([1], start)[0].shape == (1, 2)  # own arrays: on shapes alone
    lstm.save_state(tmp_path / "s.npz", state)
    assert lstm.load_state(tmp_path / "s.npz").weights == state.weights is not None


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_damaged_run_folder_exits_1(tmp_path):
    result = invoke("predict", "--run-dir", tmp_path / "nothing", "01")
    one_line_error(result, "does not exist", code=1)


def test_state_out_is_written_atomically(tiny_run, tmp_path, monkeypatch):
    state = tmp_path / "state.npz"
    assert invoke("predict", "--run-dir", tiny_run, "1", "--state-out", state).exit_code == 0
    earlier = state.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    result = invoke("predict", "--run-dir", tiny_run, "0110", "--state-out", state)
    one_line_error(result, "cannot write", "No space left", code=1)
    assert state.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]  # no temporary left


# --- pipes and streams ----------------------------------------------------------------------


def test_a_pipe_into_head_ends_promptly_and_quietly(tiny_run):
    command = f"yes 0110 | {' '.join(ECHO_KERAS)} predict --run-dir {tiny_run} | head -n 3"
    started = time.monotonic()
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert out.returncode == 0 and out.stderr == ""
    assert len(out.stdout.splitlines()) == 3 and all(
        len(line) == 4 for line in out.stdout.splitlines()
    )


def test_each_line_is_answered_before_the_next_is_sent(tiny_run, tmp_path):
    """Interactive use: one symbol a line, each answer read back before the next line is
    written; a bad line ends the stream (earlier answers stand) and writes no state."""
    state = tmp_path / "state.npz"
    process = subprocess.Popen(
        [*ECHO_KERAS, "predict", "--run-dir", tiny_run, "--state-out", state],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        symbols = random_symbols(2, 20, seed=7)
        answers = []
        for symbol in symbols:
            process.stdin.write(f"{symbol}\n".encode())
            process.stdin.flush()
            answers.append(process.stdout.readline().decode())
        process.stdin.write(b"1 1 7\n")
        process.stdin.close()
        rest, err = process.stdout.read(), process.stderr.read().decode()
        assert process.wait(timeout=60) == 2
    finally:
        process.kill()
    assert all(len(a) == 2 and a[0] in "01" and a[1] == "\n" for a in answers)
    assert rest == b"" and err.strip() == "Error: line 21, column 5: symbol 7 is outside 0..1"
    assert not state.exists()
    payload = predict_json(tiny_run, as_text(symbols, 2))
    assert "".join(a[0] for a in answers) == "".join(map(str, payload["predictions"]))


class LazyStream(io.RawIOBase):
    """A long symbol stream made up as it is read: never whole in memory; records read sizes."""

    def __init__(self, length: int):
        self.left, self.reads, self.rng = length, [], np.random.default_rng(8)
        self.symbols = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), self.left)
        self.reads.append(len(buffer))
        data = self.rng.integers(48, 50, size, dtype=np.uint8)
        data[::100] = ord("\n")
        self.symbols += int(np.count_nonzero(data != ord("\n")))
        buffer[:size] = data.tobytes()
        self.left -= size
        return size


def test_a_long_stream_is_read_and_predicted_in_bounded_pieces(stream_model, monkeypatch):
    from echo_keras.stream import model as streaming

    model = stream_model("lstm")
    calls = []
    run = model.run
    monkeypatch.setattr(model, "run", lambda s, state: calls.append(len(s)) or run(s, state))
    stream = LazyStream(3_000_000)
    written = [0]
    tracemalloc.start()
    try:
        result = streaming.predict_stream(
            model,
            stream.read,
            lambda out: written.__setitem__(0, written[0] + len(out)),
            model.zero_state(),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written[0] == 3_000_001  # a byte per input byte, and a newline to end the last line
    assert result.symbols == stream.symbols > 2_900_000
    assert max(stream.reads) <= BLOCK and max(calls) <= BLOCK
    assert peak < 8 * 2**20, peak  # bytes of numpy and Python objects alive at once


@pytest.mark.slow
def test_a_ten_million_symbol_file_runs_in_the_memory_of_a_short_one(tiny_run, tmp_path):
    def peak_rss_mib(path):
        process = subprocess.Popen(
            [*ECHO_KERAS, "predict", "--run-dir", tiny_run, "--input", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(process.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read()
        assert b"Accuracy" in process.stderr.read()
        return usage.ru_maxrss / 1024

    rng = np.random.default_rng(9)
    short, long = tmp_path / "short.txt", tmp_path / "long.txt"
    short.write_text("0110\n" * 100)
    with long.open("wb") as handle:  # one line of 10 million digits
        for _ in range(10):
            handle.write((rng.integers(0, 2, 1_000_000, dtype=np.uint8) + 48).tobytes())
    assert peak_rss_mib(long) - peak_rss_mib(short) < 60


# --- state files and standard streams that are not what they seem -------------------------


@pytest.fixture
def run_dir(tiny_run):
    """The tiny run, which these cases must leave as it is."""
    return tiny_run


def test_state_out_refuses_devices_fifos_and_the_run_folder(run_dir, tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    targets = [fifo, run_dir / "model.keras", run_dir / "new-state.npz"]
    if os.geteuid() == 0:  # a device node of our own, never the system's /dev/null
        device = tmp_path / "null.npz"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append(device)
    model = (run_dir / "model.keras").read_bytes()
    for target in targets:
        before = os.lstat(target) if os.path.lexists(target) else None
        result = invoke("predict", "--run-dir", run_dir, "0110", "--state-out", target)
        one_line_error(result, "--state-out", code=2)
        after = os.lstat(target) if os.path.lexists(target) else None
        assert (before and (before.st_ino, before.st_mode)) == (
            after and (after.st_ino, after.st_mode)
        )
    assert (run_dir / "model.keras").read_bytes() == model


def test_state_out_that_is_a_symlink_loop_is_a_usage_error(run_dir, tmp_path):
    loop = tmp_path / "s.npz"
    loop.symlink_to(loop)
    result = invoke("predict", "--run-dir", run_dir, "0110", "--state-out", loop)
    one_line_error(result, "--state-out", "symlink", code=2)
    assert loop.is_symlink()


def test_state_out_refuses_the_input_file_and_a_file_that_is_not_a_state(run_dir, tmp_path):
    symbols = tmp_path / "in.txt"
    symbols.write_text("0110\n")
    same = invoke("predict", "--run-dir", run_dir, "--input", symbols, "--state-out", symbols)
    one_line_error(same, f"'--state-out': {symbols} is the --input file", code=2)
    inside = invoke("predict", "--run-dir", run_dir, "01", "--state-out", run_dir / "s.npz")
    one_line_error(inside, f"{run_dir / 's.npz'} is inside the run folder", code=2)
    notes = tmp_path / "notes.npz"
    notes.write_text("my notes")
    other = invoke("predict", "--run-dir", run_dir, "0110", "--state-out", notes)
    one_line_error(other, "not a state file", code=2)
    assert symbols.read_text() == "0110\n" and notes.read_text() == "my notes"


def test_state_out_writes_through_a_symlink_and_may_replace_its_own_state(run_dir, tmp_path):
    state, link = tmp_path / "state.npz", tmp_path / "link.npz"
    assert invoke("predict", "--run-dir", run_dir, "0110", "--state-out", state).exit_code == 0
    link.symlink_to(state)
    again = invoke("predict", "--run-dir", run_dir, "1", "--state-in", link, "--state-out", link)
    assert again.exit_code == 0, again.output
    assert link.is_symlink() and state.is_file()


def test_a_state_file_that_overflows_float32_is_damaged(run_dir, stream_model, tmp_path):
    model = stream_model("lstm")
    path = tmp_path / "big.npz"
    np.savez(path, **{name: np.full((1, model.units), 1e300) for name in model.names})
    result = invoke("predict", "--run-dir", run_dir, "0110", "--state-in", path)
    one_line_error(result, "is damaged", "not finite", code=1)


def test_a_write_failure_is_named_as_such_and_saves_no_state(run_dir, tmp_path):
    state = tmp_path / "state.npz"
    command = [*ECHO_KERAS, "predict", "--run-dir", str(run_dir), "0110", "--state-out", str(state)]
    device = full_device(tmp_path)
    for extra in ([], ["--json"]):
        with open(device, "w") as full:
            done = subprocess.run(
                [*command, *extra], stdout=full, stderr=subprocess.PIPE, text=True
            )
        assert done.returncode == 1, done.stderr
        assert "cannot write the predictions" in done.stderr and "Traceback" not in done.stderr
        assert not state.exists()
    # A closed stdout (`>&-`) is no place for predictions either: the state would move on
    # while what it predicted went nowhere.
    done = subprocess.run(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1)
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: cannot write the predictions: stdout is closed\n"
    assert not state.exists()


def test_under_json_a_state_that_cannot_be_saved_is_the_error_object_not_a_result(
    run_dir, tmp_path
):
    """The state file is written beside its place before the object is printed."""
    assert_unsaved_state_is_the_json_error(tmp_path, "predict", "--run-dir", run_dir, "0110")


def test_the_output_is_written_whole_through_a_descriptor_that_takes_a_little_at_a_time():
    """A non-blocking pipe takes what fits (a partial write), then refuses (EAGAIN) until
    its reader drains it: every byte still arrives, in order."""
    import fcntl
    import threading

    from echo_keras.cli.stdio import _write_whole

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    data = bytes(range(256)) * 4096  # 1 MiB: sixteen pipes' worth
    received = []

    def drain():
        while chunk := os.read(read_end, 1 << 12):
            received.append(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=drain)
    reader.start()
    with open(write_end, "wb", buffering=0) as out:
        _write_whole(out, data)
    reader.join(timeout=60)
    os.close(read_end)
    assert b"".join(received) == data


def test_output_a_disk_takes_only_in_part_is_a_failed_write_and_saves_no_state(run_dir, tmp_path):
    """A disk that fills up in the middle of a write takes part of it: the rest is written
    after it, and fails, even where Python's own stdout would drop the rest of a partial
    write without a word (unbuffered: PYTHONUNBUFFERED, as here)."""
    symbols, state = tmp_path / "in.txt", tmp_path / "state.npz"
    symbols.write_text("0110" * 5000)  # 20,000 lines of probabilities: about 360 kB
    command = [*ECHO_KERAS, "predict", "--run-dir", run_dir, "--input", symbols]
    command += ["--probabilities", "--state-out", state]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        for extra in ([], ["--json"]):  # many writes; one write, the last
            with open(disk / "out.txt", "w") as out:
                done = subprocess.run(
                    [*map(str, command), *extra],
                    stdout=out,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            assert done.returncode == 1, done.stderr
            assert done.stderr.startswith("Error: cannot write the predictions: No space left")
            assert not state.exists()
            (disk / "out.txt").unlink()


def test_a_full_stderr_loses_the_accuracy_line_but_not_the_prediction(run_dir, tmp_path):
    state = tmp_path / "state.npz"
    command = [*ECHO_KERAS, "predict", "--run-dir", str(run_dir), "0110", "--state-out", state]
    with open(full_device(tmp_path), "w") as full:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, text=True)
    assert done.returncode == 0
    assert len(done.stdout.strip()) == 4 and state.is_file()


def test_a_redirected_stdin_is_read_from_where_it_stands(run_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("header line\n0110\n")
    with open(source, "rb", buffering=0) as stdin:
        stdin.read(len("header line\n"))  # the shell's `read` took the first line
        done = subprocess.run(
            [*ECHO_KERAS, "predict", "--run-dir", str(run_dir)],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 4


def test_a_non_utf8_argument_is_a_bad_symbol(run_dir):
    done = subprocess.run(
        [*ECHO_KERAS, "predict", "--run-dir", str(run_dir), os.fsdecode(b"\xff01")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr


# --- symbols and answers, without a model --------------------------------------------------


def parse_all(data: bytes, num_classes: int, block: int) -> tuple[np.ndarray, bytes, bytes]:
    """Parse `data` in blocks of `block` bytes; (symbols, classes output, probabilities output)
    with every symbol's class set to (symbol + 1) % K and fake probabilities."""
    parser = SymbolParser(num_classes)
    classes, probs = Layout(parser.digit_mode), Layout(parser.digit_mode)
    symbols, out_c, out_p = [], [], []
    pieces = [parser.parse(data[i : i + block]) for i in range(0, len(data), block)]
    for piece in [*pieces, parser.finish()]:
        symbols.append(piece.symbols)
        out_c.append(classes.classes(piece, (piece.symbols + 1) % num_classes))
        fake = np.eye(num_classes, dtype=np.float32)[piece.symbols]
        out_p.append(probs.probabilities(piece, fake))
    out_c.append(classes.end())
    out_p.append(probs.end())
    return np.concatenate(symbols), b"".join(out_c), b"".join(out_p)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1000])
def test_digits_keep_their_layout_whatever_the_blocks(block):
    data = b"0110 1\n\n10\t01\r\n1"
    symbols, classes, probabilities = parse_all(data, 2, block)
    assert symbols.tolist() == [0, 1, 1, 0, 1, 1, 0, 0, 1, 1]
    assert classes == b"1001 0\n\n01\t10\r\n0\n"  # same bytes, digits replaced; a final newline
    assert probabilities.decode().splitlines() == [
        "1.000000,0.000000 0.000000,1.000000 0.000000,1.000000 1.000000,0.000000 0.000000,1.000000",
        "",
        "0.000000,1.000000 1.000000,0.000000 1.000000,0.000000 0.000000,1.000000",
        "0.000000,1.000000",
    ]


@pytest.mark.parametrize("block", [1, 2, 5, 1000])
def test_more_than_ten_classes_are_whitespace_separated_integers(block):
    data = b"11 0  7\n3\n\n10 11"
    symbols, classes, _ = parse_all(data, 12, block)
    assert symbols.tolist() == [11, 0, 7, 3, 10, 11]
    assert classes == b"0 1 8\n4\n\n11 0\n"


@pytest.mark.parametrize(
    "data, num_classes, message",
    [
        (b"0110x", 2, "line 1, column 5: 'x' is not a symbol (symbols are the digits 0..1)"),
        (b"01\n1 2", 2, "line 2, column 3: symbol 2 is outside 0..1"),
        (b"012\n\n  3", 3, "line 3, column 3: symbol 3 is outside 0..2"),
        (b"0,1", 2, "line 1, column 2: ',' is not a symbol"),
        ("0é".encode(), 2, "line 1, column 2: '"),  # 'é', or '\ufffd' if a block cuts it
        (b"01\xff1", 2, "line 1, column 3: the input is not UTF-8 text (byte 0xff)"),
        (b"1 \xfe2", 12, "line 1, column 3: the input is not UTF-8 text (byte 0xfe)"),
        (b"1 11 12", 12, "line 1, column 6: symbol 12 is outside 0..11"),
        (b"1\n 3a 4", 12, "line 2, column 2: '3a' is not a symbol"),
        (b"1 -1", 12, "line 1, column 3: '-1' is not a symbol"),
        (b"1 " + b"1" * 100, 12, "line 1, column 3: symbol 1111111111111111111"),
        (b" \n\t\n", 2, "the input holds no symbols"),
        (b"", 12, "the input holds no symbols"),
    ],
)
def test_bad_symbols_name_their_line_and_column(data, num_classes, message):
    for block in (1, 3, BLOCK):
        with pytest.raises(SymbolError) as error:
            check_stream(_blocks(data, block), num_classes)
        assert str(error.value).startswith(message), (block, str(error.value))


def test_a_bad_character_is_shown_as_typed():
    with pytest.raises(SymbolError, match="column 3: 'é' is not a symbol"):
        check_stream(io.BytesIO("01é1".encode()).read1, 2)


def _blocks(data: bytes, size: int):
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, size))


def test_echo_score_across_blocks_counts_positions_from_echo_step_on():
    symbols = random_symbols(2, 50, seed=3)
    predictions = np.roll(symbols, 3)
    predictions[10] ^= 1  # one wrong echo
    for cuts in ([50], [1, 1, 1, 47], [2, 30, 18]):
        score, start = EchoScore(3), 0
        for length in cuts:
            score.update(symbols[start : start + length], predictions[start : start + length])
            start += length
        assert score.scored == 47 and score.correct == 46
    assert EchoScore(3).accuracy is None
