"""Exact event logs, part 2: SMI/RSM, nested VMX and SVM entry/exit, CPUID, memslots.

Same method as ``test_sim_events.py``: each expected list is written from the era's kernel
source along the path named in the comment, compared as ``(name, key fields...)`` tuples
(``test_sim_support.KEY_FIELDS``).  Tests marked ``xfail(strict=True)`` hold the kernel's
behaviour where the model differs; each reason names the reported model bug.
"""

from __future__ import annotations

import pytest

from mmulib.sim import counters_of
from mmulib.sim.replay import ReplayError
from test_roles_exact import SMAP_ANDNOT_WP
from test_sim_support import (
    ACC_ALL,
    CR0_64,
    CR4_PAE_BIT,
    CR4_VMXE_BIT,
    CR4_PAE,
    DIRECT,
    EFER_64,
    EFER_SVME,
    GPTE_IS_8_BYTES,
    GUEST_MODE,
    INV,
    INVALID,
    L1_64,
    NX,
    PT32_ROOT_LEVEL,
    PT64_ROOT_4LEVEL,
    SMM,
    UNLOAD,
    WP,
    assert_logs,
    direct_pae_gfns,
    entry,
    free,
    get_page,
    init,
    init_ept,
    load,
    pae_pages,
    request,
    reset,
    roots,
    run,
    sp,
    switch,
    tdp,
    tdp_free,
    tdp_get,
)

ALL, CUR = 0xF, 0x1
L4 = PT64_ROOT_4LEVEL
SYNC = ("kvm_mmu_sync_roots",)
SHADOW_5_10 = L4 | GPTE_IS_8_BYTES | ACC_ALL | NX | WP
SHADOW_4_20 = L4 | CR4_PAE | ACC_ALL | NX | WP  # kvm_mmu_get_page: masked base + level, access
TDP_5_10 = L4 | GPTE_IS_8_BYTES | DIRECT | ACC_ALL | NX | WP
TDP_5_19 = L4 | DIRECT | ACC_ALL | NX | WP  # cr0_wp and efer_nx forced to 1 (5.19+)
SMI_RSM = [{"op": "run"}, {"op": "smi"}, {"op": "rsm"}]


def _rc(caller: str, function: str, reinit: bool, freed: bool = False) -> list[tuple]:
    """kvm_mmu_reset_context; the free record appears only if a root was still valid."""
    return [("kvm_mmu_reset_context", caller), UNLOAD,
            *([free("root_mmu", ALL, "root")] if freed else []),
            init("kvm_mmu_reset_context", function, "root_mmu", reinit)]


# ---------------------------------------------------------------------------------------------
# SMI / RSM.  enter_smm saves the state, then CR0 &= ~(PE|EM|TS|PG), CR4 = 0, EFER = 0 through
# the vendor hooks (no MMU work there).  RSM restores EFER (LMA masked), then
# rsm_enter_protected_mode: CR3, CR4 without PCIDE, CR0 (emulate.c 4.x-5.x, smm.c 6.x), each
# through kvm_set_* with its own reset rules.


def test_smi_rsm_shadow_5_10():
    # SMI, 5.10 x86.c enter_smm: HF_SMM_MASK set directly, one RC at the end
    # (kvm_update_cpuid_runtime has no MMU effect in 5.10).  SMM state: paging off -> direct
    # PAE-level root; role: access, cr0_wp (WP survives the CR0 mask), smm, nxe = 0 (EFER 0),
    # direct pages force gpte_is_8_bytes.
    smm_np = PT32_ROOT_LEVEL | GPTE_IS_8_BYTES | DIRECT | ACC_ALL | WP | SMM
    r = run("5.10", "none", SMI_RSM, L1_64)
    assert_logs(r, [
        [get_page(0x100, SHADOW_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [*_rc("enter_smm", "kvm_init_shadow_mmu", True, freed=True),
         *pae_pages(direct_pae_gfns(), smm_np, True), load("root_mmu"), entry("root_mmu")],
        # RSM, 5.10 emulate.c em_rsm: set_hflags clears SMM *first* -> kvm_smm_changed -> RC;
        # EFER 0 -> 0 (no change); rsm_load_state_64: EFER 0x501 -> NX -> RC; CR3 unchanged and
        # no PAE paging -> kvm_mmu_sync_roots only; CR4.PAE -> RC; CR0.PG -> RC.  Only the first
        # RC has a root to free.  VM entry finds the 64-bit root in the hash.
        [*_rc("kvm_smm_changed", "kvm_init_shadow_mmu", True, freed=True),
         *_rc("set_efer", "kvm_init_shadow_mmu", True), SYNC,
         *_rc("kvm_set_cr4", "kvm_init_shadow_mmu", True),
         *_rc("kvm_set_cr0", "kvm_init_shadow_mmu", True),
         get_page(0x100, SHADOW_5_10, L4, False), load("root_mmu"), entry("root_mmu")],
    ])


def test_smi_shadow_4_20_resets_twice():
    # 4.20 x86.c enter_smm ends with kvm_update_cpuid (cpuid.c: unconditional RC) then RC.  The
    # first sees the SMM state (re-init); the second finds the role unchanged (early return in
    # kvm_init_shadow_mmu).  4.20 direct pages force cr4_pae to 0.
    smm_np = PT32_ROOT_LEVEL | DIRECT | ACC_ALL | WP | SMM
    r = run("4.20", "none", SMI_RSM[:2], L1_64)
    assert_logs(r, [
        [get_page(0x100, SHADOW_4_20, L4, True), load("root_mmu"), entry("root_mmu")],
        [*_rc("kvm_update_cpuid", "kvm_init_shadow_mmu", True, freed=True),
         *_rc("enter_smm", "kvm_init_shadow_mmu", False),
         *pae_pages(direct_pae_gfns(), smm_np, True), load("root_mmu"), entry("root_mmu")],
    ])


def test_rsm_shadow_4_20_leaves_smm_last():
    # 4.20 emulate.c em_rsm: set_cr(0)/set_cr(4)/EFER=0 to get back to real mode, then
    # rsm_load_state_64 (EFER -> RC while still in SMM, CR3 same -> sync, CR4.PAE -> RC,
    # CR0.PG -> RC), and only then ctxt->ops->set_hflags(... & ~X86EMUL_SMM_MASK) ->
    # kvm_set_hflags -> kvm_smm_changed -> RC.  (5.10's em_rsm moved set_hflags before the
    # state load, as the 5.10 test above shows.)
    r = run("4.20", "none", SMI_RSM, L1_64)
    assert_logs(r, [
        [get_page(0x100, SHADOW_4_20, L4, True), load("root_mmu"), entry("root_mmu")],
        [*_rc("kvm_update_cpuid", "kvm_init_shadow_mmu", True, freed=True),
         *_rc("enter_smm", "kvm_init_shadow_mmu", False),
         *pae_pages(direct_pae_gfns(), PT32_ROOT_LEVEL | DIRECT | ACC_ALL | WP | SMM, True),
         load("root_mmu"), entry("root_mmu")],
        [*_rc("set_efer", "kvm_init_shadow_mmu", True, freed=True), SYNC,
         *_rc("kvm_set_cr4", "kvm_init_shadow_mmu", True),
         *_rc("kvm_set_cr0", "kvm_init_shadow_mmu", True),
         *_rc("kvm_smm_changed", "kvm_init_shadow_mmu", True),
         get_page(0x100, SHADOW_4_20, L4, False), load("root_mmu"), entry("root_mmu")],
    ])


def test_smi_rsm_ept_5_19_rebuilds_both_roots():
    # 5.19 x86.c enter_smm: kvm_smm_changed(vcpu, true) (RC with the old registers but SMM set)
    # before the state changes, then the final RC.  The TDP root role has smm = 1 in SMM.  Each
    # RC's put of the last reference invalidates the TDP MMU root (5.18-6.3).  RSM: 5.19
    # em_rsm -> emulator_exiting_smm -> kvm_smm_changed(false) first; with paging off the
    # cpu_role ignores EFER and CR4 (kvm_calc_cpu_role returns early), so those RCs skip the
    # re-init; MOV CR3 with TDP only flushes (kvm_invalidate_pcid, tdp_enabled).
    smm_tdp = TDP_5_19 | SMM
    teardown = [UNLOAD, free("root_mmu", ALL, "root")]
    r = run("5.19", "ept", SMI_RSM, L1_64)
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [reset("kvm_smm_changed"), *teardown, tdp_free(TDP_5_19),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         *_rc("enter_smm", "init_kvm_tdp_mmu", True),
         tdp_get(smm_tdp, False, 1), get_page(0, smm_tdp, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [reset("kvm_smm_changed"), *teardown, tdp_free(smm_tdp),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", True),
         *_rc("set_efer", "init_kvm_tdp_mmu", False),
         *_rc("kvm_post_set_cr4", "init_kvm_tdp_mmu", False),
         *_rc("kvm_post_set_cr0", "init_kvm_tdp_mmu", True),
         tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
    ])


def test_smi_rsm_ept_6_4_keeps_both_roots():
    # 6.4 smm.c, same order as 5.19.  edbdb43fc96b: a put cannot free a valid root (the TDP
    # MMU's own reference), so leaving SMM finds the L1 root again by role, and the SMM root
    # stays on tdp_mmu_roots with only the TDP MMU's reference (list head first: the SMM root
    # was added last).
    smm_tdp = TDP_5_19 | SMM
    r = run("6.4", "ept", SMI_RSM, L1_64)
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 2), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [*_rc("kvm_smm_changed", "init_kvm_tdp_mmu", True, freed=True),
         *_rc("enter_smm", "init_kvm_tdp_mmu", True),
         tdp_get(smm_tdp, False, 2), get_page(0, smm_tdp, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [*_rc("kvm_smm_changed", "init_kvm_tdp_mmu", True, freed=True),
         *_rc("set_efer", "init_kvm_tdp_mmu", False),
         *_rc("kvm_post_set_cr4", "init_kvm_tdp_mmu", False),
         *_rc("kvm_post_set_cr0", "init_kvm_tdp_mmu", True),
         tdp_get(TDP_5_19, True, 2), load("root_mmu"), entry("root_mmu")],
    ])
    assert r.final["tdp_mmu_roots"] == [
        {"role": smm_tdp, "refcount": 1, "invalid": False, "level": 4},
        {"role": TDP_5_19, "refcount": 2, "invalid": False, "level": 4},
    ]


# ---------------------------------------------------------------------------------------------
# Nested VMX with EPT.  L1: 64-bit, CR3 0x100000, CR4.VMXE; L2: 64-bit, CR3 0x200000; EPT12
# pointer 0x30005e (PML4 at 0x300000, write-back, 4-level walk, A/D enabled: bit 6, which is
# what nested_ept_ad_enabled reads).

EPTP = 0x300000 | (1 << 6) | (3 << 3) | 6
L1_VMX = {**L1_64, "cr4": CR4_PAE_BIT | CR4_VMXE_BIT}
VMLAUNCH = {"op": "vmlaunch", "cr0": CR0_64, "cr3": 0x200000, "cr4": CR4_PAE_BIT,
            "efer": EFER_64, "eptp": EPTP}
ENTER_VMX = ("nested_vmx_enter_non_root_mode",)
VMEXIT = ("nested_vmexit",)


def test_nested_vmx_ept_4_18_resets_on_entry_and_exit():
    # 4.18 vmx.c (one embedded struct kvm_mmu).  Entry: enter_guest_mode; prepare_vmcs02 ->
    # nested_ept_init_mmu_context: kvm_mmu_unload (drops L1's TDP root), kvm_init_shadow_ept_mmu
    # (no early return in 4.x), walk_mmu = nested_mmu; vmx_set_cr0/cr4/efer (vendor only);
    # nested_vmx_load_cr3 -> always kvm_mmu_reset_context (nothing left to free) ->
    # init_kvm_mmu -> init_kvm_nested_mmu.  VM entry: mmu_alloc_shadow_roots at EPTP >> 12.
    # Exit: leave_guest_mode; load_vmcs12_host_state -> nested_ept_uninit_mmu_context, then
    # nested_vmx_load_cr3 -> RC -> init_kvm_tdp_mmu.
    # Roles: init_kvm_tdp_mmu sets base_role.word = 0 (+ smm, guest_mode, ad_disabled); the EPT
    # context keeps that base and sets guest_mode = 1, ad_disabled = !A/D.  kvm_mmu_get_page
    # adds level, direct and access.
    tdp_role = L4 | DIRECT | ACC_ALL
    ept_role = L4 | ACC_ALL | GUEST_MODE
    enter = [ENTER_VMX, UNLOAD, free("mmu", None, "root"), init_ept("mmu", True),
             reset("nested_vmx_load_cr3"), UNLOAD,
             init("kvm_mmu_reset_context", "init_kvm_nested_mmu", "nested_mmu", True)]
    r = run("4.18", "ept", [{"op": "run"}, VMLAUNCH, {"op": "vmexit"}, VMLAUNCH], L1_VMX)
    assert_logs(r, [
        [get_page(0, tdp_role, L4, True), load("mmu"), entry("mmu")],
        [*enter, get_page(0x300, ept_role, L4, True), load("mmu"), entry("mmu")],
        [VMEXIT, reset("nested_vmx_load_cr3"), UNLOAD, free("mmu", None, "root"),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "mmu", True),
         get_page(0, tdp_role, L4, False), load("mmu"), entry("mmu")],
        [*enter, get_page(0x300, ept_role, L4, False), load("mmu"), entry("mmu")],
    ])
    assert roots(r, "mmu") == (sp(0x300, ept_role), [INV, INV, INV])


def test_nested_vmx_ept_4_19_single_mmu_swaps_through_prev_roots():
    # 4.19 (one MMU, with the cache).  Entry: kvm_init_shadow_ept_mmu ->
    # __kvm_mmu_new_cr3(EPTP, ept role) with get_cr3 still L1's: the TDP root is pushed as
    # {L1 CR3, root} and the EPT root is loaded at VM entry.  nested_ept_init_mmu_context then
    # sets get_cr3 = nested_ept_get_cr3; nested_vmx_load_cr3 (nested_ept) -> kvm_init_mmu only.
    # Exit: nested_vmx_load_cr3(host CR3) -> kvm_mmu_new_cr3: get_cr3 is still
    # nested_ept_get_cr3, so the EPT root is pushed as {EPTP, root}, and prev_roots[0]
    # {L1 CR3, TDP root} hits (same CR3, role 0x784 both).  The next entry hits {EPTP} the
    # same way.  No early return in 4.19: every init re-inits.
    tdp_role = L4 | DIRECT | ACC_ALL
    ept_role = L4 | ACC_ALL | GUEST_MODE
    r = run("4.19", "ept", [{"op": "run"}, VMLAUNCH, {"op": "vmexit"}, VMLAUNCH,
                            {"op": "vmexit"}], L1_VMX)
    nested = init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", True)
    tdp_init = init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "mmu", True)
    assert_logs(r, [
        [get_page(0, tdp_role, L4, True), load("mmu"), entry("mmu")],
        [ENTER_VMX, switch("mmu", EPTP, False, None), init_ept("mmu", True), nested,
         get_page(0x300, ept_role, L4, True), load("mmu"), entry("mmu")],
        [VMEXIT, switch("mmu", 0x100000, True, 0), tdp_init, entry("mmu")],
        [ENTER_VMX, switch("mmu", EPTP, True, 0), init_ept("mmu", True), nested, entry("mmu")],
        [VMEXIT, switch("mmu", 0x100000, True, 0), tdp_init, entry("mmu")],
    ])
    assert roots(r, "mmu") == (sp(0, tdp_role), [sp(0x300, ept_role, EPTP), INV, INV])


# 4.20: root_mmu / guest_mmu.  TDP root role: 4.20 kvm_calc_tdp_mmu_root_page_role takes nxe,
# cr4_pae, cr0_wp from the guest; kvm_mmu_get_page clears cr4_pae on direct pages.  EPT role:
# kvm_calc_shadow_ept_root_page_role starts from root_mmu's stored (masked) base word
# (nxe | cr4_pae | cr0_wp) and sets level 4, direct 0, guest_mode 1, access.
TDP_4_20 = L4 | DIRECT | ACC_ALL | NX | WP
EPT_4_20 = L4 | CR4_PAE | ACC_ALL | NX | WP | GUEST_MODE
NESTED_4_20 = [{"op": "run"}, VMLAUNCH, {"op": "vmexit"}, VMLAUNCH, {"op": "vmexit"}]


def _vmx_4_20_first_four():
    nested = init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", True)
    return [
        [get_page(0, TDP_4_20, L4, True), load("root_mmu"), entry("root_mmu")],
        # nested_ept_init_mmu_context: mmu = guest_mmu; kvm_init_shadow_ept_mmu ->
        # __kvm_mmu_new_cr3 on guest_mmu, whose levels are still 0 (never initialised), so
        # fast_cr3_switch refuses and CURRENT (invalid) is "freed"; then the role is new.
        [ENTER_VMX, switch("guest_mmu", EPTP, False, None), init_ept("guest_mmu", True), nested,
         get_page(0x300, EPT_4_20, L4, True), load("guest_mmu"), entry("guest_mmu")],
        # exit: mmu = root_mmu; nested_vmx_load_cr3 -> kvm_mmu_new_cr3(host CR3):
        # cached_root_available pushes {get_cr3() = L2's CR3, TDP root} and misses (CR3s
        # differ; the cr4_pae=1 fast-switch role could never match a direct page anyway).
        # kvm_init_mmu(false): root_mmu's role is unchanged -> early return.  VM entry loads
        # the same TDP page again (root_count 2: current + prev_roots[0]).
        [VMEXIT, switch("root_mmu", 0x100000, False, None),
         init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False),
         get_page(0, TDP_4_20, L4, False), load("root_mmu"), entry("root_mmu")],
        # second entry: guest_mmu is initialised now, so cached_root_available runs: it pushes
        # {nested_ept_get_cr3() = EPTP, EPT root} and finds nothing in the (empty) prev_roots.
        # kvm_init_shadow_ept_mmu and init_kvm_nested_mmu return early (roles unchanged).
        [ENTER_VMX, switch("guest_mmu", EPTP, False, None), init_ept("guest_mmu", False),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", False),
         get_page(0x300, EPT_4_20, L4, False), load("guest_mmu"), entry("guest_mmu")],
    ]


def test_nested_vmx_ept_4_20_keeps_roots_cached_and_skips_reinit():
    r = run("4.20", "ept", NESTED_4_20, L1_VMX)
    assert_logs(r, [*_vmx_4_20_first_four(),
                    [VMEXIT, switch("root_mmu", 0x100000, False, None),
                     init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False),
                     get_page(0, TDP_4_20, L4, False), load("root_mmu"), entry("root_mmu")]])
    # Both exits pushed the L1 root with L2's CR3 (get_cr3 reads arch.cr3 before it is set).
    assert roots(r, "root_mmu") == (sp(0, TDP_4_20), [sp(0, TDP_4_20, 0x200000),
                                                      sp(0, TDP_4_20, 0x200000), INV])
    assert roots(r, "guest_mmu")[0] == sp(0x300, EPT_4_20)


def test_nested_vmx_ept_4_20_third_entry_hits_the_pushed_eptp_root():
    # 4.20 mmu.c cached_root_available: root.cr3 = mmu->get_cr3(vcpu); for guest_mmu that is
    # nested_ept_get_cr3 (set by the first nested_ept_init_mmu_context and never reset), so
    # entry 2 pushed {EPTP, EPT root}.  Entry 3: swap with prev_roots[0] -> {EPTP, EPT root}:
    # same CR3, valid, role word equal (the unmasked new_role.base has exactly the stored bits
    # plus level 4 and access) -> hit at slot 0; the root stays valid, nothing is loaded.
    r = run("4.20", "ept", NESTED_4_20 + [VMLAUNCH], L1_VMX)
    assert_logs(r, [
        *_vmx_4_20_first_four(),
        [VMEXIT, switch("root_mmu", 0x100000, False, None),
         init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False),
         get_page(0, TDP_4_20, L4, False), load("root_mmu"), entry("root_mmu")],
        [ENTER_VMX, switch("guest_mmu", EPTP, True, 0), init_ept("guest_mmu", False),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", False),
         entry("guest_mmu")],
    ])
    assert roots(r, "guest_mmu") == (sp(0x300, EPT_4_20), [sp(0x300, EPT_4_20, EPTP), INV, INV])


def test_nested_vmx_ept_5_10_hits_the_current_roots():
    # 5.10 vmx/nested.c + mmu/mmu.c: as 4.20, but cached_root_available first tests the current
    # root (is_root_usable: direct roots ignore the PGD; guest_mmu's root_pgd = EPTP, set by
    # mmu_alloc_shadow_roots from get_guest_pgd).  The exit hits root_mmu's current root, the
    # second entry guest_mmu's.  EPT role (5.10 kvm_calc_shadow_ept_root_page_role): smm from
    # root_mmu, level, gpte_is_8_bytes, guest_mode, access, plus cr0_wp and smap_andnot_wp as
    # the "impossible combination" marker.
    ept_role = L4 | GPTE_IS_8_BYTES | ACC_ALL | WP | SMAP_ANDNOT_WP | GUEST_MODE
    r = run("5.10", "ept", NESTED_4_20, L1_VMX)
    exit_hit = [VMEXIT, switch("root_mmu", 0x100000, True, "current"),
                init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False),
                entry("root_mmu")]
    assert_logs(r, [
        [get_page(0, TDP_5_10, L4, True), load("root_mmu"), entry("root_mmu")],
        [ENTER_VMX, switch("guest_mmu", EPTP, False, None), init_ept("guest_mmu", True),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", True),
         get_page(0x300, ept_role, L4, True), load("guest_mmu"), entry("guest_mmu")],
        exit_hit,
        [ENTER_VMX, switch("guest_mmu", EPTP, True, "current"), init_ept("guest_mmu", False),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", False),
         entry("guest_mmu")],
        exit_hit,
    ])
    assert roots(r, "root_mmu") == (sp(0, TDP_5_10), [INV, INV, INV])
    assert roots(r, "guest_mmu") == (sp(0x300, ept_role), [INV, INV, INV])


def test_nested_vmx_ept_5_19_inits_before_the_pgd_switch():
    # 5.18+ (3cffc89d9d07): kvm_init_shadow_ept_mmu and nested_vmx_load_cr3 re-init first, then
    # kvm_mmu_new_pgd.  5.19 EPT role: level, guest_mode, access (smm forced 0, no markers).
    ept_role = L4 | ACC_ALL | GUEST_MODE
    r = run("5.19", "ept", NESTED_4_20, L1_VMX)
    exit_hit = [VMEXIT, init("nested_vmx_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False),
                switch("root_mmu", 0x100000, True, "current"), entry("root_mmu")]
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 1), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [ENTER_VMX, init_ept("guest_mmu", True), switch("guest_mmu", EPTP, False, None),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", True),
         get_page(0x300, ept_role, L4, True), load("guest_mmu"), entry("guest_mmu")],
        exit_hit,
        [ENTER_VMX, init_ept("guest_mmu", False), switch("guest_mmu", EPTP, True, "current"),
         init("nested_vmx_load_cr3", "init_kvm_nested_mmu", "nested_mmu", False),
         entry("guest_mmu")],
        exit_hit,
    ])
    assert roots(r, "root_mmu") == (tdp(TDP_5_19), [INV, INV, INV])


# ---------------------------------------------------------------------------------------------
# Nested SVM with NPT.  L1 and L2 use the same CR0/CR4/EFER (so it does not matter which of
# them an era's role code reads); nCR3 = 0x300000.

L1_SVM = {**L1_64, "efer": EFER_64 | EFER_SVME}
VMRUN = {"op": "vmrun", "cr0": CR0_64, "cr3": 0x200000, "cr4": CR4_PAE_BIT,
         "efer": EFER_64 | EFER_SVME, "ncr3": 0x300000}
ENTER_SVM = ("enter_svm_guest_mode",)
SVM_OPS = [{"op": "run"}, VMRUN, {"op": "vmexit"}, VMRUN, {"op": "vmexit"}]


def test_nested_svm_npt_4_20_resets_both_ways():
    # 4.20 svm.c enter_svm_guest_mode: nested_svm_init_mmu_context (mmu = guest_mmu,
    # kvm_init_shadow_mmu with L1's live registers, shadow_root_level = NPT level), L2 state via
    # svm_set_*, CR3 written directly (npt), then RC: kvm_mmu_unload frees root_mmu's root too;
    # kvm_init_mmu -> init_kvm_nested_mmu.  #VMEXIT (nested_svm_vmexit): L1 state, uninit,
    # RC (frees guest_mmu's root), kvm_mmu_load.  Roles: guest_mmu = 4.20 shadow role
    # (masked base + level, access); root_mmu's role is untouched by the nested RCs.
    npt_role = L4 | CR4_PAE | ACC_ALL | NX | WP
    r = run("4.20", "npt", SVM_OPS[:4], L1_SVM)
    rc_in = [reset("enter_svm_guest_mode"), UNLOAD, free("root_mmu", ALL, "root")]
    assert_logs(r, [
        [get_page(0, TDP_4_20, L4, True), load("root_mmu"), entry("root_mmu")],
        [ENTER_SVM, init("nested_svm_init_mmu_context", "kvm_init_shadow_mmu", "guest_mmu", True),
         *rc_in, init("kvm_mmu_reset_context", "init_kvm_nested_mmu", "nested_mmu", True),
         get_page(0x300, npt_role, L4, True), load("guest_mmu"), entry("guest_mmu")],
        [VMEXIT, reset("nested_svm_vmexit"), UNLOAD, free("guest_mmu", ALL, "root"),
         init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", False),
         get_page(0, TDP_4_20, L4, False), load("root_mmu"), entry("root_mmu")],
        [ENTER_SVM,
         init("nested_svm_init_mmu_context", "kvm_init_shadow_mmu", "guest_mmu", False),
         *rc_in, init("kvm_mmu_reset_context", "init_kvm_nested_mmu", "nested_mmu", False),
         get_page(0x300, npt_role, L4, False), load("guest_mmu"), entry("guest_mmu")],
    ])


def test_nested_svm_4_20_nested_mmu_role_has_no_guest_mode():
    # 4.20 svm.c: enter_guest_mode(&svm->vcpu) is the last statement of enter_svm_guest_mode,
    # after "Guest paging mode is active - reset mmu".  init_kvm_nested_mmu stores
    # kvm_calc_mmu_role_common (nxe, cr4_pae, cr0_wp, smm, guest_mode) masked with
    # mmu_base_role_mask: NX | CR4_PAE | WP, guest_mode still 0.
    r = run("4.20", "npt", SVM_OPS[:2], L1_SVM)
    assert r.final["contexts"]["nested_mmu"]["mmu_role"]["base"] == NX | CR4_PAE | WP


def _svm_5_x(kernel: str, npt_role: int, tdp_first: list[tuple], pgd_after_init: bool):
    nested_init = init("nested_svm_init_mmu_context", "kvm_init_shadow_npt_mmu", "guest_mmu", True)
    nested_init2 = init("nested_svm_init_mmu_context", "kvm_init_shadow_npt_mmu", "guest_mmu",
                        False)
    l2 = init("nested_svm_load_cr3", "init_kvm_nested_mmu", "nested_mmu", True)
    l2_again = init("nested_svm_load_cr3", "init_kvm_nested_mmu", "nested_mmu", False)
    l1 = init("nested_svm_load_cr3", "init_kvm_tdp_mmu", "root_mmu", False)
    miss = switch("guest_mmu", 0x300000, False, None)
    hit = switch("guest_mmu", 0x300000, True, "current")
    back = switch("root_mmu", 0x100000, True, "current")

    def order(a, b):  # 5.18+: init first, then kvm_mmu_new_pgd
        return [a, b] if pgd_after_init else [b, a]

    exit_log = [VMEXIT, *order(l1, back), entry("root_mmu")]
    return [
        [*tdp_first, load("root_mmu"), entry("root_mmu")],
        [ENTER_SVM, *order(nested_init, miss), l2, get_page(0x300, npt_role, L4, True),
         load("guest_mmu"), entry("guest_mmu")],
        exit_log,
        [ENTER_SVM, *order(nested_init2, hit), l2_again, entry("guest_mmu")],
        exit_log,
    ]


def test_nested_svm_npt_5_10():
    # 5.10 svm/nested.c: nested_prepare_vmcb_save (L2 registers) runs before
    # nested_prepare_vmcb_control -> nested_svm_init_mmu_context -> kvm_init_shadow_npt_mmu,
    # whose role (kvm_calc_shadow_npt_root_page_role) reads the vCPU's live registers and
    # guest_mode = 0 (enter_guest_mode follows).  __kvm_mmu_new_pgd(nCR3) runs before the
    # re-config: refused on the first entry (guest_mmu.root_level still 0), a hit on the
    # current root (root_pgd = nCR3) on the second.  nested_svm_load_cr3(L2 CR3, npt) ->
    # kvm_init_mmu -> nested_mmu.  #VMEXIT: nested_svm_load_cr3(L1 CR3, false) ->
    # kvm_mmu_new_pgd on root_mmu (hit on the current direct root), kvm_init_mmu (unchanged).
    npt_role = L4 | GPTE_IS_8_BYTES | ACC_ALL | NX | WP
    r = run("5.10", "npt", SVM_OPS, L1_SVM)
    assert_logs(r, _svm_5_x("5.10", npt_role, [get_page(0, TDP_5_10, L4, True)], False))
    assert roots(r, "guest_mmu") == (sp(0x300, npt_role), [INV, INV, INV])


@pytest.mark.parametrize("kernel", ["5.19", "6.14"])
def test_nested_svm_npt_5_19_and_6_14(kernel):
    # 5.19/6.14 svm/nested.c nested_svm_init_mmu_context -> kvm_init_shadow_npt_mmu(X86_CR0_PG,
    # vmcb01 CR4, vmcb01 EFER): cpu_role from these (CR0 = PG only: cr0_wp = 0; EFER.NX = 1),
    # root_role level 4; then kvm_mmu_new_pgd.  5.19: enter_guest_mode comes after
    # (nested_vmcb02_prepare_control), 6.14 before it (the 6.14 fix), so only 6.14's role has
    # guest_mode.  6.14: TDP MMU roots start with refcount 2.
    npt_role = L4 | ACC_ALL | NX | (GUEST_MODE if kernel == "6.14" else 0)
    refs = 2 if kernel == "6.14" else 1
    r = run(kernel, "npt", SVM_OPS, L1_SVM)
    first = [tdp_get(TDP_5_19, False, refs), get_page(0, TDP_5_19, L4, True)]
    assert_logs(r, _svm_5_x(kernel, npt_role, first, True))
    assert roots(r, "root_mmu") == (tdp(TDP_5_19), [INV, INV, INV])
    assert roots(r, "guest_mmu") == (sp(0x300, npt_role), [INV, INV, INV])


# ---------------------------------------------------------------------------------------------
# CPUID (KVM_SET_CPUID2 before the first KVM_RUN, as VMMs do).


@pytest.mark.parametrize("kernel, caller, reinit", [
    # 4.20 cpuid.c kvm_update_cpuid ends with kvm_mmu_reset_context; the role does not depend
    # on CPUID here (4.20 ext has no maxphyaddr): early return.
    ("4.20", "kvm_update_cpuid", False),
    # 5.10 cpuid.c kvm_vcpu_after_set_cpuid -> kvm_mmu_reset_context; ext.maxphyaddr unchanged.
    ("5.10", "kvm_vcpu_after_set_cpuid", False),
    # 5.15/5.17 mmu.c kvm_mmu_after_set_cpuid: ext.valid = 0 in root/guest/nested_mmu, then RC:
    # the role no longer matches, so init_kvm_tdp_mmu re-inits.
    ("5.15", "kvm_mmu_after_set_cpuid", True),
    ("5.17", "kvm_mmu_after_set_cpuid", True),
    # 5.19 also zeroes root_role.word, 6.14 sets root_role.invalid instead.
    ("5.19", "kvm_mmu_after_set_cpuid", True),
    ("6.14", "kvm_mmu_after_set_cpuid", True),
])
def test_cpuid_before_run(kernel, caller, reinit):
    r = run(kernel, "ept", [{"op": "cpuid"}], L1_64)
    marker = [("kvm_mmu_after_set_cpuid",)] if caller == "kvm_mmu_after_set_cpuid" else []
    assert_logs(r, [[*marker, reset(caller), UNLOAD,
                     init("kvm_mmu_reset_context", "init_kvm_tdp_mmu", "root_mmu", reinit)]])
    ctxs = r.final["contexts"]
    if kernel == "5.19":
        # root_role.word = 0 for guest_mmu and nested_mmu (root_mmu was re-initialised)
        assert (ctxs["guest_mmu"]["root_role"], ctxs["nested_mmu"]["root_role"]) == (0, 0)
    elif kernel == "6.14":
        assert (ctxs["guest_mmu"]["root_role"], ctxs["nested_mmu"]["root_role"]) == (
            INVALID, INVALID)
    if kernel in ("5.19", "6.14"):
        assert ctxs["root_mmu"]["root_role"] == TDP_5_19


def test_cpuid_after_run_5_15_unloads():
    # 5.15 kvm_set_cpuid has no after-KVM_RUN check (kvm_mmu_after_set_cpuid only warns), so
    # the RC frees the running root.
    r = run("5.15", "ept", [{"op": "run"}, {"op": "cpuid"}], L1_64)
    assert [e.name for e in r.per_op[1]] == [
        "kvm_mmu_after_set_cpuid", "kvm_mmu_reset_context", "kvm_mmu_unload",
        "kvm_mmu_free_roots", "kvm_tdp_mmu_free_root", "kvm_init_mmu"]
    assert r.per_op[1][4].get("role") == TDP_5_10  # 5.15 still forces gpte_is_8_bytes


@pytest.mark.parametrize("kernel", ["5.17", "5.19", "6.14"])
def test_cpuid_after_run_is_refused_or_a_no_op(kernel):
    # 5.17/5.19 cpuid.c kvm_set_cpuid: if (vcpu->arch.last_vmentry_cpu != -1) { r =
    # kvm_cpuid_check_equal(...); ... return r or 0 } before kvm_vcpu_after_set_cpuid;
    # 6.14 the same with kvm_vcpu_has_run.  Either way no MMU work happens.
    try:
        r = run(kernel, "ept", [{"op": "run"}, {"op": "cpuid"}], L1_64)
    except ReplayError:
        return
    assert [e.name for e in r.per_op[1] if e.name.startswith("kvm_mmu")] == []


# ---------------------------------------------------------------------------------------------
# Memslot delete: kvm_arch_flush_shadow_memslot -> kvm_mmu_zap_all_fast (5.x/6.x;
# kvm_mmu_invalidate_zap_all_pages in 4.x).

MEMSLOT = [{"op": "run"}, {"op": "mov_cr3", "value": 0x101000}, {"op": "memslot"},
           {"op": "run"}]
FLUSH = ("kvm_arch_flush_shadow_memslot",)


@pytest.mark.parametrize("kernel", ["5.17", "5.19"])
def test_memslot_shadow_reload_vs_free_obsolete(kernel):
    # Legacy roots: the generation toggles, kvm_zap_obsolete_pages zaps every page; the two
    # roots (current 0x101 and prev_roots[0] 0x100) have root_count > 0, so
    # kvm_mmu_prepare_zap_page only marks them invalid.
    # <= 5.17: kvm_reload_remote_mmus -> KVM_REQ_MMU_RELOAD -> kvm_mmu_unload at entry.
    # 5.18+: KVM_REQ_MMU_FREE_OBSOLETE_ROOTS -> __kvm_mmu_free_obsolete_roots: CURRENT and
    # PREVIOUS(0) are obsolete (mask 0x3).  kvm_mmu_free_roots frees prev_roots first, and each
    # last put of an invalid root zaps it (mmu_free_root_page).  The CR3 page is built anew.
    role = L4 | ACC_ALL | NX | WP  # 5.17+: has_4_byte_gpte = 0
    r = run(kernel, "none", MEMSLOT, L1_64)
    if kernel == "5.17":
        req, drop = "KVM_REQ_MMU_RELOAD", [("kvm_mmu_unload",),
                                           free("root_mmu", ALL, "root", "prev_roots[0]")]
    else:
        req, drop = "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS", [free("root_mmu", 0x3, "root",
                                                             "prev_roots[0]")]
    assert_logs(r, [
        [get_page(0x100, role, L4, True), load("root_mmu"), entry("root_mmu")],
        [("exit", "cr3", 0x101000), switch("root_mmu", 0x101000, False, None),
         get_page(0x101, role, L4, True), load("root_mmu"), entry("root_mmu")],
        [FLUSH, request(req)],
        [*drop, ("kvm_mmu_prepare_zap_page", 0x100, role),
         ("kvm_mmu_prepare_zap_page", 0x101, role), get_page(0x101, role, L4, True),
         load("root_mmu"), entry("root_mmu")],
    ])
    assert r.final["shadow_pages"] == 1


TDP_MEMSLOT = [{"op": "run"}, {"op": "memslot"}, {"op": "run"}]


def test_memslot_tdp_mmu_5_10():
    # 5.10 mmu.c kvm_mmu_zap_all_fast: gen toggle, kvm_reload_remote_mmus, kvm_zap_obsolete_pages,
    # then kvm_tdp_mmu_zap_all (zaps the SPTEs; the root stays on the list, valid).  At entry
    # RELOAD unloads: the last put frees the (empty) root, and a new one is allocated.
    r = run("5.10", "ept", TDP_MEMSLOT, L1_64, tdp_mmu=True)
    assert_logs(r, [
        [tdp_get(TDP_5_10, False, 1), load("root_mmu"), entry("root_mmu")],
        [FLUSH, request("KVM_REQ_MMU_RELOAD"), ("kvm_tdp_mmu_zap_all", TDP_5_10)],
        [UNLOAD, free("root_mmu", ALL, "root"), tdp_free(TDP_5_10),
         tdp_get(TDP_5_10, False, 1), load("root_mmu"), entry("root_mmu")],
    ])


@pytest.mark.parametrize("kernel", ["5.17", "5.19", "6.4"])
def test_memslot_tdp_mmu_invalidates_roots(kernel):
    # 5.17 kvm_mmu_zap_all_fast: kvm_tdp_mmu_invalidate_all_roots (reference + role.invalid),
    # kvm_reload_remote_mmus, zap obsolete, kvm_tdp_mmu_zap_invalidated_roots.  5.18+:
    # invalidate, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, zap obsolete, zap invalidated (worker).
    # At entry: 5.17 unloads everything; 5.18+ frees only the obsolete current root.  The
    # invalid root cannot be found again by role, so a new one is allocated.
    r = run(kernel, "ept", TDP_MEMSLOT, L1_64)
    refs = 2 if kernel == "6.4" else 1
    first = [tdp_get(TDP_5_19, False, refs), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
             entry("root_mmu")]
    if kernel == "5.17":
        req, drop = "KVM_REQ_MMU_RELOAD", [UNLOAD, free("root_mmu", ALL, "root")]
    else:
        req, drop = "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS", [free("root_mmu", CUR, "root")]
    assert_logs(r, [
        first,
        [FLUSH, ("kvm_tdp_mmu_invalidate_all_roots", TDP_5_19), request(req)],
        [*drop, tdp_free(TDP_5_19), *first],
    ])
    assert r.final["tdp_mmu_roots"] == [
        {"role": TDP_5_19, "refcount": refs, "invalid": False, "level": 4}]


@pytest.mark.parametrize("kernel", ["5.17", "5.19", "6.4"])
def test_memslot_tdp_mmu_teardown_happens_in_the_memslot_op(kernel):
    # 5.17 tdp_mmu.c kvm_tdp_mmu_zap_invalidated_roots: zap_gfn_range(root, 0, -1) on every
    # invalid root, then put the reference taken by kvm_tdp_mmu_invalidate_all_roots.  5.19 /
    # 6.4: the same zap runs in tdp_mmu_zap_root_work, and kvm_tdp_mmu_zap_invalidated_roots is
    # flush_workqueue, so it has finished when KVM_SET_USER_MEMORY_REGION returns.  The vCPU's
    # put at the next entry finds an empty tree: one page (the root) is freed.
    r = run(kernel, "ept", TDP_MEMSLOT, L1_64, footprint_gib=1.0)
    tree = 515  # pt_pages(1 GiB, level 4): 512 + 1 + 1 + root
    assert counters_of(r.per_op[1])["pt_pages_torn_down"] == tree - 1
    assert counters_of(r.per_op[2])["pt_pages_torn_down"] == 1


def test_memslot_6_4_frees_unreferenced_preserved_roots_at_once():
    # 6.4: after SMI the L1 root is held only by the TDP MMU (refcount 1).  Memslot:
    # kvm_tdp_mmu_invalidate_all_roots walks the list head first (SMM root, then L1 root),
    # marks both invalid and queues their zap; each worker drops the TDP MMU's reference, which
    # frees the L1 root (kvm_tdp_mmu_put_root: invalid, refcount 0).  The worker runs
    # asynchronously; flush_workqueue in kvm_tdp_mmu_zap_invalidated_roots waits for it, so the
    # free lands somewhere in the memslot op (the model puts it right after the invalidation).
    # At entry the SMM root (current, obsolete) is freed and rebuilt.
    smm_tdp = TDP_5_19 | SMM
    r = run("6.4", "ept", [{"op": "run"}, {"op": "smi"}, {"op": "memslot"}, {"op": "run"}],
            L1_64)
    assert_logs(r, [
        [tdp_get(TDP_5_19, False, 2), get_page(0, TDP_5_19, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [*_rc("kvm_smm_changed", "init_kvm_tdp_mmu", True, freed=True),
         *_rc("enter_smm", "init_kvm_tdp_mmu", True),
         tdp_get(smm_tdp, False, 2), get_page(0, smm_tdp, L4, True), load("root_mmu"),
         entry("root_mmu")],
        [FLUSH, ("kvm_tdp_mmu_invalidate_all_roots", smm_tdp),
         ("kvm_tdp_mmu_invalidate_all_roots", TDP_5_19), tdp_free(TDP_5_19),
         request("KVM_REQ_MMU_FREE_OBSOLETE_ROOTS")],
        [free("root_mmu", CUR, "root"), tdp_free(smm_tdp),
         tdp_get(smm_tdp, False, 2), get_page(0, smm_tdp, L4, True), load("root_mmu"),
         entry("root_mmu")],
    ])
