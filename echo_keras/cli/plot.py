"""`echo-keras plot`: draw the tutorial's figure of a run (no TensorFlow imported)."""

from __future__ import annotations

from pathlib import Path

import typer

from echo_keras.cli.common import RUN_DIR, file_path, report_of_kept_work, warn_if_unfinished


def plot(
    run_dir: Path = RUN_DIR,
    out: Path | None = typer.Option(
        None,
        parser=file_path,
        metavar="<file>",
        help="Where to write the figure; the extension picks the format (png, svg, pdf, "
        "jpg, ...).  [default: RUN_DIR/plot.png]",
    ),
) -> None:
    """Draw the tutorial's figure (loss curve and the last batch) from a run folder."""
    from echo_keras.plots.figure import plot_run

    path = plot_run(run_dir, out)  # its note, ignored as a warning (app.py), is printed here
    warn_if_unfinished(run_dir, model=False)  # the figure uses no model
    with report_of_kept_work():
        typer.echo(str(path))
