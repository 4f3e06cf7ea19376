"""zap_gfn_range and root freeing: exact paths, yields and page counts (tdp_mmu.c 5.10/5.12)."""

from __future__ import annotations

import pytest

from mmulib.tdp.counts import mapping_counts
from mmulib.tdp.examples import small_tree
from mmulib.tdp.fault import kvm_tdp_mmu_map
from mmulib.tdp.spte import SpteState
from mmulib.tdp.tree import TdpTree
from mmulib.tdp.zap import (
    kvm_tdp_mmu_free_root,
    kvm_tdp_mmu_zap_all,
    zap_gfn_range,
    zap_gfn_range_steps,
)

G1 = 0x40000


def lgi(steps):
    return [(s.level, s.gfn, s.index) for s in steps]


def test_zap_two_gib_clears_the_first_gib_subtree_and_the_1g_leaf() -> None:
    t = small_tree()
    r = zap_gfn_range(t, 0, 2 * G1)
    # L4[0] sticks out of the range (512 GiB): step down.  L3[0] covers [0, 1 GiB): zap,
    # freeing its L2 table and the L1 table below (children first).  L3[1] is the 1G leaf.
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (3, G1, 1)]
    assert r.zapped == ((3, 0), (3, G1))
    assert r.tables_freed == ((1, 0), (2, 0))
    assert r.leaves_removed == ((1, 3), (2, 1), (3, 1))
    assert (r.spte_writes, r.teardown_sptes, r.flushes, r.flush) == (2 + 1024, 1024, 2, True)
    assert t.counts().tables == (0, 0, 1, 1)
    assert t.counts().leaves == {1: 0, 2: 0, 3: 0}


def test_5_12_writes_only_the_present_children_of_removed_tables() -> None:
    t = small_tree(era="5.12")
    r = zap_gfn_range(t, 0, 2 * G1, era="5.12")
    # 2 zaps + L2 table (2 present: the L1 link and the 2M leaf) + L1 table (3 leaves).
    assert (r.spte_writes, r.teardown_sptes) == (2 + 2 + 3, 1024)
    assert r.tables_freed == ((1, 0), (2, 0))


def test_zap_one_4k_page_steps_down_to_it() -> None:
    t = small_tree()
    r = zap_gfn_range(t, 1, 2)
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (2, 0, 0), (1, 1, 1)]
    assert (r.zapped, r.tables_freed, r.leaves_removed) == (((1, 1),), (), ((1, 1),))
    assert t.counts().leaves[1] == 2


def test_zap_exactly_one_l1_table_range_zaps_the_l2_entry() -> None:
    t = small_tree()
    r = zap_gfn_range(t, 0, 0x200)
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (2, 0, 0)]
    assert (r.zapped, r.tables_freed) == (((2, 0),), ((1, 0),))


def test_zap_part_of_a_2m_leaf_takes_the_whole_leaf() -> None:
    t = small_tree()
    r = zap_gfn_range(t, 0x300, 0x301)  # a leaf is zapped even if it sticks out
    assert r.zapped == ((2, 0x200),) and r.leaves_removed == ((2, 1),)


def only_at(level: int, gfn: int):
    return lambda step: (step.level, step.gfn) == (level, gfn)


def test_5_10_yields_after_zapping_and_refreshes_from_the_root() -> None:
    t = small_tree()
    r = zap_gfn_range(t, 0, 4, need_resched=only_at(1, 1))
    assert [(s.level, s.gfn, s.yielded) for s in r.path] == [
        (4, 0, False), (3, 0, False), (2, 0, False), (1, 0, False),
        (1, 1, True),                                   # zapped, flushed, yielded
        (3, 0, False), (2, 0, False), (1, 1, False),    # back down from the root to goal 1
        (1, 2, False), (1, 3, False),
    ]
    assert r.path[7].state is SpteState.NON_PRESENT
    assert r.zapped == ((1, 0), (1, 1), (1, 2))
    assert (r.yields, r.flushes, r.flush) == (1, 1, True)


def test_5_12_yields_before_zapping_and_only_after_progress() -> None:
    t = small_tree(era="5.12")
    r = zap_gfn_range(t, 0, 4, need_resched=only_at(1, 1), era="5.12")
    assert [(s.level, s.gfn, s.yielded) for s in r.path] == [
        (4, 0, False), (3, 0, False), (2, 0, False), (1, 0, False),
        (1, 1, True),                                   # yielded before looking at it
        (3, 0, False), (2, 0, False), (1, 1, False),    # goal == yielded_gfn: no second yield
        (1, 2, False), (1, 3, False),
    ]
    assert r.path[7].state is SpteState.LEAF_4K
    assert r.zapped == ((1, 0), (1, 1), (1, 2))
    assert (r.yields, r.flushes, r.flush) == (1, 1, True)


def test_5_10_always_resched_still_finishes() -> None:
    r = zap_gfn_range(small_tree(), 0, 4, need_resched=lambda step: True)
    assert r.zapped == ((1, 0), (1, 1), (1, 2)) and r.yields == 3


def test_5_12_always_resched_yields_once_per_new_goal() -> None:
    t = small_tree(era="5.12")
    r = kvm_tdp_mmu_zap_all(t, era="5.12", need_resched=lambda step: True)
    # L4[0] is zapped without yielding (goal 0 == yielded_gfn); each later root entry moves
    # the goal, so the loop yields there, restarts on it and steps side: 127 yields.
    assert r.zapped == ((4, 0),)
    assert len(r.path) == 128 and r.yields == 127
    assert all(s.yielded for s in r.path[1:])


def test_cannot_yield_means_no_yield() -> None:
    r = zap_gfn_range(small_tree(), 0, 4, can_yield=False, need_resched=lambda step: True)
    assert r.yields == 0 and r.flushes == 0 and r.flush


@pytest.mark.parametrize("era", ["5.10", "5.15"])
def test_free_root_tears_down_everything_without_yielding(era) -> None:
    t = small_tree(era=era)
    r = kvm_tdp_mmu_free_root(t, era=era)
    # phys_bits 46: max_gfn = 2**34, i.e. root entries 0..127 (512 GiB each).
    assert len(r.path) == 128 and lgi(r.path[-1:]) == [(4, 127 << 27, 127)]
    assert r.zapped == ((4, 0),)
    assert r.tables_freed == ((1, 0), (2, 0), (3, 0), (4, 0))
    assert r.leaves_removed == ((1, 3), (2, 1), (3, 1))
    assert r.teardown_sptes == 3 * 512 and r.flushes == 3
    assert t.root is None and t.nbytes == 0


def test_zap_all_keeps_the_root() -> None:
    t = small_tree()
    r = kvm_tdp_mmu_zap_all(t)
    assert r.tables_freed_per_level() == {3: 1, 2: 1, 1: 1}
    assert t.counts().tables == (0, 0, 0, 1)


def test_steps_generator_exposes_the_tree_between_iterations() -> None:
    t = small_tree()
    leaves = [t.counts().leaves[1] for _ in zap_gfn_range_steps(t, 0, 3)]
    assert leaves == [3, 3, 3, 2, 1, 0]


def test_teardown_count_of_sixteen_mib_matches_the_closed_form() -> None:
    t = TdpTree()
    for gfn in range(0, 4096):
        kvm_tdp_mmu_map(t, gfn)
    r = kvm_tdp_mmu_free_root(t)
    c = mapping_counts([(0, 4096)], 1)
    assert r.teardown_sptes == 512 * (c.table_count - 1)  # the root's entries are walked
    assert dict(r.leaves_removed) == {1: 4096}
    assert r.tables_freed_per_level() == {4: 1, 3: 1, 2: 1, 1: 8}
