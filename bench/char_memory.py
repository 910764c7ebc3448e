"""The char-rnn bench's memory check (issue #17): echo-keras's peak memory for a 10 MB
and a 100 MB text file may differ by no more than twice the difference in file size.

Each file repeats the bench's corpus up to its size (1 MB = 10**6 bytes). Each is
trained for one epoch with a small model by a process of its own, whose peak RSS
comes from wait4 (its own `ru_maxrss`).

    python bench/char_memory.py                  # `make bench`; minutes (100 MB of training)
    python bench/char_memory.py child FILE RUN_DIR   # one training process
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import char_data as data
from char_rnn import echo_keras_missing, measure, on_corpus

RESULTS = Path(__file__).resolve().parent / "results" / "char_memory.md"
SIZES = (10_000_000, 100_000_000)  # bytes
BATCH_SIZE = 100  # a small model, as bench/run.py's memory check: 100 MB still trains for minutes
STATE_SIZE = 16


def write_repeated(corpus: Path, path: Path, size: int) -> Path:
    """`corpus` repeated up to `size` bytes (a character cut in two at the end is dropped)."""
    text = corpus.read_bytes()
    whole = text * (size // len(text)) + text[: size % len(text)]
    path.write_bytes(whole.decode("utf-8", errors="ignore").encode("utf-8"))
    return path


def child(file: Path, run_dir: Path) -> None:
    """One epoch of echo-keras's `train` on `file` with a small model; prints its report."""
    from echo_keras import TrainConfig, train

    config = TrainConfig(
        data=str(file),
        task="next",
        input_encoding="onehot",
        num_layers=1,
        state_size=STATE_SIZE,
        batch_size=BATCH_SIZE,
        truncated_backprop_length=data.WINDOW,
        optimizer="adam",
        learning_rate=data.LEARNING_RATE,
        num_epochs=1,
        validation_fraction=data.VALIDATION_FRACTION,
        seed=data.SEED,
    )
    result = train(config, run_dir, overwrite=True)
    print(json.dumps({"steps": result.steps, "train_seconds": result.train_seconds}))


def memory(work: Path, corpus: Path) -> str:
    """Train on each file size; return the report."""
    reason = echo_keras_missing()
    if reason:
        return f"Memory check skipped: {reason}"
    runs = {}
    for size in SIZES:
        file = write_repeated(corpus, work / f"text-{size}.txt", size)
        command = [sys.executable, Path(__file__), "child", file, work / f"memory-{size}"]
        run = runs[file.stat().st_size] = measure(command, work)
        file.unlink()
        shutil.rmtree(work / f"memory-{size}", ignore_errors=True)
        print(f"  memory, {size:,} bytes: {run['wall']:.1f} s", file=sys.stderr)
    (small, low), (large, high) = sorted(runs.items())
    grown = (high["rss_mib"] - low["rss_mib"]) * 2**20
    allowed = 2 * (large - small)
    lines = [
        f"Memory (echo-keras train, 1 epoch, 1 x LSTM({STATE_SIZE}), batch {BATCH_SIZE}, "
        f"window {data.WINDOW}, the corpus repeated):",
        "| file bytes | windows | training s | whole process s | peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, run in sorted(runs.items()):
        lines.append(
            f"| {size:,} | {run['steps']:,} | {run['train_seconds']:.1f} | {run['wall']:.1f} | "
            f"{run['rss_mib']:.0f} |"
        )
    lines.append(
        f"- peak RSS grew {grown / 2**20:.0f} MiB for {(large - small) / 2**20:.0f} MiB more "
        f"file ({grown / (large - small):.2f} bytes per byte): "
        f"{'within' if grown <= allowed else 'over'} twice the difference in file size"
    )
    return "\n".join(lines)


def main() -> None:
    on_corpus("char-memory-bench-", RESULTS, memory)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
