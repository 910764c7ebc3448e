"""Symbol streams for `predict`: parse input a block at a time, lay out the output, score the echo.

Input is read in blocks of bytes, never whole. For up to 10 classes a symbol is one
digit, and the output of a block repeats the block's layout with every digit replaced
by its predicted class (spaces and newlines kept). For more classes, symbols are
whitespace-separated integers, and every input line becomes one output line of
space-separated classes. A bad character names its line and column.

Everything here is numpy; nothing imports TensorFlow.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from echo_keras.config import LONGEST_SYMBOL
from echo_keras.errors import SymbolError
from echo_keras.positions import Position
from echo_keras.vocabulary import ASCII_SPACES

BLOCK = 1 << 16  # bytes read at a time
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(ASCII_SPACES)] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[ord("0") : ord("9") + 1] = True
_TOKEN = re.compile(rb"\S+")


def complete_tokens(data, is_space: Callable) -> int:
    """Where the whole tokens of a block (`data`: bytes or text) end. A block that does not
    end in whitespace may cut its last token: that tail waits for the next block, unless it
    is longer than any symbol, when it is reported now."""
    end = len(data)
    while end and not is_space(data[end - 1]):
        end -= 1
    return len(data) if len(data) - end > LONGEST_SYMBOL else end


@dataclass
class Piece:
    """The symbols of one block, with what it takes to lay out their predictions.

    `breaks[j]` is the number of symbols of this block before its j-th newline.
    `raw` and `digits` (digit mode only) let the output keep the block's exact layout.
    `starts` (a run trained on documents): the indices at which a document starts, where
    the state is zeroed; one equal to the number of symbols zeroes it after the last.
    """

    symbols: np.ndarray
    breaks: np.ndarray
    raw: np.ndarray | None = None
    digits: np.ndarray | None = None
    starts: tuple[int, ...] = ()


class SymbolParser:
    """Turn blocks of input bytes into symbols, keeping track of lines and columns.

    Feed it every block in order with `parse`, then call `finish` (which also
    returns the symbols of a token still open at the end).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.digit_mode = num_classes <= 10
        self._position = Position()  # of the next character, for messages
        self.count = 0  # symbols parsed so far
        self._carry = b""  # token mode: a token that may continue in the next block

    def _expected(self) -> str:
        if self.digit_mode:
            return f"symbols are the digits 0..{self.num_classes - 1}"
        return f"symbols are whitespace-separated integers 0..{self.num_classes - 1}"

    def parse(self, block: bytes) -> Piece:
        """The symbols of `block`; SymbolError at the first character that is not one."""
        if self.digit_mode:
            piece = self._parse_digits(block)
            self._position.advance(block)
        else:
            data = self._carry + block
            end = complete_tokens(data, _SPACE.__getitem__)
            piece = self._parse_tokens(data[:end])
            self._position.advance(data[:end])
            self._carry = data[end:]
        self.count += len(piece.symbols)
        return piece

    line = None  # an echo run has no documents (see text.VocabularyParser.line)

    def may_hold_no_symbols(self, hold: bool) -> bool:
        return False  # an echo run has no blank lines to read (text.VocabularyParser's)

    def finish(self, hold: bool = False) -> Piece:
        """The last token of token mode (digit mode has none left); call once, at the end.
        (`hold`, as `text.VocabularyParser.finish` takes it: nothing waits here.)"""
        data, self._carry = self._carry, b""
        piece = self._parse_tokens(data) if data else _empty_piece()
        self._position.advance(data)
        self.count += len(piece.symbols)
        return piece

    def _parse_digits(self, block: bytes) -> Piece:
        raw = np.frombuffer(block, dtype=np.uint8)
        digits = _DIGIT[raw]
        bad = ~(digits | _SPACE[raw])
        if self.num_classes < 10:
            bad |= digits & (raw >= ord("0") + self.num_classes)
        if bad.any():
            index = int(np.argmax(bad))
            where = self._position.of(block, index)
            if _DIGIT[raw[index]]:
                raise SymbolError(
                    f"{where}: symbol {chr(raw[index])} is outside 0..{self.num_classes - 1}"
                )
            raise _not_a_symbol(where, block[index : index + 4], self._expected(), whole=False)
        symbols = (raw[digits] - ord("0")).astype(np.int32)
        counts = np.cumsum(digits, dtype=np.int64)
        newlines = np.flatnonzero(raw == ord("\n"))
        return Piece(symbols, counts[newlines], raw, digits)

    def _parse_tokens(self, data: bytes) -> Piece:
        symbols, breaks = [], []
        position = 0
        for match in _TOKEN.finditer(data):
            breaks.extend([len(symbols)] * data.count(b"\n", position, match.start()))
            position = match.end()
            token = match.group()
            value = int(token) if token.isdigit() and len(token) <= LONGEST_SYMBOL else None
            if value is None or value >= self.num_classes:
                where = self._position.of(data, match.start())
                if token.isdigit():
                    raise SymbolError(
                        f"{where}: symbol {_show(token)[1:-1]} is outside 0..{self.num_classes - 1}"
                    )
                raise _not_a_symbol(where, token, self._expected(), whole=True)
            symbols.append(value)
        breaks.extend([len(symbols)] * data.count(b"\n", position))
        return Piece(np.asarray(symbols, dtype=np.int32), np.asarray(breaks, dtype=np.int64))


def _empty_piece() -> Piece:
    return Piece(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64))


def not_utf8(where: str, byte: int) -> str:
    """The message for input that is not UTF-8 at `where`, naming its first bad byte."""
    return f"{where}: the input is not UTF-8 text (byte 0x{byte:02x})"


def _not_a_symbol(where: str, text: bytes, expected: str, whole: bool) -> SymbolError:
    """The error for `text` (bytes cut at any point) where a symbol should be: its first
    character shown (or all of it, if `whole`), or the byte that starts no UTF-8 character."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(text[:4])  # one cut at the end: fine
    except UnicodeDecodeError as error:
        if error.start == 0:
            return SymbolError(not_utf8(where, text[0]))
    shown = _show(text) if whole else repr(text.decode("utf-8", errors="replace")[0])
    return SymbolError(f"{where}: {shown} is not a symbol ({expected})")


def _show(text: bytes) -> str:
    """`text` quoted for a message (bytes cut at any point)."""
    shown = text.decode("utf-8", errors="replace")
    return repr(shown[:20] + ("..." if len(shown) > 20 else ""))


class Layout:
    """Lay out per-symbol output the way the input was laid out, block after block.

    Classes in digit mode keep the input's exact bytes; otherwise (more than ten
    classes, or probabilities) every input line becomes one output line of
    space-separated items.
    """

    def __init__(self, digit_mode: bool):
        self.digit_mode = digit_mode
        self._line_open = False  # the current output line already holds an item

    def classes(self, piece: Piece, predictions: np.ndarray) -> bytes:
        if self.digit_mode and piece.raw is not None:
            out = piece.raw.copy()
            out[piece.digits] = predictions.astype(np.uint8) + ord("0")
            if len(out):
                self._line_open = out[-1] != ord("\n")
            return out.tobytes()
        return self._lines(piece, [str(int(p)) for p in predictions])

    def probabilities(self, piece: Piece, probabilities: np.ndarray) -> bytes:
        items = [",".join(f"{p:.6f}" for p in row) for row in probabilities.tolist()]
        return self._lines(piece, items)

    def _lines(self, piece: Piece, items: list[str]) -> bytes:
        parts, start = [], 0
        for stop in [*piece.breaks.tolist(), None]:
            chunk = items[start:stop]
            if chunk:
                parts.append((" " if self._line_open else "") + " ".join(chunk))
                self._line_open = True
            if stop is not None:
                parts.append("\n")
                self._line_open = False
                start = stop
        return "".join(parts).encode()

    def end(self) -> bytes:
        """A final newline if the last line was left open (the input did not end with one)."""
        return b"\n" if self._line_open else b""


class EchoScore:
    """Count predictions that match the echo: the symbol `echo_step` positions earlier.

    Positions are counted over all symbols given to `update`, across blocks and
    lines; positions before `echo_step` have no echo in this stream and are not scored.
    """

    def __init__(self, echo_step: int):
        self.echo_step = echo_step
        self._tail = np.zeros(0, dtype=np.int32)
        self.scored = 0
        self.correct = 0

    def restart(self) -> None:
        """A document starts: its first `echo_step` positions have no echo in it."""
        self._tail = np.zeros(0, dtype=np.int32)

    def update(self, symbols: np.ndarray, predictions: np.ndarray) -> None:
        step, seen = self.echo_step, len(self._tail)
        joined = np.concatenate([self._tail, symbols])
        # Symbol j of this block sits at joined[seen + j]; its echo at joined[seen + j - step].
        start = min(len(symbols), max(0, step - seen))
        targets = joined[seen + start - step : seen + len(symbols) - step]
        if step:
            self._tail = joined[-step:]
        self.scored += len(targets)
        self.correct += int(np.count_nonzero(predictions[start:] == targets))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def check_stream(read: Callable[[int], bytes], num_classes: int) -> int:
    """Parse a whole input without predicting: the number of symbols, or SymbolError.

    Used on files before predicting, so that a bad symbol near the end stops the
    command before it has printed anything.
    """
    return count_parsed(read, SymbolParser(num_classes))


def count_parsed(read: Callable[[int], bytes], parser, hold: bool = False) -> int:
    """Feed `parser` (a parser of this module's or of stream/text.py's kind) a whole input
    (`hold`: as its `finish` takes it): the number of symbols, or SymbolError (also when
    there are none)."""
    seen = 0
    while block := read(BLOCK):
        parser.parse(block)
        seen += len(block)
    parser.finish(hold)
    refuse_no_symbols(parser, seen, hold)
    return parser.count


def refuse_no_symbols(parser, seen: int, hold: bool) -> None:
    """SymbolError for an input (`seen` bytes of it) in which `parser` (finished, `hold` as
    its `finish` took it) found no symbols, unless blank lines alone may go on a stream."""
    if parser.count == 0 and not (seen and parser.may_hold_no_symbols(hold)):
        raise SymbolError("the input holds no symbols")
