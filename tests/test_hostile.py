"""Hostile or damaged files are refused cheaply; `plot --out` replaces nothing it should not."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from echo_keras.run import files
from tests.cli_helpers import invoke, one_line_error

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


def run_process(*argv):
    """(exit status, seconds, peak memory in MiB, stderr) of an echo-keras process."""
    command = [sys.executable, "-c", REPORT_PEAK, *map(str, argv)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    *lines, peak = done.stderr.strip().splitlines()
    assert peak.startswith("peak-kib"), done.stderr
    return done.returncode, seconds, int(peak.split()[1]) / 1024, "\n".join(lines)


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    return run_dir


# --- config.json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("num_classes", 2.5, "must be an integer"),
        ("num_classes", 10**30, "num_classes"),
        ("learning_rate", "0.3", "must be a number"),
        ("cell", 5, "cell"),
        ("batch_size", 3, "does not match model.keras"),
        ("state_size", 8, "does not match model.keras"),
        ("num_classes", 3, "does not match model.keras"),
    ],
)
def test_a_hostile_config_is_called_damaged(run_copy, key, value, fragment):
    path = run_copy / files.CONFIG
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, key: value}))
    result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, "config.json is damaged", fragment)


def test_a_huge_config_json_is_not_read(run_copy):
    (run_copy / files.CONFIG).write_text('{"seed": 0, "x": "' + "a" * (2 << 20) + '"}')
    result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, "config.json is damaged", "larger than")


# --- last_batch.npz ---------------------------------------------------------------------------


def _npz_member(name, header_shape, payload: bytes, dtype="<i8"):
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return name + ".npy", buffer.getvalue() + payload


def _write_npz(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)


def test_an_array_larger_than_the_config_allows_is_refused_from_its_header(run_copy):
    batch = files.read_last_batch(run_copy, files.load_config(run_copy))
    members = [
        _npz_member("inputs", (100000, 100000), b"\0" * 64),  # 80 GB promised
        _npz_member("targets", batch["targets"].shape, batch["targets"].astype("<i8").tobytes()),
    ]
    _write_npz(run_copy / files.LAST_BATCH, members)
    result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, "last_batch.npz is damaged", "config.json says")


def test_a_zip_bomb_is_refused_without_inflating_it(run_copy):
    config = files.load_config(run_copy)
    shape = (config.batch_size, config.truncated_backprop_length)
    bomb = np.zeros(200 << 20, dtype=np.uint8).tobytes()  # 200 MiB of zeros, about 200 KB zipped
    members = [
        _npz_member("inputs", shape, bomb),
        _npz_member("targets", shape, np.zeros(shape, "<i8").tobytes()),
        _npz_member("probabilities", (*shape, 2), np.zeros((*shape, 2), "<f8").tobytes(), "<f8"),
    ]
    _write_npz(run_copy / files.LAST_BATCH, members, zipfile.ZIP_DEFLATED)
    assert (run_copy / files.LAST_BATCH).stat().st_size < 2 << 20
    code, seconds, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 1, err
    assert "last_batch.npz is damaged" in err and "its header says" in err
    assert peak_mib < 200, peak_mib  # the 200 MiB were never inflated


# --- history.csv ------------------------------------------------------------------------------


@pytest.mark.slow
def test_plot_of_three_million_history_rows_is_bounded(run_copy):
    batches = 3000
    with open(run_copy / files.HISTORY, "w") as handle:
        handle.write(files.HISTORY_HEADER)
        for epoch in range(1000):
            base = epoch * batches
            handle.write(
                "".join(
                    f"{epoch},{b},{base + b},{1.0 / (1 + base + b)!r}\n" for b in range(batches)
                )
            )
    code, seconds, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 0, err
    assert seconds < 45 and peak_mib < 1024, (seconds, peak_mib)
    assert (run_copy / "plot.png").stat().st_size > 0


# --- plot --out -------------------------------------------------------------------------------


MAGIC = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF", "jpg": b"\xff\xd8\xff"}


@pytest.mark.parametrize("extension", sorted(MAGIC))
def test_plot_out_honours_the_extension(tiny_run, tmp_path, extension):
    out = tmp_path / f"figure.{extension}"
    result = invoke("plot", "--run-dir", tiny_run, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(MAGIC[extension])


@pytest.mark.parametrize("name", ["figure.xyz", "figure"])
def test_plot_out_refuses_an_unknown_format(tiny_run, tmp_path, name):
    result = invoke("plot", "--run-dir", tiny_run, "--out", tmp_path / name)
    assert result.exit_code == 2
    one_line_error(result, "--out", "unknown image format")
    assert not (tmp_path / name).exists()


def test_plot_out_writes_through_a_symlink(tiny_run, tmp_path):
    target, link = tmp_path / "real.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    result = invoke("plot", "--run-dir", tiny_run, "--out", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_bytes().startswith(MAGIC["png"])


def _special_files(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    files = [fifo, folder]
    if os.geteuid() == 0:  # a device node of our own, never the system's /dev/null
        device = tmp_path / "null.png"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        files.append(device)
    return files


def test_plot_out_refuses_devices_fifos_and_folders(tiny_run, tmp_path):
    for path in _special_files(tmp_path):
        before = path.lstat()
        result = invoke("plot", "--run-dir", tiny_run, "--out", path)
        assert result.exit_code == 2, (path, result.output)
        one_line_error(result, "--out")
        after = path.lstat()
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# --- files that are not what they claim ------------------------------------------------------


@pytest.mark.parametrize(
    "name, command", [("config.json", "plot"), ("history.csv", "plot"), ("config.json", "evaluate")]
)
@pytest.mark.parametrize("kind", ["fifo", "symlink to /dev/zero"])
def test_run_files_that_are_not_regular_files_are_refused(run_copy, name, command, kind):
    target = run_copy / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)  # reading it would block forever
    else:
        target.symlink_to("/dev/zero")  # reading it would never end
    result = invoke(command, "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, f"{name} is damaged")


def test_a_deeply_nested_config_is_called_damaged(run_copy):
    (run_copy / files.CONFIG).write_text("[" * 100000 + "]" * 100000)
    result = invoke("evaluate", "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, "config.json is damaged", "nested too deeply")


def test_a_history_line_of_megabytes_is_refused(run_copy):
    with open(run_copy / files.HISTORY, "a") as handle:
        handle.write("2,0,60," + "9" * (1 << 20) + "\n")
    result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 1
    one_line_error(result, "history.csv is damaged", "longer than")


def test_a_zip_member_that_inflates_past_its_declared_size_is_never_inflated(run_copy):
    """The zip's own sizes say 928 bytes; the deflate stream holds 200 MiB more."""
    import struct
    import zlib

    config = files.load_config(run_copy)
    shape = (config.batch_size, config.truncated_backprop_length)
    members = {
        "inputs": np.zeros(shape, "<i8"),
        "targets": np.zeros(shape, "<i8"),
        "probabilities": np.full((*shape, 2), 0.5),
    }
    out, central = io.BytesIO(), []
    for name, array in members.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        data, filename = buffer.getvalue(), f"{name}.npy".encode()
        extra = b"\0" * (200 << 20) if name == "probabilities" else b""
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = packer.compress(data + extra) + packer.flush()
        crc, offset = zlib.crc32(data), out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed),
                              len(data), len(filename), 0) + filename + packed)  # fmt: skip
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                                   len(packed), len(data), len(filename), 0, 0, 0, 0, 0,
                                   offset) + filename)  # fmt: skip
    start, directory = out.tell(), b"".join(central)
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 3, 3, len(directory), start, 0))
    (run_copy / files.LAST_BATCH).write_bytes(out.getvalue())
    code, _, peak_mib, err = run_process("plot", "--run-dir", run_copy)
    assert code == 0, err  # the declared 928 bytes are all that is read
    assert peak_mib < 200, peak_mib


def test_evaluate_refuses_a_series_that_cannot_fit_in_memory(tiny_run):
    result = invoke("evaluate", "--run-dir", tiny_run, "--series-length", str(10**11))
    assert result.exit_code == 2
    one_line_error(result, "--series-length", "memory")


def test_plot_never_writes_through_a_run_folders_own_plot_png_link(run_copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run_copy / "plot.png").symlink_to(victim)
    result = invoke("plot", "--run-dir", run_copy)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep"
    assert not (run_copy / "plot.png").is_symlink()
    assert (run_copy / "plot.png").read_bytes().startswith(MAGIC["png"])


def test_plot_out_refuses_pgf_which_needs_latex(tiny_run, tmp_path):
    result = invoke("plot", "--run-dir", tiny_run, "--out", tmp_path / "figure.pgf")
    assert result.exit_code == 2
    one_line_error(result, "unknown image format")


def test_a_live_plot_that_cannot_write_does_not_stop_training(run_copy):
    (run_copy / "live.png").mkdir()  # every frame's rename onto it fails
    (run_copy / "live.png" / "x").touch()
    result = invoke(
        "train", "--run-dir", run_copy, "--resume", "--epochs", "4", "--plot-every", "5", "--quiet"
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "live plot" in line]
    assert len(warnings) == 1 and "cannot write" in warnings[0]
    assert files.read_status(run_copy)["status"] == "complete"
