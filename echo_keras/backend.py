"""Pin Keras to the TensorFlow backend, then import it: the one way our modules get Keras.

Every module that needs Keras or TensorFlow imports them from here
(`from echo_keras.backend import keras, tf`), so the backend is always set first.

Keras 3.15's JAX trainer drops stateful-RNN state updates inside `fit` and
`predict`, so under JAX the state would silently never carry. A different
`KERAS_BACKEND` in the environment is therefore overridden, with a notice.
"""

from __future__ import annotations

import os
import sys

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
    """Import TensorFlow with native stderr silenced.

    Its C++ start-up writes lines (oneDNN, missing CUDA drivers) to stderr before
    its log level applies; they are noise on a CPU machine. Python errors still
    surface: they are raised after stderr is restored.
    """
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


use_tensorflow_backend()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "use_tensorflow_backend"]
