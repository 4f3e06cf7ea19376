"""Exact event logs of the simulator, derived by hand from each era's kernel source.

Every expected list below was written from the kernel tree of the era (README, "Where the
facts come from"), following the function path named in the comment above it; nothing is
copied from mmulib's output.  Events are compared as ``(name, key fields...)`` tuples
(``test_sim_support.KEY_FIELDS``), op by op, and the final ``root``/``prev_roots`` of each
context are compared as ``final_state`` prints them.  Role words are bit arithmetic on the
``test_roles_exact`` constants.

This file: CR0.WP toggles (shadow, EPT, NPT; 5.10, 5.19, 6.4, and 5.10 with the CR0.WP
backport), CR3 cycling over 2-6 address spaces in every era, a PAE CR3 switch, the boot
sequence real mode -> protected -> PAE -> long mode, and the literal KVM_MMU_ROOTS_ALL.
SMM, nested entry/exit, CPUID and memslots are in ``test_sim_events_more.py``.

Paths used throughout (file names: ``arch/x86/kvm/mmu.c`` for 4.x, ``mmu/mmu.c`` from 5.10):

* VM entry: ``vcpu_enter_guest`` -> ``kvm_mmu_reload`` -> ``kvm_mmu_load`` when the current
  root is invalid -> ``mmu_alloc_direct_roots`` / ``mmu_alloc_shadow_roots`` ->
  ``kvm_mmu_get_page`` (``mmu_alloc_root``), or ``kvm_tdp_mmu_get_vcpu_root_hpa`` for the TDP
  MMU (which traces ``kvm_mmu_get_page`` from 5.15, ``tdp_mmu_init_sp``).
* ``kvm_mmu_reset_context`` = ``kvm_mmu_unload`` (``kvm_mmu_free_roots`` on root_mmu and
  guest_mmu with KVM_MMU_ROOTS_ALL; nothing is logged for an MMU with no valid root: the
  quick exit at the top of ``kvm_mmu_free_roots``) + ``kvm_init_mmu``.
"""

from __future__ import annotations

import pytest

from test_sim_support import (
    ACC_ALL,
    CR0_64,
    CR0_64_NOWP,
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE_BIT,
    DIRECT,
    EFER_LME,
    EFER_NX,
    GPTE_IS_8_BYTES,
    INV,
    L1_64,
    NO_EXIT,
    NX,
    PT32_ROOT_LEVEL,
    PT64_ROOT_4LEVEL,
    UNLOAD,
    WP,
    assert_logs,
    direct_pae_gfns,
    entry,
    exit_,
    free,
    get_page,
    init,
    load,
    pae_pages,
    reset,
    roots,
    run,
    sp,
    switch,
    tdp,
    tdp_free,
    tdp_get,
)

ALL = 0xF  # KVM_MMU_ROOTS_ALL as far as kvm_mmu_free_roots can see (see ROOT_MASK_BITS)
CUR = 0x1  # KVM_MMU_ROOT_CURRENT
L4 = PT64_ROOT_4LEVEL
WP_OFF_ON = [{"op": "run"}, {"op": "mov_cr0", "value": CR0_64_NOWP},
             {"op": "mov_cr0", "value": CR0_64}]

# Root page roles of the 64-bit L1 (WP=1, NX=1, PAE) per era, with and without CR0.WP.
# 5.10 shadow: kvm_calc_shadow_mmu_root_page_role -> access, nxe, cr0_wp, gpte_is_8_bytes=is_pae,
# level 4 (is_long_mode), direct 0; kvm_mmu_get_page keeps them.
SHADOW_5_10 = L4 | GPTE_IS_8_BYTES | ACC_ALL | NX | WP
# 5.10 TDP: kvm_calc_tdp_mmu_root_page_role -> access, nxe, cr0_wp from the guest, level, direct;
# kvm_mmu_get_page (legacy) and page_role_for_level (TDP MMU) force gpte_is_8_bytes = 1.
TDP_5_10 = L4 | GPTE_IS_8_BYTES | DIRECT | ACC_ALL | NX | WP
# 5.19+ shadow: kvm_init_shadow_mmu -> root_role = cpu_role.base (access, efer_nx, cr0_wp,
# has_4_byte_gpte = 0, level 4) with efer_nx forced to 1.
SHADOW_5_19 = L4 | ACC_ALL | NX | WP
# 5.19+ TDP: kvm_calc_tdp_mmu_root_page_role forces cr0_wp = efer_nx = 1: WP never changes it.
TDP_5_19 = L4 | DIRECT | ACC_ALL | NX | WP


def _shadow_wp_log(caller: str, on: int, off: int) -> list[list[tuple]]:
    """Shadow paging, any era: every WP flip is an RC and a different root role."""
    return [
        [get_page(0x100, on, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), reset(caller), UNLOAD, free("root_mmu", ALL, "root"),
         init("kvm_mmu_reset_context", "kvm_init_shadow_mmu", "root_mmu", True),
         get_page(0x100, off, L4, True), load("root_mmu"), entry("root_mmu")],
        # back to WP=1: the first root's page is still in mmu_page_hash (root_count 0 and not
        # invalid, mmu_free_root_page only drops the count), so it is found, not created
        [exit_("cr0", CR0_64), reset(caller), UNLOAD, free("root_mmu", ALL, "root"),
         init("kvm_mmu_reset_context", "kvm_init_shadow_mmu", "root_mmu", True),
         get_page(0x100, on, L4, False), load("root_mmu"), entry("root_mmu")],
    ]


# ---------------------------------------------------------------------------------------------
# CR0.WP toggles


@pytest.mark.parametrize("backport", ["none", "no_unload", "full"])
def test_wp_toggle_shadow_5_10_resets_every_time(backport):
    # 5.10 x86.c kvm_set_cr0: (cr0 ^ old_cr0) & (PG | WP) -> kvm_mmu_reset_context.  The 6.4
    # change (and its backport) only spares TDP and only VMX+EPT owns CR0.WP, so a shadow MMU
    # resets whatever is backported (6.4 x86.c kvm_post_set_cr0 falls through when
    # !tdp_enabled; vmx_l1_guest_owned_cr0_bits drops WP when !enable_ept).
    r = run("5.10", "none", WP_OFF_ON, L1_64, cr0_wp_backport=backport)
    assert_logs(r, _shadow_wp_log("kvm_set_cr0", SHADOW_5_10, SHADOW_5_10 & ~WP))
    assert roots(r, "root_mmu") == (sp(0x100, SHADOW_5_10), [INV, INV, INV])


@pytest.mark.parametrize("kernel", ["5.19", "6.4"])
def test_wp_toggle_shadow_5_19_and_6_4_reset(kernel):
    # 5.19 kvm_post_set_cr0: KVM_MMU_CR0_ROLE_BITS -> RC.  6.4 kvm_post_set_cr0: WP-only with
    # PG=1 and !tdp_enabled falls through to the same RC.
    r = run(kernel, "none", WP_OFF_ON, L1_64)
    assert_logs(r, _shadow_wp_log("kvm_post_set_cr0", SHADOW_5_19, SHADOW_5_19 & ~WP))


@pytest.mark.parametrize("tdp_kind", ["ept", "npt"])
def test_wp_toggle_5_10_legacy_tdp_root_changes_role(tdp_kind):
    # 5.10, tdp_mmu off (its default, tdp_mmu.c): the direct root's role carries the guest's
    # WP, so the RC's init_kvm_tdp_mmu re-inits and mmu_alloc_direct_roots asks
    # kvm_mmu_get_page(gfn 0, level 4, direct) for a role without WP: a new page.  Flipping
    # back finds the first page in the hash.  NPT: SVM's selective CR0 write intercept
    # (bits other than TS/MP) makes the write exit as VMX does.
    r = run("5.10", tdp_kind, WP_OFF_ON, L1_64)
    off = TDP_5_10 & ~WP
    assert_logs(r, [
        [get_page(0, TDP_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), reset("kvm_set_cr0"), UNLOAD, free("root_mmu", ALL, "root"),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         get_page(0, off, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64), reset("kvm_set_cr0"), UNLOAD, free("root_mmu", ALL, "root"),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         get_page(0, TDP_5_10, L4, False), load("root_mmu"), entry("root_mmu")],
    ])
    assert roots(r, "root_mmu") == (sp(0, TDP_5_10), [INV, INV, INV])


def test_wp_toggle_5_10_tdp_mmu_tears_the_tree_down_each_time():
    # 5.10 with tdp_mmu=1: mmu_alloc_direct_roots -> kvm_tdp_mmu_get_vcpu_root_hpa ->
    # get_tdp_mmu_vcpu_root (no trace of the root in 5.10).  The RC's mmu_free_root_page ->
    # kvm_mmu_put_root reaches 0 -> kvm_tdp_mmu_free_root (list_del, zap_gfn_range, free),
    # and the new role (WP=0) allocates a fresh root.
    r = run("5.10", "ept", WP_OFF_ON, L1_64, tdp_mmu=True)
    off = TDP_5_10 & ~WP
    assert_logs(r, [
        [tdp_get(TDP_5_10, False, 1), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), reset("kvm_set_cr0"), UNLOAD, free("root_mmu", ALL, "root"),
         tdp_free(TDP_5_10),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         tdp_get(off, False, 1), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64), reset("kvm_set_cr0"), UNLOAD, free("root_mmu", ALL, "root"),
         tdp_free(off),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         tdp_get(TDP_5_10, False, 1), load("root_mmu"), entry("root_mmu")],
    ])
    assert roots(r, "root_mmu") == (tdp(TDP_5_10), [INV, INV, INV])
    assert r.final["tdp_mmu_roots"] == [
        {"role": TDP_5_10, "refcount": 1, "invalid": False, "level": 4}]


@pytest.mark.parametrize("tdp_kind", ["ept", "npt"])
def test_wp_toggle_5_10_backport_no_unload_keeps_the_root(tdp_kind):
    # The 5.10 backport of 01b31714bd90 (modelled on the form in the 6.3.8 tree, x86.c
    # kvm_post_set_cr0: tdp_enabled && (cr0 ^ old_cr0) == WP -> kvm_init_mmu, return):
    # init_kvm_tdp_mmu re-inits (mmu_role has WP) but nothing is freed, so VM entry finds the
    # current root valid (kvm_mmu_reload) and loads nothing.  The root keeps its WP=1 role.
    r = run("5.10", tdp_kind, WP_OFF_ON, L1_64, cr0_wp_backport="no_unload")
    wp_only = [("kvm_post_set_cr0", "kvm_init_mmu"),
               init("kvm_post_set_cr0", "init_kvm_tdp_mmu", "root_mmu", True), entry("root_mmu")]
    assert_logs(r, [
        [get_page(0, TDP_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), *wp_only],
        [exit_("cr0", CR0_64), *wp_only],
    ])
    assert roots(r, "root_mmu") == (sp(0, TDP_5_10), [INV, INV, INV])


def test_wp_toggle_5_10_backport_full_vmx_does_not_exit():
    # "full" adds fb509f76acc8 (VMX: CR0.WP guest-owned when enable_ept,
    # vmx_l1_guest_owned_cr0_bits in 6.4 vmx/vmx.h): the MOV CR0 never reaches KVM.
    r = run("5.10", "ept", WP_OFF_ON, L1_64, cr0_wp_backport="full")
    assert_logs(r, [
        [get_page(0, TDP_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [NO_EXIT, entry("root_mmu")],
        [NO_EXIT, entry("root_mmu")],
    ])


def test_wp_toggle_5_10_backport_full_svm_still_exits_but_keeps_the_root():
    # SVM has no guest-owned CR0.WP: the selective CR0 intercept exits, then the backported
    # kvm_post_set_cr0 rule (init only) applies.
    r = run("5.10", "npt", WP_OFF_ON, L1_64, cr0_wp_backport="full")
    wp_only = [("kvm_post_set_cr0", "kvm_init_mmu"),
               init("kvm_post_set_cr0", "init_kvm_tdp_mmu", "root_mmu", True), entry("root_mmu")]
    assert_logs(r, [
        [get_page(0, TDP_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), *wp_only],
        [exit_("cr0", CR0_64), *wp_only],
    ])


@pytest.mark.parametrize("tdp_kind", ["ept", "npt"])
def test_wp_toggle_5_19_tdp_mmu_root_role_unchanged_but_rebuilt(tdp_kind):
    # 5.19 kvm_post_set_cr0 -> RC.  The root role has WP forced to 1, so init_kvm_tdp_mmu
    # re-inits only because cpu_role changed.  kvm_mmu_unload's put is the last reference:
    # 5.19 tdp_mmu.c kvm_tdp_mmu_put_root marks the root invalid and queues the zap
    # (tdp_mmu_zap_wq), so kvm_tdp_mmu_get_vcpu_root_hpa's role compare cannot match it and a
    # new root with the same role is allocated (and traced by tdp_mmu_init_sp).
    r = run("5.19", tdp_kind, WP_OFF_ON, L1_64)
    rebuild = [UNLOAD, free("root_mmu", ALL, "root"), tdp_free(TDP_5_19),
               init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
               tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
               entry("root_mmu")]
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), reset("kvm_post_set_cr0"), *rebuild],
        [exit_("cr0", CR0_64), reset("kvm_post_set_cr0"), *rebuild],
    ])
    assert r.final["tdp_mmu_roots"] == [
        {"role": TDP_5_19, "refcount": 1, "invalid": False, "level": 4}]


def test_wp_toggle_6_4_ept_does_not_exit():
    # 6.4 vmx/vmx.h vmx_l1_guest_owned_cr0_bits: KVM_POSSIBLE_CR0_GUEST_BITS (TS|WP) with EPT.
    # The TDP MMU root starts with refcount 2 (6.4 tdp_mmu.c kvm_tdp_mmu_get_vcpu_root_hpa).
    r = run("6.4", "ept", WP_OFF_ON, L1_64)
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 2), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [NO_EXIT, entry("root_mmu")],
        [NO_EXIT, entry("root_mmu")],
    ])


@pytest.mark.parametrize("tdp_mmu", [True, False])
def test_wp_toggle_6_4_npt_inits_only(tdp_mmu):
    # 6.4 x86.c kvm_post_set_cr0: (cr0 ^ old_cr0) == WP, PG=1, tdp_enabled -> kvm_init_mmu and
    # return; cpu_role.base.cr0_wp changed, so init_kvm_tdp_mmu re-inits; no root is freed.
    r = run("6.4", "npt", WP_OFF_ON, L1_64, tdp_mmu=tdp_mmu)
    first = ([tdp_get(TDP_5_19, False, 2), get_page(0, TDP_5_19, L4, True)] if tdp_mmu
             else [get_page(0, TDP_5_19, L4, True)])
    wp_only = [("kvm_post_set_cr0", "kvm_init_mmu"),
               init("kvm_post_set_cr0", "init_kvm_tdp_mmu", "root_mmu", True), entry("root_mmu")]
    assert_logs(r, [
        [*first, load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_64_NOWP), *wp_only],
        [exit_("cr0", CR0_64), *wp_only],
    ])
    assert roots(r, "root_mmu") == (tdp(TDP_5_19) if tdp_mmu else sp(0, TDP_5_19),
                                    [INV, INV, INV])


NONPAGING_WP = CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE  # protected mode, paging off


@pytest.mark.parametrize("kernel", ["5.19", "6.4"])
def test_wp_toggle_with_paging_off(kernel):
    # 6.4 kvm_post_set_cr0: WP-only with CR0.PG=0 returns before anything (Mathias Krause's
    # "ignore CR0.WP toggles in non-paging mode"), even for shadow paging.  5.19 resets; the
    # cpu_role of a non-paging guest has no WP (kvm_calc_cpu_role returns early), so the
    # re-init is skipped.  Roots: kvm_init_shadow_mmu, level max(0, PAE) = 3, direct, efer_nx
    # forced: four level-2 direct pages at gfn i << 18 (mmu_alloc_direct_roots).
    role = PT32_ROOT_LEVEL | DIRECT | ACC_ALL | NX
    sregs = {"cr0": NONPAGING_WP, "cr3": 0, "cr4": 0, "efer": 0}
    r = run(kernel, "none", [{"op": "run"}, {"op": "mov_cr0", "value": NONPAGING_WP & ~CR0_WP}],
            sregs)
    first = [*pae_pages(direct_pae_gfns(), role, True), load("root_mmu"), entry("root_mmu")]
    if kernel == "6.4":
        second = [exit_("cr0", NONPAGING_WP & ~CR0_WP), ("kvm_post_set_cr0", "nothing"),
                  entry("root_mmu")]
    else:
        second = [exit_("cr0", NONPAGING_WP & ~CR0_WP), reset("kvm_post_set_cr0"), UNLOAD,
                  free("root_mmu", ALL, "root"),
                  init("kvm_mmu_reset_context", "kvm_init_shadow_mmu", "root_mmu", False),
                  *pae_pages(direct_pae_gfns(), role, False), load("root_mmu"),
                  entry("root_mmu")]
    assert_logs(r, [first, second])


# ---------------------------------------------------------------------------------------------
# CR3 cycling: a 64-bit guest under shadow paging writes CR3 round-robin over N address spaces
# (A B ... then A B ... again, then A), page tables at 0x100000 + 0x1000 * i.
#
# 4.18 (mmu.c kvm_mmu_new_cr3 -> kvm_mmu_free_roots): no cache; every switch drops the one
#   root (root_count-- , the page stays in the hash) and VM entry looks the new one up again.
# 4.19/4.20 (kvm_mmu_new_cr3 -> fast_cr3_switch -> cached_root_available): always push the
#   current root as prev_roots[0] (with the old CR3, get_cr3 is read before arch.cr3 is
#   written), rotate, stop at the first match; on a miss the LRU entry ends up in root_hpa and
#   __kvm_mmu_new_cr3 frees it (KVM_MMU_ROOT_CURRENT).
# 5.10-5.17 (kvm_mmu_new_pgd -> fast_pgd_switch -> cached_root_available): the same after an
#   "is the current root usable" check; 5.18+ (cached_root_find_and_keep_current) frees the LRU
#   itself.  For distinct CR3s all three log the same: round robin over N <= 4 spaces hits
#   prev_roots[N - 2] every time once warm; N >= 5 misses and evicts every time.
# 5.15 is different, see test_cr3_cycle_5_15_frees_prev_roots_on_every_mov_cr3.

ERAS_WITH_CACHE = ("4.19", "4.20", "5.10", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18")


def shadow64_role(era: str) -> int:
    """Root role of the 64-bit WP=1 NX=1 guest under shadow paging (4.18 ... 6.18)."""
    # bit 4: cr4_pae (4.x) / gpte_is_8_bytes (5.10, 5.15) = 1 for a PAE-format guest;
    # has_4_byte_gpte (5.17+) = 0.  All eras: access ACC_ALL, nxe/efer_nx, cr0_wp, level 4.
    bit4 = GPTE_IS_8_BYTES if era in ("4.18", "4.19", "4.20", "5.10", "5.15") else 0
    return L4 | bit4 | ACC_ALL | NX | WP


def _cycle(n: int) -> tuple[list[int], list[int]]:
    cr3s = [0x100000 + 0x1000 * i for i in range(n)]
    return cr3s, cr3s[1:] + cr3s + [cr3s[0]]


def _cycle_run(kernel: str, n: int):
    cr3s, seq = _cycle(n)
    ops = [{"op": "run"}] + [{"op": "mov_cr3", "value": c} for c in seq]
    return run(kernel, "none", ops, {**L1_64, "cr3": cr3s[0]})


def _ctx(era: str) -> str:
    return "mmu" if era in ("4.18", "4.19") else "root_mmu"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_cr3_cycle_4_18_has_no_cache(n):
    cr3s, seq = _cycle(n)
    role = shadow64_role("4.18")
    r = _cycle_run("4.18", n)
    expected = [[get_page(cr3s[0] >> 12, role, L4, True), load("mmu"), entry("mmu")]]
    seen = {cr3s[0]}
    for c in seq:
        # 4.18 x86.c kvm_set_cr3: new CR3 -> arch.cr3, kvm_mmu_new_cr3 -> kvm_mmu_free_roots
        expected.append([exit_("cr3", c), switch("mmu", c, False, None), free("mmu", None, "root"),
                         get_page(c >> 12, role, L4, c not in seen), load("mmu"), entry("mmu")])
        seen.add(c)
    assert_logs(r, expected)
    assert roots(r, "mmu") == (sp(cr3s[0] >> 12, role), [INV, INV, INV])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("kernel", ERAS_WITH_CACHE)
def test_cr3_cycle_hits_mru_order_and_evictions(kernel, n):
    cr3s, seq = _cycle(n)
    ctx, role = _ctx(kernel), shadow64_role(kernel)
    r = _cycle_run(kernel, n)
    expected = [[get_page(cr3s[0] >> 12, role, L4, True), load(ctx), entry(ctx)]]
    for i, c in enumerate(seq):
        first_round = i < n - 1
        if first_round:
            # miss; from the 5th space on the LRU slot holds a valid root, which is freed
            evict = [free(ctx, CUR, "root")] if i + 1 >= 4 else []
            expected.append([exit_("cr3", c), switch(ctx, c, False, None), *evict,
                             get_page(c >> 12, role, L4, True), load(ctx), entry(ctx)])
        elif n <= 4:
            # warm: the target is always the oldest of the N-1 cached roots, prev_roots[N-2];
            # KVM_REQ_LOAD_MMU_PGD (LOAD_CR3 in 4.x) and no load at VM entry
            expected.append([exit_("cr3", c), switch(ctx, c, True, n - 2), entry(ctx)])
        else:
            # thrash: miss, evict the LRU, find the page again in mmu_page_hash
            expected.append([exit_("cr3", c), switch(ctx, c, False, None),
                             free(ctx, CUR, "root"), get_page(c >> 12, role, L4, False),
                             load(ctx), entry(ctx)])
    assert_logs(r, expected)
    # Last switch was to A: prev_roots hold the others, most recent first (C | 0 1 2 tables of
    # cached_root_find_and_keep_current), padded with invalid slots.
    prev = [sp(c >> 12, role, c) for c in reversed(cr3s[1:])][:3]
    assert roots(r, ctx) == (sp(cr3s[0] >> 12, role), prev + [INV] * (3 - len(prev)))


@pytest.mark.parametrize("n", [2, 5])
def test_cr3_cycle_5_15_frees_prev_roots_on_every_mov_cr3(n):
    # 5.15.0 (sndrzt) and 5.15.55 (wowk) x86.c kvm_set_cr3 -> handle_tlb_flush: !NOFLUSH ->
    # kvm_invalidate_pcid(vcpu, pcid = 0).  Its loop compares kvm_get_pcid(prev_roots[i].pgd),
    # which is 0 with CR4.PCIDE=0, against 0 for every slot, so roots_to_free = PREVIOUS(0..2)
    # and kvm_mmu_free_roots frees the root kvm_mmu_new_pgd just pushed.  The 5.17 tree adds
    # "if (!kvm_read_cr4_bits(vcpu, X86_CR4_PCIDE)) return;" before that loop.  So in 5.15 the
    # cache never holds anything across a MOV CR3: no hits, no LRU evictions.
    cr3s, seq = _cycle(n)
    role = shadow64_role("5.15")
    r = _cycle_run("5.15", n)
    expected = [[get_page(cr3s[0] >> 12, role, L4, True), load("root_mmu"), entry("root_mmu")]]
    seen = {cr3s[0]}
    for c in seq:
        expected.append([exit_("cr3", c), switch("root_mmu", c, False, None),
                         free("root_mmu", 0xE, "prev_roots[0]"),
                         get_page(c >> 12, role, L4, c not in seen), load("root_mmu"),
                         entry("root_mmu")])
        seen.add(c)
    assert_logs(r, expected)
    assert roots(r, "root_mmu") == (sp(cr3s[0] >> 12, role), [INV, INV, INV])


@pytest.mark.parametrize("kernel", ["4.20", "5.10", "5.17", "6.18"])
def test_cr3_mru_order(kernel):
    # A B C D fill the cache (D | C B A); B hits prev_roots[1] -> B | D C A; D hits
    # prev_roots[0] -> D | B C A; E misses and evicts A -> E | D B C; A misses, evicts C and
    # finds A's page in the hash; C misses, evicts B -> C | A E D.
    role, ctx = shadow64_role(kernel), _ctx(kernel)
    a, b, c, d, e = (0x100000 + 0x1000 * i for i in range(5))
    r = run(kernel, "none", [{"op": "run"}] + [{"op": "mov_cr3", "value": x}
                                               for x in (b, c, d, b, d, e, a, c)], L1_64)

    def miss(x, created, evict):
        return [exit_("cr3", x), switch(ctx, x, False, None),
                *([free(ctx, CUR, "root")] if evict else []),
                get_page(x >> 12, role, L4, created), load(ctx), entry(ctx)]

    assert_logs(r, [
        [get_page(a >> 12, role, L4, True), load(ctx), entry(ctx)],
        miss(b, True, False), miss(c, True, False), miss(d, True, False),
        [exit_("cr3", b), switch(ctx, b, True, 1), entry(ctx)],
        [exit_("cr3", d), switch(ctx, d, True, 0), entry(ctx)],
        miss(e, True, True), miss(a, False, True), miss(c, False, True),
    ])
    assert roots(r, ctx) == (sp(c >> 12, role), [sp(a >> 12, role, a), sp(e >> 12, role, e),
                                                 sp(d >> 12, role, d)])


# A PAE guest (CR4.PAE, EFER.LME=0): KVM shadows it with a PAE-level root, pae_root, whose four
# level-2 pages shadow the pages the PDPTEs name (the model's guest layout: PDPTE i -> gfn
# (CR3 >> 12) + 1 + i).  Such a root has no shadow page at root.hpa and is never cached.
PAE_GUEST = {"cr0": CR0_64, "cr3": 0x100000, "cr4": CR4_PAE_BIT, "efer": EFER_NX}


def _pae_role(era: str) -> int:
    # kvm_mmu_get_page for the PAE roots (level 2, direct 0): bit 4 = gpte is 8 bytes (5.15)
    # / has_4_byte_gpte = 0 (5.17+); WP, NX from the guest (5.19 forces efer_nx, also 1 here)
    return PT32_ROOT_LEVEL | (GPTE_IS_8_BYTES if era == "5.15" else 0) | ACC_ALL | NX | WP


def _pae_switch_log(era, pre, post):
    role = _pae_role(era)
    return [
        [*pae_pages([0x101, 0x102, 0x103, 0x104], role, True), load("root_mmu"),
         entry("root_mmu")],
        [exit_("cr3", 0x200000), *pre, *post,
         *pae_pages([0x201, 0x202, 0x203, 0x204], role, True), load("root_mmu"),
         entry("root_mmu")],
        # same CR3 again: 5.15+ kvm_set_cr3 reloads the PDPTEs (is_pae_paging) but they did not
        # change and cr3 == kvm_read_cr3, so no kvm_mmu_new_pgd and no free.
        [exit_("cr3", 0x200000)],
    ]


SAME_PAE_OPS = [{"op": "run"}, {"op": "mov_cr3", "value": 0x200000},
                {"op": "mov_cr3", "value": 0x200000}]


def test_pae_cr3_switch_5_15():
    # 5.15 kvm_set_cr3: load_pdptrs (no root freeing in 5.15), then kvm_mmu_new_pgd ->
    # fast_pgd_switch refuses (root_level 3 < 4) -> __kvm_mmu_new_pgd frees CURRENT (the four
    # pae_root pages).  kvm_invalidate_pcid (no PCIDE guard in 5.15) selects every prev_root,
    # but none is valid: a 3-level root is never pushed, so kvm_mmu_free_roots quick-exits.
    r = run("5.15", "none", SAME_PAE_OPS, PAE_GUEST)
    expected = _pae_switch_log("5.15", [switch("root_mmu", 0x200000, False, None)],
                               [free("root_mmu", CUR, "root")])
    expected[2].append(entry("root_mmu"))
    assert_logs(r, expected)


def test_pae_cr3_switch_5_17_load_pdptrs_frees_first():
    # 5.17 x86.c kvm_set_cr3 -> load_pdptrs: !tdp_enabled && memcmp(mmu->pdptrs, pdpte) ->
    # kvm_mmu_free_roots(CURRENT) *before* kvm_mmu_new_pgd, whose fast_pgd_switch then
    # refuses the 3-level root and frees CURRENT again (already invalid: quick exit).
    r = run("5.17", "none", SAME_PAE_OPS, PAE_GUEST)
    expected = _pae_switch_log("5.17", [free("root_mmu", CUR, "root")],
                               [switch("root_mmu", 0x200000, False, None)])
    expected[2].append(entry("root_mmu"))
    assert_logs(r, expected)


def test_pae_cr3_switch_5_19():
    # 5.19: load_pdptrs frees CURRENT as in 5.17; kvm_mmu_new_pgd -> fast_pgd_switch then sees
    # no valid root, so cached_root_find_without_current misses and changes nothing.  (The
    # same log would come from fast_pgd_switch freeing the special root itself.)
    r = run("5.19", "none", SAME_PAE_OPS, PAE_GUEST)
    expected = _pae_switch_log("5.19", [free("root_mmu", CUR, "root")],
                               [switch("root_mmu", 0x200000, False, None)])
    expected[2].append(entry("root_mmu"))
    assert_logs(r, expected)


# ---------------------------------------------------------------------------------------------
# Boot: INIT state (CR0 = CD|NW|ET), real mode -> PE -> CR4.PAE -> CR3 -> EFER.LME|NX -> PG|WP.

BOOT = [{"op": "run"}, {"op": "mov_cr0", "value": CR0_ET | CR0_PE},
        {"op": "mov_cr4", "value": CR4_PAE_BIT}, {"op": "mov_cr3", "value": 0x100000},
        {"op": "wrmsr_efer", "value": EFER_LME | EFER_NX},
        {"op": "mov_cr0", "value": CR0_PG | CR0_WP | CR0_ET | CR0_PE}]
BOOT_CR0_LONG = CR0_PG | CR0_WP | CR0_ET | CR0_PE


def _rc(caller: str, function: str, reinit: bool) -> list[tuple]:
    return [reset(caller), UNLOAD, free("root_mmu", ALL, "root"),
            init("kvm_mmu_reset_context", function, "root_mmu", reinit)]


def test_boot_shadow_5_10():
    # Paging off: kvm_init_shadow_mmu -> nonpaging context, shadow_root_level PAE, direct:
    # mmu_alloc_direct_roots makes four level-2 direct pages (gfn i << 18).  Their role: access,
    # nxe = EFER.NX, cr0_wp = CR0.WP (both 0 at INIT), gpte_is_8_bytes forced for direct pages.
    np0 = PT32_ROOT_LEVEL | GPTE_IS_8_BYTES | DIRECT | ACC_ALL
    long_role = shadow64_role("5.10")
    gfns = direct_pae_gfns()
    r = run("5.10", "none", BOOT)
    assert_logs(r, [
        [*pae_pages(gfns, np0, True), load("root_mmu"), entry("root_mmu")],
        # kvm_set_cr0: only PE/CD/NW change, not PG|WP: no reset
        [exit_("cr0", CR0_ET | CR0_PE), entry("root_mmu")],
        # kvm_set_cr4: PAE is in mmu_role_bits -> RC; gpte_is_8_bytes and ext.cr4_pae change the
        # mmu_role (re-init) but the direct pages force gpte_is_8_bytes anyway: same pages
        [exit_("cr4", CR4_PAE_BIT), *_rc("kvm_set_cr4", "kvm_init_shadow_mmu", True),
         *pae_pages(gfns, np0, False), load("root_mmu"), entry("root_mmu")],
        # kvm_set_cr3 -> kvm_mmu_new_pgd: fast_pgd_switch needs 4-level roots -> free CURRENT
        [exit_("cr3", 0x100000), switch("root_mmu", 0x100000, False, None),
         free("root_mmu", CUR, "root"), *pae_pages(gfns, np0, False), load("root_mmu"),
         entry("root_mmu")],
        # set_efer: LME|NX written with paging off; only NX is a reset bit in 5.10
        [exit_("efer", EFER_LME | EFER_NX), *_rc("set_efer", "kvm_init_shadow_mmu", True),
         *pae_pages(gfns, np0 | NX, True), load("root_mmu"), entry("root_mmu")],
        # PG|WP: RC; vmx_set_cr0 -> enter_lmode sets LMA; 64-bit shadow root at CR3
        [exit_("cr0", BOOT_CR0_LONG), *_rc("kvm_set_cr0", "kvm_init_shadow_mmu", True),
         get_page(0x100, long_role, L4, True), load("root_mmu"), entry("root_mmu")],
    ])
    assert r.final["efer"] == EFER_LME | EFER_NX | (1 << 10)  # LMA set by enter_lmode


def test_boot_ept_5_10():
    # init_kvm_tdp_mmu, 5.10: the root role takes nxe and cr0_wp from the guest even with paging
    # off (kvm_calc_mmu_role_common); the ext role has CR4.PAE.  MOV CR3 never exits with EPT
    # (CR3 exiting is cleared when EPT is on; unrestricted guest).
    t0 = L4 | GPTE_IS_8_BYTES | DIRECT | ACC_ALL
    r = run("5.10", "ept", BOOT)
    assert_logs(r, [
        [get_page(0, t0, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_ET | CR0_PE), entry("root_mmu")],
        [exit_("cr4", CR4_PAE_BIT), *_rc("kvm_set_cr4", "init_kvm_tdp_mmu", True),
         get_page(0, t0, L4, False), load("root_mmu"), entry("root_mmu")],
        [NO_EXIT, entry("root_mmu")],
        [exit_("efer", EFER_LME | EFER_NX), *_rc("set_efer", "init_kvm_tdp_mmu", True),
         get_page(0, t0 | NX, L4, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", BOOT_CR0_LONG), *_rc("kvm_set_cr0", "init_kvm_tdp_mmu", True),
         get_page(0, t0 | NX | WP, L4, True), load("root_mmu"), entry("root_mmu")],
    ])


def test_boot_shadow_5_19():
    # 5.19 kvm_calc_cpu_role returns early with paging off (access, direct, smm, guest_mode),
    # so CR4.PAE and EFER don't change it: those RCs skip the re-init (shadow_mmu_init_context's
    # early return).  root_role: level max(0, PAE) = 3, efer_nx forced.  set_efer resets on
    # LME|NX (KVM_MMU_EFER_ROLE_BITS, 5.18+).  MOV CR3: fast_pgd_switch frees the special root
    # (no shadow page behind pae_root), then cached_root_find_without_current misses.
    np_role = PT32_ROOT_LEVEL | DIRECT | ACC_ALL | NX
    gfns = direct_pae_gfns()
    r = run("5.19", "none", BOOT)
    reload_np = [*pae_pages(gfns, np_role, False), load("root_mmu"), entry("root_mmu")]
    assert_logs(r, [
        [*pae_pages(gfns, np_role, True), load("root_mmu"), entry("root_mmu")],
        [exit_("cr0", CR0_ET | CR0_PE), entry("root_mmu")],
        [exit_("cr4", CR4_PAE_BIT), *_rc("kvm_post_set_cr4", "kvm_init_shadow_mmu", False),
         *reload_np],
        [exit_("cr3", 0x100000), free("root_mmu", CUR, "root"),
         switch("root_mmu", 0x100000, False, None), *reload_np],
        [exit_("efer", EFER_LME | EFER_NX), *_rc("set_efer", "kvm_init_shadow_mmu", False),
         *reload_np],
        [exit_("cr0", BOOT_CR0_LONG), *_rc("kvm_post_set_cr0", "kvm_init_shadow_mmu", True),
         get_page(0x100, SHADOW_5_19, L4, True), load("root_mmu"), entry("root_mmu")],
    ])


def test_boot_ept_5_19_rebuilds_the_same_root_three_times():
    # 5.19: the TDP root role never changes (WP and NX forced), but each RC's unload drops the
    # last reference and kvm_tdp_mmu_put_root invalidates the root, so a new one is allocated.
    r = run("5.19", "ept", BOOT)
    fresh = [tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
             entry("root_mmu")]
    teardown = [UNLOAD, free("root_mmu", ALL, "root"), tdp_free(TDP_5_19)]
    assert_logs(r, [
        fresh,
        [exit_("cr0", CR0_ET | CR0_PE), entry("root_mmu")],
        [exit_("cr4", CR4_PAE_BIT), reset("kvm_post_set_cr4"), *teardown,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", False), *fresh],
        [NO_EXIT, entry("root_mmu")],
        [exit_("efer", EFER_LME | EFER_NX), reset("set_efer"), *teardown,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", False), *fresh],
        [exit_("cr0", BOOT_CR0_LONG), reset("kvm_post_set_cr0"), *teardown,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True), *fresh],
    ])


def test_boot_ept_6_18_keeps_the_root():
    # 6.4+ (edbdb43fc96b, 6.19 tree tdp_mmu.c): a new root holds two references (vCPU + the
    # TDP MMU's own); the RC's put leaves 1, the root stays valid on tdp_mmu_roots and
    # kvm_tdp_mmu_alloc_root finds it again by role: reused, no new trace.
    r = run("6.18", "ept", BOOT)
    again = [tdp_get(TDP_5_19, True, 2), load("root_mmu"), entry("root_mmu")]
    drop = [UNLOAD, free("root_mmu", ALL, "root")]
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 2), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [exit_("cr0", CR0_ET | CR0_PE), entry("root_mmu")],
        [exit_("cr4", CR4_PAE_BIT), reset("kvm_post_set_cr4"), *drop,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", False), *again],
        [NO_EXIT, entry("root_mmu")],
        [exit_("efer", EFER_LME | EFER_NX), reset("set_efer"), *drop,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", False), *again],
        [exit_("cr0", BOOT_CR0_LONG), reset("kvm_post_set_cr0"), *drop,
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True), *again],
    ])
    assert r.final["tdp_mmu_roots"] == [
        {"role": TDP_5_19, "refcount": 2, "invalid": False, "level": 4}]


# ---------------------------------------------------------------------------------------------
# The literal mask kvm_mmu_unload passes.

_ROOTS_ALL_LITERAL = {
    # kvm_host.h: #define KVM_MMU_ROOTS_ALL (~0UL) in 4.19, 4.20, 5.10, 5.15, 5.17, 5.18, 5.19;
    # (BIT(1 + KVM_MMU_NUM_PREV_ROOTS) - 1) = 0xf in 6.4, 6.14, 6.19.
    **{k: (1 << 64) - 1 for k in ("4.19", "4.20", "5.10", "5.15", "5.17", "5.18", "5.19")},
    **{k: 0xF for k in ("6.4", "6.14", "6.18")},
}


@pytest.mark.parametrize("kernel", list(_ROOTS_ALL_LITERAL))
def test_unload_passes_kvm_mmu_roots_all(kernel):
    r = run(kernel, "none", WP_OFF_ON[:2], L1_64)
    masks = [e.get("mask") for e in r.per_op[1] if e.name == "kvm_mmu_free_roots"]
    assert masks == [_ROOTS_ALL_LITERAL[kernel]]


# ---------------------------------------------------------------------------------------------
# CR4.PCIDE=1: MOV CR3 without NOFLUSH frees the prev_roots of the same PCID; NOFLUSH keeps them.


@pytest.mark.parametrize("kernel", ["5.17", "5.19", "6.18"])
def test_pcid_flush_frees_same_pcid_prev_roots_and_noflush_hits(kernel):
    # 5.17+ x86.c kvm_set_cr3 -> kvm_invalidate_pcid(pcid) unless NOFLUSH; with CR4.PCIDE it
    # selects every prev_roots[i] whose *pgd* carries that PCID, valid or not, and
    # kvm_mmu_free_roots frees the valid ones.  Unused slots are KVM_MMU_ROOT_INFO_INVALID
    # (pgd 0, so PCID 0).
    role = shadow64_role(kernel)
    noflush = 1 << 63
    r = run(kernel, "none", [{"op": "run"}, {"op": "mov_cr3", "value": 0x101001},
                             {"op": "mov_cr3", "value": 0x102000},
                             {"op": "mov_cr3", "value": 0x101001 | noflush}],
            {**L1_64, "cr4": CR4_PAE_BIT | (1 << 17)})
    assert_logs(r, [
        [get_page(0x100, role, L4, True), load("root_mmu"), entry("root_mmu")],
        # A (PCID 0) pushed; kvm_invalidate_pcid(1) matches nothing (A and the unused slots
        # carry PCID 0): no free
        [exit_("cr3", 0x101001), switch("root_mmu", 0x101001, False, None),
         get_page(0x101, role, L4, True), load("root_mmu"), entry("root_mmu")],
        # B pushed: B | A | unused.  kvm_invalidate_pcid(0): PREVIOUS(1) (A) and PREVIOUS(2)
        # (unused, pgd 0): mask 0xc, only A is valid
        [exit_("cr3", 0x102000), switch("root_mmu", 0x102000, False, None),
         free("root_mmu", 0xC, "prev_roots[1]"), get_page(0x102, role, L4, True),
         load("root_mmu"), entry("root_mmu")],
        # NOFLUSH (bit 63 stripped before kvm_mmu_new_pgd): B hits prev_roots[0], no flush
        [exit_("cr3", 0x101001 | noflush), switch("root_mmu", 0x101001, True, 0),
         entry("root_mmu")],
    ])
    assert roots(r, "root_mmu") == (sp(0x101, role), [sp(0x102, role, 0x102000), INV, INV])
