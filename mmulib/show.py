"""``mmulib.show``: the panel's drawings as plain objects that render in any frontend.

Each helper runs a short scenario through the simulator (or takes a
:class:`~mmulib.ui.session.Session` or a panel) and returns a :class:`Drawing`:
its DOT text (``.dot``), its SVG (``.svg``, rendered once by
:func:`mmulib.render.render_svg`), and the display hooks Jupyter, nbconvert,
VS Code or a docs build use (``_repr_mimebundle_``), so ``display(d)``
shows an image with no widget and no running kernel.  Without Graphviz the
display falls back to the install hint and the DOT text.

The module itself is callable: ``mmulib.show(...)`` is :func:`show`, every view
at once.  Importing it loads no Jupyter package.

>>> from mmulib import show
>>> d = show.roles(kernel="6.4", tdp="ept", ops=[{"op": "mov_cr0", "value": "0x80000033"}])
>>> d.name, d.dot.splitlines()[0]
('roles', 'digraph roles {')
>>> [v.name for v in show(kernel="5.17")]
['roles', 'contexts', 'roots', 'timeline']
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .draw import tidy_svg
from .draw.timeline import TimelineStep, timeline_dot
from .render import DotError, DotNotFoundError, render_svg
from .ui.scene import VIEWS, session_dots
from .ui.session import Session

__all__ = ["Drawing", "Drawings", "scenario", "show", "roles", "contexts", "roots", "timeline"]


class Drawing:
    """One view: DOT text, and SVG on demand."""

    def __init__(self, name: str, dot: str) -> None:
        self.name = name
        self.dot = dot

    @property
    def svg(self) -> str:
        """The SVG (without the XML prologue); raises ``DotNotFoundError`` without Graphviz."""
        return tidy_svg(render_svg(self.dot))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            return {"image/svg+xml": self.svg, "text/plain": repr(self)}
        except (DotNotFoundError, DotError) as exc:
            return {"text/plain": f"{exc}\n\n{self.dot}"}

    def _repr_svg_(self) -> str | None:
        try:
            return self.svg
        except (DotNotFoundError, DotError):
            return None

    def save(self, path: str | Path) -> Path:
        """Write ``.svg`` (rendered) or anything else (the DOT text)."""
        p = Path(path)
        p.write_text(self.svg if p.suffix == ".svg" else self.dot, encoding="utf-8")
        return p

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        return f"<Drawing {self.name}: {len(self.dot.splitlines())} lines of DOT>"


class Drawings(tuple):  # type: ignore[type-arg]
    """Several drawings; displays as one HTML block, and finds one by name."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for d in self:
                if d.name == key:
                    return d
            raise KeyError(f"no view {key!r} (views: {', '.join(d.name for d in self)})")
        return super().__getitem__(key)

    def _repr_html_(self) -> str:
        parts = []
        for d in self:
            svg = d._repr_svg_()
            body = svg if svg is not None else f"<pre>{_esc(d.dot)}</pre>"
            parts.append(f'<div class="mmulib-svg" data-view="{d.name}">{body}</div>')
        return "".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def scenario(kernel: str = "6.4", tdp: str = "ept", ops: Iterable[Mapping[str, Any]] = (),
             **config: Any) -> Session:
    """A session after the setup (KVM_SET_SREGS, VM entry) and then ``ops`` (replay format).

    Raises :class:`~mmulib.ui.session.Refused` on the first operation KVM refuses.
    """
    s = Session(kernel, tdp=tdp, **config)
    for op in ops:
        s.apply(op)
    return s


def _session(source: Any, kw: dict[str, Any]) -> Session:
    if source is None:
        return scenario(**kw)
    if kw:
        raise TypeError("give either a session/panel or scenario keywords, not both")
    if isinstance(source, Session):
        return source
    sessions = getattr(source, "sessions", None)  # a Panel: its last (newest) session
    if sessions:
        return sessions[-1]
    raise TypeError(f"cannot draw {type(source).__name__}: give a Session, a Panel or None")


def _views(source: Any, names: Iterable[str], kw: dict[str, Any]) -> Drawings:
    s = _session(source, kw)
    prev = s.steps[-1].before if s.steps else None
    dots = session_dots(s, prev, s.steps[-1].label if s.steps else "")
    steps = [TimelineStep(x.label, x.events) for x in s.steps]
    dots["timeline"] = timeline_dot(steps, s.counters(), title=s.era)
    return Drawings(Drawing(n, dots[n]) for n in names)


def show(source: Any = None, **kw: Any) -> Drawings:
    """Every view (roles, contexts, roots, timeline) of ``source`` or of a new scenario."""
    return _views(source, VIEWS, kw)


def roles(source: Any = None, **kw: Any) -> Drawing:
    """The role unions; fields the last op changed highlighted."""
    return _views(source, ["roles"], kw)[0]


def contexts(source: Any = None, **kw: Any) -> Drawing:
    """The vCPU, its mmu/walk_mmu pointers and the MMU contexts."""
    return _views(source, ["contexts"], kw)[0]


def roots(source: Any = None, **kw: Any) -> Drawing:
    """root and prev_roots per context, the pages behind them, the last root activity."""
    return _views(source, ["roots"], kw)[0]


def timeline(source: Any = None, **kw: Any) -> Drawing:
    """The last events and the costs so far."""
    return _views(source, ["timeline"], kw)[0]


class _CallableModule(types.ModuleType):
    """Lets ``mmulib.show(...)`` work: the module called is :func:`show`."""

    def __call__(self, source: Any = None, **kw: Any) -> Drawings:
        return show(source, **kw)


sys.modules[__name__].__class__ = _CallableModule
