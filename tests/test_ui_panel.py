"""The control panel in the kernel: set a widget's value, read the SVG and the words.

No browser: ipywidgets objects work without a frontend, and the callbacks run
synchronously when a value is set, exactly as when a click arrives over the comm.
"""

from __future__ import annotations

import re

import pytest

from mmulib import render
from mmulib.draw.style import CHANGED
from mmulib.ui import EraComparison, Panel
from mmulib.ui.session import Session
from mmulib.ui.views import SVG_CACHE


def cell(svg: str, cell_id: str) -> str:
    """The SVG group of one table cell (fill and text)."""
    m = re.search(rf'<g id="a_{re.escape(cell_id)}">(.*?)</g>', svg, re.S)
    assert m, f"no cell {cell_id}"
    return m.group(1)


def text_of(group: str) -> str:
    return "".join(re.findall(r"<text[^>]*>([^<]*)</text>", group))


@pytest.fixture
def panel() -> Panel:
    return Panel(kernel="6.4", tdp="ept")


@pytest.mark.needs_dot
def test_wp_switch_redraws_cpu_role_but_not_the_root_cache_on_6_4(panel: Panel) -> None:
    before_roots = panel.svg("roots")
    assert text_of(cell(panel.svg("roles"), "cpu_role.base.cr0_wp")) == "1"
    panel.switch("CR0.WP").value = False
    wp = cell(panel.svg("roles"), "cpu_role.base.cr0_wp")
    assert text_of(wp) == "0 lazy" and f'fill="{CHANGED}"' in wp
    assert text_of(cell(panel.svg("roles"), "root_role.cr0_wp")) == "1"
    assert panel.svg("roots") == before_roots
    assert "roots" not in panel.timing["rendered"]
    assert "CR0.WP 1→0: cpu_role.base.cr0_wp changed (copied in lazily), root_role unchanged" \
        in panel.what.value
    assert panel.errors.value == ""


@pytest.mark.needs_dot
def test_on_5_17_the_same_switch_drops_the_roots(panel: Panel) -> None:
    panel.eras[0].value = "5.17"
    assert "Now 5.17 with EPT: replayed 0 steps." in panel.what.value
    before_roots = panel.svg("roots")
    panel.switch("CR0.WP").value = False
    assert panel.svg("roots") != before_roots
    assert "TDP MMU root 0x00003784 freed" in panel.svg("roots")
    assert text_of(cell(panel.svg("roles"), "root_page_role.cr0_wp")) == "0"
    assert "drops its root" in panel.what.value


@pytest.mark.needs_dot
def test_a_refused_switch_shows_the_rule_beside_it_and_springs_back(panel: Panel) -> None:
    state = panel.sessions[0].state
    panel.switch("CR4.LA57").value = True
    assert panel.switch("CR4.LA57").value is False
    assert "kvm_set_cr4: LA57 cannot change in long mode" in panel.rules["CR4"].value
    assert "refused by 6.4" in panel.what.value
    assert panel.sessions[0].state == state and panel.errors.value == ""
    panel.switch("CR0.WP").value = False  # the next action clears the rule
    assert panel.rules["CR4"].value == ""


@pytest.mark.needs_dot
def test_buttons_undo_and_reset(panel: Panel) -> None:
    panel.tdp.value = "none"
    for space in (1, 2):
        panel.space.value = space
        panel.buttons["mov_cr3"].click()
    assert "pgd 0x300000" in panel.svg("roots")
    panel.buttons["undo"].click()
    assert "Undo: took back 'MOV CR3 to address space 2 (0x300000)'." in panel.what.value
    panel.buttons["smi"].click()
    assert panel.smm.value is True and panel.switch("CR0.PG").value is False
    panel.smm.value = False  # RSM
    assert panel.switch("CR0.PG").value is True
    panel.buttons["reset"].click()
    assert panel.sessions[0].user_steps == []


def test_errors_in_callbacks_are_shown_in_the_panel_without_a_traceback(
        panel: Panel, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Session) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Session, "cpuid", boom)
    panel.buttons["cpuid"].click()
    assert "RuntimeError" in panel.errors.value and "boom" in panel.errors.value
    assert "Traceback" not in panel.errors.value
    assert isinstance(panel.error, RuntimeError)


def test_without_dot_the_views_show_the_install_hint_and_the_dot_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(source: str, engine: str = "dot") -> str:
        raise render.DotNotFoundError(f"Graphviz 'dot' not found on PATH; {render.INSTALL_HINT}")

    SVG_CACHE.clear()
    monkeypatch.setattr(render, "render_svg", missing)
    p = Panel(kernel="6.4", tdp="ept")
    p.switch("CR0.WP").value = False
    roles = p.svg("roles")
    assert "DotNotFoundError" in roles and "apt-get install graphviz" in roles
    assert "digraph roles {" in roles and p.errors.value == ""
    assert "CR0.WP 1→0" in p.what.value


@pytest.mark.needs_dot
def test_a_repeated_state_is_served_without_running_dot(
        panel: Panel, monkeypatch: pytest.MonkeyPatch) -> None:
    w = panel.switch("CR0.WP")
    for _ in range(12):  # enough flips for the timeline window to repeat too
        w.value = not w.value

    def no_dot(source: str, engine: str = "dot") -> str:
        raise AssertionError("dot ran for a state seen before")

    monkeypatch.setattr(render, "render_svg", no_dot)
    for _ in range(4):
        w.value = not w.value
        assert panel.errors.value == "" and "DotNotFoundError" not in panel.svg("roles")
        assert panel.timing["total_ms"] < 50


@pytest.mark.needs_dot
def test_era_comparison_applies_each_click_to_both_eras() -> None:
    c = EraComparison(("5.17", "6.4"), tdp="ept")
    c.switch("CR0.WP").value = False
    assert [s.era for s in c.sessions] == ["5.17", "6.4"]
    assert "<b>5.17</b>: CR0.WP 1→0" in c.what.value and "<b>6.4</b>: CR0.WP 1→0" in c.what.value
    assert "TDP MMU root 0x00003784 freed" in c.svg("a/roots")
    assert "TDP MMU root 0x00003784 freed" not in c.svg("b/roots")
    costs = c.costs.value
    assert "<th" in costs and "5.17" in costs and "6.4" in costs
    assert re.search(rf'<tr style="background:{CHANGED}"><td>kvm_mmu_reset_context calls</td>',
                     costs)


def test_controls_follow_the_state_and_the_configuration(panel: Panel) -> None:
    assert panel.switch("CR0.WP").description == "CR0.WP"
    assert panel.switch("EFER.LME").description == "EFER.LME/LMA"
    assert panel.vendor.disabled and panel.vendor.value == "vmx"
    assert panel.tdp_mmu.value is True and panel.nested_paging.description == "nested EPT"
    assert "Write Protect" in panel.switch("CR0.WP").tooltip
    panel.l2.value = True
    assert panel.nested_paging.disabled and "guest_mmu" in panel.svg("contexts")
