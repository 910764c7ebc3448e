"""A user's own sequence: a text or integer file read into symbols, and its vocabulary.

Text is UTF-8, one symbol per character; the vocabulary is the file's distinct
characters in code point order. `ints` files hold whitespace-separated integers
0..K-1. Files are read in chunks, twice (vocabulary, then symbols), so a large file
costs about one byte a symbol in memory (two past 256 symbols), never its text.
With `documents`, blank lines separate documents (each keeps the line end of its last
line); their start positions are kept.

Everything here is numpy; nothing imports TensorFlow.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras.config import MAX_CLASSES, TrainConfig
from echo_keras.data import Windows, document_windows, series_windows, symbol_dtype, task_pairs
from echo_keras.errors import ConfigError, UsageError
from echo_keras.memory import available_memory
from echo_keras.positions import Position
from echo_keras.values import readable
from echo_keras.vocabulary import ASCII_SPACES, Vocabulary, encode_bytes, parse_ints

CHUNK_BYTES = 1 << 20
BLANK_LINE_SPACES = " \t\r\f\v"  # what a blank line may hold before its newline
# A blank line holds at most this many of them: a longer line of whitespace alone is text,
# so that a stream read for a run on documents holds no more while it waits to know.
BLANK_LINE_MAX = CHUNK_BYTES - 1  # with its newline, a line this long fits in a chunk
_BLANK_LINES = re.compile(  # one or more, after a line's end
    rb"(?<=\n)(?:[%s]{0,%d}\n)+" % (re.escape(BLANK_LINE_SPACES.encode()), BLANK_LINE_MAX)
)


@dataclass
class Symbols:
    """A file's symbols as ids, where its documents start (None: one sequence), its digest."""

    ids: np.ndarray
    vocabulary: Vocabulary
    doc_starts: np.ndarray | None
    digest: str


def read_symbols(
    path: Path | str,
    data_format: str = "text",
    *,
    vocabulary: Vocabulary | None = None,
    documents: bool = False,
    field: str = "data",
) -> Symbols:
    """Read a file's symbols; its vocabulary is found unless given (a run's own).

    Raises UsageError (one line naming the file) for a file that is missing, not a
    regular file, empty, not UTF-8, binary, a vocabulary over MAX_CLASSES or of one
    symbol, or too large for memory; SymbolError (line and column) for a symbol
    outside a given vocabulary or a bad integer.
    """
    path = Path(path)
    size = _checked_size(path, field)
    if vocabulary is None:
        vocabulary, count, digest = _survey(path, data_format, field)
    else:
        count, digest = None, None
    itemsize = np.dtype(symbol_dtype(vocabulary.size)).itemsize
    if (count or size) * itemsize > available_memory():
        raise UsageError(f"`{field}` {path} is too large for the memory available")
    # At most a symbol a byte: pages past the symbols read are never touched (nor resident).
    ids = np.empty(count or size, symbol_dtype(vocabulary.size))
    starts, total = [], 0
    hasher = hashlib.sha256()  # and compared with the survey's: an edit between is caught
    position = Position(str(path))
    at_line_start = True
    for chunk in _chunks(path, data_format, position, hasher):
        for piece, separator in _documents(chunk, at_line_start) if documents else [(chunk, b"")]:
            encoded = encode_bytes(vocabulary, piece, position)
            if total + len(encoded) > len(ids):
                raise _changed(field, path)
            ids[total : total + len(encoded)] = encoded
            total += len(encoded)
            position.advance(piece + separator)
            if separator:
                starts.append(total)
        at_line_start = chunk.endswith(b"\n")
    if digest is not None and hasher.hexdigest() != digest:
        raise _changed(field, path)
    ids = ids[:total]
    if total == 0:
        raise UsageError(f"`{field}` {path} holds no symbols")
    doc_starts = None
    if documents:
        doc_starts = np.unique(np.array([0, *starts], dtype=np.int64))
        doc_starts = doc_starts[doc_starts < total]  # a blank line at the end starts nothing
    return Symbols(ids, vocabulary, doc_starts, hasher.hexdigest())


def _changed(field: str, path: Path) -> UsageError:
    return UsageError(f"`{field}` {path} changed while it was read (is it still being written?)")


def _documents(chunk: bytes, at_line_start: bool) -> list[tuple[bytes, bytes]]:
    """(text, blank lines after it) pieces of a chunk split at blank lines; a document
    keeps the line end of its last line. A chunk that starts a line may start with one."""
    pieces, start = [], 0
    shift = 1 if at_line_start else 0
    for match in _BLANK_LINES.finditer(b"\n" * shift + chunk):
        begin, end = match.start() - shift, match.end() - shift
        pieces.append((chunk[start:begin], chunk[begin:end]))
        start = end
    pieces.append((chunk[start:], b""))
    return pieces


def file_digest(path: Path | str, field: str = "data") -> str:
    """The SHA-256 of a file's bytes (what a run records of its data); UsageError as
    `read_symbols` raises it for a file that cannot be read."""
    _checked_size(Path(path), field)
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _checked_size(path: Path, field: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise UsageError(f"`{field}` {path} cannot be read: {error.strerror}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"`{field}` {path} is not a regular file")
    if info.st_size == 0:
        raise UsageError(f"`{field}` {path} is empty")
    return info.st_size


def _survey(path: Path, data_format: str, field: str) -> tuple[Vocabulary, int, str]:
    """(vocabulary, number of symbols, digest) of a file, from one pass over it."""
    hasher = hashlib.sha256()
    position = Position(str(path))
    count = 0
    if data_format == "ints":
        largest, smallest = -1, MAX_CLASSES
        for chunk in _chunks(path, data_format, position, hasher):
            values = parse_ints(chunk, position)
            if len(values):
                largest = max(largest, int(values.max()))
                smallest = min(smallest, int(values.min()))
            count += len(values)
            position.advance(chunk)
        if count == 0:
            raise UsageError(f"`{field}` {path} holds no symbols")
        if smallest == largest:  # as a text of one character
            raise UsageError(f"`{field}` {path} has 1 distinct symbol: nothing to predict")
        if largest + 1 > MAX_CLASSES:
            raise UsageError(
                f"`{field}` {path} holds the symbol {largest}: at most {MAX_CLASSES} symbols "
                f"(0..{MAX_CLASSES - 1}) are supported"
            )
        vocabulary = Vocabulary("ints", tuple(range(max(largest + 1, 2))))
        return vocabulary, count, hasher.hexdigest()
    seen = np.zeros(0, np.uint32)
    for chunk in _chunks(path, data_format, position, hasher):
        points = np.frombuffer(chunk.decode("utf-8").encode("utf-32-le"), np.uint32)
        position.advance(chunk)
        count += len(points)
        seen = np.union1d(seen, np.unique(points))
        if len(seen) > MAX_CLASSES:
            raise UsageError(
                f"`{field}` {path} has more than {MAX_CLASSES} distinct characters, "
                "the most a vocabulary may hold"
            )
    if len(seen) < 2:
        raise UsageError(f"`{field}` {path} has {len(seen)} distinct character: nothing to predict")
    return Vocabulary("text", tuple(chr(point) for point in seen)), count, hasher.hexdigest()


def _chunks(path: Path, data_format: str, position: Position, hasher) -> Iterator[bytes]:
    """The file in pieces of whole lines (or, in a line longer than a piece, whole characters
    and tokens), checked as UTF-8 text without NUL characters; its bytes also go to `hasher`
    too."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry = b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_BYTES)
            hasher.update(block)
            data = carry + block
            if not block:
                if data:
                    yield from _checked_pieces(data, decoder, position, final=True)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end: cut at whitespace (ints) or a character boundary
                cut = _cut_without_newline(data, data_format)
            carry = data[cut:]
            if cut:
                yield from _checked_pieces(data[:cut], decoder, position, final=False)


def _cut_without_newline(data: bytes, data_format: str) -> int:
    if data_format == "ints":  # any whitespace ends a token (a file may use \r alone)
        cut = max(data.rfind(space) for space in ASCII_SPACES) + 1
        return cut or len(data)  # a token as long as a chunk: refused, whole or in part
    cut = len(data)
    if data[-1] >= 0x80:  # cut before the last character that is not ASCII
        cut -= 1
        while cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
    return cut


def _checked_pieces(chunk: bytes, decoder, position: Position, final: bool) -> Iterator[bytes]:
    """The chunk; or, if it holds a byte that is not text, what comes before it, then the
    UsageError that names the byte (a symbol before it, not the run's, is named first)."""
    good, error = _checked(chunk, decoder, position, final)
    if error is None:
        yield chunk
        return
    if good:
        yield good
    raise error


def _checked(
    chunk: bytes, decoder, position: Position, final: bool
) -> tuple[bytes, Exception | None]:
    """(the chunk, None), or (the text before its first byte that is not UTF-8 text or
    is NUL, the UsageError that names that byte)."""
    try:
        decoder.decode(chunk, final)
        bad = len(chunk)
    except UnicodeDecodeError as error:
        bad = error.start
    nul = chunk.find(b"\0", 0, bad)
    if nul >= 0:
        where, what = nul, "a NUL character"
    elif bad < len(chunk):
        where, what = bad, f"not UTF-8 text (byte 0x{chunk[bad]:02x})"
    else:
        return chunk, None
    error = UsageError(f"{position.of(chunk, where)}: {what}; is it a binary file?")
    return chunk[:where], error


@dataclass
class Corpus:
    """A run's own data, read and laid out: its vocabulary, training and validation windows."""

    vocabulary: Vocabulary
    train: Windows
    validation: Windows | None
    digests: dict  # field ("data", "validation_data") -> SHA-256 of the file's bytes
    # With documents and `validation_fraction`, when no document starts in the held-out
    # end: it is the end of the last document, validated from a zeroed state.
    tail_of_a_document: bool = False

    def record(self) -> dict:
        """What the run folder keeps of it (vocabulary.json): the vocabulary and digests."""
        return {**self.vocabulary.to_json(), "sha256": dict(self.digests)}


def load_corpus(
    config: TrainConfig, vocabulary: Vocabulary | None = None
) -> tuple[TrainConfig, Corpus]:
    """Read `config.data` (and its validation) and lay it out for `config`'s model.

    Returns the config completed from the data (`num_classes` the vocabulary's size,
    `total_series_length` the training symbols, `data_windows` the windows per epoch)
    and the corpus. With `vocabulary` (a run's own, to resume it), the files are read
    through it. UsageError or SymbolError (one line, naming the file) when they cannot be.
    """
    symbols = read_symbols(
        config.data, config.data_format, vocabulary=vocabulary, documents=config.documents
    )
    vocabulary, digests = symbols.vocabulary, {"data": symbols.digest}
    ids, starts = symbols.ids, symbols.doc_starts
    validation = train = None
    tail_of_a_document = False
    if config.validation_data is not None:
        validation, digests["validation_data"] = read_laid_out(
            config.validation_data, config, vocabulary, "validation_data"
        )
    elif config.validation_fraction > 0:
        cut = len(ids) - int(len(ids) * config.validation_fraction)
        held_starts, kept_starts = None, starts
        if starts is not None:  # cut at the next document's start, if there is one
            later = starts[starts >= cut]
            cut = int(later[0]) if len(later) else cut
            tail_of_a_document = not len(later)
            held_starts = np.append(0, starts[starts > cut] - cut).astype(np.int64)
            kept_starts = starts[starts < cut]
        fraction = readable(config.validation_fraction)
        what = f"what `validation_fraction` {fraction} leaves of `data`"
        try:
            train = laid_out(ids[:cut], kept_starts, config, "validation_fraction", what)
        except ConfigError:
            laid_out(ids, starts, config, "data", config.data)  # too short even whole
            raise
        validation = laid_out(ids[cut:], held_starts, config, "validation_fraction")
        ids = ids[:cut]
    if train is None:
        train = laid_out(ids, starts, config, "data", config.data)
    config = dataclasses.replace(
        config,
        num_classes=vocabulary.size,
        total_series_length=len(ids),
        data_windows=train.num_windows,
    ).validate()
    return config, Corpus(vocabulary, train, validation, digests, tail_of_a_document)


def read_laid_out(
    path: Path | str, config: TrainConfig, vocabulary: Vocabulary, field: str
) -> tuple[Windows, str]:
    """(windows, SHA-256) of a file read through a run's `vocabulary` and laid out for
    `config`'s model; the errors of `read_symbols` and `laid_out`, naming `field`."""
    symbols = read_symbols(
        path, config.data_format, vocabulary=vocabulary, documents=config.documents, field=field
    )
    return laid_out(symbols.ids, symbols.doc_starts, config, field, str(path)), symbols.digest


def laid_out(
    ids: np.ndarray, starts, config: TrainConfig, field: str, what: str | None = None
) -> Windows:
    """`Windows` of symbols (documents starting at `starts`, or None) for `config`'s model,
    as training lays them out; ConfigError naming `field` (and `what` the symbols are)
    when they are too few for one window per row."""
    batch, window = config.batch_size, config.truncated_backprop_length
    if starts is not None:
        windows = document_windows(ids, starts, batch, window, config.task, config.echo_step)
    else:
        x, y, first = task_pairs(ids, config.task, config.echo_step)
        windows = series_windows(x, y, batch, window, unscored=first)
    if what is None:
        what = {"validation_fraction": "the held-out end of `data`"}.get(field, f"`{field}`")
    if windows.num_windows == 0 and starts is not None:  # each document too short for a target
        least = config.echo_step + 1 if config.task == "echo" else 2
        raise ConfigError(
            field,
            f"{what} has no document of {least} symbols or more, the fewest that hold a "
            + ("target (`echo_step` + 1)" if config.task == "echo" else "target"),
        )
    if windows.num_windows == 0:
        need = batch * window + (config.task == "next")
        after = " (the last one with its next symbol)" if config.task == "next" else ""
        raise ConfigError(
            field,
            f"{what} has {_symbols(len(ids))}, too few for one window per row: the model's "
            f"{batch} rows x {window} steps need {need}{after}",
        )
    if starts is None and config.task == "echo" and len(ids) <= config.echo_step:
        raise ConfigError(
            field,
            f"{what} has {_symbols(len(ids))}, too few for the echo task: `echo_step` "
            f"{config.echo_step} needs {config.echo_step + 1} or more",
        )
    return windows


def _symbols(count: int) -> str:
    return f"{count} symbol{'s' * (count != 1)}"
