"""The chapter's example trees, built through the fault path.

:func:`small_tree` is the tree the notebook, the widget and the tests share:
three 4 KiB pages at GFNs 0, 1 and 2, a 2 MiB page at GFN 0x200 and a 1 GiB page
at GFN 0x40000, in a 4-level root.  It has one table per level, and its leaves
cover all three leaf sizes.

>>> t = small_tree()
>>> t.counts().tables, t.counts().leaves
((1, 1, 1, 1), {1: 3, 2: 1, 3: 1})
"""

from __future__ import annotations

from .fault import kvm_tdp_mmu_map
from .spte import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K
from .tree import TdpTree

__all__ = ["SMALL_TREE_FAULTS", "small_tree"]

SMALL_TREE_FAULTS: tuple[tuple[int, int], ...] = (
    (0x0, PG_LEVEL_4K),
    (0x1, PG_LEVEL_4K),
    (0x2, PG_LEVEL_4K),
    (0x200, PG_LEVEL_2M),
    (0x40000, PG_LEVEL_1G),
)
"""(gfn, level) of the faults that build :func:`small_tree`, in order."""


def small_tree(root_level: int = 4, era: str = "5.10") -> TdpTree:
    """A fresh tree after :data:`SMALL_TREE_FAULTS`."""
    tree = TdpTree(root_level=root_level)
    for gfn, level in SMALL_TREE_FAULTS:
        kvm_tdp_mmu_map(tree, gfn, level, era=era)
    return tree
