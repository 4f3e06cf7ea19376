"""mmulib.draw.dot and mmulib.draw.svg: deterministic DOT text and the SVG clean-up."""

from __future__ import annotations

import pytest

from mmulib.draw.dot import Dot, Html, cell, esc, quote, row, table
from mmulib.draw.svg import split_svgs, tidy_svg


def test_attributes_are_sorted_so_the_same_calls_give_the_same_text() -> None:
    a, b = Dot("g"), Dot("g")
    a.node("n", shape="box", label="x", color="red")
    b.node("n", color="red", label="x", shape="box")
    assert a.source == b.source
    assert '"n" [color="red", label="x", shape="box"];' in a.source


def test_html_labels_are_written_raw_and_strings_quoted() -> None:
    g = Dot("g")
    g.node("n", label=Html("<B>x</B>"), tooltip='say "hi"')
    assert '"n" [label=<<B>x</B>>, tooltip="say \\"hi\\""];' in g.source


def test_none_attributes_are_left_out() -> None:
    g = Dot("g")
    g.node("n", label="x", color=None)
    assert '"n" [label="x"];' in g.source


def test_ports_are_unquoted_and_subgraphs_nest_in_order() -> None:
    g = Dot("g", rankdir="LR")
    sub = g.subgraph("cluster_a", label="A")
    sub.node("a")
    g.edge("vcpu:mmu", "a")
    assert g.source.splitlines() == [
        "digraph g {",
        '  graph [rankdir="LR"];',
        '  subgraph "cluster_a" {',
        '    graph [label="A"];',
        '    "a";',
        "  }",
        '  "vcpu":mmu -> "a";',
        "}",
    ]


def test_unknown_attribute_kind_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="graph, node or edge"):
        Dot("g").attr("cluster", color="red")


def test_table_cells_escape_text_and_sort_attributes() -> None:
    html = table([row(cell("a<b", port="p", bgcolor="#fff"))])
    assert html == ('<TABLE BORDER="0" CELLBORDER="1" CELLPADDING="3" CELLSPACING="0">'
                    '<TR><TD BGCOLOR="#fff" PORT="p">a&lt;b</TD></TR></TABLE>')
    assert esc('"&') == "&quot;&amp;" and quote("a") == '"a"'


def test_tidy_svg_turns_cell_links_into_tooltips_and_drops_the_prologue() -> None:
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg width="10pt" height="5pt">'
           '<g id="a_cpu_role.base.cr0_wp"><a xlink:href="mmulib:cell" xlink:title="cr0_wp">\n'
           "<text>1</text>\n</a>\n</g></svg>")
    out = tidy_svg(svg)
    assert out.startswith('<svg style="max-width:100%;height:auto" width="10pt"')
    assert "xlink:href" not in out and "<a" not in out
    assert '<g id="a_cpu_role.base.cr0_wp"><title>cr0_wp</title>' in out


def test_tidy_svg_keeps_real_links() -> None:
    svg = '<svg width="1pt" height="1pt"><a xlink:href="https://x" xlink:title="t">y</a></svg>'
    assert 'xlink:href="https://x"' in tidy_svg(svg)


def test_split_svgs_cuts_one_dot_run_into_documents() -> None:
    text = '<?xml a?>\n<svg>1</svg>\n<?xml b?>\n<svg>2</svg>\n'
    assert [s.split("\n")[1] for s in split_svgs(text)] == ["<svg>1</svg>", "<svg>2</svg>"]
    assert split_svgs("") == []
