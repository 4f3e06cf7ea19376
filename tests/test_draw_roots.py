"""The root-cache and contexts views: slots, pages, the last lookup, the fate of roots."""

from __future__ import annotations

import re

from mmulib.draw import cache_activity, contexts_dot, roots_dot
from mmulib.draw.roots import MAX_IDLE_PAGES, page_id, root_fate
from mmulib.draw.style import HIT
from mmulib.sim.machine import SpKey, TdpKey
from mmulib.ui.scene import last_activity
from mmulib.ui.session import Session


def roots_of(s: Session) -> str:
    return roots_dot(s.machine, last_activity(s.steps))


def node(dot: str, node_id: str) -> str:
    m = re.search(rf'^\s*"{re.escape(node_id)}" \[label=<(.*)>\];$', dot, re.M)
    assert m, f"no node {node_id}"
    return m.group(1)


def test_wp_flip_on_6_4_leaves_the_root_cache_drawing_as_it_was() -> None:
    s = Session("6.4", tdp="ept")
    before = roots_of(s)
    s.toggle("CR0", "WP")
    assert roots_of(s) == before
    assert "TDP MMU root 0x00003784" in node(before, "root_mmu_root")


def test_wp_flip_on_5_17_drops_the_root_and_builds_another() -> None:
    s = Session("5.17", tdp="ept")
    before = roots_of(s)
    s.toggle("CR0", "WP")
    after = roots_of(s)
    assert after != before
    assert "TDP MMU root 0x00003784" in node(before, "root_mmu_root")
    assert "TDP MMU root 0x00001784" in node(after, "root_mmu_root")
    activity = node(after, "last_activity")
    assert "CR0.WP 1→0" in activity
    assert "TDP MMU root 0x00003784 freed: 515 page-table pages" in activity
    assert "kvm_mmu_free_roots(root_mmu): root" in activity
    assert '"tdp_root_00001784_0"' in after and '"tdp_root_00003784_0"' not in after


def test_shadow_cr3_round_hits_prev_roots_and_marks_the_root() -> None:
    s = Session("6.4", tdp="none")
    for space in (1, 2, 3, 1):
        s.mov_cr3(space)
    dot = roots_of(s)
    root = node(dot, "root_mmu_root")
    assert "pgd 0x200000" in root and "found in prev_roots[1]" in root and HIT in root
    assert [re.search(r"pgd (0x[0-9a-f]+)", node(dot, f"root_mmu_prev_roots_{i}")).group(1)
            for i in range(3)] == ["0x400000", "0x300000", "0x100000"]
    assert "hit prev_roots[1]" in node(dot, "last_activity")
    # one shadow page per address space, each used by one root
    pages = re.findall(r'^\s*"(sp_[0-9a-f]+_[0-9a-f]+)" \[', dot, re.M)
    assert pages == ["sp_100_00003704", "sp_200_00003704", "sp_300_00003704", "sp_400_00003704"]
    assert all("root_count 1" in node(dot, p) for p in pages)


def test_4_18_has_no_root_cache() -> None:
    s = Session("4.18", tdp="none")
    s.mov_cr3(1)
    dot = roots_of(s)
    assert "4.18 has no root cache" in node(dot, "last_activity")
    assert all("INVALID_PAGE" in node(dot, f"mmu_prev_roots_{i}") for i in range(3))


def test_unreferenced_legacy_pages_are_capped() -> None:
    s = Session("4.18", tdp="none")
    for i in range(MAX_IDLE_PAGES + 4):
        s.apply({"op": "mov_cr3", "value": 0x1000000 + i * 0x1000})
    dot = roots_of(s)
    assert "4 more unreferenced root pages" in node(dot, "idle_pages")


def test_nested_ept_shows_guest_mmu_as_the_active_cache() -> None:
    s = Session("6.4", tdp="ept")
    s.enter_l2()
    dot = roots_of(s)
    assert 'label="guest_mmu  <- vcpu->arch.mmu"' in dot
    assert "shadow page gfn 0x1000 role 0x00020704" in node(dot, "guest_mmu_root")
    ctx = contexts_dot(s.machine)
    assert '"vcpu":mmu -> "guest_mmu"' in ctx and '"vcpu":walk_mmu -> "nested_mmu"' in ctx


def test_contexts_before_4_20_have_one_embedded_mmu() -> None:
    dot = contexts_dot(Session("4.19", tdp="none").machine)
    assert '"vcpu":mmu -> "mmu" [color="#1565c0", label="mmu (embedded)"' in dot
    assert '"root_mmu"' not in dot


def test_page_ids_and_fates() -> None:
    assert page_id(SpKey(0x10, 0x3704, zombie=2)) == "sp_10_00003704_z2"
    assert page_id(TdpKey(0x1784, 1)) == "tdp_root_00001784_1"
    assert "5.10-5.17" in root_fate(Session("5.17").machine)
    assert "5.18-6.3" in root_fate(Session("5.19").machine)
    assert "6.4+" in root_fate(Session("6.14").machine)
    assert root_fate(Session("6.4", tdp="none").machine).startswith("legacy MMU")


def test_cache_activity_keeps_only_root_events() -> None:
    s = Session("6.4", tdp="ept")
    step = s.toggle("CR0", "WP")  # no exit: nothing touches the roots
    assert cache_activity(step.label, step.events) is None
    step = s.memslot()
    act = cache_activity(step.label, step.events)
    assert act is not None and {e.name for e in act.events} >= {"kvm_arch_flush_shadow_memslot"}
