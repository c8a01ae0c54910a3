"""The tutorial notebooks, executed top to bottom (nbclient) as a reader would run them: each ends
with assertions on its own numbers, so a notebook that runs but computes the wrong thing fails."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_its_checks_hold(path, tmp_path, monkeypatch):
    monkeypatch.delenv("TVMQ_TUTORIAL_TRIALS", raising=False)  # the notebooks' own fast defaults
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs: clear them (they go stale)"
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
