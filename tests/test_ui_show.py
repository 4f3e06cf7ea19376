"""mmulib.show: plain SVG/DOT objects for any frontend, and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmulib import render, show
from mmulib.ui import Panel
from mmulib.ui.session import Refused, Session


def test_the_module_is_callable_and_returns_every_view() -> None:
    views = show(kernel="6.4", tdp="ept", ops=[{"op": "mov_cr0", "value": "0x80000033"}])
    assert [v.name for v in views] == ["roles", "contexts", "roots", "timeline"]
    assert views["roles"].dot.startswith("digraph roles {")
    assert 'ID="cpu_role.base.cr0_wp"' in views["roles"].dot
    with pytest.raises(KeyError, match="views: roles"):
        views["nope"]


def test_helpers_take_a_session_or_a_panel() -> None:
    s = Session("5.17", tdp="ept")
    s.toggle("CR0", "WP")
    assert "TDP MMU root 0x00003784 freed" in show.roots(s).dot
    assert "costs so far" in show.timeline(s).dot
    p = Panel(kernel="6.4", tdp="ept")
    assert show.contexts(p).dot.splitlines()[0] == "digraph contexts {"
    with pytest.raises(TypeError, match="not both"):
        show.roles(s, kernel="6.4")
    with pytest.raises(TypeError, match="cannot draw int"):
        show.roles(3)


def test_a_refused_op_in_a_scenario_is_reported() -> None:
    with pytest.raises(Refused, match="LA57 cannot change in long mode"):
        show.roles(kernel="6.4", ops=[{"op": "mov_cr4", "value": 0x10A0}])


@pytest.mark.needs_dot
def test_drawings_display_as_svg(tmp_path) -> None:
    d = show.roles(kernel="6.4")
    bundle = d._repr_mimebundle_()
    assert bundle["image/svg+xml"].startswith("<svg ")
    assert d._repr_svg_() == bundle["image/svg+xml"]
    assert d.save(tmp_path / "roles.svg").read_text().startswith("<svg ")
    assert d.save(tmp_path / "roles.dot").read_text() == d.dot
    assert show()._repr_html_().count('class="mmulib-svg"') == 4


def test_without_dot_a_drawing_displays_as_its_dot_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(source: str, engine: str = "dot") -> str:
        raise render.DotNotFoundError("Graphviz 'dot' not found on PATH; install it")

    monkeypatch.setattr(show, "render_svg", missing)
    d = show.roles(kernel="6.4")
    assert d._repr_svg_() is None
    text = d._repr_mimebundle_()["text/plain"]
    assert text.startswith("Graphviz 'dot' not found") and "digraph roles {" in text
    assert "<pre>digraph roles {" in show()._repr_html_()


def test_importing_show_loads_no_jupyter() -> None:
    code = ("import sys, mmulib.show\n"
            "bad = {'IPython', 'ipywidgets', 'graphviz', 'traitlets', 'ipykernel'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
