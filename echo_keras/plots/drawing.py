"""The live plot's drawing process: receives frames over a pipe, draws each into a PNG.

It imports only numpy, matplotlib and `plots.figure` (no TensorFlow), so it starts fast and
takes nothing from training's interpreter. `plots/live.py` starts it
(`python -m echo_keras.plots.drawing FD PATH`, FD its end of a socket pair) and sends it
frames.
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from echo_keras.plots.data_figure import draw_data_figure
from echo_keras.plots.figure import draw_figure, loss_curve, save_figure

LIVE_MIN_INTERVAL = 0.5  # seconds between live frames: the figure is for eyes, not a film


def live_worker(conn, path: str) -> None:
    """The drawing process of the live plot: draw each frame received, say when ready.

    It runs at a lower priority and draws at most two frames a second, so that on
    a small machine it takes little from training.
    """
    os.nice(10)
    history = []
    conn.send("ready")
    while True:
        try:
            frame = conn.recv()
        except EOFError:
            return
        if frame is None:
            return
        started = time.monotonic()
        history.extend(frame["new_rows"])
        reply = "ready"
        try:
            curve = loss_curve(history)
            if frame["batch"] is None:  # a run on its own data: its loss alone
                figure = draw_data_figure(curve, title=frame["title"])
            else:
                figure = draw_figure(curve, frame["batch"], frame["title"])
            save_figure(figure, Path(path))
        except (OSError, ValueError) as error:  # a full disk, say: training goes on
            reply = f"cannot write {path}: {error}"
        time.sleep(max(0.0, LIVE_MIN_INTERVAL - (time.monotonic() - started)))
        conn.send(reply)


if __name__ == "__main__":
    live_worker(Connection(int(sys.argv[1])), sys.argv[2])
