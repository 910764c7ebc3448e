"""Where a reader stands in a text it reads in pieces: the line and column an error names.

The corpus reader (a training file), the echo run's symbol parser and a data run's
vocabulary parser all read their input a piece at a time and name the line and column of
the first bad symbol. Pieces are `str`, or `bytes` of UTF-8 text; either way a column
counts characters, from 1.
"""

from __future__ import annotations


def _characters(piece: str | bytes) -> int:
    return len(piece) if isinstance(piece, str) else len(piece.decode("utf-8", "replace"))


class Position:
    """Line and column (both from 1) of the next character: `advance` past every piece read,
    in order; `of` names a place inside the piece that starts here.

    Args:
        name: put before `line L, column C` (a file's name), or "" for none.
    """

    def __init__(self, name: str = ""):
        self.name = name
        self.line, self.column = 1, 1

    def of(self, piece: str | bytes, index: int) -> str:
        """`[NAME ]line L, column C` of the character at `index` (a byte offset in bytes)."""
        before = piece[:index]
        line, column = self._after(before)
        return f"{self.name} line {line}, column {column}".lstrip()

    def advance(self, piece: str | bytes) -> None:
        """Move past `piece`."""
        self.line, self.column = self._after(piece)

    def _after(self, piece: str | bytes) -> tuple[int, int]:
        newline = "\n" if isinstance(piece, str) else b"\n"
        newlines = piece.count(newline)
        if not newlines:
            return self.line, self.column + _characters(piece)
        return self.line + newlines, _characters(piece[piece.rfind(newline) + 1 :]) + 1
