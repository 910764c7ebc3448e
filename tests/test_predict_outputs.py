"""`predict --state-out` and `export --out` never replace what they should not; write failures,
a half-read stdin, odd arguments and zero-length chunks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_helpers import error_exit as one_line_error
from tests.cli_helpers import invoke
from tests.stream_runs import trained

ECHO_KERAS = [sys.executable, "-m", "echo_keras"]


@pytest.fixture(scope="module")
def run_dir():
    return trained("lstm")


def test_state_out_refuses_devices_fifos_and_the_run_folder(run_dir, tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    targets = [fifo, run_dir / "model.keras", run_dir / "new-state.npz"]
    if os.geteuid() == 0:  # a device node of our own, never the system's /dev/null
        device = tmp_path / "null.npz"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append(device)
    model = (run_dir / "model.keras").read_bytes()
    for target in targets:
        before = os.lstat(target) if os.path.lexists(target) else None
        result = invoke("predict", "--run-dir", run_dir, "0110", "--state-out", target)
        one_line_error(result, 2, "--state-out")
        after = os.lstat(target) if os.path.lexists(target) else None
        assert (before and (before.st_ino, before.st_mode)) == (
            after and (after.st_ino, after.st_mode)
        )
    assert (run_dir / "model.keras").read_bytes() == model


def test_state_out_refuses_the_input_file_and_a_file_that_is_not_a_state(run_dir, tmp_path):
    symbols = tmp_path / "in.txt"
    symbols.write_text("0110\n")
    same = invoke("predict", "--run-dir", run_dir, "--input", symbols, "--state-out", symbols)
    one_line_error(same, 2, "--input")
    notes = tmp_path / "notes.npz"
    notes.write_text("my notes")
    other = invoke("predict", "--run-dir", run_dir, "0110", "--state-out", notes)
    one_line_error(other, 2, "not a state file")
    assert symbols.read_text() == "0110\n" and notes.read_text() == "my notes"


def test_state_out_writes_through_a_symlink_and_may_replace_its_own_state(run_dir, tmp_path):
    state, link = tmp_path / "state.npz", tmp_path / "link.npz"
    assert invoke("predict", "--run-dir", run_dir, "0110", "--state-out", state).exit_code == 0
    link.symlink_to(state)
    again = invoke("predict", "--run-dir", run_dir, "1", "--state-in", link, "--state-out", link)
    assert again.exit_code == 0, again.output
    assert link.is_symlink() and state.is_file()


def test_a_state_file_that_overflows_float32_is_damaged(run_dir, tmp_path):
    from tests.stream_runs import stream_model

    model = stream_model("lstm")
    path = tmp_path / "big.npz"
    np.savez(path, **{name: np.full((1, model.units), 1e300) for name in model.names})
    result = invoke("predict", "--run-dir", run_dir, "0110", "--state-in", path)
    one_line_error(result, 1, "is damaged", "not finite")


def test_a_write_failure_is_named_as_such_and_saves_no_state(run_dir, tmp_path):
    state = tmp_path / "state.npz"
    command = [*ECHO_KERAS, "predict", "--run-dir", str(run_dir), "0110", "--state-out", str(state)]
    for extra in ([], ["--json"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [*command, *extra], stdout=full, stderr=subprocess.PIPE, text=True
            )
        assert done.returncode == 1, done.stderr
        assert "cannot write the predictions" in done.stderr and "Traceback" not in done.stderr
        assert not state.exists()


def test_a_redirected_stdin_is_read_from_where_it_stands(run_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("header line\n0110\n")
    with open(source, "rb", buffering=0) as stdin:
        stdin.read(len("header line\n"))  # the shell's `read` took the first line
        done = subprocess.run(
            [*ECHO_KERAS, "predict", "--run-dir", str(run_dir)],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 4


def test_a_non_utf8_argument_is_a_bad_symbol(run_dir):
    done = subprocess.run(
        [*ECHO_KERAS, "predict", "--run-dir", str(run_dir), os.fsdecode(b"\xff01")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr


def test_export_refuses_odd_out_paths(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    link = tmp_path / "link"
    link.symlink_to(empty)
    for out, fragment in [
        (link, "symlink"),
        (run_dir / "export", "inside the run folder"),
        (tmp_path / "nowhere" / "export", "does not exist"),
    ]:
        result = invoke("export", "--run-dir", run_dir, "--out", out)
        one_line_error(result, 2, "--out", fragment)
    assert not (run_dir / "export").exists()


def test_the_export_takes_chunks_of_length_zero(run_dir, tmp_path):
    import tensorflow as tf

    from tests.stream_runs import stream_model

    out = tmp_path / "export"
    assert invoke("export", "--run-dir", run_dir, "--out", out).exit_code == 0
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    model = stream_model("lstm")
    states = {name: tf.zeros((3, model.units)) for name in model.names}
    result = serve(symbols=tf.zeros((3, 0), tf.int32), **states)
    assert tuple(result["probabilities"].shape) == (3, 0, model.config.num_classes)
    for name in model.names:
        np.testing.assert_array_equal(result[name].numpy(), 0.0)
