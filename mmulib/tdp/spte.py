"""SPTEs of the TDP MMU: levels, indices, the model's 64-bit encoding and its states.

A TDP page table is one 4 KiB page of 512 eight-byte entries (SPTEs).  An SPTE
at level L is either not present, a *leaf* that maps ``KVM_PAGES_PER_HPAGE(L)``
guest pages (4 KiB at level 1, 2 MiB at level 2, 1 GiB at level 3), or a
*non-leaf* that points to a table of level L - 1.  From 5.12 a thread that works
under the read side of ``mmu_lock`` can also park a *frozen* value in an SPTE
(``REMOVED_SPTE``) so that other threads leave it alone.

The encoding is the model's, not any CPU's: it keeps only what the TDP MMU's
decisions read.  Bit 11 is "present" (``SPTE_MMU_PRESENT_MASK`` of 5.15+; 5.10
called an SPTE present when it was non-zero and not an MMIO SPTE), bit 7 is the
page-size bit of a huge leaf (``PT_PAGE_SIZE_MASK``), bits 12-51 hold the page
frame: of guest memory for a leaf, of the child table for a non-leaf.
``REMOVED_SPTE`` is 0x5a0, its value in 5.15-6.10 (5.12 used bit 59; 6.11 renamed
it ``FROZEN_SPTE``); only equality with it matters.

Sources: ``arch/x86/kvm/mmu/spte.h`` (``is_shadow_present_pte``, ``is_large_pte``,
``is_last_spte``, ``spte_to_pfn``, ``REMOVED_SPTE``) and ``mmu/tdp_iter.c``
(``round_gfn_for_level``) of 5.10, 5.12 and 5.15; ``SHADOW_PT_INDEX`` in
``mmu/mmu.c`` (5.10, ``SPTE_INDEX`` in ``spte.h`` from 6.x).

>>> spte_state(make_leaf_spte(0x200, PG_LEVEL_2M), PG_LEVEL_2M).name
'LEAF_2M'
>>> spte_index(0x40201, PG_LEVEL_1G), spte_index(0x40201, PG_LEVEL_2M)
(1, 1)
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "PAGE_SHIFT",
    "PG_LEVEL_4K",
    "PG_LEVEL_2M",
    "PG_LEVEL_1G",
    "PT64_ROOT_4LEVEL",
    "PT64_ROOT_5LEVEL",
    "PT64_ENT_PER_PAGE",
    "SPTE_MMU_PRESENT_MASK",
    "PT_PAGE_SIZE_MASK",
    "PFN_MASK",
    "REMOVED_SPTE",
    "SpteState",
    "KVM_PAGES_PER_HPAGE",
    "round_gfn_for_level",
    "spte_index",
    "make_leaf_spte",
    "make_nonleaf_spte",
    "is_shadow_present_pte",
    "is_large_pte",
    "is_last_spte",
    "is_removed_spte",
    "spte_to_pfn",
    "spte_state",
    "LEVEL_NAMES",
]

PAGE_SHIFT = 12
# enum pg_level in arch/x86/include/asm/pgtable_types.h
PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G = 1, 2, 3
PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL = 4, 5
PT64_ENT_PER_PAGE = 512  # 5.10 name; SPTE_ENT_PER_PAGE in 6.x

SPTE_MMU_PRESENT_MASK = 1 << 11
PT_PAGE_SIZE_MASK = 1 << 7
PFN_MASK = ((1 << 52) - 1) & ~((1 << PAGE_SHIFT) - 1)  # bits 12-51
REMOVED_SPTE = 0x5A0

LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G", 5: "256T"}
"""What one SPTE at each level spans (the size of a leaf there, or of a table's reach)."""


class SpteState(Enum):
    """What an SPTE is, as the TDP MMU's code paths tell it apart."""

    NON_PRESENT = "non-present"
    LEAF_4K = "leaf 4K"
    LEAF_2M = "leaf 2M"
    LEAF_1G = "leaf 1G"
    NON_LEAF = "non-leaf"
    REMOVED = "frozen (REMOVED_SPTE)"


def KVM_PAGES_PER_HPAGE(level: int) -> int:  # noqa: N802 (kernel macro name)
    """Guest 4 KiB pages mapped by one SPTE at ``level`` (1, 512, 262144, ...)."""
    return 1 << ((level - 1) * 9)


def round_gfn_for_level(gfn: int, level: int) -> int:
    """The lowest GFN of the ``level`` SPTE that maps ``gfn`` (``tdp_iter.c``, 5.10)."""
    return gfn & -KVM_PAGES_PER_HPAGE(level)


def spte_index(gfn: int, level: int) -> int:
    """Index of the SPTE for ``gfn`` in its level-``level`` table.

    ``SHADOW_PT_INDEX(gfn << PAGE_SHIFT, level)``: 9 bits of the address per level.
    """
    return (gfn >> ((level - 1) * 9)) & (PT64_ENT_PER_PAGE - 1)


def make_leaf_spte(pfn: int, level: int) -> int:
    """A present leaf mapping host frame ``pfn``; huge (bit 7) above level 1."""
    spte = SPTE_MMU_PRESENT_MASK | ((pfn << PAGE_SHIFT) & PFN_MASK)
    return spte | PT_PAGE_SIZE_MASK if level > PG_LEVEL_4K else spte


def make_nonleaf_spte(child_pfn: int) -> int:
    """A present non-leaf SPTE pointing to the table in frame ``child_pfn``."""
    return SPTE_MMU_PRESENT_MASK | ((child_pfn << PAGE_SHIFT) & PFN_MASK)


def is_shadow_present_pte(spte: int) -> bool:
    return bool(spte & SPTE_MMU_PRESENT_MASK)


def is_large_pte(spte: int) -> bool:
    return bool(spte & PT_PAGE_SIZE_MASK)


def is_last_spte(spte: int, level: int) -> bool:
    """A leaf: every level-1 SPTE, and a huge SPTE above level 1."""
    return level == PG_LEVEL_4K or is_large_pte(spte)


def is_removed_spte(spte: int) -> bool:
    return spte == REMOVED_SPTE


def spte_to_pfn(spte: int) -> int:
    return (spte & PFN_MASK) >> PAGE_SHIFT


def spte_state(spte: int, level: int) -> SpteState:
    """Classify ``spte`` found at ``level``."""
    if is_removed_spte(spte):
        return SpteState.REMOVED
    if not is_shadow_present_pte(spte):
        return SpteState.NON_PRESENT
    if not is_last_spte(spte, level):
        return SpteState.NON_LEAF
    return (SpteState.LEAF_4K, SpteState.LEAF_2M, SpteState.LEAF_1G)[level - 1]
