"""The baseline: the same model and data trained with a plain Keras loop.

`model.fit` with Keras's default compile settings (steps_per_execution=1,
jit_compile="auto"), one window per step, the state reset at each epoch start,
fresh data each epoch. Writes a run folder that `echo-keras evaluate` can read,
and prints one JSON object like `echo-keras train --json`.

    python bench/baseline.py RUN_DIR EPOCHS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from echo_keras.callbacks import ResetStatesAtEpochStart
from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows
from echo_keras.model import build_model, loss_function, make_optimizer
from echo_keras.run import files


def main(run_dir: Path, epochs: int) -> None:
    config = TrainConfig(num_epochs=epochs)
    model = build_model(config)
    model.compile(optimizer=make_optimizer(config), loss=loss_function())
    started = time.perf_counter()
    for epoch in range(epochs):
        inputs, targets = epoch_windows(config, epoch)
        model.fit(
            inputs.reshape(-1, config.truncated_backprop_length, 1).astype("float32"),
            targets.reshape(-1, config.truncated_backprop_length).astype("int32"),
            batch_size=config.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=[ResetStatesAtEpochStart()],
        )
    seconds = time.perf_counter() - started
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_config(run_dir, config)
    model.save(run_dir / files.MODEL)
    steps = epochs * config.num_batches
    print(json.dumps({"run_dir": str(run_dir), "steps": steps, "train_seconds": seconds}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
