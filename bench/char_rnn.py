"""`make bench` (char-rnn part): issue #17's benchmark on a real corpus.

The corpus: the first 1,000,000 characters of the standard library's own `.py`
files, concatenated in sorted order (`char_data.py`); the last tenth is the
validation text. char-rnn's default model (one-hot characters, 2 x LSTM(128),
Dense logits; Adam 2e-3, batch 50 rows laid out contiguously, window 50) is
trained for the same number of epochs (BENCH_CHAR_EPOCHS, default 2) by:

- PyTorch (`char_torch.py`): `nn.LSTM`, the state carried and detached between
  windows; skipped, with the reason, when torch cannot be imported;
- plain Keras `model.fit` (`char_keras.py fit`), stateful layers, `shuffle=False`,
  the state reset at each epoch start;
- echo-keras's `train` (`char_keras.py echo-keras`); skipped, with the reason,
  when its TrainConfig cannot take a text file yet.

Each runs as a process of its own, one after another, with BENCH_CHAR_THREADS CPU
threads (default 1: see `char_data.threads`), in BENCH_CHAR_ROUNDS rounds (default 3;
the table shows each trainer's median round). Symbols per second are those of the
last epoch, from its start to the end of its last batch (compilation and warm-up fall
in the first epoch; echo-keras's validation and checkpoint after the last batch are
left out), or of the only epoch. Validation bits per character are measured here for
all three alike, the state carried from window to window; the window starts (first 5
positions of windows 2..) also with the state zeroed before every window.
`char_memory.py` checks echo-keras's memory.
BENCH_CHAR_CHARS takes a shorter corpus, for a quick try.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import char_data as data
from bench_env import whole_number

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "char_rnn.md"
# The trainers take turns this many times (BENCH_CHAR_ROUNDS); the table shows each one's
# median round: on a shared machine one run's speed can be 30% off.
ROUNDS = whole_number("BENCH_CHAR_ROUNDS", 3)
SAME_LOSS_BITS = 0.05  # validation losses closer than this (bits per character) count as equal


def child_env(work: Path) -> dict:
    """The children's environment: TensorFlow's temporary files go to our own folder."""
    return {**os.environ, "TMPDIR": str(work)}


def measure(command: list, work: Path) -> dict:
    """Run a child; return its JSON output with its wall seconds and peak RSS (MiB)."""
    command = [str(part) for part in command]
    started = time.perf_counter()
    with open(work / "stderr.txt", "w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env(work)
        )
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        stderr.seek(0)
        err = stderr.read()
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{err}")
    result = json.loads(out.splitlines()[-1])
    return {**result, "wall": wall, "rss_mib": usage.ru_maxrss / 1024}


def echo_keras_missing() -> str | None:
    """Why echo-keras cannot train on a text file here, or None if it can."""
    from echo_keras.config import TrainConfig

    names = {field.name for field in dataclasses.fields(TrainConfig)}
    wanted = {"data", "task", "input_encoding", "validation_fraction"}
    if not wanted <= names:
        missing = ", ".join(sorted(wanted - names))
        return f"echo-keras's TrainConfig has no {missing} yet"
    return None


def torch_missing() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (`make bench` installs torch==2.13.0)"
    return None


def run_all(work: Path, corpus: Path, epochs: int) -> tuple[dict, dict]:
    """(each trainer's results, one per round, by trainer; reasons for the trainers
    skipped). The trainers take turns, round after round, so that a slow spell of the
    machine falls on all of them."""
    python = sys.executable
    trainers = {
        "PyTorch, nn.LSTM": (torch_missing, [python, BENCH / "char_torch.py", corpus, epochs]),
        "Keras model.fit": (lambda: None, [python, BENCH / "char_keras.py", "fit", corpus, epochs]),
        "echo-keras train": (
            echo_keras_missing,
            [python, BENCH / "char_keras.py", "echo-keras", corpus, epochs, work / "run"],
        ),
    }
    rounds, skipped = {}, {}
    for name, (missing, _) in trainers.items():
        reason = missing()
        if reason:
            skipped[name] = reason
            print(f"  {name}: skipped: {reason}", file=sys.stderr)
    for number in range(ROUNDS):
        for name, (_, command) in trainers.items():
            if name in skipped:
                continue
            load = os.getloadavg()[0]
            result = measure(command, work)
            rounds.setdefault(name, []).append(result)
            print(
                f"  round {number + 1}, {name}: {result['wall']:.1f} s, "
                f"{symbols_per_second(result):,.0f} symbols/s (load {load:.1f} -> "
                f"{os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    return rounds, skipped


def median_round(results: list[dict]) -> dict:
    """The round whose training speed is the median of the trainer's rounds."""
    return sorted(results, key=symbols_per_second)[len(results) // 2]


def symbols_per_second(result: dict) -> float:
    """Training symbols per second of the last epoch."""
    windows = result["epoch_windows"]
    return windows * data.BATCH_SIZE * data.WINDOW / result["epoch_seconds"][-1]


def report(rounds: dict, skipped: dict, epochs: int, corpus_bytes: int) -> str:
    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    results = {name: median_round(runs) for name, runs in rounds.items()}

    first = next(iter(results.values()), None)
    shape = f"{data.BATCH_SIZE} x {data.WINDOW}"
    windows = f"{first['epoch_windows']} windows of {shape} per epoch, " if first else ""
    measured = "the last epoch" if epochs > 1 else "the only epoch, compilation included"
    lines = [
        f"char-rnn bench: {platform.machine()}, {os.cpu_count()} cores, {data.threads()} "
        f"thread(s) per trainer, Python {platform.python_version()}; corpus: the first "
        f"{data.CORPUS_CHARS:,} characters ({corpus_bytes:,} bytes) of the standard "
        f"library's .py files; {epochs} epoch(s), {windows}symbols/s over {measured}; "
        f"{ROUNDS} round(s), each trainer's median round shown",
        "",
        "| trainer | symbols/s | training s | whole process s | validation bits/char "
        "| window starts, carried | window starts, reset | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {symbols_per_second(result):,.0f} | {result['train_seconds']:.1f} | "
            f"{result['wall']:.1f} | {number(result['validation_bpc'])} | "
            f"{number(result['start_bpc_carried'])} | {number(result['start_bpc_reset'])} | "
            f"{result['rss_mib']:.0f} |"
        )
    for name, reason in skipped.items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | |")
    lines += ["", "Window starts: bits/char over the first 5 positions of validation windows 2.."]
    lines += ["", "Symbols/s of every round, in the order run:"]
    lines += [
        f"- {name}: " + ", ".join(f"{symbols_per_second(r):,.0f}" for r in runs)
        for name, runs in rounds.items()
    ]
    lines += aims(results)
    for name, result in results.items():
        lines += ["", f"Sample, {name} (200 characters, temperature 1, seed 0, after a newline):"]
        lines += ["```", result["sample"], "```"]
    return "\n".join(lines)


def aims(results: dict) -> list[str]:
    """Issue #17's aims, judged on what was measured."""
    ours = results.get("echo-keras train")
    if ours is None:
        return ["", "Aims not judged: echo-keras did not run."]
    lines = [""]
    if "own_validation_bpc" in ours:
        lines.append(
            f"- echo-keras's own report: {ours['own_validation_bpc']:.3f} bits/char on its "
            f"validation split, {ours['own_steps_per_second']:.2f} windows/s over all epochs"
        )
    speed = symbols_per_second(ours)
    for name, verb, met in (
        ("PyTorch, nn.LSTM", "at least as fast as", lambda ratio: ratio >= 1.0),
        ("Keras model.fit", "faster than", lambda ratio: ratio > 1.0),
    ):
        other = results.get(name)
        if other is None:
            continue
        ratio = speed / symbols_per_second(other)
        gap = ours["validation_bpc"] - other["validation_bpc"]
        lines.append(
            f"- echo-keras {verb} {name}: {'yes' if met(ratio) else 'no'} ({ratio:.2f}x); "
            f"validation {gap:+.3f} bits/char against it "
            f"({'equal' if abs(gap) < SAME_LOSS_BITS else 'not equal'} within {SAME_LOSS_BITS})"
        )
    return lines


def on_corpus(prefix: str, results: Path, measured: Callable[[Path, Path], str]) -> None:
    """Write the corpus into a temporary folder, run `measured(folder, corpus)`, and print
    the text it returns and save it to `results`; the folder is removed after."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        text = measured(work, data.write_corpus(work / "corpus.txt"))
        print(text)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    epochs = data.epochs()

    def measured(work: Path, corpus: Path) -> str:
        rounds, skipped = run_all(work, corpus, epochs)
        return report(rounds, skipped, epochs, corpus.stat().st_size)

    on_corpus("char-rnn-bench-", RESULTS, measured)


if __name__ == "__main__":
    main()
