"""Shared fixtures: a tiny configuration for fast tests, and trained runs reused across tests."""

from __future__ import annotations

import pytest

from echo_keras.config import TrainConfig

# 30 windows of 5 x 10 per epoch: trains in well under a second once compiled.
TINY = TrainConfig(
    num_epochs=2,
    total_series_length=1500,
    truncated_backprop_length=10,
    batch_size=5,
    state_size=4,
)


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run folder trained on the tiny configuration."""
    from echo_keras.training import train

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    train(TINY, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """A run folder trained on the tutorial's default configuration (a few seconds)."""
    from echo_keras.training import train

    run_dir = tmp_path_factory.mktemp("default") / "run"
    result = train(TrainConfig(), run_dir)
    return run_dir, result
