"""`echo-keras export`: write the run's model as a verified SavedModel, the state explicit."""

from __future__ import annotations

from pathlib import Path

import typer

from echo_keras.cli.common import RUN_DIR, bad_parameter, fail, warn_if_unfinished
from echo_keras.run.folder import RunFolder


def export(
    run_dir: Path = RUN_DIR,
    out: Path = typer.Option(..., "--out", help="Folder to write the SavedModel to (new)."),
) -> None:
    """Export the trained model as a stateless TensorFlow SavedModel, the state explicit.

    The serving_default signature takes `symbols` (int32, batch x time) and every
    state (float32, batch x units; zeros start a stream) and returns `probabilities`
    and the new states under the same names. The export is reloaded and checked
    against `predict` before it is reported.
    """
    if out.is_symlink():
        raise bad_parameter("--out", f"{out} is a symlink; give the folder's own path")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise bad_parameter("--out", f"{out} already exists; give a new folder")
    if not out.parent.is_dir():
        raise bad_parameter("--out", f"folder {out.parent} does not exist")
    if out.resolve().is_relative_to(RunFolder(run_dir).real):
        raise bad_parameter("--out", "is inside the run folder, which --overwrite replaces whole")
    RunFolder(run_dir).read_config()  # a missing or damaged run, before TensorFlow
    from echo_keras.stream.export import export_saved_model

    try:
        report = export_saved_model(run_dir, out)
    except OSError as error:
        raise fail(f"cannot write {out}: {error}") from None
    warn_if_unfinished(run_dir)
    typer.echo(report.describe())
