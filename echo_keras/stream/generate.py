"""Generate text from a run trained on its own data (the `next` task): sample a symbol,
feed it back, and so on, the state carried.

The distribution of the first symbol is the model's after the prime (or, without one,
after the state it starts from: its top layer's output through the head). Each symbol
is drawn with numpy's generator of `seed`, from the probabilities sharpened or
flattened by `temperature`::

    logits = log(p) / temperature;  p' = softmax(logits);  rng.choice(K, p=p')

so a client of the exported SavedModel that draws the same way gets the same text.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from echo_keras.backend import keras
from echo_keras.config import TrainConfig
from echo_keras.errors import ConfigError, UsageError
from echo_keras.stream.model import StreamModel, run_documents
from echo_keras.stream.text import read_text
from echo_keras.values import check_seed, check_temperature
from echo_keras.vocabulary import Vocabulary


def draw(probabilities: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """One symbol drawn from `probabilities` at `temperature` (see the module). A temperature
    so low that every logit overflows leaves only the most likely symbol, as its limit does."""
    probabilities = np.asarray(probabilities, np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        logits = np.log(probabilities) / temperature
    if not np.isfinite(logits.max()):
        return int(np.argmax(probabilities))
    weights = np.exp(logits - logits.max())
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def stream_model(source, config: TrainConfig, vocabulary: Vocabulary | None) -> StreamModel:
    """A StreamModel from a StreamModel, a Predictor (its `model`) or a trained Keras model
    (any fixed batch: its layers are copied into a batch-1 stateless step)."""
    if isinstance(source, StreamModel):
        return source
    if isinstance(getattr(source, "model", None), StreamModel):
        return source.model
    if isinstance(source, keras.Model):
        return StreamModel(config, source, vocabulary)
    raise TypeError(f"expected a Keras model, a StreamModel or a Predictor, got {type(source)}")


def sample(
    model,
    config: TrainConfig,
    vocabulary: Vocabulary,
    length: int,
    *,
    prime: str | None = None,
    temperature: float = 1.0,
    seed: int | None = 0,
    state: list | None = None,
    line: tuple[bool, str] | None = None,
    write: Callable[[str], None] | None = None,
    hold: bool = False,
) -> tuple[str, list[np.ndarray]]:
    """Sample `length` symbols, each fed back as the next input.

    Args:
        model: a trained Keras model (as training leaves it), a StreamModel or a Predictor.
        config: the run's configuration (its task must be `next`).
        vocabulary: the run's vocabulary.
        length: how many symbols to generate (0 or more).
        prime: text read through the vocabulary first (not part of the result).
        temperature: above 0; below 1 sharpens the distribution, above 1 flattens it.
        seed: seed of numpy's generator; the same seed gives the same text. None: fresh.
        state: the state to start from (a list in the model's order); None: zeros.
        line: a run on documents: where the stream that left `state` stood in its line
            (a state file's); whitespace it held back is read before the prime, and a
            newline that begins the prime ends that line. None: a line's start.
        hold: with a `length` of 0, whitespace at the start of the prime's last line is
            held, not read (it may begin a blank line), as `predict --state-out` holds it
            at the end of its input: for a caller that saves the line with the state.
        write: called with each symbol's text as soon as it is drawn (ints: with a space
            before all but the first).

    Returns:
        `(text, state)`: the generated symbols decoded (characters joined, or integers
        separated by spaces), and the state after the last of them was read.

    Raises:
        UsageError: the run is not one trained to predict the next symbol.
        ConfigError: a `length` that is not a whole number from 0, a prime that is not
            text, a temperature that is not a finite number above 0, or a seed that is not
            a whole number from 0.
        SymbolError: a prime with a symbol outside the vocabulary (line and column).
    """
    if config.task != "next":
        raise UsageError("generating needs a run trained on the `next` task")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise ConfigError("length", f"must be a whole number from 0, got {length!r:.40}")
    temperature, seed = check_temperature(temperature), check_seed(seed)
    if prime is not None and not isinstance(prime, str):
        raise ConfigError("prime", f"must be text, got {type(prime).__name__}")
    stream = stream_model(model, config, vocabulary)
    state = stream.zero_state() if state is None else [np.asarray(s, np.float32) for s in state]
    probabilities = None
    if prime or (config.documents and line and line[1]):
        # A run on documents: a blank line in it ends one, the next starts from zeros.
        hold = hold and length == 0  # then the caller saves the line, whitespace held
        piece = read_text(prime or "", vocabulary, "prime: ", config.documents, line, hold)
        probs, state = run_documents(stream, piece.symbols, piece.starts, state)
        last_start = piece.starts[-1] if piece.starts else 0
        if len(piece.symbols) > last_start:
            probabilities = probs[-1]
    if probabilities is None:
        probabilities = stream.next_probabilities(state)
    rng = np.random.default_rng(seed)
    drawn = []
    for index in range(int(length)):
        symbol = draw(probabilities, temperature, rng)
        drawn.append(symbol)
        if write is not None:
            text = vocabulary.decode([symbol])
            write(text if vocabulary.kind == "text" or index == 0 else " " + text)
        probs, state = stream.run(np.array([symbol], np.int32), state)
        probabilities = probs[-1]
    return vocabulary.decode(drawn), [np.asarray(s) for s in state]
