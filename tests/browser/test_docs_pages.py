"""The built docs pages in a real browser: Binder link, SVG drawings, widgets from saved state.

Builds the site once (scripts/build_docs.py, widget renderer copied in from npm when possible),
serves it on 127.0.0.1 and opens every page in Debian's headless Chromium through Python
Playwright.  A full-page screenshot of each page is saved to ``$MMULIB_ARTIFACTS/docs/``
(default ``artifacts/docs/`` in the repository, which git ignores).

Marked ``browser`` (skipped without /usr/bin/chromium) and ``needs_dot`` (the chapters draw
with Graphviz).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.needs_dot]

STATIC_SVGS = """() => [...document.querySelectorAll('.jp-OutputArea-output svg')]
    .filter(e => !e.closest('.jupyter-widgets, .widget-html-content')).length"""


@pytest.fixture(scope="module")
def site(built_site):
    out = built_site
    return out, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on 127.0.0.1 (a free port), as a static host would serve it."""
    out, _ = site

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture(scope="module")
def artifacts():
    path = Path(os.environ.get("MMULIB_ARTIFACTS", ROOT / "artifacts")) / "docs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pages():
    return sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


@pytest.mark.parametrize("notebook", _pages())
def test_page_shows_binder_link_and_drawings(notebook, site, server, browser, artifacts):
    _, manifest = site
    page_info = next(p for p in manifest["pages"] if p["notebook"] == f"notebooks/{notebook}")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{server}/{page_info['html']}", wait_until="load", timeout=60_000)

        binder = page.locator("nav.mmulib-nav a.binder-link")
        assert binder.count() == 1
        assert binder.get_attribute("href") == page_info["binder"]
        assert binder.get_attribute("href").endswith(f"urlpath=lab/tree/notebooks/{notebook}")

        # SVG in the cells' outputs, outside widgets: there without any JavaScript.
        assert page.evaluate(STATIC_SVGS) == page_info["svg"]
        if page_info["needs_dot"]:
            assert page_info["svg"] >= 1, "a chapter that draws shows its drawings statically"
            graphviz = page.locator(".jp-OutputArea-output svg g.graph")  # drawn by Graphviz
            assert graphviz.count() >= 1
            assert graphviz.first.bounding_box()["height"] > 20  # laid out, not empty

        if page_info["widget_svg"] and manifest["widget_js"] == "local":
            # The widget renderer draws the saved widget state: the explorer's SVG appears.
            page.wait_for_selector(".widget-html-content svg", timeout=30_000)
            assert page.locator(".widget-html-content svg").count() >= page_info["widget_svg"]
            assert "Error displaying widget" not in page.content()
        page.screenshot(path=str(artifacts / f"{Path(notebook).stem}.png"), full_page=True)
    finally:
        page.close()
    assert errors == [], errors


def test_index_lists_every_chapter_with_a_binder_link(site, server, browser, artifacts):
    _, manifest = site
    page = browser.new_page()
    try:
        page.goto(f"{server}/index.html", wait_until="load", timeout=60_000)
        links = page.locator("main.mmulib-index li > a:not(.binder-link)")
        assert links.count() == len(manifest["pages"])
        for i, info in enumerate(manifest["pages"]):
            assert links.nth(i).get_attribute("href") == info["html"]
        assert page.locator("main.mmulib-index a.binder-link").count() == len(manifest["pages"])
        page.screenshot(path=str(artifacts / "index.png"), full_page=True)
    finally:
        page.close()
