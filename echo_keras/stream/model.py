"""Run a trained model over a stream of any length, the state explicit and carried between calls.

Training uses a stateful model with a fixed batch (5 rows), and Keras refuses any
other batch for it. Prediction uses a copy instead: the same recurrent cells and
Dense head (built from the trained layers' configurations, dropout off, weights
copied from `model.keras`) in one *stateless* function

    step(symbols[batch, time], states) -> (probabilities[batch, time, classes], new states)

that takes the state in and hands it back, so nothing hides in layer variables and
the state can be kept anywhere: between chunks, in a state file between processes,
or on a server (`export.py` saves this very function; `state.py` keeps it in files).

`step` loops over time itself, and may stop early: given `length`, it runs only the
first `length` steps and returns the state after them. So `predict` compiles it
(XLA) for just three padded lengths (LENGTHS) and runs any piece of a stream
through one of them: the state after the last real symbol carries on, whatever the
padding. `predict_stream` reads the input a block at a time, so memory stays bounded
however long the stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from echo_keras.backend import keras, tf
from echo_keras.config import TrainConfig
from echo_keras.errors import RunFolderError
from echo_keras.model import check_same_run, load_run_and_vocabulary
from echo_keras.run import files
from echo_keras.stream.engine import ENGINES
from echo_keras.stream.symbols import BLOCK, EchoScore, Layout, SymbolParser, refuse_no_symbols
from echo_keras.stream.text import NextScore, VocabularyLayout, VocabularyParser
from echo_keras.vocabulary import Vocabulary

# The padded lengths `step` is compiled for, shortest first: a piece of a stream runs in
# the shortest that holds it (a line typed by hand in a small, quick program), and no
# piece is longer than the last.
LENGTHS = (256, 2048, 1 << 14)


def state_names(config: TrainConfig) -> list[str]:
    """The name of every carried state: `lstm_0_h`, `lstm_0_c`, ...; `gru_0_h`, ..."""
    parts = ("h", "c") if config.cell == "lstm" else ("h",)
    return [f"{config.cell}_{i}_{part}" for i in range(config.num_layers) for part in parts]


class StreamModel:
    """A stateless, batch-free copy of a trained model, and its batch-1 compiled runner.

    Its layers and compiled step are an engine of the model's architecture (`engine.py`),
    borrowed for the life of this object: a process that loads many runs of one
    architecture (a notebook's `load_predictor` in a loop) compiles the step once.

    Args:
        config: the run's configuration.
        trained: the trained model (any batch size); its layers' weights are copied.
        vocabulary: the run's vocabulary, for a run on its own data (None: the echo series).
    """

    def __init__(
        self, config: TrainConfig, trained: keras.Model, vocabulary: Vocabulary | None = None
    ):
        self.config = config
        self.vocabulary = vocabulary
        self.names = state_names(config)
        self.units = config.state_size
        sources = [
            _trained_layer(trained, f"{config.cell}_{i}").cell for i in range(config.num_layers)
        ]
        sources.append(_trained_layer(trained, "logits"))
        self._engine = ENGINES.lend(self, config, sources)
        self.weights_digest = _digest(self.cells + [self.head])

    @property
    def cells(self) -> list:
        """The recurrent cells, bottom first, with this run's weights."""
        return self._engine.cells

    @property
    def head(self):
        """The Dense head, with this run's weights."""
        return self._engine.head

    @property
    def _runners(self) -> dict[int, Callable]:
        return self._engine.runners

    def zero_state(self, batch: int = 1) -> list[np.ndarray]:
        """Zeros for every state: the start of a stream."""
        return [np.zeros((batch, self.units), np.float32) for _ in self.names]

    def step(self, symbols, states, length=None):
        """The model on `symbols` (int, batch x time) from `states`: probabilities, new states.

        The symbols enter as in training: one float each, or one-hot
        (`config.input_width` > 1). With `length`, only the first `length` steps run; the
        states returned are those after them, and the probabilities of later steps are
        meaningless.
        """
        return self._engine.step(symbols, states, length)

    def next_probabilities(self, state: list) -> np.ndarray:
        """The probabilities of the symbol after `state` (classes,), from its top layer's
        output (`h`): what `run` gave for the last symbol it read, or, from zeros, the
        model's guess with nothing read."""
        top = state[self.names.index(f"{self.config.cell}_{self.config.num_layers - 1}_h")]
        logits = self.head(tf.convert_to_tensor(np.asarray(top, np.float32).reshape(1, -1)))
        return tf.nn.softmax(logits, axis=-1).numpy()[0]

    def _runner(self, padded: int) -> Callable:
        """The compiled step for batch 1, `padded` steps and a run length (compiled once)."""
        return self._engine.runner(padded)

    def run(self, symbols: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Run one stream (batch 1) over `symbols` from `state`: (probabilities, new state).

        The symbols go through in pieces of at most the longest of LENGTHS, each padded
        to the shortest of LENGTHS that holds it; only the real steps run.
        """
        symbols = np.asarray(symbols, dtype=np.int32).ravel()
        state = [tf.convert_to_tensor(s, tf.float32) for s in state]
        outputs = []
        chunk = LENGTHS[-1]
        for start in range(0, len(symbols), chunk):
            piece = symbols[start : start + chunk]
            length = next(n for n in LENGTHS if n >= len(piece))
            padded = np.zeros((1, length), np.int32)
            padded[0, : len(piece)] = piece
            probabilities, state = self._runner(padded.shape[1])(
                padded, state, tf.constant(len(piece), tf.int32)
            )
            outputs.append(probabilities.numpy()[0, : len(piece)])
        if not outputs:
            return np.zeros((0, self.config.num_classes), np.float32), state
        return (outputs[0] if len(outputs) == 1 else np.concatenate(outputs)), state


def _digest(layers) -> bytes:
    """16 bytes that tell these weights from any others (what a state file is saved with)."""
    digest = hashlib.sha256()
    for layer in layers:
        for weights in layer.get_weights():
            digest.update(np.ascontiguousarray(weights, np.float32).tobytes())
    return digest.digest()[:16]


def _trained_layer(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise RunFolderError(
            f"the saved model has no layer {name!r}: it does not match config.json"
        ) from None


def load_stream_model(run_dir: Path, read_with: tuple | None = None) -> StreamModel:
    """The run's stream model; RunFolderError naming the file if the run cannot give one.

    config.json, model.keras and (a run on its own data) vocabulary.json are read from
    one version of the run folder. `read_with`, the (config, vocabulary) a caller read from
    the run before, must be that run's (`model.check_same_run`).
    """
    config, trained, record = load_run_and_vocabulary(run_dir)
    vocabulary = record[0] if record is not None else None
    if read_with is not None:
        check_same_run(run_dir, read_with, (config, vocabulary))
    try:
        return StreamModel(config, trained, vocabulary)
    except ValueError as error:  # weights of other shapes than config.json says
        path = Path(run_dir) / files.MODEL
        raise RunFolderError(f"{path} does not match config.json: {error}") from None


# --- the stream loop ------------------------------------------------------------------------


def run_documents(model: StreamModel, symbols: np.ndarray, starts, state: list):
    """`model.run` over `symbols` from `state`, the state zeroed at every index in `starts`,
    where a document starts; (probabilities, state)."""
    outputs = []
    for index, (begin, end) in enumerate(pairwise([0, *starts, len(symbols)])):
        if index:  # a document starts at `begin`
            state = model.zero_state()
        probabilities, state = model.run(symbols[begin:end], state)
        outputs.append(probabilities)
    return (outputs[0] if len(outputs) == 1 else np.concatenate(outputs)), state


def _score_documents(score, symbols: np.ndarray, predictions: np.ndarray, starts) -> None:
    """Score the predictions of a piece, each document apart (restarted where one starts)."""
    for index, (begin, end) in enumerate(pairwise([0, *starts, len(symbols)])):
        if index:
            score.restart()
        score.update(symbols[begin:end], predictions[begin:end])


@dataclass
class StreamResult:
    state: list  # the state after the last symbol
    symbols: int  # symbols read
    accuracy: float | None  # of the echo (positions >= echo_step) or of the next symbol
    scored: int  # positions in the accuracy
    collected: dict = field(default_factory=dict)  # symbols, predictions (and probabilities)
    line: tuple[bool, str] | None = None  # documents: where the stream stands in its line


def predict_stream(
    model: StreamModel,
    read: Callable[[int], bytes],
    write: Callable[[bytes], None] | None,
    state: list,
    *,
    probabilities: bool = False,
    collect: bool = False,
    line: tuple[bool, str] | None = None,
    hold: bool = False,
) -> StreamResult:
    """Predict a stream of symbols block by block, carrying the state.

    Args:
        model: the stream model.
        read: returns up to n more bytes of input (b"" at the end); it may return fewer,
            as a pipe does, and each block is answered as soon as it is read.
        write: takes the output of each block (classes, or probabilities if asked), laid
            out like the input; None to write nothing.
        state: the state to start from (`zero_state()` or `read_state(...)`).
        collect: keep every symbol, prediction (and probabilities) in `collected`, for
            JSON; memory then grows with the stream.
        line, hold: a run on documents: where an earlier call left the stream in its line
            (`StreamResult.line`); `hold`: a later call goes on from this one's (a line of
            whitespace at the end then waits, as it may turn out blank). With either, an
            input of blank lines alone is no error.

    Raises SymbolError at the first bad symbol, or for an input without symbols.
    """
    if model.vocabulary is None:
        parser = SymbolParser(model.config.num_classes)
        layout = Layout(parser.digit_mode)
    else:  # a run on its own data: its vocabulary's text or integers (`text.py`)
        parser = VocabularyParser(model.vocabulary, model.config.documents, line)
        layout = VocabularyLayout(model.vocabulary)
    score = NextScore() if model.config.task == "next" else EchoScore(model.config.echo_step)
    kept: dict[str, list] = {"symbols": [], "predictions": [], "probabilities": []}
    finished, seen = False, 0
    while not finished:
        block = read(BLOCK)
        finished, seen = not block, seen + len(block)
        piece = parser.finish(hold) if finished else parser.parse(block)
        probs, state = run_documents(model, piece.symbols, piece.starts, state)
        predictions = probs.argmax(axis=-1).astype(np.int32)
        _score_documents(score, piece.symbols, predictions, piece.starts)
        if write is not None:
            if probabilities:
                out = layout.probabilities(piece, probs)
            else:
                out = layout.classes(piece, predictions)
            write(out + (layout.end() if finished else b""))
        if collect:
            kept["symbols"].append(piece.symbols)
            kept["predictions"].append(predictions)
            if probabilities:
                kept["probabilities"].append(probs)
    refuse_no_symbols(parser, seen, hold)
    collected = {k: np.concatenate(v) for k, v in kept.items() if v} if collect else {}
    return StreamResult(
        state=[np.asarray(s) for s in state],
        symbols=parser.count,
        accuracy=score.accuracy,
        scored=score.scored,
        collected=collected,
        line=parser.line,
    )
