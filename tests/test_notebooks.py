"""Every notebook runs headless, top to bottom, from the repository root; the run inspector (which runs
the tiny main job itself) shows its plots."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
MIN_IMAGES = {"inspect.ipynb": 4}


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    images = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) >= MIN_IMAGES.get(notebook.name, 0)
