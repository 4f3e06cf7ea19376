"""Chapter 08 on a machine without KVM: it shows the recorded run, cleanly, in under 30 s.

``tests/test_notebooks.py`` runs every chapter as the machine allows (here: the live probe when
/dev/kvm and tracefs are usable).  This test forces the other path with ``MMULIB_PROBE=recorded``,
the path Binder and laptops without KVM take, and checks what the reader is told.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "notebooks" / "08-check-your-kernel.ipynb"

pytestmark = pytest.mark.needs_dot


def test_chapter_08_shows_the_recorded_run_without_kvm(this_python_kernel, monkeypatch):
    monkeypatch.setenv("MMULIB_PROBE", "recorded")
    nb = nbformat.read(CHAPTER, as_version=4)
    start = time.monotonic()
    NotebookClient(nb, timeout=60, kernel_name=this_python_kernel,
                   resources={"metadata": {"path": str(CHAPTER.parent)}}).execute()
    assert time.monotonic() - start < 30
    texts, problems = [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error" or (out.output_type == "stream"
                                               and out.name == "stderr"):
                problems.append(f"cell {i}: {out}")
            elif out.output_type == "stream":
                texts.append(out.text)
    assert problems == []
    said = "".join(texts)
    assert "20 scripts, the recorded example from Linux 6.18.44" in said
    assert "MMULIB_PROBE=recorded is set" in said
    assert "KVM_CAP_X86_SMM is 0 (this KVM offers no SMM)" in said


def test_chapter_08_is_listed_with_its_drawings_marked():
    nb = json.loads(CHAPTER.read_text())
    assert nb["metadata"]["mmulib"] == {"needs_dot": True}
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# 08 · Check your kernel")
    assert "[07 The TDP MMU](07-the-tdp-mmu.ipynb)" in first
