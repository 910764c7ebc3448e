"""Sweeps on Ray: one training per grid point, as Ray Core tasks, locally or on a Ray cluster.

Each point is a task (`run_point`) that trains through the library into a temporary folder,
evaluates with the state carried and with it reset each window, and returns its row (and, with
`keep_runs`, its run folder as zip bytes): results travel as task values, never as files on a
worker's disk. The driver collects them with `ray.wait`, so a failed point is recorded with its
message while the others go on, and rewrites results.csv atomically after every point.

By default Ray runs locally, private to the sweep, on the loopback only; with an address it joins
an existing cluster. Ray is imported only inside the functions that use it, TensorFlow only
inside the task. The grid is in `grid.py`, the files in `results.py`, the heat map in
`heatmap.py`.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import shutil
import signal
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo_keras.config import TrainConfig
from echo_keras.errors import Interrupted, RunBusy, SweepError, first_line
from echo_keras.run.files import package_versions
from echo_keras.run.lock import FileLock
from echo_keras.signals import SignalCatcher
from echo_keras.sweep.grid import SweepSpec
from echo_keras.sweep.results import (
    HEATMAP,
    RESULTS,
    RUNS,
    clear,
    point_key,
    point_name,
    read_results,
    write_results,
    write_spec,
)

# Every task gets one CPU and runs TensorFlow on one thread, on the CPU.
TASK_ENV = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
# A worker's memory grows by about 20 MB per point trained (TensorFlow keeps compiled functions
# even across keras.backend.clear_session()); a fresh worker process after this many points
# bounds it at about 1.3 GB, for one more TensorFlow import (a few seconds) each time.
POINTS_PER_WORKER = 25
# For testing failure handling: the task of the point of this name (see point_name) raises.
FAIL_ENV = "ECHO_KERAS_SWEEP_FAIL"
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # rows and small zipped run folders: plenty


# --- the task -----------------------------------------------------------------------------


def run_point(settings: dict[str, Any], keep_run: bool) -> dict[str, Any]:
    """Train and evaluate one point in a temporary folder; return {"row", "archive"}: its
    results.csv row and, when `keep_run`, its run folder as zip bytes (else None).
    An error of the library becomes a failed row with its message."""
    config = TrainConfig(**settings)
    row: dict[str, Any] = {**config.to_dict(), "host": socket.gethostname(), "status": "ok"}
    with tempfile.TemporaryDirectory(prefix="echo-keras-point-") as tmp:
        name = point_name(settings)
        run_dir = Path(tmp) / name
        try:
            if os.environ.get(FAIL_ENV) == name:
                raise RuntimeError(f"failure injected by {FAIL_ENV}={name}")
            from echo_keras import evaluation, training

            result = training.train(config, run_dir)
            carried = evaluation.evaluate(run_dir)
            reset = evaluation.evaluate(run_dir, reset_each_window=True)
            row.update(
                accuracy=carried.accuracy,
                boundary_accuracy=carried.boundary_accuracy,
                inner_accuracy=carried.inner_accuracy,
                reset_boundary_accuracy=reset.boundary_accuracy,
                final_loss=result.final_loss,
                train_seconds=result.train_seconds,
            )
        except Exception as error:
            row.update(status="failed", error=error_line(error))
        archive = _zip_folder(run_dir) if keep_run and run_dir.is_dir() else None
    return {"row": row, "archive": archive}


def error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}"[:500]


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _unpack_run(archive: bytes, target: Path) -> None:
    """Unpack a zipped run folder into `target`, replacing it whole (never half-written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        zipped.extractall(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


# --- Ray ----------------------------------------------------------------------------------


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_token_if_available() -> None:
    """Joining a cluster by address, Ray sends no token unless RAY_AUTH_MODE=token, and a head
    started by `ray start` where a token exists requires one. Turn token mode on when a token
    is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), as Ray itself does
    for `address="auto"`; an explicit RAY_AUTH_MODE is kept. Takes effect before Ray's import."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    default = Path.home() / ".ray" / "auth_token"
    if any(os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or (
        default.is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


@contextmanager
def ray_session(address: str | None, workers: int | None = None):
    """Start a private local Ray with `workers` CPUs on the loopback (address None), or join
    the cluster at `address`; yield the ray module; shut Ray down and remove its files after."""
    temp_dir = None
    if address is None:
        # Read when Ray is imported: Ray then binds to 127.0.0.1, not to the network.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        base = os.environ.get("RAY_TMPDIR") or "/tmp"  # short: Ray's Unix sockets live below
        temp_dir = tempfile.mkdtemp(prefix="echo-keras-ray-", dir=base)
    else:
        use_token_if_available()
    import ray

    try:
        if address is None:
            ray.init(
                address="local",
                num_cpus=workers or usable_cores(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _temp_dir=temp_dir,
            )
        else:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise SweepError(
                    f"cannot join the Ray cluster at {address}: {error_line(error)}. If the "
                    "head requires a token, put its token (`ray get-auth-token` on the head) "
                    "in ~/.ray/auth_token or RAY_AUTH_TOKEN, and leave RAY_AUTH_MODE unset"
                ) from None
        yield ray
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


# --- the sweep ----------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What `run_sweep` did: the points run, skipped, ok and failed, and the time it took."""

    out: str
    points: int  # in the grid
    ran: int  # run by this call
    skipped: int  # already ok in results.csv (--resume)
    ok: int  # rows of the grid's points in results.csv, by status
    failed: int
    seconds: float  # the whole call
    startup_seconds: float  # starting or joining Ray
    cpus: float  # CPUs of the Ray cluster used (0 when nothing was left to run)
    address: str  # "local" or the cluster's address
    failures: list[str] = field(default_factory=list)  # "point name: error"


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    keep_runs: bool = False,
    on_row: Callable[[dict, int, int], None] | None = None,
) -> SweepResult:
    """Run every point of `spec` not yet ok in OUT/results.csv, then draw OUT/heatmap.png.

    Args:
        spec: the grid, seeds and settings (`make_spec` builds one from text).
        out: the sweep's folder.
        address: a Ray cluster to join; None starts a private local Ray on the loopback.
        workers: points trained at once on the local Ray (default: the usable cores).
        resume: skip the points already ok in OUT/results.csv; without it, an earlier
            sweep's files in OUT are removed once Ray is up.
        keep_runs: keep every point's run folder under OUT/runs/.
        on_row: `on_row(row, done, total)` follows the progress (first with row None).

    Returns:
        A `SweepResult`; a failed point is a row with its error, not an exception.

    Raises:
        RunBusy: another sweep writes OUT.
        Interrupted: SIGINT or SIGTERM stopped it (completed rows kept).
        SweepError: results.csv is damaged, or the cluster cannot be joined.
    """
    out = Path(out)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out.resolve().parent / f".{out.resolve().name}.lock")
    if not lock.acquire(stamp=True):
        pid = lock.holder()
        raise RunBusy(f"{out} is being written by another sweep (pid {pid or 'unknown'})")
    try:
        return _run_sweep(spec, out, address, workers, resume, keep_runs, on_row)
    finally:
        lock.release()


def _run_sweep(spec, out, address, workers, resume, keep_runs, on_row) -> SweepResult:
    started = time.perf_counter()
    points = spec.points()
    rows = {point_key(row): row for row in (read_results(out / RESULTS) if resume else [])}
    todo = [p for p in points if rows.get(point_key(p.to_dict()), {}).get("status") != "ok"]
    progress = {"done": len(points) - len(todo), "startup": 0.0, "cpus": 0.0}

    def record(row: dict, archive: bytes | None) -> None:
        rows[point_key(row)] = row
        write_results(out / RESULTS, list(rows.values()))
        if archive is not None:
            _unpack_run(archive, out / RUNS / point_name(row))
        progress["done"] += 1
        if on_row:
            on_row(row, progress["done"], len(points))

    signals = SignalCatcher((signal.SIGINT, signal.SIGTERM))
    signals.install()
    try:
        with ExitStack() as stack:
            ray = stack.enter_context(ray_session(address, workers)) if todo else None
            signals.install()  # ray.init takes SIGTERM for itself: take it back
            progress["startup"] = time.perf_counter() - started
            # Ray is up (or not needed): only now write, so a failed start leaves OUT as it was.
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                clear(out)  # an earlier sweep's files (the caller allowed it: --overwrite)
            write_spec(out, spec, address=address or "local", versions=_versions())
            write_results(out / RESULTS, list(rows.values()))
            if on_row:
                on_row(None, progress["done"], len(points))
            if ray is not None:
                progress["cpus"] = ray.cluster_resources().get("CPU", 0.0)
                _run_tasks(ray, todo, keep_runs, signals, record, remote=address is not None)
    except KeyboardInterrupt:  # a SIGINT that met Python's or Ray's handler, not ours
        signals.received = signal.SIGINT
    finally:
        signals.restore()
    if signals.received is not None:
        name = signals.signal_name
        raise Interrupted(
            f"Interrupted ({name}) after {progress['done']} of {len(points)} points; "
            f"resume with: echo-keras sweep --out {out} --resume",
            signals.received,
        )
    keys = [point_key(p.to_dict()) for p in points]
    grid_rows = [rows[key] for key in keys if key in rows]
    from echo_keras.sweep.heatmap import save_heatmap  # matplotlib: only once it is needed

    save_heatmap(grid_rows, out / HEATMAP, seeds=spec.seeds)
    failed = [row for row in grid_rows if row["status"] != "ok"]
    return SweepResult(
        out=str(out),
        points=len(points),
        ran=len(todo),
        skipped=len(points) - len(todo),
        ok=len(grid_rows) - len(failed),
        failed=len(failed),
        seconds=time.perf_counter() - started,
        startup_seconds=progress["startup"],
        cpus=progress["cpus"],
        address=address or "local",
        failures=[f"{point_name(row)}: {row['error']}" for row in failed],
    )


def _run_tasks(
    ray, todo: list[TrainConfig], keep_runs: bool, signals: SignalCatcher, record, remote: bool
) -> None:
    """Submit one task per point; record each result as it comes, until all are in or a
    signal arrives; then, on a remote cluster, cancel the rest."""
    env = dict(TASK_ENV)
    if FAIL_ENV in os.environ:
        env[FAIL_ENV] = os.environ[FAIL_ENV]
    task = ray.remote(num_cpus=1, max_retries=0, max_calls=POINTS_PER_WORKER)(run_point)
    task = task.options(runtime_env={"env_vars": env})
    pending = {task.remote(config.to_dict(), keep_runs): config for config in todo}
    while pending and signals.received is None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for ref in ready:
            if signals.received is not None:
                break  # the signal may have stopped this task too: not a result
            config = pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as error:  # Ray could not run it: a crashed worker
                cause = getattr(error, "cause", None) or error
                value = {
                    "row": {**config.to_dict(), "status": "failed", "error": error_line(cause)},
                    "archive": None,
                }
            record(value["row"], value["archive"])
    if not remote:
        # A local Ray goes down with the sweep, its tasks with it. Cancelling them here
        # races with workers that the same Ctrl-C interrupted (a terminal signals the
        # whole process group) and can crash Ray's core worker ("Tried to complete
        # task that was not pending"), so a local sweep leaves that to ray.shutdown.
        return
    for ref in pending:  # left only after a signal: cancel what is queued or running
        try:
            ray.cancel(ref)
        except Exception:
            pass  # it finished meanwhile, or Ray is already going down


def _versions() -> dict[str, str | None]:
    packages = ("echo-keras", "ray", "tensorflow", "keras", "numpy")
    return {"python": platform.python_version(), **package_versions(*packages)}
