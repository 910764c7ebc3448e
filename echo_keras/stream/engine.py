"""The layers of a stream model and their compiled step, kept for the next model of the same
architecture.

`StreamModel` (model.py) runs a trained model at batch 1 through an `Engine`: batch-free,
stateless copies of its cells and Dense head, and the step over them that XLA compiles.
TensorFlow keeps what XLA compiled for the life of the process, even once the step itself
is gone: about 2 MB a model, were every StreamModel to compile its own (a notebook that
calls `load_predictor` in a loop). So a StreamModel borrows an idle engine of its
architecture from `ENGINES` (or a new one), sets its own weights in it, and gives it back
when it is itself collected: a process compiles a step once per architecture in use, and
two StreamModels alive at once never share one.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

from echo_keras.backend import graph_function, keras, keras_building, tf
from echo_keras.config import TrainConfig

KEPT_ENGINES = 8  # idle engines kept, the least recently given back dropped first


class Engine:
    """The layers of one architecture, batch-free and stateless, and their compiled step;
    the weights are those of whichever StreamModel borrowed it last (`load`)."""

    def __init__(self, config: TrainConfig, layers: list):
        self.input_width, self.num_classes = config.input_width, config.num_classes
        self.units, self.per_cell = config.state_size, 2 if config.cell == "lstm" else 1
        self.cells = []
        with keras_building():
            for index, (kind, settings) in enumerate(layers[:-1]):
                cell = kind.from_config(settings)
                cell.build((None, config.input_width if index == 0 else config.state_size))
                self.cells.append(cell)
            self.head = keras.layers.Dense.from_config(layers[-1][1])
            self.head.build((None, config.state_size))
        self._compiled = graph_function(self.step, jit_compile=True)
        self.runners: dict[int, Callable] = {}

    def load(self, sources: list) -> None:
        """Set the weights of `sources`, the trained cells and head (ValueError: of other
        shapes)."""
        for layer, source in zip([*self.cells, self.head], sources, strict=True):
            layer.set_weights(source.get_weights())

    def step(self, symbols, states, length=None):
        """`StreamModel.step`."""
        steps = tf.shape(symbols)[1]
        length = steps if length is None else length
        if self.input_width > 1:  # time, batch, classes (floats transposed: oneDNN has no
            # int32 transpose on most CPUs, and says so on stderr)
            one_hot = tf.one_hot(tf.cast(symbols, tf.int32), self.num_classes)
            inputs = tf.transpose(one_hot, [1, 0, 2])
        else:  # time, batch, 1
            inputs = tf.transpose(tf.cast(symbols, tf.float32))[..., None]
        per_cell = self.per_cell

        def body(t, outputs, states):
            hidden, new_states = inputs[t], []
            for index, cell in enumerate(self.cells):
                own = states[index * per_cell : (index + 1) * per_cell]
                hidden, carried = cell(hidden, own, training=False)
                new_states += carried
            return t + 1, outputs.write(t, hidden), new_states

        # One spare element, written now, so that even 0 steps stack to a known shape.
        spare = tf.zeros(tf.stack([tf.shape(symbols)[0], self.units]))
        outputs = tf.TensorArray(tf.float32, size=steps + 1).write(steps, spare)
        _, outputs, states = tf.while_loop(
            lambda t, *_: t < length, body, (tf.constant(0), outputs, list(states))
        )
        hidden = tf.transpose(outputs.stack()[:steps], [1, 0, 2])  # batch, time, units
        return tf.nn.softmax(self.head(hidden), axis=-1), states

    def runner(self, padded: int) -> Callable:
        """The compiled step for batch 1, `padded` steps and a run length (compiled once)."""
        if padded not in self.runners:
            self.runners[padded] = self._compiled.get_concrete_function(
                tf.TensorSpec((1, padded), tf.int32),
                [tf.TensorSpec((1, self.units), tf.float32)] * (len(self.cells) * self.per_cell),
                tf.TensorSpec((), tf.int32),
            )
        return self.runners[padded]


class Engines:
    """The engines no StreamModel holds, up to KEPT_ENGINES, by architecture; each lent to
    one StreamModel at a time (see the module)."""

    def __init__(self):
        self._idle: OrderedDict[str, list[Engine]] = OrderedDict()
        self._lock = threading.RLock()  # a collection may give back inside `lend`
        self.built = 0  # engines made in this process (each compiles its own step)

    def lend(self, owner, config: TrainConfig, sources: list) -> Engine:
        """An engine for `owner` (a StreamModel) with the weights of `sources`, the trained
        cells bottom first and the Dense head; given back when `owner` is collected.
        ValueError: weights of other shapes than `config` says."""
        layers = [
            (type(s), {**s.get_config(), "dropout": 0.0, "recurrent_dropout": 0.0})
            for s in sources[:-1]
        ]
        layers.append((keras.layers.Dense, sources[-1].get_config()))
        key = architecture(config, layers)
        with self._lock:
            idle = self._idle.get(key)
            engine = idle.pop() if idle else None
            if idle is not None and not idle:
                del self._idle[key]
        if engine is None:
            engine = Engine(config, layers)
            self.built += 1
        engine.load(sources)  # a ValueError here: the engine, half loaded, is dropped
        finalizer = weakref.finalize(owner, self._give_back, key, engine)
        finalizer.atexit = False
        return engine

    def _give_back(self, key: str, engine: Engine) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(engine)
            self._idle.move_to_end(key)
            while sum(map(len, self._idle.values())) > KEPT_ENGINES:
                oldest = next(iter(self._idle))
                self._idle[oldest].pop(0)
                if not self._idle[oldest]:
                    del self._idle[oldest]


def architecture(config: TrainConfig, layers: list) -> str:
    """What makes two models' engines interchangeable: every layer's kind and settings but
    its name and seed, and the input's width."""
    settings = [
        (kind.__name__, {k: v for k, v in options.items() if k not in ("name", "seed")})
        for kind, options in layers
    ]
    return json.dumps(
        [config.input_width, config.num_classes, settings], sort_keys=True, default=repr
    )


ENGINES = Engines()
