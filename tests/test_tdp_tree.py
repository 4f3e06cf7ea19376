"""SPTE encoding, the sparse tree, and closed-form page counts."""

from __future__ import annotations

import pytest

from mmulib.tdp.counts import mapping_counts
from mmulib.tdp.examples import small_tree
from mmulib.tdp.fault import kvm_tdp_mmu_map
from mmulib.tdp.spte import (
    KVM_PAGES_PER_HPAGE,
    REMOVED_SPTE,
    SpteState,
    is_last_spte,
    is_shadow_present_pte,
    make_leaf_spte,
    make_nonleaf_spte,
    round_gfn_for_level,
    spte_index,
    spte_state,
    spte_to_pfn,
)
from mmulib.tdp.tree import TABLE_PFN_BASE, TdpTree, TreeError

TIB_GFNS = 1 << 28  # 4 KiB pages per TiB


def test_pages_per_hpage_and_rounding() -> None:
    assert [KVM_PAGES_PER_HPAGE(lv) for lv in (1, 2, 3, 4, 5)] == [1, 512, 262144, 1 << 27,
                                                                  1 << 36]
    assert round_gfn_for_level(0x40201, 2) == 0x40200
    assert round_gfn_for_level(0x40201, 3) == 0x40000
    assert [spte_index(0x8040201, lv) for lv in (1, 2, 3, 4)] == [1, 1, 1, 1]


def test_spte_states() -> None:
    assert spte_state(0, 1) is SpteState.NON_PRESENT
    assert spte_state(REMOVED_SPTE, 2) is SpteState.REMOVED
    assert not is_shadow_present_pte(REMOVED_SPTE)
    assert spte_state(make_leaf_spte(7, 1), 1) is SpteState.LEAF_4K
    assert spte_state(make_leaf_spte(512, 2), 2) is SpteState.LEAF_2M
    assert spte_state(make_leaf_spte(1 << 18, 3), 3) is SpteState.LEAF_1G
    assert spte_state(make_nonleaf_spte(TABLE_PFN_BASE), 2) is SpteState.NON_LEAF
    # Level 1 entries are leaves without the page-size bit; above, only with it.
    assert is_last_spte(make_leaf_spte(7, 1), 1) and make_leaf_spte(7, 1) & (1 << 7) == 0
    assert spte_to_pfn(make_leaf_spte(0x1234, 1)) == 0x1234


def test_small_tree_has_one_table_per_level_and_every_leaf_size() -> None:
    t = small_tree()
    c = t.counts()
    assert c.tables == (1, 1, 1, 1)
    assert c.leaves == {1: 3, 2: 1, 3: 1}
    assert c.mapped_bytes == 3 * 4096 + (2 << 20) + (1 << 30)
    assert t.nbytes == 4 * 4096
    assert [(lv, gfn) for _, lv, gfn in t.tables()] == [(4, 0), (3, 0), (2, 0), (1, 0)]
    assert str(c) == ("L4 1 tables; L3 1 tables; L2 1 tables; L1 1 tables; "
                      "leaves: 3 x 4K, 1 x 2M, 1 x 1G")


def test_twelve_tib_guest_costs_only_the_tables_on_its_mapped_paths() -> None:
    # GFN 0 and the last GFN of 12 TiB sit under root entries 0 and 23 (512 GiB each):
    # two separate L3/L2/L1 paths plus the root = 7 tables, 28 KiB, whatever the guest size.
    t = TdpTree()
    last = 12 * TIB_GFNS - 1
    assert last >> 27 == 23
    for gfn in (0, last):
        kvm_tdp_mmu_map(t, gfn)
    assert t.counts().tables == (2, 2, 2, 1)
    assert t.nbytes == 7 * 4096
    assert t.counts().mapped_bytes == 2 * 4096


def test_copy_is_independent() -> None:
    t = small_tree()
    c = t.copy()
    kvm_tdp_mmu_map(c, 0x5)
    assert t.counts().leaves[1] == 3 and c.counts().leaves[1] == 4


def test_freeing_a_table_that_still_maps_is_a_bug() -> None:
    t = small_tree()
    l1 = [pfn for pfn, lv, _ in t.tables() if lv == 1][0]
    with pytest.raises(TreeError, match="still holds present SPTEs"):
        t.free_table(l1)


def test_root_level_must_be_4_or_5() -> None:
    with pytest.raises(ValueError, match="4 or 5"):
        TdpTree(root_level=3)


def test_mapping_counts_of_twelve_tib_in_4k_pages() -> None:
    c = mapping_counts([(0, 12 * TIB_GFNS)], leaf_level=1)
    assert c.tables == (12 * TIB_GFNS // 512, 12 * 1024, 24, 1)
    assert c.leaves == {1: 12 * TIB_GFNS, 2: 0, 3: 0}
    assert c.table_bytes == (6291456 + 12288 + 24 + 1) * 4096
    assert c.teardown_sptes == 512 * 6303769


def test_mapping_counts_of_twelve_tib_in_1g_pages() -> None:
    c = mapping_counts([(0, 12 * TIB_GFNS)], leaf_level=3)
    assert c.tables == (0, 0, 24, 1)
    assert c.leaves[3] == 12288
    assert c.mapped_bytes == 12 << 40


def test_mapping_counts_merge_shared_tables() -> None:
    # Two 4 KiB ranges in the same 2 MiB table and one in another 1 GiB region.
    c = mapping_counts([(0, 3), (10, 12), (1 << 18, (1 << 18) + 1)], leaf_level=1)
    assert c.tables == (2, 2, 1, 1)
    assert c.leaves[1] == 6


def test_mapping_counts_reject_misaligned_huge_ranges() -> None:
    with pytest.raises(ValueError, match="not aligned to 2M"):
        mapping_counts([(1, 513)], leaf_level=2)


@pytest.mark.parametrize(("ranges", "level", "root_level"), [
    ([(0, 1024)], 1, 4),
    ([(500, 1100), (3000, 3001)], 1, 4),
    ([(0, 512 * 6), (1 << 18, (1 << 18) + 512)], 2, 4),
    ([(0, 1 << 18), (5 << 27, (5 << 27) + (1 << 18))], 3, 4),
    ([(7, 9), (1 << 36, (1 << 36) + 2)], 1, 5),
])
def test_mapping_counts_equal_the_tree_the_fault_path_builds(ranges, level, root_level) -> None:
    t = TdpTree(root_level=root_level, phys_bits=52)
    step = KVM_PAGES_PER_HPAGE(level)
    for start, end in ranges:
        for gfn in range(start, end, step):
            kvm_tdp_mmu_map(t, gfn, level)
    assert t.counts() == mapping_counts(ranges, level, root_level)
