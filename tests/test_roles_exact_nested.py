"""L2 with nested paging: exact roles of guest_mmu (shadowing L1's EPT or NPT) and of the
L2 walker nested_mmu, era by era.  Constants and helpers: ``tests/test_roles_exact.py``.

Request contract (mmulib.compute): ``nested="ept"/"npt"`` reports guest_mmu computed after an
L1 root_mmu init with the same registers and SMM and guest_mode=0, then the request's
guest_mode; cr0/cr4/efer are L1's.  Real flows: VMX calls nested_ept_init_mmu_context from
prepare_vmcs02 before L2's CR0/CR4/EFER are loaded; SVM calls nested_svm_init_mmu_context
before enter_guest_mode up to 6.13 and after it from 6.14 (nested_vmcb02_prepare_control).
"""

from __future__ import annotations

import itertools

import pytest
from test_roles_exact import (
    ACC_ALL,
    AD_DISABLED,
    CR4_PAE,
    DIRECT,
    E_4_20,
    E_5_10,
    E_5_15,
    E_5_17,
    E_5_19,
    ERAS,
    EXT_4_20,
    EXT_5_10,
    EXT_5_15,
    EXT_5_19,
    GPTE_IS_8_BYTES,
    GUEST_LEVEL,
    GUEST_MODE,
    HAS_4_BYTE_GPTE,
    NX,
    PASSTHROUGH,
    PRE_4_20,
    PT64_ROOT_4LEVEL,
    PT64_ROOT_5LEVEL,
    SMAP_ANDNOT_WP,
    SMEP_ANDNOT_WP,
    SMM,
    WP,
    X86_CR4_PKE,
    on,
    run,
    word,
)

EPTP = 0x7000  # page-aligned, so gfn = EPTP >> 12 whatever flags a real EPTP carries
NCR3 = 0x9000

# L1 for the nested tests: 64-bit, WP=1, NX=1, SMEP=1, SMAP=0.
L1 = {"mode": "64bit", "wp": True, "nx": True, "smep": True, "smap": False}

# ---------------------------------------------------------------------------------------------
# Nested EPT (VMX): every combination of L1's EPTP A/D bit and the execute-only capability.

EPT_CASES = list(itertools.product([True, False], [False, True], [False, True]))


@pytest.mark.parametrize("nested_ad, execonly, smm", EPT_CASES,
                         ids=[f"{'ad' if a else 'noad'}-{'xo' if x else 'noxo'}"
                              f"{'-smm' if s else ''}" for a, x, s in EPT_CASES])
@pytest.mark.parametrize("kernel", ERAS)
def test_nested_ept_guest_mmu(kernel, nested_ad, execonly, smm):
    r = run(kernel, "ept", **L1, nested="ept", guest_mode=True, nested_cr3=EPTP,
            nested_ept_ad=nested_ad, execonly=execonly, smm=smm)
    ad = on(not nested_ad, AD_DISABLED)  # every era: ad_disabled = !accessed_dirty
    lvl = PT64_ROOT_4LEVEL
    s = on(smm, SMM)
    if kernel in PRE_4_20:
        # 4.18 kvm_init_shadow_ept_mmu sets only ad_disabled and guest_mode in base_role; the
        # rest (here: smm) is what the L1 init_kvm_tdp_mmu left.  4.19
        # kvm_calc_shadow_ept_root_page_role starts from arch.mmu.base_role (the masked L1
        # TDP role: guest_mode/smm/ad_disabled), sets level 4, direct 0, ad_disabled,
        # guest_mode, access; the stored copy is masked with mmu_base_role_mask.
        assert r.context == "mmu"
        assert r.cpu_role.base.word == s | ad | GUEST_MODE
        assert r.root_role.word == s | ad | GUEST_MODE | lvl | ACC_ALL
    elif kernel in E_4_20:
        # 4.20 kvm_calc_shadow_ept_root_page_role: base.word = root_mmu.mmu_role.base.word,
        # i.e. L1's masked TDP role (nxe, cr4_pae, cr0_wp, smm, ad_disabled of L0), then level
        # 4, direct 0, ad_disabled, guest_mode, access; ext = kvm_calc_mmu_role_ext + execonly.
        assert r.cpu_role.base.word == NX | CR4_PAE | WP | s | ad | GUEST_MODE
        E = EXT_4_20
        assert r.cpu_role.ext.word == (E.VALID | on(execonly, E.EXECONLY) | E.CR0_PG
                                       | E.CR4_PSE | E.CR4_SMEP)
        assert r.root_role.word == NX | CR4_PAE | WP | s | ad | GUEST_MODE | lvl | ACC_ALL
    elif kernel in E_5_10:
        # 5.10 kvm_calc_shadow_ept_root_page_role: smm from root_mmu, level = EPTP walk
        # level, gpte_is_8_bytes, ad_disabled, guest_mode, access, and the marker
        # cr0_wp = smap_andnot_wp = 1; ext = kvm_calc_mmu_role_ext (L1 regs) + execonly.
        word = (s | lvl | GPTE_IS_8_BYTES | ad | GUEST_MODE | ACC_ALL | WP | SMAP_ANDNOT_WP)
        assert r.cpu_role.base.word == word
        E = EXT_5_10
        assert r.cpu_role.ext.word == (E.VALID | on(execonly, E.EXECONLY) | E.CR0_PG
                                       | E.CR4_PAE | E.CR4_PSE | E.CR4_SMEP | E.MAXPHYADDR(48))
        assert r.root_role.word == word
    elif kernel in E_5_15 + E_5_17:
        # 5.15/5.17/5.18: as 5.10 without the WP/SMAP marker; ext is only execonly + valid.
        bit4 = GPTE_IS_8_BYTES if kernel == "5.15" else 0  # 5.17+: has_4_byte_gpte = false
        word = s | lvl | bit4 | ad | GUEST_MODE | ACC_ALL
        assert r.cpu_role.base.word == word
        assert r.cpu_role.ext.word == EXT_5_15.VALID | on(execonly, EXT_5_15.EXECONLY)
        assert r.root_role.word == word
    else:
        # 5.19+ kvm_calc_shadow_ept_root_page_role: starts from an all-zero role, warns once
        # when in SMM and never sets the smm bit; sets level, ad_disabled, guest_mode,
        # access; root_role = the same base word.
        word = lvl | ad | GUEST_MODE | ACC_ALL
        assert r.cpu_role.base.word == word
        assert r.cpu_role.ext.word == EXT_5_19.VALID | on(execonly, EXT_5_19.EXECONLY)
        assert r.root_role.word == word
        assert bool(r.warnings) == smm
    if kernel not in PRE_4_20:
        assert (r.context, r.mmu, r.walk_mmu) == ("guest_mmu", "guest_mmu", "nested_mmu")
    if kernel not in E_5_19:
        assert r.warnings == ()
        # kvm_init_shadow_ept_mmu (4.18-5.18): ept_ad = accessed_dirty, direct_map = false,
        # root_level = shadow_root_level = the EPT level
        assert r.extra["ept_ad"] == int(nested_ad)
        assert r.extra["direct_map"] == 0
        assert (r.extra["root_level"], r.extra["shadow_root_level"]) == (lvl, lvl)
    # the root shadows L1's EPT table at EPTP: one page at the EPT level
    assert [(p.level, p.gfn) for p in r.root_pages] == [(lvl, EPTP >> 12)]
    assert r.root_pages[0].role.word == r.root_role.word


@pytest.mark.parametrize("kernel", E_5_10 + E_5_15 + E_5_17 + E_5_19)
def test_nested_ept_5_level(kernel):
    # 5.10+ kvm_init_shadow_ept_mmu: level = vmx_eptp_page_walk_level(eptp) (4.x: always 4).
    r = run(kernel, "ept", **L1, nested="ept", guest_mode=True, nested_cr3=EPTP,
            nested_ept_level=5, max_tdp_level=5)
    assert r.root_role.level == PT64_ROOT_5LEVEL
    assert r.cpu_role.base.level == PT64_ROOT_5LEVEL
    if kernel in E_5_19:
        assert r.root_role.word == PT64_ROOT_5LEVEL | GUEST_MODE | ACC_ALL
    assert [(p.level, p.gfn) for p in r.root_pages] == [(PT64_ROOT_5LEVEL, EPTP >> 12)]


@pytest.mark.parametrize("kernel", ERAS)
def test_nested_ept_new_pgd_role(kernel):
    # The role passed to __kvm_mmu_new_cr3 (4.19, 4.20) / __kvm_mmu_new_pgd (5.10-5.17) by
    # kvm_init_shadow_ept_mmu is the unmasked computed base: for 4.19/4.20 it still has level 4
    # and access 7, which the stored (masked) copy has lost.
    r = run(kernel, "ept", **L1, nested="ept", guest_mode=True, nested_cr3=EPTP)
    if kernel == "4.19":
        assert word(r.extra["new_pgd_role"]) == GUEST_MODE | PT64_ROOT_4LEVEL | ACC_ALL
    elif kernel == "4.20":
        assert word(r.extra["new_pgd_role"]) == (NX | CR4_PAE | WP | GUEST_MODE
                                                | PT64_ROOT_4LEVEL | ACC_ALL)
    elif kernel == "5.10":
        assert word(r.extra["new_pgd_role"]) == (PT64_ROOT_4LEVEL | GPTE_IS_8_BYTES | GUEST_MODE
                                                | ACC_ALL | WP | SMAP_ANDNOT_WP)
    elif kernel in ("5.15", "5.17"):
        bit4 = GPTE_IS_8_BYTES if kernel == "5.15" else 0
        assert word(r.extra["new_pgd_role"]) == (PT64_ROOT_4LEVEL | bit4 | GUEST_MODE
                                                | ACC_ALL)


# ---------------------------------------------------------------------------------------------
# Nested NPT (SVM).  guest_mode at the time of the init: 0 up to 6.13, 1 from 6.14.


def _npt_guest_mode(kernel):
    return kernel in ("6.14", "6.18")


@pytest.mark.parametrize("smep, smap", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("wp, nx", [(True, True), (False, False)])
@pytest.mark.parametrize("kernel", ERAS)
def test_nested_npt_guest_mmu(kernel, wp, nx, smep, smap):
    gm = _npt_guest_mode(kernel)
    r = run(kernel, "npt", "64bit", wp=wp, nx=nx, smep=smep, smap=smap, nested="npt",
            nested_cr3=NCR3, guest_mode=gm)
    g = on(gm, GUEST_MODE)
    lvl = PT64_ROOT_4LEVEL
    l1_andnot = on(smep and not wp, SMEP_ANDNOT_WP) | on(smap and not wp, SMAP_ANDNOT_WP)
    if kernel in PRE_4_20 + E_4_20:
        # 4.18-4.20 nested_svm_init_mmu_context: kvm_init_shadow_mmu on L1's live registers
        # (L2's state is loaded afterwards), then shadow_root_level = get_npt_level = 4.
        # The role keeps L1's CR0.WP: nothing forces it in these releases.
        base = on(nx, NX) | CR4_PAE | on(wp, WP) | l1_andnot | g
        assert r.cpu_role.base.word == base
        if kernel == "4.20":
            E = EXT_4_20
            assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PSE
                                           | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP))
        # root: level = shadow_root_level (4), direct_map = false, access = ACC_ALL
        assert r.root_role.word == base | lvl | ACC_ALL
    elif kernel in E_5_10:
        # 5.10 kvm_calc_shadow_npt_root_page_role reads the live vCPU registers (here the L2
        # defaults equal L1's): common + smep/smap_andnot_wp + gpte_is_8_bytes = CR4.PAE,
        # direct = 0, level = kvm_mmu_get_tdp_level (4).
        word = (ACC_ALL | on(nx, NX) | on(wp, WP) | l1_andnot | GPTE_IS_8_BYTES | lvl | g)
        assert r.cpu_role.base.word == word
        assert r.root_role.word == word
    elif kernel in E_5_15 + E_5_17:
        # 5.15-5.18 kvm_init_shadow_npt_mmu: regs = {cr0 = PG (SVM passes X86_CR0_PG only),
        # L1 CR4 & ~PKE, L1 EFER}; so cr0_wp = 0 and smep/smap_andnot_wp = L1's SMEP/SMAP.
        bit4 = GPTE_IS_8_BYTES if kernel == "5.15" else 0
        word = (ACC_ALL | on(nx, NX) | on(smep, SMEP_ANDNOT_WP) | on(smap, SMAP_ANDNOT_WP)
                | bit4 | lvl | g)
        assert r.cpu_role.base.word == word
        E = EXT_5_15
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE
                                       | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP)
                                       | E.EFER_LMA)
        assert r.root_role.word == word
    else:
        # 5.19+ kvm_init_shadow_npt_mmu: cpu_role = kvm_calc_cpu_role({PG, CR4 & ~PKE, EFER}),
        # root_role = cpu_role.base with level = kvm_mmu_get_tdp_level; efer_nx NOT forced.
        cpu = (ACC_ALL | on(nx, NX) | on(smep, SMEP_ANDNOT_WP) | on(smap, SMAP_ANDNOT_WP)
               | PT64_ROOT_4LEVEL | g)
        assert r.cpu_role.base.word == cpu
        E = EXT_5_19
        assert r.cpu_role.ext.word == (E.VALID | E.CR4_PSE | on(smep, E.CR4_SMEP)
                                       | on(smap, E.CR4_SMAP) | E.EFER_LMA)
        assert r.root_role.word == (cpu & ~0xF) | lvl
    if kernel not in PRE_4_20:
        assert (r.context, r.mmu, r.walk_mmu) == ("guest_mmu", "guest_mmu", "nested_mmu")
    assert r.warnings == ()
    assert [(p.level, p.gfn) for p in r.root_pages] == [(lvl, NCR3 >> 12)]
    assert r.root_pages[0].role.word == r.root_role.word


@pytest.mark.parametrize("kernel", ERAS)
def test_nested_npt_smm(kernel):
    # smm is read live (is_smm) by every era's NPT path; no warning (only EPT warns).
    gm = _npt_guest_mode(kernel)
    r0 = run(kernel, "npt", **L1, nested="npt", nested_cr3=NCR3, guest_mode=gm)
    r1 = run(kernel, "npt", **L1, nested="npt", nested_cr3=NCR3, guest_mode=gm, smm=True)
    assert r1.cpu_role.base.word == r0.cpu_role.base.word | SMM
    assert r1.root_role.word == r0.root_role.word | SMM
    assert r1.warnings == ()


# ---------------------------------------------------------------------------------------------
# nested_mmu: the L2 GVA -> L1 GPA walker (init_kvm_nested_mmu), with L2's registers.

WALKER_MODES = ("nonpaging", "32bit", "pae", "64bit")


@pytest.mark.parametrize("mode", WALKER_MODES)
@pytest.mark.parametrize("kernel", ERAS)
def test_nested_mmu_walker_role(kernel, mode):
    # L2 with WP=0, SMEP=1, NX=1 so that the *_andnot_wp term shows where it is computed.
    r = run(kernel, "ept", mode, wp=False, smep=True, nx=True, context="nested_mmu",
            guest_mode=True)
    pg = mode != "nonpaging"
    pae = mode in ("pae", "64bit")
    lma = mode == "64bit"
    assert r.context == "nested_mmu"
    assert r.root_role is None
    if kernel in PRE_4_20:
        # 4.18/4.19 init_kvm_nested_mmu sets root_level/nx and callbacks only: the nested_mmu
        # base_role is never written and stays as zero-allocated.
        assert r.cpu_role.base.word == 0
    elif kernel in E_4_20:
        # 4.20 init_kvm_nested_mmu: kvm_calc_mmu_role_common(base_only=false) & mask
        assert r.cpu_role.base.word == NX | on(pae, CR4_PAE) | GUEST_MODE
        E = EXT_4_20
        assert r.cpu_role.ext.word == (E.VALID | on(pg, E.CR0_PG) | on(pg, E.CR4_PSE)
                                       | E.CR4_SMEP)
    elif kernel in E_5_10:
        # 5.10 init_kvm_nested_mmu: kvm_calc_mmu_role_common(base_only=false), unmasked
        assert r.cpu_role.base.word == ACC_ALL | NX | GUEST_MODE
        E = EXT_5_10
        assert r.cpu_role.ext.word == (E.VALID | on(pg, E.CR0_PG) | on(pae, E.CR4_PAE)
                                       | on(pg, E.CR4_PSE) | E.CR4_SMEP | E.MAXPHYADDR(48))
    elif kernel in E_5_15 + E_5_17:
        # 5.15-5.18 kvm_calc_nested_mmu_role: shadow_common + direct = 1 (always) + level =
        # role_regs_to_root_level (0 when PG=0)
        if kernel == "5.15":
            bit4 = on(pg and pae, GPTE_IS_8_BYTES)
        else:
            bit4 = on(pg and not pae, HAS_4_BYTE_GPTE)
        assert r.cpu_role.base.word == (ACC_ALL | on(pg, NX) | on(pg, SMEP_ANDNOT_WP) | bit4
                                        | DIRECT | GUEST_LEVEL[mode] | GUEST_MODE)
    else:
        # 5.19+: the cpu_role from kvm_init_mmu as is (direct only when PG=0)
        if pg:
            assert r.cpu_role.base.word == (ACC_ALL | NX | SMEP_ANDNOT_WP
                                            | on(not pae, HAS_4_BYTE_GPTE)
                                            | GUEST_LEVEL[mode] | GUEST_MODE)
            E = EXT_5_19
            assert r.cpu_role.ext.word == (E.VALID | E.CR4_PSE | E.CR4_SMEP
                                           | on(lma, E.EFER_LMA))
        else:
            assert r.cpu_role.base.word == ACC_ALL | DIRECT | GUEST_MODE
            assert r.cpu_role.ext.word == EXT_5_19.VALID


# Pin the L2 walker's ext with PKE in long mode vs legacy mode (4.20/5.10 raw, 5.15+ LMA-gated)
@pytest.mark.parametrize("kernel", ERAS)
def test_nested_mmu_walker_pke_gating(kernel):
    r = run(kernel, "ept", "pae", context="nested_mmu", guest_mode=True, extra_cr4=X86_CR4_PKE)
    if kernel == "4.20":
        assert r.cpu_role.ext.word & EXT_4_20.CR4_PKE
    elif kernel == "5.10":
        assert r.cpu_role.ext.word & EXT_5_10.CR4_PKE
    elif kernel in E_5_15 + E_5_17:
        assert not r.cpu_role.ext.word & EXT_5_15.CR4_PKE
    elif kernel in E_5_19:
        assert not r.cpu_role.ext.word & EXT_5_19.CR4_PKE


@pytest.mark.parametrize("kernel", E_5_19)
def test_nested_npt_passthrough_root_page(kernel):
    # 5-level host NPT shadowing L1's 4-level NPT: the level-5 root has no guest table of
    # its own, so it is created with passthrough = 1 (kvm_init_shadow_npt_mmu) and keeps it
    # (5.19 kvm_mmu_get_page clears it only at or below cpu_role.base.level; 6.0+
    # mmu_alloc_root copies root_role).
    gm = _npt_guest_mode(kernel)
    r = run(kernel, "npt", **L1, nested="npt", nested_cr3=NCR3, host_la57=True, guest_mode=gm)
    word = (ACC_ALL | NX | SMEP_ANDNOT_WP | PT64_ROOT_5LEVEL | PASSTHROUGH | on(gm, GUEST_MODE))
    assert r.root_role.word == word
    assert [(p.level, p.gfn, p.role.word) for p in r.root_pages] == [
        (PT64_ROOT_5LEVEL, NCR3 >> 12, word)]
