"""`SignalCatcher`: record SIGINT, SIGTERM (and SIGHUP) instead of dying, so work stops cleanly.

Training (`callbacks.StopOnSignal`) and the sweep (`sweep/runner.py`) catch signals through
it and stop at their next check; an export (`stream/export.py`) has it raise `Signalled` at
once, so that its clean-ups run. All report the signal as `errors.Interrupted` (exit status
128 + signal). Around them, the command line (`cli/app.py`) has every other moment of a
command raise `Signalled`, and its console script `hold`s the signals until then.
Nothing here imports anything heavy.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

TRAINING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(BaseException):
    """A signal, raised where the main thread runs by `raise_signalled`. Like
    KeyboardInterrupt it passes `except Exception`, and every `finally` runs on its way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_held: set[int] = set()  # the signals `hold` blocked, for `release` to unblock


def hold() -> None:
    """Block SIGINT, SIGTERM and SIGHUP (those not blocked already) until `release`: the
    console script does so while the app loads, so that one sent meanwhile waits for the
    app's handler instead of killing the process or raising inside an import."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, TRAINING_SIGNALS)
    _held.update(set(TRAINING_SIGNALS) - set(blocked))


def release() -> None:
    """Unblock what `hold` blocked (nothing, if it was not called): a signal sent meanwhile
    arrives now."""
    if _held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _held)
        _held.clear()


def raise_signalled(signum: int) -> None:
    """`SignalCatcher(on_signal=raise_signalled)`: stop the work where it stands."""
    raise Signalled(signum)


_previous_unraisablehook = sys.unraisablehook  # what `_hide_lost_signals` hands the rest


def _hide_lost_signals(unraisable) -> None:
    """`sys.unraisablehook` while a catcher raises: a `Signalled` raised inside a finalizer
    (a `__del__` of TensorFlow's, say), where Python cannot raise it, is not printed as
    "Exception ignored ..." with its traceback; its catcher's `received` still holds the
    signal, for `raise_if_received` to raise where it can. Anything else is printed as ever."""
    if not isinstance(unraisable.exc_value, Signalled):
        _previous_unraisablehook(unraisable)


class SignalCatcher:
    """Handle `signals` by recording them in `received` (main thread only; elsewhere a no-op).

    `install` takes the handlers (again, if a library took one meanwhile); `restore`
    puts back the ones found first. A signal found ignored is left ignored, as the
    process's starter asked (`nohup` ignores SIGHUP; a script's `&` job, SIGINT).
    `on_signal(signum)` is called from the handler; if it raises, and the raise is lost in a
    finalizer, `raise_if_received` raises it again where the work can stop.

    Example:

    ```python
    with SignalCatcher() as catcher:
        while work_left() and catcher.received is None:
            do_some()
    ```
    """

    def __init__(
        self,
        signals: tuple[int, ...] = TRAINING_SIGNALS,
        on_signal: Callable[[int], None] | None = None,
    ):
        self.signals = signals
        self.on_signal = on_signal
        self.received: int | None = None
        self._previous: dict = {}
        self._ignored: set[int] = set()  # ignored when first installed: never taken
        self._hook_set = False  # this catcher set `_hide_lost_signals` as the unraisable hook

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                if signum not in self._previous and signal.getsignal(signum) == signal.SIG_IGN:
                    self._ignored.add(signum)  # `nohup`, or `&` in a script: stays ignored
                if signum in self._ignored:
                    continue
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)
            if self.on_signal is not None and sys.unraisablehook is not _hide_lost_signals:
                global _previous_unraisablehook
                _previous_unraisablehook = sys.unraisablehook
                sys.unraisablehook, self._hook_set = _hide_lost_signals, True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self._hook_set and sys.unraisablehook is _hide_lost_signals:
            sys.unraisablehook = _previous_unraisablehook
        self._hook_set = False

    def raise_if_received(self) -> None:
        """Raise `Signalled` if a signal came: for a catcher whose `on_signal` raises, one
        whose raise was lost in a finalizer."""
        if self.received is not None:
            raise Signalled(self.received)

    def __enter__(self) -> SignalCatcher:
        self.install()
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
