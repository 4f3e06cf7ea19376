"""Answer a :class:`~mmulib.request.Request`: which roles, contexts and root pages KVM computes.

``compute`` builds a fresh vCPU the way the kernel's own functions see it
(every ``struct kvm_mmu`` zeroed, so no "role unchanged" early return fires
on the first init), runs the init path of the requested configuration, and
reports the roles exactly as stored in ``struct kvm_mmu``:

* L1 under TDP: ``kvm_init_mmu`` -> ``init_kvm_tdp_mmu`` on ``root_mmu``.
* L1 under shadow paging: ``kvm_init_mmu`` -> ``init_kvm_softmmu`` ->
  ``kvm_init_shadow_mmu`` on ``root_mmu``.
* ``nested="ept"``: L1's ``root_mmu`` is initialised first (guest_mode 0),
  then ``nested_ept_init_mmu_context`` -> ``kvm_init_shadow_ept_mmu`` on
  ``guest_mmu``; ``walk_mmu`` becomes ``nested_mmu``.
* ``nested="npt"``: likewise with ``nested_svm_init_mmu_context``.
* ``context="nested_mmu"``: ``kvm_init_mmu`` -> ``init_kvm_nested_mmu``, the
  walker that translates L2 virtual addresses.

Before 4.20 there is a single embedded MMU (reported as context ``"mmu"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .eras import Era, resolve
from .regs import check_state
from .request import Request, RequestError
from .rolecalc import (
    Host,
    Inputs,
    InitRecord,
    MmuState,
    calc_root_page_role,
    init_nested_mmu,
    init_shadow,
    init_shadow_ept,
    init_shadow_npt,
    init_tdp,
    page_role,
    root_page_roles,
)
from .roles import CpuRole, Role

__all__ = [
    "RootPage", "RoleResult", "compute", "effective_guest_mode", "host_of", "inputs_of",
]


@dataclass(frozen=True)
class RootPage:
    """One page at the top of KVM's tree for this context.

    ``kind`` is ``"tdp_mmu"`` (a TDP MMU root), ``"direct"`` (a legacy
    direct-map shadow page) or ``"shadow"`` (shadows a guest table).  ``gfn``
    is ``None`` when it comes from guest memory the model does not see (the
    PDPTEs of a PAE guest).
    """

    level: int
    role: Role
    gfn: int | None
    kind: str
    under: str | None = None  # "pae_root", "pml4_root->pae_root", ... for PAE-style roots

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "role": self.role.word, "hex": self.role.hex,
                "gfn": self.gfn, "kind": self.kind, "under": self.under}


@dataclass(frozen=True)
class RoleResult:
    """Everything ``compute`` found; see the module docstring."""

    request: Request
    era: Era
    guest_mode: bool  # is_guest_mode(vcpu) at the init call
    context: str
    mmu: str
    walk_mmu: str
    init: str
    reinit: bool
    cpu_role: CpuRole
    root_role: Role | None
    root_pages: tuple[RootPage, ...]
    extra: dict[str, int]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def cpu_side_name(self) -> str:
        return self.era.cpu_side_name

    def to_json(self) -> dict[str, Any]:
        key = "cpu_role" if self.era.has_cpu_role else "mmu_role"
        out: dict[str, Any] = {
            "kernel": self.request.kernel,
            "era": self.era.name,
            "context": self.context,
            "mmu": self.mmu,
            "walk_mmu": self.walk_mmu,
            "init": self.init,
            "guest_mode": self.guest_mode,
            "cpu_side": self.era.cpu_side_name,
            key: self.cpu_role.to_json(),
            "root_role": None if self.root_role is None else self.root_role.to_json(),
            "root_pages": [p.to_json() for p in self.root_pages],
            "extra": dict(self.extra),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
        return out


def effective_guest_mode(req: Request, era: Era) -> tuple[bool, str | None]:
    """is_guest_mode(vcpu) at the init call, and a note when the kernel's flow decided it.

    VMX calls ``enter_guest_mode`` before ``nested_ept_init_mmu_context``, so
    the nested-EPT context is always built in guest mode.  SVM called
    ``nested_svm_init_mmu_context`` before ``enter_guest_mode`` until 6.14
    (Sean Christopherson's "Enter guest mode before initializing nested NPT
    MMU"), so nested NPT roles had ``guest_mode = 0`` before 6.14.
    """
    if req.nested == "ept":
        if req.guest_mode is False:
            return True, "nested EPT is initialised after enter_guest_mode: guest_mode taken as 1"
        return True, None
    if req.nested == "npt" and req.guest_mode is None:
        gm = era.version >= (6, 14)
        return gm, (f"guest_mode {int(gm)} at the call: nested_svm_init_mmu_context runs "
                    f"{'after' if gm else 'before'} enter_guest_mode in {era.name}")
    if req.context == "nested_mmu" and req.guest_mode is None:
        return True, None
    return bool(req.guest_mode), None


def inputs_of(req: Request, *, guest_mode: bool | None = None) -> Inputs:
    return Inputs(
        cr0=req.cr0, cr4=req.cr4, efer=req.efer, smm=req.smm,
        guest_mode=bool(req.guest_mode) if guest_mode is None else guest_mode,
        maxphyaddr=req.maxphyaddr,
    )


def host_of(req: Request) -> Host:
    return Host(tdp=req.tdp, ept_ad=req.ept_ad, max_tdp_level=req.max_tdp_level,
                host_la57=req.host_la57)


def _check(req: Request, era: Era) -> list[str]:
    notes: list[str] = []
    check_state(req.cr0, req.cr4, req.efer, cr3=req.cr3, maxphyaddr=req.maxphyaddr)
    if req.tdp_mmu and not era.has_tdp_mmu:
        raise RequestError(f"tdp_mmu: the TDP MMU does not exist before 5.10 (era {era.name})")
    if req.nested == "ept" and req.nested_ept_level == 5 and era.version < (5, 10):
        raise RequestError(
            f"nested_ept_level 5: kvm_init_shadow_ept_mmu in {era.name} shadows only 4-level "
            "EPT (5-level nested EPT arrived by 5.10)"
        )
    if req.nested and req.smm:
        notes.append("an SMM vCPU cannot be running L2; the role is computed as asked")
    if req.tdp == "none" and req.tdp_mmu:
        notes.append("tdp_mmu has no effect without TDP (shadow paging uses the legacy MMU)")
    return notes


def _tdp_mmu_on(req: Request, era: Era) -> bool:
    if req.tdp == "none" or not era.has_tdp_mmu:
        return False
    return era.tdp_mmu_default if req.tdp_mmu is None else bool(req.tdp_mmu)


def _root_pages(
    era: Era, ctx: MmuState, *, level: int, direct: bool, guest_level: int, gfn: int,
    tdp_mmu: bool,
) -> tuple[RootPage, ...]:
    """The pages ``mmu_alloc_direct_roots`` / ``mmu_alloc_shadow_roots`` would create."""
    roles = root_page_roles(era, ctx, level=level, direct=direct, guest_level=guest_level)
    if len(roles) == 1:
        lvl, word = roles[0]
        kind = ("tdp_mmu" if tdp_mmu else "direct") if direct else "shadow"
        return (RootPage(lvl, Role(era.page, word), 0 if direct else gfn, kind),)
    under = {3: "pae_root", 4: "pml4_root->pae_root", 5: "pml5_root->pml4_root->pae_root"}[
        max(level, 3)]
    pages = []
    for i, (lvl, word) in enumerate(roles):
        if direct:
            page_gfn: int | None = i << 18  # each level-2 page maps 1 GiB
        else:
            # A PAE guest's four tables come from its PDPTEs (guest memory, not
            # modelled); a 2-level guest's one table is shadowed in four quadrants.
            page_gfn = gfn if guest_level == 2 else None
        pages.append(RootPage(lvl, Role(era.page, word), page_gfn,
                              "direct" if direct else "shadow", under))
    return tuple(pages)


def _extra(era: Era, ctx: MmuState) -> dict[str, int]:
    if era.has_cpu_role:
        return {}
    out = {
        "root_level": ctx.root_level,
        "shadow_root_level": ctx.shadow_root_level,
        "direct_map": int(ctx.direct_map),
        "ept_ad": int(ctx.ept_ad),
    }
    if era.version < (5, 15):
        out["nx"] = int(ctx.nx)
        out["last_nonleaf_level"] = ctx.last_nonleaf_level
    return out


def compute(req: Request) -> RoleResult:
    """Compute the roles of ``req``'s configuration in its kernel era."""
    era = resolve(req.kernel)
    notes = _check(req, era)
    host = host_of(req)
    split = era.split_contexts
    l1_name = "root_mmu" if split else "mmu"
    tdp_mmu = _tdp_mmu_on(req, era)
    warnings: list[str] = []
    extra_roles: dict[str, int] = {}
    prefix = "kvm_init_mmu" if era.version >= (4, 19) else "init_kvm_mmu"
    gm, gm_note = effective_guest_mode(req, era)
    if gm_note:
        notes.append(gm_note)

    root = MmuState(l1_name)
    if req.context == "nested_mmu":
        ctx, rec = init_nested_mmu(era, MmuState("nested_mmu"), inputs_of(req, guest_mode=gm))
        context, mmu, walk = "nested_mmu", ("guest_mmu" if split else "mmu"), "nested_mmu"
        init = f"{prefix} -> init_kvm_nested_mmu"
    elif req.nested is None:
        inp = inputs_of(req, guest_mode=gm)
        if req.tdp == "none":
            ctx, rec = init_shadow(era, root, inp)
            init = f"{prefix} -> init_kvm_softmmu -> kvm_init_shadow_mmu"
        else:
            ctx, rec = init_tdp(era, root, host, inp)
            init = f"{prefix} -> init_kvm_tdp_mmu"
        context = mmu = walk = l1_name
        calc = calc_root_page_role(era, host, inp)
        if calc is not None:
            extra_roles["calc_root_page_role"] = calc
    else:
        # L1 first, as L1 ran before it launched L2 (guest_mode 0, same registers).
        l1, _ = init_tdp(era, root, host, inputs_of(req, guest_mode=False))
        gctx = l1 if not split else MmuState("guest_mmu")
        if req.nested == "ept":
            ctx, rec = init_shadow_ept(
                era, gctx, l1, inputs_of(req, guest_mode=True), execonly=req.execonly,
                accessed_dirty=req.nested_ept_ad, level=req.nested_ept_level,
            )
            init = "nested_ept_init_mmu_context -> kvm_init_shadow_ept_mmu"
        else:
            cr0, cr4, efer = req.l2_regs
            live = Inputs(cr0=cr0, cr4=cr4, efer=efer, smm=req.smm, guest_mode=gm,
                          maxphyaddr=req.maxphyaddr)
            ctx, rec = init_shadow_npt(era, gctx, host, inputs_of(req, guest_mode=gm), live)
            init = f"nested_svm_init_mmu_context -> {rec.function}"
        context, mmu, walk = ("guest_mmu" if split else "mmu"), ("guest_mmu" if split else "mmu"), \
            "nested_mmu"
    warnings.extend(rec.warnings)
    if rec.new_pgd_role is not None:
        extra_roles["new_pgd_role"] = rec.new_pgd_role
    return _result(req, era, gm, ctx, rec, context, mmu, walk, init, tdp_mmu, warnings, notes,
                   extra_roles)


def _result(
    req: Request, era: Era, gm: bool, ctx: MmuState, rec: InitRecord, context: str, mmu: str,
    walk: str, init: str, tdp_mmu: bool, warnings: list[str], notes: list[str],
    extra_roles: dict[str, int],
) -> RoleResult:
    p = era.page
    ext = Role(era.ext, ctx.ext) if era.ext is not None else None
    cpu = CpuRole(Role(p, ctx.base), ext)
    extra = _extra(era, ctx)
    extra.update(extra_roles)
    if context == "nested_mmu":
        return RoleResult(req, era, gm, context, mmu, walk, init, rec.reinit, cpu, None, (), extra,
                          tuple(warnings), tuple(notes))
    if era.has_cpu_role:
        level = p.get(ctx.root_role, "level")
        direct = bool(p.get(ctx.root_role, "direct"))
        guest_level = p.get(ctx.base, "level")
        root_word = ctx.root_role
    else:
        level, direct = ctx.shadow_root_level, ctx.direct_map
        guest_level = ctx.root_level
        root_word = page_role(era, ctx, level=level, direct=direct)
    if req.nested == "ept":
        gfn = req.nested_cr3 >> 12
    elif req.nested == "npt":
        gfn = req.nested_cr3 >> 12
    else:
        gfn = (req.cr3 & ((1 << 52) - 1)) >> 12
    pages = _root_pages(era, ctx, level=level, direct=direct, guest_level=guest_level, gfn=gfn,
                        tdp_mmu=tdp_mmu and context == "root_mmu")
    return RoleResult(req, era, gm, context, mmu, walk, init, rec.reinit, cpu, Role(p, root_word),
                      pages, extra, tuple(warnings), tuple(notes))
