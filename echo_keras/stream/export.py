"""Export the stream model as a TensorFlow SavedModel a server can run: the state explicit.

A SavedModel never holds RNN state, and TF Serving has no stateful models. So the
export is the stateless step of `stream/model.py` itself: its `serving_default`
signature takes `symbols` (int32, batch x time) and one float32 (batch x units)
tensor per state of every layer (`lstm_0_h`, `lstm_0_c`, ...; zeros start a
stream), and returns `probabilities` (batch x time x classes) and the new states
under the same names. A client feeds every output but `probabilities` back under
its own name; a server keeps one state per stream. Batch size and chunk length are free.
The signature refuses nonsense with an InvalidArgumentError instead of answering it: a
symbol outside 0..K-1, a state that is not finite, or states of another batch size than
the symbols.

A run on its own data has its vocabulary written beside the SavedModel, as
`vocabulary.json` (`{"kind": "text" | "ints", "symbols": [...]}`, symbol id = index),
so that a client can encode text into `symbols` and decode the probabilities.

The export is written to a staging folder beside the target, reloaded with
`tf.saved_model.load` alone, checked chunk by chunk against `predict`, and only then
renamed into place; a lock beside the target keeps a second export to it out while one
runs, and lets the next export delete what killed ones left (`export_folder.py`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_keras.backend import graph_function, tf
from echo_keras.errors import (
    ConfigError,
    ExportError,
    Interrupted,
    RunBusy,
    UsageError,
    write_reason,
)
from echo_keras.paths import as_path
from echo_keras.run.folder import RunFolder
from echo_keras.signals import SignalCatcher, Signalled, raise_signalled
from echo_keras.stream import export_folder
from echo_keras.stream.model import StreamModel, load_stream_model
from echo_keras.values import check_seed

SIGNATURE = "serving_default"
VOCABULARY = "vocabulary.json"  # beside saved_model.pb, for a run on its own data
TOLERANCE = 1e-5
CHECK_CHUNKS = (1, 7, 0, 64, 3, 200, 1, 500)  # chunk lengths of the check stream, in order


@dataclass(frozen=True)
class ExportReport:
    """What `export_saved_model` wrote: the folder, the signature's states, and the check."""

    out: Path
    state_names: tuple[str, ...]
    units: int
    num_classes: int
    checked_symbols: int
    max_difference: float
    vocabulary: Path | None = None  # vocabulary.json in the export (a run on its own data)

    def describe(self) -> str:
        states = ", ".join(self.state_names)
        return "\n".join(
            [
                f"Exported a SavedModel to {self.out} ({SIGNATURE}: the state in and out)",
                f"  inputs   symbols int32 [batch, time]; {states} float32 [batch, {self.units}]"
                " (zeros start a stream)",
                f"  outputs  probabilities float32 [batch, time, {self.num_classes}]; {states}"
                " (feed them back)",
                f"  checked  reloaded with tf.saved_model.load: 2 streams of "
                f"{self.checked_symbols // 2} symbols in {len(CHECK_CHUNKS)} chunks are within "
                f"{self.max_difference:.1e} of predict",
            ]
            + (
                [f'  symbols  {self.vocabulary}: a symbol\'s id is its index in its "symbols"']
                if self.vocabulary is not None
                else []
            )
        )


def serving_module(model: StreamModel, checks: bool = True) -> tf.Module:
    """A tf.Module holding the model's layers and its step as a serving function.

    With `checks` (always, but for the bench that measures their cost), the function
    first asserts that its inputs make sense (`checked_inputs`).
    """
    names, units = model.names, model.units

    def serve(symbols, *states):
        if checks:
            symbols, states = checked_inputs(symbols, states, names, model.config.num_classes)
        probabilities, new_states = model.step(symbols, list(states))
        return {"probabilities": probabilities, **dict(zip(names, new_states, strict=True))}

    module = tf.Module()
    module.layers = [*model.cells, model.head]  # tracked: their weights are saved
    module.serve = graph_function(
        serve,
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="symbols"),
            *(tf.TensorSpec([None, units], tf.float32, name=name) for name in names),
        ],
    )
    return module


def checked_inputs(symbols, states, names, num_classes: int):
    """`symbols` and `states` passed through assertions a server reports as
    InvalidArgumentError: every symbol in 0..num_classes-1, every state finite and of the
    symbols' batch size. The values are untouched (identities), so the results are too."""
    batch = tf.shape(symbols)[0]
    checks = [
        tf.debugging.assert_non_negative(
            symbols, message=f"symbols must be in 0..{num_classes - 1}", summarize=5
        ),
        tf.debugging.assert_less(
            symbols, num_classes, message=f"symbols must be in 0..{num_classes - 1}", summarize=5
        ),
    ]
    for name, state in zip(names, states, strict=True):
        checks.append(
            tf.debugging.assert_equal(
                tf.shape(state)[0],
                batch,
                message=f"{name} must have one row per row of symbols (the same batch size)",
            )
        )
        checks.append(tf.debugging.assert_all_finite(state, f"{name} must be finite"))
    with tf.control_dependencies(checks):
        return tf.identity(symbols), [tf.identity(state) for state in states]


def export_saved_model(run_dir: Path | str, out: Path | str, seed: int = 0) -> ExportReport:
    """Export the run's model as a SavedModel with the state explicit, verified after reload.

    Args:
        run_dir: a trained run folder.
        out: a new or empty folder (in an existing one) for the SavedModel.
        seed: seed of the random streams the check runs (a whole number from 0).

    Returns:
        An `ExportReport`.

    Raises:
        ConfigError: `seed` is not a whole number from 0.
        UsageError: `out` cannot be an export folder (`export_folder.out_problem`).
        RunBusy: another export to `out` is running, or a training has begun in
            `run_dir` and not yet written its config.json.
        RunFolderError: the run has no usable model.
        ExportError: the folder could not be written (a full disk, no permission), or
            the reloaded SavedModel did not reproduce `predict`.
        Interrupted: SIGINT, SIGTERM or SIGHUP stopped the export.
        In every case `out` is left as it was, and no staging folder is left behind.

    Warns:
        EchoKerasWarning: the run is not complete, as `load_predictor` warns.
    """
    out, run_dir = as_path(out, "out"), as_path(run_dir, "run_dir")
    seed = check_seed(seed)
    if seed is None:
        raise ConfigError("seed", "must be a whole number from 0, got None")
    RunFolder(run_dir).read_config()  # a folder that holds no run is named as such first
    problem = export_folder.out_problem(out, run_dir)
    if problem:
        raise UsageError(f"out: {problem}")
    model = load_stream_model(run_dir)
    RunFolder(run_dir).warn_if_unfinished()  # after: a run with no model has its error
    try:  # SIGINT, SIGTERM or SIGHUP: the staging folder and the lock go on the way out
        with SignalCatcher(on_signal=raise_signalled) as catcher:
            difference, checked = _locked_write(model, out, seed, catcher.raise_if_received)
            catcher.raise_if_received()  # one whose raise was lost in a finalizer
    except Signalled as stop:
        done = (out / "saved_model.pb").exists()  # renamed into place just before the signal
        what = f"the export in {out} is complete" if done else f"{out} is as it was"
        raise Interrupted(f"Interrupted ({stop}); {what}", stop.signum) from None
    return ExportReport(
        out=out,
        state_names=tuple(model.names),
        units=model.units,
        num_classes=model.config.num_classes,
        checked_symbols=checked,
        max_difference=difference,
        vocabulary=None if model.vocabulary is None else out / VOCABULARY,
    )


def _locked_write(
    model: StreamModel, out: Path, seed: int, check_signals: Callable[[], None]
) -> tuple[float, int]:
    """`_write` with the lock on `out` held; RunBusy if another export holds it."""
    lock = export_folder.lock(out)
    try:
        if not lock.acquire(stamp=True):
            raise RunBusy(
                f"another export (pid {lock.holder() or 'unknown'}) is writing {out}; "
                "wait for it to finish"
            )
    except OSError as error:
        raise _cannot_write(out, error) from None
    try:
        export_folder.remove_dead_staging(out)
        return _write(model, out, seed, check_signals)
    finally:
        lock.release()


def _write(
    model: StreamModel, out: Path, seed: int, check_signals: Callable[[], None]
) -> tuple[float, int]:
    """Save, verify and rename the export into place (the lock held); (difference, checked).
    `check_signals` raises for a signal that came meanwhile, before the rename. The staging
    folder is removed whatever happens."""
    try:
        staging = export_folder.new_staging(out)
    except OSError as error:
        raise _cannot_write(out, error) from None
    try:
        module = serving_module(model)
        try:
            with _quiet_logs("tensorflow", "absl"):  # their INFO lines are not the user's
                tf.saved_model.save(
                    module,
                    str(staging),
                    signatures={SIGNATURE: module.serve.get_concrete_function()},
                )
            if model.vocabulary is not None:
                vocabulary = json.dumps(model.vocabulary.to_json(), ensure_ascii=False)
                (staging / VOCABULARY).write_text(vocabulary + "\n", encoding="utf-8")
        except (OSError, tf.errors.OpError) as error:
            raise _cannot_write(out, error) from None
        result = verify(staging, model, seed)
        check_signals()  # one whose raise was lost in a finalizer: nothing is renamed
        try:
            if out.exists():
                out.rmdir()  # an empty folder (the CLI refuses any other): replaced by the export
            staging.rename(out)
        except OSError as error:
            raise _cannot_write(out, error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _cannot_write(out: Path, error: Exception) -> ExportError:
    """ExportError for a write that failed, in one line (`write_reason`): a full disk, or a
    quota, said in plain words."""
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or isinstance(
        error, tf.errors.ResourceExhaustedError
    )
    if full or "No space left on device" in str(error):
        reason = "no space left on device"
    else:
        reason = write_reason(error)
    return ExportError(f"cannot write {out}: {reason}; nothing was written")


@contextlib.contextmanager
def _quiet_logs(*names: str):
    """Raise these Python loggers to WARNING for the block, then put their levels back."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def verify(path: Path, model: StreamModel, seed: int = 0) -> tuple[float, int]:
    """Reload the SavedModel with TensorFlow alone and stream two random series through it
    at once (batch 2), in chunks, feeding the states back; compare with `model.run` over
    each whole series.

    Returns (largest difference of a probability, symbols checked); ExportError if
    the difference passes TOLERANCE or the signature is not the one described.
    """
    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    inputs = set(serve.structured_input_signature[1])
    outputs = set(serve.structured_outputs)
    if inputs != {"symbols", *model.names} or outputs != {"probabilities", *model.names}:
        raise ExportError(
            f"the exported signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    rng = np.random.default_rng(seed)
    streams = rng.integers(0, model.config.num_classes, (2, sum(CHECK_CHUNKS)), dtype=np.int32)
    if model.vocabulary is None:
        expected = np.stack([model.run(row, model.zero_state())[0] for row in streams])
    else:
        # A run on its own data has sharper models (one-hot input, larger states) that carry
        # the last-bit rounding of predict's XLA program far over random streams (2e-4 is
        # seen; 2e-7 over the text they learned): they are compared with predict's step
        # run without XLA, the very operations the SavedModel holds.
        zeros = [tf.constant(s) for s in model.zero_state(batch=2)]
        step = graph_function(model.step)
        expected = step(tf.constant(streams), zeros)[0].numpy()
    states = dict(zip(model.names, model.zero_state(batch=2), strict=True))
    pieces, start = [], 0
    for length in CHECK_CHUNKS:
        result = serve(symbols=tf.constant(streams[:, start : start + length]), **states)
        pieces.append(result.pop("probabilities").numpy())
        states = result
        start += length
    difference = float(np.max(np.abs(np.concatenate(pieces, axis=1) - expected)))
    if not difference <= TOLERANCE:
        raise ExportError(
            f"the reloaded SavedModel differs from predict by {difference:.2e} "
            f"(more than {TOLERANCE:g}); nothing was written"
        )
    return difference, streams.size
