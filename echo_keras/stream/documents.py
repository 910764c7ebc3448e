"""The documents of a stream, found as training finds them in a file (`corpus.read_symbols`).

A run trained with `--documents` never saw a blank line: blank lines separate documents,
are left out, and every document starts from a zeroed state. A stream read for such a
run is split the same way, as it comes: a blank line (only spaces, tabs, CRs, form or
vertical feeds before its newline, after a line end or at the start of the stream) is
dropped, and the first symbol after one starts a document. The whitespace that begins a
line waits until the line turns out blank or not, so no lookahead beyond a line is needed.

Everything here is plain Python; nothing imports TensorFlow.
"""

from __future__ import annotations

_BLANK = " \t\r\f\v"  # what a blank line may hold before its newline (as corpus.py reads it)


class DocumentSplitter:
    """Split text, a block at a time, into what training keeps and where documents start.

    `split` every block in order; the last with `final=True`. Each returns the text kept
    (blank lines dropped) and the offsets in it where a document starts: the state is
    zeroed there. An offset equal to the length of the text kept (only with `final`)
    says that the stream ends in blank lines: whatever follows starts a new document.
    """

    def __init__(self):
        self._line_start = True  # nothing but whitespace on the current line so far
        self._held = ""  # that whitespace: dropped if the line is blank, else kept
        self._boundary = False  # a blank line since the last symbol kept

    def split(self, text: str, final: bool = False) -> tuple[str, list[int]]:
        kept: list[str] = []
        starts: list[int] = []
        size = 0
        lines = text.split("\n")
        for index, line in enumerate(lines):
            complete = index < len(lines) - 1  # ends with a newline in this block
            end = "\n" if complete else ""
            if self._line_start and not line.strip(_BLANK):
                if complete:  # a blank line: left out, and the next symbol starts a document
                    self._held = ""
                    self._boundary = True
                else:  # whitespace alone so far: wait for the rest of the line
                    self._held += line
                continue
            if self._line_start:
                line, self._held = self._held + line, ""
            size = self._keep(line + end, kept, starts, size)
            self._line_start = complete
        if final:
            if self._held:  # a last line of whitespace without a newline is not blank
                size = self._keep(self._held, kept, starts, size)
                self._held = ""
            if self._boundary:
                starts.append(size)
                self._boundary = False
        return "".join(kept), starts

    def _keep(self, text: str, kept: list[str], starts: list[int], size: int) -> int:
        if self._boundary:
            starts.append(size)
            self._boundary = False
        kept.append(text)
        return size + len(text)
