"""One sweep point trained and evaluated in memory, by a trainer that stays warm between points.

`PointTrainer` keeps, per shape (batch, window, series length, units, cell, layers, classes,
dropout, optimizer and its rate), one compiled model with its compiled training loop and its
compiled evaluation loop. Every point of that shape reuses them: its weights are set to the
very values a fresh `train` would start from (the model built under the point's seed), its
optimizer's variables to their initial values, and its state is zeroed at every epoch start.
So a point computes exactly what `training.train` + `evaluation.evaluate` (carried and reset
each window) compute for the same settings, without a run folder, a checkpoint or a reload;
with `keep_run` it writes the folder `train` would write, once, at the end.

TensorFlow compiles each loop once per shape and keeps what it compiled for the life of the
process, so a warm trainer's memory grows with the shapes it has seen, never with the points:
`shapes` tells its owner when to replace it with a fresh one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras import model as model_lib
from echo_keras.backend import tf
from echo_keras.config import TrainConfig, shape_key
from echo_keras.data import epoch_windows, eval_rng, symbol_dtype, windows_from_rng
from echo_keras.errors import ConfigError, TrainingDiverged
from echo_keras.evaluation import Metrics, score
from echo_keras.fitting import build_compiled_model, probabilities
from echo_keras.loops import PairedPredictLoop, TrainLoop
from echo_keras.memory import memory_problem
from echo_keras.run import arrays, fileio, files
from echo_keras.training import DIVERGED
from echo_keras.warm import WarmModel

PARTS = ("compilation", "initialisation", "training", "evaluation", "saving")
SEEDS_KEPT = 16  # initial weights kept per shape, by seed (a fresh model costs ~0.1 s)


@dataclass
class PointResult:
    """A point's numbers (those of train + evaluate + evaluate --reset-each-window) and where
    its time went, in seconds."""

    final_loss: float  # mean batch loss of the last epoch
    carried: Metrics  # evaluated with the state carried
    reset: Metrics  # evaluated with the state zeroed before every window
    seconds: dict[str, float]  # compilation, initialisation, training, evaluation, saving


class _Compiled:
    """A warm model of one shape with its compiled loops, and fresh variables by seed."""

    def __init__(self, config: TrainConfig):
        self.warm = WarmModel(build_compiled_model(config))
        self.train_loop = self.warm.loop(TrainLoop, config.num_batches)
        self.eval_loop = self.warm.loop(PairedPredictLoop, windows=config.num_batches)
        shape = (config.num_batches, config.batch_size, config.truncated_backprop_length)
        zeros = tf.zeros(shape, dtype=tf.as_dtype(symbol_dtype(config.num_classes)))
        self.train_loop(zeros, zeros, 0, 0)  # compile now: zero windows change nothing
        self.eval_loop(zeros, zeros, 0)
        self.initial: dict[int, list[np.ndarray]] = {}  # seed -> a fresh model's variables

    @property
    def model(self):
        return self.warm.model

    def start_afresh(self, config: TrainConfig) -> None:
        """Weights as a fresh train's model under the point's seed; the optimizer as new."""
        if config.seed not in self.initial:
            if len(self.initial) >= SEEDS_KEPT:
                self.initial.pop(next(iter(self.initial)))
            fresh = model_lib.build_seeded(config)
            self.initial[config.seed] = [v.numpy() for v in fresh.variables]
        self.warm.start_afresh(self.initial[config.seed])


class PointTrainer:
    """Train and evaluate sweep points in this process, compiling once per shape."""

    def __init__(self):
        self._compiled: dict[tuple, _Compiled] = {}

    @property
    def shapes(self) -> int:
        """Shapes compiled so far (what this process's memory grows with)."""
        return len(self._compiled)

    def run(self, config: TrainConfig, keep_run: Path | None = None) -> PointResult:
        """Train `config` from scratch as `train` would, then evaluate it on the fresh series
        `evaluate` uses, carried and reset each window; with `keep_run`, write the run folder
        there (a new folder). Raises ConfigError or TrainingDiverged as `train` does."""
        config.validate()
        problem = memory_problem(config)
        if problem:
            raise ConfigError("total_series_length", problem)
        seconds = dict.fromkeys(PARTS, 0.0)
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[name] += now - clock
            clock = now

        key = shape_key(config)
        if key not in self._compiled:
            self._compiled[key] = _Compiled(config)
            lap("compilation")
        compiled = self._compiled[key]
        compiled.start_afresh(config)
        lap("initialisation")
        rows, last = self._train(compiled, config)
        lap("training")
        carried, reset = self._evaluate(compiled, config)
        lap("evaluation")
        if keep_run is not None:
            _write_run(keep_run, config, compiled.model, rows, last)
            lap("saving")
        final = [row[3] for row in rows[-config.num_batches :]]
        return PointResult(sum(final) / len(final), carried, reset, seconds)

    @staticmethod
    def _train(compiled: _Compiled, config: TrainConfig):
        """Every epoch in one compiled call each; the history rows and the last batch."""
        n, rows = config.num_batches, []
        for epoch in range(config.num_epochs):
            inputs, targets = epoch_windows(config, epoch)
            model_lib.reset_states(compiled.model)
            losses, logits = compiled.train_loop(tf.constant(inputs), tf.constant(targets), 0, n)
            losses = losses.numpy().tolist()
            if not all(math.isfinite(loss) for loss in losses):
                raise TrainingDiverged(DIVERGED)
            rows += [(epoch, batch, epoch * n + batch, loss) for batch, loss in enumerate(losses)]
        return rows, (inputs[-1], targets[-1], probabilities(logits.numpy()))

    @staticmethod
    def _evaluate(compiled: _Compiled, config: TrainConfig) -> tuple[Metrics, Metrics]:
        inputs, targets = windows_from_rng(eval_rng(config.seed), config)
        model_lib.reset_states(compiled.model)
        carried_sums, carried_hits, reset_sums, reset_hits = compiled.eval_loop(inputs, targets)
        echo = config.echo_step
        return (
            score(carried_sums.numpy(), carried_hits.numpy(), echo, False),
            score(reset_sums.numpy(), reset_hits.numpy(), echo, True),
        )


def _write_run(run_dir: Path, config: TrainConfig, model, rows, last) -> None:
    """The files `train` leaves in a completed run folder, written once."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True)
    versions = files.package_versions("keras", "tensorflow", "numpy")
    files.write_config(run_dir, config, versions=versions, fast_path=True)
    files.write_history(run_dir, files.history_lines(rows))
    arrays.write_last_batch(run_dir, *last)
    model_lib.save_checkpoint(run_dir, model, config.num_epochs)
    fileio.atomic_write(run_dir / files.MODEL, lambda tmp: model.save(tmp))
    files.write_status(run_dir, "complete")


def as_row(result: PointResult) -> dict:
    """A point's metrics under results.csv's names."""
    return {
        "accuracy": result.carried.accuracy,
        "boundary_accuracy": result.carried.boundary_accuracy,
        "inner_accuracy": result.carried.inner_accuracy,
        "reset_boundary_accuracy": result.reset.boundary_accuracy,
        "final_loss": result.final_loss,
        "train_seconds": result.seconds["training"],
    }
