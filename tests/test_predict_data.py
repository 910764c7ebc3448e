"""`predict`, `predict --generate`, the Predictor and `export` of runs on their own data: text
read and predictions decoded through the run's vocabulary, symbols outside it, state files,
sampling (streamed, seeded, continued from a state), and the export's vocabulary.

The runs are trained once per session on sequences whose next symbol is certain
("abcdefg\\n" over and over, "0 1 2 3" over and over), so predictions and
low-temperature generation can be checked exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings

import numpy as np
import pytest

from echo_keras.config import TrainConfig
from echo_keras.errors import ConfigError, SymbolError, UsageError
from echo_keras.stream.text import NextScore, VocabularyLayout, VocabularyParser, parse_text
from echo_keras.vocabulary import Vocabulary
from tests.helpers import (
    ECHO_KERAS,
    assert_unsaved_state_is_the_json_error,
    invoke,
    one_line_error,
)

LINE = "abcdefg\n"
COLD = "0.05"  # a temperature at which the certain next symbol is always drawn


def _train_on(text: str, data_format: str = "text"):
    def make(folder):
        from echo_keras.training import train

        folder.mkdir(parents=True)
        (folder / "data.txt").write_text(text)
        config = TrainConfig(
            data=str(folder / "data.txt"),
            data_format=data_format,
            num_epochs=3,
            truncated_backprop_length=10,
            batch_size=5,
            state_size=16,
            optimizer="adam",
            learning_rate=0.01,
        )
        train(config, folder / "run", notify=[].append)  # its notes unsaid
        return None

    return make


@pytest.fixture(scope="module")
def text_run(shared):
    """A text run on "abcdefg\\n" repeated: every next symbol is certain."""
    folder, _ = shared.get("data-abcdefg", _train_on(LINE * 500))
    return folder / "run"


@pytest.fixture(scope="module")
def ints_run(shared):
    """An ints run on "0 1 2 3" repeated, four a line."""
    folder, _ = shared.get("data-ints", _train_on("0 1 2 3\n" * 600, "ints"))
    return folder / "run"


@pytest.fixture(scope="module")
def predictor(text_run):
    from echo_keras.stream.predictor import load_predictor

    return load_predictor(text_run)


def _export_text(export, length, prime, temperature, seed):
    """The README's snippet: generate text from the export with TensorFlow and numpy alone."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    vocabulary = json.loads((export / "vocabulary.json").read_text(encoding="utf-8"))
    symbols = vocabulary["symbols"]
    ids = {symbol: i for i, symbol in enumerate(symbols)}
    inputs = serve.structured_input_signature[1]
    feed = {
        name: tf.zeros([1, spec.shape[1]]) for name, spec in inputs.items() if name != "symbols"
    }

    def step(symbol_ids, feed):
        out = serve(symbols=tf.constant([symbol_ids], tf.int32), **feed)
        return out.pop("probabilities").numpy()[0, -1], out

    probabilities, feed = step([ids[c] for c in prime], feed)
    rng, text = np.random.default_rng(seed), []
    for _ in range(length):
        logits = np.log(probabilities.astype(np.float64)) / temperature
        weights = np.exp(logits - logits.max())
        symbol = int(rng.choice(len(weights), p=weights / weights.sum()))
        text.append(symbols[symbol])
        probabilities, feed = step([symbol], feed)
    return "".join(text)


# --- predict: text in, predicted symbols out ------------------------------------------------


def test_predict_reads_text_and_prints_the_next_symbols(text_run, tmp_path):
    result = invoke("predict", "--run-dir", text_run, "abcdefg\nab")
    assert result.exit_code == 0, result.output
    assert result.stdout == "bcdefg\nabc\n"
    assert "Accuracy 1.0000 over 9 positions (the next symbol" in result.stderr
    (tmp_path / "in.txt").write_text("abcdefg\nab")
    from_file = invoke("predict", "--run-dir", text_run, "--input", tmp_path / "in.txt")
    from_stdin = invoke("predict", "--run-dir", text_run, input="abcdefg\nab")
    assert from_file.stdout == from_stdin.stdout == result.stdout


def test_predict_json_and_probabilities_of_a_text_run(text_run, predictor):
    result = invoke("predict", "--run-dir", text_run, "abcd", "--json", "--probabilities")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["symbols"] == predictor.vocabulary.encode("abcd").tolist()
    assert shown["predicted_text"] == "bcde" and shown["accuracy"] == 1.0
    expected, _ = predictor.predict(predictor.vocabulary.encode("abcd"))
    np.testing.assert_allclose(shown["probabilities"], expected, atol=1e-5)
    with pytest.raises(ConfigError, match=r"\(a text's: predictor.vocabulary.encode\(text\)\)"):
        predictor.predict("abcd")  # text is encoded first
    plain = invoke("predict", "--run-dir", text_run, "abcd", "--probabilities")
    rows = [[float(p) for p in line.split(",")] for line in plain.stdout.splitlines()]
    np.testing.assert_allclose(rows, expected, atol=2e-6)  # one line a symbol, 6 decimals


@pytest.mark.parametrize(
    ("text", "where"),
    [("abz", "line 1, column 3: 'z'"), ("abcdefg\nabcXd", "line 2, column 4: 'X'")],
)
def test_a_symbol_outside_the_vocabulary_names_its_line_and_column(text_run, tmp_path, text, where):
    one_line_error(invoke("predict", "--run-dir", text_run, text), where, "vocabulary", code=2)
    (tmp_path / "in.txt").write_text(text)
    result = invoke("predict", "--run-dir", text_run, "--input", tmp_path / "in.txt")
    one_line_error(result, where, code=2)
    assert result.stdout == ""  # a file is checked whole before anything is printed


def test_state_files_carry_a_text_stream_between_calls(text_run, tmp_path):
    state = tmp_path / "state.npz"
    first = invoke("predict", "--run-dir", text_run, "abc", "--state-out", state)
    second = invoke("predict", "--run-dir", text_run, "defg\na", "--state-in", state)
    whole = invoke("predict", "--run-dir", text_run, "abcdefg\na", "--json")
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    joined = first.stdout.rstrip("\n") + second.stdout.rstrip("\n")
    assert joined == json.loads(whole.stdout)["predicted_text"] == "bcdefg\nab"


def test_an_ints_run_reads_and_writes_integers_line_by_line(ints_run):
    result = invoke("predict", "--run-dir", ints_run, "0 1 2\n3 0")
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 2 3\n0 1\n"
    one_line_error(invoke("predict", "--run-dir", ints_run, "0 1\n2 7"), "line 2, column 3", code=2)
    generated = invoke(
        "predict", "--run-dir", ints_run, "--generate", 6, "--prime", "0 1", "--temperature", COLD
    )
    assert generated.stdout == "2 3 0 1 2 3\n"


# --- generate --------------------------------------------------------------------------------


def test_generate_continues_the_prime(text_run):
    args = ["predict", "--run-dir", text_run, "--generate", 20, "--prime", "abc"]
    result = invoke(*args, "--temperature", COLD, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert result.stdout == "defg\nabcdefg\nabcdefg\n"
    once, again = invoke(*args, "--seed", 7), invoke(*args, "--seed", 7)
    assert once.exit_code == 0 and once.stdout == again.stdout and len(once.stdout) >= 20
    shown = json.loads(invoke(*args, "--seed", 7, "--json").stdout)
    assert shown["text"] == once.stdout[:20] and shown["seed"] == 7
    fresh = json.loads(invoke(*args, "--json").stdout)  # the seed drawn, to give it again
    assert isinstance(fresh["seed"], int) and fresh["seed"] >= 0
    again = json.loads(invoke(*args, "--json", "--seed", fresh["seed"]).stdout)
    assert again == fresh


def test_generate_state_out_then_state_in_goes_on_as_one_longer_call(text_run, tmp_path):
    from echo_keras.stream.model import load_stream_model
    from echo_keras.stream.state import read_state

    base = ["predict", "--run-dir", text_run, "--temperature", COLD, "--seed", 0]
    half, whole = tmp_path / "half.npz", tmp_path / "whole.npz"
    first = invoke(*base, "--generate", 9, "--prime", "a", "--state-out", half)
    second = invoke(*base, "--generate", 9, "--state-in", half, "--state-out", tmp_path / "two.npz")
    one = invoke(*base, "--generate", 18, "--prime", "a", "--state-out", whole)
    assert first.exit_code == second.exit_code == one.exit_code == 0, second.output
    assert first.stdout.rstrip("\n") + second.stdout == one.stdout == "bcdefg\nabcdefg\nabc\n"
    model = load_stream_model(text_run)
    for a, b in zip(read_state(tmp_path / "two.npz", model), read_state(whole, model), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_generate_0_reads_the_prime_and_saves_the_state_after_it(text_run, predictor, tmp_path):
    """As the library's generate(0) does: nothing printed, the state that the prime leaves."""
    saved = tmp_path / "prime.npz"
    result = invoke("predict", "--run-dir", text_run, "--generate", 0, "--prime", "abc",
                    "--state-out", saved)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    _, expected = predictor.predict(predictor.vocabulary.encode("abc"))
    for name, value in predictor.load_state(saved).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6)
    assert predictor.generate(0, prime="abc")[0] == ""


@pytest.mark.slow
def test_generate_prints_each_symbol_as_it_comes(text_run):
    """The first symbols reach a pipe while the process is still generating the rest."""
    argv = [*ECHO_KERAS, "predict", "--run-dir", str(text_run), "--generate", "3000"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = process.stdout.read(1)
        assert first and process.poll() is None, process.stderr.read()
    finally:
        process.kill()
        process.communicate()


def test_generate_to_a_closed_stdout_is_a_failed_write_and_saves_no_state(text_run, tmp_path):
    """`>&-`: the text would go nowhere while the state moved on."""
    state = tmp_path / "state.npz"
    argv = [*ECHO_KERAS, "predict", "--run-dir", str(text_run), "--generate", "5"]
    done = subprocess.run(
        [*argv, "--state-out", str(state)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )
    assert (done.returncode, done.stderr) == (1, "Error: cannot write the text: stdout is closed\n")
    assert not state.exists()


def test_generate_refuses_what_cannot_work(text_run, tiny_run):
    run = ["predict", "--run-dir", text_run]
    one_line_error(invoke("predict", "--run-dir", tiny_run, "--generate", 5), "vocabulary", code=2)
    one_line_error(invoke(*run, "--generate", 5, "abc"), "--prime", code=2)
    one_line_error(invoke(*run, "--generate", 5, "--temperature", 0), "--temperature", code=2)
    one_line_error(invoke(*run, "--generate", 5, "--temperature", "nan"), "above 0", code=2)
    one_line_error(invoke(*run, "--generate", -1), "--generate", code=2)
    one_line_error(invoke(*run, "--prime", "abc"), "--generate", code=2)
    one_line_error(invoke(*run, "--generate", 5, "--seed", 1, "--prime", "abq"), "column 3", code=2)


# --- the library ----------------------------------------------------------------------------


def test_sample_from_a_trained_keras_model_of_any_batch(text_run):
    from echo_keras.model import load_run
    from echo_keras.run import files
    from echo_keras.stream.generate import sample

    config, trained = load_run(text_run)
    vocabulary, _ = files.read_vocabulary(text_run)
    assert trained.inputs[0].shape[0] == config.batch_size  # the stateful training model
    text, state = sample(trained, config, vocabulary, 12, prime="abc", temperature=0.05, seed=0)
    assert text == "defg\nabcdefg" and state[0].shape == (1, config.state_size)
    with pytest.raises(SymbolError, match="column 2"):
        sample(trained, config, vocabulary, 3, prime="a!")


def test_the_predictor_of_a_text_run(predictor, tiny_run):
    from echo_keras.stream.predictor import load_predictor

    vocabulary = predictor.vocabulary
    assert vocabulary.kind == "text" and vocabulary.symbols == tuple("\nabcdefg")
    probabilities, state = predictor.predict(vocabulary.encode("abcd"))
    assert vocabulary.decode(probabilities.argmax(-1)) == "bcde"
    text, after = predictor.generate(8, state=state, temperature=0.05, seed=1)
    assert text == "efg\nabcd" and set(after) == set(predictor.state_names)
    same = [predictor.generate(30, prime="a", seed=5)[0] for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(ConfigError, match="temperature"):
        predictor.generate(3, temperature=-1.0)
    echo = load_predictor(tiny_run)
    assert echo.vocabulary is None
    with pytest.raises(
        UsageError, match=r"^generating needs a run trained on its own data \(a `data` file\)$"
    ):
        echo.generate(3)  # in the library's own terms, not a command line's


def test_the_export_of_a_text_run_has_its_vocabulary_and_generates_as_predict(
    text_run, predictor, tmp_path
):
    from echo_keras.stream.export import export_saved_model

    out = tmp_path / "export"
    report = export_saved_model(text_run, out)
    assert report.vocabulary == out / "vocabulary.json"
    assert "vocabulary.json" in report.describe()
    saved = Vocabulary.from_json(json.loads(report.vocabulary.read_text(encoding="utf-8")))
    assert saved == predictor.vocabulary
    for seed, temperature in ((0, 1.0), (4, 1.5)):
        expected, _ = predictor.generate(40, prime="ab", temperature=temperature, seed=seed)
        assert _export_text(out, 40, "ab", temperature, seed) == expected


def test_export_cli_of_a_text_run(text_run, tmp_path):
    result = invoke("export", "--run-dir", text_run, "--out", tmp_path / "export")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "export" / "vocabulary.json").is_file()


# --- text through a vocabulary, without a model ---------------------------------------------


def test_the_parser_reads_blocks_cut_anywhere():
    vocabulary = Vocabulary("text", tuple("\n aé€"))
    data = "aé €\n€a é\n".encode()
    for cut in range(1, len(data)):
        parser = VocabularyParser(vocabulary)
        ids = [parser.parse(data[:cut]).symbols, parser.parse(data[cut:]).symbols]
        ids.append(parser.finish().symbols)
        assert vocabulary.decode(np.concatenate(ids)) == data.decode()
    parser = VocabularyParser(vocabulary)
    parser.parse("aé\n€".encode())
    with pytest.raises(SymbolError, match=r"line 2, column 3: 'x'"):
        parser.parse(b"ax")


def test_a_symbol_outside_the_vocabulary_before_a_byte_that_is_not_text_is_named_first():
    vocabulary = Vocabulary("text", tuple("ab\n"))
    for blocks in ([b"ab\nxb\xff\n"], [b"ab\nx", b"b\xff"], [b"ab\n\xc3", b"\xa9x\xff"]):
        parser = VocabularyParser(vocabulary)
        with pytest.raises(SymbolError, match=r"^line 2, column 1: '(x|é)' is not in the run"):
            for block in blocks:
                parser.parse(block)
    ints = Vocabulary("ints", (0, 1, 2))
    parser = VocabularyParser(ints)
    parser.parse(b"0 1\n1")  # a token left open, then a bad byte: the token is read first
    with pytest.raises(SymbolError, match=r"^line 2, column 2: the input is not UTF-8"):
        parser.parse(b"\xff")
    parser = VocabularyParser(ints)  # as training reads it: the token that runs into the byte
    with pytest.raises(SymbolError, match=r"^line 1, column 3: '99' is not a symbol of the run"):
        parser.parse(b"0 99\xff 1\n")


def test_the_parser_reads_integer_tokens_cut_between_blocks():
    vocabulary = Vocabulary("ints", tuple(range(12)))
    parser = VocabularyParser(vocabulary)
    pieces = [parser.parse(b"1 1"), parser.parse(b"0 11\n 3"), parser.finish()]
    assert np.concatenate([p.symbols for p in pieces]).tolist() == [1, 10, 11, 3]
    with pytest.raises(SymbolError, match="line 1, column 3: '12' is not a symbol of the run"):
        parse_text("4 12", vocabulary)
    with pytest.raises(SymbolError, match="line 2, column 1: 'a' is not a symbol"):
        parse_text("4\na", vocabulary)
    for blocks, column in (([b"11 1", b"0 5\xff"], 8), ([b"11 10", b"\xff"], 6)):
        parser = VocabularyParser(vocabulary)  # a token left open, then a bad byte
        with pytest.raises(SymbolError, match=f"line 1, column {column}: .* not UTF-8"):
            for block in blocks:
                parser.parse(block)


@pytest.mark.parametrize("space", ["\u00a0", "\x1c", "\u2003"])
def test_integers_are_split_at_ascii_whitespace_alone_as_training_splits_them(space):
    vocabulary = Vocabulary("ints", tuple(range(12)))
    for read in (lambda text: parse_text(text, vocabulary), vocabulary.encode):
        with pytest.raises(SymbolError, match="line 1, column 3: '1.+2' is not a symbol"):
            read(f"0 1{space}2")
    with pytest.raises(SymbolError, match="line 1, column 3: not text"):
        vocabulary.encode("0 \ud800")


def test_the_layout_of_text_predictions_and_the_next_symbol_score():
    vocabulary = Vocabulary("text", tuple("\nab"))
    layout = VocabularyLayout(vocabulary)
    parser = VocabularyParser(vocabulary)
    piece = parser.parse(b"ab\na")
    assert layout.classes(piece, np.array([2, 0, 1, 2])) + layout.end() == b"b\nab\n"
    score = NextScore()
    score.update(np.array([1, 2]), np.array([2, 0]))  # a->b right; b->? waits
    score.update(np.array([0, 1]), np.array([1, 1]))  # b->\n right; \n->a right
    assert (score.correct, score.scored) == (3, 3)


def test_a_vocabulary_encodes_and_decodes_only_what_is_its_own():
    text, ints = Vocabulary("text", tuple("ab\n")), Vocabulary("ints", (0, 1, 2))
    assert text.decode(np.array([1, 0, 2])) == "ba\n" and ints.decode([2, 0]) == "2 0"
    assert text.decode([]) == "" and text.encode("ab").tolist() == [0, 1]
    for vocabulary in (text, ints):
        for ids in ([-1], [0, 3], [2**70]):
            with pytest.raises(SymbolError, match=r"^ids\[\d\] = .* is not a symbol of the run"):
                vocabulary.decode(ids)
        for ids in ("ab", b"ab", [0.5], [[0, 1]], 3):
            with pytest.raises(ConfigError, match="^ids: must be a 1-D sequence of integer ids"):
                vocabulary.decode(ids)
        for not_text in (None, ["a"], b"ab"):
            with pytest.raises(ConfigError, match="^text: must be a str"):
                vocabulary.encode(not_text)
    with pytest.raises(SymbolError, match="^line 1, column 2: 'Z' is not in the run's vocab"):
        text.encode("aZ")


def test_generate_refuses_a_bad_seed_or_prime_in_one_line(text_run):
    result = invoke("predict", "--run-dir", text_run, "--generate", "3", "--seed", "-1")
    one_line_error(result, "--seed", "a whole number from 0, got -1", code=2)
    # A byte the command line could not decode reaches the prime as a lone surrogate.
    result = invoke("predict", "--run-dir", text_run, "--generate", "3", "--prime", "ab\udcff")
    one_line_error(result, "--prime: line 1, column 3", "not UTF-8", "0xff", code=2)
    result = invoke("predict", "--run-dir", text_run, input=b"abc\nab\xffc")
    one_line_error(result, "line 2, column 3", "not UTF-8", "0xff", code=2)


def test_the_predictor_takes_numpy_numbers_and_refuses_the_rest_as_its_own_errors(predictor):
    text, _ = predictor.generate(np.int64(4), prime="a", temperature=np.float32(0.05), seed=0)
    assert text == "bcde"
    refused = [
        ({"seed": -1}, ConfigError, "seed: must be a whole number from 0"),
        ({"seed": "a"}, ConfigError, "seed: must be a whole number from 0"),
        ({"prime": ["a"]}, ConfigError, "prime: must be text, got list"),
        ({"length": -1}, ConfigError, "length: must be a whole number from 0, got -1"),
        ({"length": 2.0}, ConfigError, "length: must be a whole number from 0, got 2.0"),
        ({"prime": "a\ud800"}, SymbolError, "prime: line 1, column 2: not text"),
    ]
    for arguments, error, message in refused:
        with pytest.raises(error, match=message):
            predictor.generate(**{"length": 2, **arguments})


def test_a_temperature_too_low_for_floats_draws_the_likeliest_symbol(predictor):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or NaN on the way
        text, _ = predictor.generate(8, prime="c", temperature=1e-308, seed=0)
    assert text == "defg\nabc"


def test_generate_json_with_a_state_that_cannot_be_saved_prints_the_error_object(
    text_run, tmp_path
):
    """As predict's: the state file is written beside its place before the object."""
    assert_unsaved_state_is_the_json_error(
        tmp_path, "predict", "--run-dir", text_run, "--generate", "5"
    )
    done = invoke("predict", "--run-dir", text_run, "--generate", "5", "--json", "--seed", "1")
    state = tmp_path / "state.npz"  # and with room, the object and the state file
    saved = invoke(
        "predict", "--run-dir", text_run, "--generate", "5", "--json", "--seed", "1",
        "--state-out", state,
    )  # fmt: skip
    assert json.loads(saved.stdout) == json.loads(done.stdout) and state.is_file()
