"""Shared fixtures and how the suite runs on two cores.

Runs trained once per test session are shared by every test that reads them. Under
pytest-xdist each worker is a process of its own; the shared runs live in the folder the
workers have in common, and a file lock makes the first worker that needs a run train it while
the others wait for it. A test that changes a run works on a copy (`run_copy`). Long tests run
first, and tests marked xdist_group(NAME) run one after another in one worker.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

from echo_keras.config import TrainConfig
from tests import zygote
from tests.helpers import THREADS, TINY, VARIANTS

# --- running on two cores ------------------------------------------------------------------

# Tests marked xdist_group(NAME) must run in one worker, one after another (the sweep tests time
# their Ray and its signals one sweep at a time; the README test's sweeps run beside them, each
# local Ray in a folder of its own). pytest 9.2 no longer lets pytest-xdist 3.8 add the group to
# the node id, so `--dist loadgroup` silently spreads a group over the workers (pytest-xdist
# issue #1386).
# Until that is fixed, each worker writes the groups it collected to a file in a folder named
# by GROUPS_ENV, and the scheduler below reads them.
GROUPS_ENV = "ECHO_KERAS_TEST_GROUPS"
REAL_ENV = "ECHO_KERAS_TEST_REAL"  # set (to 1): every child command runs for real, unforked


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject.toml) means a worker a core, two at most: each worker loads
    TensorFlow, and the tests that time a process should not share a core with many others."""
    return min(2, os.cpu_count() or 1)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers share the cores: TensorFlow in each (and in the processes its tests start)
        # takes one thread per pool, as the sweep's tasks do, instead of both workers fighting
        # over every core. Set before any test imports TensorFlow.
        for name in THREADS:
            os.environ.setdefault(name, "1")
    worker = os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("dist", "no") == "no"
    if worker and not os.environ.get(REAL_ENV):
        _start_zygote(config)
    elif config.getoption("dist", "no") == "loadgroup":
        folder = tempfile.mkdtemp(prefix="echo-keras-test-groups-")
        os.environ[GROUPS_ENV] = folder  # the workers, started after this, inherit it
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
        config.add_cleanup(lambda: os.environ.pop(GROUPS_ENV, None))


def _start_zygote(config) -> None:
    """The warm `echo-keras` that the tests' child processes fork from (tests/zygote.py),
    started in the background: a command that comes before it listens runs for real."""
    folder = tempfile.mkdtemp(prefix="ekz-")  # short: a socket's path has 107 bytes at most
    server = zygote.Zygote(folder)
    os.environ[zygote.ZYGOTE_ENV] = server.path

    def stop():
        os.environ.pop(zygote.ZYGOTE_ENV, None)
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    config.add_cleanup(stop)


def _group(item) -> str | None:
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "_".join(sorted(names)) or None


def pytest_collection_modifyitems(config, items):
    """Long tests first: under xdist they start early, and none is left to run alone at the end.
    A worker also writes down the group of every test in one (see GROUPS_ENV)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    folder, worker = os.environ.get(GROUPS_ENV), os.environ.get("PYTEST_XDIST_WORKER")
    if folder and worker:
        groups = {item.nodeid: _group(item) for item in items if _group(item)}
        path = Path(folder) / f"{worker}.json"
        path.with_suffix(".tmp").write_text(json.dumps(groups))
        path.with_suffix(".tmp").replace(path)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`, with the groups the workers wrote down (see GROUPS_ENV)."""
    folder = os.environ.get(GROUPS_ENV)
    if not folder or config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class MarkedGroupScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected
                self.groups = {}
                for path in sorted(Path(folder).glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    return MarkedGroupScheduling(config, log)


# --- runs trained once per session ---------------------------------------------------------


class SharedFolders:
    """Folders made once per session, whichever worker asks first; each with a value."""

    def __init__(self, root):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, make):
        """(folder, value): `make(folder)` is called once per session; its value is kept."""
        folder, done = self.root / name, self.root / f"{name}.done"
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                value = make(folder)
                done.write_bytes(pickle.dumps(value))
            return folder, pickle.loads(done.read_bytes())

    def run(self, name: str, config: TrainConfig):
        """(run folder, TrainResult) of `config` trained once per session."""
        from echo_keras.training import train

        return self.get(name, lambda folder: train(config, folder))


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> SharedFolders:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    return SharedFolders(base / "shared")


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TINY


@pytest.fixture(scope="session")
def trained(shared):
    """`trained(variant)`: the run folder of a tiny run of `variant` (see VARIANTS)."""

    @functools.cache
    def trained(variant: str):
        config = dataclasses.replace(TINY, **VARIANTS[variant])
        return shared.run(f"tiny-{variant}", config)[0]

    return trained


@pytest.fixture(scope="session")
def tiny_run(trained):
    """A run folder trained on the tiny configuration: read it, never change it."""
    return trained("lstm")


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the tiny run, for a test to change or damage."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def stream_model(trained):
    """`stream_model(variant)`: the streaming model of `trained(variant)`, loaded once."""
    from echo_keras.stream.model import load_stream_model

    return functools.cache(lambda variant: load_stream_model(trained(variant)))


@pytest.fixture(scope="session")
def default_run(shared):
    """(run folder, TrainResult) of the tutorial's default configuration (a few seconds)."""
    return shared.run("default", TrainConfig())
