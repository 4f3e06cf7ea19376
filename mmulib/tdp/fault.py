"""``kvm_tdp_mmu_map``: handling a TDP page fault by walking, allocating, installing a leaf.

The fault path walks ``[gfn, gfn + 1)`` from the root.  At every SPTE above the
target level it makes sure there is a table to step down into: a non-present
SPTE gets a newly allocated table (a non-leaf SPTE pointing to it); a huge leaf
in the way is zapped first and then replaced the same way.  At the target level
(``level``: 1 for 4 KiB, 2 for 2 MiB, 3 for 1 GiB, whatever the host mapping
allows) it installs the leaf; if the leaf is already there the fault was
*spurious* (another vCPU fixed it).

From 5.12 the fault runs under the read side of ``mmu_lock``, next to other
faults, so every store is a cmpxchg; when it fails, or the walk meets a frozen
SPTE, the fault gives up with ``RET_PF_RETRY`` and the vCPU simply faults again.

Sources: ``kvm_tdp_mmu_map`` and ``tdp_mmu_map_handle_target_level`` in
``arch/x86/kvm/mmu/tdp_mmu.c`` of 5.10, 5.12 and 5.15; ``RET_PF_*`` in
``mmu/mmu_internal.h`` (5.10).  Not modelled: MMIO SPTEs, write-protected
pages (``RET_PF_EMULATE``), the NX huge-page workaround, dirty logging.

>>> from mmulib.tdp.tree import TdpTree
>>> t = TdpTree()
>>> r = kvm_tdp_mmu_map(t, 0x1234)
>>> r.ret_name, r.tables_allocated, t.counts().leaves[1]
('RET_PF_RETRY', ((3, 0), (2, 0), (1, 4608)), 1)

(5.10 returns 0, ``RET_PF_RETRY``, even for a fault it fixed; 5.15 returns
``RET_PF_FIXED``.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .iter import IterStep, TdpIter, for_each_tdp_pte
from .mmu import (
    Race,
    TdpEra,
    Work,
    tdp_era,
    tdp_mmu_set_spte,
    tdp_mmu_set_spte_atomic,
    tdp_mmu_zap_spte_atomic,
)
from .spte import (
    KVM_PAGES_PER_HPAGE,
    PG_LEVEL_4K,
    is_large_pte,
    is_removed_spte,
    is_shadow_present_pte,
    make_leaf_spte,
    make_nonleaf_spte,
)
from .tree import TdpTree

__all__ = ["RET_PF_RETRY", "RET_PF_EMULATE", "RET_PF_INVALID", "RET_PF_FIXED",
           "RET_PF_SPURIOUS", "RET_PF_NAMES", "MapResult", "kvm_tdp_mmu_map"]

RET_PF_RETRY, RET_PF_EMULATE, RET_PF_INVALID, RET_PF_FIXED, RET_PF_SPURIOUS = range(5)
RET_PF_NAMES = {RET_PF_RETRY: "RET_PF_RETRY", RET_PF_EMULATE: "RET_PF_EMULATE",
                RET_PF_INVALID: "RET_PF_INVALID", RET_PF_FIXED: "RET_PF_FIXED",
                RET_PF_SPURIOUS: "RET_PF_SPURIOUS"}


@dataclass(frozen=True)
class MapResult:
    """What one call of ``kvm_tdp_mmu_map`` did.

    ``installed`` is False when the fault gave up (cmpxchg lost, frozen SPTE) or
    found its leaf already in place; ``tables_freed`` lists tables freed because a
    lost race made the fault drop the table it had just allocated, or because a
    huge leaf replaced a table.
    """

    ret: int
    gfn: int
    level: int
    installed: bool
    path: tuple[IterStep, ...]
    tables_allocated: tuple[tuple[int, int], ...]
    tables_freed: tuple[tuple[int, int], ...]
    leaves_removed: tuple[tuple[int, int], ...]
    flushes: int

    @property
    def ret_name(self) -> str:
        return RET_PF_NAMES[self.ret]


def kvm_tdp_mmu_map(tree: TdpTree, gfn: int, level: int = PG_LEVEL_4K, pfn: int | None = None,
                    era: str | TdpEra = "5.10", race: Race | None = None) -> MapResult:
    """Map ``gfn`` with a leaf at ``level`` (after ``kvm_mmu_hugepage_adjust``).

    Args:
        tree: the root the vCPU runs on.
        gfn: the faulting guest frame.
        level: target level of the leaf (1, 2 or 3).
        pfn: host frame backing ``gfn``; default ``gfn`` (an identity map).  For a
            huge leaf it is rounded down to the leaf's size, as the kernel does.
        era: "5.10" (write lock, plain stores), "5.12" or "5.15" (read lock, cmpxchg).
        race: 5.12+ only: another thread's store before each cmpxchg (see mmu.Race).
    """
    e = tdp_era(era)
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1 (4K), 2 (2M) or 3 (1G), not {level!r}")
    if not 0 <= gfn < 1 << (9 * tree.root_level):
        raise ValueError(f"gfn {gfn:#x} is beyond what a {tree.root_level}-level root maps")
    pfn = gfn if pfn is None else pfn
    pfn &= ~(KVM_PAGES_PER_HPAGE(level) - 1)
    work, path = Work(), []
    it = None
    gave_up = False
    for it in for_each_tdp_pte(tree, gfn, gfn + 1):
        path.append(it.step())
        if it.level == level:
            break
        if is_shadow_present_pte(it.old_spte) and is_large_pte(it.old_spte):
            if not _zap_huge(tree, it, work, e, race):
                gave_up = True
                break
            it.old_spte = tree.read(*it.sptep)  # the !present branch below needs the new value
        if not is_shadow_present_pte(it.old_spte):
            if e.frozen_check_before_alloc and is_removed_spte(it.old_spte):
                gave_up = True
                break
            if not _link_new_table(tree, it, work, e, race):
                gave_up = True
                break
    if it is None or gave_up or it.level != level:
        return _result(RET_PF_RETRY, gfn, level, False, path, work)
    return _map_target_level(tree, it, gfn, pfn, level, path, work, e, race)


def _zap_huge(tree: TdpTree, it: TdpIter, work: Work, e: TdpEra, race: Race | None) -> bool:
    if e.atomic_faults:
        return tdp_mmu_zap_spte_atomic(tree, it, work, e, race)
    tdp_mmu_set_spte(tree, it, 0, work, e)
    work.flushes += 1  # kvm_flush_remote_tlbs_with_address over the huge page
    return True


def _link_new_table(tree: TdpTree, it: TdpIter, work: Work, e: TdpEra, race: Race | None) -> bool:
    child = tree.alloc_table(it.level - 1, it.gfn)
    work.tables_allocated.append((it.level - 1, it.gfn))
    new = make_nonleaf_spte(child)
    if not e.atomic_faults:
        tdp_mmu_set_spte(tree, it, new, work, e)
        return True
    if tdp_mmu_set_spte_atomic(tree, it, new, work, e, race):
        return True
    tree.free_table(child)  # tdp_mmu_free_sp: never linked, nobody else saw it
    work.tables_freed.append((it.level - 1, it.gfn))
    return False


def _map_target_level(tree: TdpTree, it: TdpIter, gfn: int, pfn: int, level: int,
                      path: list[IterStep], work: Work, e: TdpEra,
                      race: Race | None) -> MapResult:
    """``tdp_mmu_map_handle_target_level``: install the leaf, or see it is there."""
    new = make_leaf_spte(pfn, level)
    fixed = RET_PF_FIXED if e.fault_ret_fixed else RET_PF_RETRY
    if new == it.old_spte:
        return _result(RET_PF_SPURIOUS, gfn, level, False, path, work)
    if not e.atomic_faults:
        tdp_mmu_set_spte(tree, it, new, work, e)
    elif not tdp_mmu_set_spte_atomic(tree, it, new, work, e, race):
        return _result(RET_PF_RETRY, gfn, level, False, path, work)
    return _result(fixed, gfn, level, True, path, work)


def _result(ret: int, gfn: int, level: int, installed: bool, path: list[IterStep],
            work: Work) -> MapResult:
    return MapResult(ret, gfn, level, installed, tuple(path), tuple(work.tables_allocated),
                     tuple(work.tables_freed),
                     tuple(sorted((lv, n) for lv, n in work.leaves_removed.items() if n)),
                     work.flushes)
