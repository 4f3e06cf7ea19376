"""The per-release quirks of kernel-roles.md §14 that a one-shot compute() can show, each
pinned with exact words and re-derived from the kernel source (not from the reference).
Constants and helpers: ``tests/test_roles_exact.py``.

Not here, because they need a sequence of register writes rather than one computation:
5.18's EFER.LME reset trigger (x86.c set_efer, KVM_MMU_EFER_ROLE_BITS) and 6.4+'s stale
smep/smap_andnot_wp after __kvm_mmu_refresh_passthrough_bits updates only cpu_role's cr0_wp.
4.18's "shadow init does not clear the word" (kvm_init_shadow_mmu) is not observable either:
before any shadow init the only writers (init_kvm_tdp_mmu, kvm_init_shadow_ept_mmu) leave
nothing that the shadow init does not overwrite, except ad_disabled, which SVM never sets.
"""

from __future__ import annotations

import pytest
from test_roles_exact import (
    ACC_ALL,
    AD_DISABLED,
    CR4_PAE,
    DIRECT,
    E_5_15,
    E_5_17,
    E_5_19,
    EFER_NX,
    ERAS,
    EXT_4_20,
    EXT_5_10,
    EXT_5_15,
    EXT_5_19,
    GPTE_IS_8_BYTES,
    GUEST_MODE,
    HAS_4_BYTE_GPTE,
    IS_MIRROR,
    MMU_BASE_ROLE_MASK,
    MODES,
    NX,
    PASSTHROUGH,
    PT32_ROOT_LEVEL,
    PT32E_ROOT_LEVEL,
    PT64_ROOT_4LEVEL,
    PT64_ROOT_5LEVEL,
    SMAP_ANDNOT_WP,
    SMEP_ANDNOT_WP,
    SMM,
    WP,
    X86_CR0_WP,
    X86_CR4_PKE,
    X86_CR4_SMAP,
    X86_CR4_SMEP,
    on,
    regs,
    run,
    word,
)

EPTP = 0x7000
NCR3 = 0x9000


# 1/2. 4.18 (and 4.19) shadow EPT starts from the previous context's base_role --------------


@pytest.mark.parametrize("kernel", ["4.18", "4.19"])
def test_shadow_ept_inherits_l1_tdp_base_role(kernel):
    # 4.18 kvm_init_shadow_ept_mmu writes only ad_disabled and guest_mode into base_role;
    # 4.19 kvm_calc_shadow_ept_root_page_role starts from arch.mmu.base_role.  Either way the
    # L1 init_kvm_tdp_mmu role (guest_mode, smm, ad_disabled; no nxe/cr0_wp/cr4_pae) is the
    # base: its smm survives, L1's NX/WP never appear, and L0's ad_disabled is overwritten.
    r = run(kernel, "ept", "64bit", wp=True, nx=True, nested="ept", guest_mode=True,
            nested_cr3=EPTP, smm=True, ept_ad=False, nested_ept_ad=True)
    assert r.cpu_role.base.word == SMM | GUEST_MODE
    assert r.root_role.word == SMM | GUEST_MODE | PT64_ROOT_4LEVEL | ACC_ALL


def test_4_20_shadow_ept_inherits_root_mmu_nx_wp_pae():
    # 4.20 kvm_calc_shadow_ept_root_page_role: base.word = root_mmu.mmu_role.base.word, and
    # the 4.20 TDP role carries L1's nxe, cr4_pae and cr0_wp (kvm_calc_mmu_role_common).
    r = run("4.20", "ept", "64bit", wp=True, nx=True, nested="ept", guest_mode=True,
            nested_cr3=EPTP, smm=True)
    assert r.cpu_role.base.word == NX | CR4_PAE | WP | SMM | GUEST_MODE
    r = run("4.20", "ept", "64bit", wp=False, nx=False, nested="ept", guest_mode=True,
            nested_cr3=EPTP)
    assert r.cpu_role.base.word == CR4_PAE | GUEST_MODE


# 3. 4.19/4.20 stored roles are masked with mmu_base_role_mask -------------------------------


@pytest.mark.parametrize("tdp", ["ept", "npt", "none"])
@pytest.mark.parametrize("kernel", ["4.19", "4.20"])
def test_stored_role_is_masked(kernel, tdp):
    r = run(kernel, tdp, "64bit", wp=False, smep=True, nx=True, smm=True)
    # level/quadrant/direct/access/invalid are gone from the stored base ...
    assert r.cpu_role.base.word & ~MMU_BASE_ROLE_MASK == 0
    assert (r.cpu_role.base.level, r.cpu_role.base.access) == (0, 0)
    # ... but the root pages get them back in kvm_mmu_get_page.
    assert r.root_role.level == PT64_ROOT_4LEVEL
    assert r.root_role.access == 7
    # The unmasked role of kvm_mmu_calc_root_page_role keeps level and access.
    calc = word(r.extra["calc_root_page_role"])
    assert calc & 0xF == PT64_ROOT_4LEVEL
    assert calc & ACC_ALL == ACC_ALL


def test_4_19_calc_root_page_role_is_unmasked_tdp_role():
    # 4.19 kvm_mmu_calc_root_page_role -> kvm_calc_tdp_mmu_root_page_role: guest_mode, smm,
    # ad_disabled, level, direct, access (nothing from the guest's paging registers).
    r = run("4.19", "ept", "64bit", smm=True, ept_ad=False)
    assert word(r.extra["calc_root_page_role"]) == (SMM | AD_DISABLED | PT64_ROOT_4LEVEL
                                                    | DIRECT | ACC_ALL)
    assert r.cpu_role.base.word == SMM | AD_DISABLED


# 4. TDP roles and the guest's NX/WP: 4.18/4.19 none, 4.20-5.18 the guest's, 5.19+ forced ----


@pytest.mark.parametrize("wp, nx", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("tdp", ["ept", "npt"])
@pytest.mark.parametrize("kernel", ERAS)
def test_tdp_root_role_nx_wp(kernel, tdp, wp, nx):
    r = run(kernel, tdp, "64bit", wp=wp, nx=nx)
    nxwp = r.root_role.word & (NX | WP)
    if kernel in ("4.18", "4.19"):
        # init_kvm_tdp_mmu (4.18) / kvm_calc_tdp_mmu_root_page_role (4.19): no such fields set
        assert nxwp == 0
    elif kernel in E_5_19:
        # 5.19+ kvm_calc_tdp_mmu_root_page_role: both bits forced to 1
        assert nxwp == NX | WP
    else:
        # 4.20 .. 5.18 kvm_calc_mmu_role_common: nxe/efer_nx = EFER.NX, cr0_wp = CR0.WP
        assert nxwp == on(nx, NX) | on(wp, WP)


# 5. base_only zeroes smep/smap_andnot_wp in kvm_mmu_calc_root_page_role (shadow) ------------


@pytest.mark.parametrize("kernel", ["4.19", "4.20", "5.10", "5.15", "5.17"])
def test_calc_root_page_role_base_only_drops_andnot_wp(kernel):
    # Shadow, 64-bit guest, WP=0, SMEP=1, SMAP=1, NX=1.  The role the fast CR3/PGD switch
    # compares (kvm_mmu_calc_root_page_role) vs the role root pages really get.
    r = run(kernel, "none", "64bit", wp=False, smep=True, smap=True, nx=True)
    both = SMEP_ANDNOT_WP | SMAP_ANDNOT_WP
    assert r.root_role.word & both == both
    calc = word(r.extra["calc_root_page_role"])
    if kernel == "4.19":
        # 4.19 kvm_calc_shadow_mmu_root_page_role has no base_only: smep/smap from CR4
        assert calc == NX | CR4_PAE | both | PT64_ROOT_4LEVEL | ACC_ALL
    elif kernel == "4.20":
        # 4.20 base_only: ext stays 0, so ext.cr4_smep && !WP is 0
        assert calc == NX | CR4_PAE | PT64_ROOT_4LEVEL | ACC_ALL
    elif kernel in ("5.10", "5.15"):
        assert calc == ACC_ALL | NX | GPTE_IS_8_BYTES | PT64_ROOT_4LEVEL
    else:
        assert calc == ACC_ALL | NX | PT64_ROOT_4LEVEL


# 7. 4.20: cr4_pae in the fast-switch TDP role but not on direct pages ----------------------


def test_4_20_cr4_pae_mismatch_between_calc_role_and_direct_pages():
    r = run("4.20", "ept", "64bit", wp=True, nx=True)
    # kvm_mmu_calc_root_page_role -> kvm_calc_tdp_mmu_root_page_role(base_only): access, nxe,
    # cr4_pae = CR4.PAE, cr0_wp, ad_disabled, level, direct.
    calc = NX | CR4_PAE | WP | ACC_ALL | PT64_ROOT_4LEVEL | DIRECT
    assert word(r.extra["calc_root_page_role"]) == calc
    # kvm_mmu_get_page 4.20: role.cr4_pae = 0 because role.direct
    assert r.root_role.word == calc & ~CR4_PAE
    assert r.root_pages[0].role.word == calc & ~CR4_PAE


@pytest.mark.parametrize("kernel", ["4.19", "5.10", "5.15", "5.17"])
def test_calc_role_matches_direct_pages_outside_4_20(kernel):
    # 4.19: no cr4_pae in the TDP role; 5.10/5.15: gpte_is_8_bytes = 1 in both; 5.17: 0 in both
    r = run(kernel, "ept", "64bit")
    assert word(r.extra["calc_root_page_role"]) == r.root_role.word


# 8. cr0_wp/nxe with CR0.PG=0: raw in 4.20 and 5.10, PG-gated from 5.14 ---------------------


@pytest.mark.parametrize("kernel", ["4.20", "5.10", "5.15", "5.17", "5.18", "5.19", "6.18"])
def test_tdp_nonpaging_guest_wp_nx(kernel):
    r = run(kernel, "ept", "nonpaging", wp=True, nx=True)
    lvl = PT64_ROOT_4LEVEL
    if kernel == "4.20":
        assert r.root_role.word == NX | WP | lvl | DIRECT | ACC_ALL
    elif kernel == "5.10":
        # 5.10 kvm_calc_mmu_role_common: nxe = EFER.NX, cr0_wp = CR0.WP with no PG test
        assert r.root_role.word == ACC_ALL | NX | WP | lvl | DIRECT | GPTE_IS_8_BYTES
        assert r.cpu_role.base.word == r.root_role.word
    elif kernel == "5.15":
        assert r.root_role.word == ACC_ALL | lvl | DIRECT | GPTE_IS_8_BYTES
    elif kernel in E_5_17:
        assert r.root_role.word == ACC_ALL | lvl | DIRECT
    else:
        assert r.cpu_role.base.word == ACC_ALL | DIRECT  # kvm_calc_cpu_role, PG=0
        assert r.root_role.word == ACC_ALL | WP | NX | lvl | DIRECT


# 9. nested EPT: 5.10 marker, smm copied 5.10-5.18, smm forced 0 + warning 5.19+ ------------


@pytest.mark.parametrize("kernel", ["5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18"])
def test_nested_ept_marker_and_smm(kernel):
    r = run(kernel, "ept", "64bit", wp=False, nx=False, nested="ept", guest_mode=True,
            nested_cr3=EPTP, smm=True)
    marker = r.root_role.word & (WP | SMAP_ANDNOT_WP)
    smm = r.root_role.word & SMM
    if kernel == "5.10":
        # kvm_calc_shadow_ept_root_page_role 5.10 tags shadow-EPT pages with cr0_wp and
        # smap_andnot_wp both set, a pair no CPU mode produces, whatever L1's CR0.WP (0 here)
        assert marker == WP | SMAP_ANDNOT_WP
    else:
        assert marker == 0
    if kernel in E_5_19:
        # 5.19+: a one-time warning when in SMM; the role starts from 0 and never gets smm
        assert smm == 0
        assert len(r.warnings) >= 1
    else:
        # 5.10-5.18: role.base.smm = root_mmu.mmu_role.base.smm
        assert smm == SMM
        assert r.warnings == ()


# 10. 5.10 nested NPT reads the live (L2) registers ------------------------------------------

L1_64 = regs("64bit", wp=True, smep=True, nx=True)
L2_PAE = regs("pae", wp=False, smep=False, smap=True, nx=False)


def test_5_10_nested_npt_role_from_live_l2_registers():
    r = run("5.10", "npt", "64bit", wp=True, smep=True, nx=True, nested="npt",
            nested_cr3=NCR3, l2_cr0=L2_PAE["cr0"], l2_cr4=L2_PAE["cr4"], l2_efer=L2_PAE["efer"])
    # kvm_calc_shadow_npt_root_page_role 5.10: L2's NX=0, WP=0, SMAP=1 -> smap_andnot_wp,
    # gpte_is_8_bytes = L2's CR4.PAE, direct 0, level = kvm_mmu_get_tdp_level = 4
    base = ACC_ALL | SMAP_ANDNOT_WP | GPTE_IS_8_BYTES | PT64_ROOT_4LEVEL
    assert r.cpu_role.base.word == base
    E = EXT_5_10  # kvm_calc_mmu_role_ext on L2's registers
    assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE | E.CR4_SMAP
                                   | E.MAXPHYADDR(48))
    # shadow_mmu_init_context picks paging64_init_context from the passed L1 EFER.LMA, so
    # shadow_root_level = 4 (no LA57) and the root role keeps level 4.
    assert r.extra["shadow_root_level"] == PT64_ROOT_4LEVEL
    assert r.root_role.word == base
    assert word(r.extra["new_pgd_role"]) == base


def test_5_10_nested_npt_shadow_root_level_overwritten_by_paging_helper():
    # L1 is a PAE (non-long-mode) hypervisor, L2 runs 64-bit.  The role (live L2 registers)
    # gets level = kvm_mmu_get_tdp_level = 4; kvm_init_shadow_npt_mmu sets
    # shadow_root_level = 4, then shadow_mmu_init_context -> paging32E_init_context (L1's
    # CR4.PAE without EFER.LMA) overwrites it with 3.
    l1 = regs("pae", wp=True, nx=True)
    l2 = regs("64bit", wp=True, nx=True)
    r = compute_l1_l2("5.10", l1, l2)
    assert r.cpu_role.base.word == ACC_ALL | NX | WP | GPTE_IS_8_BYTES | PT64_ROOT_4LEVEL
    assert r.extra["shadow_root_level"] == PT32E_ROOT_LEVEL
    assert r.extra["root_level"] == PT32E_ROOT_LEVEL
    assert r.root_role.level == PT32E_ROOT_LEVEL


def compute_l1_l2(kernel, l1, l2, **kw):
    from mmulib import Request
    from mmulib.compute import compute

    return compute(Request(kernel=kernel, tdp="npt", nested="npt", nested_cr3=NCR3, cr3=0x1000,
                           l2_cr0=l2["cr0"], l2_cr4=l2["cr4"], l2_efer=l2["efer"], **l1, **kw))


@pytest.mark.parametrize("guest_mode", [False, True])
def test_5_10_nested_npt_guest_mode_as_requested(guest_mode):
    # kvm_calc_mmu_role_common reads is_guest_mode(vcpu); SVM itself calls this before
    # enter_guest_mode (nested_prepare_vmcb_control), so 0 is what real L2 entries see.
    r = run("5.10", "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=guest_mode)
    assert r.root_role.word & GUEST_MODE == on(guest_mode, GUEST_MODE)


@pytest.mark.parametrize("kernel", ["4.18", "4.19", "4.20"])
def test_nested_npt_4x_uses_l1_registers_not_l2(kernel):
    # 4.18-4.20 enter_svm_guest_mode: nested_svm_init_mmu_context -> kvm_init_shadow_mmu runs
    # *before* the svm_set_efer/cr0/cr4 calls that install vmcb12's (L2's) values, so
    # the live registers it reads are still L1's (the request's cr0/cr4/efer), never l2_*.
    l1 = regs("64bit", wp=False, smep=True, nx=True)
    r = compute_l1_l2(kernel, l1, L2_PAE)
    # kvm_init_shadow_mmu / kvm_calc_shadow_mmu_root_page_role on L1: nxe, cr4_pae, cr0_wp = 0,
    # smep_andnot_wp = SMEP && !WP; paging64_init_context (L1 long mode) -> root_level 4
    base = NX | CR4_PAE | SMEP_ANDNOT_WP
    assert r.cpu_role.base.word == base
    assert r.extra["root_level"] == PT64_ROOT_4LEVEL
    # shadow_root_level = get_npt_level = 4; direct_map = false
    assert r.root_role.word == base | PT64_ROOT_4LEVEL | ACC_ALL
    if kernel == "4.20":
        E = EXT_4_20  # kvm_calc_mmu_role_ext on L1's CR0/CR4
        assert r.cpu_role.ext.word == E.VALID | E.CR0_PG | E.CR4_PSE | E.CR4_SMEP
    assert [(p.level, p.gfn) for p in r.root_pages] == [(PT64_ROOT_4LEVEL, NCR3 >> 12)]


@pytest.mark.parametrize("kernel", ["4.18", "4.19", "4.20", "5.10"])
def test_nested_npt_level_4_on_la57_host_before_5_15(kernel):
    # get_npt_level (4.x) / get_max_npt_level (5.10) ignore the host's paging depth.
    r = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, host_la57=True)
    assert r.root_role.level == PT64_ROOT_4LEVEL
    assert [(p.level, p.gfn) for p in r.root_pages] == [(PT64_ROOT_4LEVEL, NCR3 >> 12)]


@pytest.mark.parametrize("kernel", ["5.15", "5.17", "5.18", "5.19", "6.4"])
def test_nested_npt_ignores_l2_registers_from_5_15(kernel):
    # 5.14+ kvm_init_shadow_npt_mmu builds regs from its arguments (L1's vmcb01 CR4/EFER).
    a = run(kernel, "npt", "64bit", wp=True, smep=True, nx=True, nested="npt", nested_cr3=NCR3)
    b = run(kernel, "npt", "64bit", wp=True, smep=True, nx=True, nested="npt", nested_cr3=NCR3,
            l2_cr0=L2_PAE["cr0"], l2_cr4=L2_PAE["cr4"], l2_efer=L2_PAE["efer"])
    assert b.cpu_role.as_u64 == a.cpu_role.as_u64
    assert b.root_role.word == a.root_role.word


# 11. shadow NPT: WP = 0 (SVM passes CR0 = PG only), PKE cleared ----------------------------


@pytest.mark.parametrize("kernel", ERAS)
def test_nested_npt_wp_and_pke(kernel):
    gm = kernel in ("6.14", "6.18")
    r = run(kernel, "npt", "64bit", wp=True, smep=True, smap=True, nx=True,
            extra_cr4=X86_CR4_PKE, nested="npt", nested_cr3=NCR3, guest_mode=gm)
    base = r.cpu_role.base.word
    ext = r.cpu_role.ext.word if r.cpu_role.ext else None
    if kernel in E_5_15 + E_5_17 + E_5_19:
        # regs.cr0 = X86_CR0_PG: cr0_wp = 0, so SMEP/SMAP turn into smep/smap_andnot_wp;
        # regs.cr4 = cr4 & ~X86_CR4_PKE: ext.cr4_pke = 0 although L1 runs 64-bit with PKE.
        assert base & (WP | SMEP_ANDNOT_WP | SMAP_ANDNOT_WP) == SMEP_ANDNOT_WP | SMAP_ANDNOT_WP
        pke = EXT_5_19.CR4_PKE if kernel in E_5_19 else EXT_5_15.CR4_PKE
        assert ext & pke == 0
        # an L1 TDP context with the same registers does see PKE
        l1 = run(kernel, "npt", "64bit", wp=True, smep=True, smap=True, nx=True,
                 extra_cr4=X86_CR4_PKE)
        assert l1.cpu_role.ext.word & pke == pke
    else:
        # 4.18-5.10: the live CR0.WP (1) is used and nothing clears PKE
        assert base & (WP | SMEP_ANDNOT_WP | SMAP_ANDNOT_WP) == WP
        if kernel == "4.20":
            assert ext & EXT_4_20.CR4_PKE
        elif kernel == "5.10":
            assert ext & EXT_5_10.CR4_PKE


# 12. nested MMU direct = 1 sentinel (5.15/5.17/5.18) ----------------------------------------


@pytest.mark.parametrize("kernel", ["5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18"])
def test_nested_mmu_direct_sentinel(kernel):
    r = run(kernel, "ept", "64bit", context="nested_mmu", guest_mode=True)
    if kernel in E_5_15 + E_5_17:
        # kvm_calc_nested_mmu_role: role.base.direct = true, level = role_regs_to_root_level
        assert (r.cpu_role.base.direct, r.cpu_role.base.level) == (1, PT64_ROOT_4LEVEL)
    elif kernel == "5.10":
        # kvm_calc_mmu_role_common only: neither direct nor level
        assert (r.cpu_role.base.direct, r.cpu_role.base.level) == (0, 0)
    else:
        assert (r.cpu_role.base.direct, r.cpu_role.base.level) == (0, PT64_ROOT_4LEVEL)


# 13. bit 4: cr4_pae -> gpte_is_8_bytes -> has_4_byte_gpte (inverted) -------------------------


@pytest.mark.parametrize("kernel", ERAS)
def test_bit4_name_and_sense(kernel):
    r32 = run(kernel, "none", "32bit")
    rpae = run(kernel, "none", "pae")
    if kernel in ("4.18", "4.19", "4.20"):
        name, v32, vpae = "cr4_pae", 0, 1
    elif kernel in ("5.10", "5.15"):
        name, v32, vpae = "gpte_is_8_bytes", 0, 1
    else:
        name, v32, vpae = "has_4_byte_gpte", 1, 0
    assert r32.cpu_role.base.fields[name] == v32
    assert rpae.cpu_role.base.fields[name] == vpae
    assert r32.cpu_role.base.word & HAS_4_BYTE_GPTE == v32 << 4
    assert rpae.root_role.word & HAS_4_BYTE_GPTE == vpae << 4


# 14. 5.19+: shadow root level max(level, 3); efer_nx forced for non-nested shadow only ------


@pytest.mark.parametrize("kernel", E_5_19)
def test_shadow_root_level_and_forced_nx(kernel):
    r = run(kernel, "none", "32bit", wp=True, nx=False)
    # kvm_calc_cpu_role: level 2, has_4_byte_gpte, cr0_wp, efer_nx = 0
    assert r.cpu_role.base.word == ACC_ALL | WP | HAS_4_BYTE_GPTE | PT32_ROOT_LEVEL
    # kvm_init_shadow_mmu: level = max(2, 3) = 3, efer_nx = true
    assert r.root_role.word == ACC_ALL | WP | HAS_4_BYTE_GPTE | PT32E_ROOT_LEVEL | NX
    assert r.root_role.word == 0x3713  # the kernel-roles.md §10.7 vector, same thing
    # kvm_init_shadow_npt_mmu: no efer_nx forcing (L1 EFER.NX = 0 stays 0)
    gm = kernel in ("6.14", "6.18")
    n = run(kernel, "npt", "64bit", wp=True, nx=False, nested="npt", nested_cr3=NCR3,
            guest_mode=gm)
    assert n.root_role.word & NX == 0
    assert n.root_role.word == ACC_ALL | PT64_ROOT_4LEVEL | on(gm, GUEST_MODE)


def test_nonpaging_shadow_root_role_5_19_vector():
    # kernel-roles.md §10.7: shadow root_role with CR0.PG=0 = level 3, direct, access, efer_nx
    r = run("5.19", "none", "nonpaging", wp=True, nx=True)
    assert r.root_role.word == PT32E_ROOT_LEVEL | DIRECT | ACC_ALL | NX == 0x1783
    assert r.cpu_role.as_u64 == (EXT_5_19.VALID << 32) | DIRECT | ACC_ALL == 0x1_00000780


# 15. passthrough: 5-level NPT over 4-level L1 NPT -------------------------------------------


@pytest.mark.parametrize("kernel", ["5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18"])
def test_passthrough_only_from_5_19(kernel):
    gm = kernel in ("6.14", "6.18")
    r = run(kernel, "npt", "64bit", wp=True, nx=True, nested="npt", nested_cr3=NCR3,
            host_la57=True, guest_mode=gm)
    assert r.root_role.level == PT64_ROOT_5LEVEL
    if kernel in E_5_19:
        assert r.root_role.word & PASSTHROUGH == PASSTHROUGH
        assert r.cpu_role.base.level == PT64_ROOT_4LEVEL
    else:
        # no such field before 5.19: bit 18 is padding and stays 0
        assert "passthrough" not in r.root_role.fields
        assert r.root_role.word & PASSTHROUGH == 0
    # an L1 that itself uses 5-level paging: cpu_role level 5, nothing to pass through
    r5 = run(kernel, "npt", "la57", nested="npt", nested_cr3=NCR3, host_la57=True,
             guest_mode=gm)
    assert r5.root_role.word & PASSTHROUGH == 0
    # and on a 4-level host the levels agree
    r4 = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=gm)
    assert r4.root_role.word & PASSTHROUGH == 0


# 16. guest_mode on nested NPT roles: 0 before 6.14, 1 from 6.14 (WARN if 0) ----------------


@pytest.mark.parametrize("kernel", ["5.19", "6.4"])
def test_nested_npt_guest_mode_before_6_14(kernel):
    # nested_vmcb02_prepare_control: nested_svm_init_mmu_context runs before enter_guest_mode
    r = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=False)
    assert r.cpu_role.base.guest_mode == 0
    assert r.root_role.guest_mode == 0
    assert r.warnings == ()


@pytest.mark.parametrize("kernel", ["5.19", "6.4"])
def test_nested_npt_guest_mode_is_read_live_before_6_14(kernel):
    # kvm_calc_cpu_role reads is_guest_mode(vcpu): asked with guest_mode=1, the bit is there
    # and nothing warns (the 6.14 guest_mode warning does not exist yet).
    r = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=True)
    assert r.root_role.guest_mode == 1
    assert r.warnings == ()


@pytest.mark.parametrize("kernel", ["6.14", "6.18"])
def test_nested_npt_guest_mode_from_6_14(kernel):
    # enter_guest_mode now precedes nested_svm_init_mmu_context
    r = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=True)
    # cr0_wp = 0: SVM passes CR0 = PG only; efer_nx = L1's EFER.NX (not forced for NPT)
    assert r.root_role.word == ACC_ALL | NX | PT64_ROOT_4LEVEL | GUEST_MODE
    assert r.warnings == ()
    # kvm_init_shadow_npt_mmu 6.14+: the one-time warning for a direct or non-guest-mode
    # cpu_role fires, and the role (read from is_guest_mode) has guest_mode = 0
    r0 = run(kernel, "npt", "64bit", nested="npt", nested_cr3=NCR3, guest_mode=False)
    assert len(r0.warnings) >= 1
    assert r0.root_role.word == ACC_ALL | NX | PT64_ROOT_4LEVEL


# Register-constant sanity for the helpers used above (valid x86 states).
def test_helper_states_are_valid():
    cr0, cr4, efer = MODES["64bit"]
    assert cr0 & (1 << 31) and cr4 & (1 << 5) and efer & (1 << 8) and efer & (1 << 10)
    assert regs("pae", wp=False, smep=True, smap=True, nx=True) == {
        "cr0": MODES["pae"][0],
        "cr4": MODES["pae"][1] | X86_CR4_SMEP | X86_CR4_SMAP,
        "efer": EFER_NX,
    }
    assert L1_64["cr0"] & X86_CR0_WP


def test_5_10_nested_npt_l2_la57_sets_shadow_root_level_5():
    # 5.10: kvm_init_shadow_npt_mmu sets shadow_root_level from the role (tdp level 4), then
    # shadow_mmu_init_context -> paging64_init_context (L1 EFER.LMA) reads the *live* LA57 of
    # L2 and makes root_level = shadow_root_level = 5 on a 4-level NPT host.
    l1 = regs("64bit", wp=True, nx=True)
    l2 = regs("la57", wp=True, nx=True)
    r = compute_l1_l2("5.10", l1, l2)
    assert r.cpu_role.base.level == PT64_ROOT_4LEVEL
    assert (r.extra["root_level"], r.extra["shadow_root_level"]) == (5, 5)
    assert r.root_role.word == ACC_ALL | NX | WP | GPTE_IS_8_BYTES | PT64_ROOT_5LEVEL
    assert [(p.level, p.gfn) for p in r.root_pages] == [(PT64_ROOT_5LEVEL, NCR3 >> 12)]


def test_4_20_nested_npt_la57_l1_root_level_5_shadow_root_level_4():
    # 4.20 nested_svm_init_mmu_context: kvm_init_shadow_mmu (paging64_init_context: L1 LA57 ->
    # root_level 5, shadow_root_level 5), then shadow_root_level = get_npt_level = 4.
    r = run("4.20", "npt", "la57", wp=True, nx=True, nested="npt", nested_cr3=NCR3)
    assert (r.extra["root_level"], r.extra["shadow_root_level"]) == (5, 4)
    assert r.root_role.word == NX | CR4_PAE | WP | PT64_ROOT_4LEVEL | ACC_ALL


# 21. is_mirror (6.14+) is never set by the role computation ---------------------------------


@pytest.mark.parametrize("tdp", ["ept", "npt", "none"])
@pytest.mark.parametrize("kernel", ["6.14", "6.18"])
def test_is_mirror_never_computed(kernel, tdp):
    # Only kvm_tdp_mmu_alloc_root(vcpu, mirror=true) sets it, for TDX VMs (mirrored TDP);
    # kvm_calc_tdp_mmu_root_page_role / kvm_init_shadow_mmu leave bit 19 at 0.
    r = run(kernel, tdp, "64bit")
    assert "is_mirror" in r.root_role.fields
    assert r.root_role.word & IS_MIRROR == 0
    assert all(p.role.word & IS_MIRROR == 0 for p in r.root_pages)
    assert len(r.root_pages) == 1  # no mirror root next to the normal one
