"""Sweeps on Ray: every grid point trained and evaluated by warm workers, locally or on a cluster.

`run_sweep` starts a private local Ray on the loopback (or joins a cluster, `cluster.py`),
hands the points to a pool of warm workers (`workers.py`, which train in memory with
`point.py`), and records each result as it comes: a failed point is a row with its message
while the others go on, and results.csv is rewritten atomically after every point. Results
travel as task values, never as files on a worker's disk. Ray is imported only inside the
functions that use it, TensorFlow only in the workers. The grid is in `grid.py`, the files
in `results.py`, the heat map in `heatmap.py`.
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from echo_keras.errors import ConfigError, Interrupted, RunBusy, UsageError
from echo_keras.options import RESUME_HINT
from echo_keras.paths import as_path
from echo_keras.run.files import package_versions
from echo_keras.run.lock import PRIVATE_PREFIX, FileLock, remove_dead_folders, system_tempdir
from echo_keras.signals import SignalCatcher
from echo_keras.sweep.cluster import ray_session, usable_cores
from echo_keras.sweep.grid import SweepSpec, check_spec, plain_spec, workers_problem
from echo_keras.sweep.results import (
    HEATMAP,
    RESULTS,
    RUNS,
    check_out,
    clear,
    keep_run,
    kept_run_conflict,
    point_key,
    point_name,
    read_results,
    remove_staging,
    write_results,
    write_spec,
)
from echo_keras.values import check_switch

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
    # Where the points' time went, in seconds summed over the points run: worker start
    # (TensorFlow's import), compilation, initialisation, training, evaluation, saving
    # (--keep-runs) and scheduling (the rest: queueing, Ray, results in transit).
    parts: dict[str, float] = field(default_factory=dict)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep_runs: bool = False,
    on_row: Callable[[dict, int, int], None] | None = None,
) -> SweepResult:
    """Run every point of `spec` not yet ok in OUT/results.csv, then draw OUT/heatmap.png.

    Args:
        spec: the grid, seeds and settings (`make_spec` builds one from text).
        out: the sweep's folder.
        address: a Ray cluster to join; None starts a private local Ray on the loopback.
        workers: points trained at once on the local Ray (default: the usable cores); a
            cluster trains as many as it has CPUs.
        resume: skip the points already ok in OUT/results.csv.
        overwrite: replace the earlier sweep in OUT (its files go once Ray is up); a folder
            with files but no sweep is never written into.
        keep_runs: keep every point's run folder under OUT/runs/.
        on_row: `on_row(row, done, total)` follows the progress (first with row None).

    Returns:
        A `SweepResult`; a failed point is a row with its error, not an exception.

    Raises:
        ConfigError: a point `train` would refuse, `workers` not from 1 to MAX_WORKERS
            or given with `address`, `resume`, `overwrite` or `keep_runs` not True or
            False, or an OUT that cannot be made or written (or lies in a run folder).
        UsageError: `spec` is not one `make_spec` would make, OUT holds files but no sweep,
            or it holds a sweep and neither `resume` nor `overwrite` was asked for.
        RunBusy: another sweep writes OUT.
        Interrupted: SIGINT, SIGTERM or SIGHUP stopped it (completed rows kept).
        SweepError: results.csv is damaged, or the cluster cannot be joined.
    """
    if not isinstance(spec, SweepSpec):
        raise UsageError(f"spec must be a SweepSpec (see make_spec), got {spec!r:.40}")
    spec = plain_spec(spec)  # numpy numbers as Python's own, as make_spec takes them
    check_spec(spec)  # one built by hand, too
    resume, overwrite = check_switch(resume, "resume"), check_switch(overwrite, "overwrite")
    keep_runs = check_switch(keep_runs, "keep_runs")
    if address is not None and not isinstance(address, str):
        raise ConfigError("address", f"must be a Ray address (text) or None, got {address!r:.40}")
    if on_row is not None and not callable(on_row):
        raise UsageError(f"on_row must be a function or None, got {on_row!r:.40}")
    problem = workers_problem(workers)
    if problem:
        raise ConfigError("workers", problem)
    if workers is not None and address is not None:  # a cluster's CPUs size its pool
        raise ConfigError("workers", "sizes the local Ray; it cannot be used with `address`")
    workers = None if workers is None else int(workers)
    out = as_path(out, "out")
    if resume and overwrite:
        raise UsageError("`overwrite=True` and `resume=True` cannot be used together")
    check_out(out, resume=resume, overwrite=overwrite)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out.resolve().parent / f".{out.resolve().name}.lock")
    if not lock.acquire(stamp=True):
        pid = lock.holder()
        raise RunBusy(f"{out} is being written by another sweep (pid {pid or 'unknown'})")
    try:
        check_out(out, resume=resume, overwrite=overwrite)  # again, now that OUT is ours
        return _run_sweep(spec, out, address, workers, resume, keep_runs, on_row)
    finally:
        lock.release()


WORKERS_GONE_SECONDS = 3.0  # how long the workers may take to exit after Ray's shutdown


def _private_folders() -> set[Path]:
    return set(system_tempdir().glob(f"{PRIVATE_PREFIX}*"))


def _remove_worker_folders(earlier: set[Path]) -> None:
    """Remove the temporary folders the local workers made, once their processes are gone
    (Ray's shutdown returns before they have exited: wait for them a little)."""
    deadline = time.monotonic() + WORKERS_GONE_SECONDS
    while True:
        remove_dead_folders(system_tempdir(), PRIVATE_PREFIX)
        if not _private_folders() - earlier or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _run_sweep(spec, out, address, workers, resume, keep_runs, on_row) -> SweepResult:
    started = time.perf_counter()
    points = spec.points()
    rows = {point_key(row): row for row in (read_results(out / RESULTS) if resume else [])}
    todo = [p for p in points if rows.get(point_key(p.to_dict()), {}).get("status") != "ok"]
    if keep_runs and resume:  # before Ray starts (an overwrite removes the kept runs)
        conflict = kept_run_conflict(out / RUNS, todo)
        if conflict:
            raise UsageError(conflict)
    progress = {
        "started": started,
        "ran": len(todo),
        "done": len(points) - len(todo),
        "startup": 0.0,
        "cpus": 0.0,
        "parts": {},
        "written": False,
    }

    def record(row: dict, archive: bytes | None) -> None:
        problem = keep_run(archive, out / RUNS, point_name(row)) if archive else None
        if problem:  # recorded as failed, not as done without its run folder
            row = {**row, "status": "failed", "error": f"cannot keep its run folder: {problem}"}
        rows[point_key(row)] = row
        write_results(out / RESULTS, list(rows.values()))
        progress["done"] += 1
        if on_row:
            on_row(row, progress["done"], len(points))

    signals = SignalCatcher()  # SIGINT, SIGTERM and SIGHUP
    signals.install()
    earlier = _private_folders()  # the temporary folders of other echo-keras processes
    try:
        try:
            with ExitStack() as stack:
                if todo:
                    stopped = lambda: signals.received is not None  # noqa: E731
                    ray = stack.enter_context(ray_session(address, workers, stopped))
                    signals.install()  # ray.init takes SIGTERM for itself: take it back
                else:
                    ray = None
                progress["startup"] = time.perf_counter() - started
                if signals.received is not None:
                    raise KeyboardInterrupt  # while Ray started: OUT stays as it was
                # Ray is up (or not needed): only now write, so a failed start leaves OUT as it was.
                out.mkdir(parents=True, exist_ok=True)
                remove_staging(out / RUNS)  # what a sweep killed while it kept a run left
                if not resume:
                    clear(out)  # an earlier sweep's files (the caller allowed it: --overwrite)
                write_spec(out, spec, address=address or "local", versions=_versions())
                progress["written"] = True
                write_results(out / RESULTS, list(rows.values()))
                if on_row:
                    on_row(None, progress["done"], len(points))
                if ray is not None:
                    progress["cpus"] = ray.cluster_resources().get("CPU", 0.0)
                    size = workers or (usable_cores() if address is None else progress["cpus"])
                    progress["parts"] = _run_points(
                        ray,
                        todo,
                        keep_runs,
                        signals,
                        record,
                        max(1, int(size)),
                        address is not None,
                    )
        except KeyboardInterrupt:  # ours, or a SIGINT that met Python's or Ray's handler
            signals.received = signals.received or signal.SIGINT
        return _finish(spec, out, points, rows, progress, signals, address)
    finally:
        # Last, so that the local workers exit while the heat map is drawn; then their
        # temporary folders go (whatever ended the sweep). Signals are caught until then.
        try:
            if todo and address is None:
                _remove_worker_folders(earlier)
        finally:
            signals.restore()


def _finish(spec, out, points, rows, progress, signals, address) -> SweepResult:
    """Raise Interrupted if a signal stopped the sweep; else draw the heat map and return
    the sweep's result (a signal that comes while it is drawn waits for the drawing: the
    sweep then ends complete)."""
    if signals.received is not None:
        name = signals.signal_name
        if not progress["written"]:
            raise Interrupted(f"Interrupted ({name}) before the sweep started", signals.received)
        raise Interrupted(
            f"Interrupted ({name}) after {progress['done']} of {len(points)} points; "
            + RESUME_HINT,
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
        ran=progress["ran"],
        skipped=len(points) - progress["ran"],
        ok=len(grid_rows) - len(failed),
        failed=len(failed),
        seconds=time.perf_counter() - progress["started"],
        startup_seconds=progress["startup"],
        cpus=progress["cpus"],
        address=address or "local",
        failures=[f"{point_name(row)}: {row['error']}" for row in failed],
        parts=progress["parts"],
    )


def _run_points(ray, todo, keep_runs, signals, record, size, remote) -> dict[str, float]:
    """Run every point on `size` warm workers, recording each result as it comes, until all
    are in or a signal arrives; return the seconds spent per part, summed over points."""
    from echo_keras.sweep.heatmap import import_matplotlib
    from echo_keras.sweep.workers import WorkerPool

    pool = WorkerPool(ray, todo, size, keep_runs)
    drawing = threading.Thread(target=import_matplotlib, daemon=True)
    drawing.start()  # while the workers start: the heat map at the end is then drawn sooner
    try:
        while not pool.done() and signals.received is None:
            pool.feed()
            for _, value in pool.results(timeout=0.5):
                if signals.received is not None:
                    break  # the signal may have stopped this worker too: not a result
                record(value["row"], value["archive"])
    finally:
        if signals.received is None:
            drawing.join()  # else the sweep ends now: the thread is a daemon
    if remote:
        pool.stop()
    # A local Ray goes down with the sweep, its workers with it. Stopping them here races
    # with workers that the same Ctrl-C interrupted (a terminal signals the whole process
    # group) and can crash Ray's core worker, so a local sweep leaves that to ray.shutdown.
    return pool.seconds


def _versions() -> dict[str, str | None]:
    packages = ("echo-keras", "ray", "tensorflow", "keras", "numpy")
    return {"python": platform.python_version(), **package_versions(*packages)}
