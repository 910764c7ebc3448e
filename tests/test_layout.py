"""The house plan: every module has its place in one order, and imports only what lies below it.

The order below is the architecture, lowest first. A module may import (at its top or
inside a function) only modules listed before it, so there is no import circle and
nothing runs back up. The TensorFlow-free layer must stay free of TensorFlow, Keras and
Ray even through the modules it imports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "echo_keras"

# Lowest first. Each line is one layer of the plan.
ORDER = [
    "errors", "signals",  # the error table; signal catching
    "startup",  # whether this process is ours: TensorFlow's import then frozen for the collector
    "positions",  # the line and column of a text read in pieces, for messages
    "paths",  # a path the caller names: checked, and placed relative to a folder
    "values",  # a seed, a switch, a temperature checked; a number as messages show it
    "config",  # TrainConfig and its validation
    "memory",  # whether a configuration fits in memory
    "options",  # the table of options: field, flag, help, sweep role
    "data",  # the echo series and the stateful window layout
    "vocabulary",  # a run's symbols, and text or integers turned into their ids
    "corpus",  # a user's own sequence: its file, symbols and vocabulary
    "run.fileio", "run.lock", "run.files", "run.arrays", "run.folder",  # the run folder
    "stream.symbols",  # parsing and laying out symbol text
    "stream.documents",  # a stream split into documents as training splits a file
    "stream.text",  # a data run's text or integers through its vocabulary, and their output
    "stream.export_folder",  # where an export may go; its lock and staging folders
    "plots.data_figure",  # the figure of a run on its own data
    "plots.figure", "plots.drawing",  # the tutorial's figure, the live plot's drawing process
    "sweep.grid", "sweep.results", "sweep.heatmap",  # the sweep's grid, files and map
    # --- TensorFlow from here on ---
    "backend",  # Keras pinned to TensorFlow
    "model",  # build, compile, load, checkpoint, a run's model
    "loops", "callbacks", "tensorboard", "plots.live", "fitting",
    "warm",  # compiled models kept per shape in this process, for train and the sweep
    "stream.engine",  # the batch-1 step's layers, compiled once per architecture in use
    "stream.model", "stream.generate",  # the batch-1 step; sampling (a data run's sample)
    "resuming", "training", "data_evaluation", "evaluation",
    "stream.state", "stream.predictor", "stream.export",
    "sweep.point",  # a sweep point trained in memory, compiled once per shape
    "sweep.cluster", "sweep.workers", "sweep.runner",  # Ray: the session, warm workers, the sweep
    # --- the command line ---
    "cli.stdio", "cli.common",
    "cli.train", "cli.evaluate", "cli.plot", "cli.predict", "cli.export", "cli.sweep",
    "cli.app",
    "cli.launch",
    "__main__",
]  # fmt: skip
TENSORFLOW_FREE = ORDER[: ORDER.index("backend")] + [
    "cli.stdio",
    "cli.common",
    "cli.train",
    "cli.evaluate",
    "cli.plot",
    "cli.predict",
    "cli.export",
    "cli.sweep",
    "cli.app",
    "cli.launch",
]
HEAVY = ("tensorflow", "keras", "ray")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: path for name, path in found.items() if not name.endswith("__init__")}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The echo_keras modules `path` imports (relative to the package), anywhere in it."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("echo_k"):
            base = node.module.removeprefix("echo_keras").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in modules() else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("echo_keras."):
                    found.add(alias.name.removeprefix("echo_keras."))
    return {name for name in found if name}


def test_every_module_has_its_place_in_the_plan():
    assert sorted(modules()) == sorted(ORDER)


def test_the_readmes_plan_names_every_module():
    """The README's folder tree is how a newcomer finds a module: none may be missing."""
    readme = (PACKAGE.parent / "README.md").read_text()
    plan = readme[readme.index("echo_keras/\n  __init__.py") :]
    plan = plan[: plan.index("```")]
    entries = {}  # an entry's head ("config.py", "run/") -> its text, continued lines too
    for line in plan.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("   "):
            head = line.split()[0]
        entries[head] = entries.get(head, "") + line + "\n"
    top = "".join(text for head, text in entries.items() if head.endswith(".py"))

    def named(name: str) -> bool:
        folder, _, stem = name.rpartition(".")
        text = entries.get(f"{folder}/", "") if folder else top
        return re.search(rf"(?<![\w/]){stem}\.py\b", text) is not None

    missing = [name for name in modules() if not named(name)]
    assert not missing, f"add these to the README's plan: {missing}"


@pytest.mark.parametrize("name", ORDER)
def test_a_module_imports_only_what_lies_below_it(name):
    below = set(ORDER[: ORDER.index(name)])
    upward = imports(modules()[name]) - below
    assert not upward, f"{name} imports {sorted(upward)}, which lie at or above it"


def test_heavy_libraries_are_imported_only_where_the_plan_allows():
    for name in TENSORFLOW_FREE:
        tree = ast.parse(modules()[name].read_text())
        for node in tree.body:  # a command may import TensorFlow inside its function
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names]
                assert not [n for n in names if n.split(".")[0] in HEAVY], (name, names)
        top = imports(modules()[name], top_level_only=True)
        assert not top - set(TENSORFLOW_FREE), f"{name} imports {sorted(top)} at its top"


def test_importing_the_package_and_the_tensorflow_free_layer_loads_no_heavy_library():
    names = ", ".join(f"echo_keras.{name}" for name in TENSORFLOW_FREE)
    code = (
        f"import sys, echo_keras, {names}\n"
        "echo_keras.TrainConfig\n"
        f"loaded = {{'tensorflow', 'keras', 'ray'}} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_loading_tensorflow_leaves_out_matplotlib_yet_keras_can_still_draw_with_it(tmp_path):
    """Keras would import pyplot (0.8 s a command) for a function echo-keras never calls.
    In a user's process the collector is left as it was: on, nothing frozen."""
    code = (
        "import gc, sys, numpy as np\n"
        "import echo_keras.backend\n"
        "assert 'keras' in sys.modules and 'matplotlib' not in sys.modules\n"
        "assert gc.isenabled() and gc.get_freeze_count() == 0\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "from keras.src.visualization.plot_image_gallery import plot_image_gallery\n"
        f"plot_image_gallery(np.zeros((2, 8, 8, 3)), path={str(tmp_path / 'g.png')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)
    assert (tmp_path / "g.png").stat().st_size > 0


def test_in_a_process_of_our_own_tensorflows_import_is_frozen_for_the_collector():
    """The command line and a sweep's worker: what the import made is never walked again
    by the collector, which is left on or off as it was."""
    code = (
        "import gc\n"
        "from echo_keras import startup\n"
        "startup.own_process()\n"
        "gc.disable()\n"
        "import echo_keras.backend\n"
        "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
        "assert not gc.isenabled()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- the one table of options ---------------------------------------------------------------


def test_the_table_of_options_covers_every_config_field_once():
    import dataclasses

    from echo_keras.config import TrainConfig
    from echo_keras.options import OPTIONS

    derived = {"data_windows"}  # set from the data once it is read, never by a flag
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in derived]
    assert sorted(OPTIONS) == sorted(fields)
    flags = [option.flag for option in OPTIONS.values()]
    assert len(set(flags)) == len(flags)


def test_train_and_sweep_declare_their_settings_from_the_table():
    import inspect

    from echo_keras.cli import sweep, train
    from echo_keras.options import AXES, OPTIONS, SETTINGS

    def declared(command):
        found = {}
        for name, parameter in inspect.signature(command).parameters.items():
            decls = getattr(parameter.default, "param_decls", ()) or ()
            if name in OPTIONS:
                found[name] = decls
        return found

    assert {name: (OPTIONS[name].flag,) for name in OPTIONS} == declared(train.train)
    assert set(declared(sweep.sweep)) == set(AXES) | set(SETTINGS)
    assert all(decls == (OPTIONS[name].flag,) for name, decls in declared(sweep.sweep).items())
    assert AXES == ("echo_step", "truncated_backprop_length", "state_size", "cell")


def test_messages_in_the_librarys_terms_are_worded_with_flags_for_the_command_line():
    from echo_keras.options import as_flags

    assert as_flags("`state_size` 4, `num_layers` 1") == "--state-size 4, --layers 1"
    assert as_flags("pass `overwrite=True` or `resume=True`") == "pass --overwrite or --resume"
    assert as_flags("`seeds`; `unknown` stays") == "--seeds; `unknown` stays"
