"""Streams of a run on its own data: input read through the run's vocabulary, output decoded.

A text run reads UTF-8 text, every character a symbol (newlines too); an ints run reads
whitespace-separated integers. Input is parsed a block of bytes at a time, as
`symbols.py` parses an echo run's digits, and a symbol outside the vocabulary names its
line and column. The predictions of a text run are its characters, decoded (for the
`next` task, the character predicted to follow each one); an ints run's come one output
line per input line, as integers. Probabilities: one line per symbol for text (the
vocabulary's order), one line per input line for ints, as for echo runs.

Everything here is numpy; nothing imports TensorFlow.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

import numpy as np

from echo_keras.config import LONGEST_SYMBOL
from echo_keras.errors import SymbolError
from echo_keras.positions import Position
from echo_keras.stream.documents import EARLIER, DocumentSplitter
from echo_keras.stream.symbols import (
    Layout,
    Piece,
    complete_tokens,
    count_parsed,
    not_utf8,
)
from echo_keras.vocabulary import ASCII_SPACES, Vocabulary, not_text

_SPACES = ASCII_SPACES.decode()  # what training splits integers at
_TOKEN = re.compile(f"[^{re.escape(_SPACES)}]+")


class VocabularyParser:
    """Turn blocks of input bytes into a vocabulary's symbol ids, tracking lines and columns.

    The same interface as `symbols.SymbolParser`: `parse` every block in order, then
    `finish` once. Columns count characters, from 1. With `documents` (a run trained on
    documents), blank lines are left out and each piece says where documents start
    (`documents.py`).
    """

    def __init__(self, vocabulary: Vocabulary, documents: bool = False, line: tuple | None = None):
        self.vocabulary = vocabulary
        self._documents = DocumentSplitter(line) if documents else None
        self._continued = line is not None  # a stream going on from an earlier call
        self._hold = False
        self._position = Position()  # of the next character, for messages
        self.count = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._carry = ""  # ints: a token that may continue in the next block

    def parse(self, block: bytes) -> Piece:
        """The symbols of `block`; SymbolError at the first one outside the vocabulary."""
        return self._text(self._decode(block, final=False), final=False)

    def finish(self, hold: bool = False) -> Piece:
        """What is left at the end of the input (a last token); call once. `hold`: the
        stream goes on in another call (see `line`)."""
        self._hold = hold
        return self._text(self._decode(b"", final=True), final=True)

    @property
    def line(self) -> tuple[bool, str] | None:
        """With documents, where the stream stands in its line (`DocumentSplitter.line`)."""
        return None if self._documents is None else self._documents.line

    def may_hold_no_symbols(self, hold: bool) -> bool:
        """Whether an input of blank lines alone is no error: a documents stream going on,
        from an earlier call's line or into a later call (`hold`), where they end a document."""
        return self._documents is not None and (hold or self._continued)

    def _decode(self, block: bytes, final: bool) -> str:
        try:
            return self._decoder.decode(block, final)
        except UnicodeDecodeError as error:
            # The text before the bad byte first, as if the input ended there (as training
            # reads it): a symbol there that is not the run's is the first error, a token
            # that runs into the byte too. Then the bad byte.
            self._text(error.object[: error.start].decode("utf-8"), final=True)
            carried = self._carry.encode()
            place = self._position.of(carried + error.object[error.start :], len(carried))
            raise SymbolError(not_utf8(place, error.object[error.start])) from None

    def _text(self, text: str, final: bool) -> Piece:
        if self.vocabulary.kind == "text" and self._documents is not None:
            piece = self._documents_kept(text, final)
            self._position.advance(text)
        elif self.vocabulary.kind == "text":
            piece = self._characters(text)
            self._position.advance(text)
        else:
            data = self._carry + text
            end = len(data) if final else complete_tokens(data, _SPACES.__contains__)
            piece = self._tokens(data[:end])
            self._position.advance(data[:end])
            self._carry = data[end:]
            if self._documents is not None:  # blank lines hold no integers: only the starts
                kept, starts = self._documents.split(data[:end], final, self._hold)
                tokens = [match.start() for match in _TOKEN.finditer(kept)]
                piece.starts = tuple(np.searchsorted(tokens, starts).tolist())
        self.count += len(piece.symbols)
        return piece

    def _documents_kept(self, text: str, final: bool) -> Piece:
        """The symbols a run on documents reads of `text` (blank lines left out, as training
        leaves them out, unchecked), and where documents start."""
        kept, starts = self._documents.split(text, final, self._hold)
        ids, index = self.vocabulary.ids_of(kept)
        if index is not None:
            offset, source = next(o for o in reversed(self._documents.origins) if o[0] <= index)
            if source == EARLIER:  # no column of this input: where the stream stood before
                error = SymbolError(
                    f"{kept[index]!r} is not in the run's vocabulary: whitespace that the "
                    "stream's earlier call held at a line's start (not read then: a blank "
                    "line would have ended a document), read before this input"
                )
                error.before_input = True  # no place in the input to name
                raise error
            if source is None:  # held whitespace: from column 1 of the line the block is on
                where = f"{self._position.name} line {self._position.line}, column "
                where = (where + str(index - offset + 1)).lstrip()
            else:
                where = self._position.of(text, source + index - offset)
            raise SymbolError(f"{where}: {kept[index]!r} is not in the run's vocabulary")
        return Piece(ids.astype(np.int32), np.zeros(0, np.int64), starts=tuple(starts))

    def _characters(self, text: str) -> Piece:
        ids, index = self.vocabulary.ids_of(text)
        if index is not None:
            raise SymbolError(
                f"{self._position.of(text, index)}: {text[index]!r} is not in the run's vocabulary"
            )
        return Piece(ids.astype(np.int32), np.zeros(0, np.int64))

    def _tokens(self, text: str) -> Piece:
        size = self.vocabulary.size
        symbols, breaks, position = [], [], 0
        for match in _TOKEN.finditer(text):
            breaks.extend([len(symbols)] * text.count("\n", position, match.start()))
            position = match.end()
            token = match.group()
            ascii_digits = token.isascii() and token.isdigit()
            value = int(token) if ascii_digits and len(token) <= LONGEST_SYMBOL else None
            if value is None or value >= size:
                shown = token[:20] + ("..." if len(token) > 20 else "")
                what = "is not a symbol of the run" if ascii_digits else "is not a symbol"
                raise SymbolError(
                    f"{self._position.of(text, match.start())}: {shown!r} {what} "
                    f"(whitespace-separated integers 0..{size - 1})"
                )
            symbols.append(value)
        breaks.extend([len(symbols)] * text.count("\n", position))
        return Piece(np.asarray(symbols, np.int32), np.asarray(breaks, np.int64))


class VocabularyLayout:
    """Lay out predictions through the vocabulary, block after block (see the module)."""

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self._lines = Layout(digit_mode=False)  # ints: one output line per input line
        self._last = ""  # text: the last character written

    def classes(self, piece: Piece, predictions: np.ndarray) -> bytes:
        if self.vocabulary.kind == "ints":
            return self._lines.classes(piece, predictions)
        text = self.vocabulary.decode(predictions)
        self._last = text[-1:] or self._last
        return text.encode("utf-8")

    def probabilities(self, piece: Piece, probabilities: np.ndarray) -> bytes:
        if self.vocabulary.kind == "ints":
            return self._lines.probabilities(piece, probabilities)
        self._last = "\n" if len(probabilities) else self._last
        return "".join(
            ",".join(f"{p:.6f}" for p in row) + "\n" for row in probabilities.tolist()
        ).encode()

    def end(self) -> bytes:
        """A final newline if the output does not end with one."""
        if self.vocabulary.kind == "ints":
            return self._lines.end()
        return b"\n" if self._last and self._last != "\n" else b""


class NextScore:
    """Count predictions that match the next symbol of the stream (the `next` task).

    The prediction at each position is scored against the symbol after it; the last
    symbol's prediction waits for the next block, and is not scored at the end.
    """

    def __init__(self):
        self._pending: int | None = None  # the prediction of the last symbol seen
        self.scored = 0
        self.correct = 0

    def restart(self) -> None:
        """A document starts: the prediction before it is not scored against its symbol."""
        self._pending = None

    def update(self, symbols: np.ndarray, predictions: np.ndarray) -> None:
        if not len(symbols):
            return
        earlier = predictions[:-1]
        if self._pending is not None:
            earlier = np.concatenate([[self._pending], earlier])
        self.scored += len(earlier)
        self.correct += int(np.count_nonzero(earlier == symbols[len(symbols) - len(earlier) :]))
        self._pending = int(predictions[-1])

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def check_text(
    read: Callable[[int], bytes], vocabulary: Vocabulary, documents: bool, line=None, hold=False
) -> int:
    """Parse a whole input without predicting (`line` and `hold`: as `predict_stream` takes
    them): the number of symbols, or SymbolError."""
    return count_parsed(read, VocabularyParser(vocabulary, documents, line), hold)


def parse_text(text: str, vocabulary: Vocabulary, where: str = "") -> np.ndarray:
    """The symbol ids of `text` (a prime, say); SymbolError naming line and column."""
    return read_text(text, vocabulary, where).symbols


def read_text(
    text: str,
    vocabulary: Vocabulary,
    where: str = "",
    documents: bool = False,
    line: tuple | None = None,
    hold: bool = False,
):
    """`text` as one Piece: its symbol ids and, with `documents`, where documents start
    (blank lines left out; read from `line`, where an earlier call left the stream in its
    line, whitespace it held kept unless the line turns out blank; with `hold`, whitespace
    that ends it is held in turn, for a later call); SymbolError naming line and column,
    after `where`."""
    parser = VocabularyParser(vocabulary, documents, line)
    try:  # bytes a command line could not decode come back as they were given
        data = text.encode("utf-8", "surrogateescape")
        pieces = [parser.parse(data), parser.finish(hold)]
    except UnicodeEncodeError as error:
        raise SymbolError(f"{where}{not_text(text, error.start, Position())}") from None
    except SymbolError as error:
        if getattr(error, "before_input", False):
            raise
        raise SymbolError(f"{where}{error}") from None
    size = len(pieces[0].symbols)
    starts = (*pieces[0].starts, *(size + start for start in pieces[1].starts))
    symbols = np.concatenate([piece.symbols for piece in pieces])
    return Piece(symbols, pieces[0].breaks, starts=starts)
