"""The TDP MMU explorer: pick a scene, move the slider, watch the tree change.

The frames come from :mod:`mmulib.tdp.scenes` (the iterator's walk, faults
filling a tree, a zap clearing it); this module only shows them: the caption
as text, the drawing as SVG.  Without Graphviz's ``dot`` the drawing is
replaced by the install hint and the DOT text, so the explorer still works.

In a notebook::

    from mmulib.ui.tdp import TdpExplorer
    TdpExplorer()
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from IPython.display import HTML, SVG

from mmulib import render
from mmulib.tdp.scenes import Frame, default_scenes

__all__ = ["TdpExplorer", "dot_html", "show_dot"]


def dot_html(dot: str) -> str:
    """SVG of ``dot``; without a working ``dot``, the reason and the DOT text."""
    try:
        return render.render_svg(dot)
    except (render.DotNotFoundError, render.DotError) as exc:
        return (f"<p><b>Drawing not rendered:</b> {html.escape(str(exc))}</p>"
                f"<pre>{html.escape(dot)}</pre>")


def show_dot(dot: str) -> SVG | HTML:
    """A static picture for a notebook cell (an SVG output), or the DOT text if it cannot be
    drawn."""
    try:
        return SVG(render.render_svg(dot))
    except (render.DotNotFoundError, render.DotError):
        return HTML(dot_html(dot))


class TdpExplorer(widgets.VBox):
    """A scene picker and a step slider over pre-computed frames."""

    def __init__(self, scenes: dict[str, list[Frame]] | None = None, scene: str | None = None,
                 **kwargs: Any) -> None:
        self.scenes = default_scenes() if scenes is None else scenes
        self.picker = widgets.Dropdown(options=list(self.scenes), value=scene or
                                       next(iter(self.scenes)), description="scene")
        self.step = widgets.IntSlider(min=0, max=0, description="step", continuous_update=False)
        self.caption = widgets.HTML()
        self.diagram = widgets.HTML()
        self.debug = widgets.Output()  # callback errors land here; tests check it stays empty
        self.picker.observe(self._on_scene, names="value")
        self.step.observe(self._on_step, names="value")
        super().__init__([widgets.HBox([self.picker, self.step]), self.caption, self.diagram,
                          self.debug], **kwargs)
        self._on_scene()

    @property
    def frames(self) -> list[Frame]:
        return self.scenes[self.picker.value]

    @property
    def frame(self) -> Frame:
        return self.frames[self.step.value]

    def _on_scene(self, change: Any = None) -> None:
        with self.debug, self.hold_sync():
            self.step.value = 0
            self.step.max = len(self.frames) - 1
            self._show()

    def _on_step(self, change: Any = None) -> None:
        with self.debug:
            self._show()

    def _show(self) -> None:
        n = len(self.frames)
        self.caption.value = (f"<b>{self.step.value + 1}/{n}</b> "
                              f"{html.escape(self.frame.caption)}")
        self.diagram.value = dot_html(self.frame.dot)
