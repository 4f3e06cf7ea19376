"""DOT text for TDP trees: a small tree entry by entry, a big one level by level.

:func:`tree_dot` draws every table of a (small) tree as a box of rows, left to
right from the root, with an edge from each non-leaf SPTE to its table.  Present
SPTEs get a row each; runs of non-present entries collapse into one row
("2-511"), unless the iterator is standing on one of them.  Entries the walk
has visited are shaded, the current one is orange, tables just allocated have a
green header.  :func:`counts_dot` draws only how many tables and leaves each
level holds, for trees of any size.

Pure text (no Graphviz needed); :func:`mmulib.render.render_svg` makes SVG of it.
Node names are semantic and stable: ``t{level}_{gfn:x}`` for the table at
``level`` whose first GFN is ``gfn`` (``sp->gfn``).

>>> from mmulib.tdp.tree import TdpTree
>>> dot = tree_dot(TdpTree())
>>> "t4_0 [label=" in dot, '0-511</td><td port="e0">non-present' in dot
(True, True)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .counts import TABLE_BYTES, LevelCounts
from .spte import (
    KVM_PAGES_PER_HPAGE,
    LEVEL_NAMES,
    PT64_ENT_PER_PAGE,
    SpteState,
    spte_state,
    spte_to_pfn,
)
from .tree import TdpTree

__all__ = ["tree_dot", "counts_dot", "node_name", "COLORS"]

COLORS = {
    "current": "#f4a261",
    "visited": "#ffe8a3",
    "leaf": "#cde8c5",
    "nonleaf": "#cfe2f3",
    "frozen": "#e0b0ff",
    "header": "#d9d9d9",
    "new": "#9fd69b",
}
"""Fill colours: the iterator's SPTE, SPTEs already visited, leaves, links, frozen SPTEs,
table headers, and headers of tables allocated by the step shown."""

Entry = tuple[int, int]  # (table pfn, index)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def node_name(level: int, gfn: int) -> str:
    return f"t{level}_{gfn:x}"


def _content(spte: int, level: int, tree: TdpTree) -> str:
    state = spte_state(spte, level)
    if state is SpteState.NON_LEAF:
        return f"&#8594; L{level - 1} table"
    if state is SpteState.REMOVED:
        return "frozen"
    if state is SpteState.NON_PRESENT:
        return "non-present"
    return f"{LEVEL_NAMES[level]} &#8594; pfn {spte_to_pfn(spte):#x}"


def _fill(spte: int, level: int, entry: Entry, visited: Collection[Entry],
          current: Entry | None) -> str:
    if entry == current:
        return COLORS["current"]
    if entry in visited:
        return COLORS["visited"]
    state = spte_state(spte, level)
    if state is SpteState.NON_LEAF:
        return COLORS["nonleaf"]
    if state is SpteState.REMOVED:
        return COLORS["frozen"]
    return "" if state is SpteState.NON_PRESENT else COLORS["leaf"]


def _rows(tree: TdpTree, pfn: int, visited: Collection[Entry],
          current: Entry | None) -> list[tuple[int, int, int]]:
    """(first index, last index, spte) per row: one per shown entry, runs merged."""
    spt = tree.snapshot(pfn)
    rows: list[tuple[int, int, int]] = []
    for i in range(PT64_ENT_PER_PAGE):
        spte, entry = int(spt[i]), (pfn, i)
        merge = (spte == 0 and entry != current and rows and rows[-1][2] == 0
                 and rows[-1][1] == i - 1 and (pfn, rows[-1][0]) != current
                 and ((pfn, rows[-1][0]) in visited) == (entry in visited))
        if merge:
            rows[-1] = (rows[-1][0], i, 0)
        else:
            rows.append((i, i, spte))
    return rows


def _table_label(tree: TdpTree, pfn: int, visited: Collection[Entry], current: Entry | None,
                 new: bool) -> str:
    level, gfn = tree.level_of(pfn), tree.gfn_of(pfn)
    name = f"L{level} (root)" if pfn == tree.root else f"L{level} table"
    head = COLORS["new"] if new else COLORS["header"]
    cells = [f'<tr><td colspan="2" bgcolor="{head}"><b>{name}</b> gfn {gfn:#x}</td></tr>']
    for first, last, spte in _rows(tree, pfn, visited, current):
        index = str(first) if first == last else f"{first}-{last}"
        fill = _fill(spte, level, (pfn, first), visited, current)
        bg = f' bgcolor="{fill}"' if fill else ""
        cells.append(f'<tr><td>{index}</td><td port="e{first}"{bg}>'
                     f"{_content(spte, level, tree)}</td></tr>")
    return ('<<table border="0" cellborder="1" cellspacing="0" cellpadding="3">'
            + "".join(cells) + "</table>>")


def tree_dot(tree: TdpTree, visited: Iterable[Entry] = (), current: Entry | None = None,
             new_tables: Iterable[tuple[int, int]] = (), title: str = "") -> str:
    """DOT for every table of ``tree``.

    Args:
        visited: (table pfn, index) of SPTEs the walk has seen (entries of tables
            freed since are ignored).
        current: the SPTE the iterator stands on.
        new_tables: (level, gfn) of tables to mark as just allocated.
        title: a line printed above the drawing.
    """
    seen, fresh = set(visited), set(new_tables)
    lines = ["digraph tdp {", '  graph [rankdir=LR, nodesep=0.15, ranksep=0.5, '
             f'labelloc=t, fontname="Helvetica", label="{_quote(title)}"];',
             '  node [shape=plaintext, fontname="Helvetica", fontsize=10];',
             "  edge [arrowsize=0.6];"]
    edges = []
    for pfn, level, gfn in tree.tables():
        label = _table_label(tree, pfn, seen, current, (level, gfn) in fresh)
        lines.append(f"  {node_name(level, gfn)} [label={label}];")
        for index, spte in tree.entries(pfn):
            if spte_state(spte, level) is SpteState.NON_LEAF:
                child = spte_to_pfn(spte)
                edges.append(f"  {node_name(level, gfn)}:e{index} -> "
                             f"{node_name(level - 1, tree.gfn_of(child))};")
    return "\n".join(lines + edges + ["}"]) + "\n"


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{n} B"


def counts_dot(counts: LevelCounts, title: str = "") -> str:
    """DOT with one box per level: tables there, their memory, and leaves mapped there."""
    lines = ["digraph tdp_counts {", f'  graph [rankdir=TB, labelloc=t, fontname="Helvetica", '
             f'label="{_quote(title)}"];', '  node [shape=box, style=filled, fillcolor="#f2f2f2", '
             'fontname="Helvetica", fontsize=10];']
    names = []
    for level in range(counts.root_level, 0, -1):
        tables = counts.tables[level - 1]
        text = f"L{level}: {tables:,} table{'s' * (tables != 1)} ({_size(tables * TABLE_BYTES)})"
        leaves = counts.leaves.get(level, 0)
        if leaves:
            size = KVM_PAGES_PER_HPAGE(level) * 4096
            text += f"\\n{leaves:,} x {LEVEL_NAMES[level]} leaves = {_size(leaves * size)}"
        names.append(f"l{level}")
        lines.append(f'  l{level} [label="{text}"];')
    lines += [f"  {a} -> {b};" for a, b in zip(names, names[1:])]
    total = f"{counts.table_count:,} tables, {_size(counts.table_bytes)} of page tables"
    lines += [f'  total [shape=plaintext, style="", label="{total}"];', f"  {names[-1]} -> total "
              "[style=invis];", "}"]
    return "\n".join(lines) + "\n"
