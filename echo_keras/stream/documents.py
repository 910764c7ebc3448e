"""The documents of a stream, found as training finds them in a file (`corpus.read_symbols`).

A run trained with `--documents` never saw a blank line: blank lines separate documents,
are left out, and every document starts from a zeroed state. A stream read for such a
run is split the same way, as it comes: a blank line (only spaces, tabs, CRs, form or
vertical feeds before its newline, after a line end or at the start of the stream) is
dropped, and the first symbol after one starts a document. The whitespace that begins a
line waits until the line turns out blank or not, so no lookahead beyond a line is needed;
a line of more than `BLANK_LINE_MAX` whitespace characters is not blank, so it waits for
no more than that.

Everything here is plain Python; nothing imports TensorFlow.
"""

from __future__ import annotations

from echo_keras.corpus import BLANK_LINE_MAX
from echo_keras.corpus import BLANK_LINE_SPACES as _BLANK

EARLIER = -1  # the origin of whitespace an earlier call held at a line's start


class DocumentSplitter:
    """Split text, a block at a time, into what training keeps and where documents start.

    `split` every block in order; the last with `final=True` (and `hold=True` when the
    stream goes on in another call, from `line`: whitespace that may begin a blank line
    is then not kept yet). Each returns the text kept
    (blank lines dropped) and the offsets in it where a document starts: the state is
    zeroed there. An offset equal to the length of the text kept (only with `final`)
    says that the stream ends in blank lines: whatever follows starts a new document.
    `origins` then tells where each piece of that kept text stands in the block (for the
    position of a symbol in it): (offset in the text kept, offset in the block), or None
    for the block's: whitespace held from earlier blocks, from column 1 of the line that
    the block starts in; or EARLIER for whitespace an earlier call held (`line`).
    """

    def __init__(self, line: tuple[bool, str] | None = None):
        # Nothing but whitespace on the current line so far; that whitespace (dropped if
        # the line is blank, else kept). `line`: where an earlier call left off (`line`).
        self._line_start, held = line if line is not None else (True, "")
        self._held = [held] if held else []  # in pieces: a block at a time, never copied
        self._held_size = len(held)
        self._earlier = len(held)  # of it, held by an earlier call: no block's, no column
        self._boundary = False  # a blank line since the last symbol kept
        self.origins: list[tuple[int, int | None]] = []

    @property
    def line(self) -> tuple[bool, str]:
        """Where the stream stands in its line: (only whitespace on it so far, that
        whitespace, not yet kept). A stream continued in another call starts from it."""
        return self._line_start, "".join(self._held)

    def split(self, text: str, final: bool = False, hold: bool = False) -> tuple[str, list[int]]:
        kept: list[str] = []
        starts: list[int] = []
        self.origins = []
        at = 0  # where the line stands in `text`
        lines = text.split("\n")
        for index, line in enumerate(lines):
            complete = index < len(lines) - 1  # ends with a newline in this block
            end = "\n" if complete else ""
            source, at = at, at + len(line) + len(end)
            blank = not line.strip(_BLANK) and self._held_size + len(line) <= BLANK_LINE_MAX
            if self._line_start and blank:
                if complete:  # a blank line: left out, and the next symbol starts a document
                    self._held, self._held_size, self._earlier = [], 0, 0
                    self._boundary = True
                elif line:  # whitespace alone so far: wait for the rest of the line
                    self._held.append(line)
                    self._held_size += len(line)
                continue
            if self._line_start and self._held:
                self._keep_held(kept, starts)
            self._keep(line + end, kept, starts, source)
            self._line_start = complete
        if final:
            if self._held and not hold:  # a last line of whitespace without a newline is
                self._keep_held(kept, starts)  # not blank, unless the stream goes on in
                # another call (`hold`): the line may be blank
            if self._boundary:
                starts.append(self._size(kept))
                self._boundary = False
        return "".join(kept), starts

    def _size(self, kept: list[str]) -> int:
        """The length of the text kept so far in this block (each piece has its origin)."""
        return self.origins[-1][0] + len(kept[-1]) if kept else 0

    def _keep_held(self, kept: list[str], starts: list[int]) -> None:
        held = "".join(self._held)
        if self._earlier:  # an earlier call's first, then this call's own
            self._keep(held[: self._earlier], kept, starts, EARLIER)
            held = held[self._earlier :]
        if held:
            self._keep(held, kept, starts, None)
        self._held, self._held_size, self._earlier = [], 0, 0

    def _keep(self, text: str, kept: list[str], starts: list[int], source: int | None) -> None:
        size = self._size(kept)
        if self._boundary:
            starts.append(size)
            self._boundary = False
        kept.append(text)
        self.origins.append((size, source))


def line_after(line: tuple[bool, str] | None, *texts: str, hold: bool = False) -> tuple[bool, str]:
    """Where a stream stands in its line after `texts`, every symbol of them read (with
    `hold`, whitespace at the start of its last line held back), from `line` (None: a
    line's start): for a state saved after generating."""
    splitter = DocumentSplitter(line)
    for text in texts:
        splitter.split(text)
    splitter.split("", final=True, hold=hold)
    return splitter.line
