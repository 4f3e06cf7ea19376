"""The "what just happened" line, in words, for the steps the issue names."""

from __future__ import annotations

from mmulib.ui.explain import explain, held_roots
from mmulib.ui.session import Session


def said(s: Session) -> str:
    return explain(s.steps[-1], s.prev_machine, s.machine)


def test_wp_flip_on_6_4_with_npt_runs_kvm_init_mmu_only_and_keeps_the_roots() -> None:
    s = Session("6.4", tdp="npt")
    s.toggle("CR0", "WP")
    assert said(s) == ("CR0.WP 1→0: cpu_role.base.cr0_wp changed, root_role unchanged; "
                       "6.4 runs kvm_init_mmu only and keeps its 1 root.")


def test_wp_flip_on_6_4_with_ept_does_not_exit() -> None:
    s = Session("6.4", tdp="ept")
    s.toggle("CR0", "WP")
    assert said(s) == (
        "CR0.WP 1→0: cpu_role.base.cr0_wp changed (copied in lazily), root_role unchanged; "
        "no VM exit (CR0.WP is guest-owned with EPT (6.4+)), so 6.4 runs no MMU code and keeps "
        "its 1 root.")


def test_wp_flip_on_5_17_drops_the_root() -> None:
    s = Session("5.17", tdp="ept")
    s.toggle("CR0", "WP")
    assert said(s) == (
        "CR0.WP 1→0: mmu_role.base.cr0_wp changed, the root page role changed (cr0_wp); "
        "5.17 runs kvm_mmu_reset_context (from kvm_post_set_cr0), drops its root, tears down "
        "515 TDP page-table pages and builds a new root at VM entry.")


def test_shadow_wp_flip_with_four_roots_drops_them_all() -> None:
    s = Session("6.4", tdp="none")
    for space in (1, 2, 3):
        s.mov_cr3(space)
    assert len(held_roots(s.machine)) == 4
    s.toggle("CR0", "WP")
    assert said(s).endswith("6.4 runs kvm_mmu_reset_context (from kvm_post_set_cr0), drops "
                            "all 4 roots and builds a new root at VM entry.")


def test_cr3_switch_says_which_slot_hit() -> None:
    s = Session("6.4", tdp="none")
    for space in (1, 2, 1):
        s.mov_cr3(space)
    assert "kvm_mmu_new_pgd hits prev_roots[0] and keeps all 3 roots" in said(s)


def test_entering_l2_says_the_mmu_pointer_moved() -> None:
    s = Session("6.4", tdp="ept")
    s.enter_l2()
    assert said(s).startswith("VMLAUNCH into L2 (nested EPT on): vcpu->arch.mmu now points at "
                              "guest_mmu, ")


def test_reset_of_a_6_4_tdp_root_is_found_again() -> None:
    s = Session("6.4", tdp="ept")
    s.toggle("CR4", "SMEP")
    assert said(s).endswith("6.4 runs kvm_mmu_reset_context (from kvm_post_set_cr4), drops "
                            "its root and finds a root again at VM entry.")
