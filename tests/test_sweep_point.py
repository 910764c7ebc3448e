"""A sweep point trained in memory by a warm `PointTrainer` (no Ray): the very numbers of
`train` + `evaluate` + `evaluate --reset-each-window`, a run folder those commands read, one
compilation per shape, and a memory that does not grow with the points."""

from __future__ import annotations

import dataclasses
import json

import pytest

from echo_keras.config import TrainConfig, shape_key
from echo_keras.errors import ConfigError, TrainingDiverged
from echo_keras.run import arrays, files
from tests.helpers import TINY, rss_mib


@pytest.fixture(scope="module")
def trainer():
    from echo_keras.sweep.point import PointTrainer

    return PointTrainer()


def _final_loss(run_dir, config: TrainConfig) -> float:
    losses = [row[3] for row in files.read_history(run_dir)][-config.num_batches :]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("variant", ["lstm", "gru"])
def test_a_warm_point_gives_what_train_and_evaluate_give(trainer, trained, variant):
    from echo_keras.evaluation import evaluate

    run = trained(variant)
    config = files.load_config(run)
    # Another point of the same shape first: the warm model must start afresh all the same.
    trainer.run(dataclasses.replace(config, echo_step=1, seed=7, num_epochs=1))
    result = trainer.run(config)
    assert result.seconds["compilation"] == 0.0  # the shape was compiled by the point before
    carried, reset = evaluate(run), evaluate(run, reset_each_window=True)
    assert result.final_loss == pytest.approx(_final_loss(run, config), abs=1e-6)
    for ours, theirs in ((result.carried, carried), (result.reset, reset)):
        for name in ("loss", "accuracy", "boundary_accuracy", "inner_accuracy"):
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name), abs=1e-6), name
        assert (ours.windows, ours.positions) == (theirs.windows, theirs.positions)
    assert result.reset.reset_each_window and not result.carried.reset_each_window


def test_points_of_one_shape_share_one_compilation(trainer):
    before = trainer.shapes
    config = dataclasses.replace(TINY, num_epochs=1, truncated_backprop_length=6)
    first = trainer.run(config)
    second = trainer.run(dataclasses.replace(config, echo_step=2, seed=3, num_epochs=2))
    assert trainer.shapes == before + 1
    assert first.seconds["compilation"] > 0 and second.seconds["compilation"] == 0
    assert shape_key(config) == shape_key(dataclasses.replace(config, echo_step=2, seed=3))
    assert shape_key(config) != shape_key(dataclasses.replace(config, state_size=5))


def test_a_kept_point_is_a_run_folder_the_commands_read(trainer, tmp_path):
    from echo_keras.evaluation import evaluate
    from echo_keras.run.folder import RunFolder

    config = dataclasses.replace(TINY, num_epochs=1, truncated_backprop_length=6)
    result = trainer.run(config, tmp_path / "run")
    run = tmp_path / "run"
    assert RunFolder(run).status()["status"] == "complete"
    assert files.load_config(run) == config
    assert json.loads((run / files.CONFIG).read_text())["fast_path"] is True
    assert len(files.read_history(run)) == config.num_batches
    assert arrays.read_last_batch(run, config)["probabilities"].shape == (5, 6, 2)
    assert evaluate(run).accuracy == pytest.approx(result.carried.accuracy, abs=1e-6)


def test_bad_settings_and_divergence_raise_as_train_does(trainer):
    with pytest.raises(ConfigError):
        trainer.run(dataclasses.replace(TINY, state_size=0))
    with pytest.raises(ConfigError):
        trainer.run(dataclasses.replace(TINY, total_series_length=10**15))
    with pytest.raises(TrainingDiverged):
        trainer.run(dataclasses.replace(TINY, num_epochs=1, learning_rate=1e38))


@pytest.mark.slow
def test_a_warm_trainers_memory_stays_flat_over_200_points():
    """Before, every point grew a worker by about 20 MB; 150 points would add 3 GB."""
    from echo_keras.sweep.point import SEEDS_KEPT, PointTrainer

    trainer, marks = PointTrainer(), {}
    for index in range(200):
        # One shape, three echo steps; every 10th point a seed not seen (a fresh model).
        seed = index % 3 if index % 10 else SEEDS_KEPT + index
        config = TrainConfig(
            echo_step=1 + index % 3,
            truncated_backprop_length=4,
            state_size=4,
            total_series_length=200,
            num_epochs=1,
            seed=seed,
        )
        trainer.run(config)
        if index + 1 in (50, 200):
            marks[index + 1] = rss_mib()
    assert trainer.shapes == 1
    assert marks[200] - marks[50] < 15, marks  # 150 points: well under 0.1 MB each
