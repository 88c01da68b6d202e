"""The example notebooks are committed without outputs: ``make test`` runs them (nbmake), git keeps only the code.

Outputs in git would carry inlined plotly.js (megabytes), stale numbers and machine paths, and make every
re-run a diff. Clear them before committing (Jupyter: Edit → Clear Outputs of All Cells; or
``jupyter nbconvert --clear-output --inplace examples/*.ipynb``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_are_example_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks under {EXAMPLES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_no_outputs_and_no_execution_counts(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    dirty = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            dirty.append(f"cell {index} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            dirty.append(f"cell {index} has execution_count {cell['execution_count']}")
    assert not dirty, f"{path.name} is not stripped: " + "; ".join(dirty)
