"""predict's input and output without a model: symbols parsed a block at a time, the
layout of the answers, the line and column of a bad symbol, the echo score."""

from __future__ import annotations

import io

import numpy as np
import pytest

from echo_keras.errors import SymbolError
from echo_keras.stream.symbols import (
    BLOCK,
    EchoScore,
    Layout,
    SymbolParser,
    check_stream,
)
from tests.stream_runs import random_symbols


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
