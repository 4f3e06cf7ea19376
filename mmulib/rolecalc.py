"""Role computation, era by era: the kernel's ``kvm_init_mmu`` family as pure functions.

Each function takes the state of one ``struct kvm_mmu`` (:class:`MmuState`),
the vCPU inputs the kernel reads (:class:`Inputs`) and the host configuration
(:class:`Host`), and returns the new state plus an :class:`InitRecord` saying
what the kernel did (early return or re-init, the role handed to the PGD
switch, WARNs that fired).  Nothing is mutated, so a simulator can keep old
states for diffing and a sweep can call these millions of times.

Sources, per era, are the release's own ``arch/x86/kvm/mmu.c`` (4.18-4.20) or
``arch/x86/kvm/mmu/mmu.c`` (5.10+), functions ``init_kvm_tdp_mmu``,
``kvm_init_shadow_mmu``, ``kvm_init_shadow_npt_mmu``, ``kvm_init_shadow_ept_mmu``,
``init_kvm_nested_mmu``, the ``kvm_calc_*_role*`` helpers and
``kvm_mmu_get_page`` / ``mmu_alloc_root``.

Era differences in one place (details at each function):

* 4.18: roles are written field by field into ``base_role``, which is never
  cleared on the shadow paths (stale bits survive); the nested-EPT context is
  the same struct as L1's.
* 4.19/4.20: stored roles are masked with ``mmu_base_role_mask``.
* 4.20-5.18: TDP roles carry the guest's NX and WP, so CR0.WP changes the
  role of direct roots.
* 5.19+: ``cpu_role`` (guest format) and ``root_role`` (KVM's format) are
  separate; TDP root roles force ``cr0_wp`` and ``efer_nx`` to 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from .eras import Era

__all__ = [
    "Inputs",
    "Host",
    "MmuState",
    "InitRecord",
    "ACC_ALL",
    "MMU_BASE_ROLE_MASK",
    "tdp_level",
    "init_tdp",
    "init_shadow",
    "init_shadow_npt",
    "init_shadow_ept",
    "init_nested_mmu",
    "calc_root_page_role",
    "page_role",
    "guest_root_level",
    "root_page_roles",
    "refresh_passthrough_bits",
    "calc_cpu_role",
]

# Access bits (arch/x86/kvm/mmu/spte.h; mmu.c before 5.x).
ACC_ALL = 7

# Paging levels (arch/x86/kvm/mmu.h).
PT32_ROOT_LEVEL = 2
PT32E_ROOT_LEVEL = 3
PT64_ROOT_4LEVEL = 4
PT64_ROOT_5LEVEL = 5

# mmu_base_role_mask (4.19, 4.20 mmu.c): cr0_wp, cr4_pae, nxe, smep_andnot_wp,
# smap_andnot_wp, smm (only bit 24, a 1 in an 8-bit field), guest_mode,
# ad_disabled.  Level, direct, access, quadrant and invalid are dropped.
MMU_BASE_ROLE_MASK = (
    (1 << 13) | (1 << 4) | (1 << 12) | (1 << 14) | (1 << 15) | (1 << 24) | (1 << 17) | (1 << 16)
)

# Architectural register bits read by the role code.
_CR0_WP = 1 << 16
_CR0_PG = 1 << 31
_CR4_PSE = 1 << 4
_CR4_PAE = 1 << 5
_CR4_LA57 = 1 << 12
_CR4_SMEP = 1 << 20
_CR4_SMAP = 1 << 21
_CR4_PKE = 1 << 22
_EFER_LMA = 1 << 10
_EFER_NX = 1 << 11


@dataclass(frozen=True)
class Inputs:
    """What the role code reads from the vCPU: registers, SMM, guest mode, CPUID."""

    cr0: int
    cr4: int
    efer: int
    smm: bool = False
    guest_mode: bool = False
    maxphyaddr: int = 48

    @property
    def pg(self) -> int:
        return int(bool(self.cr0 & _CR0_PG))

    @property
    def wp(self) -> int:
        return int(bool(self.cr0 & _CR0_WP))

    @property
    def pae(self) -> int:
        return int(bool(self.cr4 & _CR4_PAE))

    @property
    def pse(self) -> int:
        return int(bool(self.cr4 & _CR4_PSE))

    @property
    def smep(self) -> int:
        return int(bool(self.cr4 & _CR4_SMEP))

    @property
    def smap(self) -> int:
        return int(bool(self.cr4 & _CR4_SMAP))

    @property
    def pke(self) -> int:
        return int(bool(self.cr4 & _CR4_PKE))

    @property
    def la57(self) -> int:
        return int(bool(self.cr4 & _CR4_LA57))

    @property
    def lma(self) -> int:
        return int(bool(self.efer & _EFER_LMA))

    @property
    def nx(self) -> int:
        return int(bool(self.efer & _EFER_NX))


@dataclass(frozen=True)
class Host:
    """Host and vendor configuration that changes role words.

    ``tdp`` is ``"ept"``, ``"npt"`` or ``"none"`` (shadow paging).
    ``ept_ad`` decides ``shadow_accessed_mask`` for EPT (NPT always has A/D).
    """

    tdp: str
    ept_ad: bool = True
    max_tdp_level: int = 4
    host_la57: bool = False

    @property
    def ad_disabled(self) -> int:
        # shadow_accessed_mask == 0 <=> EPT without A/D bits.
        return int(self.tdp == "ept" and not self.ept_ad)


@dataclass(frozen=True)
class MmuState:
    """The role-related members of one ``struct kvm_mmu``.

    ``base``/``ext`` hold ``base_role`` (4.18/4.19), ``mmu_role`` (4.20-5.18)
    or ``cpu_role`` (5.19+) exactly as stored.  ``root_role`` exists from 5.19.
    The level/direct/ept_ad/nx fields are the copies older eras kept beside the
    role (removed in 5.19, where they are derived from the roles).
    """

    name: str
    base: int = 0
    ext: int = 0
    root_role: int = 0
    root_level: int = 0
    shadow_root_level: int = 0
    direct_map: bool = False
    ept_ad: bool = False
    nx: bool = False
    last_nonleaf_level: int = 0

    @property
    def as_u64(self) -> int:
        return self.base | (self.ext << 32)


@dataclass(frozen=True)
class InitRecord:
    """What one init call did."""

    function: str
    reinit: bool  # False: the kernel returned early, roles unchanged
    new_pgd_role: int | None = None  # role handed to __kvm_mmu_new_cr3/_pgd (4.19-5.17)
    warnings: tuple[str, ...] = ()


# --- small helpers ---------------------------------------------------------------------------


def guest_root_level(inp: Inputs) -> int:
    """Depth of the guest's page tables: 0 (no paging), 2, 3, 4 or 5.

    ``role_regs_to_root_level`` (5.14+); earlier eras inline the same choice.
    """
    if not inp.pg:
        return 0
    if inp.lma:
        return PT64_ROOT_5LEVEL if inp.la57 else PT64_ROOT_4LEVEL
    return PT32E_ROOT_LEVEL if inp.pae else PT32_ROOT_LEVEL


def _last_nonleaf(level: int, inp: Inputs) -> int:
    # update_last_nonleaf_level (4.x-5.13): 2-level paging with PSE can map
    # 4 MiB pages at level 2, so one more level may hold a leaf.
    return level + 1 if level == PT32_ROOT_LEVEL and inp.pse else level


def tdp_level(era: Era, host: Host, inp: Inputs) -> int:
    """Level of KVM's EPT/NPT root (``get_tdp_level`` / ``kvm_mmu_get_tdp_level``).

    EPT: 5 only if the CPU has 5-level EPT and the guest's MAXPHYADDR exceeds
    48 bits.  NPT follows the host's paging depth from 5.15 (``tdp_root_level``
    forced to ``get_npt_level``); 4.18-5.10 always use 4.
    """
    if host.tdp == "npt":
        if era.version >= (5, 15) and host.host_la57:
            return PT64_ROOT_5LEVEL
        return PT64_ROOT_4LEVEL
    if host.max_tdp_level == 5 and inp.maxphyaddr > 48:
        return PT64_ROOT_5LEVEL
    return PT64_ROOT_4LEVEL


def _bit4_for_gpte(era: Era, pae: int) -> int:
    """Value of page-role bit 4 for a guest whose PTEs are 8 bytes iff ``pae``.

    4.18-4.20 ``cr4_pae`` and 5.10-5.15 ``gpte_is_8_bytes`` are 1 for 8-byte
    gptes; 5.17+ ``has_4_byte_gpte`` is the inverse.
    """
    return int(not pae) if era.page.has("has_4_byte_gpte") else pae


def _ext(era: Era, inp: Inputs, execonly: int = 0) -> int:
    """``kvm_calc_mmu_role_ext`` for 4.20-5.18 (5.19 folds it into kvm_calc_cpu_role)."""
    e = era.ext
    assert e is not None
    if era.version < (5, 15):
        # 4.20/5.10: raw vCPU bits, no CR0.PG or EFER.LMA gating.
        f = {
            "valid": 1, "execonly": execonly, "cr0_pg": inp.pg, "cr4_smep": inp.smep,
            "cr4_smap": inp.smap, "cr4_pse": inp.pse, "cr4_pke": inp.pke,
        }
        if era.version < (5, 10):
            f["cr4_la57"] = inp.la57
        else:
            f["cr4_pae"] = inp.pae
            f["maxphyaddr"] = inp.maxphyaddr
        return e.pack(**f)
    f = {"valid": 1, "execonly": execonly}
    if inp.pg:
        f.update(
            cr0_pg=1, cr4_pae=inp.pae, cr4_smep=inp.smep, cr4_smap=inp.smap, cr4_pse=inp.pse,
            cr4_pke=inp.lma & inp.pke, cr4_la57=inp.lma & inp.la57, efer_lma=inp.lma,
        )
    return e.pack(**f)


def _common_base(era: Era, inp: Inputs) -> dict[str, int]:
    """``kvm_calc_mmu_role_common`` (4.20-5.18), base part."""
    nx_name = "efer_nx" if era.page.has("efer_nx") else "nxe"
    f = {"access": ACC_ALL, "smm": int(inp.smm), "guest_mode": int(inp.guest_mode)}
    if era.version >= (5, 15):
        # 5.14 cleanup: NX and WP only count when paging is on.
        if inp.pg:
            f[nx_name] = inp.nx
            f["cr0_wp"] = inp.wp
    else:
        f[nx_name] = inp.nx
        f["cr0_wp"] = inp.wp
        if era.version < (5, 10):
            f["cr4_pae"] = inp.pae
    return f


def _shadow_common(era: Era, inp: Inputs, base_only: bool) -> tuple[dict[str, int], int]:
    """``kvm_calc_shadow_root_page_role_common`` (5.10-5.18) / the 4.20 inline form.

    Note, smep/smap_andnot_wp are computed from the *extended* role, which is
    zero when ``base_only`` is set, so the base-only role used by the fast
    CR3 switch never has them (4.20-5.17).
    """
    f = _common_base(era, inp)
    ext = 0 if base_only else _ext(era, inp)
    smep = era.ext.get(ext, "cr4_smep") if era.ext else 0
    smap = era.ext.get(ext, "cr4_smap") if era.ext else 0
    f["smep_andnot_wp"] = int(bool(smep) and not inp.wp)
    f["smap_andnot_wp"] = int(bool(smap) and not inp.wp)
    if era.version >= (5, 15):
        f[era.page.names[1]] = _bit4_for_gpte(era, inp.pae) if inp.pg else 0
    elif era.version >= (5, 10):
        f["gpte_is_8_bytes"] = inp.pae
    return f, ext


def _paging_fields(choice: Inputs, live: Inputs | None = None) -> dict[str, object]:
    """root_level/shadow_root_level/direct_map/nx/last_nonleaf_level as set by the
    nonpaging/paging32/paging32E/paging64 ``*_init_context`` helpers.

    ``choice`` decides which helper runs (the cr0/cr4/efer the caller passed);
    ``live`` is what the helpers themselves read from the vCPU (5.10 reads LA57,
    NX and PSE from the vCPU even when the caller passed other registers).
    """
    live = live or choice
    if not choice.pg:  # nonpaging_init_context
        lvl, shadow, direct, nx = 0, PT32E_ROOT_LEVEL, True, False
    elif choice.lma:  # paging64_init_context
        lvl = PT64_ROOT_5LEVEL if (live.lma and live.la57) else PT64_ROOT_4LEVEL
        shadow, direct, nx = lvl, False, bool(live.nx)
    elif choice.pae:  # paging32E_init_context
        lvl, shadow, direct, nx = PT32E_ROOT_LEVEL, PT32E_ROOT_LEVEL, False, bool(live.nx)
    else:  # paging32_init_context
        lvl, shadow, direct, nx = PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, False, False
    return {"root_level": lvl, "shadow_root_level": shadow, "direct_map": direct, "nx": nx,
            "last_nonleaf_level": _last_nonleaf(lvl, live)}


def _tdp_guest_fields(inp: Inputs) -> dict[str, object]:
    lvl = guest_root_level(inp)
    return {"root_level": lvl, "nx": bool(inp.nx) if lvl >= PT32E_ROOT_LEVEL else False,
            "last_nonleaf_level": _last_nonleaf(lvl, inp)}


# --- TDP (init_kvm_tdp_mmu) --------------------------------------------------------------------


def _tdp_role_pre519(era: Era, host: Host, inp: Inputs, base_only: bool) -> tuple[int, int]:
    """``kvm_calc_tdp_mmu_root_page_role`` (4.19-5.18) as (base word, ext word), unmasked."""
    level = tdp_level(era, host, inp)
    if era.version < (4, 20):
        base = era.page.pack(guest_mode=int(inp.guest_mode), smm=int(inp.smm),
                             ad_disabled=host.ad_disabled, level=level, direct=1, access=ACC_ALL)
        return base, 0
    f = _common_base(era, inp)
    f.update(ad_disabled=host.ad_disabled, level=level, direct=1)
    if era.page.has("gpte_is_8_bytes"):
        f["gpte_is_8_bytes"] = 1
    ext = 0 if base_only else _ext(era, inp)
    return era.page.pack(**f), ext


def init_tdp(era: Era, ctx: MmuState, host: Host, inp: Inputs) -> tuple[MmuState, InitRecord]:
    """``init_kvm_tdp_mmu``: L1 (or L2 without nested paging) on KVM's own EPT/NPT."""
    fn = "init_kvm_tdp_mmu"
    level = tdp_level(era, host, inp)
    guest = _tdp_guest_fields(inp)
    if era.version < (4, 19):
        # 4.18 writes the fields into a cleared base_role; no early return.
        base = era.page.pack(guest_mode=int(inp.guest_mode), smm=int(inp.smm),
                             ad_disabled=host.ad_disabled)
        new = replace(ctx, base=base, ext=0, shadow_root_level=level, direct_map=True, **guest)
        return new, InitRecord(fn, True)
    if era.version < (4, 20):
        base, _ = _tdp_role_pre519(era, host, inp, base_only=True)
        new = replace(ctx, base=base & MMU_BASE_ROLE_MASK, shadow_root_level=level,
                      direct_map=True, **guest)
        return new, InitRecord(fn, True)
    if era.version < (5, 19):
        base, ext = _tdp_role_pre519(era, host, inp, base_only=False)
        if era.version < (5, 10):
            base &= MMU_BASE_ROLE_MASK
        if (base | ext << 32) == ctx.as_u64:
            return ctx, InitRecord(fn, False)
        if era.version >= (5, 15):
            guest = {"root_level": guest_root_level(inp)}
        new = replace(ctx, base=base, ext=ext, shadow_root_level=level, direct_map=True, **guest)
        return new, InitRecord(fn, True)
    cpu_base, cpu_ext = calc_cpu_role(era, inp)
    root = era.page.pack(
        access=ACC_ALL, cr0_wp=1, efer_nx=1, smm=int(inp.smm), guest_mode=int(inp.guest_mode),
        ad_disabled=host.ad_disabled, level=level, direct=1,
    )
    if cpu_base | cpu_ext << 32 == ctx.as_u64 and root == ctx.root_role:
        return ctx, InitRecord(fn, False)
    return replace(ctx, base=cpu_base, ext=cpu_ext, root_role=root), InitRecord(fn, True)


# --- 5.19+: kvm_calc_cpu_role ------------------------------------------------------------------


def calc_cpu_role(era: Era, inp: Inputs) -> tuple[int, int]:
    """``kvm_calc_cpu_role`` (5.19+): the guest's paging format, as (base, ext) words."""
    p, e = era.page, era.ext
    assert e is not None
    smm, gm = int(inp.smm), int(inp.guest_mode)
    if not inp.pg:
        return p.pack(access=ACC_ALL, smm=smm, guest_mode=gm, direct=1), e.pack(valid=1)
    base = p.pack(
        access=ACC_ALL, smm=smm, guest_mode=gm, efer_nx=inp.nx, cr0_wp=inp.wp,
        smep_andnot_wp=int(inp.smep and not inp.wp), smap_andnot_wp=int(inp.smap and not inp.wp),
        has_4_byte_gpte=int(not inp.pae), level=guest_root_level(inp),
    )
    ext = e.pack(
        valid=1, cr4_smep=inp.smep, cr4_smap=inp.smap, cr4_pse=inp.pse,
        cr4_pke=inp.lma & inp.pke, cr4_la57=inp.lma & inp.la57, efer_lma=inp.lma,
    )
    return base, ext


# --- shadow paging (init_kvm_softmmu -> kvm_init_shadow_mmu) ------------------------------------


def _shadow_role_pre519(era: Era, inp: Inputs, base_only: bool) -> tuple[int, int]:
    """``kvm_calc_shadow_mmu_root_page_role`` (4.19-5.18), unmasked."""
    level = (PT64_ROOT_5LEVEL if inp.la57 else PT64_ROOT_4LEVEL) if inp.lma else PT32E_ROOT_LEVEL
    if era.version < (4, 20):
        base = era.page.pack(
            nxe=inp.nx, cr4_pae=inp.pae, cr0_wp=inp.wp,
            smep_andnot_wp=int(inp.smep and not inp.wp),
            smap_andnot_wp=int(inp.smap and not inp.wp),
            guest_mode=int(inp.guest_mode), smm=int(inp.smm), direct=int(not inp.pg),
            access=ACC_ALL, level=level,
        )
        return base, 0
    f, ext = _shadow_common(era, inp, base_only)
    f.update(direct=int(not inp.pg), level=level)
    return era.page.pack(**f), ext


def init_shadow(era: Era, ctx: MmuState, inp: Inputs) -> tuple[MmuState, InitRecord]:
    """``kvm_init_shadow_mmu`` on root_mmu (``arch.mmu`` before 4.20): shadow paging."""
    fn = "kvm_init_shadow_mmu"
    paging = _paging_fields(inp)
    if era.version < (4, 19):
        # 4.18 sets these bits in place; level/direct/access/ad_disabled keep
        # whatever an earlier init left there.
        base = era.page.set(
            ctx.base, nxe=inp.nx, cr4_pae=inp.pae, cr0_wp=inp.wp,
            smep_andnot_wp=int(inp.smep and not inp.wp),
            smap_andnot_wp=int(inp.smap and not inp.wp),
            guest_mode=int(inp.guest_mode), smm=int(inp.smm),
        )
        return replace(ctx, base=base, ext=0, **paging), InitRecord(fn, True)  # type: ignore[arg-type]
    if era.version < (5, 19):
        base, ext = _shadow_role_pre519(era, inp, base_only=False)
        if era.version < (5, 10):
            base &= MMU_BASE_ROLE_MASK
        if era.version >= (4, 20) and (base | ext << 32) == ctx.as_u64:
            return ctx, InitRecord(fn, False)
        if era.version >= (5, 15):
            paging["root_level"] = guest_root_level(inp)
            paging["shadow_root_level"] = era.page.get(base, "level")
        return replace(ctx, base=base, ext=ext, **paging), InitRecord(fn, True)  # type: ignore[arg-type]
    cpu_base, cpu_ext = calc_cpu_role(era, inp)
    p = era.page
    root = p.set(cpu_base, level=max(p.get(cpu_base, "level"), PT32E_ROOT_LEVEL), efer_nx=1)
    if cpu_base | cpu_ext << 32 == ctx.as_u64 and root == ctx.root_role:
        return ctx, InitRecord(fn, False)
    return replace(ctx, base=cpu_base, ext=cpu_ext, root_role=root), InitRecord(fn, True)


# --- nested NPT (guest_mmu) --------------------------------------------------------------------


def init_shadow_npt(
    era: Era, ctx: MmuState, host: Host, l1: Inputs, live: Inputs
) -> tuple[MmuState, InitRecord]:
    """The guest_mmu init for L2 under nested NPT (SVM ``nested_svm_init_mmu_context``).

    ``l1`` holds the registers SVM passes (CR0 = PG only, L1's CR4 and EFER
    from the host save area) plus SMM/guest-mode as the vCPU has them at the
    call; ``live`` holds what the vCPU registers contain at that moment (L2's
    state in 5.10, which reads them instead of the arguments).

    * 4.18-4.20: ``kvm_init_shadow_mmu`` on the vCPU registers, which still
      hold L1's state (its real CR0, WP included), then
      ``shadow_root_level = get_npt_level`` (4).
    * 5.10: ``kvm_calc_shadow_npt_root_page_role`` reads the live registers;
      the paging helper then overwrites ``shadow_root_level`` with the guest level.
    * 5.15+: roles from the passed registers with CR4.PKE cleared.
    * 5.19+: ``root_role`` = cpu_role.base at the TDP level, ``passthrough``
      when a 5-level root shadows a 4-level L1 NPT; EFER.NX not forced.
    """
    fn = "kvm_init_shadow_npt_mmu" if era.version >= (5, 10) else "kvm_init_shadow_mmu"
    level = tdp_level(era, host, live)
    if era.version < (5, 10):
        # enter_svm_guest_mode runs the MMU init before svm_set_efer/cr0/cr4 load
        # vmcb12's state, so the "live" registers kvm_init_shadow_mmu reads are
        # still L1's (its real CR0, WP included).
        new, rec = init_shadow(era, ctx, l1)
        new = replace(new, shadow_root_level=PT64_ROOT_4LEVEL)
        return new, InitRecord(fn, rec.reinit)
    regs = Inputs(
        cr0=_CR0_PG, cr4=l1.cr4 & ~_CR4_PKE, efer=l1.efer, smm=l1.smm,
        guest_mode=l1.guest_mode, maxphyaddr=l1.maxphyaddr,
    )
    warnings: list[str] = []
    if era.version < (5, 19):
        src = live if era.version < (5, 15) else regs
        f, ext = _shadow_common(era, src, base_only=False)
        f.update(direct=0, level=level)
        base = era.page.pack(**f)
        if era.version < (5, 15):
            # The paging helper overwrites shadow_root_level with the guest level
            # and reads LA57/NX/PSE from the live vCPU.
            paging = _paging_fields(regs, live)
        else:
            paging = _paging_fields(regs)
            paging["root_level"] = guest_root_level(regs)
            paging["shadow_root_level"] = level
        pgd_role = base if era.version < (5, 18) else None
        if (base | ext << 32) == ctx.as_u64:
            new = replace(ctx, shadow_root_level=level) if era.version < (5, 15) else ctx
            return new, InitRecord(fn, False, pgd_role)
        return replace(ctx, base=base, ext=ext, **paging), \
            InitRecord(fn, True, pgd_role)  # type: ignore[arg-type]
    cpu_base, cpu_ext = calc_cpu_role(era, regs)
    p = era.page
    if p.get(cpu_base, "direct"):
        warnings.append("kvm_init_shadow_npt_mmu: WARN_ON_ONCE(cpu_role.base.direct)")
    if era.version >= (6, 14) and not p.get(cpu_base, "guest_mode"):
        warnings.append(
            "kvm_init_shadow_npt_mmu: WARN_ON_ONCE(!cpu_role.base.guest_mode) "
            "(6.14+ enters guest mode before initialising the nested NPT MMU)"
        )
    root = p.set(cpu_base, level=level)
    if level == PT64_ROOT_5LEVEL and p.get(cpu_base, "level") == PT64_ROOT_4LEVEL:
        root = p.set(root, passthrough=1)
    if cpu_base | cpu_ext << 32 == ctx.as_u64 and root == ctx.root_role:
        return ctx, InitRecord(fn, False, warnings=tuple(warnings))
    return replace(ctx, base=cpu_base, ext=cpu_ext, root_role=root), \
        InitRecord(fn, True, warnings=tuple(warnings))


# --- nested EPT (guest_mmu) --------------------------------------------------------------------


def init_shadow_ept(
    era: Era, ctx: MmuState, l1_ctx: MmuState, inp: Inputs, *, execonly: bool,
    accessed_dirty: bool, level: int,
) -> tuple[MmuState, InitRecord]:
    """``kvm_init_shadow_ept_mmu``: the context that shadows L1's EPT for L2.

    ``l1_ctx`` is root_mmu (4.20+) or, in 4.18/4.19, the single MMU as L1's
    init left it: old eras take role bits from it.
    * 4.18: keep every bit of the previous role; set ad_disabled, guest_mode.
    * 4.19: previous role (masked) with level 4, direct 0, access ACC_ALL.
    * 4.20: root_mmu's stored (masked) base, so L1's nxe/cr4_pae/cr0_wp leak in.
    * 5.10: fresh role with smm from root_mmu and the impossible
      ``cr0_wp=1, smap_andnot_wp=1`` pair that marks nested-EPT pages.
    * 5.15-5.18: fresh role, smm from root_mmu, ext = execonly + valid.
    * 5.19+: smm forced to 0 (WARN if the vCPU is in SMM); root_role = cpu_role.base.
    """
    fn = "kvm_init_shadow_ept_mmu"
    ad = int(accessed_dirty)
    p = era.page
    if era.version < (4, 19):
        base = p.set(l1_ctx.base, ad_disabled=int(not ad), guest_mode=1)
        new = replace(ctx, base=base, shadow_root_level=4, root_level=4, nx=True,
                      ept_ad=bool(ad), direct_map=False, last_nonleaf_level=4)
        return new, InitRecord(fn, True)
    if era.version < (4, 20):
        full = p.set(l1_ctx.base, level=4, direct=0, ad_disabled=int(not ad), guest_mode=1,
                     access=ACC_ALL)
        new = replace(ctx, base=full & MMU_BASE_ROLE_MASK, shadow_root_level=4, root_level=4,
                      nx=True, ept_ad=bool(ad), direct_map=False, last_nonleaf_level=4)
        return new, InitRecord(fn, True, new_pgd_role=full)
    warnings: list[str] = []
    if era.version < (5, 19):
        if era.version < (5, 10):
            base = p.set(l1_ctx.base, level=4, direct=0, ad_disabled=int(not ad), guest_mode=1,
                         access=ACC_ALL)
            ext = era.ext.set(_ext(era, inp), execonly=int(execonly))  # type: ignore[union-attr]
        else:
            f = {"smm": p.get(l1_ctx.base, "smm"), "level": level, "direct": 0,
                 "ad_disabled": int(not ad), "guest_mode": 1, "access": ACC_ALL}
            if p.has("gpte_is_8_bytes"):
                f["gpte_is_8_bytes"] = 1
            if era.version < (5, 15):
                f.update(cr0_wp=1, smap_andnot_wp=1)
                ext = era.ext.set(_ext(era, inp), execonly=int(execonly))  # type: ignore[union-attr]
            else:
                ext = era.ext.pack(valid=1, execonly=int(execonly))  # type: ignore[union-attr]
            base = p.pack(**f)
        pgd_role = base if era.version < (5, 18) else None
        stored = base & MMU_BASE_ROLE_MASK if era.version < (5, 10) else base
        if (stored | ext << 32) == ctx.as_u64:
            return ctx, InitRecord(fn, False, pgd_role)
        new = replace(ctx, base=stored, ext=ext, shadow_root_level=level, root_level=level,
                      nx=True, ept_ad=bool(ad), direct_map=False, last_nonleaf_level=level)
        return new, InitRecord(fn, True, pgd_role)
    if inp.smm:
        warnings.append("kvm_calc_shadow_ept_root_page_role: WARN_ON_ONCE(is_smm(vcpu))")
    base = p.pack(level=level, direct=0, ad_disabled=int(not ad), guest_mode=1, access=ACC_ALL)
    ext = era.ext.pack(valid=1, execonly=int(execonly))  # type: ignore[union-attr]
    if base | ext << 32 == ctx.as_u64:
        return ctx, InitRecord(fn, False, warnings=tuple(warnings))
    return replace(ctx, base=base, ext=ext, root_role=base), \
        InitRecord(fn, True, warnings=tuple(warnings))


# --- nested_mmu (the L2 walker) ----------------------------------------------------------------


def init_nested_mmu(era: Era, ctx: MmuState, inp: Inputs) -> tuple[MmuState, InitRecord]:
    """``init_kvm_nested_mmu``: walk-only MMU translating L2 GVAs; it owns no roots.

    4.18/4.19 store no role for it.  4.20/5.10: the common role (masked in
    4.20).  5.15-5.18: the shadow role with ``direct = 1`` as a sentinel and
    ``level`` = the guest's depth.  5.19+: the plain cpu_role.
    """
    fn = "init_kvm_nested_mmu"
    guest = _tdp_guest_fields(inp)
    if era.version < (4, 20):
        return replace(ctx, **guest), InitRecord(fn, True)  # type: ignore[arg-type]
    if era.version < (5, 19):
        if era.version < (5, 15):
            base = era.page.pack(**_common_base(era, inp))
            ext = _ext(era, inp)
            if era.version < (5, 10):
                base &= MMU_BASE_ROLE_MASK
        else:
            f, ext = _shadow_common(era, inp, base_only=False)
            f.update(direct=1, level=guest_root_level(inp))
            base = era.page.pack(**f)
            guest = {"root_level": guest_root_level(inp)}
        if (base | ext << 32) == ctx.as_u64:
            return ctx, InitRecord(fn, False)
        return replace(ctx, base=base, ext=ext, **guest), InitRecord(fn, True)  # type: ignore[arg-type]
    cpu_base, cpu_ext = calc_cpu_role(era, inp)
    if cpu_base | cpu_ext << 32 == ctx.as_u64:
        return ctx, InitRecord(fn, False)
    return replace(ctx, base=cpu_base, ext=cpu_ext), InitRecord(fn, True)


# --- roles used by the fast CR3/PGD switch and by root pages ----------------------------------


def calc_root_page_role(era: Era, host: Host, inp: Inputs) -> int | None:
    """``kvm_mmu_calc_root_page_role`` (4.19-5.17): the role the fast switch compares.

    It is the TDP or shadow helper with ``base_only`` set (unmasked), so for
    shadow paging in 4.20-5.17 it lacks smep/smap_andnot_wp.  Removed in 5.18.
    """
    if not (4, 19) <= era.version < (5, 18):
        return None
    if host.tdp != "none":
        return _tdp_role_pre519(era, host, inp, base_only=True)[0]
    return _shadow_role_pre519(era, inp, base_only=True)[0]


def page_role(era: Era, ctx: MmuState, *, level: int, direct: bool, gaddr: int = 0) -> int:
    """Role of a shadow page created at ``level`` (``kvm_mmu_get_page`` / ``mmu_alloc_root``).

    Starts from the context's stored role (``root_role`` from 5.19), then
    level, direct and access; direct pages get bit 4 forced (4.x: ``cr4_pae``
    0; 5.10/5.15: ``gpte_is_8_bytes`` 1); ``quadrant`` is the slice of a
    4-byte-gpte guest table this page shadows; ``passthrough`` is cleared at
    or below the guest's depth (5.19+).
    """
    p = era.page
    start = ctx.root_role if era.has_cpu_role else ctx.base
    role = p.set(start, level=level, direct=int(direct), access=ACC_ALL)
    if direct and p.has("cr4_pae"):
        role = p.set(role, cr4_pae=0)
    if direct and p.has("gpte_is_8_bytes"):
        role = p.set(role, gpte_is_8_bytes=1)
    if p.has("has_4_byte_gpte"):
        four_byte = bool(p.get(role, "has_4_byte_gpte"))
    else:
        four_byte = not ctx.direct_map and ctx.root_level <= PT32_ROOT_LEVEL
    if four_byte:
        quadrant = (gaddr >> (12 + 9 * level)) & ((1 << level) - 1)
        role = p.set(role, quadrant=quadrant)
    if p.has("passthrough") and level <= p.get(ctx.base, "level"):
        role = p.set(role, passthrough=0)
    return role


@functools.lru_cache(maxsize=4096)
def root_page_roles(
    era: Era, ctx: MmuState, *, level: int, direct: bool, guest_level: int
) -> tuple[tuple[int, int], ...]:
    """(level, role word) of each page ``mmu_alloc_direct_roots``/``_shadow_roots`` creates.

    One page at ``level`` when KVM's root is 4- or 5-level and either the map
    is direct or the guest's own tables are 64-bit.  Otherwise four level-2
    pages under ``pae_root`` (itself wrapped by ``pml4_root``/``pml5_root``
    when KVM's root is deeper), one per GiB; for a 2-level guest they are the
    four quadrants of its single table.
    """
    if level >= PT64_ROOT_4LEVEL and (direct or guest_level >= PT64_ROOT_4LEVEL):
        return ((level, page_role(era, ctx, level=level, direct=direct)),)
    return tuple(
        (PT32_ROOT_LEVEL, page_role(era, ctx, level=PT32_ROOT_LEVEL, direct=direct,
                                    gaddr=i << 30))
        for i in range(4)
    )


def refresh_passthrough_bits(
    era: Era, ctx: MmuState, cr0: int, *, tdp: bool, is_guest_mmu: bool = False
) -> tuple[MmuState, bool]:
    """``kvm_mmu_refresh_passthrough_bits`` (6.4+): catch up with a guest-owned CR0.WP.

    With EPT, 6.4 lets the guest flip CR0.WP without a VM exit, so
    ``cpu_role`` may hold a stale WP.  Before a permission check KVM copies the
    live WP into ``cpu_role.base.cr0_wp`` and nothing else: ``smep_andnot_wp``
    and ``smap_andnot_wp`` keep the values of the last full ``kvm_init_mmu``.
    Nothing happens without TDP, for guest_mmu (nested EPT/NPT ignore CR0.WP),
    or before 6.4.  Returns the new state and whether it changed.
    """
    if era.version < (6, 4) or not tdp or is_guest_mmu:
        return ctx, False
    wp = int(bool(cr0 & _CR0_WP))
    if era.page.get(ctx.base, "cr0_wp") == wp:
        return ctx, False
    return replace(ctx, base=era.page.set(ctx.base, cr0_wp=wp)), True
