"""`make bench`, part 2: time `echo-keras predict` as whole processes and print what it measured.

- a file of 1,000,000 symbols, as a whole process (and 1,000 symbols: the start-up);
- the same 1,000,000 symbols after start-up: piped into a process that has already
  answered lines of every compiled length, timed from the first byte written to the
  last answer read;
- one symbol at a time: one process reads lines from a pipe, and each answer is read
  back before the next line is written; the time per line after a warm-up;
- a file of 10,000,000 symbols: whole process time and peak RSS against short inputs;
- the known limit: from a zeroed state, how often the echoes of the first few symbols
  are right (the very first one for a first 0 and a first 1), on default runs of a few
  seeds, with the tutorial's scalar input and with `--input onehot`; every binary
  sequence up to those echoes is tried, so the shares are exact.

Set BENCH_REPEATS to change the number of repeats (default 3).
"""

from __future__ import annotations

import io
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_env import whole_number

ROOT = Path(__file__).resolve().parent.parent
ECHO_KERAS = str(Path(sys.executable).parent / "echo-keras")
WORK = ROOT / "bench" / "results" / "predict"
REPEATS = whole_number("BENCH_REPEATS", 3)
SEEDS = (0, 1, 2, 3, 4)
LINES = 2000  # one-symbol lines timed, after WARM_UP
WARM_UP = 200


def whole_process(args: list) -> tuple[float, float]:
    """Run `echo-keras predict ...` with output discarded: (wall seconds, peak RSS MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [ECHO_KERAS, "predict", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: predict {args} failed:\n{process.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def symbol_file(path: Path, length: int, seed: int) -> Path:
    """`length` random binary digits in lines of 1000."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 2, length, dtype=np.uint8) + ord("0")
    with path.open("wb") as handle:
        for start in range(0, length, 1_000_000):
            block = digits[start : start + 1_000_000].reshape(-1, 1000)
            lines = np.concatenate([block, np.full((len(block), 1), ord("\n"), np.uint8)], axis=1)
            handle.write(lines.tobytes())
    return path


def one_symbol_at_a_time(run_dir: Path) -> list[float]:
    """Seconds per line of one symbol, written and answered one after another."""
    process = subprocess.Popen(
        [ECHO_KERAS, "predict", "--run-dir", str(run_dir), "--input", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    answers = io.BufferedReader(process.stdout)
    rng = np.random.default_rng(1)
    times = []
    for index, symbol in enumerate(rng.integers(0, 2, WARM_UP + LINES)):
        started = time.perf_counter()
        process.stdin.write(b"%d\n" % symbol)
        answer = answers.readline()
        if index >= WARM_UP:
            times.append(time.perf_counter() - started)
        if len(answer) != 2:
            raise SystemExit(f"bench: unexpected answer {answer!r}")
    process.stdin.close()
    process.wait()
    return times


def after_start_up(run_dir: Path, path: Path) -> float:
    """Seconds to pipe `path` through a started, warmed-up process and read every answer."""
    process = subprocess.Popen(
        [ECHO_KERAS, "predict", "--run-dir", str(run_dir), "--input", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    answers = io.BufferedReader(process.stdout)  # readline of a raw pipe reads byte by byte
    for line in (b"0110\n", b"01" * 1000 + b"\n", b"01" * 10_000 + b"\n"):
        process.stdin.write(line)  # one line of each compiled length, answered alone
        answers.readline()
    lines = path.read_bytes().count(b"\n")

    def feed() -> None:
        with path.open("rb") as source:
            while block := source.read(1 << 16):
                process.stdin.write(block)
        process.stdin.close()

    writer = threading.Thread(target=feed)
    started = time.perf_counter()
    writer.start()
    for _ in range(lines):
        answers.readline()
    elapsed = time.perf_counter() - started
    writer.join()
    process.wait()
    return elapsed


def first_echoes(run_dir: Path, echoed: int = 5) -> dict:
    """From a zeroed state, how often the echo of each of the first `echoed` symbols is right.

    Every binary sequence long enough to reach the last of those echoes is tried once,
    so the shares are exact. Returns {"position": [share per symbol], 0: share for a
    first symbol 0, 1: for a first 1}.
    """
    from echo_keras.stream.model import load_stream_model

    model = load_stream_model(run_dir)
    step = model.config.echo_step
    symbols = np.array(list(itertools.product((0, 1), repeat=step + echoed)), np.int32)
    probabilities, _ = model.step(symbols, model.zero_state(batch=len(symbols)))
    predictions = np.asarray(probabilities).argmax(axis=-1)
    right = predictions[:, step : step + echoed] == symbols[:, :echoed]
    return {
        "position": right.mean(axis=0).tolist(),
        **{first: float(right[symbols[:, 0] == first, 0].mean()) for first in (0, 1)},
    }


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    runs, onehot = {}, {}
    for seed in SEEDS:
        runs[seed], onehot[seed] = WORK / f"run-{seed}", WORK / f"onehot-{seed}"
        for path, flags in ((runs[seed], []), (onehot[seed], ["--input", "onehot"])):
            subprocess.run(
                [ECHO_KERAS, "train", "--run-dir", path, "--seed", str(seed), "--quiet", *flags],
                check=True,
            )
    run_dir = runs[SEEDS[0]]
    files = {n: symbol_file(WORK / f"symbols-{n}.txt", n, seed=n) for n in (1000, 1_000_000)}
    files[10_000_000] = symbol_file(WORK / "symbols-10000000.txt", 10_000_000, seed=3)
    timings = {n: [] for n in (1000, 1_000_000)}
    piped = []
    for repeat in range(REPEATS):  # interleaved, so drifts in machine load hit all alike
        for n in timings:
            timings[n].append(whole_process(["--run-dir", run_dir, "--input", files[n]]))
        piped.append(after_start_up(run_dir, files[1_000_000]))
        print(
            f"  repeat {repeat + 1}/{REPEATS}: whole process {timings[1000][-1][0]:.2f} s "
            f"(1,000 symbols), {timings[1_000_000][-1][0]:.2f} s (1,000,000); "
            f"after start-up {piped[-1]:.2f} s",
            file=sys.stderr,
        )
    large = whole_process(["--run-dir", run_dir, "--input", files[10_000_000]])
    latency = one_symbol_at_a_time(run_dir)
    echoes = {seed: first_echoes(path) for seed, path in runs.items()}
    onehot_echoes = {seed: first_echoes(path) for seed, path in onehot.items()}
    print(report(timings, piped, large, latency, echoes, onehot_echoes))


def echo_line(echoes: dict, input_name: str) -> str:
    """The known limit's figures for runs of one input encoding."""
    seeds = ", ".join(map(str, echoes))
    first = {f: ", ".join(f"{100 * e[f]:.0f}%" for e in echoes.values()) for f in (0, 1)}
    both = {f: np.mean([e[f] for e in echoes.values()]) for f in (0, 1)}
    by_position = np.mean([e["position"] for e in echoes.values()], axis=0)
    return (
        f"- from a zeroed state, {input_name} (default runs of seeds {seeds}; every binary "
        "sequence up to the echoes): the echo of symbol 0 is right for a first 0 in "
        f"{first[0]} ({100 * both[0]:.0f}%), for a first 1 in {first[1]} "
        f"({100 * both[1]:.0f}%); the echoes of symbols 0, 1, 2, ... are right in "
        f"{', '.join(f'{100 * p:.0f}%' for p in by_position)} (mean over seeds)"
    )


def report(timings, piped, large, latency, echoes, onehot_echoes) -> str:
    def wall(n):
        return statistics.median(t for t, _ in timings[n])

    def rss(n):
        return statistics.median(r for _, r in timings[n])

    ms = sorted(1000 * t for t in latency)
    lines = [
        f"echo-keras predict bench: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {REPEATS} runs",
        "",
        f"- predict, 1,000,000-symbol file: {1_000_000 / statistics.median(piped):,.0f} "
        f"symbols/s after start-up (target >= 300,000); whole process "
        f"{wall(1_000_000):.2f} s, against {wall(1000):.2f} s for 1,000 symbols",
        f"- predict, one symbol at a time through a pipe: {statistics.median(ms):.2f} ms per "
        f"symbol (median of {len(ms)} after {WARM_UP}; 99th percentile "
        f"{ms[int(0.99 * len(ms))]:.2f} ms), each answer read back before the next symbol "
        "is written (target <= 2 ms)",
        f"- predict, 10,000,000-symbol file: whole process {large[0]:.1f} s, peak RSS "
        f"{large[1]:.0f} MiB (1,000 symbols: {rss(1000):.0f} MiB, 1,000,000: "
        f"{rss(1_000_000):.0f} MiB)",
        echo_line(echoes, "scalar input (the tutorial's)"),
        echo_line(onehot_echoes, "`--input onehot`"),
    ]
    text = "\n".join(lines)
    (ROOT / "bench" / "results" / "predict.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
