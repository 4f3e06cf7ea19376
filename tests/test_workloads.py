"""The built-in workloads: exact counter tables per era, derived from the event semantics.

Each expected row lists the non-zero counters of one (era, config), with the reason in the
comment next to it; eras are grouped where the kernel did the same thing.  Sources:
kernel-roots.md §2 (event × release), §5 (prev_roots), §8.3 (root lifetime), §9 (events in
detail); the README's 5.18 -> 5.19 findings for which guest bits are in a root's role.  The
default footprint (16 MiB) makes a 4-level TDP tree 11 page-table pages (mmulib.sim.machine
pt_pages: 8 leaf tables + one each at levels 2 and 3 + the root).  Several vCPUs share one
VM's shadow pages and TDP MMU roots: a root lives while any vCPU holds a reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmulib.eras import ERAS, resolve
from mmulib.sim.workloads import (
    COLUMNS,
    GUEST_VCPUS,
    boot,
    context_switch_storm,
    cpuid_update,
    cr0_wp_storm,
    memslot_change,
    nested_ping_pong,
    run,
    smm_round_trips,
    table,
)

ALL = tuple(e.name for e in ERAS)
PRE_TDP_MMU = ("4.18", "4.19", "4.20")
TREE = 11  # page-table pages of one TDP MMU tree at the default footprint


def rows(t: np.ndarray) -> dict[tuple[str, str], dict[str, int]]:
    """(era, config) -> the non-zero counters other than ``ops``."""
    return {(str(r["era"]), str(r["config"])): {c: int(r[c]) for c in COLUMNS
                                                 if c != "ops" and r[c]} for r in t}


def expand(spec: dict[tuple[tuple[str, ...], str], dict[str, int]]) -> dict:
    return {(e, c): v for (eras, c), v in spec.items() for e in eras}


def reset_cycle(n: int, *, allocated: int = 0) -> dict[str, int]:
    """n guest writes that each exit and run kvm_mmu_reset_context on a legacy/shadow MMU:
    unload frees the one current root, the re-init recomputes the permission bitmask, and
    the next VM entry finds the root page again in mmu_page_hash (or creates it)."""
    out = {"exits": n, "reset_context": n, "permission_bitmask": n, "roots_freed": n,
           "roots_reused": n - allocated}
    if allocated:
        out["roots_allocated"] = allocated
    return out


def tdp_mmu_cycle(n: int, *, on_vcpu: bool) -> dict[str, int]:
    """n resets with the TDP MMU before 6.4: the vCPU drops the last reference, the tree is
    torn down (on the vCPU before 5.18, by a worker after) and a new one is allocated and
    faulted back in."""
    return clean({"exits": n, "reset_context": n, "permission_bitmask": n, "roots_freed": n,
                  "roots_allocated": n, "tdp_roots_allocated": n, "tdp_roots_freed": n,
                  "pt_pages_torn_down": n * TREE,
                  "pt_pages_torn_down_vcpu": n * TREE if on_vcpu else 0,
                  "pt_pages_rebuilt": n * TREE})


def clean(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def before(era: str, release: str) -> bool:
    return resolve(era).version < resolve(release).version


# ------------------------------------------------------------------------------ CR0.WP storm
STORM_ONE_VCPU = expand({
    # One vCPU, 4 toggles = WP cleared, set, cleared, set.  Every toggle exits and resets the
    # MMU before 6.4.  4.18/4.19: init_kvm_tdp_mmu's direct role has no guest bits, so both WP
    # values share one root page.  4.20-5.18: the direct role carries cr0_wp, so the WP=0 root
    # is a second page, created at the first toggle and found again after.  5.19+: root_role
    # forces cr0_wp=1: one page again.
    (("4.18", "4.19"), "legacy"): reset_cycle(4),
    (("4.20", "5.10", "5.15", "5.17", "5.18"), "legacy"): reset_cycle(4, allocated=1),
    (("5.19",), "legacy"): reset_cycle(4),
    # 6.4+ (fb509f76acc8): CR0.WP is guest-owned with EPT, the toggle never exits.
    (("6.4", "6.14", "6.18"), "legacy"): {},
    (("5.10", "5.15", "5.17"), "tdp_mmu"): tdp_mmu_cycle(4, on_vcpu=True),
    (("5.18", "5.19"), "tdp_mmu"): tdp_mmu_cycle(4, on_vcpu=False),
    (("6.4", "6.14", "6.18"), "tdp_mmu"): {},
    # Shadow paging: a WP toggle resets in every era (6.4 keeps the roots only with TDP); the
    # WP=0 shadow root is created once, then both are found in the hash.
    (ALL, "shadow"): reset_cycle(4, allocated=1),
})


def test_cr0_wp_storm_counters_per_era_on_one_vcpu() -> None:
    assert rows(table(cr0_wp_storm(4, vcpus=1))) == STORM_ONE_VCPU


def tdp_mmu_window(n: int, *, on_vcpu: bool) -> dict[str, int]:
    """n toggles (n/2 open/close windows) with the TDP MMU before 5.19 while another vCPU
    holds the WP=1 root: the clear drops a reference to it and allocates the WP=0 root; the
    set drops the WP=0 root's only reference (its tree is torn down) and finds the WP=1
    root again."""
    w = n // 2
    return clean({"exits": n, "reset_context": n, "permission_bitmask": n, "roots_freed": n,
                  "roots_allocated": w, "roots_reused": w, "tdp_roots_allocated": w,
                  "tdp_roots_freed": w, "pt_pages_torn_down": w * TREE,
                  "pt_pages_torn_down_vcpu": w * TREE if on_vcpu else 0,
                  "pt_pages_rebuilt": w * TREE})


STORM_TWO_VCPUS = expand({
    # Two vCPUs (the default guest), one open/close window each: vCPU 0 clears and sets, then
    # vCPU 1.  Legacy and shadow: the same as one vCPU (the pages stay in mmu_page_hash).
    (("4.18", "4.19"), "legacy"): reset_cycle(4),
    (("4.20", "5.10", "5.15", "5.17", "5.18"), "legacy"): reset_cycle(4, allocated=1),
    (("5.19",), "legacy"): reset_cycle(4),
    (("6.4", "6.14", "6.18"), "legacy"): {},
    # TDP MMU before 5.19: the WP=0 tree lives for one window, the WP=1 tree survives.
    (("5.10", "5.15", "5.17"), "tdp_mmu"): tdp_mmu_window(4, on_vcpu=True),
    (("5.18",), "tdp_mmu"): tdp_mmu_window(4, on_vcpu=False),
    # 5.19-6.3: root_role has no CR0.WP; the other vCPU's reference keeps the only root
    # alive, so every toggle drops a reference and finds the same root: no tree work at all.
    (("5.19",), "tdp_mmu"): {"exits": 4, "reset_context": 4, "permission_bitmask": 4,
                             "roots_freed": 4, "roots_reused": 4},
    (("6.4", "6.14", "6.18"), "tdp_mmu"): {},
    (ALL, "shadow"): reset_cycle(4, allocated=1),
})


def test_cr0_wp_storm_counters_per_era_on_the_default_two_vcpus() -> None:
    assert GUEST_VCPUS == 2
    assert rows(table(cr0_wp_storm(4))) == STORM_TWO_VCPUS


def test_storm_op_interleave_on_three_vcpus() -> None:
    """Every vCPU clears, then every vCPU sets (6 toggles).  Before 5.19: the first clear
    allocates the WP=0 root, the next two find it; the third clear drops the WP=1 root's
    last reference (torn down).  The first set allocates a WP=1 root, the next two find it,
    and the last set drops the WP=0 root's last reference.  2 trees per 6 toggles; 5.19+:
    one root throughout."""
    def expected(on_vcpu: bool) -> dict[str, int]:
        return clean({"exits": 6, "reset_context": 6, "permission_bitmask": 6,
                      "roots_freed": 6, "roots_allocated": 2, "roots_reused": 4,
                      "tdp_roots_allocated": 2, "tdp_roots_freed": 2,
                      "pt_pages_torn_down": 2 * TREE,
                      "pt_pages_torn_down_vcpu": 2 * TREE if on_vcpu else 0,
                      "pt_pages_rebuilt": 2 * TREE})

    t = rows(table(cr0_wp_storm(6, vcpus=3, interleave="op"), eras=["5.10", "5.18", "5.19"],
                   configs=["tdp_mmu"]))
    assert t[("5.10", "tdp_mmu")] == expected(True)
    assert t[("5.18", "tdp_mmu")] == expected(False)
    assert t[("5.19", "tdp_mmu")] == {"exits": 6, "reset_context": 6, "permission_bitmask": 6,
                                      "roots_freed": 6, "roots_reused": 6}


@pytest.mark.parametrize("era", ["5.10", "5.18", "5.19", "6.4"])
@pytest.mark.parametrize("config", ["legacy", "tdp_mmu", "shadow"])
def test_storm_per_toggle_counts_are_the_same_for_every_vcpu_count_from_two(era,
                                                                           config) -> None:
    """With one window per vCPU in turn, 2, 3, 4 or 8 vCPUs do the same per toggle: the
    other vCPUs only ever hold the WP=1 root (or the one root of 5.19+)."""
    toggles = 2 * 3 * 4 * 8 * 2
    base = run(cr0_wp_storm(toggles, vcpus=2), era, config)
    for n in (3, 4, 8):
        got = run(cr0_wp_storm(toggles, vcpus=n), era, config)
        assert got.tolist() == base.tolist(), n


def test_cr0_wp_storm_on_svm_keeps_exiting_after_6_4() -> None:
    t = rows(table(cr0_wp_storm(4, vcpus=1), eras=["5.19", "6.4"],
                   configs=["npt_legacy", "npt_tdp_mmu"]))
    assert t[("5.19", "npt_legacy")] == reset_cycle(4)
    assert t[("5.19", "npt_tdp_mmu")] == tdp_mmu_cycle(4, on_vcpu=False)
    # 01b31714bd90 applies (roots kept, kvm_init_mmu only); AMD has no per-bit CR0 intercept
    # (numbers.md #7), so the write still exits.
    only_init = {"exits": 4, "permission_bitmask": 4}
    assert t[("6.4", "npt_legacy")] == t[("6.4", "npt_tdp_mmu")] == only_init


@pytest.mark.parametrize(("backport", "vmx", "svm"), [
    ("no_unload", {"exits": 4, "permission_bitmask": 4}, {"exits": 4, "permission_bitmask": 4}),
    ("full", {}, {"exits": 4, "permission_bitmask": 4}),
])
def test_cr0_wp_backport_per_vendor_on_5_10(backport, vmx, svm) -> None:
    """The two parts of the 6.4 fix on a 5.10 machine: no unload (both vendors), and on VMX
    with EPT also no exit; shadow paging is not touched by either."""
    t = rows(table(cr0_wp_storm(4), eras=["5.10"], backport=backport,
                   configs=["legacy", "tdp_mmu", "npt_legacy", "npt_tdp_mmu", "shadow"]))
    assert t[("5.10", "legacy")] == t[("5.10", "tdp_mmu")] == vmx
    assert t[("5.10", "npt_legacy")] == t[("5.10", "npt_tdp_mmu")] == svm
    assert t[("5.10", "shadow")] == reset_cycle(4, allocated=1)


def test_footprint_scales_the_tdp_mmu_tree() -> None:
    # 1 GiB with 4 KiB pages: 512 leaf tables + 1 + 1 + the root.
    t = run(cr0_wp_storm(4, vcpus=1), "5.10", "tdp_mmu", footprint_gib=1.0)
    i = COLUMNS.index
    assert (t[i("pt_pages_torn_down_vcpu")], t[i("pt_pages_rebuilt")]) == (4 * 515, 4 * 515)


# ------------------------------------------------------------------------------------- boot
def boot_legacy(resets: int, allocated: int) -> dict[str, int]:
    # 12 ops; 9 exit (not `run`, not the two MOV CR3: with EPT/NPT they do not exit).  Resets:
    # PG on, PAE, PG off, PG on, NX, WP (kernel-roots.md §2); 5.18+ also EFER.LME.  Six of
    # them change the role, so 6 re-inits (the LME reset of 5.18+ returns early).
    return {"exits": 9, "reset_context": resets, "permission_bitmask": 6, "roots_freed": resets,
            "roots_allocated": allocated, "roots_reused": resets + 1 - allocated}


BOOT = expand({
    # The first VM entry creates the root.  4.18/4.19: one direct role for every mode.
    # 4.20-5.18: efer_nx and cr0_wp are in the direct role, so NX and WP each make a page.
    # 5.19+: root_role forces both to 1, one page.
    (("4.18", "4.19"), "legacy"): boot_legacy(6, 1),
    (("4.20", "5.10", "5.15", "5.17"), "legacy"): boot_legacy(6, 3),
    (("5.18",), "legacy"): boot_legacy(7, 3),
    (("5.19", "6.4", "6.14", "6.18"), "legacy"): boot_legacy(7, 1),
    # TDP MMU before 6.4: every reset frees the only root and allocates a new tree.
    (("5.10", "5.15", "5.17"), "tdp_mmu"): {
        "exits": 9, "reset_context": 6, "permission_bitmask": 6, "roots_freed": 6,
        "roots_allocated": 7, "tdp_roots_allocated": 7, "tdp_roots_freed": 6,
        "pt_pages_torn_down": 6 * TREE, "pt_pages_torn_down_vcpu": 6 * TREE,
        "pt_pages_rebuilt": 7 * TREE},
    (("5.18", "5.19"), "tdp_mmu"): {
        "exits": 9, "reset_context": 7, "permission_bitmask": 6, "roots_freed": 7,
        "roots_allocated": 8, "tdp_roots_allocated": 8, "tdp_roots_freed": 7,
        "pt_pages_torn_down": 7 * TREE, "pt_pages_rebuilt": 8 * TREE},
    # 6.4+: the TDP MMU keeps its own reference, so every reload finds the first root.
    (("6.4", "6.14", "6.18"), "tdp_mmu"): {
        "exits": 9, "reset_context": 7, "permission_bitmask": 6, "roots_freed": 7,
        "roots_allocated": 1, "roots_reused": 7, "tdp_roots_allocated": 1,
        "pt_pages_rebuilt": TREE},
    # Shadow paging: MOV CR3 exits too (11 exits).  Non-paging, 32-bit and PAE guests get
    # KVM's pae_root (4 shadow pages); the two MOV CR3 with paging off miss the fast switch
    # ("64-bit guests only"), free the root and find its 4 pages again.  Created: 4 (first
    # entry, non-paging) + 4 (32-bit) + 4 (PAE) + 1 (long mode) + 1 (NX, before 5.19)
    # + 1 (WP); found again: 4 + 4 (PG off = non-paging again) + 4, and 5.18+ another 4
    # after the LME reset.  Freed: every reset and the two CR3 misses.
    (PRE_TDP_MMU + ("5.10", "5.15", "5.17"), "shadow"): {
        "exits": 11, "reset_context": 6, "permission_bitmask": 6, "roots_freed": 8,
        "roots_allocated": 15, "roots_reused": 12, "pgd_misses": 2},
    (("5.18",), "shadow"): {
        "exits": 11, "reset_context": 7, "permission_bitmask": 6, "roots_freed": 9,
        "roots_allocated": 15, "roots_reused": 16, "pgd_misses": 2},
    (("5.19", "6.4", "6.14", "6.18"), "shadow"): {
        "exits": 11, "reset_context": 7, "permission_bitmask": 6, "roots_freed": 9,
        "roots_allocated": 14, "roots_reused": 17, "pgd_misses": 2},
})


def test_boot_counters_per_era() -> None:
    assert rows(table(boot())) == BOOT


# ---------------------------------------------------------------------- context-switch storm
NO_CACHE = ("4.18", "5.15")


def test_context_switch_storm_within_the_cache() -> None:
    """2 address spaces, 6 switches, shadow paging: the first switch misses and creates the
    second root; 4.19+ keep the previous root in prev_roots, so the other 5 hit.  4.18 has no
    cache, and 5.15's kvm_invalidate_pcid (no PCIDE/TDP guard there) frees every prev_root
    at each MOV CR3 without NOFLUSH: every switch misses and finds the other root in the
    hash."""
    t = rows(table(context_switch_storm(2, 3), configs=["shadow", "legacy"]))
    for era in ALL:
        assert t[(era, "legacy")] == {}  # with EPT a MOV CR3 does not exit
        expected = ({"exits": 6, "pgd_misses": 6, "roots_freed": 6, "roots_allocated": 1,
                     "roots_reused": 5} if era in NO_CACHE else
                    {"exits": 6, "pgd_hits": 5, "pgd_misses": 1, "roots_allocated": 1})
        assert t[(era, "shadow")] == expected, era


def test_context_switch_storm_beyond_the_cache_evicts() -> None:
    """5 spaces round-robin: current + 3 prev_roots hold 4, so the target is always the one
    evicted last time.  10 misses; the first 3 evict empty slots, the other 7 evict (free) the
    LRU root.  Spaces 1-4 are created once; later visits find their pages in the hash."""
    t = rows(table(context_switch_storm(5, 2), configs=["shadow"]))
    for era in ALL:
        expected = {"exits": 10, "pgd_misses": 10, "roots_allocated": 4, "roots_reused": 6,
                    "roots_freed": 7, "pgd_evictions": 7}
        if era in NO_CACHE:  # the root left behind is freed at every switch: no eviction
            expected.update(roots_freed=10, pgd_evictions=0)
            expected = clean(expected)
        assert t[(era, "shadow")] == expected, era


# ------------------------------------------------------------------------ nested ping-pong
def test_nested_vmx_round_trips() -> None:
    """3 round trips (VM entry with nested EPT, then VM exit).

    4.18: entry unloads, inits shadow EPT, then nested_vmx_load_cr3 resets; exit resets:
    2 resets and 3 re-inits per round trip.  4.19: one MMU, fast CR3 switch (hits from the
    second entry on), but the single MMU flips between TDP and shadow-EPT roles: 3 re-inits
    per round trip.  5.10+: root_mmu and guest_mmu keep their roles (the first entry inits
    guest_mmu and nested_mmu once) and each switch hits the current root.
    """
    t = rows(table(nested_ping_pong("vmx", 3)))
    assert t[("4.18", "legacy")] == {"reset_context": 6, "permission_bitmask": 9,
                                     "roots_allocated": 1, "roots_reused": 5, "roots_freed": 6}
    assert t[("4.19", "legacy")] == {"permission_bitmask": 9, "roots_allocated": 1,
                                     "pgd_hits": 5, "pgd_misses": 1}
    # 4.20: cached_root_available never checks the current root; it pushes it with
    # mmu->get_cr3().  For guest_mmu that is the EPTP (nested_ept_get_cr3), so from the
    # third entry on the pushed root is found in prev_roots[0] (1 hit in 3 round trips).
    # For root_mmu it is L2's CR3, so every exit to L1 misses and reloads from the hash.
    assert t[("4.20", "legacy")] == {"permission_bitmask": 2, "roots_allocated": 1,
                                     "roots_reused": 4, "pgd_hits": 1, "pgd_misses": 5}
    later = {"permission_bitmask": 2, "roots_allocated": 1, "pgd_hits": 5, "pgd_misses": 1}
    for era in ALL[3:]:
        for config in ("legacy", "tdp_mmu"):
            assert t[(era, config)] == later, (era, config)


def test_nested_svm_round_trips() -> None:
    """4.18-4.20: VMRUN with NPT and #VMEXIT both reset (kernel-roots.md §9.7); 4.18/4.19
    also re-init the single MMU each way.  5.10+: as VMX."""
    t = rows(table(nested_ping_pong("svm", 3)))
    for era in ("4.18", "4.19"):
        assert t[(era, "npt_legacy")] == {"reset_context": 6, "permission_bitmask": 9,
                                          "roots_allocated": 1, "roots_reused": 5,
                                          "roots_freed": 6}
    assert t[("4.20", "npt_legacy")] == {"reset_context": 6, "permission_bitmask": 2,
                                         "roots_allocated": 1, "roots_reused": 5,
                                         "roots_freed": 6}
    for era in ALL[3:]:
        for config in ("npt_legacy", "npt_tdp_mmu"):
            assert t[(era, config)] == {"permission_bitmask": 2, "roots_allocated": 1,
                                        "pgd_hits": 5, "pgd_misses": 1}


# ---------------------------------------------------------------------------- SMM round trips
def test_smm_round_trips_and_tdp_roots() -> None:
    """2 SMI + RSM from firmware state (SVM, NPT).

    Resets per round trip: 4.18-4.20 SMI = RC + kvm_update_cpuid's RC, RSM = 1 (3); 5.10:
    1 + 1 (2); 5.17+: kvm_smm_changed's RC + the final RC, RSM 1 (3).  The TDP MMU before 6.4
    frees its only root at each SMI and RSM and allocates the other address space's root:
    2 roots per round trip, the ~10,000 roots of numbers.md #17 for 5,000 round trips.  6.4+
    keeps both roots: one SMM root is allocated in all.
    """
    t = rows(table(smm_round_trips(2)))
    for era in ALL:
        resets = {"4.18": 6, "4.19": 6, "4.20": 6, "5.10": 4, "5.15": 4}.get(era, 6)
        bitmasks = 6 if era in ("4.18", "4.19") else 4
        assert t[(era, "npt_legacy")] == {"reset_context": resets, "permission_bitmask": bitmasks,
                                          "roots_freed": 4, "roots_allocated": 1,
                                          "roots_reused": 3}, era
        if era in PRE_TDP_MMU:
            assert (era, "npt_tdp_mmu") not in t
        elif era in ("6.4", "6.14", "6.18"):
            assert t[(era, "npt_tdp_mmu")] == {
                "reset_context": resets, "permission_bitmask": 4, "roots_freed": 4,
                "roots_allocated": 1, "roots_reused": 3, "tdp_roots_allocated": 1,
                "pt_pages_rebuilt": TREE}, era
        else:
            vcpu = 4 * TREE if before(era, "5.18") else 0
            assert t[(era, "npt_tdp_mmu")] == clean({
                "reset_context": resets, "permission_bitmask": 4, "roots_freed": 4,
                "roots_allocated": 4, "tdp_roots_allocated": 4, "tdp_roots_freed": 4,
                "pt_pages_torn_down": 4 * TREE, "pt_pages_torn_down_vcpu": vcpu,
                "pt_pages_rebuilt": 4 * TREE}), era


def test_smm_workload_reproduces_the_hyper_v_root_count() -> None:
    t = rows(table(smm_round_trips(), eras=["5.15", "6.4"], configs=["npt_tdp_mmu"]))
    assert t[("5.15", "npt_tdp_mmu")]["tdp_roots_allocated"] == 10_000
    assert t[("6.4", "npt_tdp_mmu")]["tdp_roots_allocated"] == 1


# ------------------------------------------------------------------------- CPUID and memslots
def test_cpuid_update() -> None:
    """KVM_SET_CPUID after the vCPU has run resets the MMU up to 5.15.  The re-init is
    skipped (role unchanged) in 4.20-5.10; 5.15 clears ext.valid first, forcing it.  From
    5.17 KVM accepts only an identical table after KVM_RUN (kvm_cpuid_check_equal), as a
    no-op: nothing happens."""
    t = rows(table(cpuid_update()))
    for era in ALL:
        if not before(era, "5.17"):
            assert {c: t[(era, c)] for c in ("legacy", "tdp_mmu", "shadow")} == {
                "legacy": {}, "tdp_mmu": {}, "shadow": {}}, era
            continue
        bitmask = 0 if era in ("4.20", "5.10") else 1
        base = clean({"reset_context": 1, "permission_bitmask": bitmask, "roots_freed": 1,
                      "roots_reused": 1})
        assert t[(era, "legacy")] == t[(era, "shadow")] == base, era
        if era in PRE_TDP_MMU:
            continue
        assert t[(era, "tdp_mmu")] == clean({
            "reset_context": 1, "permission_bitmask": bitmask, "roots_freed": 1,
            "roots_allocated": 1, "tdp_roots_allocated": 1, "tdp_roots_freed": 1,
            "pt_pages_torn_down": TREE, "pt_pages_torn_down_vcpu": TREE,
            "pt_pages_rebuilt": TREE}), era


def test_memslot_change() -> None:
    """Deleting a memslot zaps every shadow page: the current root is invalid, so the next
    entry frees it and creates a new one, in every era.  TDP MMU trees are zapped in the
    ioctl (5.10/5.15 kvm_tdp_mmu_zap_all, 5.17+ kvm_tdp_mmu_invalidate_all_roots: 10 of
    the 11 pages); the vCPU then frees the empty root page itself (kvm_tdp_mmu_free_root
    where="vcpu": synchronously before 5.18, the last put of an already-invalid root
    after).  Every era then rebuilds the tree."""
    t = rows(table(memslot_change()))
    simple = {"roots_freed": 1, "roots_allocated": 1}
    for era in ALL:
        assert t[(era, "legacy")] == t[(era, "shadow")] == simple, era
        if era in PRE_TDP_MMU:
            continue
        assert t[(era, "tdp_mmu")] == clean({
            "roots_freed": 1, "roots_allocated": 1, "tdp_roots_allocated": 1,
            "tdp_roots_freed": 1, "pt_pages_torn_down": TREE, "pt_pages_torn_down_vcpu": 1,
            "pt_pages_rebuilt": TREE}), era


def test_memslot_change_on_three_vcpus() -> None:
    """One memslot ioctl, then each of 3 vCPUs reloads.  Shadow pages: the first vCPU frees
    the invalid root and creates the new page, the others find it.  TDP MMU from 5.17: the
    roots are invalid, so the last vCPU to drop the old root frees its (empty) page; the
    first allocates the new root and the others find it."""
    t = rows(table(memslot_change(vcpus=3)))
    for era in ALL:
        assert t[(era, "legacy")] == t[(era, "shadow")] == {
            "roots_freed": 3, "roots_allocated": 1, "roots_reused": 2}, era
        if era in PRE_TDP_MMU or before(era, "5.17"):
            continue
        assert t[(era, "tdp_mmu")] == {
            "roots_freed": 3, "roots_allocated": 1, "roots_reused": 2, "tdp_roots_allocated": 1,
            "tdp_roots_freed": 1, "pt_pages_torn_down": TREE, "pt_pages_torn_down_vcpu": 1,
            "pt_pages_rebuilt": TREE}, era


def test_memslot_change_on_three_vcpus_refills_the_zapped_tree_on_5_10() -> None:
    """5.10/5.15: kvm_tdp_mmu_zap_all zaps the tree (10 pages) but keeps the root valid;
    the vCPUs reload and find it again (no root freed), and the guest faults the 10 pages
    back in."""
    t = rows(table(memslot_change(vcpus=3), eras=["5.10", "5.15"], configs=["tdp_mmu"]))
    for era in ("5.10", "5.15"):
        assert t[(era, "tdp_mmu")] == {"roots_freed": 3, "roots_reused": 3,
                                       "pt_pages_torn_down": TREE - 1,
                                       "pt_pages_rebuilt": TREE - 1}, era


def test_cpuid_update_on_two_vcpus_keeps_the_tdp_mmu_root() -> None:
    """5.10/5.15: each vCPU's KVM_SET_CPUID resets its MMU, but the other vCPU's reference
    keeps the TDP MMU root: no tree is freed (one vCPU: freed and rebuilt each time)."""
    t = rows(table(cpuid_update(vcpus=2), eras=["5.10", "5.15"], configs=["tdp_mmu"]))
    assert t[("5.10", "tdp_mmu")] == {"reset_context": 2, "roots_freed": 2, "roots_reused": 2}
    assert t[("5.15", "tdp_mmu")] == {"reset_context": 2, "permission_bitmask": 2,
                                      "roots_freed": 2, "roots_reused": 2}


def test_smm_round_trips_on_two_vcpus_rebuild_only_the_smm_root() -> None:
    """Before 6.4, while one vCPU is in SMM the other keeps the normal root: each SMI
    allocates an SMM root and each RSM frees it (2 round trips per vCPU: 4 SMM trees, half
    of what 4 round trips on one vCPU cost)."""
    t = rows(table(smm_round_trips(2, vcpus=2), eras=["5.15", "5.19", "6.4"],
                   configs=["npt_tdp_mmu"]))
    for era in ("5.15", "5.19"):
        r = t[(era, "npt_tdp_mmu")]
        assert (r["tdp_roots_allocated"], r["tdp_roots_freed"], r["roots_reused"],
                r["pt_pages_torn_down"]) == (4, 4, 4, 4 * TREE), era
    assert t[("6.4", "npt_tdp_mmu")]["tdp_roots_allocated"] == 1


def test_boot_of_a_second_vcpu_reuses_the_first_ones_roots() -> None:
    """vCPU 1 boots after vCPU 0.  5.19-6.3: the TDP root role has no guest mode bits and
    vCPU 0 holds the root, so vCPU 1 allocates nothing; 6.4+: one root in all."""
    one = rows(table(boot(), eras=["5.19", "6.4"], configs=["tdp_mmu"]))
    two = rows(table(boot(vcpus=2), eras=["5.19", "6.4"], configs=["tdp_mmu"]))
    r1, r2 = one[("5.19", "tdp_mmu")], two[("5.19", "tdp_mmu")]
    assert r2["tdp_roots_allocated"] == r1["tdp_roots_allocated"] == 8
    assert r2["roots_reused"] == r1.get("roots_reused", 0) + 8
    assert two[("6.4", "tdp_mmu")]["tdp_roots_allocated"] == 1


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_nested_round_trips_on_sixteen_vcpus_cost_the_same_per_round_trip(vendor) -> None:
    """numbers.md #20 ran 16 vCPUs.  Each vCPU's round trips do what one vCPU's do; only
    the first L2 root is created once for the VM and found by the other 15 (a reuse
    instead of a creation, priced the same)."""
    one = table(nested_ping_pong(vendor, 3))
    many = table(nested_ping_pong(vendor, 3, vcpus=16))
    for a, b in zip(one, many):
        for c in COLUMNS:
            if c in ("roots_allocated", "roots_reused"):
                continue
            assert b[c] == 16 * a[c], (a["era"], a["config"], c)
        assert (b["roots_allocated"] + b["roots_reused"]
                == 16 * (a["roots_allocated"] + a["roots_reused"]))


# ------------------------------------------------------------------------ running machinery
@pytest.mark.parametrize(("workload", "era", "config"), [
    (cr0_wp_storm(1000), "5.10", "tdp_mmu"),
    (cr0_wp_storm(1002, vcpus=3, interleave="op"), "5.10", "tdp_mmu"),
    (cr0_wp_storm(1000, vcpus=4), "5.18", "tdp_mmu"),
    (cr0_wp_storm(1000, vcpus=5, interleave="op"), "5.19", "tdp_mmu"),
    (cr0_wp_storm(1000, vcpus=2), "5.15", "shadow"),
    (cr0_wp_storm(996, vcpus=3), "4.20", "legacy"),
    (context_switch_storm(5, 41, vcpus=2), "4.19", "shadow"),
    (context_switch_storm(3, 40, vcpus=3, interleave="op"), "5.18", "shadow"),
    (nested_ping_pong("vmx", 30, vcpus=16), "4.18", "legacy"),
    (smm_round_trips(51, vcpus=2), "5.17", "npt_tdp_mmu"),
    (cpuid_update(7, vcpus=2), "5.15", "tdp_mmu"),
    (memslot_change(repeats=7, vcpus=3), "5.19", "tdp_mmu"),
    (boot(vcpus=3), "5.10", "tdp_mmu"),
])
def test_fast_forward_gives_the_full_run_with_several_vcpus(workload, era, config) -> None:
    fast = run(workload, era, config)
    full = run(workload, era, config, fast_forward=False)
    assert fast.tolist() == full.tolist()


@pytest.mark.parametrize(("workload", "era", "config"), [
    (cr0_wp_storm(1000, vcpus=1), "5.10", "tdp_mmu"),
    (cr0_wp_storm(1000, vcpus=1), "5.10", "legacy"),
    (context_switch_storm(5, 40), "4.19", "shadow"),
    (context_switch_storm(3, 40), "5.18", "shadow"),
    (nested_ping_pong("vmx", 100), "4.20", "legacy"),
    (smm_round_trips(101), "5.17", "npt_tdp_mmu"),
    (memslot_change(repeats=7), "5.19", "tdp_mmu"),
])
def test_fast_forward_gives_the_full_run(workload, era, config) -> None:
    fast = run(workload, era, config)
    full = run(workload, era, config, fast_forward=False)
    assert fast.tolist() == full.tolist()


def test_a_million_toggles_is_instant_and_exact() -> None:
    # Two vCPUs: 500,000 open/close windows, one WP=0 tree each.
    t = run(cr0_wp_storm(1_000_000), "5.10", "tdp_mmu")
    assert t[COLUMNS.index("tdp_roots_allocated")] == 500_000
    assert t[COLUMNS.index("pt_pages_rebuilt")] == 5_500_000
    one = run(cr0_wp_storm(1_000_000, vcpus=1), "5.10", "tdp_mmu")
    assert one[COLUMNS.index("tdp_roots_allocated")] == 1_000_000
    assert one[COLUMNS.index("pt_pages_rebuilt")] == 11_000_000


def test_progress_bar_runs(capsys) -> None:
    t = run(cr0_wp_storm(20), "6.4", "shadow", fast_forward=False, progress=True)
    assert t[COLUMNS.index("exits")] == 20


def test_table_has_no_tdp_mmu_rows_before_5_10_and_prices_each_row() -> None:
    from mmulib.sim.cost import price

    t = table(cr0_wp_storm(4))
    assert {(str(r["era"]), str(r["config"])) for r in t if r["config"] == "tdp_mmu"} == {
        (e, "tdp_mmu") for e in ALL if e not in PRE_TDP_MMU}
    for r in t:
        on, off = price(np.array([r[c] for c in COLUMNS]))
        assert (r["cycles"], r["cycles_off_vcpu"]) == pytest.approx((on, off))


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="multiple of 2 x vcpus = 2"):
        cr0_wp_storm(3, vcpus=1)
    with pytest.raises(ValueError, match="multiple of 2 x vcpus = 6"):
        cr0_wp_storm(8, vcpus=3)
    with pytest.raises(ValueError, match="positive integer"):
        cr0_wp_storm(4, vcpus=0)
    with pytest.raises(ValueError, match="unknown interleave 'random'"):
        boot(vcpus=2, interleave="random")
    with pytest.raises(ValueError, match="unknown config"):
        run(cr0_wp_storm(4), "5.10", "ept")
    with pytest.raises(ValueError, match="vendor"):
        nested_ping_pong("tdx")


def test_sim_modules_import_no_jupyter_tqdm_or_matplotlib() -> None:
    code = textwrap.dedent("""
        import json, sys
        import mmulib.sim.workloads, mmulib.sim.cost, mmulib.sim.compare
        bad = ("IPython", "ipywidgets", "graphviz", "tqdm", "matplotlib")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in bad)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_compare_eras_returns_a_table_and_a_chart() -> None:
    from matplotlib.figure import Figure

    from mmulib.sim.compare import calibration_chart, compare_eras, ssdd_by_era

    c = compare_eras("cr0_wp_storm", metric="reset_context", toggles=12)
    assert isinstance(c.figure, Figure)
    assert list(c.table.dtype.names) == ["era", "legacy", "tdp_mmu", "shadow"]
    by_era = {str(r["era"]): r for r in c.table}
    assert np.isnan(by_era["4.20"]["tdp_mmu"]) and by_era["5.10"]["tdp_mmu"] == 12
    assert by_era["6.4"]["legacy"] == 0 and by_era["6.4"]["shadow"] == 12
    s = ssdd_by_era(eras=["5.10", "6.4"], chart=False)
    assert s.figure is None and s.table["tdp_mmu"][1] == pytest.approx(s.table["legacy"][1])
    rows_, fig = calibration_chart()
    assert isinstance(fig, Figure) and len(rows_) > 8
