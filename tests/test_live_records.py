"""Root pages versus fault-created pages in a kvm_mmu_get_page trace (no KVM needed)."""

from __future__ import annotations

from mmulib.live.records import TRACE_EVENTS, split_records, to_record
from mmulib.live.tracing import TraceEvent


def page(gfn: int, role: int, created: bool = True) -> TraceEvent:
    return TraceEvent("kvmmmu", "kvm_mmu_get_page", 0, 0, 7,
                      {"gfn": gfn, "role": role, "created": int(created), "root_count": 0})


FAULT = TraceEvent("kvmmmu", "kvm_mmu_spte_requested", 0, 0, 7, {})
PIO = TraceEvent("kvm", "kvm_pio", 0, 0, 7, {"port": 0x10, "val": 1})


def gfns(records: list[dict]) -> list[int]:
    return [r["gfn"] for r in records]


def test_a_record_has_the_models_keys_and_the_level_from_the_role():
    assert to_record(page(0x102, 0x3704)) == {"event": "kvm_mmu_get_page", "gfn": 0x102,
                                              "role": 0x3704, "level": 4, "created": True}
    assert to_record(page(0, 0x1782, False))["level"] == 2


def test_without_faults_every_page_is_a_root():
    roots, kids, level = split_records([page(i << 18, 0x1782) for i in range(4)], 4)
    assert gfns(roots) == [0, 0x40000, 0x80000, 0xC0000] and kids == [] and level == 2


def test_pages_walking_down_after_a_fault_are_children():
    events = [page(0x102, 0x3704), FAULT, page(0x200, 0x3703), page(0x201, 0x3702),
              page(0x202, 0x3701), FAULT, page(0x203, 0x3701), PIO]
    roots, kids, level = split_records(events, 4)
    assert gfns(roots) == [0x102] and gfns(kids) == [0x200, 0x201, 0x202, 0x203]
    assert level == 4


def test_a_root_right_after_a_fault_that_created_nothing_is_still_a_root():
    events = [page(0x102, 0x3704), FAULT, page(0x103, 0x3704, False)]
    roots, kids, _ = split_records(events, 4)
    assert gfns(roots) == [0x102, 0x103] and kids == []


def test_pae_roots_after_64_bit_children_are_roots():
    # level 2 below a 4-level root is a child; the next level-2 page climbs back up: a root
    events = [FAULT, page(0x200, 0x3703), page(0x201, 0x3702), page(0x202, 0x3701),
              page(0x300, 0x3702), page(0x301, 0x3702)]
    roots, kids, level = split_records(events, 4)
    assert gfns(kids) == [0x200, 0x201, 0x202] and gfns(roots) == [0x300, 0x301]
    assert level == 2


def test_children_must_stay_below_the_current_root_level():
    # after PAE roots (level 2), a level-2 page after a fault is not a child
    roots, kids, _ = split_records([FAULT, page(0x104, 0x3702), FAULT, page(0x5, 0x3701)], 2)
    assert gfns(roots) == [0x104] and gfns(kids) == [0x5]


def test_another_event_ends_a_fault():
    roots, kids, _ = split_records([FAULT, PIO, page(0x1, 0x3703)], 4)
    assert gfns(roots) == [0x1] and kids == []


def test_the_probe_enables_only_three_events():
    assert TRACE_EVENTS == ("kvmmmu/kvm_mmu_get_page", "kvmmmu/kvm_mmu_spte_requested",
                            "kvm/kvm_pio")
