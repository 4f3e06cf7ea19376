"""Every notebook runs in a real JupyterLab, driven by headless Chromium through Playwright.

One JupyterLab for the module, of our own: 127.0.0.1, a free port, no token, ``--allow-root``
(CI runs as root), temporary runtime, config, settings and workspace directories, and a
``python3`` kernel spec that runs this interpreter (the .venv's python, with mmulib installed
editable).  Its root directory holds a *copy* of ``notebooks/`` (solutions included), so
nothing the browser does, autosave included, ever writes executed outputs into the repository.

For each ``notebooks/*.ipynb`` (sorted, one test each) the test opens
``lab/tree/notebooks/<name>``, waits for the kernel to be idle, runs JupyterLab's own
``notebook:run-all-cells`` command, waits until the kernel is idle again and no prompt shows
``[*]``, and then checks that

* no cell has an error output or wrote to stderr (in the notebook model, and no stderr or
  traceback is rendered on the page; Python warnings go to stderr, so a warning fails too),
* every code cell has an execution count,
* no widget failed to render ("Error displaying widget").

A full-page screenshot of each executed notebook is saved to
``$MMULIB_ARTIFACTS/notebooks/<name>.png`` (default ``artifacts/notebooks/``, which git
ignores); the page is made as tall as the notebook (up to ``MAX_SHOT_HEIGHT``) so that the
screenshot shows every cell.  The time each notebook took is printed and kept as the test's
``record_property`` (``seconds_open``, ``seconds_run``).

Marked ``browser`` (skipped without /usr/bin/chromium, an error with MMULIB_REQUIRE_TOOLS=1);
notebooks whose metadata says ``"mmulib": {"needs_dot": true}`` are also ``needs_dot``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import serve_lab

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OPEN_TIMEOUT = 120_000  # ms: the first page load and kernel start can take a while
RUN_TIMEOUT = 120_000  # ms for one notebook's cells (each takes well under 30 s)
VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_HEIGHT = 30_000  # px; longer notebooks are cut off at the bottom

# Nothing covers the notebook, every cell stays in the DOM, nothing is ever saved.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none", "scrollPastEnd": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

NOTEBOOK_JS = "window.jupyterapp?.shell.currentWidget"

KERNEL_IDLE = f"""(path) => {{
  const nb = {NOTEBOOK_JS};
  if (!nb || nb.context?.path !== path) return false;
  const k = nb.sessionContext?.session?.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}}"""

# The run-all command finished, the kernel is idle and no prompt says [*] (queued or running).
SETTLED = f"""(path) => {{
  if (window.__mmulibRunAll === 'running') return false;
  const nb = {NOTEBOOK_JS};
  if (!nb || nb.context?.path !== path) return false;
  const k = nb.sessionContext?.session?.kernel;
  if (!k || k.connectionStatus !== 'connected' || k.status !== 'idle') return false;
  return ![...nb.node.querySelectorAll('.jp-InputPrompt')]
    .some((p) => p.textContent.includes('[*]'));
}}"""

# Started here, awaited by wait_for_function (page.evaluate has no timeout of its own).
RUN_ALL = """() => {
  window.__mmulibRunAll = 'running';
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    () => { window.__mmulibRunAll = 'done'; },
    (err) => { window.__mmulibRunAll = 'failed: ' + err; });
}"""

# What the notebook model holds after the run: per code cell, its count and its outputs.
CELLS = f"""() => {{
  const cells = {NOTEBOOK_JS}.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {{
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const outputs = [];
    for (let j = 0; j < c.outputs.length; j++) outputs.push(c.outputs.get(j).toJSON());
    out.push({{index: i, count: c.executionCount, outputs}});
  }}
  return out;
}}"""

# How tall the page must be for the notebook to show without scrolling.
NEEDED_HEIGHT = f"""() => {{
  const nb = {NOTEBOOK_JS};
  const scroller = nb.content.node.querySelector('.jp-WindowedPanel-outer') || nb.content.node;
  return document.documentElement.clientHeight - scroller.clientHeight + scroller.scrollHeight;
}}"""


def notebook_params() -> list:
    params = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("mmulib", {})
        marks = [pytest.mark.needs_dot] if meta.get("needs_dot") else []
        params.append(pytest.param(path.name, id=path.name, marks=marks))
    return params


def api(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[str]:
    """One JupyterLab of our own serving a copy of notebooks/; yields its base URL."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    shutil.copytree(NOTEBOOKS, root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    with serve_lab(tmp, root, SETTINGS) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright  # a test dependency: missing is an error

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("MMULIB_ARTIFACTS", ROOT / "artifacts")) / "notebooks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_there_are_notebooks():
    assert notebook_params(), "notebooks/ has no .ipynb files"


@pytest.mark.parametrize("name", notebook_params())
def test_notebook_runs_in_jupyterlab_without_errors(name, lab, browser, artifacts,
                                                    record_property):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    path = f"notebooks/{name}"
    page = browser.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        start = time.monotonic()
        # ?reset: a fresh workspace, so notebooks opened by earlier tests are not restored.
        page.goto(f"{lab}/lab/tree/{path}?reset", timeout=OPEN_TIMEOUT)
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=OPEN_TIMEOUT)
        page.evaluate("() => window.jupyterapp.started")
        page.wait_for_function(KERNEL_IDLE, arg=path, timeout=OPEN_TIMEOUT, polling=100)
        opened = time.monotonic()

        problems = []
        page.evaluate(RUN_ALL)
        try:
            page.wait_for_function(SETTLED, arg=path, timeout=RUN_TIMEOUT, polling=100)
        except PlaywrightTimeout:  # still report what ran and save the screenshot
            problems.append(f"still running after {RUN_TIMEOUT / 1000:.0f} s")
        ran = time.monotonic()
        run_all = page.evaluate("() => window.__mmulibRunAll")
        if run_all != "done":
            problems.append(f"notebook:run-all-cells {run_all}")

        cells = page.evaluate(CELLS)
        for cell in cells:
            if cell["count"] is None:
                problems.append(f"cell {cell['index']} has no execution count")
            for out in cell["outputs"]:
                if out.get("output_type") == "error":
                    problems.append(f"cell {cell['index']}: {out.get('ename')}: "
                                    f"{out.get('evalue')}")
                elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                    text = "".join(out.get("text", ""))
                    problems.append(f"cell {cell['index']} wrote to stderr: {text[:500]}")
        stderr_shown = page.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
            '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]').count()
        if stderr_shown:
            problems.append(f"{stderr_shown} stderr/error output(s) rendered on the page")
        if page.locator(".jp-OutputArea-output").get_by_text("Traceback").count():
            problems.append("a traceback is shown on the page")
        if page.get_by_text("Error displaying widget").count():
            problems.append("a widget failed to render: 'Error displaying widget'")

        # As tall as the notebook, without the file browser, so the screenshot shows all cells.
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        height = VIEWPORT["height"]
        for _ in range(3):  # text reflows a little at a new size; repeat until it fits
            needed = min(MAX_SHOT_HEIGHT, max(VIEWPORT["height"], page.evaluate(NEEDED_HEIGHT)))
            if needed == height:
                break
            height = needed
            page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
            page.wait_for_timeout(300)  # let the layout settle at the new size
        page.screenshot(path=str(artifacts / f"{Path(name).stem}.png"), full_page=True)
    finally:
        page.close()
        for session in api(lab, "/api/sessions"):  # shut its kernel down; nothing is saved
            api(lab, f"/api/sessions/{session['id']}", method="DELETE")

    record_property("seconds_open", round(opened - start, 1))
    record_property("seconds_run", round(ran - opened, 1))
    print(f"\n{name}: opened in {opened - start:.1f} s, ran {len(cells)} code cells "
          f"in {ran - opened:.1f} s; screenshot {artifacts / (Path(name).stem + '.png')}")
    assert cells, f"{name}: no code cells found in the notebook model"
    assert problems == [], f"{name}:\n" + "\n".join(problems)
    assert page_errors == [], f"{name}: uncaught errors in the page: {page_errors}"
