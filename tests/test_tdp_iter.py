"""tdp_iter: exact pre-order paths on the small tree (tdp_iter.c, 5.10).

The small tree (mmulib.tdp.examples): root L4[0] -> L3 table; L3[0] -> L2 table,
L3[1] = 1G leaf (GFN 0x40000); L2[0] -> L1 table, L2[1] = 2M leaf (GFN 0x200);
L1[0..2] = 4K leaves (GFNs 0-2).  Expected paths are derived by hand from
try_step_down / try_step_side / try_step_up.
"""

from __future__ import annotations

from mmulib.tdp.examples import small_tree
from mmulib.tdp.fault import kvm_tdp_mmu_map
from mmulib.tdp.iter import TdpIter, for_each_tdp_pte, walk
from mmulib.tdp.spte import SpteState
from mmulib.tdp.tree import TdpTree

G1 = 0x40000  # first GFN of the second GiB
L2_STEP = 512


def lgi(steps):
    return [(s.level, s.gfn, s.index) for s in steps]


def test_walk_first_four_gfns() -> None:
    assert lgi(walk(small_tree(), 0, 4)) == [
        (4, 0, 0), (3, 0, 0), (2, 0, 0),
        (1, 0, 0), (1, 1, 1), (1, 2, 2), (1, 3, 3),  # (1, 4) fails gfn < end
    ]


def test_walk_two_gib_visits_every_l1_and_l2_entry_then_the_1g_leaf() -> None:
    path = walk(small_tree(), 0, 2 * G1)
    # 3 descents, 512 L1 entries, step up and side along L2 (entries 1..511),
    # step up and side to L3[1] (the 1G leaf), then L3[2] has GFN 2 * G1 = end.
    assert len(path) == 3 + 512 + 511 + 1
    assert lgi(path[:5]) == [(4, 0, 0), (3, 0, 0), (2, 0, 0), (1, 0, 0), (1, 1, 1)]
    assert lgi(path[514:517]) == [(1, 511, 511), (2, L2_STEP, 1), (2, 2 * L2_STEP, 2)]
    assert lgi(path[-2:]) == [(2, 511 * L2_STEP, 511), (3, G1, 1)]
    states = [s.state for s in path]
    assert states.count(SpteState.NON_LEAF) == 3
    assert states.count(SpteState.LEAF_4K) == 3
    assert states.count(SpteState.LEAF_2M) == 1
    assert states.count(SpteState.LEAF_1G) == 1
    assert states.count(SpteState.NON_PRESENT) == len(path) - 8


def test_min_level_2_does_not_enter_the_l1_table() -> None:
    path = walk(small_tree(), 0, 2 * G1, min_level=2)
    assert len(path) == 2 + 512 + 1
    assert lgi(path[:4]) == [(4, 0, 0), (3, 0, 0), (2, 0, 0), (2, L2_STEP, 1)]
    assert path[2].state is SpteState.NON_LEAF and path[-1].state is SpteState.LEAF_1G


def test_min_level_3_sees_only_the_upper_entries() -> None:
    assert lgi(walk(small_tree(), 0, 2 * G1, min_level=3)) == [(4, 0, 0), (3, 0, 0), (3, G1, 1)]


def test_start_in_the_middle_descends_towards_the_goal() -> None:
    path = walk(small_tree(), 3, 0x201)
    assert lgi(path[:4]) == [(4, 0, 0), (3, 0, 0), (2, 0, 0), (1, 3, 3)]
    assert lgi(path[-2:]) == [(1, 511, 511), (2, L2_STEP, 1)]
    assert len(path) == 3 + 509 + 1


def test_goal_inside_a_huge_leaf_stops_at_the_leaf() -> None:
    # The root entry and the 1G leaf that contains the goal, then L3[2] is past the end.
    assert lgi(walk(small_tree(), G1 + 1, G1 + 2)) == [(4, 0, 0), (3, G1, 1)]


def test_walk_ends_when_the_root_has_no_next_entry() -> None:
    t = TdpTree()
    kvm_tdp_mmu_map(t, (511 << 27) + 5)
    path = walk(t, 511 << 27, 1 << 40)  # end beyond the 4-level tree
    assert lgi(path[:4]) == [(4, 511 << 27, 511), (3, 511 << 27, 0), (2, 511 << 27, 0),
                             (1, 511 << 27, 0)]
    assert len(path) == 3 + 512 + 511 + 511
    assert lgi(path[-1:]) == [(3, (511 << 27) + 511 * G1, 511)]


def test_five_level_root_adds_one_step() -> None:
    t = TdpTree(root_level=5, phys_bits=52)
    kvm_tdp_mmu_map(t, 0)
    assert lgi(walk(t, 0, 1)) == [(5, 0, 0), (4, 0, 0), (3, 0, 0), (2, 0, 0), (1, 0, 0)]


def test_step_side_moves_the_goal_and_step_down_follows_it() -> None:
    it = TdpIter(small_tree(), 1, 0x1FF)
    it.next()
    it.next()
    it.next()
    assert (it.level, it.gfn, it.goal_gfn) == (1, 0x1FF, 0x1FF)
    it.next()  # index 511: up to L2[0], side to L2[1]; the goal moves with it
    assert (it.level, it.gfn, it.index, it.goal_gfn) == (2, 0x200, 1, 0x200)


def test_refresh_walk_restarts_at_the_larger_of_goal_and_gfn() -> None:
    it = TdpIter(small_tree(), 1, 0)
    for _ in range(5):
        it.next()
    assert (it.level, it.gfn, it.goal_gfn) == (1, 2, 2)
    it.refresh_walk()
    assert (it.level, it.gfn, it.index) == (4, 0, 0)
    it.next()
    it.next()
    it.next()
    assert (it.level, it.gfn) == (1, 2)


def test_restart_records_yielded_gfn() -> None:
    it = TdpIter(small_tree(), 1, 0)
    assert it.yielded_gfn == 0
    for _ in range(4):
        it.next()
    it.restart()
    assert (it.level, it.gfn, it.yielded_gfn, it.next_last_level_gfn) == (4, 0, 1, 1)


def test_for_each_reads_the_sptes_the_body_changed() -> None:
    # A body that zeroes L2[0] makes the next step skip the L1 table (try_step_down re-reads).
    t = small_tree()
    seen = []
    for it in for_each_tdp_pte(t, 0, 0x400):
        seen.append((it.level, it.gfn))
        if (it.level, it.gfn) == (2, 0):
            t.write(*it.sptep, 0)
    assert seen == [(4, 0), (3, 0), (2, 0), (2, 0x200)]
