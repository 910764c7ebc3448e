"""The variant table of the README: each variant on the tutorial's task, default epochs.

Trains each variant with `echo-keras train` (a whole process, timed), evaluates
it with and without the carried state, and prints a Markdown table.

    python bench/variants.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "echo-keras"
WORK = ROOT / "bench" / "results" / "variants"

VARIANTS = [
    ("LSTM (the tutorial)", []),
    ("GRU", ["--cell", "gru"]),
    ("vanilla RNN (parts 1-2)", ["--cell", "simple"]),
    ("2 stacked LSTM layers (part 4)", ["--layers", "2"]),
    ("LSTM, dropout 0.1 (part 6)", ["--dropout", "0.1"]),
    ("LSTM, 3-symbol echo", ["--num-classes", "3"]),
    ("LSTM, Adam 0.01", ["--optimizer", "adam"]),
    ("LSTM, RMSprop 0.01", ["--optimizer", "rmsprop"]),
    ("LSTM, SGD 0.5", ["--optimizer", "sgd"]),
]


def run_json(*args) -> dict:
    done = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: echo-keras {' '.join(map(str, args))} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    lines = [
        "| variant | flags | accuracy | boundary accuracy | boundary, state reset each window "
        "| last epoch's mean loss | training s | whole process s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, (name, flags) in enumerate(VARIANTS):
        run_dir = WORK / f"variant-{index}"
        started = time.perf_counter()
        trained = run_json("train", "--run-dir", run_dir, "--json", *flags)
        whole = time.perf_counter() - started
        carried = run_json("evaluate", "--run-dir", run_dir, "--json")
        reset = run_json("evaluate", "--run-dir", run_dir, "--json", "--reset-each-window")
        row = (
            f"| {name} | `{' '.join(flags) or '(defaults)'}` | {carried['accuracy']:.4f} | "
            f"{carried['boundary_accuracy']:.4f} | {reset['boundary_accuracy']:.4f} | "
            f"{trained['final_loss']:.4f} | {trained['train_seconds']:.1f} | {whole:.1f} |"
        )
        print(row, file=sys.stderr)
        lines.append(row)
    text = "\n".join(lines)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "variants.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
