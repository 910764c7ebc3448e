"""`predict` and `generate` of a run trained on documents (`train --documents`): a stream is
split into documents as training splits its file — blank lines left out, every document
started from a zeroed state, the accuracy scored within documents — however it arrives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from echo_keras.config import TrainConfig
from echo_keras.corpus import BLANK_LINE_MAX, read_symbols
from echo_keras.errors import SymbolError, UsageError
from echo_keras.stream.documents import DocumentSplitter
from echo_keras.stream.text import NextScore, VocabularyParser, read_text
from echo_keras.vocabulary import Vocabulary
from tests.helpers import invoke, one_line_error, predict_json

TEXT = Vocabulary("text", tuple(" \t\r\nabé"))
INTS = Vocabulary("ints", tuple(range(4)))
DOC_A, DOC_B = "abab\nba", "bba\naab ab\n"


def _random_text(rng, alphabet) -> str:
    return "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))).tolist())


def _cut_anywhere(data: bytes, rng) -> list[bytes]:
    cuts = sorted(rng.integers(0, len(data) + 1, size=int(rng.integers(0, 6))).tolist())
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _streamed(vocabulary, blocks) -> tuple[np.ndarray, list[int]]:
    """The symbols a documents parser reads from `blocks`, and every document start."""
    parser = VocabularyParser(vocabulary, documents=True)
    symbols, starts = [], []
    for piece in [*(parser.parse(block) for block in blocks), parser.finish()]:
        starts += [sum(map(len, symbols)) + start for start in piece.starts]
        symbols.append(piece.symbols)
    return np.concatenate(symbols), starts


@pytest.mark.parametrize(
    ("vocabulary", "alphabet", "data_format"),
    [
        (TEXT, list(" \t\r\n\n\nabé"), "text"),
        (INTS, ["0 ", "3\n", "2\t", " ", "\t", "\r", "\n", "\n"], "ints"),
    ],
)
def test_a_stream_cut_anywhere_is_split_as_training_splits_the_file(
    tmp_path, vocabulary, alphabet, data_format
):
    """Whatever the text and wherever its blocks are cut (inside a blank line, between the
    bytes of a character), the parser keeps the symbols training reads from the same file
    and starts documents where training does."""
    rng = np.random.default_rng(0)
    path = tmp_path / "data.txt"
    checked = 0
    for _ in range(400):
        text = _random_text(rng, alphabet)
        path.write_text(text, encoding="utf-8", newline="")
        symbols, starts = _streamed(vocabulary, _cut_anywhere(text.encode(), rng))
        if not len(symbols):
            continue  # training refuses a file without symbols
        file = read_symbols(path, data_format, vocabulary=vocabulary, documents=True)
        assert symbols.tolist() == file.ids.tolist(), repr(text)
        inside = {start for start in starts if start < len(symbols)}
        assert sorted(inside | {0}) == file.doc_starts.tolist(), repr(text)
        assert starts == sorted(set(starts)), repr(text)
        checked += 1
    assert checked > 300


@pytest.mark.parametrize(
    ("vocabulary", "alphabet"),
    [
        (TEXT, list(" \t\r\n\n\nabé")),
        (INTS, ["0 ", "3\n", "2\t", " ", "\t", "\r", "\n", "\n"]),
    ],
)
def test_a_stream_read_in_calls_that_carry_the_line_is_split_as_one_call(vocabulary, alphabet):
    """Calls that hand on where the stream stands in its line (as --state-out and
    --state-in do) read what one call reads: a newline that begins a call may end a line,
    and a line of whitespace at the end of a call waits, as it may turn out blank."""
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(300):
        text = _random_text(rng, alphabet)
        whole, whole_starts = _streamed(vocabulary, [text.encode()])
        symbols, starts, line = [], [], None
        calls = [call.encode() for call in _cut_anywhere(text, rng)]  # whole characters
        for index, call in enumerate(calls):
            parser = VocabularyParser(vocabulary, documents=True, line=line)
            for piece in (parser.parse(call), parser.finish(hold=index < len(calls) - 1)):
                starts += [sum(map(len, symbols)) + start for start in piece.starts]
                symbols.append(piece.symbols)
            line = parser.line
        assert np.concatenate(symbols).tolist() == whole.tolist(), (text, calls)
        assert sorted(set(starts)) == whole_starts, (text, calls)
        checked += len(calls) > 1
    assert checked > 200


def test_a_blank_lines_whitespace_is_not_read_as_symbols_yet_kept_whitespace_is(tmp_path):
    """As training reads a file through a run's vocabulary: a blank line's spaces and tabs
    are left out unread, those of a document are symbols, and the first one that is not
    the run's is named where it stands, wherever the blocks are cut (held whitespace too)."""
    narrow = Vocabulary("text", tuple("\nabx"))  # no space, tab or CR
    rng = np.random.default_rng(1)
    path = tmp_path / "data.txt"
    for _ in range(300):
        text = _random_text(rng, list(" \t\r\n\n\nabx"))
        path.write_text(text, encoding="utf-8", newline="")
        try:
            file = read_symbols(path, vocabulary=narrow, documents=True)
        except SymbolError as error:
            with pytest.raises(SymbolError) as streamed:
                _streamed(narrow, _cut_anywhere(text.encode(), rng))
            assert str(error).endswith(str(streamed.value)), repr(text)
            continue
        except UsageError:  # no symbols at all
            continue
        symbols, starts = _streamed(narrow, _cut_anywhere(text.encode(), rng))
        assert symbols.tolist() == file.ids.tolist(), repr(text)
    held = VocabularyParser(Vocabulary("text", tuple("\nab ")), documents=True)
    held.parse(b"ab\n  ")  # two spaces held: blank line or not?
    with pytest.raises(SymbolError, match=r"^line 2, column 3: '\\t' is not in the run's"):
        held.parse(b"\tx\n")
    held = VocabularyParser(narrow, documents=True)
    held.parse(b"ab\n \t")
    with pytest.raises(SymbolError, match=r"^line 2, column 1: ' ' is not in the run's"):
        held.parse(b"x\n")


def test_a_line_of_more_whitespace_than_a_blank_line_holds_is_text_to_training_and_stream(
    tmp_path,
):
    """A blank line holds at most BLANK_LINE_MAX whitespace characters: a longer line of
    whitespace alone is text, to training and to a stream cut anywhere or read in calls
    alike, so a stream waits for no more than that, and a state file never holds more."""
    longest = BLANK_LINE_MAX
    text = f"ab\n{' ' * longest}\nba\n{chr(9) * (longest + 1)}\nab\n{' ' * longest}\n\n"
    path = tmp_path / "data.txt"
    path.write_text(text, newline="")
    file = read_symbols(path, vocabulary=TEXT, documents=True)
    assert len(file.ids) == len("ab\nba\n") + longest + 2 + len("ab\n")
    assert file.doc_starts.tolist() == [0, 3]  # the tabs' line is no document break
    data, rng = text.encode(), np.random.default_rng(1)
    for blocks in ([data], [data[i : i + 65536] for i in range(0, len(data), 65536)]):
        symbols, starts = _streamed(TEXT, blocks + _cut_anywhere(b"", rng))
        assert symbols.tolist() == file.ids.tolist()
        assert sorted({0, *starts} - {len(symbols)}) == file.doc_starts.tolist()
    symbols, line = [], None
    inside = 3 + longest + 4 + longest // 2  # calls cut inside each line of whitespace
    calls = [text[:9], text[9:inside], text[inside : -longest // 3], text[-longest // 3 :]]
    for index, call in enumerate(calls):
        parser = VocabularyParser(TEXT, documents=True, line=line)
        for piece in (parser.parse(call.encode()), parser.finish(hold=index < 3)):
            symbols.append(piece.symbols)
        line = parser.line
        assert len(line[1]) <= longest
    assert np.concatenate(symbols).tolist() == file.ids.tolist()
    for spaces in (longest, longest + 1):  # a line that starts a chunk of the file's reader
        text = " " * spaces + "\nab\n"
        path.write_text(text, newline="")
        ids = read_symbols(path, vocabulary=TEXT, documents=True).ids.tolist()
        assert len(ids) == (3 if spaces == longest else spaces + 4)
        assert _streamed(TEXT, [text.encode()])[0].tolist() == ids


def test_blank_lines_at_the_end_mark_the_next_symbol_as_a_new_document():
    splitter = DocumentSplitter()
    assert splitter.split("ab\n \n", final=False) == ("ab\n", [])
    assert splitter.split("  ", final=False) == ("", [])  # a line of spaces so far: held
    assert splitter.split("\n", final=True) == ("", [0])  # blank: whatever follows starts anew
    splitter = DocumentSplitter()
    assert splitter.split("ab\n\n  ", final=True) == ("ab\n  ", [3])  # spaces, no newline: kept


def test_the_next_symbol_is_not_scored_across_a_document_start():
    score = NextScore()
    score.update(np.array([1, 2]), np.array([2, 0]))
    score.restart()
    score.update(np.array([0, 1]), np.array([1, 1]))
    assert (score.scored, score.correct) == (2, 2)  # 1->2 and 0->1; not 2->0


def test_a_prime_ending_in_a_blank_line_leaves_nothing_of_its_document():
    piece = read_text("ab\n\nba\n\n", TEXT, documents=True)
    assert TEXT.decode(piece.symbols) == "ab\nba\n"
    assert piece.starts == (3, 6)


# --- a trained documents run ------------------------------------------------------------


@pytest.fixture(scope="module")
def documents_run(shared):
    def make(folder):
        from echo_keras.training import train

        folder.mkdir(parents=True)
        data = folder / "data.txt"
        data.write_text((DOC_A + "\n\n" + DOC_B + "\n \t\n") * 40)
        config = TrainConfig(
            data=str(data),
            documents=True,
            num_epochs=1,
            truncated_backprop_length=5,
            batch_size=4,
            state_size=8,
            validation_fraction=0.0,
        )
        train(config, folder / "run")

    folder, _ = shared.get("data-documents", make)
    return folder / "run"


def _probabilities(run, text: str, *flags) -> list[str]:
    result = invoke("predict", "--run-dir", run, "--probabilities", *flags, input=text)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_predict_starts_every_document_from_a_zeroed_state(documents_run):
    """Two documents streamed together, a blank line between them, give what each gives
    alone; the blank line is left out, as training leaves it out."""
    alone = _probabilities(documents_run, DOC_A) + _probabilities(documents_run, DOC_B)
    together = _probabilities(documents_run, f"\n{DOC_A}\n \t\n\n{DOC_B}\n\n")
    assert len(together) == len(DOC_A) + 1 + len(DOC_B)  # each keeps its last line end
    assert together[: len(DOC_A)] == alone[: len(DOC_A)]
    assert together[len(DOC_A) + 1 :] == alone[len(DOC_A) :]


def test_the_library_fed_a_document_a_call_gives_what_the_command_line_gives(documents_run):
    """`Predictor.predict` reads its symbols as one stream (its docstring says so): a call
    per document, each from zeros, gives the command line's rows for blank-separated text."""
    from echo_keras import load_predictor

    predictor = load_predictor(documents_run)
    first, second = DOC_A + "\n", DOC_B
    rows = [
        row
        for document in (first, second)
        for row in predictor.predict(predictor.vocabulary.encode(document))[0]
    ]
    together = _probabilities(documents_run, f"{first}\n{second}")
    assert len(together) == len(rows) == len(first) + len(second)
    for line, row in zip(together, rows, strict=True):
        assert np.allclose([float(value) for value in line.split(",")], row, atol=1e-6)
    as_one, _ = predictor.predict(predictor.vocabulary.encode(f"{first}\n{second}"))
    assert not np.allclose(as_one[len(first) + 1 :], rows[len(first) :], atol=1e-3)


def test_a_blank_lines_whitespace_outside_the_vocabulary_is_no_error_whatever_the_source(
    documents_run, tmp_path
):
    """A CR (not in this run's vocabulary) in a blank line is left out unread, as training
    would: from a file (checked whole before predicting), a pipe and a --prime."""
    text = f"{DOC_A}\n \r\n{DOC_B}"
    (tmp_path / "in.txt").write_text(text, newline="")
    piped = _probabilities(documents_run, text)
    from_file = invoke(
        "predict", "--run-dir", documents_run, "--probabilities", "--input", tmp_path / "in.txt"
    )
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout.splitlines() == piped
    assert len(piped) == len(DOC_A) + 1 + len(DOC_B)
    generated = invoke("predict", "--run-dir", documents_run, "--generate", 5, "--seed", 0,
                       "--prime", f"{DOC_A}\n\r\n")  # fmt: skip
    assert generated.exit_code == 0, generated.output
    refused = invoke("predict", "--run-dir", documents_run, input=f"{DOC_A}\r\n")  # in a line
    assert refused.exit_code == 2 and "line 2, column 3: '\\r' is not in" in refused.stderr


def test_the_accuracy_of_a_documents_stream_is_scored_within_its_documents(documents_run):
    result = invoke("predict", "--run-dir", documents_run, "--json", input=f"{DOC_A}\n\n{DOC_B}")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["symbols"]) == len(DOC_A) + 1 + len(DOC_B)
    within = [
        (pred == sym)
        for doc_start, doc_end in ((0, len(DOC_A) + 1), (len(DOC_A) + 1, len(payload["symbols"])))
        for pred, sym in zip(
            payload["predictions"][doc_start : doc_end - 1],
            payload["symbols"][doc_start + 1 : doc_end],
            strict=True,
        )
    ]
    assert payload["accuracy"] == pytest.approx(sum(within) / len(within))


def test_a_state_saved_after_a_blank_line_is_zeros_and_a_blank_line_ends_a_state_read(
    documents_run, tmp_path
):
    after_blank = tmp_path / "blank.npz"
    done = invoke(
        "predict", "--run-dir", documents_run, "--state-out", after_blank, input=DOC_A + "\n\n"
    )
    assert done.exit_code == 0, done.output
    with np.load(after_blank) as saved:
        assert all(not saved[name].any() for name in saved.files if name.endswith(("_h", "_c")))
    carried = tmp_path / "carried.npz"
    done = invoke("predict", "--run-dir", documents_run, "--state-out", carried, input=DOC_A)
    assert done.exit_code == 0, done.output
    fresh = _probabilities(documents_run, DOC_B)
    ended = _probabilities(documents_run, "\n\n" + DOC_B, "--state-in", carried)
    assert ended[1:] == fresh  # the first newline ends DOC_A's last line; then a blank one
    assert _probabilities(documents_run, "\n" + DOC_B, "--state-in", after_blank) == fresh
    assert _probabilities(documents_run, DOC_B, "--state-in", carried) != fresh


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        (DOC_A, "\n\n" + DOC_B, DOC_A + "\n" + DOC_B),
        (DOC_A + "\n ", "\t\n" + DOC_B, DOC_A + "\n" + DOC_B),
        (DOC_A + "\n", "\n" + DOC_B, DOC_A + "\n" + DOC_B),
        (DOC_A, "\n", DOC_A + "\n"),  # a call of one newline: a line's end, not a blank line
        (DOC_A + "\n", "\n", DOC_A + "\n"),  # a call of a blank line alone: no symbols, no error
        (DOC_A + "\n ", " ", DOC_A + "\n  "),  # more whitespace for the held line
    ],
)
def test_two_calls_through_a_state_file_give_one_call_wherever_the_line_is_cut(
    documents_run, tmp_path, first, second, kept
):
    """The newline that begins the second call ends the first call's last line (it is no
    blank line), and whitespace that ends the first call waits for the rest of its line."""
    whole = predict_json(documents_run, input=first + second)
    state = tmp_path / "state.npz"
    parts = (
        predict_json(documents_run, "--state-out", state, input=first),
        predict_json(documents_run, "--state-in", state, input=second),
    )
    for key in ("symbols", "predictions", "probabilities"):
        assert parts[0][key] + parts[1][key] == whole[key], key
    assert len(whole["symbols"]) == len(kept)


def test_a_state_file_whose_held_line_is_not_whitespace_is_damaged(documents_run, tmp_path):
    state = tmp_path / "state.npz"
    done = invoke("predict", "--run-dir", documents_run, "--state-out", state, input="ab\n ")
    assert done.exit_code == 0, done.output
    with np.load(state) as saved:
        arrays = dict(saved)
    assert arrays["line_held"].tobytes() == b" " and arrays["line_start"].tolist() == [True]
    import echo_keras as ek

    predictor = ek.load_predictor(documents_run)  # the state is from before that space
    with pytest.warns(ek.EchoKerasWarning, match="holds 1 whitespace character that `predict`"):
        predictor.load_state(state)
    arrays["line_held"] = np.frombuffer(b" x", np.uint8)
    np.savez(state, **arrays)
    refused = invoke("predict", "--run-dir", documents_run, "--state-in", state, input="a")
    one_line_error(refused, "is damaged: line_held is not whitespace", code=1)


def test_a_state_file_saved_after_any_whitespace_is_read_back(documents_run, tmp_path):
    """Whitespace that ends a call waits in the state file, up to what a blank line holds:
    more is text, read there and then (a state file that held it all was then refused)."""
    state = tmp_path / "state.npz"
    for spaces in (BLANK_LINE_MAX, BLANK_LINE_MAX + 2):
        first = "ab\n" + " " * spaces
        done = invoke("predict", "--run-dir", documents_run, "--state-out", state, input=first)
        assert done.exit_code == 0, done.output
        whole, again = (
            json.loads(invoke("predict", "--run-dir", documents_run, *flags, input=text).stdout)
            for flags, text in ((["--json"], first + "ba"), (["--json", "--state-in", state], "ba"))
        )
        assert len(whole["predictions"]) == len(first) + 2
        held = spaces if spaces <= BLANK_LINE_MAX else 0
        assert again["predictions"] == whole["predictions"][-(held + 2) :]


def test_generate_after_a_prime_that_ends_its_document_starts_afresh(documents_run):
    from echo_keras import load_predictor

    predictor = load_predictor(documents_run)
    fresh, _ = predictor.generate(30, seed=3)
    after, _ = predictor.generate(30, prime=DOC_A + "\n\n", seed=3)
    assert after == fresh
    assert predictor.generate(30, prime=DOC_A, seed=3)[0] != fresh


def _generated(run, *flags) -> str:
    result = invoke("predict", "--run-dir", run, "--generate", *flags, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["text"]


def _saved(path) -> dict:
    with np.load(path) as saved:
        return {name: saved[name].tolist() for name in saved.files}


@pytest.mark.parametrize(
    ("first", "prime"),
    [
        (DOC_A, "\n" + DOC_B),  # the newline ends DOC_A's line: no blank line, no new document
        (DOC_A + "\n ", "ab"),  # the held space begins the prime's line
        (DOC_A + "\n ", ""),  # ... and is read before sampling, with no prime
        (DOC_A + "\n ", "\t\n" + DOC_B),  # ... or is a blank line's, which ends DOC_A
    ],
)
def test_generate_goes_on_from_a_state_file_where_it_left_the_line(
    documents_run, tmp_path, first, prime
):
    """Generating from a state file equals generating with everything before it as the
    prime: same text, and the same state (and line) saved for the next call."""
    read, one, two = tmp_path / "read.npz", tmp_path / "one.npz", tmp_path / "two.npz"
    done = invoke("predict", "--run-dir", documents_run, "--state-out", read, input=first)
    assert done.exit_code == 0, done.output
    for length in (0, 20):
        whole = _generated(documents_run, length, "--seed", 4, "--prime", first + prime,
                           "--state-out", one)  # fmt: skip
        parts = _generated(documents_run, length, "--seed", 4, "--prime", prime,
                           "--state-in", read, "--state-out", two)  # fmt: skip
        assert parts == whole
        assert _saved(two) == _saved(one)


def test_predict_after_generate_reads_on_from_where_the_generated_text_left_the_line(
    documents_run, tmp_path
):
    """A newline that begins the next call ends the generated text's last line (no blank
    line, unless that line is one), as it would in one call over the whole text."""
    state = tmp_path / "state.npz"
    checked = 0
    for seed in range(8):
        text = _generated(documents_run, 12, "--seed", seed, "--prime", DOC_A,
                          "--state-out", state)  # fmt: skip
        if read_text(DOC_A + text, TEXT, documents=True).starts:
            continue  # a generated blank line does not zero the state: not one call's
        whole = predict_json(documents_run, input=DOC_A + text + "\n" + DOC_B)
        after = predict_json(documents_run, "--state-in", state, input="\n" + DOC_B)
        count = len(after["symbols"])
        assert whole["probabilities"][-count:] == after["probabilities"], repr(text)
        checked += 1
    assert checked >= 3


def test_whitespace_a_state_file_holds_is_named_as_such_and_generate_0_keeps_it_held(
    documents_run, tmp_path
):
    """A CR (not in the vocabulary: only the data's blank lines held one) waits in the state
    file at a line's start. Reading it as a symbol was blamed on the prime ("prime: line 1,
    column 1", even without one) or on the input's first column; `--generate 0`, which reads
    nothing, failed on it instead of passing the state on, held, as a prime that ends
    in it leaves it held too."""
    held, again, primed = (tmp_path / name for name in ("held.npz", "again.npz", "primed.npz"))
    done = invoke("predict", "--run-dir", documents_run, "--state-out", held, input="ab\n\r")
    assert done.exit_code == 0, done.output
    for flags, text in ((["--generate", 5], None), (["--generate", 5, "--prime", "ab"], None),
                        ([], "ba\n")):  # fmt: skip
        result = invoke("predict", "--run-dir", documents_run, "--state-in", held, *flags,
                        input=text)  # fmt: skip
        one_line_error(result, "'\\r' is not in the run's vocabulary: whitespace that the "
                       "stream's earlier call held at a line's start", code=2)  # fmt: skip
    _generated(documents_run, 0, "--state-in", held, "--state-out", again)
    _generated(documents_run, 0, "--prime", "ab\n\r", "--state-out", primed)
    assert _saved(again) == _saved(held) == _saved(primed)
    ended = invoke("predict", "--run-dir", documents_run, "--state-in", again, input="\nba")
    assert ended.exit_code == 0, ended.output  # a blank line after all: a new document
    unsaved = invoke("predict", "--run-dir", documents_run, "--generate", 0, "--prime", "ab\n\r")
    one_line_error(unsaved, "--prime: line 2, column 1: '\\r' is not in", code=2)  # as
    # predict without --state-out reads it: no state file to hold it in


def test_generate_0_in_python_reads_all_of_its_prime_as_predict_does(documents_run):
    """No line is saved with a library caller's state: whitespace ending the prime is read,
    as `predict` reads it (a first fix held it, and the state lost it)."""
    from echo_keras import load_predictor

    predictor = load_predictor(documents_run)
    for prime in ("ab\n  ", " "):
        _, generated = predictor.generate(0, prime=prime)
        _, predicted = predictor.predict(predictor.vocabulary.encode(prime))
        for name in predictor.state_names:
            assert np.array_equal(generated[name], predicted[name]), (prime, name)


def test_a_call_of_blank_lines_alone_goes_on_from_a_state_and_a_fresh_one_is_refused(
    documents_run, tmp_path
):
    state = tmp_path / "state.npz"
    done = invoke("predict", "--run-dir", documents_run, "--state-out", state, input=DOC_A + "\n")
    assert done.exit_code == 0, done.output
    blank = invoke("predict", "--run-dir", documents_run, "--state-in", state, input=" \n")
    assert blank.exit_code == 0 and blank.stdout == "", blank.output
    assert "Accuracy: n/a (no symbols: blank lines alone)" in blank.stderr
    fresh = invoke("predict", "--run-dir", documents_run, input="\n \n")  # nothing goes on
    one_line_error(fresh, "the input holds no symbols", code=2)
