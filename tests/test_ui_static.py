"""Static pages: a notebook run with widget state saved shows the last drawings with no kernel.

nbclient (and ``jupyter nbconvert --execute``) store the state of every widget in the
notebook's metadata.  The panel's views are ``HTML`` widgets whose value *is* the SVG, so the
saved state carries the drawings, and an HTML export embeds them for the page's widget manager.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "10-control-panel.ipynb"


@pytest.mark.needs_dot
def test_an_executed_panel_notebook_keeps_its_drawings(this_python_kernel: str) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name=this_python_kernel,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in state.values()
              if m["model_name"] == "HTMLModel"]
    roles = [v for v in values if 'data-view="roles"' in v]
    assert roles and all("<svg" in v for v in roles)
    assert any('id="a_cpu_role.base.cr0_wp"' in v for v in roles)
    assert any("What just happened" in v for v in values)
    # the plain SVG of mmulib.show is an ordinary output
    last = nb.cells[-1].outputs[-1]
    assert last["data"]["image/svg+xml"].startswith("<svg ")

    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "application/vnd.jupyter.widget-state+json" in body
    assert "a_cpu_role.base.cr0_wp" in body
