"""Views as ``ipywidgets.HTML`` holding SVG, and the render pipeline behind them.

:class:`Views` keeps one ``HTML`` widget per view and the DOT text it last
showed.  :meth:`Views.update` re-renders only the views whose DOT changed:
SVG already made for the same DOT text comes from a cache (a state seen
before costs a dictionary lookup), and the rest are rendered together: one
``dot`` run per idle CPU (at most :data:`MAX_DOT_RUNS`, at least one), each
over several graphs, started at once.  A ``dot`` run costs mostly its
start-up, so a batch of views takes little longer than one view.

If :mod:`mmulib.render` offers ``render_svgs`` (several graphs, one ``dot``
start at most), that is used instead of the concurrent runs.

The widget's value is the SVG itself, so a notebook saved with widget state
(what nbclient and nbconvert do by default) shows the last drawings without a
kernel.  Without Graphviz the view shows the install hint and the DOT text
instead of failing.
"""

from __future__ import annotations

import concurrent.futures
import html
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import ipywidgets as widgets

from .. import render
from ..draw.style import CHANGED, HEADER
from ..draw.svg import split_svgs, tidy_svg
from ..draw.timeline import COUNTER_DOC, COUNTER_ORDER

__all__ = ["Views", "SvgCache", "render_batch", "fallback_html", "counters_html",
           "MAX_DOT_RUNS", "SVG_CACHE"]

MAX_DOT_RUNS = 4
"""Concurrent ``dot`` processes per update, at most (and at most the CPU count)."""


class SvgCache:
    """DOT text -> ready-to-show SVG, least recently used entries dropped first."""

    def __init__(self, maxsize: int = 512) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, str] = OrderedDict()

    def get(self, dot: str) -> str | None:
        svg = self._data.get(dot)
        if svg is not None:
            self._data.move_to_end(dot)
        return svg

    def put(self, dot: str, svg: str) -> None:
        self._data[dot] = svg
        self._data.move_to_end(dot)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


SVG_CACHE = SvgCache()
"""The cache every :class:`Views` shares (cleared by ``bench/ui.py`` for cold timings)."""

_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(MAX_DOT_RUNS, thread_name_prefix="dot")
    return _POOL


def fallback_html(dot: str, problem: Exception) -> str:
    """What a view shows when it cannot render: the problem, and the DOT text itself."""
    return (f'<div class="mmulib-nodot"><p><b>{html.escape(type(problem).__name__)}</b>: '
            f"{html.escape(str(problem))}</p><p>The drawing as DOT text (paste it into any "
            "Graphviz viewer):</p>"
            f'<pre style="font-size:10px;max-height:20em;overflow:auto">{html.escape(dot)}</pre>'
            "</div>")


def counters_html(columns: Sequence[tuple[str, Mapping[str, int]]],
                  title: str = "costs so far") -> str:
    """The counters of one or more sessions as an HTML table; differing rows highlighted.

    The same table as :func:`mmulib.draw.timeline.counters_dot`, but without Graphviz:
    the counters change at every step, and a table costs nothing to redraw.

    >>> "<td>VM exits to KVM</td><td" in counters_html([("6.4", {"exits": 2})])
    True
    """
    head = "".join(f'<th style="text-align:right;padding:0 .5em">{html.escape(n)}</th>'
                   for n, _ in columns) if len(columns) > 1 else "<th></th>"
    rows = []
    for key in COUNTER_ORDER:
        values = [int(c.get(key, 0)) for _, c in columns]
        bg = f' style="background:{CHANGED}"' if len(set(values)) > 1 else ""
        cells = "".join(f'<td style="text-align:right;padding:0 .5em">{v}</td>' for v in values)
        rows.append(f"<tr{bg}><td>{html.escape(COUNTER_DOC[key])}</td>{cells}</tr>")
    return (f'<table class="mmulib-costs" style="font-size:11px;line-height:1.25;'
            f'border-collapse:collapse">'
            f'<tr style="background:{HEADER}"><th style="text-align:left">{html.escape(title)}'
            f"</th>{head}</tr>{''.join(rows)}</table>")


def _groups(sources: Sequence[str], runs: int) -> list[list[str]]:
    """Split into ``runs`` groups of about equal DOT length (the largest first)."""
    groups: list[list[str]] = [[] for _ in range(runs)]
    sizes = [0] * runs
    for src in sorted(sources, key=len, reverse=True):
        i = sizes.index(min(sizes))
        groups[i].append(src)
        sizes[i] += len(src)
    return [g for g in groups if g]


def _runs(n: int) -> int:
    """How many ``dot`` processes to start for ``n`` graphs: one per idle CPU, at least one.

    Each run mostly pays ``dot``'s start-up; parallel runs only help when CPUs are idle (on
    a busy machine one run over all graphs is faster than several competing ones).
    """
    cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, min(n, cpus - busy, MAX_DOT_RUNS))


def _render_group(group: list[str]) -> list[str]:
    if len(group) == 1:
        return [render.render_svg(group[0])]
    out = split_svgs(render.render_svg("\n".join(group)))
    if len(out) != len(group):  # should not happen; render one by one to be sure
        out = [render.render_svg(src) for src in group]
    return out


def render_batch(sources: Iterable[str], cache: SvgCache = SVG_CACHE) -> dict[str, str]:
    """DOT -> tidy SVG for each source, rendering only those not in ``cache``.

    Raises what :func:`mmulib.render.render_svg` raises (``DotNotFoundError``,
    ``DotError``); callers that must not fail use :meth:`Views.update`.
    """
    wanted = list(dict.fromkeys(sources))
    out = {}
    todo = []
    for src in wanted:
        svg = cache.get(src)
        if svg is None:
            todo.append(src)
        else:
            out[src] = svg
    if not todo:
        return out
    many = getattr(render, "render_svgs", None)
    if many is not None:  # a render module that keeps dot running: no start-up to share
        groups, results = [todo], [many(todo)]
    else:
        groups = _groups(todo, _runs(len(todo)))
        results = ([_render_group(groups[0])] if len(groups) == 1 else
                   list(_pool().map(_render_group, groups)))
    for group, svgs in zip(groups, results):
        for src, svg in zip(group, svgs):
            tidy = tidy_svg(svg)
            cache.put(src, tidy)
            out[src] = tidy
    return out


class Views:
    """One ``HTML`` widget per view, updated only when its DOT text changes.

    Keys are view names (``"roles"``), or ``"<lane>/<view>"`` when several
    sessions are shown side by side (``"b/roles"``).
    """

    def __init__(self, keys: Sequence[str], *, cache: SvgCache = SVG_CACHE) -> None:
        self.cache = cache
        self.widgets: dict[str, widgets.HTML] = {}
        for key in keys:
            w = widgets.HTML(value="", layout=widgets.Layout(overflow="auto"))
            w.add_class("mmulib-view")
            w.add_class("mmulib-view-" + key.replace("/", "-"))
            self.widgets[key] = w
        self.dots: dict[str, str] = {}
        self.last_rendered: list[str] = []
        self.last_render_ms = 0.0

    def __getitem__(self, key: str) -> widgets.HTML:
        return self.widgets[key]

    def update(self, dots: Mapping[str, str]) -> list[str]:
        """Show ``dots`` (view key -> DOT); returns the keys whose drawing changed."""
        changed = [k for k, d in dots.items() if self.dots.get(k) != d]
        start = time.perf_counter()
        try:
            svgs = render_batch([dots[k] for k in changed], self.cache)
            bodies = {k: svgs[dots[k]] for k in changed}
        except (render.DotNotFoundError, render.DotError) as exc:
            bodies = {k: self._one(dots[k], exc) for k in changed}
        self.last_render_ms = (time.perf_counter() - start) * 1000
        for k in changed:
            lane, _, view = k.rpartition("/")
            self.widgets[k].value = (f'<div class="mmulib-svg" data-view="{html.escape(view)}"'
                                     f' data-lane="{html.escape(lane)}">{bodies[k]}</div>')
            self.dots[k] = dots[k]
        self.last_rendered = changed
        return changed

    def _one(self, dot: str, first: Exception) -> str:
        """One view after a failed batch: its own SVG if it renders alone, else the DOT text."""
        if isinstance(first, render.DotNotFoundError):
            return fallback_html(dot, first)
        try:
            return render_batch([dot], self.cache)[dot]
        except (render.DotNotFoundError, render.DotError) as exc:
            return fallback_html(dot, exc)
