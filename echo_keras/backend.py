"""Pin Keras to the TensorFlow backend, then import it: the one way our modules get Keras.

Every module that needs Keras or TensorFlow imports them from here
(`from echo_keras.backend import keras, tf`), so the backend is always set first.

Keras 3.15's JAX trainer drops stateful-RNN state updates inside `fit` and
`predict`, so under JAX the state would silently never carry. A different
`KERAS_BACKEND` in the environment is therefore overridden, with a notice.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
import tempfile
import threading

from echo_keras.errors import WriteError
from echo_keras.startup import is_own_process

BACKEND = "tensorflow"


def use_tensorflow_backend(notify=None) -> None:
    """Set KERAS_BACKEND=tensorflow, telling `notify` (default: stderr) if it overrode another.

    Raises RuntimeError if Keras was already imported with another backend,
    since a backend cannot be changed after import.
    """
    requested = os.environ.get("KERAS_BACKEND")
    if requested and requested != BACKEND:
        message = (
            f"Notice: KERAS_BACKEND={requested} ignored; echo-keras needs the tensorflow "
            "backend (other backends drop the carried RNN state)."
        )
        (notify or (lambda m: print(m, file=sys.stderr)))(message)
    os.environ["KERAS_BACKEND"] = BACKEND
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's info logs
    if "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != BACKEND:
            raise RuntimeError(
                f"Keras was already imported with the {keras.backend.backend()} backend; "
                "echo-keras needs tensorflow. Import echo_keras before keras."
            )


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with native stderr silenced and the garbage collector off (frozen
    after, in a process of our own: see `startup`).

    Its C++ start-up writes lines (oneDNN, missing CUDA drivers) to stderr before
    its log level applies; they are noise on a CPU machine. Python errors still
    surface: they are raised after stderr is restored. The import draws from Python's
    `random`: the caller's draws go on as if it had not happened.
    """
    try:  # TensorFlow's import asks for one and fails with Python's bare error
        tempfile.gettempdir()
    except FileNotFoundError:
        raise WriteError(
            "no temporary folder can take a file (TMPDIR's, TEMP's or TMP's if set, /tmp, "
            "/var/tmp, /usr/tmp and the current folder are full or read-only), and "
            "TensorFlow needs one: free some space, or set TMPDIR to a folder that has it"
        ) from None
    sys.stderr.flush()
    kept = random.getstate()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    collecting = gc.isenabled()
    try:  # from the first moment stderr is silenced: a signal meanwhile still gets it back
        os.dup2(null, 2)
        gc.disable()  # the import makes objects that live as long as the process
        with _pyplot_on_demand():
            import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, once
        if is_own_process():
            gc.freeze()  # what the import made: no collection walks it again (see startup)
    finally:
        random.setstate(kept)
        if collecting:
            gc.enable()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def _pyplot_on_demand():
    """Import TensorFlow (and with it Keras) without matplotlib, then hand Keras a pyplot that
    is imported when first used.

    Keras imports matplotlib.pyplot at start-up for its `plot_image_gallery` alone: 0.8 s of
    every command's 3.7 s, for a function echo-keras never calls. Inside this block matplotlib
    cannot be imported (Keras then sets its `plt` to None); after it, matplotlib imports as
    ever, and Keras's `plt` becomes `_Pyplot`, so `plot_image_gallery` still works. Nothing is
    done when matplotlib is already imported: it costs nothing then.
    """
    if "matplotlib" in sys.modules:
        yield
        return
    blocked = ("matplotlib", "matplotlib.pyplot")
    for name in blocked:
        sys.modules[name] = None  # `import` raises ImportError for these names
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    gallery = sys.modules.get("keras.src.visualization.plot_image_gallery")
    if gallery is not None and getattr(gallery, "plt", False) is None:
        gallery.plt = _Pyplot()


class _Pyplot:
    """matplotlib.pyplot, imported at the first attribute read (see `_pyplot_on_demand`)."""

    def __getattr__(self, name):
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


use_tensorflow_backend()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def graph_function(python_function, **options):
    """`tf.function(python_function, **options)` without AutoGraph.

    Our compiled functions are graph code already: their loops are `tf.while_loop`s and
    their conditions are on Python values. AutoGraph would only rewrite their source (and
    every function they call) at each trace, about 0.3 s a function, for nothing.
    """
    function = tf.function(python_function, autograph=False, **options)
    # Each loop object (one per model: per evaluate, per predictor) traces its own
    # function once; TensorFlow counts the traces of every object's function together and
    # would warn of "retracing" after a notebook's fifth evaluate. Its own loaded
    # functions opt out the same way.
    function._omit_frequent_tracing_warning = True
    return function


def use_one_intra_op_thread() -> None:
    """Run each TensorFlow op on one thread, not spread over every core (TensorFlow's
    default); nothing once TensorFlow has started (its threads are set then).

    A small model's ops are too small to share: on two cores, its compiled training loop
    spends a quarter of its time handing work between threads and burns half again as
    much CPU (the tutorial's model: 20 epochs in about 3.5 s on one thread, 4.5 s on two).
    """
    with contextlib.suppress(RuntimeError):  # TensorFlow's runtime is up: its pools are made
        tf.config.threading.set_intra_op_parallelism_threads(1)


__all__ = ["graph_function", "keras", "tf", "use_one_intra_op_thread", "use_tensorflow_backend"]


# Keras draws the seeds of a new layer's initializers (and dropout) from Python's `random`,
# the process's: echo-keras builds and loads its layers one at a time, under this lock.
_BUILDING = threading.RLock()


@contextlib.contextmanager
def keras_building():
    """Hold while Keras makes layers (a build, a load): one at a time in the process, so that
    a build seeded for a run draws its seed's weights alone, even beside another thread's
    training; and the caller's `random` is left as it was, whatever Keras drew from it."""
    with _BUILDING:
        kept = random.getstate()
        try:
            yield
        finally:
            random.setstate(kept)
