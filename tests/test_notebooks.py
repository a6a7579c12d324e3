"""Every notebook runs top to bottom in a fresh kernel, and is committed without outputs.

The notebooks run in fast mode (``EDU_SEG_FAST=1``: smaller data, fewer epochs), each in a new
``python3`` Jupyter kernel started in ``notebooks/`` with this checkout first on its
``PYTHONPATH``, so they use the code under test rather than an installed copy. Any exception in
any cell fails the test and names the cell. ``make notebooks`` runs them in full and keeps the
outputs (as HTML under ``build/notebooks/``).
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = ROOT / "chapters"


def test_every_chapter_has_its_notebook():
    chapters = sorted(p.stem for p in CHAPTERS.glob("[0-9][0-9]-*.md"))
    assert chapters, "no chapters found"
    assert [p.stem for p in NOTEBOOKS] == chapters


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_ends_with_summary_and_exercises(path):
    text = (CHAPTERS / f"{path.stem}.md").read_text()
    assert "\n## Summary\n" in text and "\n## Exercises\n" in text
    exercises = text.split("\n## Exercises\n", 1)[1]
    numbered = [line for line in exercises.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert len(numbered) >= 3, f"{path.stem}: needs at least three exercises"
    nb = nbformat.read(path, as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code" and 'check("Exercise' in c.source]
    assert len(checks) >= 3, f"{path.name}: needs a check cell per exercise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    # The kernel is a child process: it inherits this environment.
    monkeypatch.setenv("EDU_SEG_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    # A check cell of an unattempted exercise says so instead of passing silently.
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "not attempted yet" in printed
