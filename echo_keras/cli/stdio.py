"""Standard streams that may be closed (`>&-`) or broken (a pipe whose reader went away).

The command line calls `open_standard_streams` first and `flush_standard_streams`
last, so neither case ever ends in a traceback, and no run file can land on
descriptor 1 or 2.
"""

from __future__ import annotations

import io
import os
import select
import sys
from contextlib import contextmanager, redirect_stdout

CLOSED: set[str] = set()  # the standard streams found closed at start ("stdout", ...)
EXIT_BROKEN_PIPE = 128 + 13  # what a process killed by SIGPIPE reports


class OutputError(OSError):
    """Writing the output failed (a full disk, say), as opposed to reading the input."""


def open_standard_streams() -> None:
    """Give a closed stdin, stdout or stderr (`>&-`) /dev/null, and note it in CLOSED.

    Otherwise the next file opened would take its descriptor, and whatever is
    printed (by us, or by TensorFlow's C++ logging to fd 2) would land in a run file.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            CLOSED.add(name)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


def flush_standard_streams() -> bool:
    """Flush stdout and stderr; False if either is broken (a closed pipe, a full disk)."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            ok = False
            # Python would complain again at exit: point the descriptor at /dev/null.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)
    return ok


@contextmanager
def stdout_to_stderr(ours: bool):
    """For the block, send what others print to stdout (Ray's `(raylet) ...` line of a dead
    worker, say) to stderr, when stdout is `ours`: `--json`'s one object, or a pipe or a
    file that reads our summary. Python's sys.stdout and the file descriptor both."""
    if not ours:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout: nothing to keep apart
        yield
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr
        os.close(saved)
        yield
        return
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def stdout_writer():
    """write(data): to stdout's file descriptor, whole and at once; an OSError but a broken
    pipe is OutputError, and so is any write to a stdout that was closed (`>&-`): what
    predict prints is its work, and a state saved after it went nowhere would move the
    stream on for nothing. The bytes go to the descriptor until all are written: a write
    that takes only part of them (a disk filling up; Python's own stdout drops the rest
    when unbuffered, `python -u` or PYTHONUNBUFFERED) is followed by one for the rest."""
    closed = "stdout" in CLOSED

    def write(data: bytes) -> None:
        if closed:
            raise OutputError("stdout is closed")
        try:
            sys.stdout.flush()  # whatever was printed before goes first
            _write_whole(sys.stdout.buffer, data)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(error.strerror or str(error)) from None

    return write


def _write_whole(out, data: bytes) -> None:
    """Write every byte of `data` to `out`'s file descriptor (or, for a stream without
    one, to `out` itself), a write after each partial one, waiting while it is full."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a file: a stream in memory
        out.write(data)
        out.flush()
        return
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a descriptor left non-blocking by whoever opened it
            select.select([], [fd], [])


def quiet_broken_pipe() -> None:
    """The reader went away (`| head`): point stdout at /dev/null so no flush complains."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
