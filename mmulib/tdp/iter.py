"""``tdp_iter``: the TDP MMU's pre-order walk, step by step as the kernel takes it.

The iterator stands on one SPTE at a time.  To move on (``tdp_iter_next``) it
first tries to **step down** into the table a present non-leaf SPTE points to,
unless it is already at ``min_level``; the new position is the entry on the way
to the *goal GFN*.  Otherwise it **steps side** to the next entry of the same
table, which also moves the goal there; at the table's last entry (index 511)
it **steps up** to the parent entry, which was visited already, and tries to
step side again.  Stepping up from the root ends the walk.  A loop over
``[start, end)`` (``for_each_tdp_pte``) starts at the root entry that holds
``start`` and stops as soon as the iterator is invalid or its GFN reaches
``end``; so it also visits the upper-level entries that merely contain
``start``, and non-present entries along the way.

Yielding ``mmu_lock`` in the middle of a walk lets the tables change under the
iterator, so the walk starts again from the root: 5.10's ``tdp_iter_refresh_walk``
restarts at the larger of the goal and the current GFN; 5.12's
``tdp_iter_restart`` restarts at ``next_last_level_gfn`` (the goal, renamed) and
remembers it as ``yielded_gfn``, so that the caller yields again only after
making progress.

Sources: ``arch/x86/kvm/mmu/tdp_iter.c`` / ``tdp_iter.h`` (``struct tdp_iter``,
``tdp_iter_start``, ``try_step_down``, ``try_step_side``, ``try_step_up``,
``tdp_iter_next``, ``tdp_iter_refresh_walk``, ``for_each_tdp_pte_min_level``)
of 5.10, and ``tdp_iter_restart`` of 5.12.  6.19 has the same walk (with
``gfn_bits`` for TDX and the restart folded into ``tdp_iter_next``).

>>> from mmulib.tdp.tree import TdpTree
>>> [(s.level, s.gfn, s.index) for s in walk(TdpTree(), 0, 8)]
[(4, 0, 0)]

In an empty tree the root's entry 0 is not present, so the iterator steps side
to entry 1, whose GFN (1 << 27, the next 512 GiB) is past ``end``: one step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .spte import (
    KVM_PAGES_PER_HPAGE,
    PG_LEVEL_4K,
    PT64_ENT_PER_PAGE,
    SpteState,
    is_last_spte,
    is_shadow_present_pte,
    round_gfn_for_level,
    spte_index,
    spte_state,
    spte_to_pfn,
)
from .tree import TdpTree

__all__ = ["IterStep", "TdpIter", "for_each_tdp_pte", "walk", "spte_to_child_pt"]


@dataclass(frozen=True)
class IterStep:
    """One SPTE the loop body saw: where it is and what it held (``old_spte``)."""

    level: int
    gfn: int
    index: int
    table: int
    spte: int
    yielded: bool = False

    @property
    def state(self) -> SpteState:
        return spte_state(self.spte, self.level)

    def __str__(self) -> str:
        mark = " (yield)" if self.yielded else ""
        return f"L{self.level}[{self.index}] gfn {self.gfn:#x}: {self.state.value}{mark}"


def spte_to_child_pt(tree: TdpTree, spte: int, level: int) -> int | None:
    """The table a present non-leaf SPTE points to, else None (``tdp_iter.c``, 5.10)."""
    if not is_shadow_present_pte(spte) or is_last_spte(spte, level):
        return None
    return spte_to_pfn(spte)


class TdpIter:
    """``struct tdp_iter``: position, goal and the path of tables walked to get here.

    ``goal_gfn`` is 5.10's name; 5.12 renamed it ``next_last_level_gfn``.
    """

    def __init__(self, tree: TdpTree, min_level: int, goal_gfn: int,
                 root: int | None = None) -> None:
        root = tree.root if root is None else root
        if root is None:
            raise ValueError("the tree's root has been freed")
        self.tree = tree
        self.root_level = tree.level_of(root)
        self.pt_path: list[int | None] = [None] * self.root_level
        self.pt_path[self.root_level - 1] = root
        self.min_level = min_level
        self.start(goal_gfn)

    # -- tdp_iter_start / refresh ------------------------------------------------------------

    def _refresh_sptep(self) -> None:
        self.index = spte_index(self.gfn, self.level)
        self.old_spte = self.tree.read(self.table, self.index)

    def start(self, goal_gfn: int) -> None:
        """``tdp_iter_start``: stand on the root entry on the way to ``goal_gfn``."""
        self.goal_gfn = goal_gfn
        self.yielded_gfn = goal_gfn  # 5.12: tdp_iter_start -> tdp_iter_restart sets it
        self.level = self.root_level
        self.gfn = round_gfn_for_level(goal_gfn, self.level)
        self._refresh_sptep()
        self.valid = True

    def refresh_walk(self) -> None:
        """5.10 ``tdp_iter_refresh_walk``: from the root again, at max(goal, gfn)."""
        self.start(max(self.goal_gfn, self.gfn))

    def restart(self) -> None:
        """5.12 ``tdp_iter_restart``: from the root again at the goal; remember it."""
        self.yielded_gfn = self.goal_gfn
        self.level = self.root_level
        self.gfn = round_gfn_for_level(self.goal_gfn, self.level)
        self._refresh_sptep()
        self.valid = True

    @property
    def next_last_level_gfn(self) -> int:
        return self.goal_gfn

    @property
    def table(self) -> int:
        table = self.pt_path[self.level - 1]
        assert table is not None
        return table

    @property
    def sptep(self) -> tuple[int, int]:
        """Where the current SPTE lives: (table frame, index)."""
        return self.table, self.index

    def step(self, yielded: bool = False) -> IterStep:
        return IterStep(self.level, self.gfn, self.index, self.table, self.old_spte, yielded)

    # -- moves ------------------------------------------------------------------------------

    def try_step_down(self) -> bool:
        if self.level == self.min_level:
            return False
        # Read the SPTE again: a table unlinked meanwhile must not be entered.
        self.old_spte = self.tree.read(self.table, self.index)
        child = spte_to_child_pt(self.tree, self.old_spte, self.level)
        if child is None:
            return False
        self.level -= 1
        self.pt_path[self.level - 1] = child
        self.gfn = round_gfn_for_level(self.goal_gfn, self.level)
        self._refresh_sptep()
        return True

    def try_step_side(self) -> bool:
        if self.index == PT64_ENT_PER_PAGE - 1:
            return False
        self.gfn += KVM_PAGES_PER_HPAGE(self.level)
        self.goal_gfn = self.gfn
        self.index += 1
        self.old_spte = self.tree.read(self.table, self.index)
        return True

    def try_step_up(self) -> bool:
        if self.level == self.root_level:
            return False
        self.level += 1
        self.gfn = round_gfn_for_level(self.gfn, self.level)
        self._refresh_sptep()
        return True

    def next(self) -> None:
        """``tdp_iter_next``: down if possible, else side, stepping up at a table's end."""
        if self.try_step_down():
            return
        while True:
            if self.try_step_side():
                return
            if not self.try_step_up():
                break
        self.valid = False


def for_each_tdp_pte(tree: TdpTree, start: int, end: int, min_level: int = PG_LEVEL_4K,
                     root: int | None = None) -> Iterator[TdpIter]:
    """``for_each_tdp_pte_min_level``: the live iterator at every SPTE the loop body sees.

    The body may change the tree and the iterator (e.g. re-read ``old_spte``,
    or restart it after a yield); the loop then moves on from wherever the
    iterator stands, as the C ``for`` loop does.
    """
    it = TdpIter(tree, min_level, start, root)
    while it.valid and it.gfn < end:
        yield it
        it.next()


def walk(tree: TdpTree, start: int, end: int, min_level: int = PG_LEVEL_4K) -> list[IterStep]:
    """Every SPTE a read-only loop over ``[start, end)`` visits, in order."""
    return [it.step() for it in for_each_tdp_pte(tree, start, end, min_level)]
