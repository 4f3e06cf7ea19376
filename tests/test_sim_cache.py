"""prev_roots algorithms: exact rotations per era (kernel-roots.md §5.4 tables)."""

from __future__ import annotations

import pytest

from mmulib.sim.cache import (
    INVALID_ROOT,
    KVM_MMU_ROOT_PREVIOUS,
    KVM_MMU_ROOTS_ALL,
    RootInfo,
    cached_root_available,
    cached_root_find_and_keep_current,
    cached_root_find_without_current,
    rotate_always,
)

C, P0, P1, P2 = (RootInfo(pgd, f"hpa-{name}") for pgd, name in
                 ((0xC000, "C"), (0xA000, "P0"), (0xB000, "P1"), (0xD000, "P2")))
PREV = (P0, P1, P2)


def usable_pgd(pgd):
    return lambda r: r.valid and r.pgd == pgd


def test_masks() -> None:
    assert [KVM_MMU_ROOT_PREVIOUS(i) for i in range(3)] == [2, 4, 8]
    assert KVM_MMU_ROOTS_ALL == 0xF


@pytest.mark.parametrize("fn", [cached_root_find_and_keep_current, cached_root_available])
@pytest.mark.parametrize(("target", "slot", "root", "prev"), [
    (C, "current", C, (P0, P1, P2)),   # C | 0 1 2 unchanged
    (P0, 0, P0, (C, P1, P2)),          # 0 | C 1 2
    (P1, 1, P1, (C, P0, P2)),          # 1 | C 0 2
    (P2, 2, P2, (C, P0, P1)),          # 2 | C 0 1
])
def test_keep_current_rotations(fn, target, slot, root, prev) -> None:
    out = fn(C, PREV, usable_pgd(target.pgd))
    assert (out.hit, out.slot, out.root, out.prev_roots, out.evicted) == (True, slot, root,
                                                                         prev, None)


def test_keep_current_miss_evicts_lru() -> None:
    out = cached_root_find_and_keep_current(C, PREV, usable_pgd(0x9000))
    assert not out.hit and out.prev_roots == (C, P0, P1) and out.evicted == P2
    assert out.root == RootInfo(P2.pgd, None)  # freed by the function in 5.18+
    b = cached_root_available(C, PREV, usable_pgd(0x9000))
    assert b.root == P2 and b.evicted == P2  # 5.10-5.17: the caller frees it


@pytest.mark.parametrize(("target", "slot", "prev"), [
    (P0, 0, (P1, P2, RootInfo(P2.pgd, None))),
    (P1, 1, (P0, P2, RootInfo(P2.pgd, None))),
    (P2, 2, (P0, P1, RootInfo(INVALID_ROOT.pgd, None))),
])
def test_without_current_closes_the_gap(target, slot, prev) -> None:
    out = cached_root_find_without_current(INVALID_ROOT, PREV, usable_pgd(target.pgd))
    assert (out.hit, out.slot, out.root, out.prev_roots) == (True, slot, target, prev)


def test_without_current_miss_changes_nothing() -> None:
    out = cached_root_find_without_current(INVALID_ROOT, PREV, usable_pgd(0x9000))
    assert (out.hit, out.root, out.prev_roots) == (False, INVALID_ROOT, PREV)


def test_4_19_pushes_current_even_when_it_is_the_target() -> None:
    # No "current root" check in 4.19/4.20: C moves to prev_roots[0] with the old CR3.
    out = rotate_always(C, PREV, usable_pgd(C.pgd), current_pgd=0xC000)
    assert not out.hit and out.prev_roots == (RootInfo(0xC000, C.hpa), P0, P1)
    out = rotate_always(C, PREV, usable_pgd(P1.pgd), current_pgd=0xC000)
    assert (out.slot, out.root, out.prev_roots) == (1, P1, (C, P0, P2))
