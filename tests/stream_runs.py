"""Tiny trained runs of every variant, shared by the predict and export tests (trained once)."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from echo_keras.config import TrainConfig

# 30 windows of 5 x 10 per epoch, as tests/conftest.py's TINY.
TINY = TrainConfig(
    num_epochs=2, total_series_length=1500, truncated_backprop_length=10, batch_size=5
)
VARIANTS = {
    "lstm": {},
    "gru": {"cell": "gru"},
    "simple": {"cell": "simple"},
    "layers2": {"num_layers": 2},
    "classes3": {"num_classes": 3},
    "dropout": {"dropout": 0.1},
    "classes12": {"num_classes": 12},  # more than ten: symbols are whitespace-separated
}
_FOLDER = Path(tempfile.mkdtemp(prefix="echo-keras-stream-runs-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)


@functools.cache
def trained(variant: str) -> Path:
    """The run folder of a tiny run of `variant` (see VARIANTS)."""
    from echo_keras.training import train

    run_dir = _FOLDER / variant
    train(dataclasses.replace(TINY, **VARIANTS[variant]), run_dir)
    return run_dir


@functools.cache
def stream_model(variant: str):
    from echo_keras.stream.model import load_stream_model

    return load_stream_model(trained(variant))


def random_symbols(num_classes: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, length).astype(np.int32)


def as_text(symbols, num_classes: int) -> str:
    """Symbols as `predict` reads them: digits, or space-separated integers past ten classes."""
    if num_classes <= 10:
        return "".join(map(str, symbols))
    return " ".join(map(str, symbols))


def assert_same_stream(probabilities, expected, predictions=None, tolerance=1e-5):
    """Probabilities equal to `tolerance`; predictions equal wherever no near-tie could flip them.

    The compiled programs of different chunk lengths round differently in the last
    bit, so a class whose two top probabilities are within 2 * tolerance may go
    either way: those positions are left out of the class comparison.
    """
    probabilities, expected = np.asarray(probabilities), np.asarray(expected)
    assert probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tolerance)
    if predictions is not None:
        top2 = np.sort(expected, axis=-1)[..., -2:]
        clear = top2[..., 1] - top2[..., 0] > 2 * tolerance
        assert clear.mean() > 0.9  # the comparison is not vacuous
        np.testing.assert_array_equal(
            np.asarray(predictions)[clear], expected.argmax(axis=-1)[clear]
        )
