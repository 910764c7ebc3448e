"""`echo-keras export`: write the run's model as a verified SavedModel, the state explicit."""

from __future__ import annotations

from pathlib import Path

import typer

from echo_keras.cli.common import (
    RUN_DIR,
    bad_parameter,
    nonempty_path,
    report_of_kept_work,
    warn_if_unfinished,
)
from echo_keras.options import as_flags
from echo_keras.run.folder import RunFolder
from echo_keras.stream.export_folder import out_problem


def export(
    run_dir: Path = RUN_DIR,
    out: Path = typer.Option(
        ...,
        "--out",
        parser=nonempty_path,
        metavar="<dir>",
        help="Folder to write the SavedModel to (new, or empty).",
    ),
) -> None:
    """Export the trained model as a stateless TensorFlow SavedModel, the state explicit.

    The serving_default signature takes `symbols` (int32, batch x time) and every
    state (float32, batch x units; zeros start a stream) and returns `probabilities`
    and the new states under the same names. The export is reloaded and checked
    against `predict` before it is reported; a symbol outside the run's classes, a state
    that is not finite or of another batch size is answered with an error.
    """
    RunFolder(run_dir).read_config()  # a missing or damaged run, first, before TensorFlow
    problem = out_problem(out, run_dir)
    if problem:
        raise bad_parameter("--out", as_flags(problem))
    from echo_keras.stream.export import export_saved_model

    report = export_saved_model(run_dir, out)
    warn_if_unfinished(run_dir)
    with report_of_kept_work():
        typer.echo(report.describe())
