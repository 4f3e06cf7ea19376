"""scripts/build_docs.py: the static site of executed notebooks, with widget state and Binder links.

The site is built once into a temporary directory (every chapter executed, so this needs
Graphviz's ``dot``) and each page is checked as HTML text: the Binder link of its notebook, the
SVG drawings among its outputs, the saved widget state, and the links between chapters.  The
browser test (tests/browser/test_docs_pages.py) opens the same kind of site in Chromium.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from conftest import load_docs_builder

from mmulib.doctor import binder_url

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
MINE = ("01-what-is-a-role.ipynb", "02-cpu-role-vs-root-role.ipynb")


build_docs = load_docs_builder()


class _Links(HTMLParser):
    """Every <a> with its attributes, and every <script> as (type, text)."""

    def __init__(self):
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.scripts: list[tuple[str, str]] = []
        self._script: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "a":
            self.links.append(a)
        elif tag == "script":
            self._script = (a.get("type", ""), [])

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None


def _parse(text: str) -> _Links:
    parser = _Links()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def site(built_site):
    out = built_site
    manifest = json.loads((out / "manifest.json").read_text())
    return out, [build_docs.Page(**p) for p in manifest["pages"]], manifest


# --- without building ---------------------------------------------------------------------------


def test_chapters_are_the_numbered_notebooks_in_order():
    names = [p.name for p in build_docs.chapters()]
    assert names == sorted(names)
    assert names[0] == "00-start-here.ipynb"
    assert set(MINE) <= set(names)
    assert "solutions" not in " ".join(names)


def test_links_between_chapters_point_at_pages():
    text = '<a href="02-cpu-role-vs-root-role.ipynb">02</a> <a href="https://x/02-a.ipynb">'
    out = build_docs._link_chapters(text, ["02-cpu-role-vs-root-role.ipynb"])
    assert '<a href="02-cpu-role-vs-root-role.html">' in out
    assert 'href="https://x/02-a.ipynb"' in out  # other links are left alone


def test_what_you_will_learn_becomes_one_line():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# T\n\n**What you will learn**\n\n1. the `role`, bit by\n   bit;\n2. [links](x.ipynb).\n\n"
        "More text.")])
    assert build_docs._learn(nb) == "the role, bit by bit; links"
    assert build_docs._title(nb) == "T"


def _tgz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_widget_js_is_copied_from_the_npm_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    manager, requirejs = (v[1] for v in build_docs.VENDOR.values())
    _tgz(cache / manager, {"package/dist/embed-amd.js": b"define()", "package/dist/a.woff2": b"f",
                           "package/dist/embed.js.map": b"{}", "package/README.md": b"r"})
    _tgz(cache / requirejs, {"package/require.js": b"var requirejs"})
    static = tmp_path / "static"
    assert build_docs._vendor_widget_js(static, cache, log=lambda _: None)
    assert sorted(p.name for p in (static / "html-manager").iterdir()) == ["a.woff2",
                                                                          "embed-amd.js"]
    assert (static / "require.js").read_bytes() == b"var requirejs"


def test_without_npm_or_cache_the_site_falls_back_to_the_cdn(tmp_path, monkeypatch):
    monkeypatch.setattr(build_docs.shutil, "which", lambda name: None)
    said = []
    assert not build_docs._vendor_widget_js(tmp_path / "s", tmp_path / "empty", log=said.append)
    assert "CDN" in said[0]


def test_a_failing_notebook_fails_the_build_and_names_itself(tmp_path, capsys):
    bad = tmp_path / "99-broken.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), bad)
    with pytest.raises(build_docs.BuildError, match="99-broken.ipynb"):
        build_docs.build(tmp_path / "site", [bad], widget_js="cdn", log=lambda _: None)
    # and on the command line: exit status 1, the notebook named on stderr
    assert build_docs.main(["--out", str(tmp_path / "s"), "--widget-js", "cdn", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 99-broken.ipynb failed") and "ZeroDivisionError" in err


# --- the built site -----------------------------------------------------------------------------


@pytest.mark.needs_dot
def test_every_chapter_has_a_page_and_an_index_entry(site):
    out, pages, manifest = site
    assert [p["notebook"] for p in manifest["pages"]] == [
        f"notebooks/{p.name}" for p in build_docs.chapters()]
    index = _parse((out / "index.html").read_text())
    hrefs = [a["href"] for a in index.links]
    for page in pages:
        assert (out / page.html).is_file()
        assert page.html in hrefs
        assert page.binder in hrefs


@pytest.mark.needs_dot
def test_each_page_has_the_binder_link_of_its_notebook(site):
    out, pages, _ = site
    for page in pages:
        links = [a for a in _parse((out / page.html).read_text()).links
                 if "binder-link" in a.get("class", "").split()]
        assert len(links) == 1, page.html
        assert links[0]["href"] == binder_url(page.notebook), page.html


@pytest.mark.needs_dot
def test_pages_that_draw_carry_their_svg_drawings(site):
    out, pages, _ = site
    for page in pages:
        if page.needs_dot:
            assert page.svg >= 1, f"{page.html} has no SVG among its outputs"
    drawn = {p.notebook.split("/")[1]: p for p in pages}
    for name in MINE:  # static drawings, and the explorer's drawing in the saved widget state
        assert drawn[name].svg >= 1 and drawn[name].widget_svg >= 1, name
        outputs = (out / drawn[name].html).read_text().split(build_docs.WIDGET_STATE)[0]
        graphviz = re.findall(r'<g [^>]*class="graph"', outputs)  # Graphviz's markup, not <img>s
        assert len(graphviz) == drawn[name].svg


@pytest.mark.needs_dot
def test_widget_state_is_embedded_so_widgets_render_without_a_kernel(site):
    out, pages, manifest = site
    for page in pages:
        if not page.widget_views:
            continue
        scripts = _parse((out / page.html).read_text()).scripts
        state = [data for kind, data in scripts
                 if kind.startswith("application/vnd.jupyter.widget-state+json")]
        assert len(state) == 1, page.html
        models = json.loads(state[0])
        assert models["version_major"] == 2 and models["state"], page.html
        views = [d for k, d in scripts if k.startswith("application/vnd.jupyter.widget-view+json")]
        assert len(views) == page.widget_views
        for view in views:  # every displayed widget's model is in the saved state
            assert json.loads(view)["model_id"] in models["state"]
        renderer = ("_static/html-manager/embed-amd.js" if manifest["widget_js"] == "local"
                    else "@jupyter-widgets/html-manager@")
        assert renderer in (out / page.html).read_text()
    if manifest["widget_js"] == "local":
        assert (out / "_static" / "html-manager" / "embed-amd.js").is_file()
        assert (out / "_static" / "require.js").is_file()


@pytest.mark.needs_dot
def test_pages_link_to_each_other_and_load_nothing_they_do_not_need(site):
    out, pages, _ = site
    for page in pages:
        text = (out / page.html).read_text()
        assert not re.search(r'href="\d\d-[\w-]+\.ipynb"', text), page.html
        assert "mathjax" not in text.lower() and "mermaid.esm" not in text, page.html
    nav = _parse((out / pages[1].html).read_text()).links
    assert {"rel": "prev", "href": pages[0].html} in [
        {k: a[k] for k in ("rel", "href") if k in a} for a in nav]


@pytest.mark.needs_dot
def test_my_chapters_run_in_under_30_seconds(site):
    _, pages, _ = site
    times = {p.notebook.split("/")[1]: p.seconds for p in pages}
    for name in MINE:
        assert times[name] <= 30, f"{name} took {times[name]} s"
