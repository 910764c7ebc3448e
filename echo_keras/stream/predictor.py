"""`Predictor`: a trained run's model as a Python object, for streaming prediction at batch 1.

The same stateless step `echo-keras predict` runs (`stream/model.py`), with the state
explicit: `predict(symbols, state)` returns the probabilities and the state after the
last symbol, so a stream can be fed in pieces, and the state kept anywhere in between.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from echo_keras.config import TrainConfig
from echo_keras.errors import ConfigError, SymbolError, UsageError, warn
from echo_keras.paths import as_path, file_path
from echo_keras.run.folder import RunFolder
from echo_keras.stream import state as state_files
from echo_keras.stream.model import StreamModel, load_stream_model
from echo_keras.vocabulary import Vocabulary, out_of_range


class State(dict):
    """A carried state: each state's name (`lstm_0_h`, ...) -> its (1, state_size) float32
    array. It remembers the weights that computed it (`weights`, a digest; None for zeros):
    `predict`, `generate` and `save_state` refuse a state of other weights (another run of
    the same shapes, or this run trained again), as `load_state` refuses such a file. A
    plain dict of the same arrays is taken on its names and shapes alone."""

    weights: bytes | None = None


class Predictor:
    """A trained run's model for streaming prediction, the carried state explicit.

    Args:
        model: the run's stream model (`load_predictor` makes one).
        run_dir: the run folder, which `save_state` never writes into (None: unknown).

    Example:

    ```python
    predictor = load_predictor("runs/echo")
    probabilities, state = predictor.predict([0, 1, 1, 0])
    more, state = predictor.predict([1, 0, 0], state)  # the stream goes on

    text_run = load_predictor("runs/text")  # trained with train --data
    ids = text_run.vocabulary.encode("the cat")
    probabilities, state = text_run.predict(ids)
    text, state = text_run.generate(100, prime="the cat", seed=0)
    ```
    """

    def __init__(self, model: StreamModel, run_dir: Path | str | None = None):
        if not isinstance(model, StreamModel):
            raise UsageError(
                f"Predictor takes a run's stream model, got {type(model).__name__}: "
                "load a run with load_predictor(run_dir)"
            )
        self.model = model
        self.run_dir = None if run_dir is None else as_path(run_dir, "run_dir")

    @property
    def config(self) -> TrainConfig:
        """The run's configuration."""
        return self.model.config

    @property
    def vocabulary(self) -> Vocabulary | None:
        """The run's vocabulary (`encode` text to ids, `decode` ids to text); None for a
        run on the echo series, whose symbols are 0..num_classes-1 themselves."""
        return self.model.vocabulary

    @property
    def state_names(self) -> tuple[str, ...]:
        """The names of the carried states: `lstm_0_h`, `lstm_0_c`, ..."""
        return tuple(self.model.names)

    def zero_state(self) -> State:
        """The state at the start of a stream: zeros, one (1, state_size) array per name."""
        zeros = self._named(self.model.zero_state())
        zeros.weights = None  # no weights computed them: a start for any run of these shapes
        return zeros

    def predict(
        self, symbols: Sequence[int] | np.ndarray, state: State | None = None
    ) -> tuple[np.ndarray, State]:
        """Run the model over `symbols`, starting from `state`.

        `symbols` are one stream: a run trained on documents (`documents=True`) reads them
        as within one document, its state never zeroed inside the call. `echo-keras
        predict` splits its input at blank lines and starts each document from zeros,
        leaving the blank line out: the same numbers come from a call per document, each
        from `state=None`.

        Args:
            symbols: a 1-D sequence of integer symbols, each in 0..num_classes-1.
            state: the state to start from (a dict from `predict` or `zero_state`);
                None starts from zeros.

        Returns:
            `(probabilities, state)`: a (len(symbols), num_classes) float32 array, and
            the state after the last symbol.

        Raises:
            SymbolError: a symbol outside 0..num_classes-1 (named with its index).
            ConfigError: symbols that are not a 1-D sequence of integers, or a state of
                another shape or of other weights (see `State`).
        """
        values = self._symbols(symbols)
        carried = self._state(state)
        probabilities, after = self.model.run(values, carried)
        return probabilities, self._named(after)

    def generate(
        self,
        length: int,
        *,
        prime: str | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        state: State | None = None,
    ) -> tuple[str, State]:
        """Sample `length` symbols from a run trained on its own data, each fed back in.

        Args:
            length: how many symbols to generate (0 or more).
            prime: text read through the vocabulary before sampling (not returned).
            temperature: above 0; below 1 sharpens the distribution, above 1 flattens it.
            seed: the seed of the draws (the same seed, the same text); None: fresh.
            state: the state to start from (from `predict`, `generate` or `zero_state`);
                None starts from zeros.

        Returns:
            `(text, state)`: the generated symbols decoded (characters joined, or
            integers separated by spaces), and the state after the last of them, from
            which a later `generate` or `predict` goes on.

        Raises:
            UsageError: the run has no vocabulary (the echo series) or was not trained
                on the next task.
            ConfigError: a `length` that is not a whole number from 0, a prime that is
                not text, a temperature that is not a finite number above 0, a seed that
                is not a whole number from 0, or a state of another shape or of other
                weights (see `State`).
            SymbolError: a prime with a symbol outside the vocabulary.
        """
        from echo_keras.stream.generate import sample

        if self.vocabulary is None:
            raise UsageError("generating needs a run trained on its own data (a `data` file)")
        text, after = sample(
            self.model,
            self.config,
            self.vocabulary,
            length,
            prime=prime,
            temperature=temperature,
            seed=seed,
            state=self._state(state),
        )
        return text, self._named(after)

    def save_state(self, path: Path | str, state: State) -> None:
        """Write `state` to an npz file atomically (what `predict --state-out` writes).

        Raises:
            ConfigError: `path` must not be replaced: a file that is not a state file of
                this run, a folder (or a path ending in /), device or FIFO, a symlink that
                leads nowhere, a place inside the run folder, or a folder that does not exist;
                a `state` of another shape or of other weights (see `State`).
            StateFileError: it could not be written (a full disk, no permission); the
                file there, if any, is as it was.
        """
        if state is None:  # `predict`'s None means zeros; a state to save must be given
            raise ConfigError("state", "must be a state (from predict, generate or zero_state)")
        values = self._state(state)
        target = state_files.state_target(file_path(path, "path"), self.model, self.run_dir)
        state_files.write_state(target, self.model, values)

    def load_state(self, path: Path | str) -> State:
        """The state in an npz file (`predict --state-out`); StateFileError if unusable:
        damaged, of other states or shapes, or computed with other weights than this run's;
        ConfigError if `path` is not a file's path (None, or one ending in /). A file that
        `predict` saved with whitespace not yet read (a run on documents, at a line's start:
        it waited to see whether the line is blank) gives an EchoKerasWarning: the state is
        from before it."""
        path = file_path(path, "path")
        state, line = state_files.read_state_and_line(path, self.model)
        if line is not None and line[1]:
            count = f"{len(line[1])} whitespace character{'s' * (len(line[1]) != 1)}"
            warn(
                f"{path} holds {count} that `predict` had not "
                "read yet (at a line's start, on a run on documents, waiting to see whether "
                "the line is blank): the state is from before them; predict them first unless "
                "the line turns out blank"
            )
        return self._named(state)

    def _named(self, values) -> State:
        """The state arrays under their names, in the model's order: numpy arrays of the
        caller's own (writable; TensorFlow's own are read-only views), computed with this
        model's weights."""
        arrays = (np.array(value, np.float32) for value in values)
        state = State(zip(self.model.names, arrays, strict=True))
        state.weights = self.model.weights_digest
        return state

    def _symbols(self, symbols) -> np.ndarray:
        try:
            values = np.asarray(symbols)
        except ValueError:  # ragged
            raise ConfigError("symbols", "must be a 1-D sequence of integer symbols") from None
        if values.ndim == 0:  # a text, or one number
            hint = ""
            if isinstance(symbols, str) and self.vocabulary is not None:
                hint = " (a text's: predictor.vocabulary.encode(text))"
            elif isinstance(symbols, str) and symbols.isdecimal():
                hint = f" such as {[int(digit) for digit in symbols[:6]]}"
            problem = f"must be a 1-D sequence of integer symbols{hint}, got {symbols!r:.40}"
            raise ConfigError("symbols", problem)
        if values.ndim != 1:
            raise ConfigError("symbols", f"must be 1-D, got shape {values.shape}")
        whole = values.dtype.kind == "O" and all(  # Python's ints past 64 bits
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values
        )
        if values.size and values.dtype.kind not in "iu" and not whole:
            raise ConfigError("symbols", f"must be integers, got {values.dtype}")
        problem = out_of_range(values, self.config.num_classes, "symbols")
        if problem:
            raise SymbolError(problem)
        return values.astype(np.int32)

    def _state(self, state: State | None) -> list[np.ndarray]:
        if state is None:
            return self.model.zero_state()
        wanted = (1, self.model.units)
        if not isinstance(state, dict) or set(state) != set(self.model.names):
            raise ConfigError("state", f"must hold exactly {', '.join(self.model.names)}")
        computed_with = getattr(state, "weights", None)
        if computed_with is not None and computed_with != self.model.weights_digest:
            raise ConfigError(
                "state",
                "was computed with other weights (another run of the same shapes, or this "
                "run trained again); start from None (zeros) or a state of this run",
            )
        try:
            if any(np.iscomplexobj(state[name]) for name in self.model.names):
                raise TypeError("complex")
            with np.errstate(over="ignore"):  # past float32: infinite, refused below
                values = [np.asarray(state[name], np.float32) for name in self.model.names]
        except (TypeError, ValueError, OverflowError):  # text, ragged, complex or huge values
            raise ConfigError("state", f"must hold float arrays of shape {wanted}") from None
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
        RunFolderError: config.json or model.keras (or, for a run on its own data,
            vocabulary.json) is missing, damaged or disagree.
        ConfigError: a `run_dir` that is not a path.

    Warns:
        EchoKerasWarning: the run is not complete (failed, interrupted, still training),
            as `echo-keras predict` notes it: its model.keras may predate its checkpoint.
    """
    predictor = Predictor(load_stream_model(run_dir), run_dir)
    RunFolder(run_dir).warn_if_unfinished()  # after: a run with no model has its error
    return predictor
