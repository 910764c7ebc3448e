"""Every error echo-keras raises, in one tree; each class carries its exit status.

The library raises these with messages in its own terms (config field names,
Python arguments); the command line prints one line per error and exits with
`exit_status`, wording fields as flags (`cli/app.py`). The table::

    EchoKerasError            1  the root: catch this to catch them all
      UsageError              2  a request that cannot work as asked
        ConfigError           2  a setting out of range; `.field` names it
        SymbolError           2  input symbols that are not the run's
        RunRefused            2  the run folder cannot be trained as asked
          RunBusy             2  another process trains it
          RunExists           2  it holds a run, and neither overwrite nor resume was asked
      RunFolderError          1  a run folder or one of its files is missing or damaged
      TrainingError           1  training could not finish
        TrainingDiverged      1  the loss became NaN or infinite
      StateFileError        1|2  a state file that is damaged (1) or another run's (2)
      ExportError             1  the SavedModel could not be written or did not reproduce predict
      WriteError              1  a run or a figure could not be written (a full disk); an OSError
      SweepError              1  the sweep could not run
      Interrupted     128 + sig  SIGINT, SIGTERM or SIGHUP stopped the work; rows kept

`EchoKerasWarning` (a UserWarning) is what the library warns a caller of where the command
line prints a note (a run evaluated at its checkpoint, a data file changed since).
Nothing here imports anything heavy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings


class EchoKerasError(Exception):
    """The root of every error echo-keras raises; `exit_status` is the CLI's exit status."""

    exit_status = 1


class UsageError(EchoKerasError):
    """A request that cannot work as asked (a bad value, a refused folder): exit status 2."""

    exit_status = 2


class ConfigError(UsageError, ValueError):
    """A setting that cannot work. `field` names the config field (or argument), `reason` why.

    Args:
        field: the `TrainConfig` field or function argument at fault, e.g. `state_size`.
        reason: what is wrong with it, e.g. `must be positive, got 0`.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self):  # pickled by its arguments: it crosses to and from processes
        return type(self), (self.field, self.reason), self.__dict__


class SymbolError(UsageError, ValueError):
    """A symbol that is not one of the run's, or an input without symbols; says where."""


class RunRefused(UsageError):
    """The folder cannot be trained into as asked."""


class RunBusy(RunRefused):
    """Another process is training this run folder (or writing this sweep, or this export)."""


class RunExists(RunRefused):
    """The folder holds a run (or other files), and neither overwrite nor resume was asked for."""


class RunFolderError(EchoKerasError):
    """A run folder, or one of its files, is missing or damaged. The message names the file."""


class TrainingError(EchoKerasError, RuntimeError):
    """Training could not finish; the message says why and what to do."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""


class StateFileError(EchoKerasError):
    """A state file that cannot be used. `damaged` tells a broken file (exit 1) from one
    written for another run (exit 2)."""

    def __init__(self, message: str, damaged: bool):
        super().__init__(message)
        self.damaged = damaged
        self.exit_status = 1 if damaged else 2

    def __reduce__(self):
        return type(self), (self.args[0], self.damaged), self.__dict__


class ExportError(EchoKerasError):
    """The SavedModel could not be written (a full disk) or did not reproduce `predict`;
    nothing was left behind."""


class WriteError(EchoKerasError, OSError):
    """A run or a figure could not be written (a full disk, no permission); what the user
    had stays. Also an OSError, as such failures were before."""


def write_error(what: str, error: OSError) -> WriteError:
    """WriteError for a failed write, in one line: `cannot write WHAT: reason`."""
    return WriteError(f"cannot write {what}: {write_reason(error)}")


def write_reason(error: BaseException) -> str:
    """Why a write failed, in the system's words (`No space left on device`), also when
    TensorFlow says it inside a longer message of its own; else the error's first line."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if "No space left on device" in str(error):
        return "No space left on device"
    return first_line(error)


class SweepError(EchoKerasError, RuntimeError):
    """The sweep could not run (a damaged results.csv, an unreachable cluster); says why."""


class Interrupted(EchoKerasError):
    """SIGINT, SIGTERM or SIGHUP stopped training or a sweep. `signal` is its number;
    the exit status is 128 + signal, as a shell reports a process killed by it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signal = signum
        self.exit_status = 128 + signum

    def __reduce__(self):
        return type(self), (self.args[0], self.signal), self.__dict__


class EchoKerasWarning(UserWarning):
    """A note the command line prints on stderr, given to a library caller as a warning."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(note: str) -> None:
    """Give the library's caller `note` (without the "Warning: " or "Note: " the command line
    prints) as an EchoKerasWarning, said at the caller's line: the first outside echo-keras.
    (The command line, inside, ignores them: it prints its notes in its own words.)"""
    frame, level = sys._getframe(1), 2  # warn's caller: `warnings.warn`'s stacklevel 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    text = note.removeprefix("Warning: ").removeprefix("Note: ")
    warnings.warn(text, EchoKerasWarning, stacklevel=level)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (long messages of other libraries shortened)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def listed(items: list[str], separator: str = ", ", most: int = 3) -> str:
    """The first `most` items joined by `separator`, and "..." after them if there are more."""
    more = [] if len(items) <= most else ["..."]
    return separator.join([*items[:most], *more])


def one_line(text: str) -> str:
    """`text` with each line break or other control character (a file's name may hold one)
    written as its escape (`\\n`), tabs kept: it prints as one line."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def tell(message: str) -> None:
    """Print one line on stderr (a notice, a warning: `one_line`); lost, never fatal, if
    stderr is broken."""
    with contextlib.suppress(OSError, ValueError):
        print(one_line(message), file=sys.stderr)
