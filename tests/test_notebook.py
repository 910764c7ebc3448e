"""docs/tutorial.ipynb runs from top to bottom, on a small configuration, without an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"
SMALL = (
    "config = ek.TrainConfig(num_epochs=2, total_series_length=1500, truncated_backprop_length=10)"
)


def test_the_tutorial_notebook_runs_every_cell_without_an_error(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = SMALL
    environment = {**os.environ, "TMPDIR": str(tmp_path)}  # the notebook's work folder
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=environment)  # raises CellExecutionError naming the cell that failed

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure was not shown"
    text = "".join(o.get("text", "") for o in outputs)
    assert "the SavedModel agrees with predict on 40 symbols" in text
    assert "RunExists 2" in text
    assert not list(tmp_path.glob("echo-keras-tutorial-*")), "the work folder was left behind"
