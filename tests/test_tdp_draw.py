"""Drawings and scenes of the TDP model, and the explorer widget that shows them."""

from __future__ import annotations

import re

import pytest

from mmulib import render
from mmulib.tdp.counts import mapping_counts
from mmulib.tdp.examples import SMALL_TREE_FAULTS, small_tree
from mmulib.tdp.iter import walk
from mmulib.tdp.scenes import default_scenes, fault_frames, walk_frames, zap_frames
from mmulib.tdp.tree import TdpTree

ROWS = re.compile(r"<tr><td>([0-9-]+)</td><td port=\"e\d+\"(?: bgcolor=\"(#\w+)\")?>([^<]*)<")


def node_rows(dot: str, node: str) -> list[tuple[str, str, str]]:
    line = next(ln for ln in dot.splitlines() if ln.strip().startswith(f"{node} [label="))
    return ROWS.findall(line)


def test_small_tree_drawing_rows_and_edges() -> None:
    dot = walk_frames(small_tree(), 0, 4)[3].dot  # standing on L1[0]
    assert node_rows(dot, "t1_0") == [
        ("0", "#f4a261", "4K &#8594; pfn 0x0"),
        ("1", "#cde8c5", "4K &#8594; pfn 0x1"),
        ("2", "#cde8c5", "4K &#8594; pfn 0x2"),
        ("3-511", "", "non-present"),
    ]
    assert node_rows(dot, "t3_0") == [
        ("0", "#ffe8a3", "&#8594; L2 table"),
        ("1", "#cde8c5", "1G &#8594; pfn 0x40000"),
        ("2-511", "", "non-present"),
    ]
    edges = re.findall(r"^  (\S+) -> (\S+);$", dot, re.M)
    assert edges == [("t4_0:e0", "t3_0"), ("t3_0:e0", "t2_0"), ("t2_0:e0", "t1_0")]


def test_visited_non_present_entries_form_their_own_run() -> None:
    t = small_tree()
    steps = walk(t, 0, 6)
    seen = [(s.table, s.index) for s in steps[:-1]]
    dot = walk_frames(t, 0, 6)[-1].dot
    rows = node_rows(dot, "t1_0")
    assert [r[0] for r in rows] == ["0", "1", "2", "3-4", "5", "6-511"]
    assert rows[3][1] == "#ffe8a3" and rows[4][1] == "#f4a261" and rows[5][1] == ""
    assert len(seen) == 8


def test_drawing_is_deterministic() -> None:
    assert walk_frames(small_tree(), 0, 4)[-1].dot == walk_frames(small_tree(), 0, 4)[-1].dot


def test_counts_drawing_of_twelve_tib() -> None:
    from mmulib.tdp.draw import counts_dot

    dot = counts_dot(mapping_counts([(0, 12 << 28)], 1), "12 TiB")
    assert 'l1 [label="L1: 6,291,456 tables (24 GiB)\\n3,221,225,472 x 4K leaves = 12 TiB"];' in dot
    assert 'l3 [label="L3: 24 tables (96 KiB)"];' in dot
    assert "6,303,769 tables, 24.05 GiB of page tables" in dot


def test_scenes() -> None:
    scenes = default_scenes()
    assert {k: len(v) for k, v in scenes.items()} == {
        "walk [0, 4)": 7,
        "walk [0, 0x800), min_level 2": 6,
        "faults filling the tree": 1 + len(SMALL_TREE_FAULTS) + 1,
        "zap [0, 0x80000)": 4,
        "zap [0, 4), yielding after gfn 1": 10,
    }
    zap = scenes["zap [0, 0x80000)"]
    assert zap[2].caption == ("L3[0] gfn 0x0 (non-leaf): zapped; freed L1 table at 0x0, "
                              "L2 table at 0x0")
    assert "t2_0" in zap[1].dot and "t2_0" not in zap[2].dot
    faults = scenes["faults filling the tree"]
    assert faults[1].caption.startswith("fault at gfn 0x0 (4K): walked 4 SPTEs, allocated L3 "
                                        "table at 0x0, L2 table at 0x0, L1 table at 0x0")
    assert faults[-1].caption.endswith("zapped 1 x 2M")
    walk_end = scenes["walk [0, 4)"][-1].caption
    assert walk_end.endswith("next: the next SPTE's GFN is not below the end (0x4): done")


def test_frames_leave_the_caller_tree_alone() -> None:
    t = small_tree()
    zap_frames(t, 0, 0x80000)
    fault_frames([(5, 1)], t)
    assert t.counts() == small_tree().counts()


def test_walk_that_leaves_the_root_says_so() -> None:
    assert walk_frames(TdpTree(), 511 << 27, 1 << 40)[-1].caption.endswith(
        "no entry left in the root: the iterator is invalid, done")


@pytest.mark.needs_dot
def test_frames_render_with_node_titles() -> None:
    svg = render.render_svg(default_scenes()["zap [0, 0x80000)"][1].dot)
    assert all(f"<title>{n}</title>" in svg for n in ("t4_0", "t3_0", "t2_0", "t1_0"))


def test_explorer_slider_and_scene_picker(monkeypatch) -> None:
    ui = pytest.importorskip("mmulib.ui.tdp")
    monkeypatch.setattr(render, "render_svg", lambda dot: f"<svg>{len(dot)}</svg>")
    ex = ui.TdpExplorer()
    assert (ex.picker.value, ex.step.max) == ("walk [0, 4)", 6)
    ex.step.value = 3
    assert "4/7" in ex.caption.value and "L1[0] gfn 0x0" in ex.caption.value
    assert ex.diagram.value == f"<svg>{len(ex.frames[3].dot)}</svg>"
    ex.picker.value = "zap [0, 0x80000)"
    assert (ex.step.value, ex.step.max) == (0, 3)
    assert ex.caption.value.endswith("before zapping [0x0, 0x80000)")
    assert ex.debug.outputs == ()


def test_explorer_shows_the_dot_text_without_graphviz(monkeypatch) -> None:
    ui = pytest.importorskip("mmulib.ui.tdp")

    def missing(dot: str) -> str:
        raise render.DotNotFoundError("Graphviz 'dot' not found on PATH; install it")

    monkeypatch.setattr(render, "render_svg", missing)
    ex = ui.TdpExplorer()
    assert ex.diagram.value.startswith(
        "<p><b>Drawing not rendered:</b> Graphviz &#x27;dot&#x27; not found on PATH")
    assert "<pre>digraph tdp {" in ex.diagram.value


def test_show_dot_gives_an_svg_output_or_the_dot_text(monkeypatch) -> None:
    ui = pytest.importorskip("mmulib.ui.tdp")
    svg = '<svg xmlns="http://www.w3.org/2000/svg"/>'
    monkeypatch.setattr(render, "render_svg", lambda dot: svg)
    out = ui.show_dot("digraph {}")
    assert type(out).__name__ == "SVG" and out._repr_svg_() == svg

    def broken(dot: str) -> str:
        raise render.DotError("dot -Tsvg failed: syntax error")

    monkeypatch.setattr(render, "render_svg", broken)
    out = ui.show_dot("digraph {")
    assert type(out).__name__ == "HTML" and "<pre>digraph {</pre>" in out.data
