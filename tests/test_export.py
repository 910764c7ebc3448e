"""`echo-keras export`: a stateless SavedModel with the state explicit, checked in a fresh
process that imports only TensorFlow, for every variant; refusals and odd --out paths leave
nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    SignalInFinalizer,
    invoke,
    one_line_error,
    random_symbols,
    small_tmpfs,
    start,
)

README = Path(__file__).resolve().parent.parent / "README.md"
# The tests that read every variant's export run in one xdist worker: the other need not wait
# while the first makes them.
ON_EXPORTS = pytest.mark.xdist_group("exports")

# Run in a fresh interpreter where Keras and echo_keras cannot even be imported: the export
# must stand on TensorFlow alone. It streams each case's symbols through its export chunk by
# chunk, feeding the states back by name, and saves the probabilities.
TF_ONLY_CLIENT = """
import json, sys
sys.modules["keras"] = None  # TensorFlow runs without it; any use of Keras would fail
sys.modules["echo_keras"] = None
import numpy as np
import tensorflow as tf

for case in json.load(open(sys.argv[1])):
    serve = tf.saved_model.load(case["export"]).signatures["serving_default"]
    names = [n for n in serve.structured_input_signature[1] if n != "symbols"]
    symbols = np.array(case["symbols"], np.int32)
    batch = symbols.shape[0]
    state = {n: tf.zeros((batch, serve.structured_input_signature[1][n].shape[1])) for n in names}
    pieces, start = [], 0
    for length in case["chunks"]:
        out = serve(symbols=tf.constant(symbols[:, start : start + length]), **state)
        pieces.append(out.pop("probabilities").numpy())
        state, start = out, start + length
    np.save(case["result"], np.concatenate(pieces, axis=1))
loaded = {m.split(".")[0] for m, module in sys.modules.items() if module is not None}
print("keras" in loaded, "echo_keras" in loaded)
"""


def export_through_the_command_line(run_dir, out):
    result = invoke("export", "--run-dir", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Exported a SavedModel to" in result.stdout and "of predict" in result.stdout


# The variants whose exports differ in kind: each cell, stacked layers (a state per layer),
# and more than ten classes. Dropout acts only in training and three classes are a case of
# twelve, so exporting those two again would only repeat work (about 7 s each).
EXPORTED = ("lstm", "gru", "simple", "layers2", "classes12")


@pytest.fixture(scope="session")
def exports(shared, trained):
    """Each variant of EXPORTED exported through the command line, once a session:
    {variant: folder}."""
    made = {}
    for variant in EXPORTED:
        run_dir = trained(variant)
        made[variant], _ = shared.get(
            f"export-{variant}",
            lambda out, run_dir=run_dir: export_through_the_command_line(run_dir, out),
        )
    return made


@ON_EXPORTS
def test_the_signature_names_every_state_of_every_layer(exports, stream_model):
    from echo_keras.backend import tf

    for variant, out in exports.items():
        model = stream_model(variant)
        serve = tf.saved_model.load(str(out)).signatures["serving_default"]
        inputs = serve.structured_input_signature[1]
        outputs = serve.structured_outputs
        assert set(inputs) == {"symbols", *model.names}
        assert set(outputs) == {"probabilities", *model.names}
        assert inputs["symbols"].dtype == tf.int32 and inputs["symbols"].shape.as_list() == [
            None,
            None,
        ]
        for name in model.names:
            assert inputs[name].dtype == tf.float32
            assert inputs[name].shape.as_list() == [None, model.units]
            assert outputs[name].shape.as_list() == [None, model.units]
        assert outputs["probabilities"].shape.as_list() == [None, None, model.config.num_classes]
    assert stream_model("layers2").names == ["lstm_0_h", "lstm_0_c", "lstm_1_h", "lstm_1_c"]
    assert stream_model("gru").names == ["gru_0_h"]
    assert stream_model("simple").names == ["simple_0_h"]


@ON_EXPORTS
def test_every_variant_streams_in_a_fresh_process_with_tensorflow_alone(
    exports, stream_model, tmp_path
):
    """Chunk by chunk, the state fed back by name, batch 1 and batch 3: the reloaded export
    reproduces predict's probabilities to 1e-5."""
    cases, expected = [], {}
    chunks = [1, 1, 9, 64, 2, 123, 300]
    for variant, out in exports.items():
        model = stream_model(variant)
        symbols = np.stack(
            [random_symbols(model.config.num_classes, sum(chunks), seed=s) for s in (10, 11, 12)]
        )
        for batch in (1, 3):
            result = tmp_path / f"{variant}-{batch}.npy"
            cases.append(
                {
                    "export": str(out),
                    "symbols": symbols[:batch].tolist(),
                    "chunks": chunks,
                    "result": str(result),
                }
            )
            expected[result] = np.stack(
                [model.run(row, model.zero_state())[0] for row in symbols[:batch]]
            )
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    out = subprocess.run(
        [sys.executable, "-c", TF_ONLY_CLIENT, spec], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "False"]  # neither Keras nor echo_keras was used
    for result, probabilities in expected.items():
        np.testing.assert_allclose(np.load(result), probabilities, rtol=0, atol=1e-5)


@ON_EXPORTS
def test_the_readme_snippet_streams_through_an_export(exports, tiny_run, tmp_path):
    text = README.read_text()
    section = text[text.index("### Export") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"runs/echo_export"' in snippet
    script = snippet.replace('"runs/echo_export"', repr(str(exports["lstm"])))
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['keras'] = None\n" + script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    chunks = re.findall(r"\[([\d, ]+)\]", snippet.split("for chunk in")[1].split(":")[0])
    symbols = "".join(c.replace(",", "").replace(" ", "") for c in chunks)
    predicted = "".join(re.findall(r"\d", out.stdout))
    result = invoke("predict", "--run-dir", tiny_run, "--json", symbols)
    assert predicted == "".join(map(str, json.loads(result.stdout)["predictions"]))


def test_refusals_exit_2_and_touch_nothing(tiny_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    for out, fragment in [
        (taken, "already exists"),
        (a_file, "already exists"),
        (tmp_path / "no" / "export", "does not exist"),
    ]:
        result = invoke("export", "--run-dir", tiny_run, "--out", out)
        one_line_error(result, "--out", fragment, code=2)
    assert (taken / "mine.txt").read_text() == "mine" and a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"]
    missing = invoke("export", "--run-dir", tmp_path / "nothing", "--out", tmp_path / "e")
    one_line_error(missing, "does not exist", code=1)
    # A folder that holds no run is named as such, not as a run folder --out lies in.
    not_run = invoke("export", "--run-dir", taken, "--out", taken / "e")
    one_line_error(not_run, "taken/config.json is missing", code=1)
    from echo_keras.errors import RunFolderError
    from echo_keras.stream.export import export_saved_model

    with pytest.raises(RunFolderError, match="config.json is missing"):
        export_saved_model(taken, taken / "e")
    predicted = invoke("predict", "--run-dir", taken, "01", "--state-out", taken / "s.npz")
    one_line_error(predicted, "taken/config.json is missing", code=1)


def test_a_damaged_run_or_a_failed_check_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "model.keras").write_bytes(b"\x00garbage" * 10)
    exports = tmp_path / "exports"
    exports.mkdir()
    result = invoke("export", "--run-dir", run_dir, "--out", exports / "e")
    one_line_error(result, "model.keras is damaged", code=1)
    assert list(exports.iterdir()) == []

    from echo_keras.stream import export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can pass: the check must fail
    result = invoke("export", "--run-dir", tiny_run, "--out", exports / "e")
    one_line_error(result, "differs from predict", code=1)
    assert list(exports.iterdir()) == []


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_an_empty_out_folder_is_used_with_the_mode_of_a_plain_mkdir(trained, tmp_path):
    """Not mkdtemp's 0700: a server running as another user must read the export."""
    out = tmp_path / "empty"
    out.mkdir(0o755)
    with umask(0o022):
        result = invoke("export", "--run-dir", trained("gru"), "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "saved_model.pb").is_file()
    assert out.stat().st_mode & 0o7777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no lock, no staging folder


def staging_folders(out):
    return sorted(p.name for p in out.parent.glob(f".{out.name}.export-*"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["x", -1, 1.5, True, None])
def test_a_seed_that_is_not_a_whole_number_from_0_is_refused(tiny_run, tmp_path, seed):
    from echo_keras.errors import ConfigError
    from echo_keras.stream.export import export_saved_model

    with pytest.raises(ConfigError, match="seed.*whole number from 0") as caught:
        export_saved_model(tiny_run, tmp_path / "e", seed=seed)
    assert caught.value.exit_status == 2 and list(tmp_path.iterdir()) == []


def signal_while_staging(run_dir, out, signum):
    """(process, stderr) of `export --out OUT`, sent `signum` once its staging folder holds
    the SavedModel, and ended."""
    process = start(run_dir, "--out", out, command="export", real=signum == signal.SIGKILL)
    try:
        deadline = time.monotonic() + 120
        while not any(out.parent.glob(f".{out.name}.export-*/saved_model.pb")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the export wrote no staging folder"
            time.sleep(0.005)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process, err


@pytest.mark.slow
def test_sigterm_in_the_middle_of_an_export_leaves_nothing_behind(tiny_run, tmp_path):
    """Stopped as SIGINT stops it: its staging folder and its lock go, one line, 143."""
    out = tmp_path / "e"
    process, err = signal_while_staging(tiny_run, out, signal.SIGTERM)
    assert process.returncode == 143, err
    assert err.strip().splitlines() == [f"Error: Interrupted (SIGTERM); {out} is as it was"]
    assert list(tmp_path.iterdir()) == []  # no staging folder, no lock, no export


def test_a_signal_lost_in_a_finalizer_still_stops_the_export(tiny_run, tmp_path, monkeypatch):
    """The export's handler raises at the signal; inside a finalizer Python prints that raise
    as "Exception ignored" with a traceback and goes on. The export still stops before its
    rename, with its one line and 143, and nothing printed besides."""
    from echo_keras.stream import export

    def verify_meeting_a_signal(*args, **kwargs):
        SignalInFinalizer(signal.SIGTERM)  # dropped at once: its __del__ runs now
        return verify(*args, **kwargs)

    verify = export.verify
    monkeypatch.setattr(export, "verify", verify_meeting_a_signal)
    result = invoke("export", "--run-dir", tiny_run, "--out", tmp_path / "e")
    one_line_error(result, f"Interrupted (SIGTERM); {tmp_path / 'e'} is as it was", code=143)
    assert "Exception ignored" not in result.output + result.stderr
    assert list(tmp_path.iterdir()) == []  # no staging folder, no lock, no export


def test_the_next_export_removes_what_a_killed_one_left(tiny_run, tmp_path):
    """kill -9 in the middle of an export leaves its staging folder; the next export to the
    same folder deletes it, and leaves a user's look-alike names alone."""
    out = tmp_path / "e"
    process, _ = signal_while_staging(tiny_run, out, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert len(staging_folders(out)) == 1 and not out.exists()
    for name in (".e.export-mine", ".e.mine", ".f.export-1-abcdef"):
        (tmp_path / name).mkdir()
    with umask(0o027):
        result = invoke("export", "--run-dir", tiny_run, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o7777 == 0o750  # 0777 less the umask, as mkdir makes it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".e.export-mine",
        ".e.mine",
        ".f.export-1-abcdef",
        "e",
    ]


def test_a_running_export_is_never_disturbed(tiny_run, tmp_path):
    """While the export lock is held (a live export), a second export to the same folder is
    refused with exit 2, and the live one's staging folder is kept."""
    from echo_keras.stream import export_folder

    out = tmp_path / "e"
    lock = export_folder.lock(out)
    assert lock.acquire(stamp=True)
    try:
        live = tmp_path / f".e.export-{os.getpid()}-abc123"
        live.mkdir()
        (live / "saved_model.pb").write_bytes(b"half")
        result = invoke("export", "--run-dir", tiny_run, "--out", out)
        one_line_error(result, "another export", f"pid {os.getpid()}", code=2)
        assert (live / "saved_model.pb").read_bytes() == b"half" and not out.exists()
    finally:
        lock.release()
    assert staging_folders(out) == [live.name]  # the next export removes it (test above)


def test_a_full_disk_is_one_line_and_leaves_nothing(tiny_run, tmp_path):
    """On a real full disk (a 64 KiB tmpfs: the SavedModel needs about 100 KiB)."""
    with small_tmpfs(tmp_path / "small", "64k") as small:
        result = invoke("export", "--run-dir", tiny_run, "--out", small / "e")
        one_line_error(result, "cannot write", "e: no space left on device", code=1)
        assert list(small.iterdir()) == []  # nor a staging folder, nor the lock


def test_a_failed_write_is_one_line_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    """The same by fault injection, where no tmpfs can be mounted; any other write error too."""
    from echo_keras.backend import tf
    from echo_keras.stream import export

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "x.pb; No space left on device")

    monkeypatch.setattr(export.tf.saved_model, "save", full)
    result = invoke("export", "--run-dir", tiny_run, "--out", tmp_path / "e")
    one_line_error(result, "cannot write", "no space left on device", code=1)
    assert list(tmp_path.iterdir()) == []

    def denied(out):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(export.export_folder, "new_staging", denied)
    result = invoke("export", "--run-dir", tiny_run, "--out", tmp_path / "e")
    one_line_error(result, "cannot write", "Permission denied", code=1)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_odd_out_paths(tiny_run, tmp_path, monkeypatch):
    run_dir = tiny_run
    empty = tmp_path / "empty"
    empty.mkdir()
    link = tmp_path / "link"
    link.symlink_to(empty)
    monkeypatch.chdir(empty)
    for out, fragment in [
        (link, "symlink"),
        (run_dir / "export", f"{run_dir / 'export'} is inside the run folder"),
        (tmp_path / "nowhere" / "export", "does not exist"),
        (".", "names no new folder"),
        ("..", "names no new folder"),
        ("/", "names no new folder"),
        (empty / "..", "names no new folder"),
        (empty, "is the current folder"),
        (Path("..") / "empty", "is the current folder"),
        ("x" * 250, "too long"),
    ]:
        result = invoke("export", "--run-dir", run_dir, "--out", out)
        one_line_error(result, "--out", fragment, code=2)
    assert not (run_dir / "export").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "link"]
    assert list(empty.iterdir()) == []


def test_export_refuses_a_mount_point(tiny_run, tmp_path):
    with small_tmpfs(tmp_path / "mounted", "16k") as mounted:
        result = invoke("export", "--run-dir", tiny_run, "--out", mounted)
        one_line_error(result, "--out", "mount point", code=2)
        assert list(mounted.iterdir()) == []


@ON_EXPORTS
def test_the_export_takes_chunks_of_length_zero(exports, stream_model):
    import tensorflow as tf

    serve = tf.saved_model.load(str(exports["lstm"])).signatures["serving_default"]
    model = stream_model("lstm")
    states = {name: tf.zeros((3, model.units)) for name in model.names}
    result = serve(symbols=tf.zeros((3, 0), tf.int32), **states)
    assert tuple(result["probabilities"].shape) == (3, 0, model.config.num_classes)
    for name in model.names:
        np.testing.assert_array_equal(result[name].numpy(), 0.0)


@ON_EXPORTS
def test_the_signature_refuses_nonsense(exports, stream_model):
    """A symbol outside 0..K-1, a state that is not finite, states of another batch size than
    the symbols: an InvalidArgumentError saying which, never numbers."""
    import tensorflow as tf

    def states(batch, **fills):
        return {n: tf.fill((batch, model.units), fills.get(n, 0.0)) for n in model.names}

    model = stream_model("lstm")  # two classes
    serve = tf.saved_model.load(str(exports["lstm"])).signatures["serving_default"]
    for symbols, given, fragment in [
        ([[7]], states(1), "symbols must be in 0..1"),
        ([[0, -5]], states(1), "symbols must be in 0..1"),
        ([[2**31 - 1]], states(1), "symbols must be in 0..1"),
        ([[1]], states(1, lstm_0_h=np.nan), "lstm_0_h must be finite"),
        ([[1]], states(1, lstm_0_c=np.inf), "lstm_0_c must be finite"),
        ([[1], [0]], states(1), "lstm_0_h must have one row per row of symbols"),
        ([[1]], states(2), "the same batch size"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(fragment)):
            serve(symbols=tf.constant(symbols, tf.int32), **given)
    assert serve(symbols=tf.constant([[1, 0]]), **states(1))["probabilities"].shape == (1, 2, 2)
    empty = serve(symbols=tf.zeros((0, 3), tf.int32), **states(0))["probabilities"]
    assert empty.shape == (0, 3, 2)

    model = stream_model("classes12")
    serve = tf.saved_model.load(str(exports["classes12"])).signatures["serving_default"]
    assert serve(symbols=tf.constant([[11, 0]]), **states(1))["probabilities"].shape == (1, 2, 12)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("in 0..11")):
        serve(symbols=tf.constant([[12]]), **states(1))


def test_the_checks_change_no_result(stream_model):
    """The checked signature answers valid inputs bit for bit as the unchecked one."""
    from echo_keras.stream.export import serving_module

    model = stream_model("layers2")
    rng = np.random.default_rng(5)
    symbols = rng.integers(0, model.config.num_classes, (3, 40)).astype(np.int32)
    states = [rng.normal(size=(3, model.units)).astype(np.float32) for _ in model.names]
    checked = serving_module(model).serve(symbols, *states)
    unchecked = serving_module(model, checks=False).serve(symbols, *states)
    assert checked.keys() == unchecked.keys()
    for name in checked:
        np.testing.assert_array_equal(checked[name].numpy(), unchecked[name].numpy())
