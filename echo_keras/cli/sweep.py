"""`echo-keras sweep`: parse the grid, run the sweep on Ray, print the progress.

Imports neither TensorFlow nor Ray at module level, so `echo-keras sweep --help` answers
at once; the sweep itself lives in `sweep/`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from echo_keras.cli.common import (
    AS_JSON,
    QUIET,
    JsonOutput,
    Resume,
    bad_parameter,
    fail,
    given_settings,
    nonempty_path,
    notice,
    report_of_kept_work,
    setting,
)
from echo_keras.cli.stdio import stdout_to_stderr
from echo_keras.errors import ConfigError, SweepError, UsageError
from echo_keras.options import AXES, OPTIONS
from echo_keras.sweep.grid import DEFAULT_GRID, DEFAULT_SEEDS, make_spec, workers_problem
from echo_keras.sweep.results import SWEEP_JSON, check_out, read_spec


def _listed(name: str) -> str:
    values = DEFAULT_GRID[name]
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


def _grid_option(name: str, what: str) -> typer.Option:
    return typer.Option(
        None,
        OPTIONS[name].flag,
        help=f"{what}: a list and ranges, e.g. 1,2,4 or 1-12.  [default: {_listed(name)}]",
    )


def sweep(
    out: Path = typer.Option(
        Path("runs/sweep"),
        "--out",
        parser=nonempty_path,
        metavar="<dir>",
        help="The sweep's folder.",
    ),
    echo_step: str | None = _grid_option("echo_step", "Echo delays"),
    truncated_backprop_length: str | None = _grid_option(
        "truncated_backprop_length", "Window lengths"
    ),
    state_size: str | None = _grid_option("state_size", "State sizes (units)"),
    cell: str | None = typer.Option(
        None, "--cell", help="Cells: a list of lstm, gru, simple.  [default: lstm]"
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", help=f"Seeds per point (0..N-1).  [default: {DEFAULT_SEEDS}]"
    ),
    num_epochs: int | None = setting("num_epochs", "Epochs per run.  [default: 5]"),
    total_series_length: int | None = setting(
        "total_series_length", "Symbols per epoch.  [default: 50000]"
    ),
    batch_size: int | None = setting("batch_size", "Rows per batch.  [default: 5]"),
    learning_rate: float | None = setting(
        "learning_rate", "Learning rate.  [default: the optimizer's, 0.3 for adagrad]"
    ),
    optimizer: str | None = setting("optimizer"),
    num_layers: int | None = setting("num_layers"),
    workers: int | None = typer.Option(
        None, help="Points trained at once on the local Ray.  [default: the usable cores]"
    ),
    address: str | None = typer.Option(
        None,
        envvar="RAY_ADDRESS",
        help="Run on the Ray cluster at this address (host:port, or auto on a node of it).",
    ),
    keep_runs: bool = typer.Option(
        False, "--keep-runs", help="Keep every point's run folder under OUT/runs/."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the sweep in --out: skip the points already done."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Discard the sweep already in --out and start afresh."
    ),
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
) -> None:
    """Train and evaluate one run per grid point (echo step x window x state size x cell x seed)
    on warm Ray workers, locally or on a Ray cluster; write results.csv and heatmap.png."""
    address = address or None  # an empty RAY_ADDRESS means none
    if workers is not None and address:
        raise UsageError("--workers sizes the local Ray; it cannot be used with --address")
    problem = workers_problem(workers)
    if problem:
        raise bad_parameter("--workers", problem)
    if resume and overwrite:
        raise UsageError("--overwrite and --resume cannot be used together")
    Resume.command = Resume.sweep(out)
    given = given_settings(locals())
    grid_texts = {name: value for name, value in given.items() if name in AXES}
    settings = {name: value for name, value in given.items() if name not in AXES}
    if not resume:  # a grid that cannot work is named before --out is looked at
        spec = make_spec(grid_texts, seeds, settings)
    check_out(out, resume=resume, overwrite=overwrite)
    if resume:
        spec = _resumed_spec(out, given, grid_texts, seeds, settings)

    from echo_keras.sweep import runner as sweep_lib
    from echo_keras.sweep.cluster import check_address, usable_cores

    if address is not None:
        check_address(address)  # a usage error before anything starts
    notices = not (quiet or as_json)
    total = len(spec.points())
    bar = _Progress(total) if notices and sys.stdout.isatty() else None

    def on_row(row, done, total):
        if row is None and notices and done == total:  # resumed, nothing left: no Ray
            notice(f"All {total} points are done already; results in {out}")  # or lost
        elif row is None and notices:  # Ray is up, the sweep starts
            count = workers or (usable_cores() if not address else None)
            notice(start_notice(total, total - done, address, count, out))  # lost if it fails
        if bar:
            bar.advance(row, done, total)

    try:
        with stdout_to_stderr(as_json or not sys.stdout.isatty()):
            result = sweep_lib.run_sweep(
                spec,
                out,
                address=address,
                workers=workers,
                resume=resume,
                overwrite=overwrite,
                keep_runs=keep_runs,
                on_row=on_row,
            )
    except OSError as error:
        raise fail(f"cannot write the sweep: {error}") from None
    finally:
        if bar:
            bar.close()
    _report(result, as_json, quiet)


def start_notice(total: int, left: int, address: str | None, count: int | None, out) -> str:
    """What a sweep says once Ray is up: the points it runs (`left` of `total`), where, and on
    how many workers (`count` at most, one a point: the pool starts no idle worker)."""
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    points = f"{total} point{'s' * (total != 1)}"
    if left < total:  # resumed
        points = f"the {left} point{'s' * (left != 1)} left of {total}"
    text = f"Sweeping {points} on {where}"
    if count:
        count = min(count, left)
        text += f" with {count} worker{'s' * (count != 1)}"
    return f"{text}; results in {out}"


def _report(result, as_json: bool, quiet: bool) -> None:
    with report_of_kept_work():
        _print_summary(result, as_json, quiet)
    if result.failed:
        for line in result.failures[:3]:
            notice(f"Failed: {line}")
        raise fail(
            f"{result.failed} of {result.points} points failed (see the error column of "
            f"{Path(result.out) / 'results.csv'}); rerun them with: "
            f"{Resume.sweep(Path(result.out))}"
        )


def _print_summary(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        keys = ("out", "points", "ran", "skipped", "ok", "failed", "seconds", "startup_seconds")
        summary = {key: getattr(result, key) for key in keys}
        summary.update(
            cpus=result.cpus,
            address=result.address,
            results=str(Path(result.out) / "results.csv"),
            heatmap=str(Path(result.out) / "heatmap.png"),
            failures=result.failures,
            parts={name: round(value, 3) for name, value in result.parts.items()},
        )
        JsonOutput.echo(json.dumps(summary))
    elif not quiet:
        swept = f"{result.points} point{'s' * (result.points != 1)}"
        if result.skipped:  # resumed: what this call ran, of the whole sweep's
            other = "the other " if result.ran else ""
            swept = f"{result.ran} of {swept}, {other}{result.skipped} done already"
        typer.echo(
            f"Swept {swept} ({result.ok} ok, {result.failed} failed) "
            f"in {result.seconds:.1f} s "
            + (f"on {result.cpus:g} CPU{'s' * (result.cpus != 1)}" if result.cpus else "(no Ray)")
        )
        typer.echo(f"Results: {Path(result.out) / 'results.csv'}")
        typer.echo(f"Heat map: {Path(result.out) / 'heatmap.png'}")


class _Progress:
    """Rich's progress bar (points done of total, elapsed, ETA), for a terminal."""

    def __init__(self, total: int, console=None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("points"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("sweep", total=total)
        self.progress.start()

    def advance(self, row: dict | None, done: int, total: int) -> None:
        if row is None:  # the start: points already done count, but not toward the speed
            self.progress.reset(self.task, completed=done, total=total)
        else:
            self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()


def _resumed_spec(out: Path, given: dict, grid_texts: dict, seeds: int | None, settings: dict):
    """The spec of the sweep in `out` to resume (`check_out` found its sweep.json), with the
    flags given; SweepError (exit 1) if its sweep.json is damaged."""
    base = read_spec(out)
    try:
        return make_spec(grid_texts, seeds, settings, base)
    except ConfigError as error:
        from_file = error.field not in given and not (error.field == "seeds" and seeds is not None)
        if from_file:  # a value of sweep.json's, not a flag's
            damaged = f"{out / SWEEP_JSON} is damaged: {error.field}: {error.reason}"
            raise SweepError(damaged) from None
        raise
