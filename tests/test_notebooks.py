"""Every notebook in notebooks/ runs top to bottom, cleanly, in a fresh kernel.

"Cleanly" means no error output and nothing on stderr, which is where Python warnings go: a
notebook that prints a DeprecationWarning to a reader is a failing notebook.

The kernel is this interpreter (the .venv's python under ``make test``), not whatever a
``python3`` kernel spec elsewhere on the machine points to: the test writes its own ``python3``
kernel spec and puts it first on JUPYTER_PATH.

A notebook that renders diagrams with Graphviz's ``dot`` says so in its metadata,
``"mmulib": {"needs_dot": true}``, and then runs under the ``needs_dot`` marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 60  # seconds


def _param(path: Path):
    meta = json.loads(path.read_text()).get("metadata", {}).get("mmulib", {})
    marks = [pytest.mark.needs_dot] if meta.get("needs_dot") else []
    return pytest.param(path, id=path.name, marks=marks)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb files"


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs_cleanly(path, this_python_kernel):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=this_python_kernel,
        resources={"metadata": {"path": str(path.parent)}},  # cwd = notebooks/
    )
    client.execute()

    problems = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {index}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {index} wrote to stderr: {out.text.strip()[:500]}")
    assert problems == [], "\n".join(problems)
