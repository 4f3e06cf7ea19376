"""kvm_tdp_mmu_map: walks, allocations, huge pages, races and frozen SPTEs (5.10/5.12/5.15)."""

from __future__ import annotations

import pytest

from mmulib.tdp.examples import small_tree
from mmulib.tdp.fault import RET_PF_FIXED, RET_PF_RETRY, RET_PF_SPURIOUS, kvm_tdp_mmu_map
from mmulib.tdp.iter import walk
from mmulib.tdp.mmu import tdp_era
from mmulib.tdp.spte import REMOVED_SPTE, SpteState, make_nonleaf_spte, spte_index
from mmulib.tdp.tree import TdpTree, TreeError

G1 = 0x40000


def lgi(steps):
    return [(s.level, s.gfn, s.index) for s in steps]


def l3_table(tree: TdpTree) -> int:
    return [pfn for pfn, level, _ in tree.tables() if level == 3][0]


def test_first_fault_allocates_a_table_per_level() -> None:
    t = TdpTree()
    r = kvm_tdp_mmu_map(t, 0x1234)
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (2, 0x1200, 9), (1, 0x1234, 0x34)]
    assert [s.state for s in r.path] == [SpteState.NON_PRESENT] * 4  # old_spte as read
    assert r.tables_allocated == ((3, 0), (2, 0), (1, 0x1200))
    assert (r.installed, r.ret, r.ret_name) == (True, RET_PF_RETRY, "RET_PF_RETRY")
    assert t.counts().tables == (1, 1, 1, 1) and t.counts().leaves[1] == 1


def test_second_fault_in_the_same_table_allocates_nothing() -> None:
    t = TdpTree()
    kvm_tdp_mmu_map(t, 0x1234)
    r = kvm_tdp_mmu_map(t, 0x1235)
    assert r.tables_allocated == () and r.installed
    assert [s.state for s in r.path] == [SpteState.NON_LEAF] * 3 + [SpteState.NON_PRESENT]


def test_refault_is_spurious() -> None:
    t = small_tree()
    r = kvm_tdp_mmu_map(t, 1)
    assert (r.ret_name, r.installed, r.tables_allocated) == ("RET_PF_SPURIOUS", False, ())
    assert r.ret == RET_PF_SPURIOUS


def test_huge_leaves_stop_the_walk_at_their_level() -> None:
    t = small_tree()
    # The faults that built the tree, replayed, are spurious and stop at L2 and L3.
    assert lgi(kvm_tdp_mmu_map(t, 0x200, 2).path) == [(4, 0, 0), (3, 0, 0), (2, 0x200, 1)]
    assert lgi(kvm_tdp_mmu_map(t, G1, 3).path) == [(4, 0, 0), (3, G1, 1)]


def test_huge_pfn_is_rounded_to_the_leaf_size() -> None:
    t = TdpTree()
    kvm_tdp_mmu_map(t, 0x3FF, 2, pfn=0x12345)
    leaf = walk(t, 0x200, 0x201, min_level=2)[-1]
    assert leaf.state is SpteState.LEAF_2M and leaf.spte >> 12 == 0x12200


@pytest.mark.parametrize(("era", "ret"), [("5.10", RET_PF_RETRY), ("5.12", RET_PF_RETRY),
                                           ("5.15", RET_PF_FIXED)])
def test_4k_fault_inside_a_2m_leaf_zaps_it_and_links_a_table(era, ret) -> None:
    t = small_tree(era=era)
    r = kvm_tdp_mmu_map(t, 0x201, era=era)
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (2, 0x200, 1), (1, 0x201, 1)]
    assert r.path[2].state is SpteState.LEAF_2M
    assert r.leaves_removed == ((2, 1),)
    assert r.tables_allocated == ((1, 0x200),)
    assert r.flushes == 1
    assert (r.ret, r.installed) == (ret, True)
    assert t.counts().leaves == {1: 4, 2: 0, 3: 1}
    assert t.counts().tables == (2, 1, 1, 1)


def test_2m_fault_over_a_table_frees_the_table_and_its_leaves() -> None:
    t = small_tree()
    r = kvm_tdp_mmu_map(t, 0, 2)
    assert lgi(r.path) == [(4, 0, 0), (3, 0, 0), (2, 0, 0)]
    assert r.tables_freed == ((1, 0),)
    assert r.leaves_removed == ((1, 3),)
    assert t.counts().tables == (0, 1, 1, 1)
    assert t.counts().leaves == {1: 0, 2: 2, 3: 1}


def test_replacing_a_present_leaf_with_another_frame_is_a_kernel_bug() -> None:
    t = small_tree()
    with pytest.raises(TreeError, match="present leaf replaced"):
        kvm_tdp_mmu_map(t, 1, pfn=0x999)


def other_thread_links_first(tree: TdpTree, it) -> None:
    """Another vCPU installs its own table in the slot this fault is about to fill."""
    if it.level == 3 and it.index == 2 and tree.read(*it.sptep) == 0:
        tree.write(*it.sptep, make_nonleaf_spte(tree.alloc_table(2, it.gfn)))


@pytest.mark.parametrize("era", ["5.12", "5.15"])
def test_lost_cmpxchg_frees_the_new_table_and_retries(era) -> None:
    t = small_tree(era=era)
    r = kvm_tdp_mmu_map(t, 2 * G1, era=era, race=other_thread_links_first)
    assert lgi(r.path) == [(4, 0, 0), (3, 2 * G1, 2)]
    assert (r.ret, r.installed) == (RET_PF_RETRY, False)
    assert r.tables_allocated == r.tables_freed == ((2, 2 * G1),)
    again = kvm_tdp_mmu_map(t, 2 * G1, era=era)  # the vCPU faults again: uses the winner's table
    assert again.installed and again.tables_allocated == ((1, 2 * G1),)


def test_5_12_allocates_before_seeing_a_frozen_spte_and_5_15_does_not() -> None:
    results = {}
    for era in ("5.12", "5.15"):
        t = small_tree(era=era)
        t.write(l3_table(t), spte_index(2 * G1, 3), REMOVED_SPTE)
        r = kvm_tdp_mmu_map(t, 2 * G1, era=era)
        results[era] = (r.ret, r.installed, r.tables_allocated, r.tables_freed)
        assert r.path[-1].state is SpteState.REMOVED
    assert results["5.12"] == (RET_PF_RETRY, False, ((2, 2 * G1),), ((2, 2 * G1),))
    assert results["5.15"] == (RET_PF_RETRY, False, (), ())


def test_frozen_leaf_slot_is_left_alone() -> None:
    t = small_tree(era="5.12")
    l1 = [pfn for pfn, level, _ in t.tables() if level == 1][0]
    t.write(l1, 5, REMOVED_SPTE)
    r = kvm_tdp_mmu_map(t, 5, era="5.12")
    assert (r.ret, r.installed) == (RET_PF_RETRY, False)
    assert t.read(l1, 5) == REMOVED_SPTE


def test_unknown_era_is_refused() -> None:
    with pytest.raises(ValueError, match=r"modelled: 5.10, 5.12, 5.15"):
        tdp_era("6.4")


def test_levels_and_gfns_outside_the_tree_are_refused() -> None:
    with pytest.raises(ValueError, match="level must be 1"):
        kvm_tdp_mmu_map(TdpTree(), 0, level=4)
    with pytest.raises(ValueError, match="beyond what a 4-level root maps"):
        kvm_tdp_mmu_map(TdpTree(), 1 << 36)
    assert kvm_tdp_mmu_map(TdpTree(root_level=5), 1 << 36).installed
