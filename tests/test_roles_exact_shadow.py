"""Shadow paging (TDP off): exact cpu-side and root roles for every guest paging mode and
every combination of CR0.WP, CR4.SMEP, CR4.SMAP and EFER.NX, era by era.

The expected words are built from the combination by the rule each era's source applies;
see the comments on each ``_expect_*`` function for the kernel functions read.
Constants and helpers: ``tests/test_roles_exact.py``.
"""

from __future__ import annotations

import itertools

import pytest
from test_roles_exact import (
    ACC_ALL,
    CR4_PAE,
    DIRECT,
    EFER_LME,
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
    PT32_ROOT_LEVEL,
    PT32E_ROOT_LEVEL,
    PT64_ROOT_4LEVEL,
    PT64_ROOT_5LEVEL,
    QUADRANT,
    SMAP_ANDNOT_WP,
    SMEP_ANDNOT_WP,
    SMM,
    WP,
    X86_CR4_PAE,
    X86_CR4_PSE,
    on,
    run,
)

SHADOW_MODES = ("nonpaging", "32bit", "pae", "64bit")
COMBOS = list(itertools.product([False, True], repeat=4))  # (wp, smep, smap, nx)


def _mode_flags(mode):
    pg = mode != "nonpaging"
    pae = mode in ("pae", "64bit")
    lma = mode == "64bit"
    return pg, pae, lma


def _expect_4x(kernel, mode, wp, smep, smap, nx):
    """4.18 kvm_init_shadow_mmu writes nxe/cr4_pae/cr0_wp/smep_andnot_wp/smap_andnot_wp
    (guest_mode, smm) into base_role; 4.19 kvm_calc_shadow_mmu_root_page_role computes the same
    fields (plus level/direct/access) and kvm_init_shadow_mmu stores them & mmu_base_role_mask;
    4.20 kvm_calc_mmu_role_common + kvm_calc_shadow_mmu_root_page_role, stored masked.
    Every input is the raw register bit: nothing is gated on CR0.PG."""
    pg, pae, lma = _mode_flags(mode)
    base = (on(nx, NX) | on(pae, CR4_PAE) | on(wp, WP)
            | on(smep and not wp, SMEP_ANDNOT_WP) | on(smap and not wp, SMAP_ANDNOT_WP))
    ext = None
    if kernel == "4.20":
        E = EXT_4_20  # kvm_calc_mmu_role_ext 4.20: raw bits
        ext = (E.VALID | on(pg, E.CR0_PG) | on(pg, E.CR4_PSE)  # PSE is set when paging (MODES)
               | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP))
    # shadow_root_level: nonpaging_init_context / paging32_init_context / paging32E -> 3,
    # paging64_init_context -> 4.  direct_map = !PG.  kvm_mmu_get_page: role = base_role +
    # level + direct + access, and cr4_pae = 0 on direct pages.
    level = PT64_ROOT_4LEVEL if lma else PT32E_ROOT_LEVEL
    root = base | level | on(not pg, DIRECT) | ACC_ALL
    if not pg:
        root &= ~CR4_PAE
    return base, ext, root


def _expect_5_10(mode, wp, smep, smap, nx):
    """5.10 kvm_calc_mmu_role_common (access, nxe, cr0_wp: raw, even with PG=0) +
    kvm_calc_shadow_root_page_role_common (smep/smap_andnot_wp from ext, gpte_is_8_bytes =
    CR4.PAE) + kvm_calc_shadow_mmu_root_page_role (direct = !PG, level 3 unless LMA)."""
    pg, pae, lma = _mode_flags(mode)
    level = PT64_ROOT_4LEVEL if lma else PT32E_ROOT_LEVEL
    base = (ACC_ALL | on(nx, NX) | on(wp, WP) | on(smep and not wp, SMEP_ANDNOT_WP)
            | on(smap and not wp, SMAP_ANDNOT_WP) | on(pae, GPTE_IS_8_BYTES)
            | on(not pg, DIRECT) | level)
    E = EXT_5_10
    ext = (E.VALID | on(pg, E.CR0_PG) | on(pae, E.CR4_PAE) | on(pg, E.CR4_PSE)
           | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP) | E.MAXPHYADDR(48))
    # shadow_root_level equals the role level here; kvm_mmu_get_page forces gpte_is_8_bytes = 1
    # on direct (non-paging) pages.
    root = base | on(not pg, GPTE_IS_8_BYTES)
    return base, ext, root


def _expect_5_15_to_5_18(kernel, mode, wp, smep, smap, nx):
    """5.15/5.17/5.18 kvm_calc_mmu_role_common: efer_nx and cr0_wp only if CR0.PG;
    kvm_calc_mmu_role_ext: every paging bit only if CR0.PG (PKE/LA57 also need LMA);
    kvm_calc_shadow_root_page_role_common: smep/smap_andnot_wp from ext,
    5.15 gpte_is_8_bytes = PG && PAE, 5.17+ has_4_byte_gpte = PG && !PAE."""
    pg, pae, lma = _mode_flags(mode)
    level = PT64_ROOT_4LEVEL if lma else PT32E_ROOT_LEVEL
    if kernel == "5.15":
        bit4 = on(pg and pae, GPTE_IS_8_BYTES)
    else:
        bit4 = on(pg and not pae, HAS_4_BYTE_GPTE)
    base = (ACC_ALL | on(pg and nx, NX) | on(pg and wp, WP)
            | on(pg and smep and not wp, SMEP_ANDNOT_WP)
            | on(pg and smap and not wp, SMAP_ANDNOT_WP) | bit4 | on(not pg, DIRECT) | level)
    E = EXT_5_15
    ext = E.VALID
    if pg:
        ext |= (E.CR0_PG | on(pae, E.CR4_PAE) | E.CR4_PSE | on(smep, E.CR4_SMEP)
                | on(smap, E.CR4_SMAP) | on(lma, E.EFER_LMA))
    # 5.15 kvm_mmu_get_page: direct pages get gpte_is_8_bytes = 1; 5.17/5.18 force nothing.
    root = base | on(kernel == "5.15" and not pg, GPTE_IS_8_BYTES)
    return base, ext, root


def _expect_5_19(mode, wp, smep, smap, nx):
    """5.19+ kvm_calc_cpu_role: PG=0 -> only access, direct (and smm/guest_mode), ext.valid;
    PG=1 -> efer_nx, cr0_wp, smep/smap_andnot_wp, has_4_byte_gpte = !PAE, level 2/3/4/5.
    kvm_init_shadow_mmu: root_role = cpu_role.base with level max'ed to 3 and efer_nx = 1."""
    pg, pae, lma = _mode_flags(mode)
    E = EXT_5_19
    if not pg:
        base = ACC_ALL | DIRECT
        ext = E.VALID
    else:
        base = (ACC_ALL | on(nx, NX) | on(wp, WP) | on(smep and not wp, SMEP_ANDNOT_WP)
                | on(smap and not wp, SMAP_ANDNOT_WP) | on(not pae, HAS_4_BYTE_GPTE)
                | GUEST_LEVEL[mode])
        ext = (E.VALID | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP) | E.CR4_PSE
               | on(lma, E.EFER_LMA))
    root = (base & ~0xF) | max(GUEST_LEVEL[mode], PT32E_ROOT_LEVEL) | NX
    return base, ext, root


def expect_shadow(kernel, mode, wp, smep, smap, nx):
    if kernel in ("4.18", "4.19", "4.20"):
        return _expect_4x(kernel, mode, wp, smep, smap, nx)
    if kernel == "5.10":
        return _expect_5_10(mode, wp, smep, smap, nx)
    if kernel in ("5.15", "5.17", "5.18"):
        return _expect_5_15_to_5_18(kernel, mode, wp, smep, smap, nx)
    return _expect_5_19(mode, wp, smep, smap, nx)


def _cid(c):
    wp, smep, smap, nx = c
    return "-".join(n if v else "no" + n for n, v in
                    (("wp", wp), ("smep", smep), ("smap", smap), ("nx", nx)))


@pytest.mark.parametrize("combo", COMBOS, ids=[_cid(c) for c in COMBOS])
@pytest.mark.parametrize("mode", SHADOW_MODES)
@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_roles_every_wp_smep_smap_nx(kernel, mode, combo):
    wp, smep, smap, nx = combo
    r = run(kernel, "none", mode, wp=wp, smep=smep, smap=smap, nx=nx)
    base, ext, root = expect_shadow(kernel, mode, wp, smep, smap, nx)
    assert r.cpu_role.base.word == base
    if ext is None:
        assert r.cpu_role.ext is None
    else:
        assert r.cpu_role.ext.word == ext
    assert r.root_role.word == root


@pytest.mark.parametrize("mode", SHADOW_MODES)
@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_smm_and_guest_mode_are_copied(kernel, mode):
    # is_smm / is_guest_mode go into the shadow role in every era (4.18 kvm_init_shadow_mmu,
    # 4.19 kvm_calc_shadow_mmu_root_page_role, 4.20+ kvm_calc_mmu_role_common,
    # 5.19+ kvm_calc_cpu_role).  smm survives mmu_base_role_mask as bit 24.
    r = run(kernel, "none", mode, wp=False, smep=True, smap=True, nx=True, smm=True,
            guest_mode=True)
    base, _, root = expect_shadow(kernel, mode, False, True, True, True)
    assert r.cpu_role.base.word == base | SMM | GUEST_MODE
    assert r.root_role.word == root | SMM | GUEST_MODE


# Root pages.  kvm_mmu_get_page (up to 5.19) / mmu_alloc_root (6.0+) give each root page the
# root role with its own level; a 4-byte-gpte guest's four PAE roots cover quadrants 0..3 of
# the guest's one page directory at CR3 (gaddr i << 30, quadrant = gaddr >> (12 + 9 * 2) & 3).

CR3 = 0x12345000


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_32bit_guest_root_pages_are_four_quadrants(kernel):
    r = run(kernel, "none", "32bit", cr3=CR3)
    pages = sorted(r.root_pages, key=lambda p: p.role.quadrant)
    assert len(pages) == 4
    for q, page in enumerate(pages):
        assert page.level == PT32_ROOT_LEVEL
        assert page.gfn == CR3 >> 12
        # root role with level 3 -> 2 and quadrant q; direct = 0, so no gpte-size forcing
        assert page.role.word == (r.root_role.word & ~0xF) | PT32_ROOT_LEVEL | QUADRANT(q)


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_nonpaging_root_pages_are_four_direct_pages(kernel):
    # mmu_alloc_direct_roots with shadow root level 3: four level-2 direct pages for
    # gfn i << 18 (1 GiB each); no quadrant (pre-5.17 only for !direct_map; 5.17+ only with
    # has_4_byte_gpte, which is 0 when PG=0).
    r = run(kernel, "none", "nonpaging", cr3=CR3)
    pages = sorted(r.root_pages, key=lambda p: p.gfn)
    assert [p.gfn for p in pages] == [i << 18 for i in range(4)]
    for page in pages:
        assert page.level == PT32_ROOT_LEVEL
        assert page.role.word == (r.root_role.word & ~0xF) | PT32_ROOT_LEVEL


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_64bit_guest_root_page(kernel):
    r = run(kernel, "none", "64bit", cr3=CR3)
    assert len(r.root_pages) == 1
    page = r.root_pages[0]
    assert (page.level, page.gfn) == (PT64_ROOT_4LEVEL, CR3 >> 12)
    assert page.role.word == r.root_role.word


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_pae_guest_root_pages_are_level_2_quadrant_0(kernel):
    # PAE guest: one level-2 root per present PDPTE (gfn from the PDPTE), quadrant 0.
    r = run(kernel, "none", "pae", cr3=CR3)
    assert r.root_pages
    for page in r.root_pages:
        assert page.level == PT32_ROOT_LEVEL
        assert page.role.word == (r.root_role.word & ~0xF) | PT32_ROOT_LEVEL


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_context_names(kernel):
    r = run(kernel, "none", "64bit")
    assert r.context == ("mmu" if kernel in ("4.18", "4.19") else "root_mmu")
    assert r.warnings == ()


@pytest.mark.parametrize("kernel", ERAS)
def test_shadow_5_level_guest(kernel):
    # LA57 long mode, WP=1, NX=1: level 5 in the role (4.19+ kvm_calc_shadow_mmu_root_page_role
    # / 5.19+ kvm_calc_cpu_role) and in shadow_root_level (paging64_init_context).
    r = run(kernel, "none", "la57", wp=True, nx=True, cr3=CR3)
    if kernel in ("4.18", "4.19", "4.20"):
        assert r.cpu_role.base.word == NX | CR4_PAE | WP
        if kernel == "4.20":
            E = EXT_4_20
            assert r.cpu_role.ext.word == E.VALID | E.CR0_PG | E.CR4_PSE | E.CR4_LA57
        root = NX | CR4_PAE | WP | PT64_ROOT_5LEVEL | ACC_ALL
    elif kernel == "5.10":
        root = ACC_ALL | NX | WP | GPTE_IS_8_BYTES | PT64_ROOT_5LEVEL
        E = EXT_5_10  # no LA57 bit in the 5.10 extended role
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE
                                       | E.MAXPHYADDR(48))
    elif kernel in ("5.15", "5.17", "5.18"):
        root = (ACC_ALL | NX | WP | PT64_ROOT_5LEVEL
                | (GPTE_IS_8_BYTES if kernel == "5.15" else 0))
        E = EXT_5_15
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE
                                       | E.CR4_LA57 | E.EFER_LMA)
    else:
        root = ACC_ALL | NX | WP | PT64_ROOT_5LEVEL
        E = EXT_5_19
        assert r.cpu_role.ext.word == E.VALID | E.CR4_PSE | E.CR4_LA57 | E.EFER_LMA
    assert r.root_role.word == root
    assert [(p.level, p.gfn, p.role.word) for p in r.root_pages] == [
        (PT64_ROOT_5LEVEL, CR3 >> 12, root)]


# Paging off with CR4.PAE=1 and EFER.LME=1 (the middle of the switch to long mode): the bit-4
# field comes from CR4.PAE in the role of some eras, while direct (non-paging) pages force it.

@pytest.mark.parametrize("tdp", ["none", "ept"])
@pytest.mark.parametrize("kernel", ERAS)
def test_nonpaging_with_pae_and_lme_direct_page_forcing(kernel, tdp):
    r = run(kernel, tdp, "nonpaging", wp=True, nx=True, extra_cr4=X86_CR4_PAE | X86_CR4_PSE,
            efer_extra=EFER_LME)
    lvl = PT32E_ROOT_LEVEL if tdp == "none" else PT64_ROOT_4LEVEL  # shadow PAE root / EPT
    if kernel in ("4.18", "4.19", "4.20"):
        # raw nxe, cr4_pae, cr0_wp in the stored role; kvm_mmu_get_page: cr4_pae = 0 if direct
        cpu = (NX | CR4_PAE | WP) if (tdp == "none" or kernel == "4.20") else 0
        root = (cpu & ~CR4_PAE) | lvl | DIRECT | ACC_ALL
    elif kernel == "5.10":
        # raw nxe/cr0_wp, gpte_is_8_bytes = CR4.PAE (shadow) or 1 (TDP); direct pages force 1
        cpu = ACC_ALL | NX | WP | GPTE_IS_8_BYTES | DIRECT | lvl
        root = cpu
    elif kernel == "5.15":
        # PG=0: no efer_nx/cr0_wp; shadow gpte_is_8_bytes = PG && PAE = 0, TDP role sets 1;
        # kvm_mmu_get_page 5.15 forces 1 on direct pages
        cpu = ACC_ALL | DIRECT | lvl | (0 if tdp == "none" else GPTE_IS_8_BYTES)
        root = cpu | GPTE_IS_8_BYTES
    elif kernel in ("5.17", "5.18"):
        cpu = ACC_ALL | DIRECT | lvl  # has_4_byte_gpte = PG && !PAE = 0; nothing forced
        root = cpu
    else:
        cpu = ACC_ALL | DIRECT  # kvm_calc_cpu_role, PG=0
        # shadow: level max(0, 3) and efer_nx forced; TDP: cr0_wp and efer_nx forced
        root = cpu | lvl | NX | (WP if tdp == "ept" else 0)
    assert r.cpu_role.base.word == cpu
    assert r.root_role.word == root
    assert all(p.role.word == (root & ~0xF) | p.level for p in r.root_pages)
