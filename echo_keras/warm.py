"""Compiled models kept warm in this process, one per shape, for `train` and the sweep.

Tracing and compiling a small model's training loop takes about a second: far longer than
training it for a few epochs. A process that trains many runs of one shape (a notebook, a
script's loop, a sweep's worker) pays it once. A `WarmModel` is a compiled model of one shape
(`shape_key`: every setting but the seed, the echo step and the epochs) with the loops
compiled for it; `start_afresh` gives it exactly the start of a model freshly built under
another run's seed: its weights and random generators, its optimizer as new, its state zeroed.

`fresh_model(config)` lends `train` the warm model of config's shape, or builds it. Every
warm model is kept while their variables take no more than `KEPT_BYTES` (the least recently
used given up first): what TensorFlow compiled for a model's loops stays for the life of the
process whether the model is kept or not (about 5 MB a shape), so giving up a small model
frees almost nothing, and its shape trained again would compile, and keep, all that again.
While lent, a model is no one else's: a second training of the same shape at the same time
(another thread) gets a model of its own. `holding(config, trained)` lends `evaluate` one
the same way, kept apart, that holds a trained run's weights: for the same reason, a loop
traced per evaluation would grow a notebook's memory by about 1 MB a call.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from echo_keras import model as model_lib
from echo_keras.backend import keras
from echo_keras.config import TrainConfig, shape_key
from echo_keras.fitting import build_compiled_model

KEPT_BYTES = 256 * 2**20  # the variables (weights, optimizer slots) of the warm models kept


class WarmModel:
    """A compiled model of one shape, the loops compiled for it, and its optimizer's start
    (with `trains`; else a trained model as a run folder gives it, with no optimizer)."""

    def __init__(self, model: keras.Model, trains: bool = True):
        self.model = model
        self.optimizer_start = None
        if trains:
            optimizer = model.optimizer
            if not optimizer.built:  # as a training loop builds it, before its first step
                optimizer.build(model.trainable_variables)
            self.optimizer_start = [variable.numpy() for variable in optimizer.variables]
        self._loops: dict[tuple, object] = {}
        variables = [*model.variables, *(model.optimizer.variables if trains else [])]
        self.bytes = sum(
            int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
            for variable in variables
        )

    def loop(self, kind, *args, **options):
        """`kind(model, *args, **options)` (a loop of `loops`), made once and kept."""
        key = (kind, args, tuple(sorted(options.items())))
        if key not in self._loops:
            self._loops[key] = kind(self.model, *args, **options)
        return self._loops[key]

    def start_afresh(self, variables: list[np.ndarray]) -> None:
        """The model's variables (weights and random generators' state) set to `variables`,
        those of a model built afresh; its optimizer as new; its state zeroed."""
        for variable, value in zip(self.model.variables, variables, strict=True):
            variable.assign(value)
        optimizer = self.model.optimizer
        for variable, value in zip(optimizer.variables, self.optimizer_start, strict=True):
            variable.assign(value)
        model_lib.reset_states(self.model)


_kept: OrderedDict[tuple, WarmModel] = OrderedDict()
_lock = threading.Lock()


@contextlib.contextmanager
def fresh_model(config: TrainConfig) -> Iterator[WarmModel]:
    """A warm model started exactly as `build_compiled_model(config)` would build it (its
    weights and dropout seeds those `config.seed` draws), lent for the block and kept
    afterwards for the next training of its shape."""
    built = build_compiled_model(config)  # the very start a fresh run has
    key = shape_key(config)
    with _lock:
        warm = _kept.pop(key, None)
    if warm is None:
        warm = WarmModel(built)
    else:
        warm.start_afresh([variable.numpy() for variable in built.variables])
    try:
        yield warm
    finally:
        _keep(key, warm)


@contextlib.contextmanager
def holding(config: TrainConfig, trained: keras.Model) -> Iterator[WarmModel]:
    """A warm model of config's shape that holds the weights of `trained` (that shape's model,
    as a run folder gives it), its state zeroed: lent for the block and kept afterwards, so a
    process that evaluates again and again (a notebook) traces its loops once, and keeps
    no more of what TensorFlow compiled for them. The first is `trained` itself."""
    key = ("inference", shape_key(config))
    with _lock:
        warm = _kept.pop(key, None)
    if warm is None:
        warm = WarmModel(trained, trains=False)
    else:
        for layer in warm.model.layers:
            if layer.weights:
                layer.set_weights(trained.get_layer(layer.name).get_weights())
    model_lib.reset_states(warm.model)
    try:
        yield warm
    finally:
        _keep(key, warm)


def _keep(key: tuple, warm: WarmModel) -> None:
    with _lock:
        _kept[key] = warm
        while len(_kept) > 1 and sum(kept.bytes for kept in _kept.values()) > KEPT_BYTES:
            _kept.popitem(last=False)


def clear() -> None:
    """Give up every warm model (the next training of each shape compiles again)."""
    with _lock:
        _kept.clear()
