"""The tests' warm `echo-keras` (tests/zygote.py) stands in for the real command: the same
output and exit status, signals passed on, and nothing left running when its relay dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests import zygote
from tests.helpers import ECHO_KERAS, REAL_ECHO_KERAS, start, wait_for


def _ran(argv, **options):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **options)
    return done.returncode, done.stdout, done.stderr


def _forked_children() -> list[int]:
    """The commands this test process's warm server is running now: the processes whose
    command line (the server's, forked) names its socket, and whose parent's does too."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if os.environ[zygote.ZYGOTE_ENV].encode() not in cmdline.read():
                    continue
            with open(f"/proc/{entry}/stat") as stat:
                found[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    return [pid for pid, parent in found.items() if parent in found]


def _arrays(path) -> dict:
    return dict(np.load(path)) if path.exists() else {}


def _server_listening() -> None:
    """Wait for the warm server, in a test process that has loaded echo-keras's TensorFlow
    itself (as most have by then: its import sets variables in the environment)."""
    import echo_keras.backend  # noqa: F401

    deadline = time.monotonic() + 120  # the conftest starts it with the session
    while not os.path.exists(os.environ[zygote.ZYGOTE_ENV]):
        assert time.monotonic() < deadline, "the warm server never listened"
        time.sleep(0.1)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_a_forked_command_prints_and_exits_as_the_real_one(tiny_run, tmp_path):
    _server_listening()
    state = tmp_path / "state.npz"
    for args, text in (
        (["predict", "--run-dir", tiny_run, "--json", "--state-out", state], "0110 1\n"),
        (["predict", "--run-dir", tiny_run, "01x"], None),
        (["evaluate", "--run-dir", tmp_path / "none"], None),
        (["train", "--window", "0"], None),
    ):
        argv = [str(arg) for arg in args]
        forked, saved = _ran([*ECHO_KERAS, *argv], input=text), _arrays(state)
        state.unlink(missing_ok=True)
        assert forked == _ran([*REAL_ECHO_KERAS, *argv], input=text), argv
        real = _arrays(state)
        state.unlink(missing_ok=True)
        assert saved.keys() == real.keys()
        assert all(np.array_equal(saved[name], real[name]) for name in real)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_a_signal_reaches_the_fork_and_a_killed_relay_takes_it_along(tmp_path):
    _server_listening()
    long = ["--epochs", "400", "--series-length", "150000", "--quiet"]
    process = start(tmp_path / "a", *long)
    wait_for(tmp_path / "a" / "status.json", process)
    assert len(_forked_children()) >= 1
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.startswith("Error: Interrupted (SIGTERM)"), err
    process = start(tmp_path / "b", *long)
    wait_for(tmp_path / "b" / "status.json", process)
    children = _forked_children()
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while set(children) & set(_forked_children()):
        assert time.monotonic() < deadline, "the fork outlived its killed relay"
        time.sleep(0.01)
