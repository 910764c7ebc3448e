"""How TensorFlow's import treats Python's garbage collector, in a process of our own or not.

Importing TensorFlow and Keras makes a few hundred thousand objects that live as long as
the process, and the collector would walk them again and again: during the import, and in
every full collection after it. `backend` therefore imports TensorFlow with the collector
off (it is then back as it was), and, in a process of echo-keras's own, freezes what the
import made (`gc.freeze`), so that no collection walks it again: about 0.4 s of a short
command's 3 s. The command line and a sweep's worker call `own_process()` before
TensorFlow is imported; a user's script or notebook, whose objects `gc.freeze` would freeze
too, does not. In a process of our own, too, `train` runs a small model's ops on one thread
each (`backend.use_one_intra_op_thread`): a setting of the whole process, which a user's own
process keeps as the user left it.
"""

from __future__ import annotations

_own = False


def own_process() -> None:
    """Mark this process as echo-keras's own (the command line, a sweep's worker)."""
    global _own
    _own = True


def is_own_process() -> bool:
    return _own
