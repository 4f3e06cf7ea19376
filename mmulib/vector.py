"""KVM's MMU role computation over whole arrays of vCPU states at once.

This is the vectorised twin of the scalar path (:mod:`mmulib.compute`): it is written
independently, from the kernel trees, so that the two check each other.  Every
register bit is turned into a boolean array, each role field is computed with numpy
``where``/``&``/``|``, and the fields are packed into role words with the offsets of
the era's layout (:mod:`mmulib.layouts`).  There is no Python loop over states.

>>> import numpy as np
>>> PE_ET, PG, WP, PAE, LME_LMA, NX = 0x11, 1 << 31, 1 << 16, 1 << 5, 0x500, 1 << 11
>>> r = compute_batch("5.19", tdp="ept", cr0=np.array([PE_ET, PE_ET | PG | WP]), cr4=PAE,
...                   efer=np.array([0, LME_LMA | NX]), smm=0, guest_mode=0)
>>> [hex(w) for w in r.cpu_as_u64]    # real mode; 64-bit paging
['0x100000780', '0x8100003704']
>>> [hex(w) for w in r.root_role]     # the TDP root ignores the guest's mode
['0x3784', '0x3784']

What each configuration means (the vector kinds a-f of ``tests/data``):

* ``tdp="ept"|"npt"``: ``root_mmu`` after ``init_kvm_tdp_mmu`` (kinds a, b);
* ``tdp="none"``: ``root_mmu`` after ``init_kvm_softmmu`` (shadow paging, kind c);
* ``nested="ept"``: ``guest_mmu`` after ``kvm_init_shadow_ept_mmu``, run after an L1
  TDP init of ``root_mmu`` with the same registers and SMM flag, ``guest_mode = 0`` and
  L0 A/D bits = ``ept_ad`` (kind d);
* ``nested="npt"``: ``guest_mmu`` after the SVM nested-NPT init with CR4/EFER = the
  given registers and CR0 = PG only; releases that read the live vCPU instead (4.x,
  5.10) see the given registers too (kind e);
* ``context="nested_mmu"``: ``nested_mmu`` after ``init_kvm_nested_mmu`` (kind f).

Every state starts from a zeroed vCPU, so no "role unchanged" early return applies and
4.18's fields that an init leaves alone are 0 (or what the preceding L1 init wrote).

``root_role`` is the role word root shadow pages are created with.  From 5.19 it is
``root_role.word`` itself (0 for ``nested_mmu``, which never sets it).  Before 5.19 it is
derived as ``kvm_mmu_get_page`` derives it: the stored base role with ``level =
shadow_root_level``, ``direct = direct_map``, ``access = ACC_ALL``, ``quadrant = 0``,
plus the era's forced bit for direct pages (4.x: ``cr4_pae = 0``; 5.10/5.15:
``gpte_is_8_bytes = 1``; none from 5.17).  Note, a PAE-level (3) root is really four
level-2 pages, and for a 2-level guest page ``i`` of them has ``quadrant = i``; the
word here is the root-level word, as 5.19's ``root_role`` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .eras import Era, resolve
from .layouts import Layout
from .request import Request

__all__ = ["BatchResult", "compute_batch", "MMU_BASE_ROLE_MASK", "ACC_ALL"]

ACC_ALL = 7
"""ACC_EXEC_MASK | ACC_WRITE_MASK | ACC_USER_MASK (mmu.c in 4.x, mmu/spte.h later)."""

MMU_BASE_ROLE_MASK = 0x0103F010
"""``mmu_base_role_mask`` of 4.19/4.20 ``arch/x86/kvm/mmu.c`` as a word: cr4_pae, nxe,
cr0_wp, smep/smap_andnot_wp, ad_disabled, guest_mode and bit 24 (``.smm = 1``)."""

# Architectural register bits (the only register inputs the role code reads).
_CR0_WP, _CR0_PG = 16, 31
_CR4_PSE, _CR4_PAE, _CR4_LA57, _CR4_SMEP, _CR4_SMAP, _CR4_PKE = 4, 5, 12, 20, 21, 22
_EFER_LMA, _EFER_NX = 10, 11


@dataclass(frozen=True)
class BatchResult:
    """Role words for a batch of states, all arrays of the broadcast input shape.

    ``cpu_base``/``cpu_ext``/``cpu_as_u64``: 5.19+ ``cpu_role``; 4.20-5.18 ``mmu_role``
    as stored (4.20: base masked with :data:`MMU_BASE_ROLE_MASK`); 4.18/4.19 the stored
    ``base_role`` (4.19 masked) with ``ext = 0``.  ``root_role``: see the module
    docstring.  ``extra``: pre-5.19 copies kept in ``struct kvm_mmu`` (``root_level``,
    ``shadow_root_level``, ``direct_map``, ``ept_ad``; ``nx`` and ``last_nonleaf_level``
    up to 5.10), ``calc_root_page_role`` (4.19-5.17, root_mmu configurations),
    ``new_pgd_role`` (the role an init passed to ``__kvm_mmu_new_cr3``/``__kvm_mmu_new_pgd``),
    and from 5.19 ``warn`` (how many WARN_ON_ONCE conditions fired).
    """

    era: Era
    cpu_base: np.ndarray
    cpu_ext: np.ndarray
    cpu_as_u64: np.ndarray
    root_role: np.ndarray
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)


class _Regs(NamedTuple):
    """The role inputs of a batch, as boolean arrays of one shape."""

    pg: np.ndarray
    wp: np.ndarray
    pse: np.ndarray
    pae: np.ndarray
    la57: np.ndarray
    smep: np.ndarray
    smap: np.ndarray
    pke: np.ndarray
    lma: np.ndarray
    nx: np.ndarray
    smm: np.ndarray
    gm: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pg.shape

    def guest_level(self) -> np.ndarray:
        """Guest paging depth: 0, 2, 3, 4 or 5 (``role_regs_to_root_level``, 5.15+)."""
        lvl = np.where(self.lma, np.where(self.la57, 5, 4), np.where(self.pae, 3, 2))
        return np.where(self.pg, lvl, 0).astype(np.uint8)

    def npt_call(self) -> _Regs:
        """What ``kvm_init_shadow_npt_mmu`` (5.15+) sees: CR0 = PG only, CR4 without PKE."""
        one = np.ones(self.shape, dtype=bool)
        return self._replace(pg=one, wp=~one, pke=~one)


def _bits(value: Any, shape: tuple[int, ...], n: int) -> np.ndarray:
    return np.broadcast_to((value >> np.uint64(n)) & np.uint64(1) != 0, shape)


def _regs(cr0: Any, cr4: Any, efer: Any, smm: Any, gm: Any) -> _Regs:
    c0, c4, ef = (np.asarray(x).astype(np.uint64) for x in (cr0, cr4, efer))
    sm, g = (np.asarray(x).astype(bool) for x in (smm, gm))
    shape = np.broadcast_shapes(c0.shape, c4.shape, ef.shape, sm.shape, g.shape)
    return _Regs(
        pg=_bits(c0, shape, _CR0_PG), wp=_bits(c0, shape, _CR0_WP),
        pse=_bits(c4, shape, _CR4_PSE), pae=_bits(c4, shape, _CR4_PAE),
        la57=_bits(c4, shape, _CR4_LA57), smep=_bits(c4, shape, _CR4_SMEP),
        smap=_bits(c4, shape, _CR4_SMAP), pke=_bits(c4, shape, _CR4_PKE),
        lma=_bits(ef, shape, _EFER_LMA), nx=_bits(ef, shape, _EFER_NX),
        smm=np.broadcast_to(sm, shape), gm=np.broadcast_to(g, shape),
    )


def _pack(layout: Layout, shape: tuple[int, ...], **values: Any) -> np.ndarray:
    """A uint32 word per state with the named fields set (others 0)."""
    word = np.zeros(shape, dtype=np.uint32)
    for name, value in values.items():
        f = layout.field(name)
        v = np.broadcast_to(np.asarray(value).astype(np.uint32), shape)
        word |= (v & np.uint32((1 << f.width) - 1)) << np.uint32(f.offset)
    return word


def _set(layout: Layout, word: np.ndarray, **values: Any) -> np.ndarray:
    """``word`` with the named fields replaced."""
    for name in values:
        word = word & np.uint32(~layout.field(name).mask & 0xFFFFFFFF)
    return word | _pack(layout, word.shape, **values)


def _get(layout: Layout, word: np.ndarray, name: str) -> np.ndarray:
    f = layout.field(name)
    return (word >> np.uint32(f.offset)) & np.uint32((1 << f.width) - 1)


def _const(shape: tuple[int, ...], value: int, dtype: Any = np.uint8) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


class _Cfg(NamedTuple):
    kind: str  # "tdp", "shadow", "ept", "npt" or "nested_mmu"
    tdp: str
    ept_ad: bool
    tdp_level: int  # level of L0's TDP root for this configuration (EPT or NPT)
    maxphyaddr: int
    ept_level: int
    execonly: bool
    nested_ad: bool


# ---------------------------------------------------------------------------
# 4.18 / 4.19: one embedded ``vcpu->arch.mmu``; the role is ``base_role`` only.
# ---------------------------------------------------------------------------

def _legacy_extras(g: _Regs, c: _Cfg) -> dict[str, np.ndarray]:
    """``root_level``/``shadow_root_level``/``direct_map``/``nx``/``last_nonleaf_level``/
    ``ept_ad`` as the 4.x and 5.10 init helpers leave them (arch/x86/kvm/mmu.c:
    ``init_kvm_tdp_mmu``, ``nonpaging_init_context``, ``paging64_init_context_common``,
    ``paging32_init_context``, ``kvm_init_shadow_ept_mmu``, ``init_kvm_nested_mmu``,
    ``update_last_nonleaf_level``; svm.c ``nested_svm_init_mmu_context``).
    """
    shape = g.shape
    level = g.guest_level()
    walk_nx = g.pg & (g.lma | g.pae) & g.nx  # 64-bit and PAE walkers honour EFER.NX
    if c.kind == "ept":
        lvl = _const(shape, c.ept_level)
        out = dict(root_level=lvl, shadow_root_level=lvl, direct_map=_const(shape, 0),
                   nx=_const(shape, 1), ept_ad=_const(shape, int(c.nested_ad)))
    elif c.kind == "nested_mmu":  # walk-only: never sets shadow_root_level/direct_map
        out = dict(root_level=level, shadow_root_level=_const(shape, 0),
                   direct_map=_const(shape, 0), nx=walk_nx.astype(np.uint8))
    elif c.kind == "tdp":
        out = dict(root_level=level, shadow_root_level=_const(shape, c.tdp_level),
                   direct_map=_const(shape, 1), nx=walk_nx.astype(np.uint8))
    else:  # shadow paging helpers; the SVM caller then forces the NPT level
        srl = np.maximum(level, 3).astype(np.uint8)
        if c.kind == "npt":
            srl = _const(shape, c.tdp_level)
        out = dict(root_level=level, shadow_root_level=srl,
                   direct_map=(~g.pg).astype(np.uint8), nx=walk_nx.astype(np.uint8))
    out.setdefault("ept_ad", _const(shape, 0))
    lvl = out["root_level"]
    out["last_nonleaf_level"] = (lvl + ((lvl == 2) & g.pse)).astype(np.uint8)
    return out


def _e1_shadow_bits(g: _Regs) -> dict[str, np.ndarray]:
    """The bits 4.18-4.20 ``kvm_init_shadow_mmu`` takes straight from the vCPU."""
    return dict(nxe=g.nx, cr4_pae=g.pae, cr0_wp=g.wp, smep_andnot_wp=g.smep & ~g.wp,
                smap_andnot_wp=g.smap & ~g.wp, guest_mode=g.gm, smm=g.smm)


def _era_4_18(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu.c (4.18): fields written in place into ``arch.mmu.base_role``.

    ``init_kvm_tdp_mmu`` clears the word and sets guest_mode/smm/ad_disabled;
    ``kvm_init_shadow_mmu`` writes its bits without clearing (a fresh vCPU, or the
    preceding NPT init, leaves the rest 0); ``kvm_init_shadow_ept_mmu`` keeps what the
    L1 TDP init wrote (smm) and sets ad_disabled and guest_mode; ``nested_mmu`` never
    gets a role.
    """
    P, shape = era.page, g.shape
    if c.kind == "tdp":
        base = _pack(P, shape, guest_mode=g.gm, smm=g.smm,
                     ad_disabled=c.tdp == "ept" and not c.ept_ad)
    elif c.kind in ("shadow", "npt"):
        base = _pack(P, shape, **_e1_shadow_bits(g))
    elif c.kind == "ept":
        base = _pack(P, shape, smm=g.smm, ad_disabled=not c.nested_ad, guest_mode=1)
    else:
        base = _pack(P, shape)
    return base, None, _legacy_extras(g, c)


def _era_4_19(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu.c (4.19): ``kvm_calc_*_root_page_role`` stored masked.

    The TDP role carries no nxe/cr0_wp/cr4_pae; the shadow-EPT role starts from the
    current (masked) ``base_role`` that L1's TDP init stored.
    """
    P, shape = era.page, g.shape
    extra = _legacy_extras(g, c)

    def tdp(gm: Any, ad_off: bool) -> np.ndarray:
        return _pack(P, shape, guest_mode=gm, smm=g.smm, ad_disabled=ad_off,
                     level=c.tdp_level, direct=1, access=ACC_ALL)

    mask = np.uint32(MMU_BASE_ROLE_MASK)
    if c.kind == "tdp":
        full = tdp(g.gm, c.tdp == "ept" and not c.ept_ad)
        extra["calc_root_page_role"] = full
    elif c.kind in ("shadow", "npt"):
        full = _pack(P, shape, **_e1_shadow_bits(g), direct=~g.pg, access=ACC_ALL,
                     level=np.where(g.lma, np.where(g.la57, 5, 4), 3))
        if c.kind == "shadow":
            extra["calc_root_page_role"] = full
    elif c.kind == "ept":
        prev = tdp(0, not c.ept_ad) & mask
        full = _set(P, prev, level=4, direct=0, ad_disabled=not c.nested_ad,
                    guest_mode=1, access=ACC_ALL)
        extra["new_pgd_role"] = full
    else:
        full = _pack(P, shape)
    return full & mask, None, extra


# ---------------------------------------------------------------------------
# 4.20 and 5.10: kvm_mmu_role = base + extended role, computed from the live vCPU.
# ---------------------------------------------------------------------------

def _era_4_20(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu.c (4.20): ``kvm_calc_mmu_role_common``/``_ext`` and helpers.

    Nothing is gated on CR0.PG; the stored base is masked; ``base_only`` (the fast CR3
    switch role) leaves smep/smap_andnot_wp 0 because they are read from the zero ext.
    """
    P, X, shape = era.page, era.ext, g.shape
    extra = _legacy_extras(g, c)
    ext = _pack(X, shape, valid=1, cr0_pg=g.pg, cr4_smep=g.smep, cr4_smap=g.smap,
                cr4_pse=g.pse, cr4_pke=g.pke, cr4_la57=g.la57)
    common = _pack(P, shape, access=ACC_ALL, nxe=g.nx, cr4_pae=g.pae, cr0_wp=g.wp,
                   smm=g.smm, guest_mode=g.gm)

    def tdp(gm: Any, ad_off: bool) -> np.ndarray:
        return _set(P, common, guest_mode=gm, ad_disabled=ad_off, level=c.tdp_level,
                    direct=1)

    mask = np.uint32(MMU_BASE_ROLE_MASK)
    if c.kind == "tdp":
        full = tdp(g.gm, c.tdp == "ept" and not c.ept_ad)
        extra["calc_root_page_role"] = full
    elif c.kind in ("shadow", "npt"):
        only = _set(P, common, direct=~g.pg,
                    level=np.where(g.lma, np.where(g.la57, 5, 4), 3))
        full = _set(P, only, smep_andnot_wp=g.smep & ~g.wp, smap_andnot_wp=g.smap & ~g.wp)
        if c.kind == "shadow":
            extra["calc_root_page_role"] = only
    elif c.kind == "ept":  # base inherited from root_mmu's stored (masked) base
        full = _set(P, tdp(0, not c.ept_ad) & mask, level=4, direct=0,
                    ad_disabled=not c.nested_ad, guest_mode=1, access=ACC_ALL)
        ext = _set(X, ext, execonly=c.execonly)
        extra["new_pgd_role"] = full
    else:
        full = common
    return full & mask, ext, extra


def _era_5_10(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu/mmu.c (5.10): as 4.20, plus gpte_is_8_bytes and ext.maxphyaddr.

    Stored unmasked.  The nested-EPT role has the marker cr0_wp = smap_andnot_wp = 1 and
    smm from root_mmu.  ``kvm_calc_shadow_npt_root_page_role`` reads the live vCPU, and
    ``shadow_mmu_init_context`` then overwrites ``shadow_root_level`` with the guest's.
    """
    P, X, shape = era.page, era.ext, g.shape
    extra = _legacy_extras(g, c)
    ext = _pack(X, shape, valid=1, cr0_pg=g.pg, cr4_pae=g.pae, cr4_smep=g.smep,
                cr4_smap=g.smap, cr4_pse=g.pse, cr4_pke=g.pke, maxphyaddr=c.maxphyaddr)
    common = _pack(P, shape, access=ACC_ALL, nxe=g.nx, cr0_wp=g.wp, smm=g.smm,
                   guest_mode=g.gm)
    shadow_only = _set(P, common, gpte_is_8_bytes=g.pae)
    shadow_full = _set(P, shadow_only, smep_andnot_wp=g.smep & ~g.wp,
                       smap_andnot_wp=g.smap & ~g.wp)
    if c.kind == "tdp":
        base = _set(P, common, ad_disabled=c.tdp == "ept" and not c.ept_ad,
                    level=c.tdp_level, direct=1, gpte_is_8_bytes=1)
        extra["calc_root_page_role"] = base
    elif c.kind == "shadow":
        lvl = np.where(g.lma, np.where(g.la57, 5, 4), 3)
        base = _set(P, shadow_full, direct=~g.pg, level=lvl)
        extra["calc_root_page_role"] = _set(P, shadow_only, direct=~g.pg, level=lvl)
    elif c.kind == "npt":
        base = _set(P, shadow_full, direct=0, level=c.tdp_level)
        extra["new_pgd_role"] = base
        # The paging helper is picked by the arguments (CR0 = PG), the rest is live.
        extra.update(_legacy_extras(g._replace(pg=np.ones(shape, dtype=bool)),
                                    c._replace(kind="shadow")))
    elif c.kind == "ept":
        base = _pack(P, shape, smm=g.smm, level=c.ept_level, gpte_is_8_bytes=1,
                     ad_disabled=not c.nested_ad, guest_mode=1, access=ACC_ALL,
                     cr0_wp=1, smap_andnot_wp=1)
        ext = _set(X, ext, execonly=c.execonly)
        extra["new_pgd_role"] = base
    else:
        base = common
    return base, ext, extra


# ---------------------------------------------------------------------------
# 5.15, 5.17, 5.18: kvm_mmu_role_regs; paging bits only when CR0.PG = 1.
# ---------------------------------------------------------------------------

def _e4_ext(X: Layout, g: _Regs) -> np.ndarray:
    """``kvm_calc_mmu_role_ext`` (5.14 cleanup): paging bits gated on PG, pke/la57 on LMA."""
    return _pack(X, g.shape, valid=1, cr0_pg=g.pg, cr4_pae=g.pg & g.pae,
                 cr4_smep=g.pg & g.smep, cr4_smap=g.pg & g.smap, cr4_pse=g.pg & g.pse,
                 cr4_pke=g.pg & g.lma & g.pke, cr4_la57=g.pg & g.lma & g.la57,
                 efer_lma=g.pg & g.lma)


def _e4_common(era: Era, g: _Regs, full: bool) -> np.ndarray:
    """``kvm_calc_shadow_root_page_role_common`` (full) or ``kvm_calc_mmu_role_common``."""
    P = era.page
    base = _pack(P, g.shape, access=ACC_ALL, efer_nx=g.pg & g.nx, cr0_wp=g.pg & g.wp,
                 smm=g.smm, guest_mode=g.gm)
    if not full:
        return base
    if P.has("gpte_is_8_bytes"):  # 5.15
        return _set(P, base, gpte_is_8_bytes=g.pg & g.pae)
    return _set(P, base, has_4_byte_gpte=g.pg & ~g.pae)


def _era_5_15(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu/mmu.c (5.15.55, 5.17-rc5, 5.18.12).

    Differences inside the era: 5.17 inverted bit 4 (``has_4_byte_gpte``); 5.18 removed
    ``kvm_mmu_calc_root_page_role`` and the role argument of ``__kvm_mmu_new_pgd``.
    The nested-NPT role is built from the arguments (CR0 = PG, CR4 without PKE).
    """
    P, X, shape = era.page, era.ext, g.shape
    fmt8 = P.has("gpte_is_8_bytes")
    eight = {"gpte_is_8_bytes": 1} if fmt8 else {"has_4_byte_gpte": 0}
    has_calc = has_pgd_role = era.version < (5, 18)
    zero, one = _const(shape, 0), _const(shape, 1)
    level = g.guest_level()
    extra: dict[str, np.ndarray] = dict(ept_ad=zero)

    def shadow_full(r: _Regs) -> np.ndarray:
        return _set(P, _e4_common(era, r, True), smep_andnot_wp=r.pg & r.smep & ~r.wp,
                    smap_andnot_wp=r.pg & r.smap & ~r.wp)

    ext = _e4_ext(X, g)
    if c.kind == "tdp":
        base = _set(P, _e4_common(era, g, False), ad_disabled=c.tdp == "ept" and not c.ept_ad,
                    level=c.tdp_level, direct=1, **eight)
        extra.update(root_level=level, shadow_root_level=_const(shape, c.tdp_level),
                     direct_map=one)
        if has_calc:
            extra["calc_root_page_role"] = base
    elif c.kind == "shadow":
        lvl = np.where(g.lma, np.where(g.la57, 5, 4), 3).astype(np.uint8)
        base = _set(P, shadow_full(g), direct=~g.pg, level=lvl)
        extra.update(root_level=level, shadow_root_level=lvl,
                     direct_map=(~g.pg).astype(np.uint8))
        if has_calc:  # base_only: smep/smap_andnot_wp come from the zero ext
            extra["calc_root_page_role"] = _set(P, base, smep_andnot_wp=0, smap_andnot_wp=0)
    elif c.kind == "npt":
        n = g.npt_call()
        base = _set(P, shadow_full(n), direct=0, level=c.tdp_level)
        ext = _e4_ext(X, n)
        extra.update(root_level=n.guest_level(), shadow_root_level=_const(shape, c.tdp_level),
                     direct_map=zero)
        if has_pgd_role:
            extra["new_pgd_role"] = base
    elif c.kind == "ept":
        base = _pack(P, shape, smm=g.smm, level=c.ept_level, direct=0,
                     ad_disabled=not c.nested_ad, guest_mode=1, access=ACC_ALL, **eight)
        ext = _pack(X, shape, valid=1, execonly=c.execonly)
        lvl = _const(shape, c.ept_level)
        extra.update(root_level=lvl, shadow_root_level=lvl, direct_map=zero,
                     ept_ad=_const(shape, int(c.nested_ad)))
        if has_pgd_role:
            extra["new_pgd_role"] = base
    else:  # kvm_calc_nested_mmu_role: direct = 1 is a sentinel
        base = _set(P, shadow_full(g), direct=1, level=level)
        extra.update(root_level=level, shadow_root_level=zero, direct_map=zero)
    return base, ext, extra


# ---------------------------------------------------------------------------
# 5.19 and later: cpu_role + root_role.
# ---------------------------------------------------------------------------

def _cpu_role(era: Era, g: _Regs) -> tuple[np.ndarray, np.ndarray]:
    """``kvm_calc_cpu_role`` (arch/x86/kvm/mmu/mmu.c, 5.19 ... 6.18)."""
    P, X, pg = era.page, era.ext, g.pg
    base = _pack(P, g.shape, access=ACC_ALL, smm=g.smm, guest_mode=g.gm, direct=~pg,
                 efer_nx=pg & g.nx, cr0_wp=pg & g.wp, smep_andnot_wp=pg & g.smep & ~g.wp,
                 smap_andnot_wp=pg & g.smap & ~g.wp, has_4_byte_gpte=pg & ~g.pae,
                 level=g.guest_level())
    ext = _pack(X, g.shape, valid=1, cr4_smep=pg & g.smep, cr4_smap=pg & g.smap,
                cr4_pse=pg & g.pse, cr4_pke=pg & g.lma & g.pke,
                cr4_la57=pg & g.lma & g.la57, efer_lma=pg & g.lma)
    return base, ext


def _era_5_19(era: Era, g: _Regs, c: _Cfg) -> tuple[Any, ...]:
    """arch/x86/kvm/mmu/mmu.c (5.19, 6.4, 6.14, 6.19): the cpu_role/root_role split.

    TDP root: cr0_wp = efer_nx = 1 forced.  Shadow root: cpu base, level >= 3,
    efer_nx = 1.  Nested NPT: cpu base of the call's registers at the NPT level, with
    ``passthrough`` for a 5-level root over a 4-level L1.  Nested EPT: smm = 0 (a warning
    if in SMM).  6.14+ also warns when nested NPT is set up outside guest mode.
    """
    P, X, shape = era.page, era.ext, g.shape
    warn = np.zeros(shape, dtype=np.uint8)
    if c.kind == "ept":
        base = _pack(P, shape, level=c.ept_level, ad_disabled=not c.nested_ad,
                     guest_mode=1, access=ACC_ALL)
        ext = _pack(X, shape, valid=1, execonly=c.execonly)
        root = base
        warn = g.smm.astype(np.uint8)
    elif c.kind == "npt":
        base, ext = _cpu_role(era, g.npt_call())
        root = _set(P, base, level=c.tdp_level)
        if c.tdp_level == 5:
            root = _set(P, root, passthrough=_get(P, base, "level") == 4)
        if era.version >= (6, 14):
            warn = (~g.gm).astype(np.uint8)
    else:
        base, ext = _cpu_role(era, g)
        if c.kind == "tdp":
            root = _pack(P, shape, access=ACC_ALL, cr0_wp=1, efer_nx=1, smm=g.smm,
                         guest_mode=g.gm, ad_disabled=c.tdp == "ept" and not c.ept_ad,
                         level=c.tdp_level, direct=1)
        elif c.kind == "shadow":
            root = _set(P, base, level=np.maximum(_get(P, base, "level"), 3), efer_nx=1)
        else:
            root = np.zeros(shape, dtype=np.uint32)
    return base, ext, root, {"warn": warn}


# ---------------------------------------------------------------------------

def _root_role_pre_5_19(era: Era, base: np.ndarray, c: _Cfg,
                        extra: Mapping[str, np.ndarray]) -> np.ndarray:
    """The root-level word ``kvm_mmu_get_page`` builds (4.18-5.15), or the TDP-MMU /
    shadow root role (5.17, 5.18: ``kvm_mmu_get_page``, ``kvm_tdp_mmu_get_vcpu_root_hpa``).
    """
    P = era.page
    if c.kind == "nested_mmu":
        return np.zeros(base.shape, dtype=np.uint32)
    direct = extra["direct_map"]
    root = _set(P, base, level=extra["shadow_root_level"], direct=direct, access=ACC_ALL,
                quadrant=0)
    d = direct != 0
    if P.has("cr4_pae"):  # 4.18-4.20: direct pages get cr4_pae = 0
        root = np.where(d, _set(P, root, cr4_pae=0), root)
    elif P.has("gpte_is_8_bytes"):  # 5.10, 5.15: direct pages are 8-byte
        root = np.where(d, _set(P, root, gpte_is_8_bytes=1), root)
    return root.astype(np.uint32)


_ERA_FUNCS = {
    "4.18": _era_4_18, "4.19": _era_4_19, "4.20": _era_4_20, "5.10": _era_5_10,
    "5.15": _era_5_15, "5.17": _era_5_15, "5.18": _era_5_15,
}


def _config(era: Era, tdp: str, nested: str | None, context: str | None, ept_ad: bool,
            max_tdp_level: int, maxphyaddr: int, host_la57: bool, nested_ept_level: int,
            execonly: bool, nested_ept_ad: bool) -> _Cfg:
    if tdp == "npt":
        # SVM: 4-level NPT before 5.15 (get_npt_level / get_max_npt_level); from 5.15
        # the host's paging depth, forced through kvm_configure_mmu's tdp_root_level.
        tdp_level = 5 if host_la57 and era.version >= (5, 15) else 4
    else:
        # VMX get_ept_level (4.x) / kvm_mmu_get_tdp_level (5.10+): 5-level EPT only
        # when the CPU has it and the guest's MAXPHYADDR needs more than 48 bits.
        tdp_level = 5 if max_tdp_level == 5 and maxphyaddr > 48 else 4
    if nested == "ept" and nested_ept_level != 4 and era.version < (5, 10):
        raise ValueError(
            f"nested_ept_level={nested_ept_level}: {era.name} accepts only 4-level EPTPs "
            "(valid_ept_address in vmx.c); 5-level nested EPT needs 5.10 or later"
        )
    if context == "nested_mmu":
        kind = "nested_mmu"
    elif nested is not None:
        kind = nested
    else:
        kind = "shadow" if tdp == "none" else "tdp"
    return _Cfg(kind, tdp, ept_ad, tdp_level, maxphyaddr, nested_ept_level, execonly,
                nested_ept_ad)


def compute_batch(kernel: str, *, tdp: str, cr0: Any, cr4: Any, efer: Any, smm: Any,
                  guest_mode: Any, nested: str | None = None, context: str | None = None,
                  ept_ad: bool = True, max_tdp_level: int = 4, maxphyaddr: int = 48,
                  host_la57: bool = False, nested_ept_level: int = 4,
                  execonly: bool = False, nested_ept_ad: bool = True) -> BatchResult:
    """The roles ``kernel`` computes for every state of a batch, in one vectorised pass.

    Args:
        kernel: a release (``"5.19"``, ``"v6.6.47"``); answered by its era (``resolve``).
        tdp: ``"ept"``, ``"npt"`` or ``"none"`` (shadow paging).
        cr0, cr4, efer: register values, arrays or scalars (broadcast together).
        smm, guest_mode: ``HF_SMM_MASK`` / ``HF_GUEST_MASK``, bool or int arrays.
        nested: ``"ept"``/``"npt"`` for ``guest_mmu`` (shadowing L1's EPT/NPT).
        context: ``"nested_mmu"`` for the L2 walker.
        ept_ad: L0 uses EPT A/D bits (else TDP roles have ``ad_disabled``).
        max_tdp_level, maxphyaddr: the CPU's deepest EPT and the guest MAXPHYADDR.
        host_la57: the host uses 5-level paging (5-level NPT from 5.15).
        nested_ept_level, execonly, nested_ept_ad: L1's EPTP walk length, execute-only
            capability and A/D enable for ``nested="ept"``.

    Returns:
        A :class:`BatchResult` whose arrays have the broadcast shape of the inputs.

    Raises:
        RequestError: an option combination :class:`~mmulib.request.Request` rejects.
        ValueError: a 5-level nested EPTP before 5.10.
    """
    era = resolve(kernel)
    Request(kernel=str(kernel), tdp=tdp, cr0=0, cr4=0, efer=0, nested=nested,
            context=context, max_tdp_level=max_tdp_level, maxphyaddr=maxphyaddr,
            nested_ept_level=nested_ept_level)  # same option checks as the scalar path
    g = _regs(cr0, cr4, efer, smm, guest_mode)
    c = _config(era, tdp, nested, context, ept_ad, max_tdp_level, maxphyaddr, host_la57,
                nested_ept_level, execonly, nested_ept_ad)
    if era.has_cpu_role:
        base, ext, root, extra = _era_5_19(era, g, c)
    else:
        base, ext, extra = _ERA_FUNCS[era.name](era, g, c)
        root = _root_role_pre_5_19(era, base, c, extra)
        if ext is None:
            ext = np.zeros(g.shape, dtype=np.uint32)
    base = base.astype(np.uint32)
    ext = ext.astype(np.uint32)
    as_u64 = base.astype(np.uint64) | (ext.astype(np.uint64) << np.uint64(32))
    extra = {k: np.array(v) for k, v in extra.items()}
    return BatchResult(era, base, ext, as_u64, root.astype(np.uint32), extra)
