"""Page counts per level: of a model tree, or in closed form for whole mappings.

:class:`LevelCounts` says how many page-table pages a TDP tree has at each
level and how many leaves of each size it maps.  :meth:`TdpTree.counts
<mmulib.tdp.tree.TdpTree.counts>` reads it off a model tree;
:func:`mapping_counts` computes it without building anything, for guests far
too big to model page by page (12 TiB of 4 KiB pages is 3.2 billion SPTEs).
The closed form is exact: a range of GFNs needs one table at level T for every
distinct value of ``gfn >> 9*T`` it covers, and ranges that share a table
share it once.

>>> c = mapping_counts([(0, 1 << 18)], leaf_level=1)   # 1 GiB of 4 KiB pages
>>> c.tables, c.leaves[1], c.table_bytes
((512, 1, 1, 1), 262144, 2109440)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .spte import KVM_PAGES_PER_HPAGE, LEVEL_NAMES, PAGE_SHIFT, PT64_ROOT_4LEVEL

__all__ = ["LevelCounts", "mapping_counts", "TABLE_BYTES"]

TABLE_BYTES = 4096
"""One page-table page: 512 SPTEs of 8 bytes (``struct kvm_mmu_page`` headers not counted)."""


@dataclass(frozen=True)
class LevelCounts:
    """Tables and leaves per level of one TDP tree.

    ``tables[L - 1]`` counts the tables whose entries are level-L SPTEs (the
    root is the one table of level ``root_level``); ``leaves[L]`` counts present
    leaves at level L (1 = 4K, 2 = 2M, 3 = 1G).
    """

    root_level: int
    tables: tuple[int, ...]
    leaves: dict[int, int]

    @property
    def table_count(self) -> int:
        return sum(self.tables)

    @property
    def table_bytes(self) -> int:
        """Memory of the page tables themselves: 4 KiB per table."""
        return self.table_count * TABLE_BYTES

    @property
    def mapped_bytes(self) -> int:
        return sum(n * (KVM_PAGES_PER_HPAGE(lv) << PAGE_SHIFT) for lv, n in self.leaves.items())

    @property
    def teardown_sptes(self) -> int:
        """SPTEs a full teardown walks: all 512 entries of every table."""
        return 512 * self.table_count

    def rows(self) -> list[tuple[str, int, int]]:
        """(level name, tables at that level, leaves at that level), root first."""
        return [(f"L{lv}", self.tables[lv - 1], self.leaves.get(lv, 0))
                for lv in range(self.root_level, 0, -1)]

    def __str__(self) -> str:
        parts = [f"{name} {tables} tables" for name, tables, _ in self.rows()]
        leaves = ", ".join(f"{n} x {LEVEL_NAMES[lv]}" for lv, n in sorted(self.leaves.items())
                           if n)
        return f"{'; '.join(parts)}; leaves: {leaves or 'none'}"


def _merged_span(ranges: list[tuple[int, int]], shift: int) -> int:
    """Distinct values of ``gfn >> shift`` over the union of [start, end) ranges."""
    spans = sorted((s >> shift, (e - 1) >> shift) for s, e in ranges if e > s)
    total, cur_lo, cur_hi = 0, None, None
    for lo, hi in spans:
        if cur_hi is not None and lo <= cur_hi + 1:
            cur_hi = max(cur_hi, hi)
            continue
        if cur_hi is not None:
            total += cur_hi - cur_lo + 1
        cur_lo, cur_hi = lo, hi
    if cur_hi is not None:
        total += cur_hi - cur_lo + 1
    return total


def mapping_counts(ranges: Iterable[tuple[int, int]], leaf_level: int = 1,
                   root_level: int = PT64_ROOT_4LEVEL) -> LevelCounts:
    """Counts for a tree in which every GFN of ``ranges`` is mapped by ``leaf_level`` leaves.

    Args:
        ranges: [start, end) GFN ranges; with huge leaves both ends must be
            multiples of the leaf size.
        leaf_level: 1, 2 or 3 (4 KiB, 2 MiB, 1 GiB leaves).
        root_level: 4 or 5.

    This is the tree the fault path builds when each GFN is faulted once at
    ``leaf_level`` (``tests/test_tdp_counts.py`` checks it against
    :func:`~mmulib.tdp.fault.kvm_tdp_mmu_map`).
    """
    rs = [(int(s), int(e)) for s, e in ranges]
    size = KVM_PAGES_PER_HPAGE(leaf_level)
    for s, e in rs:
        if s % size or e % size:
            raise ValueError(f"range [{s:#x}, {e:#x}) is not aligned to {LEVEL_NAMES[leaf_level]} "
                             f"leaves ({size} pages)")
    tables = [0] * root_level
    for level in range(leaf_level, root_level):
        tables[level - 1] = _merged_span(rs, 9 * level)
    tables[root_level - 1] = 1
    leaves = {lv: 0 for lv in (1, 2, 3)}
    leaves[leaf_level] = _merged_span(rs, 9 * (leaf_level - 1))
    return LevelCounts(root_level, tuple(tables), leaves)
