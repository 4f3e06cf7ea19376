"""The ``prev_roots`` cache, algorithm by algorithm, as pure functions.

A cache is ``(root, prev_roots)``: the current root and the three previous
roots (``KVM_MMU_NUM_PREV_ROOTS``), each a :class:`RootInfo` ``(pgd, hpa)``.
``prev_roots[0]`` is the most recently used entry, ``prev_roots[2]`` the least.
Every function keeps the kernel's swap order, so the states it passes through
are the ones in the comment tables of ``arch/x86/kvm/mmu/mmu.c``::

    C | 0 1 2  ->  0 | C 1 2  ->  1 | C 0 2  ->  2 | C 0 1   (no hit: 2 is evicted)

Eras (kernel-roots.md notation A/B/C):

* 4.18: no cache at all (``kvm_mmu_new_cr3`` frees the current root).
* A, 4.19-4.20 ``cached_root_available``: always rotate; the current root is
  pushed even when it is invalid; the CR3 must match even for direct roots.
* B, 5.10-5.17 ``cached_root_available``: first "is the current root usable?"
  (no movement), then rotate as in A; direct roots ignore the PGD.
* C, 5.18+ ``cached_root_find_and_keep_current`` / ``..._without_current``.

In A and B the caller frees whatever ends up in ``root`` after a miss (the
evicted LRU entry); in C ``cached_root_find_and_keep_current`` frees it itself.
These functions only move entries; freeing is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KVM_MMU_NUM_PREV_ROOTS",
    "KVM_MMU_ROOT_CURRENT",
    "KVM_MMU_ROOT_PREVIOUS",
    "KVM_MMU_ROOTS_ALL",
    "RootInfo",
    "INVALID_ROOT",
    "Lookup",
    "rotate_always",
    "cached_root_available",
    "cached_root_find_and_keep_current",
    "cached_root_find_without_current",
]

KVM_MMU_NUM_PREV_ROOTS = 3
KVM_MMU_ROOT_CURRENT = 1 << 0
KVM_MMU_ROOTS_ALL = (1 << (1 + KVM_MMU_NUM_PREV_ROOTS)) - 1


def KVM_MMU_ROOT_PREVIOUS(i: int) -> int:  # noqa: N802 - the kernel's macro name
    """Bit of ``prev_roots[i]`` in a ``roots_to_free`` mask (``BIT(1 + i)``)."""
    return 1 << (1 + i)


@dataclass(frozen=True)
class RootInfo:
    """``struct kvm_mmu_root_info``: the guest PGD a root shadows and the root itself.

    ``hpa`` is ``None`` for ``INVALID_PAGE``; otherwise a hashable key of the
    page (see :mod:`mmulib.sim.machine`).
    """

    pgd: int
    hpa: Any = None

    @property
    def valid(self) -> bool:
        return self.hpa is not None


INVALID_ROOT = RootInfo(0, None)

Usable = Callable[[RootInfo], bool]
Cache = tuple[RootInfo, tuple[RootInfo, RootInfo, RootInfo]]


@dataclass(frozen=True)
class Lookup:
    """The outcome of one cache lookup.

    ``slot`` is ``"current"`` for a hit on the current root, ``0``-``2`` for a
    hit in ``prev_roots[slot]`` (as numbered *before* the lookup), ``None`` on
    a miss.  ``evicted`` is the root that fell out of the cache (to be freed),
    if any.
    """

    hit: bool
    slot: int | str | None
    root: RootInfo
    prev_roots: tuple[RootInfo, RootInfo, RootInfo]
    evicted: RootInfo | None


def rotate_always(root: RootInfo, prev: tuple[RootInfo, ...], usable: Usable,
                  current_pgd: int) -> Lookup:
    """4.19/4.20 ``cached_root_available``: push the current root, look in prev_roots.

    The pushed entry records ``current_pgd`` (4.19/4.20 read the CR3 *before*
    the write, ``get_cr3``), whatever the current root's own PGD was.
    """
    return _rotate(RootInfo(current_pgd, root.hpa), prev, usable)


def _rotate(cur: RootInfo, prev: tuple[RootInfo, ...], usable: Usable) -> Lookup:
    """Swap ``cur`` through the slots, MRU first, until a usable root comes out.

    ``C | 0 1 2 -> 0 | C 1 2 -> 1 | C 0 2 -> 2 | C 0 1``; on a miss the LRU entry is left in
    ``root`` (and reported as ``evicted``) for the caller to free.
    """
    slots = list(prev)
    for i in range(KVM_MMU_NUM_PREV_ROOTS):
        cur, slots[i] = slots[i], cur
        if usable(cur):
            return Lookup(True, i, cur, tuple(slots), None)  # type: ignore[arg-type]
    return Lookup(False, None, cur, tuple(slots), cur)  # type: ignore[arg-type]


def cached_root_available(root: RootInfo, prev: tuple[RootInfo, ...], usable: Usable) -> Lookup:
    """5.10-5.17: a usable current root is a hit in place; otherwise rotate as in 4.19."""
    if usable(root):
        return Lookup(True, "current", root, tuple(prev), None)  # type: ignore[arg-type]
    return _rotate(root, prev, usable)


def cached_root_find_and_keep_current(root: RootInfo, prev: tuple[RootInfo, ...],
                                      usable: Usable) -> Lookup:
    """5.18+: as 5.10's, but on a miss the evicted LRU root is freed by this function.

    Returned ``root`` on a miss is ``INVALID_ROOT`` (the caller sees it freed).
    """
    out = cached_root_available(root, prev, usable)
    if out.hit:
        return out
    # The evicted LRU root is freed here, so mmu->root ends up invalid.
    return Lookup(False, None, RootInfo(out.root.pgd, None), out.prev_roots, out.evicted)


def cached_root_find_without_current(root: RootInfo, prev: tuple[RootInfo, ...],
                                     usable: Usable) -> Lookup:
    """5.18+, current root invalid: take the first usable previous root, close the gap.

    ``- | 0 1 2`` -> hit at 1 -> ``1 | 0 2 INV``; only the hpa of the last
    slot is invalidated (its pgd stays).  A miss changes nothing.
    """
    for i in range(KVM_MMU_NUM_PREV_ROOTS):
        if usable(prev[i]):
            slots = list(prev)
            new_root = slots[i]
            slots[i] = root
            for j in range(i, KVM_MMU_NUM_PREV_ROOTS - 1):
                slots[j] = slots[j + 1]
            last = slots[KVM_MMU_NUM_PREV_ROOTS - 1]
            slots[KVM_MMU_NUM_PREV_ROOTS - 1] = RootInfo(last.pgd, None)
            return Lookup(True, i, new_root, tuple(slots), None)  # type: ignore[arg-type]
    return Lookup(False, None, root, tuple(prev), None)  # type: ignore[arg-type]
