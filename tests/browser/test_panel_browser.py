"""The control panel in a real JupyterLab, driven by headless Chromium through Playwright.

The test starts its own JupyterLab on 127.0.0.1 (a free port, no token, a temporary root,
runtime, settings and workspace directory, ``--allow-root`` for CI machines that run as root),
opens a copy of ``notebooks/10-control-panel.ipynb`` in Debian's ``/usr/bin/chromium`` with a
fresh profile, runs it, and clicks:

1. on 6.4 with EPT, ``CR0.WP``: the ``cpu_role.base.cr0_wp`` cell of the roles drawing changes
   (1 -> "0 lazy") while the root-cache drawing stays exactly as it was;
2. era 5.17, then ``CR0.WP`` again: the root-cache drawing changes and says the TDP MMU root
   was freed.

It records the click-to-redraw latency of each click (printed, and kept as the test's
``record_property``) and saves screenshots of the panel after each click in the test's
temporary directory; with ``MMULIB_UPDATE_SCREENSHOT=1`` it also copies the 6.4 one to
``docs/img/panel.png`` for the README.
Nothing is installed at run time: the test is skipped (or fails, with MMULIB_REQUIRE_TOOLS=1)
when Chromium or Graphviz is missing; ``make test`` installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import serve_lab

pytestmark = [pytest.mark.browser, pytest.mark.needs_dot]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "10-control-panel.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT = 120_000  # milliseconds for the page, the kernel and the panel

# Settings so that nothing covers the notebook and every cell stays in the DOM.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

KERNEL_READY = """() => {
  const k = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
  return k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

# Resolves with the milliseconds from the next click on `button` to the next change of `view`.
WATCH = """([button, view]) => {
  window.__mmulibLatency = new Promise((resolve) => {
    let clicked = null;
    button.addEventListener('click', () => { clicked = performance.now(); },
                            {capture: true, once: true});
    const obs = new MutationObserver(() => {
      if (clicked !== null) { obs.disconnect(); resolve(performance.now() - clicked); }
    });
    obs.observe(view, {childList: true, subtree: true, characterData: true});
  });
}"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab of our own, serving a copy of the panel notebook; yields its base URL."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    with serve_lab(tmp_path, root, SETTINGS) as base:
        yield base


def test_wp_switch_redraws_roles_keeps_roots_on_6_4_and_drops_them_on_5_17(
        lab: str, tmp_path: Path, record_property) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 2400})
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT)
            page.goto(f"{lab}/lab/tree/{NOTEBOOK.name}")
            page.wait_for_function("() => window.jupyterapp !== undefined")
            page.wait_for_function(KERNEL_READY)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel = page.locator(".mmulib-panel").first
            roles = panel.locator(".mmulib-view-roles")
            roots = panel.locator(".mmulib-view-roots")
            what = panel.locator(".mmulib-what")
            wp_cell = roles.locator('[id="a_cpu_role.base.cr0_wp"] text')
            wp_cell.wait_for()
            page.wait_for_function(KERNEL_READY)
            assert page.get_by_text("Error displaying widget").count() == 0
            assert wp_cell.text_content() == "1"
            roots_before = roots.inner_html()

            # 6.4, EPT: the guest clears CR0.WP.
            switch = panel.locator(".mmulib-bit-CR0-WP")
            latency_64 = click_and_time(page, switch, roles)
            what.get_by_text("CR0.WP 1→0").wait_for()
            assert wp_cell.text_content() == "0 lazy"
            assert "root_role unchanged" in what.inner_text()
            assert roots.inner_html() == roots_before
            assert panel.locator(".mmulib-errors").inner_text() == ""
            shot = tmp_path / "panel-6.4.png"
            panel.screenshot(path=str(shot))

            # 5.17: the same click drops the roots.
            panel.locator(".mmulib-era select").first.select_option("5.17")
            what.get_by_text("Now 5.17 with EPT").wait_for()
            roots_517 = roots.inner_html()
            latency_517 = click_and_time(page, switch, roles)
            what.get_by_text("CR0.WP 0→1").wait_for()
            page.wait_for_function("(old) => document.querySelector("
                                   "'.mmulib-panel .mmulib-view-roots').innerHTML !== old",
                                   arg=roots_517)
            assert "drops its root" in what.inner_text()
            assert "TDP MMU root 0x00001784 freed" in roots.inner_html()
            assert panel.locator(".mmulib-errors").inner_text() == ""

            panel.screenshot(path=str(tmp_path / "panel-5.17.png"))
            if os.environ.get("MMULIB_UPDATE_SCREENSHOT"):
                (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, ROOT / "docs" / "img" / "panel.png")
        finally:
            context.close()
    record_property("click_to_redraw_ms_6_4", round(latency_64, 1))
    record_property("click_to_redraw_ms_5_17", round(latency_517, 1))
    print(f"\nclick to redraw: 6.4 {latency_64:.0f} ms, 5.17 {latency_517:.0f} ms; "
          f"screenshots in {tmp_path}")


def click_and_time(page, switch, view) -> float:
    """Click ``switch``; milliseconds until ``view``'s content changes."""
    page.evaluate(WATCH, [switch.element_handle(), view.element_handle()])
    switch.click()
    return float(page.evaluate("() => window.__mmulibLatency"))
