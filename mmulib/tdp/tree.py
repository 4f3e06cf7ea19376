"""A TDP MMU root and the page tables under it, stored sparsely.

In the kernel a TDP MMU root is a ``struct kvm_mmu_page`` whose ``spt`` is a
4 KiB page of 512 SPTEs; every table below it is another ``kvm_mmu_page``,
allocated by the fault path when a walk finds a non-present SPTE and freed when
the SPTE pointing to it is zapped.  :class:`TdpTree` keeps exactly those tables
and nothing else: one 512-entry ``uint64`` array per table, found by its model
page frame (the number a non-leaf SPTE carries).  Memory therefore follows the
number of tables, which follows what is mapped, not the size of the guest: a
12 TiB guest with two 4 KiB pages faulted in costs seven tables.

The tree does no MMU logic.  :mod:`mmulib.tdp.mmu` changes SPTEs the way
``tdp_mmu.c`` does, :mod:`mmulib.tdp.iter` walks it, :mod:`mmulib.tdp.fault` and
:mod:`mmulib.tdp.zap` build and tear it down.

>>> t = TdpTree(root_level=4)
>>> t.counts().tables, t.nbytes
((0, 0, 0, 1), 4096)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .counts import TABLE_BYTES, LevelCounts
from .spte import (
    PAGE_SHIFT,
    PT64_ENT_PER_PAGE,
    PT64_ROOT_4LEVEL,
    PT64_ROOT_5LEVEL,
    PT_PAGE_SIZE_MASK,
    SPTE_MMU_PRESENT_MASK,
    is_last_spte,
    is_shadow_present_pte,
)

__all__ = ["TdpTree", "TreeError", "TABLE_PFN_BASE"]

TABLE_PFN_BASE = 1 << 39
"""First model frame handed out to page tables: above the frames of any guest below 2 PiB, so
a table can never be mistaken for guest memory that a leaf maps (``spte_to_pfn`` differs)."""


class TreeError(RuntimeError):
    """The model was asked to do something the kernel treats as a bug (it would WARN or BUG)."""


class TdpTree:
    """One TDP MMU root (``root_level`` 4 or 5) and every table reachable from it.

    Args:
        root_level: 4 for 4-level EPT/NPT, 5 for 5-level.
        phys_bits: the host's ``shadow_phys_bits``; GFNs from
            ``1 << (phys_bits - 12)`` up are never mapped and zapping "all" stops there.
    """

    def __init__(self, root_level: int = PT64_ROOT_4LEVEL, phys_bits: int = 46) -> None:
        if root_level not in (PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL):
            raise ValueError(f"root_level must be 4 or 5, not {root_level!r}")
        self.root_level = root_level
        self.phys_bits = phys_bits
        self._spt: dict[int, np.ndarray] = {}
        self._meta: dict[int, tuple[int, int]] = {}  # pfn -> (level of its entries, base gfn)
        self._next_pfn = TABLE_PFN_BASE
        self._tables = [0] * (root_level + 1)
        self._leaves = [0] * (root_level + 1)
        self.tables_allocated = 0
        self.tables_freed = 0
        self.root: int | None = self.alloc_table(root_level, 0)

    # -- tables -----------------------------------------------------------------------------

    def alloc_table(self, level: int, gfn: int) -> int:
        """A zeroed table for level-``level`` SPTEs starting at ``gfn``; returns its frame."""
        pfn = self._next_pfn
        self._next_pfn += 1
        self._spt[pfn] = np.zeros(PT64_ENT_PER_PAGE, dtype=np.uint64)
        self._meta[pfn] = (level, gfn)
        self._tables[level] += 1
        self.tables_allocated += 1
        return pfn

    def free_table(self, pfn: int) -> None:
        """Free a table that no longer maps anything (its SPTEs were handled first)."""
        spt = self._spt[pfn]
        if np.any(spt & np.uint64(SPTE_MMU_PRESENT_MASK)):
            raise TreeError(f"freeing table {pfn:#x} that still holds present SPTEs")
        level, _ = self._meta.pop(pfn)
        del self._spt[pfn]
        self._tables[level] -= 1
        self.tables_freed += 1
        if pfn == self.root:
            self.root = None

    def has_table(self, pfn: int) -> bool:
        return pfn in self._spt

    def level_of(self, pfn: int) -> int:
        """Level of the SPTEs in table ``pfn`` (the root's is ``root_level``).

        Note, 5.10 and 5.12 stored one more than this in a child's ``sp->role.level``
        (``alloc_tdp_mmu_page(vcpu, iter.gfn, iter.level)``); 5.15 passes ``iter.level - 1``.
        """
        return self._meta[pfn][0]

    def gfn_of(self, pfn: int) -> int:
        """Lowest GFN mapped through table ``pfn`` (``sp->gfn``)."""
        return self._meta[pfn][1]

    def tables(self) -> Iterator[tuple[int, int, int]]:
        """(pfn, level, gfn) of every table, root level first, then by GFN."""
        order = sorted(self._meta.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        for pfn, (level, gfn) in order:
            yield pfn, level, gfn

    # -- SPTEs ------------------------------------------------------------------------------

    def read(self, pfn: int, index: int) -> int:
        return int(self._spt[pfn][index])

    def write(self, pfn: int, index: int, spte: int) -> None:
        """Store ``spte``; only the leaf counters are kept here, the rest is the MMU's job."""
        spt = self._spt[pfn]
        level = self._meta[pfn][0]
        old = int(spt[index])
        if is_shadow_present_pte(old) and is_last_spte(old, level):
            self._leaves[level] -= 1
        if is_shadow_present_pte(spte) and is_last_spte(spte, level):
            self._leaves[level] += 1
        spt[index] = spte

    def snapshot(self, pfn: int) -> np.ndarray:
        """A copy of table ``pfn``'s 512 SPTEs."""
        return self._spt[pfn].copy()

    def fill(self, pfn: int, mask: np.ndarray, spte: int) -> None:
        """Store ``spte`` in every entry selected by ``mask`` (keeps the leaf counters right)."""
        spt = self._spt[pfn]
        level = self._meta[pfn][0]
        old = spt[mask]
        present = (old & np.uint64(SPTE_MMU_PRESENT_MASK)) != 0
        if level > 1:
            present &= (old & np.uint64(PT_PAGE_SIZE_MASK)) != 0
        self._leaves[level] -= int(np.count_nonzero(present))
        if is_shadow_present_pte(spte) and is_last_spte(spte, level):
            self._leaves[level] += int(np.count_nonzero(mask))
        spt[mask] = np.uint64(spte)

    def entries(self, pfn: int) -> list[tuple[int, int]]:
        """(index, spte) of every non-zero SPTE in table ``pfn``."""
        spt = self._spt[pfn]
        return [(int(i), int(spt[i])) for i in np.flatnonzero(spt)]

    # -- summaries --------------------------------------------------------------------------

    @property
    def max_gfn(self) -> int:
        """``1 << (shadow_phys_bits - PAGE_SHIFT)``: the end of "everything" for zaps."""
        return 1 << (self.phys_bits - PAGE_SHIFT)

    @property
    def nbytes(self) -> int:
        """Bytes of SPTE storage the model holds: 4 KiB per live table."""
        return len(self._spt) * TABLE_BYTES

    def counts(self) -> LevelCounts:
        tables = tuple(self._tables[1:])
        leaves = {lv: self._leaves[lv] for lv in (1, 2, 3)}
        return LevelCounts(self.root_level, tables, leaves)

    def copy(self) -> TdpTree:
        """An independent copy (tables duplicated), for before/after pictures."""
        new = object.__new__(TdpTree)
        new.__dict__.update(self.__dict__)
        new._spt = {pfn: spt.copy() for pfn, spt in self._spt.items()}
        new._meta = dict(self._meta)
        new._tables = list(self._tables)
        new._leaves = list(self._leaves)
        return new
