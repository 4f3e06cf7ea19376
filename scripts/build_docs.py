#!/usr/bin/env python3
"""Build the static docs site: every chapter executed, exported to HTML, with widget state.

    .venv/bin/python scripts/build_docs.py                 # -> site/
    .venv/bin/python scripts/build_docs.py --out /tmp/site --widget-js cdn

What it does, per notebook ``notebooks/NN-*.ipynb`` in order:

1. execute it top to bottom with nbclient, in a kernel running this Python, with
   ``notebooks/`` as the working directory.  nbclient stores the state of every widget the
   notebook created in ``metadata.widgets`` (``store_widget_state``, on by default);
2. export it with nbconvert's HTML exporter, using the ``mmulib`` template in
   ``docs/templates/`` (JupyterLab's ``lab`` template plus a navigation bar with a Binder
   launch link).  The lab template embeds the widget state and loads the widget renderer
   (``@jupyter-widgets/html-manager``), so the drawings inside widgets appear without a kernel;
3. rewrite links between notebooks (``02-....ipynb`` -> ``02-....html``).

Then it writes ``index.html`` (the chapter list with Binder links) and ``manifest.json``
(per page: title, Binder link, run time, SVG count, widget count).

The widget renderer and RequireJS are JavaScript from npm.  ``--widget-js local`` (the
default) fetches them once with ``npm pack`` into ``build/docs-vendor/`` and copies them into
``site/_static/``, so the site works offline and on any static host; without npm it falls back
to ``--widget-js cdn`` (nbconvert's CDN URLs) and says so.  A notebook that fails to run fails
the build, naming the notebook and the cell.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT))

from mmulib.doctor import BINDER_REPO, binder_url  # noqa: E402

__all__ = ["BuildError", "Page", "build", "chapters", "main"]

# npm packages of the widget renderer and its module loader, pinned so builds are repeatable.
# html-manager 1.x renders ipywidgets 8 state (widget-state version_major 2).
VENDOR = {
    "@jupyter-widgets/html-manager": ("1.0.15", "jupyter-widgets-html-manager-1.0.15.tgz"),
    "requirejs": ("2.3.8", "requirejs-2.3.8.tgz"),
}
FONT_SUFFIXES = (".woff", ".woff2", ".ttf", ".eot", ".svg")
CHAPTER = re.compile(r"^\d\d-[\w-]+\.ipynb$")
WIDGET_STATE = '<script type="application/vnd.jupyter.widget-state+json">'


class BuildError(RuntimeError):
    """A notebook failed to run or to export; the message names it."""


@dataclass
class Page:
    """One built page, as recorded in manifest.json."""

    notebook: str  # path relative to the repository, e.g. notebooks/01-what-is-a-role.ipynb
    html: str  # file name in the site
    title: str
    learn: str  # the "What you will learn" list, as plain text
    binder: str
    seconds: float
    needs_dot: bool  # the notebook draws with Graphviz (metadata "mmulib": {"needs_dot": true})
    svg: int  # <svg> elements among the page's outputs
    widget_views: int  # widgets displayed by the notebook (rendered from the saved state)
    widget_svg: int  # SVG drawings inside the saved widget state


def chapters(directory: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks, in order (``00-start-here.ipynb``, ``01-...``)."""
    return sorted(p for p in directory.glob("*.ipynb") if CHAPTER.match(p.name))


@contextmanager
def _this_python_kernel() -> Iterator[str]:
    """A ``python3`` kernel spec that runs this interpreter, first on JUPYTER_PATH."""
    with tempfile.TemporaryDirectory(prefix="mmulib-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS",
                                                 "PYDEVD_DISABLE_FILE_VALIDATION")}
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [tmp, *([saved["JUPYTER_PATH"]] if saved["JUPYTER_PATH"] else [])])
        os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
        os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        try:
            yield "python3"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _execute(path: Path, kernel: str, timeout: int):  # -> nbformat.NotebookNode
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        raise BuildError(f"{path.name} failed while running:\n{exc}") from None
    return nb


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return "untitled"


def _learn(nb) -> str:
    """The numbered "What you will learn" items of the first cell, as one line of text."""
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        return ""
    text = nb.cells[0].source.split("What you will learn", 1)
    if len(text) < 2:
        return ""
    items = re.findall(r"^\d+\.\s+(.+(?:\n(?!\d+\.|\n).+)*)", text[1], re.M)
    plain = [re.sub(r"\s+", " ", re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", i)).strip(" ;.")
             for i in items]
    return "; ".join(plain)


def _vendor_widget_js(static: Path, cache: Path, log: Callable[[str], None]) -> bool:
    """Copy the widget renderer and RequireJS into ``static``; False if npm cannot get them."""
    cache.mkdir(parents=True, exist_ok=True)
    for package, (version, tgz) in VENDOR.items():
        if not (cache / tgz).is_file():
            npm = shutil.which("npm")
            if npm is None:
                log("npm not found: the pages will load the widget renderer from a CDN")
                return False
            proc = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=cache,
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0 or not (cache / tgz).is_file():
                log(f"npm pack {package}@{version} failed ({proc.stderr.strip()[:200]}): "
                    "the pages will load the widget renderer from a CDN")
                return False
    manager = static / "html-manager"
    manager.mkdir(parents=True, exist_ok=True)
    with tarfile.open(cache / VENDOR["@jupyter-widgets/html-manager"][1]) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.parent == Path("package/dist") and (
                    name.name == "embed-amd.js" or name.suffix in FONT_SUFFIXES):
                (manager / name.name).write_bytes(tar.extractfile(member).read())
    with tarfile.open(cache / VENDOR["requirejs"][1]) as tar:
        (static / "require.js").write_bytes(tar.extractfile("package/require.js").read())
    return True


def _exporter(widget_js_local: bool):
    from nbconvert import HTMLExporter

    # The mmulib template puts SVG outputs into the page as <svg> elements (not base64 <img>s),
    # so they scale with the page, their text can be searched and tests can find them.
    exporter = HTMLExporter(extra_template_basedirs=[str(DOCS / "templates")],
                            template_name="mmulib")
    if widget_js_local:
        exporter.require_js_url = "_static/require.js"
        exporter.widget_renderer_url = "_static/html-manager/embed-amd.js"
    return exporter


def _link_chapters(page: str, names: Sequence[str]) -> str:
    """Links to other chapters' .ipynb files point at their pages instead."""
    for name in names:
        page = page.replace(f'href="{name}"', f'href="{name[:-len(".ipynb")]}.html"')
    return page


def _count_widget_views(nb) -> int:
    return sum(1 for cell in nb.cells for out in cell.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in out.get("data", {}))


def build(out: Path, notebooks: Sequence[Path] | None = None, *, widget_js: str = "local",
          binder_repo: str = BINDER_REPO, binder_ref: str = "HEAD", timeout: int = 120,
          vendor_cache: Path | None = None, log: Callable[[str], None] = print) -> list[Page]:
    """Build the site into ``out`` (replaced if it exists) and return its pages."""
    if widget_js not in ("local", "cdn"):
        raise ValueError(f"widget_js must be 'local' or 'cdn', not {widget_js!r}")
    paths = list(chapters() if notebooks is None else notebooks)
    if not paths:
        raise BuildError("no notebooks to build")
    if out.exists():
        shutil.rmtree(out)
    (out / "_static").mkdir(parents=True)
    css = (DOCS / "site.css").read_text()
    (out / "_static" / "site.css").write_text(css)
    local = widget_js == "local" and _vendor_widget_js(
        out / "_static", vendor_cache or ROOT / "build" / "docs-vendor", log)
    exporter = _exporter(local)

    executed = []
    with _this_python_kernel() as kernel:
        for path in paths:
            start = time.perf_counter()
            nb = _execute(path, kernel, timeout)
            seconds = time.perf_counter() - start
            log(f"ran {path.name} in {seconds:.1f} s")
            executed.append((path, nb, seconds))

    titles = [(_title(nb), f"{path.stem}.html") for path, nb, _ in executed]
    names = [path.name for path, _, _ in executed]
    pages = []
    for i, (path, nb, seconds) in enumerate(executed):
        rel = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) \
            else f"notebooks/{path.name}"

        def nav(j: int) -> dict[str, str] | None:
            return ({"title": html.escape(titles[j][0]), "href": titles[j][1]}
                    if 0 <= j < len(titles) else None)

        resources = {"metadata": {"name": titles[i][0]},
                     "mmulib": {"css": css, "binder_url": html.escape(binder_url(
                                    rel, repo=binder_repo, ref=binder_ref)),
                                "notebook": html.escape(rel), "prev": nav(i - 1),
                                "next": nav(i + 1)}}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        body = _link_chapters(body, names)
        (out / titles[i][1]).write_text(body, encoding="utf-8")
        outputs, _, state = body.partition(WIDGET_STATE)
        pages.append(Page(rel, titles[i][1], titles[i][0], _learn(nb),
                          binder_url(rel, repo=binder_repo, ref=binder_ref), round(seconds, 2),
                          bool(nb.metadata.get("mmulib", {}).get("needs_dot")),
                          outputs.count("<svg"), _count_widget_views(nb),
                          state.split("</script>", 1)[0].count("<svg")))

    (out / "index.html").write_text(_index(pages, binder_repo, binder_ref), encoding="utf-8")
    manifest = {"widget_js": "local" if local else "cdn",
                "binder": binder_url(repo=binder_repo, ref=binder_ref),
                "pages": [asdict(p) for p in pages]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {len(pages)} pages and index.html to {out}")
    return pages


def _index(pages: Sequence[Page], repo: str, ref: str) -> str:
    items = "\n".join(
        f'<li><a href="{p.html}">{html.escape(p.title)}</a>'
        f'<a class="binder-link" href="{html.escape(p.binder)}">launch on Binder</a>'
        + (f'<div class="learn">{html.escape(p.learn)}</div>' if p.learn else "") + "</li>"
        for p in pages)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>mmulib notebooks</title>
<link rel="stylesheet" href="_static/site.css">
</head>
<body>
<nav class="mmulib-nav"><a class="mmulib-home" href="index.html">mmulib notebooks</a>
<a class="binder-link" href="{html.escape(binder_url(repo=repo, ref=ref))}">launch on Binder</a>
</nav>
<main class="mmulib-index">
<h1>mmulib: how KVM's x86 MMU computes roles, release by release</h1>
<p>The chapters below were executed when this site was built; each page shows the notebook's
output, drawings included, without a running kernel. To run and change them, launch a chapter on
Binder, or run <code>make lab</code> in a clone of the repository.</p>
<ol>
{items}
</ol>
</main>
</body>
</html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "site", help="output directory (site/)")
    p.add_argument("--widget-js", choices=("local", "cdn"), default="local",
                   help="copy the widget renderer into the site (local, via npm) or use a CDN")
    p.add_argument("--binder-repo", default=BINDER_REPO, help="GitHub owner/name for Binder links")
    p.add_argument("--binder-ref", default="HEAD", help="branch, tag or commit for Binder links")
    p.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell")
    p.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: all chapters)")
    args = p.parse_args(argv)
    try:
        build(args.out, args.notebooks or None, widget_js=args.widget_js,
              binder_repo=args.binder_repo, binder_ref=args.binder_ref, timeout=args.timeout)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
