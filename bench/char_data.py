"""The char-rnn bench's corpus, settings, window layout and sampling, shared by its trainers.

Plain Python and numpy: the PyTorch trainer imports this without TensorFlow.

The corpus is the first CORPUS_CHARS characters (characters, not bytes) of the
standard library's `.py` files (under `sysconfig.get_paths()["stdlib"]`, in sorted
order of their paths, site-packages left out), concatenated; a file that cannot be
read or is not UTF-8 is skipped. The last VALIDATION_FRACTION of it is the
validation text, as echo-keras's default `validation_fraction=0.1` takes it.
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from bench_env import whole_number

from echo_keras.data import make_windows

# char-rnn's default model and training settings.
NUM_LAYERS = 2
STATE_SIZE = 128
BATCH_SIZE = 50
WINDOW = 50
LEARNING_RATE = 2e-3
SEED = 0

CORPUS_CHARS = whole_number("BENCH_CHAR_CHARS", 1_000_000)  # smaller: a quick try
VALIDATION_FRACTION = 0.1
START_POSITIONS = 5  # "window starts": the first positions of each window
SAMPLE_LENGTH = 200
SAMPLE_PRIME = "\n"  # the sample starts from a zero state fed this text
NOT_STDLIB = {"site-packages", "dist-packages"}


def threads() -> int:
    """CPU threads every trainer computes with (BENCH_CHAR_THREADS, default 1).

    One by default: the comparison is per core, and on a machine whose cores other work
    also uses, PyTorch's OpenMP threads wait for each other spinning: with 2 threads on
    2 busy cores it trained about 10 times slower than with one.
    """
    return whole_number("BENCH_CHAR_THREADS", 1)


def stdlib_sources() -> Iterator[str]:
    """The text of every readable UTF-8 `.py` file of the running interpreter's Lib,
    in sorted order of their paths (relative to Lib)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if not NOT_STDLIB & set(path.relative_to(root).parts)
    )
    for relative in paths:
        try:
            yield (root / relative).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue


def write_corpus(path: Path, chars: int = CORPUS_CHARS) -> Path:
    """Write the first `chars` characters of the concatenated sources to `path` (UTF-8)."""
    parts, total = [], 0
    for text in stdlib_sources():
        parts.append(text[: chars - total])
        total += len(parts[-1])
        if total == chars:
            break
    path.write_text("".join(parts), encoding="utf-8")
    return path


def read_corpus(path: Path) -> tuple[str, np.ndarray]:
    """(alphabet: the distinct characters, sorted; the text as indices into it)."""
    text = path.read_text(encoding="utf-8")
    alphabet = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    lookup = np.zeros(max(map(ord, alphabet)) + 1, dtype=np.uint8)
    lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    return alphabet, lookup[codes]


def split(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training part, validation part): the validation part is the last tenth."""
    cut = len(symbols) - int(len(symbols) * VALIDATION_FRACTION)
    return symbols[:cut], symbols[cut:]


def windows(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, next-character targets), each (num_windows, BATCH_SIZE, WINDOW).

    `make_windows`'s layout: row i of window k+1 continues row i of window k,
    so the state carried along a row sees the text in order.
    """
    return (
        make_windows(symbols[:-1], BATCH_SIZE, WINDOW),
        make_windows(symbols[1:], BATCH_SIZE, WINDOW),
    )


def epochs() -> int:
    return whole_number("BENCH_CHAR_EPOCHS", 2)


def bits(nats: float) -> float:
    return nats / math.log(2)


def sample(step: Callable[[int], np.ndarray], alphabet: str) -> str:
    """SAMPLE_LENGTH characters drawn at temperature 1 from a fixed seed.

    `step(symbol)` feeds one symbol to a model with batch size 1 that carries its
    state from call to call (starting from zero), and returns the next symbol's logits.
    """
    rng = np.random.default_rng(SEED)
    for char in SAMPLE_PRIME:
        logits = step(alphabet.index(char))
    out = []
    for _ in range(SAMPLE_LENGTH):
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        probabilities = np.exp(logits - logits.max())
        symbol = int(rng.choice(len(alphabet), p=probabilities / probabilities.sum()))
        out.append(alphabet[symbol])
        logits = step(symbol)
    return "".join(out)


def summary(losses: np.ndarray, reset_losses: np.ndarray | None) -> dict:
    """The validation figures from per-position losses (nats), (windows, batch, window):
    with the state carried, and with it zeroed before every window (None: not measured).
    Window starts are the first START_POSITIONS positions of windows 2.. (window 1
    starts from a zero state either way)."""
    result = {
        "validation_bpc": bits(float(losses.mean())),
        "start_bpc_carried": bits(float(losses[1:, :, :START_POSITIONS].mean())),
        "start_bpc_reset": None,
    }
    if reset_losses is not None:
        result["start_bpc_reset"] = bits(float(reset_losses[1:, :, :START_POSITIONS].mean()))
        result["validation_bpc_reset"] = bits(float(reset_losses.mean()))
    return result
