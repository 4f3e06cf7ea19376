"""``zap_gfn_range`` and freeing a root: tearing a TDP tree down, with page counts.

Zapping ``[start, end)`` walks the range in pre-order and clears every present
SPTE that lies wholly inside it: a leaf, or a non-leaf whose whole table lies
inside, in which case the table and everything under it go too (see
:mod:`mmulib.tdp.mmu`).  A non-leaf that sticks out of the range is kept and
the walk steps down into it instead.  Non-present SPTEs are skipped.

A long zap may drop ``mmu_lock`` now and then (``can_yield``).  5.10 checks
after each cleared SPTE, flushes the TLBs and restarts the walk from the root
(``tdp_iter_refresh_walk``).  5.12 checks before looking at each SPTE, and only
if the walk got further since the last yield (``tdp_iter_restart``).  Whether
the scheduler wants the CPU is the caller's ``need_resched`` predicate.

Freeing a root in 5.10 (``kvm_tdp_mmu_free_root``, when the last vCPU drops its
reference) zaps the whole GFN space *without* yielding, then frees the root
page: the cost is one pass over every table of the tree, 512 SPTEs each.

Sources: ``zap_gfn_range``, ``kvm_tdp_mmu_zap_gfn_range``, ``kvm_tdp_mmu_zap_all``,
``kvm_tdp_mmu_free_root``, ``tdp_mmu_iter_flush_cond_resched`` (5.10) and
``tdp_mmu_iter_cond_resched`` (5.12) in ``arch/x86/kvm/mmu/tdp_mmu.c``; 5.15's
``zap_all`` shortcut (``min_level`` = the root's level, end clamped to the host's
maximum GFN) in the same function.  Not modelled: zapping under the read side
(5.15 ``shared``), 5.18+'s zap worker, 6.x's split into ``tdp_mmu_zap_leafs`` and
``tdp_mmu_zap_root``.

>>> from mmulib.tdp.tree import TdpTree
>>> from mmulib.tdp.fault import kvm_tdp_mmu_map
>>> t = TdpTree()
>>> for g in range(4):
...     _ = kvm_tdp_mmu_map(t, g)
>>> r = zap_gfn_range(t, 0, 512)
>>> r.zapped, r.tables_freed, r.leaves_removed
(((2, 0),), ((1, 0),), ((1, 4),))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .iter import IterStep, TdpIter
from .mmu import TdpEra, Work, tdp_era, tdp_mmu_set_spte
from .spte import KVM_PAGES_PER_HPAGE, PG_LEVEL_4K, is_last_spte, is_shadow_present_pte
from .tree import TdpTree

__all__ = ["ZapResult", "ZapState", "zap_gfn_range", "zap_gfn_range_steps", "kvm_tdp_mmu_zap_all",
           "kvm_tdp_mmu_free_root", "NeedResched"]

NeedResched = Callable[[IterStep], bool]
"""Does the scheduler want the CPU (or another thread the lock) at this SPTE?"""


@dataclass(frozen=True)
class ZapResult:
    """What a zap did.

    ``zapped``: (level, gfn) of each SPTE the loop cleared itself, in order;
    ``tables_freed``: (level, gfn) of each table freed, children before parents;
    ``leaves_removed``: (level, count) of leaves that stopped being mapped;
    ``teardown_sptes``: entries handled in freed tables (512 per table);
    ``flush``: the caller must still flush the TLBs (the function's return value).
    """

    path: tuple[IterStep, ...]
    zapped: tuple[tuple[int, int], ...]
    tables_freed: tuple[tuple[int, int], ...]
    leaves_removed: tuple[tuple[int, int], ...]
    spte_writes: int
    teardown_sptes: int
    flushes: int
    yields: int
    flush: bool

    def tables_freed_per_level(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for level, _ in self.tables_freed:
            out[level] = out.get(level, 0) + 1
        return dict(sorted(out.items(), reverse=True))


class ZapState:
    """What a zap in progress has done so far (shared by the generator and its callers)."""

    def __init__(self) -> None:
        self.work = Work()
        self.path: list[IterStep] = []
        self.zapped: list[tuple[int, int]] = []
        self.yields = 0
        self.flush = False

    def result(self) -> ZapResult:
        w = self.work
        leaves = tuple(sorted((lv, n) for lv, n in w.leaves_removed.items() if n))
        return ZapResult(tuple(self.path), tuple(self.zapped), tuple(w.tables_freed), leaves,
                         w.spte_writes, w.teardown_sptes, w.flushes, self.yields, self.flush)


def zap_gfn_range_steps(tree: TdpTree, start: int, end: int, *, can_yield: bool = True,
                        need_resched: NeedResched | None = None, era: str | TdpEra = "5.10",
                        state: ZapState | None = None) -> Iterator[IterStep]:
    """``zap_gfn_range`` one loop iteration at a time: yields each SPTE after handling it.

    The tree is already changed when a step is yielded, so a caller can draw it.
    """
    e = tdp_era(era)
    z = ZapState() if state is None else state
    min_level = PG_LEVEL_4K
    zap_all = e.zap_all_from_root and start == 0 and end >= tree.max_gfn
    if e.zap_all_from_root:
        end = min(end, tree.max_gfn)
        min_level = tree.root_level if zap_all else PG_LEVEL_4K
    resched = need_resched or (lambda step: False)
    it = TdpIter(tree, min_level, start)
    while it.valid and it.gfn < end:
        step = it.step()
        if e.restart_on_yield and can_yield and it.goal_gfn != it.yielded_gfn and resched(step):
            z.work.flushes += z.flush  # tdp_mmu_iter_cond_resched flushes a pending flush
            z.flush = False
            z.yields += 1
            it.restart()
            step = IterStep(step.level, step.gfn, step.index, step.table, step.spte, True)
        elif _zappable(it, start, end, zap_all):
            tdp_mmu_set_spte(tree, it, 0, z.work, e)
            z.zapped.append((it.level, it.gfn))
            z.flush = True
            if not e.restart_on_yield and can_yield and resched(step):
                z.work.flushes += 1  # tdp_mmu_iter_flush_cond_resched
                z.flush = False
                z.yields += 1
                it.refresh_walk()
                step = IterStep(step.level, step.gfn, step.index, step.table, step.spte, True)
        z.path.append(step)
        yield step
        it.next()


def _zappable(it: TdpIter, start: int, end: int, zap_all: bool) -> bool:
    if not is_shadow_present_pte(it.old_spte):
        return False
    sticks_out = it.gfn < start or it.gfn + KVM_PAGES_PER_HPAGE(it.level) > end
    return zap_all or not sticks_out or is_last_spte(it.old_spte, it.level)


def zap_gfn_range(tree: TdpTree, start: int, end: int, *, can_yield: bool = True,
                  need_resched: NeedResched | None = None,
                  era: str | TdpEra = "5.10") -> ZapResult:
    """Zap every mapping of ``[start, end)`` in ``tree`` (one root)."""
    z = ZapState()
    for _ in zap_gfn_range_steps(tree, start, end, can_yield=can_yield,
                                 need_resched=need_resched, era=era, state=z):
        pass
    return z.result()


def kvm_tdp_mmu_zap_all(tree: TdpTree, era: str | TdpEra = "5.10",
                        need_resched: NeedResched | None = None) -> ZapResult:
    """Zap ``[0, max_gfn)`` with yielding allowed; the tables go, the root stays."""
    return zap_gfn_range(tree, 0, tree.max_gfn, can_yield=True, need_resched=need_resched,
                         era=era)


def kvm_tdp_mmu_free_root(tree: TdpTree, era: str | TdpEra = "5.10") -> ZapResult:
    """5.10's last-reference teardown: zap everything without yielding, free the root page.

    5.15 does the same in ``kvm_tdp_mmu_put_root`` (then frees the root after an RCU grace
    period), sometimes under the read side of ``mmu_lock``; the model always zaps exclusively.
    """
    root = tree.root
    if root is None:
        raise ValueError("the root is already freed")
    z = ZapState()
    for _ in zap_gfn_range_steps(tree, 0, tree.max_gfn, can_yield=False, era=era, state=z):
        pass
    z.work.tables_freed.append((tree.root_level, 0))
    tree.free_table(root)
    return z.result()
