"""`make bench`, part 3: what the export's input checks cost a server, per call.

The tutorial's default run is trained once, then exported twice with `serving_module`:
with the checks every export has (symbols in 0..K-1, finite states, one batch size)
and without them. Both are saved, reloaded with `tf.saved_model.load` and called the
way a server calls them: one stream (batch 1), the states fed back, chunks of 1 symbol
and of 300 symbols, CALLS calls each after a warm-up. The two variants alternate, chunk
length by chunk length and repeat by repeat, so drifts in machine load hit both alike;
the table quotes the median time per call.

Set BENCH_REPEATS to change the number of repeats (default 3).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_env import whole_number

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "results" / "export"
REPEATS = whole_number("BENCH_REPEATS", 3)
CALLS = 1000
WARM_UP = 50
CHUNKS = (1, 300)


def export_both(run_dir: Path) -> dict:
    """{checked: serving signature} for the run's export with and without the checks."""
    from echo_keras.backend import tf
    from echo_keras.stream.export import SIGNATURE, serving_module
    from echo_keras.stream.model import load_stream_model

    model = load_stream_model(run_dir)
    signatures = {}
    for checked in (True, False):
        module = serving_module(model, checks=checked)
        path = WORK / ("checked" if checked else "unchecked")
        tf.saved_model.save(
            module, str(path), signatures={SIGNATURE: module.serve.get_concrete_function()}
        )
        signatures[checked] = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return signatures


def per_call(serve, chunk: int, calls: int, seed: int) -> list[float]:
    """Seconds of each of `calls` calls of `chunk` symbols, the states fed back."""
    from echo_keras.backend import tf

    names = [n for n in serve.structured_input_signature[1] if n != "symbols"]
    units = serve.structured_input_signature[1][names[0]].shape[1]
    states = {n: tf.zeros((1, units)) for n in names}
    rng = np.random.default_rng(seed)
    pieces = [tf.constant(rng.integers(0, 2, (1, chunk), dtype=np.int32)) for _ in range(64)]
    times = []
    for index in range(WARM_UP + calls):
        started = time.perf_counter()
        result = serve(symbols=pieces[index % len(pieces)], **states)
        result.pop("probabilities").numpy()
        states = result
        if index >= WARM_UP:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    from echo_keras.config import TrainConfig
    from echo_keras.training import train

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    run_dir = WORK / "run"
    train(TrainConfig(), run_dir)
    signatures = export_both(run_dir)
    times = {(checked, chunk): [] for checked in (True, False) for chunk in CHUNKS}
    for repeat in range(REPEATS):
        for chunk in CHUNKS:
            for checked in (True, False):
                times[checked, chunk] += per_call(signatures[checked], chunk, CALLS, repeat)
        print(f"  repeat {repeat + 1}/{REPEATS} done", file=sys.stderr)
    print(report(times))


def report(times: dict) -> str:
    def us(checked, chunk):
        return 1e6 * statistics.median(times[checked, chunk])

    lines = [
        f"echo-keras export bench: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {REPEATS} x {CALLS} calls per case, batch 1, "
        "the states fed back",
        "",
    ]
    for chunk in CHUNKS:
        checked, unchecked = us(True, chunk), us(False, chunk)
        lines.append(
            f"- chunks of {chunk} symbol{'s' if chunk > 1 else ''}: {checked:,.0f} us per call "
            f"with the input checks, {unchecked:,.0f} us without "
            f"({checked - unchecked:+,.0f} us, {100 * (checked / unchecked - 1):+.1f}%)"
        )
    text = "\n".join(lines)
    (ROOT / "bench" / "results" / "export.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
