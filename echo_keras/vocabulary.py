"""A run's vocabulary: its symbols, and text or integers turned into their ids.

A text vocabulary is a file's distinct characters in code point order; an `ints` one is
0..K-1, each written as ASCII digits alone. The corpus reader, `predict`'s parsers and
generation all encode through here, so a symbol is read the same way everywhere, and a
symbol that is not the run's is named by line and column. Numpy only.
"""

from __future__ import annotations

import functools
import numbers
import re
from dataclasses import dataclass

import numpy as np

from echo_keras.config import DATA_FORMATS, LONGEST_SYMBOL, MAX_CLASSES
from echo_keras.data import symbol_dtype
from echo_keras.errors import ConfigError, SymbolError
from echo_keras.positions import Position

# ASCII whitespace, which integer symbols are split at everywhere: in training files, and by
# `predict` (Python's bytes.split() splits at these too, and at nothing else).
ASCII_SPACES = b" \t\n\r\v\f"
_NOT_A_SYMBOL = re.compile(rb"[^0-9%s]|[0-9]{%d,}" % (re.escape(ASCII_SPACES), LONGEST_SYMBOL + 1))


@dataclass(frozen=True)
class Vocabulary:
    """The symbols of a run: `kind` "text" (`symbols` its characters) or "ints" (0..K-1)."""

    kind: str
    symbols: tuple

    @property
    def size(self) -> int:
        return len(self.symbols)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": list(self.symbols)}

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """(the symbols' code points, the order that sorts them)."""
        points = np.array([ord(symbol) for symbol in self.symbols], np.uint32)
        return points, np.argsort(points, kind="stable")

    def ids_of(self, text: str) -> tuple[np.ndarray, int | None]:
        """(the ids of a text run's characters, the index of the first character that is not
        in the vocabulary or None); the ids from that character on mean nothing."""
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        table, order = self._table
        ids = order[np.minimum(np.searchsorted(table[order], points), len(table) - 1)]
        bad = np.flatnonzero(table[ids] != points)
        return ids, int(bad[0]) if len(bad) else None

    @classmethod
    def from_json(cls, data: object) -> Vocabulary:
        """ValueError when `data` is not a vocabulary `to_json` could have written."""
        if not isinstance(data, dict) or data.get("kind") not in DATA_FORMATS:
            raise ValueError('not an object with "kind" "text" or "ints"')
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not 2 <= len(symbols) <= MAX_CLASSES:
            raise ValueError(f'"symbols" must be a list of 2 to {MAX_CLASSES} symbols')
        if data["kind"] == "ints":
            if symbols != list(range(len(symbols))):
                raise ValueError('"symbols" of an ints vocabulary must be 0..K-1')
        elif not all(isinstance(s, str) and len(s) == 1 for s in symbols) or len(
            set(symbols)
        ) != len(symbols):
            raise ValueError('"symbols" of a text vocabulary must be distinct characters')
        elif not all(_text_character(s) for s in symbols):  # what `train` reads from text
            raise ValueError('"symbols" of a text vocabulary must be UTF-8 characters, not NUL')
        return cls(data["kind"], tuple(symbols))

    def encode(self, text: str, where: str = "") -> np.ndarray:
        """The symbol ids of `text` (characters, or whitespace-separated integers);
        SymbolError naming line and column (after `where`) of the first symbol not in the
        vocabulary; ConfigError if `text` is not a str."""
        if not isinstance(text, str):
            raise ConfigError("text", f"must be a str, got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise not_text(text, error.start, Position(where)) from None
        return encode_bytes(self, data, Position(where))

    def decode(self, ids) -> str:
        """The text of symbol ids: characters joined, or integers separated by spaces.
        SymbolError for an id outside 0..size-1; ConfigError for what is not a 1-D
        sequence of integers."""
        values = np.asarray(ids) if not isinstance(ids, (str, bytes)) else np.asarray(None)
        whole = values.dtype.kind in "iu" or all(  # or Python's ints past 64 bits
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values.flat
        )
        if values.ndim != 1 or (values.size and not whole):
            raise ConfigError("ids", f"must be a 1-D sequence of integer ids, got {ids!r:.40}")
        problem = out_of_range(values, self.size, "ids")
        if problem:
            raise SymbolError(problem)
        if self.kind == "ints":
            return " ".join(map(str, values.tolist()))
        return "".join(self.symbols[i] for i in values.tolist())


def out_of_range(values: np.ndarray, size: int, name: str) -> str | None:
    """Why integer `values` are not all symbols 0..size-1 (the first one that is not,
    named as `name[index]`), or None."""
    if not values.size:
        return None
    bad = np.flatnonzero((values < 0) | (values >= size))
    if not len(bad):
        return None
    return f"{name}[{bad[0]}] = {values[bad[0]]} is not a symbol of the run (0..{size - 1})"


def not_text(text: str, index: int, position: Position) -> SymbolError:
    """The error for a str holding a lone surrogate at `index` (no UTF-8 can hold it)."""
    return SymbolError(f"{position.of(text, index)}: not text (a lone surrogate {text[index]!r})")


def parse_ints(chunk: bytes, position: Position) -> np.ndarray:
    """The integers of a chunk of whole tokens: each ASCII digits alone (`predict` reads them
    so too), at most LONGEST_SYMBOL of them; SymbolError naming the first other token."""
    bad = _NOT_A_SYMBOL.search(chunk)
    if bad:
        start = max(chunk.rfind(space, 0, bad.start()) for space in ASCII_SPACES) + 1
        token = chunk[start:].split(maxsplit=1)[0]
        shown = token[:20].decode("utf-8", "replace") + ("..." if len(token) > 20 else "")
        raise SymbolError(
            f"{position.of(chunk, start)}: {shown!r} is not a symbol "
            f"(a whole number from 0, in at most {LONGEST_SYMBOL} digits)"
        )
    tokens = chunk.split()
    return np.array(tokens, dtype=np.int64) if tokens else np.zeros(0, np.int64)


def encode_bytes(vocabulary: Vocabulary, chunk: bytes, position: Position) -> np.ndarray:
    dtype = symbol_dtype(vocabulary.size)
    if vocabulary.kind == "ints":
        values = parse_ints(chunk, position)
        bad = np.flatnonzero(values >= vocabulary.size)
        if len(bad):
            match = list(re.finditer(rb"\S+", chunk))[bad[0]]
            raise SymbolError(
                f"{position.of(chunk, match.start())}: {values[bad[0]]} is not a symbol of "
                f"the run (0..{vocabulary.size - 1})"
            )
        return values.astype(dtype)
    text = chunk.decode("utf-8")
    ids, index = vocabulary.ids_of(text)
    if index is not None:
        offset = len(text[:index].encode("utf-8"))
        raise SymbolError(
            f"{position.of(chunk, offset)}: {text[index]!r} is not in the run's vocabulary"
        )
    return ids.astype(dtype)


def _text_character(symbol: str) -> bool:
    """Whether `symbol` can come from a text file `train` reads: UTF-8, and not NUL."""
    try:
        symbol.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return symbol != "\0"
