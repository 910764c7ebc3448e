"""Standard streams that may be closed (`>&-`) or broken (a pipe whose reader went away).

The command line calls `open_standard_streams` first and `flush_standard_streams`
last, so neither case ever ends in a traceback, and no run file can land on
descriptor 1 or 2.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, redirect_stdout

CLOSED: set[str] = set()  # the standard streams found closed at start ("stdout", ...)


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
