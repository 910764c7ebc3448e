"""A user's own sequence, read and laid out (corpus.py, data.Windows): no TensorFlow here."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from echo_keras import corpus
from echo_keras.config import MAX_CLASSES, TrainConfig
from echo_keras.corpus import load_corpus, read_symbols
from echo_keras.data import document_windows, make_windows, series_windows, task_pairs
from echo_keras.errors import ConfigError, SymbolError, UsageError
from echo_keras.positions import Position
from echo_keras.vocabulary import Vocabulary


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --- reading ---------------------------------------------------------------------------------


def test_text_vocabulary_is_the_files_characters_in_code_point_order(tmp_path):
    path = write(tmp_path, "t.txt", "héllo wörld\n")
    symbols = read_symbols(path)
    assert symbols.vocabulary.symbols == tuple(sorted(set("héllo wörld\n")))
    assert symbols.vocabulary.decode(symbols.ids) == "héllo wörld\n"
    assert symbols.ids.dtype == np.uint8
    assert symbols.doc_starts is None


def test_ints_vocabulary_is_zero_to_the_largest(tmp_path):
    path = write(tmp_path, "i.txt", "0 3\n1\t2 3\n")
    symbols = read_symbols(path, "ints")
    assert symbols.vocabulary.symbols == (0, 1, 2, 3)
    assert symbols.ids.tolist() == [0, 3, 1, 2, 3]


def test_a_file_larger_than_a_chunk_reads_the_same_as_in_one_piece(tmp_path, monkeypatch):
    text = "".join(f"line {i} ünïcødé\n\n" if i % 7 == 0 else f"l{i}€" for i in range(3000))
    path = write(tmp_path, "big.txt", text)
    whole = read_symbols(path, documents=True)
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 37)  # cuts inside lines and characters
    pieces = read_symbols(path, documents=True)
    assert whole.vocabulary == pieces.vocabulary
    assert np.array_equal(whole.ids, pieces.ids)
    assert np.array_equal(whole.doc_starts, pieces.doc_starts)
    assert whole.digest == pieces.digest == corpus.file_digest(path)


def test_blank_lines_separate_documents(tmp_path):
    path = write(tmp_path, "d.txt", "ab\ncd\n\nef\n \n\n\ngh")
    symbols = read_symbols(path, documents=True)
    text = symbols.vocabulary.decode(symbols.ids)
    starts = symbols.doc_starts.tolist()
    pieces = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    assert pieces == ["ab\ncd\n", "ef\n", "gh"]


def test_ints_documents_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 5)
    path = write(tmp_path, "d.txt", "1 2 3\n4\n\n5 6\n\n\n7 8 9 10\n")
    symbols = read_symbols(path, "ints", documents=True)
    assert symbols.ids.tolist() == list(range(1, 11))
    assert symbols.doc_starts.tolist() == [0, 4, 6]


def test_an_ints_file_without_line_feeds_is_cut_at_any_whitespace(tmp_path, monkeypatch):
    """`\r` alone (or `\v`, `\f`) between lines: each chunk is cut there, not read whole."""
    numbers = [i % 50 for i in range(2000)]
    path = tmp_path / "cr.txt"
    path.write_bytes(b"\r".join(b"\f".join(b"%d" % n for n in numbers[i : i + 5])
                                for i in range(0, 2000, 5)))  # fmt: skip
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 64)
    sizes = []
    chunks = corpus._chunks

    def recorded(*args):
        for chunk in chunks(*args):
            sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr(corpus, "_chunks", recorded)
    assert read_symbols(path, "ints").ids.tolist() == numbers
    assert max(sizes) < 2 * 64 and len(sizes) >= path.stat().st_size // 64
    path.write_bytes(b"1 " + b"7" * 200)  # a token as long as a chunk: refused, not held
    with pytest.raises(SymbolError, match="line 1, column 3: '77777777777777777777...'"):
        read_symbols(path, "ints")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ["is empty"]),
        (b"ab\x00cd", ["line 1, column 3", "NUL", "binary"]),
        (b"ok\nab\xffc", ["line 2, column 3", "not UTF-8", "0xff"]),
        (b"ok\nab\xff", ["line 2, column 3", "not UTF-8", "0xff"]),
        (b"aaaa", ["1 distinct character"]),
    ],
)
def test_bad_text_files_are_one_line_naming_where(tmp_path, content, fragments):
    path = write(tmp_path, "bad.txt", content)
    with pytest.raises(UsageError) as caught:
        read_symbols(path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("content", ["0 0 0 0", "3\n3 3\n"])
def test_an_ints_file_of_one_repeated_symbol_is_refused_as_a_text_of_one_is(tmp_path, content):
    path = write(tmp_path, "one.txt", content)
    with pytest.raises(UsageError, match="has 1 distinct symbol: nothing to predict"):
        read_symbols(path, "ints")
    assert read_symbols(write(tmp_path, "two.txt", "3 0 3"), "ints").vocabulary.size == 4


def test_a_vocabulary_over_the_limit_is_refused(tmp_path):
    text = "".join(chr(point) for point in range(0x10000, 0x10000 + MAX_CLASSES + 1))
    path = write(tmp_path, "many.txt", text)
    with pytest.raises(UsageError, match=f"more than {MAX_CLASSES} distinct"):
        read_symbols(path)
    with pytest.raises(UsageError, match="at most"):
        read_symbols(write(tmp_path, "i.txt", f"1 {MAX_CLASSES}"), "ints")


def test_missing_fifo_and_folder_are_refused_without_reading(tmp_path):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, fragment in [
        (tmp_path / "nope", "cannot be read"),
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
    ]:
        with pytest.raises(UsageError, match=fragment):
            read_symbols(path)


def test_a_bad_integer_or_an_unknown_symbol_names_line_and_column(tmp_path):
    with pytest.raises(SymbolError, match=r"line 2, column 3: 'x1'"):
        read_symbols(write(tmp_path, "i.txt", "1 2\n3 x1 4"), "ints")
    with pytest.raises(SymbolError, match=r"line 1, column 5: '-1'"):
        read_symbols(write(tmp_path, "n.txt", "1 2 -1"), "ints")
    vocabulary = Vocabulary("text", ("a", "b", "\n"))
    with pytest.raises(SymbolError, match=r"line 3, column 2: 'é'"):
        read_symbols(write(tmp_path, "t.txt", "ab\nba\naé"), vocabulary=vocabulary)
    ints = Vocabulary("ints", (0, 1, 2))
    with pytest.raises(SymbolError, match=r"line 1, column 3: 3 is not a symbol"):
        ints.encode("0 3")


def test_the_first_bad_place_is_named_whichever_its_kind(tmp_path, monkeypatch):
    """A symbol outside the vocabulary before a byte that is not text (or NUL) is named
    first, in a chunk and across chunks; a NUL before a bad byte too."""
    vocabulary = Vocabulary("text", ("a", "b", "\n"))
    path = tmp_path / "bad.txt"
    for chunk in (corpus.CHUNK_BYTES, 4):
        monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk)
        path.write_bytes(b"ab\nab\nxb\xff\n")
        with pytest.raises(SymbolError, match=r"line 3, column 1: 'x' is not in"):
            read_symbols(path, vocabulary=vocabulary)
        path.write_bytes(b"ab\nab\nb\0\xff\n")
        with pytest.raises(UsageError, match=r"line 3, column 2: a NUL character"):
            read_symbols(path)
        path.write_bytes(b"ab\nab\nb\xff\0\n")
        with pytest.raises(UsageError, match=r"line 3, column 2: not UTF-8 text \(byte 0xff\)"):
            read_symbols(path)


@pytest.mark.parametrize("token", ["+1", "-0", "1_1", "0x1", "é1", "9" * 19])
def test_an_integer_is_ascii_digits_alone_as_predict_reads_it(tmp_path, token):
    """numpy would read "+1", "-0" and "1_1" (as 11), and fail on 20 digits; `predict`
    reads none of them, so training refuses them too."""
    with pytest.raises(SymbolError, match=rf"line 2, column 3: '{re.escape(token)}' is not"):
        read_symbols(write(tmp_path, "i.txt", f"0 1\n2 {token} 1"), "ints")


@pytest.mark.parametrize("documents", [False, True])
@pytest.mark.parametrize(
    "then",
    ["abab\n" * 20, "ab\n", "baba\n" + "abab\n" * 9, "abab\n" * 5],  # longer, shorter, same length
)
def test_a_file_changed_between_its_two_readings_is_named(tmp_path, monkeypatch, then, documents):
    path = write(tmp_path, "t.txt", "abab\n" * 10)
    survey = corpus._survey

    def survey_then_change(*args):
        found = survey(*args)
        path.write_text(then)
        return found

    monkeypatch.setattr(corpus, "_survey", survey_then_change)
    with pytest.raises(UsageError, match="t.txt changed while it was read"):
        read_symbols(path, documents=documents)


@pytest.mark.parametrize("kind", [str, bytes])
def test_a_position_counts_characters_across_pieces_and_lines(kind):
    """The same place is named whether the text comes as str or as UTF-8 bytes, in one piece
    or several: columns count characters (é is two bytes, one column)."""
    text = "né 1\nxé é\n\nab"
    pieces = [text[:2], text[2:7], text[7:]]
    position = Position("f.txt")
    assert position.of(text.encode() if kind is bytes else text, 0) == "f.txt line 1, column 1"
    named = []
    for piece in pieces:
        data, last = (piece.encode(), len(piece[:-1].encode())) if kind is bytes else (piece, -1)
        named.append(position.of(data, last % len(data)))  # the piece's last character
        position.advance(data)
    assert named == ["f.txt line 1, column 2", "f.txt line 2, column 2", "f.txt line 4, column 2"]
    assert (position.line, position.column) == (4, 3)
    assert Position().of("ab\ncd", 4) == "line 2, column 2"


def test_a_vocabulary_round_trips_and_damage_is_refused():
    vocabulary = Vocabulary("text", ("\n", "a", "é"))
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary
    for damaged in (
        [],
        {"kind": "bytes", "symbols": ["a", "b"]},
        {"kind": "text", "symbols": ["a", "a"]},
        {"kind": "text", "symbols": ["ab", "c"]},
        {"kind": "ints", "symbols": [0, 2]},
        {"kind": "text", "symbols": ["a", "\udcff"]},  # a lone surrogate: no UTF-8 for it
        {"kind": "text", "symbols": ["a", "\0"]},  # train refuses a NUL as binary data
    ):
        with pytest.raises(ValueError):
            Vocabulary.from_json(damaged)


# --- layout ----------------------------------------------------------------------------------


def test_series_windows_are_the_tutorials_layout_without_a_copy():
    x = np.arange(103, dtype=np.uint8)
    y = x + 1
    windows = series_windows(x, y, batch_size=2, window=5)
    chunk = windows.chunk(0, windows.num_windows)
    assert np.array_equal(chunk["inputs"], make_windows(x, 2, 5))
    assert np.array_equal(chunk["targets"], make_windows(y, 2, 5))
    assert np.shares_memory(windows.inputs, x)
    padded = windows.chunk(8, 10, size=4)
    assert np.array_equal(padded["inputs"][:2], chunk["inputs"][8:10])
    assert not padded["inputs"][2:].any()


def test_next_symbol_targets_are_the_inputs_shifted_by_one():
    ids = np.arange(10, dtype=np.uint8)
    x, y, first = task_pairs(ids, "next", 3)
    assert (x.tolist(), y.tolist(), first) == (list(range(9)), list(range(1, 10)), 0)
    x, y, first = task_pairs(ids, "echo", 3)
    assert y.tolist() == [0, 0, 0, *range(7)] and first == 3


def test_documents_are_padded_to_whole_windows_and_reset_where_they_start():
    ids = np.arange(1, 30, dtype=np.uint8)
    starts = np.array([0, 7, 10, 22])  # documents of 7, 3, 12 and 7 symbols
    windows = document_windows(ids, starts, batch_size=2, window=4, task="next", echo_step=0)
    chunk = windows.chunk(0, windows.num_windows)
    weights, resets = chunk["weights"], chunk["resets"]
    for row in range(2):
        row_inputs = chunk["inputs"][:, row].reshape(-1)
        row_weights = weights[:, row].reshape(-1).astype(bool)
        starts_here = np.flatnonzero(resets[:, row]) * 4
        for start in starts_here:  # each document starts a window; its targets follow it
            document = row_inputs[start:][row_weights[start:]]
            assert document[0] in ids[starts]
    # Every real (input, target) pair is there once, and nothing else has weight.
    pairs = {
        (int(a), int(b))
        for a, b, w in zip(
            chunk["inputs"].ravel(), chunk["targets"].ravel(), weights.ravel(), strict=True
        )
        if w
    }
    expected = {
        (int(a), int(b))
        for s, e in zip(starts, [*starts[1:], len(ids)], strict=True)
        for a, b in zip(ids[s : e - 1], ids[s + 1 : e], strict=True)
    }
    assert pairs == expected and int(weights.sum()) == len(expected)
    assert resets.sum() == 4


def test_load_corpus_completes_the_config_from_the_data(tmp_path):
    path = write(tmp_path, "t.txt", "abcd" * 500)
    config = TrainConfig(data=str(path), batch_size=4, truncated_backprop_length=10)
    assert (config.task, config.input_encoding) == ("next", "onehot")
    done, data = load_corpus(config)
    assert done.num_classes == 4
    assert done.total_series_length == 1800  # 10% held out from the end
    assert done.num_batches == data.train.num_windows == 1799 // 4 // 10
    assert data.validation.num_windows == 199 // 4 // 10
    assert data.digests == {"data": corpus.file_digest(path)}
    tiny = dataclasses.replace(config, batch_size=100)
    with pytest.raises(ConfigError, match="too few for one window per row"):
        load_corpus(tiny)
    greedy = dataclasses.replace(config, validation_fraction=0.99)  # the fraction is at fault
    with pytest.raises(ConfigError, match="0.99 leaves of `data` has 20 symbols") as e:
        load_corpus(greedy)
    assert e.value.field == "validation_fraction"
    short = dataclasses.replace(config, data=str(write(tmp_path, "s.txt", "abababab")))
    with pytest.raises(ConfigError, match=f"^data: {short.data} has 8 symbols, too few") as e:
        load_corpus(short)  # too short held out or not: the file's fault, not the fraction's


def test_the_echo_series_config_json_is_unchanged_by_the_data_fields():
    config = TrainConfig()
    assert not {"data", "task", "input_encoding", "documents"} & set(config.to_dict())
    assert TrainConfig.from_dict(config.to_dict()) == config
    # A run saved before the data fields existed, with three classes, fed one float.
    assert TrainConfig.from_dict({"num_classes": 3}).input_encoding == "scalar"
    assert TrainConfig(num_classes=3).input_encoding == "onehot"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"task": "next"}, "task"),
        ({"documents": True}, "documents"),
        ({"validation_data": "v.txt"}, "validation_data"),
        ({"data": "x", "validation_fraction": 1.0}, "validation_fraction"),
        ({"data": "x", "input_encoding": "embedding"}, "input_encoding"),
        ({"data": "x", "data_format": "csv"}, "data_format"),
    ],
)
def test_data_settings_that_cannot_work_name_their_field(settings, field):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**settings).validate()
    assert caught.value.field == field


@pytest.mark.parametrize(("task", "least"), [("echo", 6), ("next", 2)])
def test_documents_all_too_short_for_a_target_are_named_as_such(task, least):
    """Not "too few symbols for one window per row" when there are plenty: each document is
    shorter than the fewest symbols that hold a target."""
    from echo_keras.corpus import laid_out

    ids = np.zeros(900, np.uint8)
    starts = np.arange(0, 900, least - 1)  # documents of least - 1 symbols
    config = TrainConfig(task=task, echo_step=5, batch_size=4, truncated_backprop_length=10)
    with pytest.raises(ConfigError, match=f"no document of {least} symbols or more") as raised:
        laid_out(ids, starts, config, "data")
    assert raised.value.field == "data"
