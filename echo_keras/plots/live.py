"""The live figure: `train --plot-every N` redraws RUN_DIR/live.png while training runs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from echo_keras.backend import keras
from echo_keras.errors import EchoKerasError, tell
from echo_keras.run import files

READY = "ready"
CLOSE_SECONDS = 30  # the most `close` waits for the drawing process (a frame takes a second)


class LivePlot(keras.callbacks.Callback):
    """Redraw the tutorial's figure into `path` every `every` batches, as the tutorial did;
    for a run on its own data, its loss in bits per symbol instead of the echo panels.

    Drawing a figure takes far longer than training 100 batches on the fast path,
    so a separate process draws (no TensorFlow in it, and no contention for this
    process's interpreter) and training never waits for it: a redraw that falls
    due while the last is still being drawn replaces any other waiting one. The
    file is always swapped in whole.

    Args:
        path: the PNG to write (RUN_DIR/live.png).
        every: batches between redraws.
        recorder: the run's BatchLossRecorder (the loss curve).
        tap: the run's BatchTap (the batch just trained and its predictions).
        data_run: the run trains on its own data; default: as config.json beside `path`
            says (training writes it before the live plot starts).
        stopped: true once a signal has asked training to stop: `close` then waits for
            the drawing process no more.

    Example:

    ```python
    live = LivePlot(run_dir / "live.png", 100, recorder, tap)
    fit_epochs(model, config, [..., recorder, live], tap=tap)
    live.close()
    ```
    """

    def __init__(
        self,
        path: Path,
        every: int,
        recorder,
        tap,
        data_run: bool | None = None,
        stopped: Callable[[], bool] = lambda: False,
    ):
        super().__init__()
        self.every, self.recorder, self.tap = every, recorder, tap
        self.data_run = _is_data_run(Path(path).parent) if data_run is None else data_run
        self.frames_sent = 0
        self._pending = None
        self._rows_sent = 0
        self._ready = False
        self._gone = False
        self._warned = set()
        self._framed_step = None  # the step of the latest frame asked for
        self.stopped = stopped
        self._conn, self._process = _start_drawing(Path(path))

    def on_train_batch_end(self, batch, logs=None):
        step = self.recorder.rows[-1][2] if self.recorder.rows else 0
        if (step + 1) % self.every == 0:
            self._ask_frame(batch, step)
        if self._pending is not None:
            self._send_if_ready()

    def _ask_frame(self, batch: int, step: int) -> None:
        shown = None  # a run on its own data: the loss alone
        if not self.data_run:
            inputs, targets, probabilities = self.tap.batch(batch)
            shown = {"inputs": inputs, "targets": targets, "probabilities": probabilities}
        self._pending = {
            "rows": len(self.recorder.rows),
            "batch": shown,
            "title": f"Live: epoch {self.recorder.epoch + 1}, batch {batch + 1}, step {step + 1}",
        }
        self._framed_step = step

    def _send_if_ready(self, wait: bool = False) -> None:
        if self._gone:
            return
        try:
            if not self._ready:
                if not (wait or self._conn.poll()):
                    return
                reply = self._conn.recv()
                if reply != READY:
                    self._warn(reply)
            frame, self._pending = self._pending, None
            # Only the rows the drawing process has not seen yet travel.
            rows = frame.pop("rows")
            frame["new_rows"] = self.recorder.rows[self._rows_sent : rows]
            self._rows_sent = rows
            self._conn.send(frame)
        except (EOFError, OSError):  # the drawing process died: training goes on without it
            self._gone = True
            self._warn("the live plot's drawing process stopped; training goes on")
            return
        self._ready = False
        self.frames_sent += 1

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once each: a full disk fails every frame
            self._warned.add(message)
            tell(f"Warning: live plot: {message}")

    def close(self) -> None:
        """Draw a last frame, of the last batch trained, then stop the drawing process.
        A drawing process that does not answer within CLOSE_SECONDS, or by the time a
        signal asks training to stop (`stopped`), is killed: live.png keeps its last frame."""
        deadline = time.monotonic() + CLOSE_SECONDS
        try:
            rows = self.recorder.rows
            if rows and rows[-1][2] != self._framed_step and not self._gone:
                with contextlib.suppress(Exception):  # no batch to show: keep the last frame
                    self._ask_frame(rows[-1][1], rows[-1][2])
            if self._pending is not None and not self._gone:
                if self._ready or self._answered(deadline):
                    self._send_if_ready(wait=True)
                else:
                    self._gone = True
                    if not self.stopped():  # else training was stopped: nothing to say
                        self._warn("the drawer did not answer; live.png keeps its last frame")
            if not self._gone:
                self._conn.send(None)
        except (EOFError, OSError):
            pass  # the drawing process is gone; training's results do not depend on it
        while self._process.poll() is None:
            if self.stopped() or time.monotonic() > deadline:
                self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=0.1)
        self._conn.close()

    def _answered(self, deadline: float) -> bool:
        """Whether the drawing process says it is ready before `deadline` or a signal."""
        while not self._conn.poll(0.1):
            if self.stopped() or time.monotonic() > deadline:
                return False
        return True


def _is_data_run(run_dir: Path) -> bool:
    """Whether the run whose config.json is in `run_dir` trains on its own data."""
    try:
        return files.load_config(run_dir).data is not None
    except (EchoKerasError, OSError):
        return False


def _start_drawing(path: Path):
    """(connection, process) of a new drawing process (`python -m echo_keras.plots.drawing`).

    A fresh interpreter, not multiprocessing's spawn: spawn imports the caller's main module
    again in the child, which re-runs a script without an `if __name__ == "__main__"` guard
    and fails for code read from stdin or typed in a notebook. Frames travel over a socket
    pair as multiprocessing's Connection frames them.
    """
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "echo_keras.plots.drawing", str(theirs.fileno()), str(path)],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return Connection(ours.detach()), process
