"""Changing one SPTE, and everything that follows from it (``tdp_mmu.c``).

Every SPTE store in the TDP MMU goes through one place that looks at the old
and the new value (``handle_changed_spte``).  The case that matters for cost:
when a present **non-leaf** SPTE is zapped (or pointed elsewhere), the table it
pointed to is now unreachable, so its 512 entries are handled one by one,
recursing into tables below, then the TLBs are flushed and the page freed.
Zapping one SPTE near the root can therefore tear down a whole subtree.

How a store is made depends on the lock held:

* under the write side (5.10's spinlock, 5.12+'s rwlock for writing) the store
  is a plain write (``tdp_mmu_set_spte``);
* from 5.12, faults hold only the read side, so they store with a
  compare-and-exchange against the value they read (``tdp_mmu_set_spte_atomic``)
  and give up if another thread changed it meanwhile or *froze* it with
  ``REMOVED_SPTE``.  Zapping a huge SPTE under the read side first freezes it,
  flushes, then clears it (``tdp_mmu_zap_spte_atomic``).

The model runs one thread at a time; a caller can pass a *race* hook that stores
into the tree between the read and the compare-and-exchange, to show what the
other thread would have done.

Sources: ``arch/x86/kvm/mmu/tdp_mmu.c`` of 5.10 (``__handle_changed_spte``,
``__tdp_mmu_set_spte``), 5.12 (``handle_removed_tdp_mmu_page``,
``tdp_mmu_set_spte_atomic``, ``tdp_mmu_zap_spte_atomic``) and 5.15.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .iter import TdpIter, spte_to_child_pt
from .spte import (
    KVM_PAGES_PER_HPAGE,
    PG_LEVEL_4K,
    PT_PAGE_SIZE_MASK,
    REMOVED_SPTE,
    SPTE_MMU_PRESENT_MASK,
    is_last_spte,
    is_removed_spte,
    is_shadow_present_pte,
    spte_to_pfn,
)
from .tree import TdpTree, TreeError

__all__ = ["TdpEra", "TDP_ERAS", "tdp_era", "Work", "Race", "handle_changed_spte",
           "tdp_mmu_set_spte", "tdp_mmu_set_spte_atomic", "tdp_mmu_zap_spte_atomic"]


@dataclass(frozen=True)
class TdpEra:
    """The TDP MMU facts that differ between the modelled releases."""

    name: str
    atomic_faults: bool
    """Faults hold ``mmu_lock`` for read and store with cmpxchg (5.12: a2855afc7ee8)."""
    freeze_removed_children: bool
    """Children of a removed table are set to REMOVED_SPTE (5.12+), not 0 (5.10)."""
    restart_on_yield: bool
    """Yield via ``tdp_iter_restart`` with a forward-progress check (5.12+)."""
    fault_ret_fixed: bool
    """A mapped fault returns RET_PF_FIXED (5.15); 5.10 and 5.12 return 0, RET_PF_RETRY."""
    frozen_check_before_alloc: bool
    """The fault path gives up at a frozen SPTE before allocating a table (5.15)."""
    zap_all_from_root: bool
    """Zapping everything walks only the root's entries and stops at the host's max GFN (5.15)."""


TDP_ERAS: dict[str, TdpEra] = {
    "5.10": TdpEra("5.10", False, False, False, False, False, False),
    "5.12": TdpEra("5.12", True, True, True, False, False, False),
    "5.15": TdpEra("5.15", True, True, True, True, True, True),
}


def tdp_era(name: str | TdpEra) -> TdpEra:
    """The era called ``name`` (exactly "5.10", "5.12" or "5.15")."""
    if isinstance(name, TdpEra):
        return name
    try:
        return TDP_ERAS[name]
    except KeyError:
        raise ValueError(
            f"TDP MMU era {name!r} is not modelled; modelled: {', '.join(TDP_ERAS)} "
            "(5.18+ zaps roots in a worker and 6.x splits huge pages on faults)") from None


@dataclass
class Work:
    """What one operation did to the tree (an accumulator; results copy it out)."""

    tables_allocated: list[tuple[int, int]] = field(default_factory=list)
    tables_freed: list[tuple[int, int]] = field(default_factory=list)
    leaves_removed: Counter[int] = field(default_factory=Counter)
    spte_writes: int = 0
    teardown_sptes: int = 0
    flushes: int = 0


Race = Callable[[TdpTree, TdpIter], None]
"""Another thread's store, run between reading an SPTE and the cmpxchg on it."""


def handle_changed_spte(tree: TdpTree, gfn: int, old: int, new: int, level: int, work: Work,
                        era: TdpEra, shared: bool) -> None:
    """Bookkeeping after ``old`` became ``new`` at (``gfn``, ``level``).

    A present leaf replaced by another present leaf of a different frame is a
    kernel ``BUG()`` ("cannot replace a present leaf ..."): raises TreeError.
    """
    was_present, is_present = is_shadow_present_pte(old), is_shadow_present_pte(new)
    was_leaf = was_present and is_last_spte(old, level)
    is_leaf = is_present and is_last_spte(new, level)
    pfn_changed = spte_to_pfn(old) != spte_to_pfn(new)
    if was_leaf and is_leaf and pfn_changed:
        raise TreeError(f"invalid SPTE change at L{level} gfn {gfn:#x}: a present leaf "
                        "replaced by a present leaf of another frame")
    if old == new or (not was_present and not is_present):
        return
    if was_leaf and not is_leaf:
        work.leaves_removed[level] += 1
    if was_present and not was_leaf and (pfn_changed or not is_present):
        child = spte_to_child_pt(tree, old, level)
        assert child is not None
        _handle_removed_table(tree, child, gfn, level - 1, work, era, shared)


def _handle_removed_table(tree: TdpTree, pt: int, gfn: int, level: int, work: Work,
                          era: TdpEra, shared: bool) -> None:
    """Handle all 512 SPTEs of an unlinked table, then flush and free it.

    5.10 zeroes every entry.  5.12+ under the write side stores REMOVED_SPTE in
    the present entries only; under the read side in every entry (an exchange
    that waits while another thread holds the entry frozen).
    """
    old = tree.snapshot(pt)
    present = (old & np.uint64(SPTE_MMU_PRESENT_MASK)) != 0
    if era.freeze_removed_children and shared:
        if np.any(old == np.uint64(REMOVED_SPTE)):
            raise TreeError(f"table {pt:#x} has a frozen entry: the exchange would wait for the "
                            "thread that froze it, which the one-thread model does not have")
        mask, value = np.ones(old.shape, dtype=bool), REMOVED_SPTE
    elif era.freeze_removed_children:
        mask, value = present, REMOVED_SPTE
    else:
        mask, value = np.ones(old.shape, dtype=bool), 0
    tree.fill(pt, mask, value)
    work.teardown_sptes += old.size
    work.spte_writes += int(np.count_nonzero(mask))
    huge = (old & np.uint64(PT_PAGE_SIZE_MASK)) != 0
    leaf = present if level == PG_LEVEL_4K else present & huge
    work.leaves_removed[level] += int(np.count_nonzero(leaf))
    for i in np.flatnonzero(present & ~leaf):
        child_gfn = gfn + int(i) * KVM_PAGES_PER_HPAGE(level)
        handle_changed_spte(tree, child_gfn, int(old[i]), value, level, work, era, shared)
    work.flushes += 1  # kvm_flush_remote_tlbs_with_address over the table's range
    work.tables_freed.append((level, gfn))
    tree.free_table(pt)


def tdp_mmu_set_spte(tree: TdpTree, it: TdpIter, new: int, work: Work, era: TdpEra) -> None:
    """Store under the write side of ``mmu_lock`` (``tdp_mmu_set_spte``), then handle it."""
    if era.atomic_faults and is_removed_spte(it.old_spte):
        raise TreeError("tdp_mmu_set_spte on a frozen SPTE (the kernel WARNs)")
    tree.write(*it.sptep, new)
    work.spte_writes += 1
    handle_changed_spte(tree, it.gfn, it.old_spte, new, it.level, work, era, shared=False)


def tdp_mmu_set_spte_atomic(tree: TdpTree, it: TdpIter, new: int, work: Work, era: TdpEra,
                            race: Race | None = None) -> bool:
    """cmpxchg ``new`` against ``it.old_spte`` under the read side; False if that failed.

    A frozen ``old_spte`` is never replaced: only the thread that froze it may.
    """
    if is_removed_spte(it.old_spte):
        return False
    if race is not None:
        race(tree, it)
    if tree.read(*it.sptep) != it.old_spte:
        return False
    tree.write(*it.sptep, new)
    work.spte_writes += 1
    handle_changed_spte(tree, it.gfn, it.old_spte, new, it.level, work, era, shared=True)
    return True


def tdp_mmu_zap_spte_atomic(tree: TdpTree, it: TdpIter, work: Work, era: TdpEra,
                            race: Race | None = None) -> bool:
    """Freeze, flush, clear: zap one SPTE under the read side (5.12+)."""
    if not tdp_mmu_set_spte_atomic(tree, it, REMOVED_SPTE, work, era, race):
        return False
    work.flushes += 1
    tree.write(*it.sptep, 0)  # frozen -> 0: nothing to account
    work.spte_writes += 1
    return True
