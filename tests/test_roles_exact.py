"""Exact role words, era by era, derived by hand from the kernel source.

Every expected word in ``tests/test_roles_exact*.py`` is spelled out as bit arithmetic
on the named constants below, each followed by a comment that names the kernel
function (and release) whose logic puts that term there.  Nothing is copied from
mmulib's own output: when a test and the model disagree, the kernel source decides.

This module holds the constants and request helpers shared by the other
``test_roles_exact_*`` files, plus the TDP tests (L1 and L2-without-nested-paging
under EPT and NPT, A/D on and off, 5-level TDP, SMM).

Trees read (bare mirrors under /work/.mirror, see README "Where the facts come from"):
4.18 wenhuizhang/linux-4.18-i (linux-4.18/), 4.19 0x88888888/Linux-4.19 (first commit),
4.20 a4913994/linux-4.20, 5.10 wqhot/linux-5.10, 5.15 wowk/linux-5.15 (5.15.55),
5.17 dunli/linux-5.17 (5.17-rc5), 5.18 esuoyanyu/kernel-5.18 (5.18.12, common/),
5.19 yishangzhang/linux-5.19, 6.4 julianw1010/WASP-linux-6.4.0, 6.14 perishh/linux-6.14,
6.18 matankalina/linux-6.19.10-fork (6.19; its role code is what mmulib calls 6.18).
File names: ``arch/x86/kvm/mmu.c`` up to 4.20, ``arch/x86/kvm/mmu/mmu.c`` from 5.10;
role unions in ``arch/x86/include/asm/kvm_host.h``.
"""

from __future__ import annotations

import pytest

from mmulib import Request
from mmulib.compute import compute

ERAS = ("4.18", "4.19", "4.20", "5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18")
PRE_4_20 = ("4.18", "4.19")  # one embedded struct kvm_mmu, no extended role
E_4_20 = ("4.20",)
E_5_10 = ("5.10",)
E_5_15 = ("5.15",)  # role_regs (5.14 cleanup), gpte_is_8_bytes still the bit-4 name
E_5_17 = ("5.17", "5.18")  # has_4_byte_gpte; mmu_role still one union
E_5_19 = ("5.19", "6.4", "6.14", "6.18")  # cpu_role / root_role split
MMU_ROLE_ERAS = E_4_20 + E_5_10 + E_5_15 + E_5_17  # union kvm_mmu_role mmu_role
BASE_ONLY_ERAS = ("4.20", "5.10", "5.15", "5.17")  # have kvm_mmu_calc_root_page_role(base_only)

# ---------------------------------------------------------------------------------------------
# Architectural register bits (arch/x86/include/uapi/asm/processor-flags.h, asm/msr-index.h).
X86_CR0_PE = 1 << 0
X86_CR0_MP = 1 << 1
X86_CR0_ET = 1 << 4
X86_CR0_NE = 1 << 5
X86_CR0_WP = 1 << 16
X86_CR0_PG = 1 << 31
X86_CR4_PSE = 1 << 4
X86_CR4_PAE = 1 << 5
X86_CR4_PGE = 1 << 7
X86_CR4_LA57 = 1 << 12
X86_CR4_SMEP = 1 << 20
X86_CR4_SMAP = 1 << 21
X86_CR4_PKE = 1 << 22
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NX = 1 << 11

# ---------------------------------------------------------------------------------------------
# union kvm_mmu_page_role (kvm_host.h).  GCC packs x86 bitfields from bit 0 upwards, so a
# field's bit is the sum of the widths declared before it.  The same offsets hold in every era;
# only some names change.
PT32_ROOT_LEVEL = 2  # level:4, bits 0-3 (PT*_ROOT_LEVEL from arch/x86/kvm/mmu.h)
PT32E_ROOT_LEVEL = 3
PT64_ROOT_4LEVEL = 4
PT64_ROOT_5LEVEL = 5
BIT4 = 1 << 4  # after level:4
CR4_PAE = BIT4  # 4.18-4.20: cr4_pae (1 = 8-byte gptes)
GPTE_IS_8_BYTES = BIT4  # 5.10-5.15: gpte_is_8_bytes (same sense)
HAS_4_BYTE_GPTE = BIT4  # 5.17+: has_4_byte_gpte (inverted sense: 1 = 2-level 32-bit guest)


def QUADRANT(q: int) -> int:
    """quadrant:2 sits after level:4 and the bit-4 field."""
    return q << 5


DIRECT = 1 << 7
ACC_EXEC_MASK, ACC_WRITE_MASK, ACC_USER_MASK = 1, 2, 4  # mmu.c (4.x) / mmu/spte.h (5.x+)
ACC_ALL = (ACC_EXEC_MASK | ACC_WRITE_MASK | ACC_USER_MASK) << 8  # access:3 at bits 8-10
INVALID = 1 << 11
NX = 1 << 12  # nxe (4.18-5.10) / efer_nx (5.14+)
WP = 1 << 13  # cr0_wp
SMEP_ANDNOT_WP = 1 << 14
SMAP_ANDNOT_WP = 1 << 15
AD_DISABLED = 1 << 16
GUEST_MODE = 1 << 17
PASSTHROUGH = 1 << 18  # 5.19+ (a pad bit before)
IS_MIRROR = 1 << 19  # 6.14+ (a pad bit before)
SMM = 1 << 24  # smm:8 at bits 24-31; only ever 0 or 1

# mmu_base_role_mask (4.19, 4.20 mmu.c): a role with cr0_wp, cr4_pae, nxe, smep_andnot_wp,
# smap_andnot_wp, smm = 1, guest_mode and ad_disabled set.
MMU_BASE_ROLE_MASK = (WP | CR4_PAE | NX | SMEP_ANDNOT_WP | SMAP_ANDNOT_WP | SMM | GUEST_MODE
                      | AD_DISABLED)


# union kvm_mmu_extended_role (kvm_host.h), bit by bit per era.
class EXT_4_20:
    VALID, EXECONLY, CR0_PG, CR4_PSE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
    CR4_PKE, CR4_SMAP, CR4_SMEP, CR4_LA57 = 1 << 4, 1 << 5, 1 << 6, 1 << 7


class EXT_5_10:
    VALID, EXECONLY, CR0_PG, CR4_PAE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
    CR4_PSE, CR4_PKE, CR4_SMAP, CR4_SMEP = 1 << 4, 1 << 5, 1 << 6, 1 << 7

    @staticmethod
    def MAXPHYADDR(n: int) -> int:  # maxphyaddr:6 at bits 8-13
        return n << 8


class EXT_5_15:  # also 5.17 and 5.18
    VALID, EXECONLY, CR0_PG, CR4_PAE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
    CR4_PSE, CR4_PKE, CR4_SMAP, CR4_SMEP = 1 << 4, 1 << 5, 1 << 6, 1 << 7
    CR4_LA57, EFER_LMA = 1 << 8, 1 << 9


class EXT_5_19:  # 5.19 ... 6.18 (cr0_pg and cr4_pae removed)
    VALID, EXECONLY, CR4_PSE, CR4_PKE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
    CR4_SMAP, CR4_SMEP, CR4_LA57, EFER_LMA = 1 << 4, 1 << 5, 1 << 6, 1 << 7


# ---------------------------------------------------------------------------------------------
# Valid register states.  Protected mode with paging off, 2-level 32-bit, PAE, 4-level long
# mode, 5-level long mode.  LMA needs LME+PG+PAE; PSE is set whenever paging is on.
CR0_NOPAGING = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE
CR0_PAGING = CR0_NOPAGING | X86_CR0_PG
MODES = {
    #            cr0           cr4                          efer
    "nonpaging": (CR0_NOPAGING, 0, 0),
    "32bit": (CR0_PAGING, X86_CR4_PSE, 0),
    "pae": (CR0_PAGING, X86_CR4_PSE | X86_CR4_PAE, 0),
    "64bit": (CR0_PAGING, X86_CR4_PSE | X86_CR4_PAE, EFER_SCE | EFER_LME | EFER_LMA),
    "la57": (CR0_PAGING, X86_CR4_PSE | X86_CR4_PAE | X86_CR4_LA57, EFER_SCE | EFER_LME | EFER_LMA),
}
GUEST_LEVEL = {"nonpaging": 0, "32bit": 2, "pae": 3, "64bit": 4, "la57": 5}


def regs(mode: str, wp: bool = True, smep: bool = False, smap: bool = False, nx: bool = True,
         extra_cr4: int = 0) -> dict[str, int]:
    """cr0/cr4/efer for a guest mode plus the WP/SMEP/SMAP/NX switches."""
    cr0, cr4, efer = MODES[mode]
    return {
        "cr0": cr0 | (X86_CR0_WP if wp else 0),
        "cr4": cr4 | (X86_CR4_SMEP if smep else 0) | (X86_CR4_SMAP if smap else 0) | extra_cr4,
        "efer": efer | (EFER_NX if nx else 0),
    }


def run(kernel: str, tdp: str, mode: str = "64bit", *, wp: bool = True, smep: bool = False,
        smap: bool = False, nx: bool = True, extra_cr4: int = 0, efer_extra: int = 0, **kw):
    """compute() for one era and guest state; keyword arguments go to Request."""
    kw.setdefault("cr3", 0x1000)
    state = regs(mode, wp, smep, smap, nx, extra_cr4)
    state["efer"] |= efer_extra
    return compute(Request(kernel=kernel, tdp=tdp, **state, **kw))


def word(role) -> int:
    """A role word from a Role or a bare int (``extra`` entries may be either)."""
    return role if isinstance(role, int) else role.word


def on(flag: bool, bit: int) -> int:
    """``bit`` if ``flag`` else 0 (reads like the C ``role.x = flag``)."""
    return bit if flag else 0


# ---------------------------------------------------------------------------------------------
# Self-checks of the constants against values stated in kernel-roles.md / the C initialisers.


def test_mmu_base_role_mask_word():
    # 4.19/4.20 mmu.c mmu_base_role_mask: bits 4, 12-17 and 24.
    assert MMU_BASE_ROLE_MASK == 0x0103F010


def test_access_all_is_seven_in_bits_8_to_10():
    assert ACC_ALL == 0x700


# ---------------------------------------------------------------------------------------------
# TDP: a 64-bit L1 guest under EPT, A/D on and off.  Guest: WP=1, NX=1, SMEP=1, SMAP=1, so the
# smep/smap_andnot_wp terms are 0 for every era (they need WP=0) and only the guest's NX/WP and
# the paging bits decide what differs between eras.

EPT_GUEST = {"mode": "64bit", "wp": True, "nx": True, "smep": True, "smap": True}


@pytest.mark.parametrize("ept_ad", [True, False], ids=["ad", "noad"])
@pytest.mark.parametrize("kernel", ERAS)
def test_ept_64bit_guest(kernel, ept_ad):
    r = run(kernel, "ept", **EPT_GUEST, ept_ad=ept_ad)
    ad = on(not ept_ad, AD_DISABLED)  # every era: ad_disabled = (shadow_accessed_mask == 0)
    lvl = PT64_ROOT_4LEVEL  # get_ept_level / kvm_mmu_get_tdp_level: max 4 -> 4
    assert r.era.name == kernel
    if kernel in PRE_4_20:
        # 4.18 init_kvm_tdp_mmu: base_role.word = 0, then guest_mode, smm, ad_disabled only.
        # 4.19 kvm_calc_tdp_mmu_root_page_role has the same fields plus level/direct/access,
        # which mmu_base_role_mask removes from the stored base_role.
        assert r.cpu_role.base.word == ad
        assert r.cpu_role.ext is None
        # kvm_mmu_get_page (4.18/4.19): base_role + level + direct + access, cr4_pae=0 if direct
        assert r.root_role.word == ad | lvl | DIRECT | ACC_ALL
    elif kernel == "4.20":
        # 4.20 kvm_calc_mmu_role_common: nxe, cr4_pae, cr0_wp from the guest; TDP adds
        # ad_disabled/level/direct; init_kvm_tdp_mmu stores it masked (level/direct/access gone)
        assert r.cpu_role.base.word == NX | CR4_PAE | WP | ad
        # 4.20 kvm_calc_mmu_role_ext: raw CR0.PG and CR4 bits, valid
        E = EXT_4_20
        assert r.cpu_role.ext.word == E.VALID | E.CR0_PG | E.CR4_PSE | E.CR4_SMAP | E.CR4_SMEP
        # kvm_mmu_get_page 4.20: direct page -> cr4_pae forced to 0
        assert r.root_role.word == NX | WP | ad | lvl | DIRECT | ACC_ALL
    elif kernel == "5.10":
        # 5.10 kvm_calc_tdp_mmu_root_page_role: common (access, nxe, cr0_wp) + ad_disabled,
        # level, direct, gpte_is_8_bytes = 1; stored unmasked
        word = ACC_ALL | NX | WP | ad | lvl | DIRECT | GPTE_IS_8_BYTES
        assert r.cpu_role.base.word == word
        E = EXT_5_10  # kvm_calc_mmu_role_ext 5.10: raw bits + cpuid_maxphyaddr
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE | E.CR4_SMAP
                                       | E.CR4_SMEP | E.MAXPHYADDR(48))
        assert r.root_role.word == word  # page_role_for_level / kvm_mmu_get_page: same bits
    elif kernel in E_5_15 + E_5_17:
        # 5.15/5.17/5.18 kvm_calc_tdp_mmu_root_page_role: efer_nx/cr0_wp from the guest (PG=1)
        bit4 = GPTE_IS_8_BYTES if kernel == "5.15" else 0  # 5.17+: has_4_byte_gpte = false
        word = ACC_ALL | NX | WP | ad | lvl | DIRECT | bit4
        assert r.cpu_role.base.word == word
        E = EXT_5_15  # kvm_calc_mmu_role_ext 5.15+: paging bits only when CR0.PG, LMA-gated
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE | E.CR4_SMAP
                                       | E.CR4_SMEP | E.EFER_LMA)
        assert r.root_role.word == word
    else:
        # 5.19+ kvm_calc_cpu_role: PG=1 -> efer_nx, cr0_wp, has_4_byte_gpte = !PAE = 0, level 4
        assert r.cpu_role.base.word == ACC_ALL | NX | WP | PT64_ROOT_4LEVEL
        E = EXT_5_19
        assert r.cpu_role.ext.word == (E.VALID | E.CR4_PSE | E.CR4_SMAP | E.CR4_SMEP
                                       | E.EFER_LMA)
        # kvm_calc_tdp_mmu_root_page_role 5.19+: cr0_wp and efer_nx forced to 1
        assert r.root_role.word == ACC_ALL | WP | NX | ad | lvl | DIRECT
    assert r.cpu_role.as_u64 == r.cpu_role.base.word | (
        (r.cpu_role.ext.word if r.cpu_role.ext else 0) << 32)


@pytest.mark.parametrize("kernel", ERAS)
def test_ept_root_page_is_one_direct_page_at_gfn_0(kernel):
    # mmu_alloc_direct_roots (all eras; the TDP MMU from 5.10 likewise): one root at the TDP
    # level with gfn 0, role = the root role.
    r = run(kernel, "ept", **EPT_GUEST)
    assert len(r.root_pages) == 1
    page = r.root_pages[0]
    assert (page.level, page.gfn) == (PT64_ROOT_4LEVEL, 0)
    assert page.role.word == r.root_role.word


@pytest.mark.parametrize("kernel", ERAS)
def test_npt_64bit_guest(kernel):
    # NPT: shadow_accessed_mask = PT_ACCESSED_MASK (never 0 on SVM), so ad_disabled = 0 even
    # when the request's EPT A/D switch is off.
    r = run(kernel, "npt", **EPT_GUEST, ept_ad=False)
    lvl = PT64_ROOT_4LEVEL  # get_npt_level (4.x), get_max_npt_level (5.10, 5.15), no LA57 host
    if kernel in PRE_4_20:
        assert r.cpu_role.base.word == 0  # init_kvm_tdp_mmu / masked TDP role: nothing left
        assert r.root_role.word == lvl | DIRECT | ACC_ALL
    elif kernel == "4.20":
        assert r.cpu_role.base.word == NX | CR4_PAE | WP
        assert r.root_role.word == NX | WP | lvl | DIRECT | ACC_ALL
    elif kernel == "5.10":
        assert r.root_role.word == ACC_ALL | NX | WP | lvl | DIRECT | GPTE_IS_8_BYTES
    elif kernel == "5.15":
        assert r.root_role.word == ACC_ALL | NX | WP | lvl | DIRECT | GPTE_IS_8_BYTES
    elif kernel in E_5_17:
        assert r.root_role.word == ACC_ALL | NX | WP | lvl | DIRECT
    else:
        assert r.cpu_role.base.word == ACC_ALL | NX | WP | PT64_ROOT_4LEVEL
        assert r.root_role.word == ACC_ALL | WP | NX | lvl | DIRECT


# 5-level TDP.  EPT: VMX reports 5 only with 5-level EPT, and kvm_mmu_get_tdp_level (5.10+) /
# get_ept_level (4.x) still pick 4 unless guest MAXPHYADDR > 48.


@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize(
    "max_level, maxphyaddr, level",
    [(5, 52, PT64_ROOT_5LEVEL), (5, 48, PT64_ROOT_4LEVEL), (4, 52, PT64_ROOT_4LEVEL)],
)
def test_ept_tdp_level(kernel, max_level, maxphyaddr, level):
    r = run(kernel, "ept", "la57", max_tdp_level=max_level, maxphyaddr=maxphyaddr)
    assert r.root_role.level == level
    assert r.root_pages[0].level == level
    if kernel in E_5_19:
        # guest LA57 shows in cpu_role only: level 5, ext.cr4_la57 (LMA-gated)
        E = EXT_5_19
        assert r.cpu_role.base.word == ACC_ALL | NX | WP | PT64_ROOT_5LEVEL
        assert r.cpu_role.ext.word == E.VALID | E.CR4_PSE | E.CR4_LA57 | E.EFER_LMA
        assert r.root_role.word == ACC_ALL | WP | NX | level | DIRECT
    elif kernel in E_5_15 + E_5_17:
        bit4 = GPTE_IS_8_BYTES if kernel == "5.15" else 0
        assert r.root_role.word == ACC_ALL | NX | WP | level | DIRECT | bit4
    elif kernel == "5.10":
        E = EXT_5_10  # no cr4_la57 in the 5.10 extended role; maxphyaddr is there instead
        assert r.cpu_role.ext.word == (E.VALID | E.CR0_PG | E.CR4_PAE | E.CR4_PSE
                                       | E.MAXPHYADDR(maxphyaddr))
        assert r.root_role.word == ACC_ALL | NX | WP | level | DIRECT | GPTE_IS_8_BYTES
    elif kernel == "4.20":
        E = EXT_4_20
        assert r.cpu_role.ext.word == E.VALID | E.CR0_PG | E.CR4_PSE | E.CR4_LA57
        assert r.root_role.word == NX | WP | level | DIRECT | ACC_ALL
    else:
        assert r.root_role.word == level | DIRECT | ACC_ALL


@pytest.mark.parametrize("kernel", ERAS)
def test_npt_on_la57_host(kernel):
    # SVM: 4.x get_npt_level and 5.10 get_max_npt_level return 4 on any 64-bit host; from 5.15
    # get_max_npt_level / get_npt_level return 5 when the host uses 5-level paging, and
    # kvm_configure_mmu makes it the forced tdp_root_level.
    r = run(kernel, "npt", "64bit", host_la57=True)
    level = PT64_ROOT_4LEVEL if kernel in PRE_4_20 + E_4_20 + E_5_10 else PT64_ROOT_5LEVEL
    assert r.root_role.level == level
    if kernel in E_5_19:
        assert r.root_role.word == ACC_ALL | WP | NX | level | DIRECT


# ---------------------------------------------------------------------------------------------
# L2 without nested paging (L0 TDP, guest_mode=1) and SMM: both are plain role bits in the TDP
# root role of every era (is_guest_mode / is_smm copied in).


@pytest.mark.parametrize("tdp", ["ept", "npt"])
@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("smm, guest_mode", [(True, False), (False, True), (True, True)],
                         ids=["smm", "l2", "l2-smm"])
def test_tdp_smm_and_guest_mode_bits(kernel, tdp, smm, guest_mode):
    r = run(kernel, tdp, **EPT_GUEST, smm=smm, guest_mode=guest_mode)
    extra = on(smm, SMM) | on(guest_mode, GUEST_MODE)
    lvl = PT64_ROOT_4LEVEL
    if kernel in PRE_4_20:
        assert r.cpu_role.base.word == extra
        assert r.root_role.word == extra | lvl | DIRECT | ACC_ALL
    elif kernel == "4.20":
        assert r.cpu_role.base.word == extra | NX | CR4_PAE | WP
        assert r.root_role.word == extra | NX | WP | lvl | DIRECT | ACC_ALL
    elif kernel in E_5_10 + E_5_15:
        assert r.root_role.word == extra | ACC_ALL | NX | WP | lvl | DIRECT | GPTE_IS_8_BYTES
    elif kernel in E_5_17:
        assert r.root_role.word == extra | ACC_ALL | NX | WP | lvl | DIRECT
    else:
        # kvm_calc_cpu_role sets smm/guest_mode; kvm_calc_tdp_mmu_root_page_role copies both
        assert r.cpu_role.base.word == extra | ACC_ALL | NX | WP | PT64_ROOT_4LEVEL
        assert r.root_role.word == extra | ACC_ALL | WP | NX | lvl | DIRECT
    assert r.root_pages[0].role.word == r.root_role.word


@pytest.mark.parametrize("kernel", ERAS)
def test_l1_context_names(kernel):
    r = run(kernel, "ept")
    if kernel in PRE_4_20:
        assert (r.context, r.mmu, r.walk_mmu) == ("mmu", "mmu", "mmu")
    else:
        assert (r.context, r.mmu, r.walk_mmu) == ("root_mmu", "root_mmu", "root_mmu")
    assert r.warnings == ()


# ---------------------------------------------------------------------------------------------
# TDP with every guest paging mode and every CR0.WP / CR4.SMEP / CR4.SMAP / EFER.NX combination.
# The TDP root role is independent of the guest's SMEP/SMAP in every era; the guest's NX/WP
# enter it in 4.20-5.18 only.  The cpu-side role is what differs most.

TDP_MODES = ("nonpaging", "32bit", "pae", "64bit")
TDP_COMBOS = [(wp, smep, smap, nx) for wp in (False, True) for smep in (False, True)
              for smap in (False, True) for nx in (False, True)]


def expect_tdp(kernel, mode, wp, smep, smap, nx):
    pg = mode != "nonpaging"
    pae = mode in ("pae", "64bit")
    lma = mode == "64bit"
    lvl = PT64_ROOT_4LEVEL  # max_tdp_level 4
    if kernel in PRE_4_20:
        # 4.18 init_kvm_tdp_mmu / 4.19 kvm_calc_tdp_mmu_root_page_role (masked): nothing from
        # the guest's registers; kvm_mmu_get_page adds level/direct/access to the root.
        return 0, None, lvl | DIRECT | ACC_ALL
    if kernel == "4.20":
        # kvm_calc_mmu_role_common (raw nxe, cr4_pae, cr0_wp) & mmu_base_role_mask; the TDP
        # role sets no smep/smap_andnot_wp.  Root: cr4_pae dropped on direct pages.
        E = EXT_4_20
        ext = (E.VALID | on(pg, E.CR0_PG) | on(pg, E.CR4_PSE) | on(smep, E.CR4_SMEP)
               | on(smap, E.CR4_SMAP))
        base = on(nx, NX) | on(pae, CR4_PAE) | on(wp, WP)
        return base, ext, (base & ~CR4_PAE) | lvl | DIRECT | ACC_ALL
    if kernel == "5.10":
        E = EXT_5_10
        ext = (E.VALID | on(pg, E.CR0_PG) | on(pae, E.CR4_PAE) | on(pg, E.CR4_PSE)
               | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP) | E.MAXPHYADDR(48))
        base = ACC_ALL | on(nx, NX) | on(wp, WP) | lvl | DIRECT | GPTE_IS_8_BYTES
        return base, ext, base
    if kernel in E_5_15 + E_5_17:
        E = EXT_5_15
        ext = E.VALID
        if pg:
            ext |= (E.CR0_PG | on(pae, E.CR4_PAE) | E.CR4_PSE | on(smep, E.CR4_SMEP)
                    | on(smap, E.CR4_SMAP) | on(lma, E.EFER_LMA))
        base = (ACC_ALL | on(pg and nx, NX) | on(pg and wp, WP) | lvl | DIRECT
                | on(kernel == "5.15", GPTE_IS_8_BYTES))
        return base, ext, base
    # 5.19+: cpu_role = kvm_calc_cpu_role (as for shadow paging), root role constant
    E = EXT_5_19
    if not pg:
        base, ext = ACC_ALL | DIRECT, E.VALID
    else:
        base = (ACC_ALL | on(nx, NX) | on(wp, WP) | on(smep and not wp, SMEP_ANDNOT_WP)
                | on(smap and not wp, SMAP_ANDNOT_WP) | on(not pae, HAS_4_BYTE_GPTE)
                | GUEST_LEVEL[mode])
        ext = (E.VALID | E.CR4_PSE | on(smep, E.CR4_SMEP) | on(smap, E.CR4_SMAP)
               | on(lma, E.EFER_LMA))
    return base, ext, ACC_ALL | WP | NX | lvl | DIRECT


@pytest.mark.parametrize("combo", TDP_COMBOS,
                         ids=["wp{}-smep{}-smap{}-nx{}".format(*map(int, c)) for c in TDP_COMBOS])
@pytest.mark.parametrize("mode", TDP_MODES)
@pytest.mark.parametrize("kernel", ERAS)
def test_ept_roles_every_mode_and_wp_smep_smap_nx(kernel, mode, combo):
    wp, smep, smap, nx = combo
    r = run(kernel, "ept", mode, wp=wp, smep=smep, smap=smap, nx=nx)
    base, ext, root = expect_tdp(kernel, mode, wp, smep, smap, nx)
    assert r.cpu_role.base.word == base
    assert (r.cpu_role.ext.word if r.cpu_role.ext else None) == ext
    assert r.root_role.word == root


@pytest.mark.parametrize("tdp_mmu", [False, True])
@pytest.mark.parametrize("kernel", ERAS[3:])
def test_tdp_mmu_root_has_the_same_role(kernel, tdp_mmu):
    # 5.10/5.15/5.17 page_role_for_level, 5.18 mmu_role.base, 5.19+ root_role: the TDP MMU root
    # gets the same word as a legacy direct root from kvm_mmu_get_page.
    r = run(kernel, "ept", "64bit", tdp_mmu=tdp_mmu)
    assert [(p.level, p.gfn, p.role.word) for p in r.root_pages] == [
        (PT64_ROOT_4LEVEL, 0, r.root_role.word)]


# ---------------------------------------------------------------------------------------------
# Which kernel path computed the role.  4.18 names the dispatcher init_kvm_mmu, 4.19+
# kvm_init_mmu; SVM's nested NPT goes through kvm_init_shadow_mmu up to 4.20 and through
# kvm_init_shadow_npt_mmu from 5.10 (the split is 5.9/5.10).


@pytest.mark.parametrize("kernel", ERAS)
def test_init_paths(kernel):
    assert "init_kvm_tdp_mmu" in run(kernel, "ept").init
    assert "init_kvm_softmmu" in run(kernel, "none").init
    assert "kvm_init_shadow_ept_mmu" in run(kernel, "ept", nested="ept", guest_mode=True).init
    npt = run(kernel, "npt", nested="npt", guest_mode=kernel in ("6.14", "6.18")).init
    if kernel in PRE_4_20 + E_4_20:
        assert "kvm_init_shadow_mmu" in npt
    else:
        assert "kvm_init_shadow_npt_mmu" in npt
    assert "init_kvm_nested_mmu" in run(kernel, "ept", context="nested_mmu", guest_mode=True).init
    top = run(kernel, "ept").init
    assert ("init_kvm_mmu" if kernel == "4.18" else "kvm_init_mmu") in top


@pytest.mark.parametrize("kernel", ERAS)
def test_calc_root_page_role_exists_only_4_19_to_5_17(kernel):
    # kvm_mmu_calc_root_page_role: added with the 4.19 root cache, removed in 5.18.
    r = run(kernel, "none")
    assert ("calc_root_page_role" in r.extra) == (kernel in ("4.19",) + BASE_ONLY_ERAS)
    if kernel in E_5_19:
        assert r.extra == {}  # root_level, shadow_root_level, ept_ad, direct_map are gone
