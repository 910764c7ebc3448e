"""`SignalCatcher`: record SIGINT, SIGTERM (and SIGHUP) instead of dying, so work stops cleanly.

Training (`callbacks.StopOnSignal`) and the sweep (`sweep/runner.py`) both catch signals
through it, and both report the signal as `errors.Interrupted` (exit status 128 + signal).
Nothing here imports anything heavy.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

TRAINING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalCatcher:
    """Handle `signals` by recording them in `received` (main thread only; elsewhere a no-op).

    `install` takes the handlers (again, if a library took one meanwhile); `restore`
    puts back the ones found first. `on_signal(signum)` is called from the handler.

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

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> SignalCatcher:
        self.install()
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
