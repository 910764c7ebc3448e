"""What the tests share: the tiny configuration, invoking the CLI and checking its one-line
errors, training in a child process, and comparing streamed probabilities.

Trained runs shared by many tests are fixtures in conftest.py (trained once per session).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from echo_keras.cli.app import app
from echo_keras.config import TrainConfig
from echo_keras.run import files

# The thread pools the suite gives TensorFlow in its workers and every process they start
# (conftest): one thread each, as two workers share two cores.
THREADS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")

# 30 windows of 5 x 10 per epoch: trains in a second or two once TensorFlow is loaded.
TINY = TrainConfig(
    num_epochs=2,
    total_series_length=1500,
    truncated_backprop_length=10,
    batch_size=5,
    state_size=4,
)
# The same configuration as the command line spells it (batch size and state size: defaults).
TINY_FLAGS = ["--epochs", "2", "--series-length", "1500", "--window", "10", "--quiet"]
# Long enough to be stopped after its first checkpoint: 200 windows an epoch.
LONG_FLAGS = ["--epochs", "40", "--series-length", "15000", "--quiet"]
# Tiny runs of every variant, for predict and export (the "lstm" one is TINY itself).
VARIANTS = {
    "lstm": {},
    "gru": {"cell": "gru"},
    "simple": {"cell": "simple"},
    "layers2": {"num_layers": 2},
    "classes3": {"num_classes": 3},
    "dropout": {"dropout": 0.1},
    "classes12": {"num_classes": 12},  # more than ten: symbols are whitespace-separated
}
# `python -m echo_keras` in a child process: a fork of a process that has loaded TensorFlow
# already (tests/zygote.py; it runs the command for real where a fork cannot stand in).
ECHO_KERAS = [sys.executable, str(Path(__file__).with_name("zygote.py")), "run"]
# The real thing, for a test of how the command starts, or one that kills it with SIGKILL.
REAL_ECHO_KERAS = [sys.executable, "-m", "echo_keras"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


# --- the command line in this process ------------------------------------------------------


def invoke(*args, input=None, env=None):
    """Run `echo-keras ARGS` in this process (every argument as text)."""
    return runner.invoke(app, [str(arg) for arg in args], input=input, env=env)


def predict_json(run_dir, *args, input=None) -> dict:
    """`echo-keras predict --json --probabilities ARGS` run in this process: its output."""
    result = invoke(
        "predict", "--run-dir", run_dir, "--json", "--probabilities", *args, input=input
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result, *fragments, code: int | None = None) -> str:
    """The command failed with exactly one line, `Error: ...`, holding every fragment (and,
    when `code` is given, with that exit status); that line."""
    if code is not None:
        assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- the command line in a child process ---------------------------------------------------


def start(run_dir, *flags, command="train", preexec_fn=None, real=False):
    """`echo-keras COMMAND --run-dir RUN_DIR FLAGS` in a child process, its output piped
    (`preexec_fn` runs in the child first: to ignore a signal, as `nohup` does, say; `real`:
    the command for real, not a fork, as a test that kills it with SIGKILL or reads its pid
    needs)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command_line = REAL_ECHO_KERAS if real else ECHO_KERAS
    argv = [*command_line, command, "--run-dir", str(run_dir), *map(str, flags)]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )


def checkpoint_of(run_dir):
    return run_dir / files.CHECKPOINT / files.CHECKPOINT_STATE


def wait_for(path, process, timeout=120):
    """Wait until `path` exists, failing if `process` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def signal_after_first_checkpoint(process, run_dir, signum):
    """Send `signum` once the first epoch is checkpointed; (stdout, stderr) once it ends."""
    wait_for(checkpoint_of(run_dir), process)
    process.send_signal(signum)
    return process.communicate(timeout=120)


def signal_mask(pid: int, field: str) -> int:
    """A signal mask of a process: SigBlk (blocked) or SigCgt (caught by a handler)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    return 0


# The process reports its own peak memory (VmHWM): a child's ru_maxrss would count the
# pages it shared with this test process between fork and exec.
REPORT_PEAK = """
import sys
from echo_keras.cli.app import main
sys.argv = ["echo-keras", *sys.argv[1:]]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print("peak-kib", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


class SignalInFinalizer:
    """Sends `signum` to this process from its `__del__`, where Python runs the handler and
    cannot raise what it raises: as when the signal meets one of TensorFlow's finalizers."""

    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        sum(range(1000))  # the handler runs here, inside the finalizer


def run_process(*argv):
    """(exit status, seconds, peak memory in MiB, stderr) of an echo-keras process."""
    command = [sys.executable, "-c", REPORT_PEAK, *map(str, argv)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    *lines, peak = done.stderr.strip().splitlines()
    assert peak.startswith("peak-kib"), done.stderr
    return done.returncode, seconds, int(peak.split()[1]) / 1024, "\n".join(lines)


# --- files ---------------------------------------------------------------------------------


def rss_mib() -> float:
    """This process's resident memory, in MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of `size` mounted on `folder` for the block (skip the test if none can be),
    unmounted at the end, lazily if it is still busy."""
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
    except OSError:
        pytest.skip("no mount command")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@contextlib.contextmanager
def full_tmpfs(folder: Path):
    """A `small_tmpfs` filled up (by its file "filler"): a file written there meets a full
    disk."""
    with small_tmpfs(folder, "16k") as small:
        with contextlib.suppress(OSError), open(small / "filler", "wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        yield small


def assert_unsaved_state_is_the_json_error(tmp_path, *argv) -> None:
    """`echo-keras ARGV --json --state-out S`, S on a full disk: stdout holds the error
    object alone (not a result printed for a state never saved), and nothing is left
    beside S."""
    with full_tmpfs(tmp_path / "small") as small:
        state = small / "state.npz"
        done = subprocess.run(
            [*ECHO_KERAS, *map(str, argv), "--json", "--state-out", str(state)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert json.loads(done.stdout) == {
            "error": f"cannot write {state}: No space left on device",
            "exit_status": 1,
        }
        assert sorted(p.name for p in small.iterdir()) == ["filler"]


def signal_at_batch(signum: int, at: int):
    """A Keras callback that sends `signum` to this process at the end of training's batch
    number `at` (counted from 1, over every epoch)."""
    from echo_keras.backend import keras

    class SignalAtBatch(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == at:
                os.kill(os.getpid(), signum)

    return SignalAtBatch()


def full_device(tmp_path):
    """A device that refuses every write with ENOSPC: a node of our own when we may make one."""
    if os.geteuid() != 0:
        return "/dev/full"
    device = tmp_path / "full"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return device


def png_size(path):
    """(width, height) of a PNG file; fails if it is not one."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- streams of symbols --------------------------------------------------------------------


def random_symbols(num_classes: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, length).astype(np.int32)


def as_text(symbols, num_classes: int) -> str:
    """Symbols as `predict` reads them: digits, or space-separated integers past ten classes."""
    if num_classes <= 10:
        return "".join(map(str, symbols))
    return " ".join(map(str, symbols))


def assert_same_stream(probabilities, expected, predictions=None, tolerance=1e-5):
    """Probabilities equal to `tolerance`; predictions equal wherever no near-tie could flip them.

    The compiled programs of different chunk lengths round differently in the last
    bit, so a class whose two top probabilities are within 2 * tolerance may go
    either way: those positions are left out of the class comparison.
    """
    probabilities, expected = np.asarray(probabilities), np.asarray(expected)
    assert probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tolerance)
    if predictions is not None:
        top2 = np.sort(expected, axis=-1)[..., -2:]
        clear = top2[..., 1] - top2[..., 0] > 2 * tolerance
        assert clear.mean() > 0.9  # the comparison is not vacuous
        np.testing.assert_array_equal(
            np.asarray(predictions)[clear], expected.argmax(axis=-1)[clear]
        )


def stop_at(epoch: int, batch: int | None):
    """A callback that stops training at `batch`'s end of `epoch`, or at the epoch's end."""
    import keras

    class Stop(keras.callbacks.Callback):
        current = None

        def on_epoch_begin(self, index, logs=None):
            self.current = index

        def on_train_batch_end(self, index, logs=None):
            if (self.current, index) == (epoch, batch):
                self.model.stop_training = True

        def on_epoch_end(self, index, logs=None):
            if batch is None and index == epoch:
                self.model.stop_training = True

    return Stop()
