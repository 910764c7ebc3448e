"""`Predictor`: a trained run's model as a Python object, for streaming prediction at batch 1.

The same stateless step `echo-keras predict` runs (`stream/model.py`), with the state
explicit: `predict(symbols, state)` returns the probabilities and the state after the
last symbol, so a stream can be fed in pieces, and the state kept anywhere in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from echo_keras.config import TrainConfig
from echo_keras.errors import ConfigError
from echo_keras.stream import state as state_files
from echo_keras.stream.model import StreamModel, load_stream_model

State = dict[str, np.ndarray]


class Predictor:
    """A trained run's model for streaming prediction, the carried state explicit.

    Args:
        model: the run's stream model (`load_predictor` makes one).

    Example:

    ```python
    predictor = load_predictor("runs/echo")
    probabilities, state = predictor.predict([0, 1, 1, 0])
    more, state = predictor.predict([1, 0, 0], state)  # the stream goes on
    ```
    """

    def __init__(self, model: StreamModel):
        self.model = model

    @property
    def config(self) -> TrainConfig:
        """The run's configuration."""
        return self.model.config

    @property
    def state_names(self) -> tuple[str, ...]:
        """The names of the carried states: `lstm_0_h`, `lstm_0_c`, ..."""
        return tuple(self.model.names)

    def zero_state(self) -> State:
        """The state at the start of a stream: zeros, one (1, state_size) array per name."""
        return self._named(self.model.zero_state())

    def predict(
        self, symbols: Sequence[int] | np.ndarray, state: State | None = None
    ) -> tuple[np.ndarray, State]:
        """Run the model over `symbols`, starting from `state`.

        Args:
            symbols: a 1-D sequence of integer symbols, each in 0..num_classes-1.
            state: the state to start from (a dict from `predict` or `zero_state`);
                None starts from zeros.

        Returns:
            `(probabilities, state)`: a (len(symbols), num_classes) float32 array, and
            the state after the last symbol.

        Raises:
            ConfigError: symbols that are not the run's, or a state of another shape.
        """
        values = self._symbols(symbols)
        carried = self._state(state)
        probabilities, after = self.model.run(values, carried)
        return probabilities, self._named(np.asarray(s) for s in after)

    def save_state(self, path: Path | str, state: State) -> None:
        """Write `state` to an npz file atomically (what `predict --state-out` writes)."""
        state_files.write_state(Path(path), self.model, self._state(state))

    def load_state(self, path: Path | str) -> State:
        """The state in an npz file (`predict --state-out`); StateFileError if unusable."""
        return self._named(state_files.read_state(Path(path), self.model))

    def _named(self, values) -> State:
        """The state arrays under their names, in the model's order."""
        return dict(zip(self.model.names, values, strict=True))

    def _symbols(self, symbols) -> np.ndarray:
        values = np.asarray(symbols)
        if values.ndim != 1:
            raise ConfigError("symbols", f"must be 1-D, got shape {values.shape}")
        if values.size and values.dtype.kind not in "iu":
            raise ConfigError("symbols", f"must be integers, got {values.dtype}")
        classes = self.config.num_classes
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ConfigError("symbols", f"must be from 0 to {classes - 1}")
        return values.astype(np.int32)

    def _state(self, state: State | None) -> list[np.ndarray]:
        if state is None:
            return self.model.zero_state()
        wanted = (1, self.model.units)
        if not isinstance(state, dict) or set(state) != set(self.model.names):
            raise ConfigError("state", f"must hold exactly {', '.join(self.model.names)}")
        values = [np.asarray(state[name], np.float32) for name in self.model.names]
        for name, value in zip(self.model.names, values, strict=True):
            if value.shape != wanted or not np.all(np.isfinite(value)):
                raise ConfigError("state", f"{name} must be finite, of shape {wanted}")
        return values


def load_predictor(run_dir: Path | str) -> Predictor:
    """The trained run's model, ready to predict a stream at batch 1.

    Args:
        run_dir: a trained run folder.

    Returns:
        A `Predictor`.

    Raises:
        RunFolderError: config.json or model.keras is missing, damaged or disagree.
    """
    return Predictor(load_stream_model(run_dir))
