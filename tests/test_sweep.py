"""`echo-keras sweep`: grid parsing, usage errors, the heat map, real sweeps on a local Ray, and
a sweep on a Ray head started with `ray start` (the cluster).

Ray starts in seconds, so one tiny sweep (6 points, 2 workers, one point made to fail) is shared
by several tests. Ray's session files go to a short folder under /tmp (its Unix socket paths
must stay short), and a token file there keeps Ray from writing ~/.ray/auth_token. Every test
that starts Ray is in the xdist group "ray": they run one after another in one worker, so two
Rays never start at once (and `ray stop` never stops another test's Ray).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pty
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from echo_keras.config import shape_key
from echo_keras.errors import ConfigError, SweepError, UsageError
from echo_keras.options import flag
from echo_keras.sweep import cluster, grid, heatmap, results, workers
from tests.helpers import invoke, one_line_error, signal_mask, small_tmpfs

ON_RAY = pytest.mark.xdist_group("ray")
TINY_SWEEP = ["--epochs", "3", "--series-length", "6000"]  # learns echo 2 at window 6 in 3 epochs
FAILING = "echo2-window3-state4-lstm-seed0"
CRASHING = "echo6-window6-state4-lstm-seed0"  # its worker process dies
COLUMNS = (
    "num_epochs,total_series_length,truncated_backprop_length,state_size,num_classes,"
    "echo_step,batch_size,learning_rate,seed,cell,num_layers,dropout,optimizer,"
    "accuracy,boundary_accuracy,inner_accuracy,reset_boundary_accuracy,final_loss,"
    "train_seconds,host,status,error"
).split(",")


@pytest.fixture(scope="module")
def ray_tmp():
    """RAY_TMPDIR and a Ray token file in a short folder; the environment restored after."""
    saved = dict(os.environ)
    folder = Path(tempfile.mkdtemp(prefix="ek-", dir="/tmp"))
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(
        RAY_TMPDIR=str(folder), RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0"
    )
    os.environ.pop("RAY_ADDRESS", None)
    yield folder
    os.environ.clear()
    os.environ.update(saved)
    leftovers = sorted(p.name for p in folder.iterdir() if p != token)
    shutil.rmtree(folder, ignore_errors=True)
    assert leftovers == [], "Ray's session files were not removed"


# An earlier sweep in the tiny sweep's folder, which --overwrite replaces: its own files and
# kept runs go, a file of the user's stays.
EARLIER_POINT = "echo9-window2-state4-lstm-seed0"  # of its grid: echo 9, windows 2-7


@pytest.fixture(scope="module")
def tiny_sweep(ray_tmp, tmp_path_factory):
    """A sweep of 6 points on 2 local workers over an earlier sweep (--overwrite); the point
    FAILING raises, the point CRASHING kills its worker, and one worker fails to start (its
    point goes to the next worker)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    results.write_spec(out.mkdir() or out, grid.make_spec({"echo_step": "9"}, None, {}))
    results.write_results(out / "results.csv", [{"echo_step": 9, "status": "ok"}])
    (out / "runs" / EARLIER_POINT).mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    start_fail = out.parent / "start-fail"
    start_fail.write_text("")
    os.environ.update({workers.FAIL_ENV: FAILING, workers.CRASH_ENV: CRASHING})
    os.environ[workers.START_FAIL_ENV] = str(start_fail)
    try:
        args = ["--echo-step", "1,2,6", "--window", "3,6", *TINY_SWEEP, "--workers", "2"]
        result = invoke("sweep", "--out", out, *args, "--keep-runs", "--json", "--overwrite")
    finally:
        for name in workers.TEST_ENV:
            del os.environ[name]
    return out, result


# --- the grid and bad values (no Ray) ------------------------------------------------------


def test_a_kept_run_replaces_only_a_run_folder_never_other_files(tmp_path):
    """--keep-runs unpacks a point's run into runs/NAME: a run of ours there is replaced; a
    folder of other files (another sweep's, say) is left as it is, and the point fails."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("status.json", '{"status": "complete"}')
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "status.json").write_text('{"status": "failed"}')  # an earlier run of ours
    (runs / "b").mkdir()
    (runs / "b" / "sweep.json").write_text("mine")
    assert results.keep_run(buffer.getvalue(), runs, "a") is None
    assert (runs / "a" / "status.json").read_text() == '{"status": "complete"}'
    refused = results.keep_run(buffer.getvalue(), runs, "b")
    assert refused == f"{runs / 'b'} is not a folder the sweep made; it is left as it is"
    assert [p.name for p in (runs / "b").iterdir()] == ["sweep.json"]
    assert sorted(p.name for p in runs.iterdir()) == ["a", "b"]  # no staging folder left


def test_an_out_name_too_long_and_resume_with_no_seeds_are_named_as_flags(tmp_path):
    long = invoke("sweep", "--out", tmp_path / ("x" * 300), "--echo-step", "1")
    one_line_error(long, "'--out'", "cannot be made (File name too long)", code=2)
    out = tmp_path / "sweep"
    out.mkdir()
    results.write_spec(out, grid.make_spec({"echo_step": "1"}, None, {}))
    zero = invoke("sweep", "--out", out, "--resume", "--seeds", "0")
    one_line_error(zero, "'--seeds': must be positive, got 0", code=2)


@pytest.mark.parametrize(
    "text, values",
    [("1,2,4", [1, 2, 4]), ("1-12", list(range(1, 13))), ("4,1-3,3", [1, 2, 3, 4]), (" 7 ", [7])],
)
def test_grid_values_take_lists_and_ranges(text, values):
    assert grid.parse_ints(text, "echo_step") == values


@pytest.mark.parametrize(
    "text",
    ["", "a", "1,,2", "3-1", "1-", "-2", "1.5", "2-x", "1_0", "+1", "1-+3", "\u0663", "1" * 5000],
)
def test_bad_grid_values_raise_config_errors_naming_the_flag(text):
    with pytest.raises(ConfigError) as error:
        grid.parse_ints(text, "truncated_backprop_length")
    assert flag(error.value.field) == "--window"


def test_a_spec_make_spec_would_not_make_is_refused_and_a_sweep_json_holding_one_is_damaged(
    tmp_path,
):
    spec = grid.make_spec({}, None, {})
    twice = grid.SweepSpec({**spec.grid, "echo_step": [1, 1]}, 1, spec.settings)
    huge = grid.SweepSpec(spec.grid, 10**20, spec.settings)
    for bad, message in ((twice, "holds a value twice"), (huge, "")):
        with pytest.raises(
            UsageError, match=message or "the grid has 3600000000000000000000 points"
        ):
            grid.check_spec(bad)
        record = {**bad.to_dict(), "points": 1}
        (tmp_path / "sweep.json").write_text(json.dumps(record))
        with pytest.raises(SweepError, match="sweep.json is damaged"):
            results.read_spec(tmp_path)
    with pytest.raises(UsageError, match="base must be a SweepSpec"):
        grid.make_spec({}, None, {}, base="x")
    results.write_spec(tmp_path, grid.SweepSpec(spec.grid, 1, {"num_epochs": 1}))
    assert results.read_spec(tmp_path).settings == {**spec.settings, "num_epochs": 1}


def test_numpy_numbers_in_a_spec_are_taken_as_pythons_own_as_train_config_takes_them():
    import numpy as np

    settings = {"num_epochs": np.int64(1), "learning_rate": np.float32(0.5), "batch_size": 5}
    spec = grid.make_spec({"echo_step": "1"}, np.int64(2), settings)
    assert spec.seeds == 2 and type(spec.seeds) is int
    assert spec.settings["num_epochs"] == 1 and type(spec.settings["num_epochs"]) is int
    assert type(spec.settings["learning_rate"]) is float
    json.dumps(spec.to_dict())  # what sweep.json is written from
    assert grid.workers_problem(np.int64(1)) is None
    by_hand = grid.SweepSpec(spec.grid, 1, {**spec.settings, "num_epochs": np.int64(1)})
    assert type(grid.plain_spec(by_hand).settings["num_epochs"]) is int  # as run_sweep takes it
    # In a grid by hand and its seeds too (they were refused: "must hold ints only").
    by_hand = grid.SweepSpec({**spec.grid, "echo_step": list(np.arange(1, 3))}, np.int64(2), {})
    plain = grid.plain_spec(by_hand)
    assert plain.grid["echo_step"] == [1, 2] and type(plain.grid["echo_step"][0]) is int
    assert type(plain.seeds) is int
    grid.check_spec(plain)
    odd = grid.SweepSpec(spec.grid, 1, {**spec.settings, "num_epochs": [1]})
    with pytest.raises(UsageError, match=r"settings' num_epochs must be a number, text or a bo"):
        grid.check_spec(odd)  # refused before Ray starts, not when sweep.json is written


def test_run_sweep_refuses_arguments_of_the_wrong_kind_before_anything_starts(tmp_path):
    from echo_keras.sweep.runner import run_sweep

    spec = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "2"}, None, {})
    with pytest.raises(ConfigError, match="address: must be a Ray address"):
        run_sweep(spec, tmp_path / "a", address=5)
    with pytest.raises(UsageError, match="on_row must be a function"):
        run_sweep(spec, tmp_path / "b", on_row=5)
    for name in ("overwrite", "resume", "keep_runs"):  # "no" is not a yes
        with pytest.raises(ConfigError, match=f"^{name}: must be True or False, got 'no'"):
            run_sweep(spec, tmp_path / "c", **{name: "no"})
    assert list(tmp_path.iterdir()) == []


def test_a_ray_tmpdir_ray_cannot_use_is_one_line_naming_it(tmp_path, monkeypatch):
    from echo_keras.sweep.cluster import ray_tmpdir_problem

    (tmp_path / "file").write_text("")
    assert ray_tmpdir_problem("/tmp") is None
    assert "must be an absolute path" in ray_tmpdir_problem("ray")
    assert ray_tmpdir_problem(str(tmp_path / "none")).endswith("does not exist")
    assert ray_tmpdir_problem(str(tmp_path / "file")).endswith("is a file, not a folder")
    assert "too long for the sockets Ray makes" in ray_tmpdir_problem(str(tmp_path))
    monkeypatch.setenv("RAY_TMPDIR", "ray")
    result = invoke("sweep", "--out", tmp_path / "out", "--echo-step", "1", "--window", "2")
    one_line_error(result, "RAY_TMPDIR must be an absolute path, got 'ray'", code=2)
    assert not (tmp_path / "out").exists()


@ON_RAY  # no sweep of another test makes its folder meanwhile
def test_a_local_ray_too_slow_to_start_is_a_sweep_error_and_leaves_nothing(monkeypatch):
    """Ray raises a bare Exception when its node does not register within 30 s (a machine
    overloaded): one line saying so, not an unexpected error, and its folder removed."""
    import ray

    from echo_keras.errors import SweepError
    from echo_keras.sweep import cluster

    def slow(**options):
        Path(options["_temp_dir"], "session_x").mkdir()  # what Ray had begun to write
        raise Exception("The current node timed out during startup. This could happen ...")

    monkeypatch.setattr(ray, "init", slow)
    before = set(Path("/tmp").glob(f"{cluster.SESSION_PREFIX}*"))
    with pytest.raises(SweepError, match=r"^cannot start a local Ray: Exception: The current"):
        with cluster.ray_session(None, 1):
            pass
    assert set(Path("/tmp").glob(f"{cluster.SESSION_PREFIX}*")) <= before


def _zipped_run(folder: Path) -> bytes:
    folder.mkdir()
    (folder / "model.keras").write_bytes(os.urandom(200_000))  # incompressible
    return workers._zip_folder(folder)


def test_a_kept_run_on_a_full_disk_leaves_nothing_and_says_why(tmp_path):
    archive = _zipped_run(tmp_path / "run")
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        assert results.keep_run(archive, disk / "runs", "p") == "No space left on device"
        assert list((disk / "runs").iterdir()) == []


def test_a_kept_run_replaces_the_earlier_whole_and_leaves_what_is_in_the_way(tmp_path):
    run = tmp_path / "run"
    archive = _zipped_run(run)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "q").symlink_to(run)
    assert "is not a folder the sweep made" in results.keep_run(archive, tmp_path / "runs", "q")
    assert (tmp_path / "runs" / "q").is_symlink()
    assert results.keep_run(archive, tmp_path / "runs", "p") is None
    (tmp_path / "runs" / "p" / "earlier.txt").write_text("of the run before")
    assert results.keep_run(archive, tmp_path / "runs", "p") is None  # replaced whole
    assert [p.name for p in (tmp_path / "runs" / "p").iterdir()] == ["model.keras"]
    kept = (tmp_path / "runs" / "p" / "model.keras").read_bytes()
    assert kept == (run / "model.keras").read_bytes()
    assert "not a zip file" in results.keep_run(b"not a zip", tmp_path / "runs", "r")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["p", "q"]  # no staging
    (tmp_path / "runs" / ".p.new-x1y2").mkdir()  # as a sweep killed while unpacking leaves it
    results.remove_staging(tmp_path / "runs")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["p", "q"]


def test_a_point_whose_run_folder_cannot_be_kept_is_recorded_failed(tmp_path, monkeypatch):
    """Not `ok` without its run folder, which a resume would then never write: the sweep
    (here without Ray, its workers' result given) records the point as failed."""
    import contextlib

    from echo_keras.sweep import runner

    spec = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "2"}, None, {})
    (point,) = spec.points()
    name = results.point_name(point.to_dict())
    fake_ray = type("Ray", (), {"cluster_resources": staticmethod(lambda: {"CPU": 1.0})})

    def one_result(ray, todo, keep_runs, signals, record, size, remote):
        (tmp_path / "out" / "runs").mkdir()
        (tmp_path / "out" / "runs" / name).symlink_to(tmp_path)  # in the way
        record({**point.to_dict(), "status": "ok", "accuracy": 1.0}, b"PK\x05\x06" + bytes(18))
        return {}

    monkeypatch.setattr(runner, "ray_session", lambda *a: contextlib.nullcontext(fake_ray))
    monkeypatch.setattr(runner, "_run_points", one_result)
    result = runner.run_sweep(spec, tmp_path / "out", keep_runs=True)
    (row,) = results.read_results(tmp_path / "out" / "results.csv")
    assert (result.failed, row["status"]) == (1, "failed")
    assert row["error"].startswith("cannot keep its run folder: ") and name in row["error"]


def test_only_rays_own_processes_in_a_dead_sweeps_folder_are_ended(tmp_path):
    """Ray's agent (`ray::...`) goes; a user's process with a log of the folder open stays,
    also where the folder's path holds a `ray` folder of its own."""
    folder = tmp_path / "ray" / "echo-keras-ray-abcd1234"
    (folder / "logs").mkdir(parents=True)
    log = folder / "logs" / "agent.log"
    log.write_text("")
    agent = subprocess.Popen(["bash", "-c", f"exec -a ray::RuntimeEnvAgent sleep 120 >> {log}"])
    reader = subprocess.Popen(["tail", "-f", str(log)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _command_line(agent.pid).startswith("ray::RuntimeEnvAgent"):
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.01)
        cluster.end_ray_processes_in(folder)
        assert agent.wait(timeout=10) == -signal.SIGKILL
        time.sleep(0.2)
        assert reader.poll() is None
    finally:
        for process in (agent, reader):
            process.kill()
            process.wait()


def test_an_overwrite_keeping_runs_replaces_the_runs_of_other_settings(tmp_path, monkeypatch):
    """Only a resume is refused: an overwrite removes the earlier sweep's kept runs."""
    import contextlib

    from echo_keras.run import files
    from echo_keras.sweep import runner

    axes = {"echo_step": "1", "truncated_backprop_length": "2"}
    spec = grid.make_spec(axes, None, {})
    (point,) = spec.points()
    out = tmp_path / "out"
    folder = out / "runs" / results.point_name(point.to_dict())
    folder.mkdir(parents=True)
    files.write_config(folder, dataclasses.replace(point, num_epochs=1))
    results.write_spec(out, grid.make_spec(axes, None, {"num_epochs": 1}))
    results.write_results(out / "results.csv", [])
    fake_ray = type("Ray", (), {"cluster_resources": staticmethod(lambda: {"CPU": 1.0})})
    monkeypatch.setattr(runner, "ray_session", lambda *a: contextlib.nullcontext(fake_ray))
    monkeypatch.setattr(runner, "_run_points", lambda *a: {})
    with pytest.raises(UsageError, match="holds a run of other settings .*`num_epochs`"):
        runner.run_sweep(spec, out, resume=True, keep_runs=True)
    assert folder.is_dir()
    runner.run_sweep(spec, out, overwrite=True, keep_runs=True)
    assert not folder.exists()


def test_keeping_runs_refuses_to_replace_a_kept_run_of_other_settings(tmp_path):
    """Run folders are named by the axes and seed: a resume that changed `num_epochs` would
    put its run where the earlier one is, whose results.csv row stays."""
    from echo_keras.run import files

    spec = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "2"}, None, {})
    (point,) = spec.points()
    folder = tmp_path / "runs" / results.point_name(point.to_dict())
    folder.mkdir(parents=True)
    files.write_config(folder, dataclasses.replace(point, num_epochs=1))
    conflict = results.kept_run_conflict(tmp_path / "runs", [point])
    assert "holds a run of other settings (`num_epochs`)" in conflict
    files.write_config(folder, point)
    assert results.kept_run_conflict(tmp_path / "runs", [point]) is None
    (folder / "config.json").write_text("{")  # damaged: replaced
    assert results.kept_run_conflict(tmp_path / "runs", [point]) is None


def test_the_default_grid_straddles_the_cliff():
    spec = grid.make_spec({}, None, {})
    points = spec.points()
    assert len(points) == 36 and {p.seed for p in points} == {0}
    assert any(p.echo_step >= p.truncated_backprop_length for p in points)
    assert any(3 * p.echo_step <= p.truncated_backprop_length for p in points)
    assert spec.settings["learning_rate"] == 0.3 and spec.settings["num_epochs"] == 5


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--echo-step", "a"], "--echo-step"),
        (["--echo-step", "3-1"], "--echo-step"),
        (["--echo-step", "-1"], "--echo-step"),
        (["--window", "0"], "--window"),
        (["--window", "1-"], "--window"),
        (["--state-size", "0,4"], "--state-size"),
        (["--cell", "lstm,tcn"], "--cell"),
        (["--seeds", "0"], "--seeds"),
        (["--epochs", "0"], "--epochs"),
        (["--series-length", "10"], "--series-length"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--workers", "0"], "--workers"),
        (["--workers", str(10**400)], "--workers"),
        (["--workers", "1e400"], "--workers"),
        (["--echo-step", "1-20000"], "--echo-step"),
    ],
)
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, args, flag):
    out = tmp_path / "out"
    result = invoke("sweep", "--out", out, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and flag in lines[0], lines
    assert not out.exists()


def test_workers_with_an_address_is_a_usage_error(tmp_path):
    for args, env in ((["--address", "127.0.0.1:1"], {}), ([], {"RAY_ADDRESS": "127.0.0.1:1"})):
        result = invoke("sweep", "--out", tmp_path / "o", "--workers", "2", *args, env=env)
        assert result.exit_code == 2, result.output
        assert "--workers" in result.stderr and "--address" in result.stderr
    assert not (tmp_path / "o").exists()
    from echo_keras.sweep.runner import run_sweep

    spec = grid.make_spec({"echo_step": "1"}, None, {})
    with pytest.raises(ConfigError, match="^workers: sizes the local Ray; .* with `address`"):
        run_sweep(spec, tmp_path / "o", address="127.0.0.1:1", workers=1)  # never joined
    assert not (tmp_path / "o").exists()


def test_the_start_notice_counts_the_points_left_and_the_workers_that_run_them():
    from echo_keras.cli.sweep import start_notice

    assert start_notice(36, 36, None, 2, "s") == (
        "Sweeping 36 points on a local Ray with 2 workers; results in s"
    )
    # A resume with one point left starts one worker (WorkerPool), whatever --workers says.
    assert start_notice(6, 1, None, 2, "s") == (
        "Sweeping the 1 point left of 6 on a local Ray with 1 worker; results in s"
    )
    assert start_notice(1, 1, "h:1", None, "s") == (
        "Sweeping 1 point on the Ray cluster at h:1; results in s"
    )


def test_an_out_that_is_a_fifo_is_named_as_one(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    for out in (tmp_path / "pipe", tmp_path / "pipe" / "sweep"):
        result = invoke("sweep", "--out", out)
        one_line_error(result, "--out", code=2)
        assert f"{tmp_path / 'pipe'} is a FIFO, not a folder" in result.stderr


def test_a_folder_in_use_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    result = invoke("sweep", "--out", out)  # files but no sweep: neither flag would help
    one_line_error(result, "holds files but no sweep", "choose another folder", code=2)
    swept = tmp_path / "swept"
    results.write_spec(swept.mkdir() or swept, grid.make_spec({"echo_step": "1"}, None, {}))
    result = invoke("sweep", "--out", swept)
    one_line_error(result, "holds a sweep; pass --resume to continue it or --overwrite", code=2)
    # A grid that cannot work is named first: adding --overwrite would only then meet it.
    result = invoke("sweep", "--out", out, "--echo-step", "3-1")
    one_line_error(result, "--echo-step", code=2)
    result = invoke("sweep", "--out", out, "--resume")
    assert result.exit_code == 2 and "holds no sweep" in result.stderr
    (out / "sweep.json").write_text("{")
    result = invoke("sweep", "--out", out, "--resume")
    assert result.exit_code == 1 and "sweep.json is damaged" in result.stderr
    (out / "sweep.json").unlink()
    (out / "sweep.json").mkdir()  # there, but no file: damaged too, not missing
    result = invoke("sweep", "--out", out, "--resume")
    assert result.exit_code == 1 and "sweep.json is damaged" in result.stderr
    (out / "sweep.json").rmdir()
    result = invoke("sweep", "--out", out, "--resume", "--overwrite")
    assert result.exit_code == 2 and "cannot be used together" in result.stderr
    (tmp_path / "file").write_text("x")
    result = invoke("sweep", "--out", tmp_path / "file")
    assert result.exit_code == 2 and "--out" in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    # In Python too, as train(resume=True) refuses a run that is not there: nothing starts.
    from echo_keras.errors import UsageError
    from echo_keras.sweep.grid import make_spec
    from echo_keras.sweep.runner import run_sweep

    spec = make_spec({"echo_step": "1", "truncated_backprop_length": "3"}, None, {})
    with pytest.raises(UsageError, match="holds no sweep to resume"):
        run_sweep(spec, tmp_path / "none", resume=True)
    assert not (tmp_path / "none").exists()


def test_overwrite_never_touches_a_folder_that_holds_no_sweep(tmp_path):
    project = tmp_path / "proj"
    for name in ("runs/echo/config.json", "runs/important/model.keras", "results.csv", "README"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(name)
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    result = invoke("sweep", "--out", project, "--overwrite", "--echo-step", "1", "--window", "2")
    one_line_error(result, "holds files but no sweep", "--overwrite", code=2)
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert all((project / name).read_text() == name for name in ("results.csv", "README"))


def test_clearing_an_earlier_sweep_removes_its_files_and_its_runs_only(tmp_path):
    out = tmp_path / "out"
    results.write_spec(out.mkdir() or out, grid.make_spec({"echo_step": "1"}, None, {}))
    (out / "results.csv").write_text("x")
    (out / "runs" / "echo1-window2-state4-lstm-seed0").mkdir(parents=True)
    (out / "runs" / "mine").mkdir()
    # Named like a point, but not one of this sweep's grid (echo 1, windows 2-7): the user's.
    (out / "runs" / "echo9-window9-state9-lstm-seed9").mkdir()
    (out / "runs" / "echo9-window9-state9-lstm-seed9" / "notes.txt").write_text("mine")
    (out / "notes.txt").write_text("mine")
    results.check_out(out, resume=False, overwrite=True)  # a sweep: may be replaced
    results.clear(out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "notes.txt",
        "runs",
        "runs/echo9-window9-state9-lstm-seed9",
        "runs/echo9-window9-state9-lstm-seed9/notes.txt",
        "runs/mine",
    ]


def test_a_huge_grid_is_refused_at_once_without_building_it(tmp_path):
    started = time.monotonic()
    args = ["--echo-step", "1-9999", "--window", "10000-19999", "--state-size", "1-30"]
    result = invoke("sweep", "--out", tmp_path / "out", *args)
    one_line_error(result, "2999700000 points", "9999 echo steps x 10000 windows", code=2)
    assert "--seeds" not in result.stderr
    assert time.monotonic() - started < 5
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--epochs", "100000000"], "--epochs 100000000"),
        (["--series-length", "1000000000000"], "--series-length 1000000000000"),
    ],
)
def test_settings_train_refuses_are_refused_before_ray_starts(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = invoke("sweep", "--out", out, "--echo-step", "1", "--window", "2", *args)
    one_line_error(result, fragment, "memory", code=2)
    assert not out.exists()


def test_a_resumed_sweep_json_that_cannot_finish_is_refused(tmp_path):
    out = tmp_path / "out"
    results.write_spec(out.mkdir() or out, grid.make_spec({"echo_step": "1"}, None, {}))
    record = json.loads((out / "sweep.json").read_text())
    record["settings"]["num_epochs"] = 10**9
    (out / "sweep.json").write_text(json.dumps(record))
    result = invoke("sweep", "--out", out, "--resume")
    one_line_error(result, "--epochs 1000000000", code=2)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda r: r["grid"].pop("cell"), "grid must hold exactly"),
        (lambda r: r["grid"].update(echo_step=12), "grid's echo_step must be a non-empty list"),
        (lambda r: r["grid"].update(echo_step=["12"]), "echo_step must hold ints only"),
        (lambda r: r["grid"].update(echo_step=[None]), "echo_step must hold ints only"),
        (lambda r: r["settings"].update(colour="red"), "holds colour, which is not"),
        (lambda r: r["settings"].update(seed=3), "holds seed, which is not"),
        (lambda r: r.update(seeds="2"), "seeds must be a positive integer"),
        (lambda r: r["settings"].update(num_epochs="5"), "num_epochs: must be an integer"),
    ],
)
def test_a_damaged_sweep_json_is_named_with_its_field(tmp_path, change, fragment):
    out = tmp_path / "out"
    results.write_spec(out.mkdir() or out, grid.make_spec({"echo_step": "1"}, None, {}))
    record = json.loads((out / "sweep.json").read_text())
    change(record)
    (out / "sweep.json").write_text(json.dumps(record))
    result = invoke("sweep", "--out", out, "--resume")
    one_line_error(result, "sweep.json is damaged", fragment, code=1)
    assert "--echo-step" not in result.stderr and "--epochs" not in result.stderr


def test_an_out_that_is_a_dangling_link_or_a_loop_is_a_usage_error(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name in ("dangling", "loop"):
        result = invoke("sweep", "--out", tmp_path / name, "--echo-step", "1", "--window", "2")
        one_line_error(result, "--out", "leads nowhere", code=2)
    assert not (tmp_path / "nowhere").exists()


# --- an address where no Ray head answers (no Ray is started) -------------------------------


def _free_refusing_port() -> int:
    with socket.socket() as probe:  # bound, then closed: nothing listens there any more
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def http_server():
    """A loopback server that answers every connection as HTTP/1.1 does, never as Ray."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_a_dead_address_fails_at_once_with_one_line(tmp_path):
    for address in (f"127.0.0.1:{_free_refusing_port()}", "127.0.0.2:1"):
        started = time.monotonic()
        result = invoke("sweep", "--out", tmp_path / "out", "--address", address)
        one_line_error(result, f"cannot reach a Ray cluster at {address}", code=1)
        assert time.monotonic() - started < 5
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", [":", "127.0.0.2:99999", "host", "[::1]:x"])
def test_an_address_that_is_not_host_port_is_a_usage_error(tmp_path, address):
    result = invoke("sweep", "--out", tmp_path / "out", env={"RAY_ADDRESS": address})
    one_line_error(result, "is not a Ray address", code=2)


def test_a_server_that_is_not_ray_is_given_up_on(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(cluster, "REACH_SECONDS", 2)
    started = time.monotonic()
    result = invoke("sweep", "--out", tmp_path / "out", "--address", http_server)
    one_line_error(result, f"cannot reach a Ray cluster at {http_server}", "protocol", code=1)
    assert time.monotonic() - started < 6
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_the_wait_for_an_address(tmp_path, http_server):
    command = [str(Path(sys.executable).parent / "echo-keras"), "sweep", "--out", str(tmp_path)]
    process = subprocess.Popen(
        [*command, "--address", http_server], stderr=subprocess.PIPE, text=True
    )
    time.sleep(2.5)  # the command has started and is waiting for the address to answer
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=30)
    assert code == 130, process.stderr.read()
    assert time.monotonic() - sent < 3
    last = process.stderr.read().strip().splitlines()[-1]
    assert last == "Error: Interrupted (SIGINT) before the sweep started"


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path):
    from echo_keras.run.lock import FileLock

    out = tmp_path / "out"
    lock = FileLock(tmp_path / ".out.lock")
    assert lock.acquire(stamp=True)  # a sweep at work on OUT
    try:
        result = invoke("sweep", "--out", out, "--echo-step", "1", "--window", "2")
    finally:
        lock.release()
    assert result.exit_code == 2, result.output
    assert f"being written by another sweep (pid {os.getpid()})" in result.stderr
    assert not out.exists()


def test_results_csv_round_trip_and_damage(tmp_path):
    path = tmp_path / "results.csv"
    row = {**grid.make_spec({}, None, {}).points()[0].to_dict(), "accuracy": 0.5, "status": "ok"}
    row["error"] = 'a, "quoted"\nmessage'
    results.write_results(path, [row])
    (back,) = results.read_results(path)
    assert list(back) == COLUMNS and results.point_key(back) == results.point_key(row)
    assert (
        back["accuracy"] == "0.5" and back["inner_accuracy"] == "" and back["error"] == row["error"]
    )
    path.write_text(path.read_text()[:-5])
    with pytest.raises(SweepError, match="damaged"):
        results.read_results(path)
    path.write_text("epoch,loss\n")
    with pytest.raises(SweepError, match="header"):
        results.read_results(path)


def test_token_mode_is_turned_on_only_when_a_token_is_at_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    cluster.use_token_if_available()
    assert "RAY_AUTH_MODE" not in os.environ  # no token: a head without auth still works
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    cluster.use_token_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster.use_token_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


# --- the heat map and the progress bar ------------------------------------------------------


def _row(echo, window, accuracy, state=4, status="ok"):
    return {
        "echo_step": echo,
        "truncated_backprop_length": window,
        "state_size": state,
        "cell": "lstm",
        "num_classes": 2,
        "boundary_accuracy": accuracy if status == "ok" else "",
        "status": status,
    }


def test_heatmap_has_a_panel_per_state_size_and_annotates_every_cell(tmp_path):
    rows = [_row(e, w, 1.0 if e < w else 0.5) for e in (1, 2, 4) for w in (2, 4)]
    rows += [_row(1, 2, 0.9), _row(4, 4, 0.0, status="failed")]  # seed 1 of two points
    rows += [_row(1, 2, 0.75, state=8)]
    figure = heatmap.draw_heatmap(rows, seeds=2)
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["LSTM, state size 4", "LSTM, state size 8"]
    texts = [t.get_text() for t in panels[0].texts]
    assert len(texts) == 6 and texts.count("1.00") == 2 and "0.95" in texts  # mean of 1.0, 0.9
    assert [t.get_text() for t in panels[1].texts].count("–") == 5  # cells without a row
    assert all(ax.lines for ax in panels)  # the line echo step = window
    path = heatmap.save_heatmap(rows, tmp_path / "map.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_progress_bar_counts_points_on_a_terminal():
    from io import StringIO

    from rich.console import Console

    from echo_keras.cli.sweep import _Progress

    screen = StringIO()
    bar = _Progress(4, console=Console(file=screen, force_terminal=True, width=100))
    bar.advance(None, 1, 4)
    bar.advance({}, 3, 4)
    bar.close()
    assert "3/4" in screen.getvalue() and "ETA" in screen.getvalue()


def test_the_heat_maps_early_import_leaves_a_failure_to_the_drawing(monkeypatch):
    """The sweep imports matplotlib in a thread while its workers train; a failure there
    would print a thread's traceback, so it is left for the drawing to report."""

    def broken():
        raise ImportError("matplotlib is broken")

    monkeypatch.setattr(heatmap, "_colormap", broken)
    heatmap.import_matplotlib()  # no exception
    with pytest.raises(ImportError, match="broken"):
        heatmap.draw_heatmap(
            [
                {
                    "state_size": 4,
                    "cell": "lstm",
                    "echo_step": 1,
                    "truncated_backprop_length": 2,
                    "num_classes": 2,
                    "status": "ok",
                    "boundary_accuracy": 1.0,
                }
            ]
        )


def test_the_workers_folders_are_removed_whatever_ends_a_local_sweep(tmp_path, monkeypatch):
    """An error after Ray started (here: asking it for its CPUs) still removes the local
    workers' temporary folders, as a normal end and an interrupt do."""
    from contextlib import contextmanager

    from echo_keras.sweep import runner

    class Broken:
        def cluster_resources(self):
            raise RuntimeError("the cluster went away")

    @contextmanager
    def session(*args):
        yield Broken()

    removed = []
    monkeypatch.setattr(runner, "ray_session", session)
    monkeypatch.setattr(runner, "_remove_worker_folders", removed.append)
    spec = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "2"}, None, {})
    with pytest.raises(RuntimeError, match="went away"):
        runner.run_sweep(spec, tmp_path / "out")
    assert len(removed) == 1


# --- local sweeps -------------------------------------------------------------------------


@ON_RAY
@pytest.mark.slow
def test_a_sweep_writes_results_heatmap_and_summary(tiny_sweep):
    out, result = tiny_sweep
    assert result.exit_code == 1, result.output  # two points failed
    summary = json.loads(result.stdout)  # one JSON object, nothing else: not Ray's lines
    assert summary["points"] == 6 and summary["ok"] == 4 and summary["failed"] == 2
    assert summary["ran"] == 6 and summary["cpus"] == 2 and summary["address"] == "local"
    assert (out / "results.csv").read_text().splitlines()[0].split(",") == COLUMNS
    rows = results.read_results(out / "results.csv")
    assert len(rows) == 6
    for row in rows:
        assert (row["num_epochs"], row["total_series_length"], row["seed"]) == ("3", "6000", "0")
        if results.point_name(row) != CRASHING:  # its worker died before it could tell
            assert row["host"] == socket.gethostname()
        if row["status"] == "ok":
            assert float(row["train_seconds"]) > 0 and math.isfinite(float(row["final_loss"]))
            run = out / "runs" / results.point_name(row)
            assert json.loads((run / "config.json").read_text())["echo_step"] == int(
                row["echo_step"]
            )
            assert (run / "model.keras").is_file()
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    recorded = json.loads((out / "sweep.json").read_text())
    assert recorded["grid"]["echo_step"] == [1, 2, 6] and recorded["versions"]["ray"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # --overwrite replaced the earlier sweep: its row and its kept run went, the user's file
    # stayed.
    assert all(row["echo_step"] != "9" for row in rows)
    assert not (out / "runs" / EARLIER_POINT).exists()
    assert (out / "notes.txt").read_text() == "mine"


@ON_RAY
@pytest.mark.slow
def test_a_failing_point_is_recorded_and_the_others_go_on(tiny_sweep):
    out, result = tiny_sweep
    rows = {results.point_name(row): row for row in results.read_results(out / "results.csv")}
    assert rows[FAILING]["status"] == "failed"
    assert (
        rows[FAILING]["error"] == f"RuntimeError: failure injected by {workers.FAIL_ENV}={FAILING}"
    )
    assert rows[FAILING]["boundary_accuracy"] == ""
    assert all(
        row["status"] == "ok" for name, row in rows.items() if name not in (FAILING, CRASHING)
    )
    assert "2 of 6 points failed" in result.stderr and "--resume" in result.stderr
    assert not (out / "runs" / FAILING).exists()


@ON_RAY
@pytest.mark.slow
def test_a_worker_that_dies_fails_its_point_and_is_replaced(tiny_sweep):
    out, result = tiny_sweep
    rows = {results.point_name(row): row for row in results.read_results(out / "results.csv")}
    assert rows[CRASHING]["status"] == "failed"
    assert "died" in rows[CRASHING]["error"].lower(), rows[CRASHING]["error"]
    assert not (out.parent / "start-fail").exists()  # a worker failed to start, no point
    # The points after it ran on a fresh worker: all the others are ok.
    assert sum(row["status"] == "ok" for row in rows.values()) == 4


@ON_RAY
@pytest.mark.slow
def test_the_cliff_at_echo_step_equal_to_window(tiny_sweep):
    out, _ = tiny_sweep
    rows = [r for r in results.read_results(out / "results.csv") if r["status"] == "ok"]
    beyond = [r for r in rows if int(r["echo_step"]) >= int(r["truncated_backprop_length"])]
    within = [r for r in rows if 3 * int(r["echo_step"]) <= int(r["truncated_backprop_length"])]
    assert len(beyond) == 1 and len(within) == 3  # echo 6 at window 6 crashed
    assert all(float(r["boundary_accuracy"]) <= 0.65 for r in beyond), beyond
    assert all(float(r["boundary_accuracy"]) >= 0.99 for r in within), within
    assert all(float(r["reset_boundary_accuracy"]) <= 0.65 for r in rows)  # needs the state
    assert all(r["inner_accuracy"] == "" for r in beyond)  # no target inside the window


@ON_RAY
@pytest.mark.slow
def test_resume_runs_only_the_points_not_done(tiny_sweep, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_sweep[0], out)
    before = {results.point_name(r): r for r in results.read_results(out / "results.csv")}
    # The grid comes from sweep.json; one worker (one TensorFlow to load) runs both points.
    result = invoke("sweep", "--out", out, "--resume", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Swept 2 of 6 points, the other 4 done already (6 ok, 0 failed)" in result.stdout
    assert "Sweeping the 2 points left of 6 on a local Ray with 1 worker;" in result.stderr
    assert "\r" not in result.stdout and "━" not in result.stdout  # no bar off a terminal
    after = {results.point_name(r): r for r in results.read_results(out / "results.csv")}
    assert after[FAILING]["status"] == "ok" and after[CRASHING]["status"] == "ok"
    rerun = (FAILING, CRASHING)
    assert {n: r for n, r in after.items() if n not in rerun} == {
        n: r for n, r in before.items() if n not in rerun
    }
    started = time.perf_counter()
    again = invoke("sweep", "--out", out, "--resume", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["ran"] == 0
    assert time.perf_counter() - started < 5  # nothing to run: Ray is not even started
    words = invoke("sweep", "--out", out, "--resume")
    assert f"All 6 points are done already; results in {out}" in words.stderr
    assert "Sweeping" not in words.stderr
    assert "Swept 0 of 6 points, 6 done already (6 ok, 0 failed) in " in words.stdout
    assert words.stdout.splitlines()[0].endswith("s (no Ray)")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # it ended meanwhile
        return ""


def _worker_priorities(pids: set[int]) -> dict[int, int]:
    """The niceness of each of `pids` that is a Ray worker (`ray::IDLE`, `ray::PointWorker`)."""
    found = {}
    for pid in pids:
        if _command_line(pid).startswith(("ray::IDLE", "ray::PointWorker")):
            try:
                found[pid] = os.getpriority(os.PRIO_PROCESS, pid)
            except OSError:
                continue  # ended meanwhile
    return found


def _address_host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")


@ON_RAY
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_local_ray_stays_on_the_loopback_leaves_sigterm_and_tasks_run_one_thread(ray_tmp, tmp_path):
    from echo_keras.run.lock import OWNER_LOCK, FileLock

    # What a local sweep killed with SIGKILL left (its lock held by nobody), and the folder
    # of a sweep still at work (its lock held): the first goes, the second stays.
    dead, live = (Path(tempfile.mkdtemp(prefix="echo-keras-ray-", dir=ray_tmp)) for _ in "ab")
    (dead / OWNER_LOCK).write_text("12345\n")
    (dead / "session_latest").mkdir()
    # One of the dead sweep's Ray agents, still running, its log open in the folder.
    log = dead / "session_latest" / "agent.log"
    agent = subprocess.Popen(
        ["bash", "-c", f"exec -a ray::DashboardAgent sleep 120 >> {log}"], start_new_session=True
    )
    with log.open("a") as held:  # a process of the user's with the log open: not Ray's
        reader = subprocess.Popen(["sleep", "120"], stdout=held)
    holder = FileLock(live / OWNER_LOCK)
    assert holder.acquire()
    # No token given: the private Ray gets one of its own, and ~/.ray stays untouched.
    home = tmp_path / "home"
    home.mkdir()
    saved = {name: os.environ.pop(name, None) for name in ("RAY_AUTH_TOKEN_PATH", "HOME")}
    os.environ["HOME"] = str(home)
    before = _descendants(os.getpid())  # earlier tests' helpers (the live plot's, say)
    try:
        deadline = time.monotonic() + 10
        while not _command_line(agent.pid).startswith("ray::DashboardAgent 120"):  # exec'd:
            assert time.monotonic() < deadline, "the agent did not start"  # its command line
            time.sleep(0.01)  # does not name the folder, only its open log lies in it
        # Ray's driver would put a handler of C++ on SIGTERM that aborts with a stack dump
        # (a SIGTERM while Ray starts then ends the sweep with exit 134, not its own line).
        caller = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            with cluster.ray_session(None, 2) as ray:
                term = 1 << (signal.SIGTERM - 1)
                assert not signal_mask(os.getpid(), "SigCgt") & term
                assert not dead.exists() and live.is_dir()
                assert agent.wait(timeout=10) == -signal.SIGKILL and reader.poll() is None
                holder.release()
                shutil.rmtree(live)
                worker = ray.remote(num_cpus=1)(workers.PointWorker).remote(cluster.TASK_ENV)
                assert ray.get(worker.environment.remote()) == cluster.TASK_ENV
                ours = (_descendants(os.getpid()) - before) | {os.getpid()}
                priorities = _worker_priorities(ours)
                sockets = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True).stdout
                commands = [_command_line(pid) for pid in ours]
        finally:
            signal.signal(signal.SIGTERM, caller)
    finally:
        for process in (agent, reader):
            process.kill()
            process.wait()
        holder.release()
        shutil.rmtree(live, ignore_errors=True)
        os.environ.update({name: value for name, value in saved.items() if value is not None})
    assert not (home / ".ray").exists()
    # Ray's GCS and raylet, but none of the helpers a sweep does not use (each would import
    # much of Ray at start-up): the autoscaler's monitor, the log monitor, the dashboard.
    assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands)
    unused = ("/autoscaler/_private/monitor.py", "/_private/log_monitor.py", "/dashboard.py ")
    assert not [c for c in commands if any(name in c + " " for name in unused)], commands
    from ray._private import node, services

    assert node.Node.__init__.__qualname__ == "Node.__init__"  # Ray's own again, after
    assert services.start_api_server.__name__ == "start_api_server"
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") == saved["RAY_AUTH_TOKEN_PATH"]
    assert "RAY_worker_niceness" not in os.environ  # set for the local Ray only
    # The workers run at the sweep's own priority, not at Ray's default niceness of 15.
    assert priorities and set(priorities.values()) == {os.getpriority(os.PRIO_PROCESS, 0)}
    lines = [line for line in sockets.splitlines() if any(f"pid={p}," in line for p in ours)]
    assert len(lines) >= 5, sockets  # the GCS, the raylet, workers: listening and connected
    for line in lines:
        local, peer = line.split()[3:5]
        assert _address_host(local) in ("127.0.0.1", "::1"), line
        assert _address_host(peer) in ("127.0.0.1", "::1", "*", "0.0.0.0"), line
    deadline = time.monotonic() + 10
    ours.discard(os.getpid())
    while _descendants(os.getpid()) & ours and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _descendants(os.getpid()) & ours, "Ray's processes outlived ray.shutdown"


@ON_RAY
@pytest.mark.slow
def test_ctrl_c_cancels_the_rest_keeps_the_rows_and_exits_130(ray_tmp, tmp_path):
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "echo-keras"), "sweep", "--out", str(out)]
    command += ["--echo-step", "1-4", "--window", "3-6", *TINY_SWEEP, "--workers", "1"]
    terminal, screen = pty.openpty()  # a terminal, so the progress bar draws
    process = subprocess.Popen(
        command, stdout=screen, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    os.close(screen)
    shown = []
    threading.Thread(target=_read_all, args=(terminal, shown), daemon=True).start()
    deadline = time.monotonic() + 180
    while len(results.read_results(out / "results.csv")) < 1:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no point finished"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C does: the whole foreground group
    started = time.monotonic()
    code = process.wait(timeout=60)
    stderr = process.stderr.read()
    assert code == 130, stderr
    assert time.monotonic() - started < 30
    rows = results.read_results(out / "results.csv")
    error = stderr.strip().splitlines()[-1]
    assert error == (
        f"Error: Interrupted (SIGINT) after {len(rows)} of 16 points; "
        f"resume with echo-keras sweep --out {out} --resume"
    )
    assert 1 <= len(rows) < 16 and all(row["status"] == "ok" for row in rows)
    assert not (out / "heatmap.png").exists()
    assert "points" in b"".join(shown).decode(errors="replace") and "/16" in b"".join(shown).decode(
        errors="replace"
    )
    time.sleep(1)
    assert not [p for p in ray_tmp.iterdir() if p.name.startswith("echo-keras-ray-")]
    assert not _processes_mentioning(str(ray_tmp)), "Ray's processes outlived the sweep"


@ON_RAY
@pytest.mark.slow
def test_sigterm_or_sighup_while_ray_starts_exits_128_plus_it_with_its_line(ray_tmp, tmp_path):
    command = [str(Path(sys.executable).parent / "echo-keras"), "sweep", "--echo-step", "1"]
    command += ["--window", "3", *TINY_SWEEP, "--workers", "1"]
    # Importing Ray; then starting its processes and connecting (ray.init takes SIGTERM).
    for delay, number in ((1.0, signal.SIGTERM), (2.5, signal.SIGTERM), (2.5, signal.SIGHUP)):
        out = tmp_path / f"out-{delay}-{number}"
        process = subprocess.Popen(
            [*command, "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE
        )
        time.sleep(delay)
        process.send_signal(number)
        _, stderr = process.communicate(timeout=60)
        last = stderr.decode().strip().splitlines()[-1]
        assert process.returncode == 128 + number, (delay, stderr.decode())
        assert last.startswith(f"Error: Interrupted ({number.name})"), (delay, last)
    assert not [p for p in ray_tmp.iterdir() if p.name.startswith("echo-keras-ray-")]


def _read_all(fd: int, chunks: list) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return
        chunks.append(data)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


# --- a sweep on a cluster ------------------------------------------------------------------
# The head listens on 127.0.0.1 only and requires a token (RAY_AUTH_MODE=token, the token in a
# file named by RAY_AUTH_TOKEN_PATH). The sweep runs as a separate process with that token file
# but without RAY_AUTH_MODE: joining by address, Ray would send no token; the sweep must turn
# token mode on itself. `ray stop` ends the head whatever happens.

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gcs_environment(folder: Path) -> bytes:
    """The environment of the GCS server whose command line names `folder`."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            if b"gcs_server" in command and str(folder).encode() in command:
                return (entry / "environ").read_bytes()
        except OSError:
            continue
    raise AssertionError("no GCS server of the head found")


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs and token authentication; yields (address, env)."""
    folder = Path(tempfile.mkdtemp(prefix="ekc-", dir="/tmp"))  # short: Unix socket paths
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_TMPDIR"):
        env.pop(name, None)
    port = _free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1"]
    start += ["--port", str(port), "--num-cpus", "2", "--temp-dir", str(folder / "ray")]
    start += ["--include-dashboard=false", "--disable-usage-stats"]
    try:
        started = subprocess.run(
            start, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert b"RAY_AUTH_MODE=token" in _gcs_environment(folder)  # the head wants a token
        yield f"127.0.0.1:{port}", env
    finally:
        stop = [str(BIN / "ray"), "stop", "--force"]  # SIGKILL: nothing of it is kept
        subprocess.run(stop, env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@ON_RAY
@pytest.mark.slow
def test_a_sweep_runs_on_an_authenticated_ray_head(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "out"
    command = [str(BIN / "echo-keras"), "sweep", "--out", str(out), "--address", address]
    command += ["--echo-step", "1", "--window", "3", "--epochs", "3", "--series-length", "6000"]
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["address"] == address and summary["cpus"] == 2
    assert summary["points"] == 1 and summary["ok"] == 1
    rows = {results.point_name(r): r for r in results.read_results(out / "results.csv")}
    assert set(rows) == {"echo1-window3-state4-lstm-seed0"}
    assert all(r["status"] == "ok" and r["host"] == socket.gethostname() for r in rows.values())
    assert float(rows["echo1-window3-state4-lstm-seed0"]["boundary_accuracy"]) >= 0.99
    assert json.loads((out / "sweep.json").read_text())["address"] == address
    assert (out / "heatmap.png").is_file()


# --- feeding warm workers (Ray stood in for) -------------------------------------------------


class _FakeRay:
    """Just enough of Ray for WorkerPool to start workers and submit points."""

    def remote(self, **options):
        return lambda cls: self

    def remote_actor(self, env):
        actor = type("Actor", (), {})()
        actor.run = type("Run", (), {"remote": staticmethod(lambda *args: object())})()
        return actor

    def __getattr__(self, name):  # ActorClass.remote(env)
        raise AttributeError(name)


def _pool(todo, size):
    fake = _FakeRay()
    fake.remote = lambda **options: lambda cls: type("Cls", (), {"remote": fake.remote_actor})
    return workers.WorkerPool(fake, todo, size, keep_run=False)


def test_workers_are_fed_the_longest_shapes_first_and_keep_to_their_shapes():
    todo = grid.make_spec({}, None, {}).points()  # 6 windows x 6 echo steps
    pool = _pool(todo, 2)
    pool.feed()
    first = {slot: config for slot, config, _ in pool.busy.values()}
    windows = sorted(config.truncated_backprop_length for config in first.values())
    assert windows == [2, 3]  # the two shapes with the most batches to train
    for _ in range(5):  # each worker finishes its point and gets another of its own shape
        pool.busy.clear()
        pool.feed()
        for slot, config, _ in pool.busy.values():
            assert config.truncated_backprop_length == first[slot].truncated_backprop_length
    pool.busy.clear()
    pool.feed()  # their shapes are done: each takes a shape the other does not have
    again = sorted(config.truncated_backprop_length for _, config, _ in pool.busy.values())
    assert again == [4, 5]
    assert all(len(slot.shapes) == 2 for slot in pool.slots)


def test_a_shapes_last_points_wait_for_the_worker_that_compiled_it():
    """Both workers idle, points left of one worker's shape only: that worker takes the next,
    and the other waits rather than compile the shape again, whichever is offered first."""
    window4 = grid.make_spec({"echo_step": "1,2,3", "truncated_backprop_length": "4"}, None, {})
    window12 = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "12"}, None, {})
    pool = _pool(window4.points() + window12.points(), 2)
    pool.feed()
    owner = {config.truncated_backprop_length: slot for slot, config, _ in pool.busy.values()}
    pool.slots.sort(key=lambda slot: slot is owner[4])  # the other worker is offered first
    for _ in range(2):
        pool.busy.clear()  # both finished at once
        pool.feed()
        assert [(slot, c.truncated_backprop_length) for slot, c, _ in pool.busy.values()] == [
            (owner[4], 4)
        ]
    assert pool.done() is False and not pool.queue
    assert owner[12].shapes == {shape_key(window12.points()[0])}


def test_a_worker_writes_temporary_files_to_a_folder_of_its_own(tmp_path):
    """Ray ends a worker without the clean-up at exit that would remove TensorFlow's files;
    they go to the worker's own folder, which the sweep removes once the worker is gone."""
    from echo_keras.run.lock import PRIVATE_PREFIX, remove_dead_folders

    code = (
        "import tempfile; from echo_keras.sweep.workers import PointWorker\n"
        "worker = PointWorker({})\n"
        "open(tempfile.mktemp(prefix='__autograph_generated_file'), 'w').close()\n"
        "print(tempfile.gettempdir())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path and folder.name.startswith(PRIVATE_PREFIX)
    assert [p.name for p in folder.iterdir() if p.name.startswith("__autograph")]
    remove_dead_folders(tmp_path, PRIVATE_PREFIX)  # as the sweep does once Ray is down
    assert list(tmp_path.iterdir()) == []


def test_a_folder_whose_owner_has_not_yet_locked_it_is_not_taken_for_a_dead_ones(tmp_path):
    """Its owner creates the lock file, locks it, then stamps its pid in it: a look between
    the first two took the lock and removed a live process's folder (of two workers started
    together, one could then fail to start)."""
    from echo_keras.run.lock import OWNER_LOCK, PRIVATE_PREFIX, remove_dead_folders

    being_made, dead = tmp_path / f"{PRIVATE_PREFIX}new", tmp_path / f"{PRIVATE_PREFIX}dead"
    for folder, stamp in ((being_made, ""), (dead, "12345\n")):  # dead: stamped, then killed
        folder.mkdir()
        (folder / OWNER_LOCK).write_text(stamp)
    remove_dead_folders(tmp_path, PRIVATE_PREFIX)
    assert [p.name for p in tmp_path.iterdir()] == [being_made.name]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_the_heat_map_is_drawn_waits_for_it(tmp_path, monkeypatch, number):
    """The sweep catches SIGINT, SIGTERM and SIGHUP to its end: one that comes while the heat map is
    drawn (here a resumed sweep with nothing left to run, so no Ray) lets the drawing finish,
    and the sweep ends complete instead of dying half-way."""
    from echo_keras.sweep.runner import run_sweep

    out = tmp_path / "out"
    spec = grid.make_spec({"echo_step": "1", "truncated_backprop_length": "2"}, None, {})
    (config,) = spec.points()
    results.write_spec(out.mkdir() or out, spec)
    row = {**config.to_dict(), "status": "ok", "accuracy": 0.9, "boundary_accuracy": 0.8}
    results.write_results(out / "results.csv", [row])
    draw = heatmap.save_heatmap

    def signalled_while_drawing(*args, **kwargs):
        os.kill(os.getpid(), number)
        draw(*args, **kwargs)

    monkeypatch.setattr(heatmap, "save_heatmap", signalled_while_drawing)
    before = signal.getsignal(number)
    result = run_sweep(spec, out, resume=True)
    assert (result.points, result.ok) == (1, 1)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert signal.getsignal(number) == before


ONE_POINT = {
    "echo_step": [1],
    "truncated_backprop_length": [4],
    "state_size": [4],
    "cell": ["lstm"],
}


@pytest.mark.parametrize(
    "grid_changes, seeds, settings, options, fragment",
    [
        ({"echo_step": [-1]}, 1, {}, {}, "echo_step"),
        ({"echo_step": []}, 1, {}, {}, "non-empty list"),
        ({"cell": [1]}, 1, {}, {}, "strs only"),
        ({"echo": [1]}, 1, {}, {}, "grid must hold exactly"),
        ({}, 0, {}, {}, "seeds must be a positive integer"),
        ({}, 1, {"foo": 1}, {}, "foo, which is not a per-run setting"),
        (
            {"echo_step": list(range(1, 201)), "truncated_backprop_length": list(range(1, 101))},
            1,
            {},
            {},
            "at most 10000",
        ),
        ({}, 1, {}, {"workers": 0}, "workers: must be from 1 to 1024"),
        ({}, 1, {}, {"workers": "2"}, "workers: must be from 1 to 1024"),
    ],
)
def test_a_spec_built_by_hand_is_checked_before_anything_starts(
    tmp_path, grid_changes, seeds, settings, options, fragment
):
    """`run_sweep` takes any SweepSpec: one that `make_spec` would refuse is refused the
    same way (exit status 2), before Ray starts and before OUT is made."""
    from echo_keras.errors import EchoKerasError
    from echo_keras.sweep.runner import run_sweep

    grid_ = {**ONE_POINT, **grid_changes}
    if "echo" in grid_changes:
        del grid_["echo_step"]
    spec = grid.SweepSpec(grid_, seeds, {"num_epochs": 1, **settings})
    with pytest.raises(EchoKerasError, match=fragment) as caught:
        run_sweep(spec, tmp_path / "out", **options)
    assert caught.value.exit_status == 2
    assert list(tmp_path.iterdir()) == []


def test_an_out_in_the_way_is_refused_by_the_library_as_by_the_command_line(tmp_path):
    from echo_keras.sweep.runner import run_sweep

    (tmp_path / "file").write_text("mine")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    spec = grid.SweepSpec(ONE_POINT, 1, {"num_epochs": 1})
    for out, fragment in ((tmp_path / "file", "not a folder"), (tmp_path / "dangling", "leads")):
        with pytest.raises(ConfigError, match=fragment):
            run_sweep(spec, out)
        one_line_error(invoke("sweep", "--out", out), "--out", fragment, code=2)
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize(
    "grid_texts, seeds, settings, error, fragment",
    [
        ({"echo_step": 5}, 1, {}, ConfigError, "expected text such as"),
        ({"echo_step": "5"}, "2", {}, ConfigError, "seeds"),
        (None, 1, {}, UsageError, "as dicts"),
        ({"echo": "1"}, 1, {}, UsageError, "no axis echo"),
        ({"echo_step": "1"}, 1, {"foo": 3}, UsageError, "foo"),
    ],
)
def test_make_spec_names_what_it_cannot_take(grid_texts, seeds, settings, error, fragment):
    with pytest.raises(error, match=fragment):
        grid.make_spec(grid_texts, seeds, settings)
