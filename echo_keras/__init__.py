"""echo-keras: train, evaluate, plot, stream, export and sweep stateful Keras RNNs with
truncated backpropagation through time, the state carried from window to window.

The public API, in one screen::

    import echo_keras as ek

    config = ek.TrainConfig(num_epochs=2)                 # the tutorial's field names
    result = ek.train(config, "runs/echo", overwrite=True)
    metrics = ek.evaluate("runs/echo")                    # the state carried, as in training
    # a run on its own data (train --data): its validation data, or another file
    text_metrics = ek.evaluate("runs/text", data="more.txt")
    figure = ek.draw_run("runs/echo")                     # the tutorial's figure, inline
    predictor = ek.load_predictor("runs/echo")
    probabilities, state = predictor.predict([0, 1, 1, 0])
    more, state = predictor.predict([1, 0], state)        # the stream goes on
    ek.export_saved_model("runs/echo", "echo_export")

Every error is an `EchoKerasError`, whose `exit_status` is what the command line exits
with. Names are imported on first use, so `import echo_keras` loads no TensorFlow,
Keras or Ray; `train`, `evaluate`, `load_predictor` and `export_saved_model` (and the
classes they return) import TensorFlow, `run_sweep` Ray.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "TrainConfig": "echo_keras.config",
    "train": "echo_keras.training",
    "TrainResult": "echo_keras.training",
    "evaluate": "echo_keras.evaluation",
    "Metrics": "echo_keras.evaluation",
    "DataMetrics": "echo_keras.data_evaluation",
    "plot_run": "echo_keras.plots.figure",
    "draw_run": "echo_keras.plots.figure",
    "load_predictor": "echo_keras.stream.predictor",
    "Predictor": "echo_keras.stream.predictor",
    "export_saved_model": "echo_keras.stream.export",
    "ExportReport": "echo_keras.stream.export",
    "run_sweep": "echo_keras.sweep.runner",
    "SweepResult": "echo_keras.sweep.runner",
    "SweepSpec": "echo_keras.sweep.grid",
    "make_spec": "echo_keras.sweep.grid",
    "RunFolder": "echo_keras.run.folder",
    # Every error class of the tree (`errors.py`).
    **{
        name: "echo_keras.errors"
        for name in (
            "EchoKerasError",
            "UsageError",
            "ConfigError",
            "SymbolError",
            "RunRefused",
            "RunBusy",
            "RunExists",
            "RunFolderError",
            "TrainingError",
            "TrainingDiverged",
            "StateFileError",
            "ExportError",
            "WriteError",
            "SweepError",
            "Interrupted",
            "EchoKerasWarning",
        )
    },
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'echo_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
