"""One vCPU and its VM, driven through KVM's MMU paths release by release.

:class:`Machine` holds what the kernel keeps: the registers, SMM and guest
mode, the MMU contexts (``root_mmu``, ``guest_mmu``, ``nested_mmu``; one
embedded MMU before 4.20) with their roles, ``root`` and ``prev_roots``, the
``mmu``/``walk_mmu`` pointers, pending requests, and the VM's pages: legacy
shadow pages keyed by (gfn, role word) with a ``root_count``, and the TDP MMU's
roots with reference counts.

Its methods are named after the kernel functions they mirror
(``kvm_mmu_reset_context``, ``kvm_mmu_unload``, ``kvm_init_mmu``,
``kvm_mmu_new_pgd``, ``kvm_mmu_free_roots``, ``kvm_mmu_load`` ...) and append
:class:`~mmulib.sim.events.Event` records to ``self.log`` in the order the
kernel would run them.  :meth:`Machine.freeze` / :meth:`Machine.thaw` turn the
whole state into a hashable value and back, which is what makes
:func:`mmulib.sim.step` a pure transition.

Sources per era: ``arch/x86/kvm/mmu.c`` (4.x) / ``mmu/mmu.c``, ``mmu/tdp_mmu.c``,
``x86.c``, ``vmx/nested.c`` (``vmx.c`` in 4.x), ``svm/nested.c`` (``svm.c``),
``smm.c`` and ``emulate.c`` of each release; kernel-roots.md §2-§9 summarises
them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..eras import Era, resolve
from ..regs import CpuRegs, effective_efer, guest_write_cr0, guest_write_cr4, guest_write_efer
from ..rolecalc import (
    Host,
    Inputs,
    MmuState,
    calc_root_page_role,
    init_nested_mmu,
    init_shadow,
    init_shadow_ept,
    init_shadow_npt,
    init_tdp,
    page_role,
)
from .cache import (
    INVALID_ROOT,
    KVM_MMU_NUM_PREV_ROOTS,
    KVM_MMU_ROOT_CURRENT,
    KVM_MMU_ROOT_PREVIOUS,
    KVM_MMU_ROOTS_ALL,
    Lookup,
    RootInfo,
    cached_root_available,
    cached_root_find_and_keep_current,
    cached_root_find_without_current,
    rotate_always,
)
from .events import Event, ev

__all__ = ["SpKey", "TdpKey", "PaeRoot", "Nested", "Vm", "Machine", "SimError", "pt_pages"]

CR0_WP, CR0_PG, CR0_PE = 1 << 16, 1 << 31, 1
CR4_PAE, CR4_PGE, CR4_PCIDE, CR4_OSXSAVE, CR4_PKE = 1 << 5, 1 << 7, 1 << 17, 1 << 18, 1 << 22
EFER_LME, EFER_LMA, EFER_NX = 1 << 8, 1 << 10, 1 << 11
CR3_NOFLUSH = 1 << 63
INIT_CR0 = 0x60000010  # CR0 after INIT/RESET: CD | NW | ET


class SimError(ValueError):
    """An operation that is impossible in the current state (e.g. RSM outside SMM)."""


@dataclass(frozen=True)
class SpKey:
    """A legacy shadow page, found in ``mmu_page_hash`` by (gfn, role word)."""

    gfn: int
    role: int
    zombie: int = 0  # >0: zapped while still a root (role.invalid); kept until unreferenced


@dataclass(frozen=True)
class TdpKey:
    """A TDP MMU root (``kvm->arch.tdp_mmu_roots``), told apart by role and a serial."""

    role: int
    serial: int


@dataclass(frozen=True)
class PaeRoot:
    """KVM's ``pae_root``: four level-2 pages behind a page that is not a shadow page.

    ``wrap`` is the level of KVM's root: 3 (``pae_root`` itself), 4 or 5
    (wrapped by ``pml4_root``/``pml5_root``).  Such a root has no shadow page at
    ``root.hpa`` (``to_shadow_page`` is NULL), so the cache never keeps it.
    """

    pages: tuple[SpKey | None, ...]
    wrap: int


@dataclass(frozen=True)
class Nested:
    """L2 is running (or being entered): vendor, nested paging, L1's saved registers."""

    vendor: str  # "vmx" | "svm"
    paging: bool  # L1 uses EPT/NPT for L2
    l1: tuple[int, int, int, int]  # L1's cr0, cr3, cr4, efer
    nested_cr3: int = 0  # EPTP / nCR3
    ept_level: int = 4
    execonly: bool = False
    ad: bool = True


def pt_pages(footprint_gib: float, level: int) -> int:
    """Page-table pages of a TDP tree mapping ``footprint_gib`` with 4 KiB pages.

    One page per 2 MiB at level 1, per 1 GiB at level 2, per 512 GiB at
    level 3, ... plus the root.  A teardown frees them and a rebuild faults
    them back in.
    """
    if footprint_gib <= 0:
        return 1
    pages = footprint_gib * (1 << 18)  # 4 KiB pages
    total = 0
    for _ in range(level - 1):
        pages = -(-pages // 512)
        total += int(pages)
    return int(total) + 1 if level >= 2 else 1


class Vm:
    """What the vCPUs of one VM share: the shadow-page hash and the TDP MMU's roots."""

    def __init__(self) -> None:
        self.sp: dict[SpKey, int] = {}  # shadow page -> root_count
        self.tdp_roots: list[list[Any]] = []  # [TdpKey, refcount, invalid], list head first
        self.tdp_empty: frozenset[TdpKey] = frozenset()  # roots whose tree was zapped (5.10)
        self.zombies = 0

    def freeze(self) -> tuple[Any, ...]:
        return (tuple(sorted(self.sp.items(), key=_spkey)),
                tuple(tuple(r) for r in self.tdp_roots), self.tdp_empty, self.zombies)

    @classmethod
    def thaw(cls, state: tuple[Any, ...]) -> Vm:
        vm = cls()
        sps, tdps, vm.tdp_empty, vm.zombies = state
        vm.sp = dict(sps)
        vm.tdp_roots = [list(r) for r in tdps]
        return vm


@dataclass
class Ctx:
    """One ``struct kvm_mmu``: roles plus ``root`` and ``prev_roots``."""

    roles: MmuState
    root: RootInfo = INVALID_ROOT
    prev: tuple[RootInfo, RootInfo, RootInfo] = (INVALID_ROOT, INVALID_ROOT, INVALID_ROOT)

    def freeze(self) -> tuple[Any, ...]:
        return (self.roles, self.root, self.prev)


class Machine:
    """A vCPU of one kernel era, its MMU contexts and its VM's pages."""

    def __init__(self, kernel: str | Era, *, tdp: str = "ept", tdp_mmu: bool | None = None,
                 vendor: str | None = None, ept_ad: bool = True, max_tdp_level: int = 4,
                 host_la57: bool = False, maxphyaddr: int = 48,
                 footprint_gib: float = 1.0, cr0_wp_backport: str = "none",
                 vm: Vm | None = None) -> None:
        self.era = resolve(kernel)
        if tdp not in ("none", "ept", "npt"):
            raise SimError(f"tdp: {tdp!r} is not one of none, ept, npt")
        self.host = Host(tdp=tdp, ept_ad=ept_ad, max_tdp_level=max_tdp_level,
                         host_la57=host_la57)
        self.vendor = vendor or ("svm" if tdp == "npt" else "vmx")
        if tdp == "ept" and self.vendor != "vmx" or tdp == "npt" and self.vendor != "svm":
            raise SimError(f"vendor {self.vendor!r} does not match tdp {tdp!r}")
        if tdp_mmu and not self.era.has_tdp_mmu:
            raise SimError(f"tdp_mmu: the TDP MMU does not exist before 5.10 (era {self.era})")
        default = self.era.tdp_mmu_default if tdp_mmu is None else tdp_mmu
        self.tdp_mmu = bool(default) and tdp != "none" and self.era.has_tdp_mmu
        self.maxphyaddr = maxphyaddr
        self.footprint_gib = footprint_gib
        # Mathias Krause's 6.4 CR0.WP patches, as backported to older stable kernels:
        # "no_unload" = 01b31714bd90 (a WP-only toggle with TDP only re-inits the MMU),
        # "full" = also fb509f76acc8 (VMX with EPT lets the guest own CR0.WP: no exit).
        if cr0_wp_backport not in ("none", "no_unload", "full"):
            raise SimError(f"cr0_wp_backport: {cr0_wp_backport!r} is not none, no_unload, full")
        self.cr0_wp_backport = "full" if self.era.version >= (6, 4) else cr0_wp_backport
        # vCPU state after creation: INIT values.
        self.cr0, self.cr3, self.cr4, self.efer = INIT_CR0, 0, 0, 0
        self.smm = False
        self.smm_saved: tuple[int, int, int, int] | None = None
        self.guest_mode = False
        self.nested: Nested | None = None
        names = ("root_mmu", "guest_mmu", "nested_mmu") if self.era.split_contexts else \
            ("mmu", "nested_mmu")
        self.ctx: dict[str, Ctx] = {n: Ctx(MmuState(n)) for n in names}
        self.l1_name = names[0]
        self.mmu = self.l1_name
        self.walk = self.l1_name
        self.requests: set[str] = set()
        self.vm = vm if vm is not None else Vm()
        self.log: list[Event] = []
        self.running = False
        self.has_run = False  # last_vmentry_cpu != -1
        self.pdptrs: tuple[int, ...] = ()  # walk_mmu->pdptrs as last loaded (PAE paging)
        # kvm_arch_vcpu_create -> kvm_init_mmu on the reset state (no roots yet).
        self.kvm_init_mmu("kvm_mmu_create")

    # ------------------------------------------------------------------ state as a value
    def freeze_vcpu(self) -> tuple[Any, ...]:
        """This vCPU's own state (everything but the shared VM pages) as a hashable value."""
        return (
            self.era.name, self.host, self.vendor, self.tdp_mmu, self.maxphyaddr,
            self.footprint_gib, self.cr0_wp_backport,
            self.cr0, self.cr3, self.cr4, self.efer, self.smm, self.smm_saved, self.guest_mode,
            self.nested, tuple((n, c.freeze()) for n, c in self.ctx.items()), self.mmu,
            self.walk, frozenset(self.requests), self.running, self.has_run, self.pdptrs,
        )

    def freeze(self) -> tuple[Any, ...]:
        """This vCPU and its VM as a hashable value: a one-vCPU system state
        ``(VM pages, (vCPU,))`` (see :func:`mmulib.sim.new_state`)."""
        return (self.vm.freeze(), (self.freeze_vcpu(),))

    @classmethod
    def thaw_vcpu(cls, state: tuple[Any, ...], vm: Vm) -> Machine:
        m = cls.__new__(cls)
        (era, m.host, m.vendor, m.tdp_mmu, m.maxphyaddr, m.footprint_gib, m.cr0_wp_backport,
         m.cr0, m.cr3, m.cr4, m.efer, m.smm, m.smm_saved, m.guest_mode, m.nested, ctxs, m.mmu,
         m.walk, reqs, m.running, m.has_run, m.pdptrs) = state
        m.era = resolve(era)
        m.ctx = {n: Ctx(r, root, prev) for n, (r, root, prev) in ctxs}
        m.l1_name = next(iter(m.ctx))
        m.requests = set(reqs)
        m.vm = vm
        m.log = []
        return m

    @classmethod
    def thaw(cls, state: tuple[Any, ...]) -> Machine:
        """The first vCPU of a system state (the only one when it came from :meth:`freeze`)."""
        vm, vcpus = state
        return cls.thaw_vcpu(vcpus[0], Vm.thaw(vm))

    # The VM's pages, reached through the vCPU (several vCPUs may share one Vm).
    @property
    def sp(self) -> dict[SpKey, int]:
        return self.vm.sp

    @sp.setter
    def sp(self, value: dict[SpKey, int]) -> None:
        self.vm.sp = value

    @property
    def tdp_roots(self) -> list[list[Any]]:
        return self.vm.tdp_roots

    @tdp_roots.setter
    def tdp_roots(self, value: list[list[Any]]) -> None:
        self.vm.tdp_roots = value

    @property
    def tdp_empty(self) -> frozenset[TdpKey]:
        return self.vm.tdp_empty

    @tdp_empty.setter
    def tdp_empty(self, value: frozenset[TdpKey]) -> None:
        self.vm.tdp_empty = value

    @property
    def zombies(self) -> int:
        return self.vm.zombies

    @zombies.setter
    def zombies(self, value: int) -> None:
        self.vm.zombies = value

    # ------------------------------------------------------------------ helpers
    def emit(self, name: str, **fields: Any) -> None:
        self.log.append(ev(name, **fields))

    def inputs(self) -> Inputs:
        return Inputs(cr0=self.cr0, cr4=self.cr4, efer=self.efer, smm=self.smm,
                      guest_mode=self.guest_mode, maxphyaddr=self.maxphyaddr)

    @property
    def tdp_enabled(self) -> bool:
        return self.host.tdp != "none"

    def regs(self) -> CpuRegs:
        return CpuRegs(self.cr0, self.cr3, self.cr4, self.efer)

    def cur(self) -> Ctx:
        return self.ctx[self.mmu]

    def _direct(self, c: Ctx) -> bool:
        r = c.roles
        if self.era.has_cpu_role:
            return bool(self.era.page.get(r.root_role, "direct"))
        return r.direct_map

    def _levels(self, c: Ctx) -> tuple[int, int]:
        """(KVM's root level, the guest's paging level) of a context."""
        r, p = c.roles, self.era.page
        if self.era.has_cpu_role:
            return p.get(r.root_role, "level"), p.get(r.base, "level")
        return r.shadow_root_level, r.root_level

    def _guest_pgd(self, name: str) -> int:
        """``get_guest_pgd``: CR3 for L1/L2 paging, the EPTP/nCR3 for guest_mmu."""
        if name == "guest_mmu" or (name == "mmu" and self.nested and self.nested.paging):
            assert self.nested is not None
            return self.nested.nested_cr3
        return self.cr3

    # ------------------------------------------------------------------ roots and pages
    def _sp_role(self, key: SpKey | TdpKey) -> int:
        return key.role

    def _usable(self, root: RootInfo, pgd: int, role: int, *, ignore_pgd_if_direct: bool) -> bool:
        """``is_root_usable``: valid, backed by a shadow page, same PGD (or direct), same role."""
        hpa = root.hpa
        if hpa is None or isinstance(hpa, PaeRoot):
            return False
        if isinstance(hpa, SpKey) and hpa.zombie:
            return False  # role.invalid is set on a zapped page: never equal
        if isinstance(hpa, TdpKey) and self._tdp_entry(hpa)[2]:
            return False
        direct = bool(self.era.page.get(role, "direct"))
        if not (direct and ignore_pgd_if_direct) and root.pgd != pgd:
            return False
        return hpa.role == role

    def _tdp_entry(self, key: TdpKey) -> list[Any]:
        for e in self.tdp_roots:
            if e[0] == key:
                return e
        raise KeyError(key)

    def _put_page(self, key: SpKey | TdpKey, mmu: str) -> None:
        if isinstance(key, SpKey):
            n = self.sp[key] - 1
            if n == 0 and key.zombie:
                del self.sp[key]
                self.zombies -= 1
                self.emit("kvm_mmu_prepare_zap_page", gfn=key.gfn, role=key.role,
                          why="last reference to an invalid root")
            else:
                self.sp[key] = n
            return
        e = self._tdp_entry(key)
        e[1] -= 1
        if e[1] > 0:
            return
        v = self.era.version
        pages = 1 if key in self.tdp_empty else \
            pt_pages(self.footprint_gib, self.era.page.get(key.role, "level"))
        self.tdp_empty -= {key}
        self.tdp_roots.remove(e)
        if v < (5, 18):
            self.emit("kvm_tdp_mmu_free_root", role=key.role, pages_freed=pages, where="vcpu",
                      why="last reference: the whole tree is zapped and freed synchronously")
        elif e[2]:
            self.emit("kvm_tdp_mmu_free_root", role=key.role, pages_freed=pages, where="vcpu",
                      why="last reference to an invalid root (its tree was already zapped)")
        else:
            # 5.18-6.3: the root is marked invalid and zapped by an async worker.
            self.emit("kvm_tdp_mmu_free_root", role=key.role, pages_freed=pages, where="worker",
                      why="last reference: root invalidated, tree zapped by tdp_mmu_zap_wq")

    def _put_root(self, hpa: Any, mmu: str) -> None:
        if isinstance(hpa, PaeRoot):
            for page in hpa.pages:
                if page is not None:
                    self._put_page(page, mmu)
        else:
            self._put_page(hpa, mmu)

    def kvm_mmu_free_roots(self, name: str, mask: int, why: str = "") -> None:
        """``kvm_mmu_free_roots``: drop the roots selected by ``mask`` (CURRENT, PREVIOUS(i))."""
        c = self.ctx[name]
        prev = list(c.prev)
        chosen = [i for i in range(KVM_MMU_NUM_PREV_ROOTS)
                  if mask & KVM_MMU_ROOT_PREVIOUS(i) and prev[i].valid]
        current = bool(mask & KVM_MMU_ROOT_CURRENT and c.root.valid)
        if not chosen and not current:
            return  # quick exit: nothing selected is valid
        freed = (("root",) if current else ()) + tuple(f"prev_roots[{i}]" for i in chosen)
        self.emit("kvm_mmu_free_roots", mmu=name, mask=mask, freed=freed,
                  **({"why": why} if why else {}))
        for i in chosen:
            self._put_root(prev[i].hpa, name)
            prev[i] = RootInfo(prev[i].pgd, None)
        root = c.root
        if current:
            self._put_root(root.hpa, name)
            root = INVALID_ROOT if self.era.version >= (5, 10) else RootInfo(root.pgd, None)
        c.root, c.prev = root, tuple(prev)  # type: ignore[assignment]

    def kvm_mmu_unload(self, why: str = "") -> None:
        """``kvm_mmu_unload``: free every root of root_mmu and guest_mmu (the single MMU <4.20)."""
        self.emit("kvm_mmu_unload", **({"why": why} if why else {}))
        # KVM_MMU_ROOTS_ALL is ~0UL in 4.19-5.19 and BIT(1 + KVM_MMU_NUM_PREV_ROOTS) - 1 from
        # 6.x; only the low four bits select roots.
        mask = (1 << 64) - 1 if (4, 19) <= self.era.version < (6, 4) else KVM_MMU_ROOTS_ALL
        for name in ("root_mmu", "guest_mmu") if self.era.split_contexts else ("mmu",):
            self.kvm_mmu_free_roots(name, mask)

    def get_page(self, gfn: int, level: int, direct: bool, gaddr: int, c: Ctx) -> SpKey:
        """``kvm_mmu_get_page`` (``kvm_mmu_get_shadow_page`` in 6.x) for a root page."""
        role = page_role(self.era, c.roles, level=level, direct=direct, gaddr=gaddr)
        key = SpKey(gfn, role)
        created = key not in self.sp
        if created:
            self.sp[key] = 0
        self.sp[key] += 1
        self.emit("kvm_mmu_get_page", gfn=gfn, role=role, level=level, created=created)
        return key

    def _tdp_mmu_get_root(self, c: Ctx, level: int) -> TdpKey:
        """``kvm_tdp_mmu_get_vcpu_root_hpa``: reuse a valid root of the same role, or allocate."""
        role = page_role(self.era, c.roles, level=level, direct=True)
        for e in self.tdp_roots:
            if e[0].role == role and not e[2]:
                e[1] += 1
                if e[0] in self.tdp_empty:
                    # A root emptied by a 5.10 zap-all: the guest faults its tree back in.
                    self.tdp_empty -= {e[0]}
                    self.emit("kvm_tdp_mmu_get_root", role=role, reused=True, refcount=e[1],
                              pages_to_build=pt_pages(self.footprint_gib, level) - 1)
                else:
                    self.emit("kvm_tdp_mmu_get_root", role=role, reused=True, refcount=e[1])
                return e[0]
        serials = {e[0].serial for e in self.tdp_roots if e[0].role == role}
        key = TdpKey(role, min(set(range(len(serials) + 1)) - serials))
        # 6.4+: the TDP MMU keeps its own reference until the root is invalidated.
        refs = 2 if self.era.version >= (6, 4) else 1
        self.tdp_roots.insert(0, [key, refs, False])
        pages = pt_pages(self.footprint_gib, level)
        self.emit("kvm_tdp_mmu_get_root", role=role, reused=False, refcount=refs,
                  pages_to_build=pages)
        if self.era.version >= (5, 15):
            # tdp_mmu_init_sp / alloc_tdp_mmu_page trace the new root (5.15+).
            self.emit("kvm_mmu_get_page", gfn=0, role=role, level=level, created=True)
        return key

    def kvm_mmu_load(self) -> None:
        """``kvm_mmu_load``: allocate (or find) the roots of ``vcpu->arch.mmu``."""
        name = self.mmu
        c = self.ctx[name]
        level, guest_level = self._levels(c)
        direct = self._direct(c)
        pgd = self._guest_pgd(name)
        if direct:
            if self.tdp_mmu and name in ("root_mmu",) and level >= 4:
                hpa: Any = self._tdp_mmu_get_root(c, level)
            elif level >= 4:
                hpa = self.get_page(0, level, True, 0, c)
            else:
                hpa = PaeRoot(tuple(self.get_page(i << 18, 2, True, i << 30, c)
                                    for i in range(4)), 3)
            pgd = 0  # direct roots record no guest PGD
        elif guest_level >= 4:
            hpa = self.get_page(pgd >> 12, level, False, 0, c)
        else:
            gfn = pgd >> 12
            # PAE guests: the four PDPTEs are taken to point at the pages that
            # follow the PDPT (mmulib's guest layout; the live probe builds the same).
            pages = tuple(
                self.get_page(gfn if guest_level == 2 else gfn + 1 + i, 2, False, i << 30, c)
                for i in range(4))
            hpa = PaeRoot(pages, max(level, 3))
        c.root = RootInfo(pgd, hpa)
        self.emit("kvm_mmu_load", mmu=name)

    def kvm_mmu_reload(self) -> None:
        """``kvm_mmu_reload`` at VM entry: load roots only if the current one is invalid."""
        if not self.cur().root.valid:
            self.kvm_mmu_load()

    # ------------------------------------------------------------------ role (re)initialisation
    def kvm_init_mmu(self, caller: str, *, reset_roots: bool = False) -> None:
        """``kvm_init_mmu``: nested_mmu if L2 walks, else TDP or shadow on the L1 context."""
        era = self.era
        if reset_roots and (4, 19) <= era.version < (5, 15):
            # kvm_init_mmu(vcpu, reset_roots=true): forget the current MMU's roots.
            c = self.cur()
            c.root = RootInfo(c.root.pgd, None) if era.version < (5, 10) else INVALID_ROOT
            c.prev = (INVALID_ROOT,) * 3  # type: ignore[assignment]
        inp = self.inputs()
        if self.walk == "nested_mmu":
            name = "nested_mmu"
            new, rec = init_nested_mmu(era, self.ctx[name].roles, inp)
        elif self.tdp_enabled:
            name = self.l1_name
            new, rec = init_tdp(era, self.ctx[name].roles, self.host, inp)
        else:
            name = self.l1_name
            new, rec = init_shadow(era, self.ctx[name].roles, inp)
        self.ctx[name].roles = new
        self.emit("kvm_init_mmu", caller=caller, function=rec.function, mmu=name,
                  reinit=rec.reinit)

    def kvm_mmu_reset_context(self, caller: str, why: str) -> None:
        """``kvm_mmu_reset_context`` = ``kvm_mmu_unload`` + ``kvm_init_mmu``."""
        self.emit("kvm_mmu_reset_context", caller=caller, why=why)
        self.kvm_mmu_unload()
        self.kvm_init_mmu("kvm_mmu_reset_context", reset_roots=True)

    # ------------------------------------------------------------------ PGD switch
    def kvm_mmu_new_pgd(self, new_pgd: int, *, role: int | None = None,
                        current_pgd: int | None = None) -> None:
        """``kvm_mmu_new_cr3`` (4.x) / ``kvm_mmu_new_pgd``: the fast PGD switch per era."""
        era, name = self.era, self.mmu
        c = self.ctx[name]
        v = era.version
        if v < (4, 19):
            self.emit("fast_pgd_switch", mmu=name, pgd=new_pgd, hit=False, slot=None,
                      why="4.18 has no root cache")
            self.kvm_mmu_free_roots(name, KVM_MMU_ROOT_CURRENT)
            return
        if v < (5, 18):
            if role is None:
                role = calc_root_page_role(era, self.host, self.inputs())
            assert role is not None
            level, guest_level = self._levels(c)
            if not (level >= 4 and guest_level >= 4):
                self.emit("fast_pgd_switch", mmu=name, pgd=new_pgd, hit=False, slot=None,
                          why="fast switch only for 64-bit guests on 64-bit roots")
                self.kvm_mmu_free_roots(name, KVM_MMU_ROOT_CURRENT)
                return

            def usable(r: RootInfo) -> bool:
                return self._usable(r, new_pgd, role, ignore_pgd_if_direct=v >= (5, 10))

            if v < (5, 10):
                pgd_before = self.cr3 if current_pgd is None else current_pgd
                out = rotate_always(c.root, c.prev, usable, pgd_before)
            else:
                out = cached_root_available(c.root, c.prev, usable)
            self._apply_lookup(c, name, new_pgd, out)
            if not out.hit:
                self.kvm_mmu_free_roots(name, KVM_MMU_ROOT_CURRENT, "evicted LRU root")
            return
        if c.root.valid and isinstance(c.root.hpa, PaeRoot):
            self.kvm_mmu_free_roots(name, KVM_MMU_ROOT_CURRENT, "special root (no shadow page)")

        def usable2(r: RootInfo) -> bool:
            return self._usable(r, new_pgd, self._root_level_role(c),
                                ignore_pgd_if_direct=True)

        if c.root.valid:
            out = cached_root_find_and_keep_current(c.root, c.prev, usable2)
            self._apply_lookup(c, name, new_pgd, out)
            if out.evicted is not None and out.evicted.valid:
                # The LRU root sits in mmu->root until kvm_mmu_free_roots(CURRENT).
                c.root = out.evicted
                self.kvm_mmu_free_roots(name, KVM_MMU_ROOT_CURRENT, "evicted LRU root")
        else:
            out = cached_root_find_without_current(c.root, c.prev, usable2)
            self._apply_lookup(c, name, new_pgd, out)

    def _root_level_role(self, c: Ctx) -> int:
        """The role a root of this context is created with (what ``is_root_usable`` compares)."""
        level, _ = self._levels(c)
        return page_role(self.era, c.roles, level=level, direct=self._direct(c))

    def _apply_lookup(self, c: Ctx, name: str, pgd: int, out: Lookup) -> None:
        c.root, c.prev = out.root, out.prev_roots
        self.emit("fast_pgd_switch", mmu=name, pgd=pgd, hit=out.hit, slot=out.slot,
                  evicted=None if out.evicted is None or not out.evicted.valid else "LRU")
        if out.hit:
            self.requests.add("KVM_REQ_LOAD_MMU_PGD")

    # ------------------------------------------------------------------ VM entry
    def vm_entry(self) -> None:
        """``vcpu_enter_guest``: service MMU requests, then ``kvm_mmu_reload``."""
        if "KVM_REQ_MMU_RELOAD" in self.requests:
            self.requests.discard("KVM_REQ_MMU_RELOAD")
            self.kvm_mmu_unload("KVM_REQ_MMU_RELOAD")
        if "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS" in self.requests:
            self.requests.discard("KVM_REQ_MMU_FREE_OBSOLETE_ROOTS")
            self.free_obsolete_roots()
        self.requests.discard("KVM_REQ_LOAD_MMU_PGD")
        self.kvm_mmu_reload()
        self.emit("vm_entry", mmu=self.mmu, root=_root_str(self.cur().root))
        self.running = True
        self.has_run = True

    def free_obsolete_roots(self) -> None:
        """``kvm_mmu_free_obsolete_roots`` (5.18+): free roots whose page is invalid/obsolete."""
        for name in ("root_mmu", "guest_mmu"):
            c = self.ctx[name]
            mask = 0
            if c.root.valid and self._obsolete(c.root.hpa):
                mask |= KVM_MMU_ROOT_CURRENT
            for i, r in enumerate(c.prev):
                if r.valid and self._obsolete(r.hpa):
                    mask |= KVM_MMU_ROOT_PREVIOUS(i)
            if mask:
                self.kvm_mmu_free_roots(name, mask, "obsolete")

    def _obsolete(self, hpa: Any) -> bool:
        if isinstance(hpa, PaeRoot):
            return True  # no shadow page at the root: is_obsolete_root() says yes
        if isinstance(hpa, SpKey):
            return bool(hpa.zombie)
        return bool(self._tdp_entry(hpa)[2])

    # ------------------------------------------------------------------ register writes
    def kvm_set_cr0(self, new: int, *, caller: str = "kvm_set_cr0") -> None:
        old = self.cr0
        if (new & CR0_PG and not old & CR0_PG and self.cr4 & CR4_PAE
                and not self.efer & EFER_LME):
            self.load_pdptrs(self.cr3)
        self.cr0 = new
        self.efer = effective_efer(new, self.efer)
        v = self.era.version
        changed = old ^ new
        if v >= (6, 4) and changed == CR0_WP and not new & CR0_PG:
            self.emit("kvm_post_set_cr0", action="nothing", why="CR0.WP toggled with PG=0")
            return
        if self.cr0_wp_backport != "none" and changed == CR0_WP:
            # 6.4 (and its stable backports, e.g. 6.3.8, without the PG=0 early return
            # above): with TDP a WP-only toggle re-inits the MMU and keeps the roots.
            if self.tdp_enabled:
                self.emit("kvm_post_set_cr0", action="kvm_init_mmu",
                          why="only CR0.WP changed and TDP is on: roots are kept")
                self.kvm_init_mmu("kvm_post_set_cr0")
                return
        if changed & (CR0_PG | CR0_WP):
            bits = "|".join(n for n, b in (("PG", CR0_PG), ("WP", CR0_WP)) if changed & b)
            self.kvm_mmu_reset_context("kvm_post_set_cr0" if v >= (5, 12) else caller,
                                       f"CR0.{bits} changed")

    def kvm_set_cr4(self, new: int) -> None:
        from ..regs import role_bits

        old = self.cr4
        pdptr_bits = (1 << 7) | (1 << 4) | CR4_PAE | (1 << 20)  # X86_CR4_PDPTR_BITS
        if (self.cr0 & CR0_PG and new & CR4_PAE and not self.efer & EFER_LMA
                and (old ^ new) & pdptr_bits):
            self.load_pdptrs(self.cr3)
        self.cr4 = new
        v = self.era.version
        changed = old ^ new
        roles = role_bits("CR4", v)
        caller = "kvm_post_set_cr4" if v >= (5, 12) else "kvm_set_cr4"
        if changed & roles:
            self.kvm_mmu_reset_context(caller, "a CR4 role bit changed")
        elif v < (5, 17) and old & CR4_PCIDE and not new & CR4_PCIDE:
            self.kvm_mmu_reset_context(caller, "CR4.PCIDE 1->0")
        elif (5, 17) <= v < (5, 18) and changed & CR4_PCIDE:
            self.requests.add("KVM_REQ_MMU_RELOAD")
            self.emit("kvm_make_request", request="KVM_REQ_MMU_RELOAD", why="CR4.PCIDE changed")
        if v >= (5, 18) and not self.tdp_enabled and new & CR4_PCIDE and not old & CR4_PCIDE:
            self.kvm_mmu_unload("CR4.PCIDE 0->1 with shadow paging")
        if v < (5, 10) and changed & (CR4_OSXSAVE | CR4_PKE):
            self.kvm_update_cpuid("CR4.OSXSAVE/PKE changed")

    def set_efer(self, new: int) -> None:
        from ..regs import role_bits

        old = self.efer
        self.efer = new
        if (old ^ new) & role_bits("EFER", self.era.version):
            self.kvm_mmu_reset_context("set_efer", "an EFER role bit changed")

    def kvm_set_cr3(self, value: int) -> None:
        """``kvm_set_cr3`` for shadow paging (with TDP, MOV CR3 does not exit)."""
        v = self.era.version
        pcide = bool(self.cr4 & CR4_PCIDE)
        noflush = pcide and bool(value & CR3_NOFLUSH)
        cr3 = value & ~CR3_NOFLUSH
        pae_paging = bool(self.cr0 & CR0_PG and self.cr4 & CR4_PAE and not self.efer & EFER_LMA)
        if v < (4, 19):
            if cr3 == self.cr3 and not pae_paging:
                self.emit("kvm_mmu_sync_roots", why="same CR3: sync and flush")
                return
            self.cr3 = cr3
            self.kvm_mmu_new_pgd(cr3)
            return
        if v < (5, 15):
            if cr3 == self.cr3 and not pae_paging:
                self.emit("kvm_mmu_sync_roots", why="same CR3" + (" (NOFLUSH)" if noflush else ""))
                return
            old = self.cr3
            self.kvm_mmu_new_pgd(cr3, current_pgd=old)
            self.cr3 = cr3
            return
        if not (cr3 == self.cr3 and not pae_paging):
            if pae_paging:
                self.load_pdptrs(cr3)
            if cr3 != self.cr3:
                self.kvm_mmu_new_pgd(cr3)
            self.cr3 = cr3
        if not noflush:
            self.kvm_invalidate_pcid(cr3 & 0xFFF if pcide else 0)

    def kvm_invalidate_pcid(self, pcid: int) -> None:
        """MOV CR3 without NOFLUSH (5.15+): free the cached roots of the flushed PCID.

        5.15 has no guard: with CR4.PCIDE=0 every PCID reads as 0, so every previous root
        is freed on each MOV CR3.  5.17 returns early with TDP (a guest TLB flush instead)
        and when PCIDE=0 (a MOV CR3 with PCIDE=0 flushes everything anyway).
        """
        pcide = bool(self.cr4 & CR4_PCIDE)
        if self.era.version >= (5, 17) and (self.tdp_enabled or not pcide):
            return
        c = self.cur()
        mask = 0
        for i, r in enumerate(c.prev):
            if ((r.pgd & 0xFFF) if pcide else 0) == pcid:
                mask |= KVM_MMU_ROOT_PREVIOUS(i)
        if mask:
            self.kvm_mmu_free_roots(self.mmu, mask, f"kvm_invalidate_pcid({pcid})")

    def load_pdptrs(self, cr3: int) -> None:
        """``load_pdptrs``: read the four PDPTEs; 5.17+ with shadow paging frees the current
        root when they changed (its pae_root entries point at the old tables)."""
        gfn = cr3 >> 12
        new = tuple(gfn + 1 + i for i in range(4))
        if self.era.version >= (5, 17) and not self.tdp_enabled and new != self.pdptrs:
            self.kvm_mmu_free_roots(self.mmu, KVM_MMU_ROOT_CURRENT, "PDPTEs changed")
        self.pdptrs = new

    def kvm_update_cpuid(self, why: str) -> None:
        """4.18-4.20 ``kvm_update_cpuid``: ends with an unconditional MMU reset."""
        self.kvm_mmu_reset_context("kvm_update_cpuid", why)

    # ------------------------------------------------------------------ CPUID, INIT, memslots
    def cpuid_update(self) -> None:
        v = self.era.version
        if v >= (5, 17) and self.has_run:
            self.emit("kvm_set_cpuid", why="after KVM_RUN only an identical CPUID table is "
                                           "accepted (kvm_cpuid_check_equal), as a no-op")
            return
        if v < (5, 10):
            self.kvm_update_cpuid("KVM_SET_CPUID")
            return
        if v < (5, 15):
            self.kvm_mmu_reset_context("kvm_vcpu_after_set_cpuid", "KVM_SET_CPUID")
            return
        p, e = self.era.page, self.era.ext
        assert e is not None
        for name in ("root_mmu", "guest_mmu", "nested_mmu"):
            r = self.ctx[name].roles
            ext = e.set(r.ext, valid=0)
            root = r.root_role
            if v >= (5, 19):
                root = p.set(root, invalid=1) if v >= (6, 14) else 0
            self.ctx[name].roles = replace(r, ext=ext, root_role=root)
        self.emit("kvm_mmu_after_set_cpuid",
                  why="ext.valid cleared" + (" and root_role invalidated" if v >= (5, 19) else ""))
        self.kvm_mmu_reset_context("kvm_mmu_after_set_cpuid", "guest CPUID changed")

    def init_event(self) -> None:
        """INIT: ``kvm_vcpu_reset(vcpu, true)``; registers go back to their INIT values."""
        if self.nested is not None:
            raise SimError("INIT while L2 runs is not modelled (VMX blocks INIT in VMX root)")
        old_pg = bool(self.cr0 & CR0_PG)
        self.cr0, self.cr3, self.cr4, self.efer = INIT_CR0, 0, 0, 0
        v = self.era.version
        if v >= (5, 15):
            if old_pg:
                self.kvm_mmu_reset_context("kvm_vcpu_reset", "INIT with CR0.PG=1")
            else:
                self.emit("kvm_vcpu_reset", why="INIT with CR0.PG=0: no MMU reset")
        elif self.vendor == "svm":
            self.kvm_mmu_reset_context("init_vmcb", "SVM INIT reinitialises the VMCB")
        else:
            self.emit("kvm_vcpu_reset",
                      why="VMX INIT: registers set through vmx_set_cr0/cr4 (no MMU reset "
                          "with unrestricted guest)")

    def memslot_change(self, kind: str, others: tuple[Machine, ...] = ()) -> None:
        """Delete or move a memslot: ``kvm_arch_flush_shadow_memslot``.

        ``others`` are the VM's other vCPUs: their roots are renamed with the zapped
        pages and they get the same request.
        """
        v = self.era.version
        everyone = (self, *others)
        self.emit("kvm_arch_flush_shadow_memslot", change=kind)
        # Shadow pages without root references are zapped; referenced roots become invalid.
        for key, count in list(self.sp.items()):
            if key.zombie:
                continue
            del self.sp[key]
            if count > 0:
                self.zombies += 1
                z = SpKey(key.gfn, key.role, self.zombies)
                self.sp[z] = count
                for m in everyone:
                    m._rename_root(key, z)
        if v < (5, 17):
            # 5.10: kvm_reload_remote_mmus comes before kvm_tdp_mmu_zap_all.
            self._request_reload(everyone)
        if self.tdp_mmu:
            for e in list(self.tdp_roots):
                if e[2]:
                    continue
                level = self.era.page.get(e[0].role, "level")
                pages = pt_pages(self.footprint_gib, level)
                if v < (5, 17):
                    # 5.10 kvm_tdp_mmu_zap_all: the SPTEs go, the (empty) roots stay valid.
                    if e[0] not in self.tdp_empty:
                        self.emit("kvm_tdp_mmu_zap_all", role=e[0].role, pages_freed=pages - 1,
                                  where="ioctl")
                        self.tdp_empty |= {e[0]}
                    continue
                # kvm_tdp_mmu_invalidate_all_roots sets role.invalid; the trees are zapped
                # before the ioctl returns (kvm_tdp_mmu_zap_invalidated_roots); 6.4+ also
                # drops the TDP MMU's own reference, so an unreferenced root goes at once.
                e[2] = True
                freed = 0 if e[0] in self.tdp_empty else pages - 1
                self.tdp_empty |= {e[0]}
                self.emit("kvm_tdp_mmu_invalidate_all_roots", role=e[0].role, pages_freed=freed,
                          where="ioctl")
                if v >= (6, 4):
                    self._put_page(e[0], self.l1_name)
        if v >= (5, 18):
            for m in everyone:
                m.requests.add("KVM_REQ_MMU_FREE_OBSOLETE_ROOTS")
            self.emit("kvm_make_request", request="KVM_REQ_MMU_FREE_OBSOLETE_ROOTS",
                      why="fast zap: free only obsolete roots")
        elif v >= (5, 17):
            # 5.17: roots are invalidated first, then every vCPU is told to reload.
            self._request_reload(everyone)

    def _request_reload(self, everyone: tuple[Machine, ...]) -> None:
        for m in everyone:
            m.requests.add("KVM_REQ_MMU_RELOAD")
        self.emit("kvm_make_request", request="KVM_REQ_MMU_RELOAD",
                  why="fast zap: all vCPUs unload")

    def _rename_root(self, old: SpKey, new: SpKey) -> None:
        def fix(r: RootInfo) -> RootInfo:
            if r.hpa == old:
                return RootInfo(r.pgd, new)
            if isinstance(r.hpa, PaeRoot) and old in r.hpa.pages:
                return RootInfo(r.pgd, PaeRoot(tuple(new if p == old else p
                                                     for p in r.hpa.pages), r.hpa.wrap))
            return r
        for c in self.ctx.values():
            c.root = fix(c.root)
            c.prev = tuple(fix(r) for r in c.prev)  # type: ignore[assignment]

    # ------------------------------------------------------------------ SMM
    def smi(self) -> None:
        """``enter_smm``: save state, enter SMM with paging off, reset the MMU (per era)."""
        if self.smm:
            raise SimError("SMI while already in SMM (it stays latched)")
        if self.nested is not None:
            raise SimError("SMI while L2 runs is not modelled")
        v = self.era.version
        self.smm_saved = (self.cr0, self.cr3, self.cr4, self.efer)
        new_cr0 = self.cr0 & ~(CR0_PE | (1 << 2) | (1 << 3) | CR0_PG)
        if v >= (5, 17):
            self.smm = True
            self.kvm_mmu_reset_context("kvm_smm_changed", "entering SMM")
        else:
            self.smm = True
        self.cr0, self.cr4, self.efer = new_cr0, 0, 0
        if v < (5, 10):
            self.kvm_update_cpuid("enter_smm")
        self.kvm_mmu_reset_context("enter_smm", "SMM entry state loaded")

    def rsm(self) -> None:
        """RSM: ``em_rsm`` leaves SMM, then reloads the saved state through the setters."""
        if not self.smm or self.smm_saved is None:
            raise SimError("RSM outside SMM raises #UD")
        cr0, cr3, cr4, efer = self.smm_saved
        early = self.era.version >= (5, 10)
        if early:
            # 5.10+ em_rsm clears the SMM flags (kvm_smm_changed) before loading the state.
            self.smm = False
            self.kvm_mmu_reset_context("kvm_smm_changed", "leaving SMM")
        # em_rsm: clear PCIDE, PG|PE, PAE, EFER in SMM's own state (all already 0 here),
        # then rsm_load_state_64: EFER (without LMA), then rsm_enter_protected_mode:
        # CR3, CR4 without PCIDE, CR0, then CR4 with PCIDE.
        self.set_efer(efer & ~EFER_LMA)
        self.kvm_set_cr3(cr3 & ~0xFFF if cr4 & CR4_PCIDE else cr3)
        self.kvm_set_cr4(cr4 & ~CR4_PCIDE)
        self.kvm_set_cr0(cr0, caller="kvm_set_cr0")
        if cr4 & CR4_PCIDE:
            self.kvm_set_cr4(cr4)
            if cr3 & 0xFFF:
                self.kvm_set_cr3(cr3)
        if not early:
            # 4.18-4.20: set_hflags leaves SMM only after the state load.
            self.smm = False
            self.kvm_mmu_reset_context("kvm_smm_changed", "leaving SMM")
        self.smm_saved = None

    # ------------------------------------------------------------------ nested (L1 <-> L2)
    def nested_entry(self, n: Nested, l2: tuple[int, int, int, int]) -> None:
        """VMX VM-entry / SVM VMRUN into L2, per era."""
        if self.nested is not None:
            raise SimError("already running L2")
        if self.smm:
            raise SimError("VM entry from SMM is not modelled")
        if n.paging and not self.tdp_enabled:
            raise SimError("nested EPT/NPT needs L0 TDP (tdp ept/npt)")
        self.nested = replace(n, l1=(self.cr0, self.cr3, self.cr4, self.efer))
        if n.vendor == "vmx":
            self._vmx_entry(l2)
        else:
            self._svm_entry(l2)

    def _load_l2(self, l2: tuple[int, int, int, int], *, cr3: bool = True) -> None:
        self.cr0, l2cr3, self.cr4, self.efer = l2
        if cr3:
            self.cr3 = l2cr3

    def _vmx_entry(self, l2: tuple[int, int, int, int]) -> None:
        n, v = self.nested, self.era.version
        assert n is not None
        self.guest_mode = True  # enter_guest_mode precedes prepare_vmcs02
        self.emit("nested_vmx_enter_non_root_mode", nested_ept=n.paging)
        if v < (4, 19):
            if n.paging:
                self.kvm_mmu_unload("nested_ept_init_mmu_context")
                self._shadow_ept_init()
                self.walk = "nested_mmu"
            self._load_l2(l2)
            self.kvm_mmu_reset_context("nested_vmx_load_cr3", "4.18 always resets on nested CR3")
            return
        if n.paging:
            if self.era.split_contexts:
                self.mmu = "guest_mmu"
            self._shadow_ept_init()
            self.walk = "nested_mmu"
            self._load_l2(l2)
            self.kvm_init_mmu("nested_vmx_load_cr3")
            return
        old_cr3 = self.cr3
        self._load_l2(l2, cr3=False)
        self._nested_load_cr3(l2[1], old_cr3, "nested_vmx_load_cr3")

    def _nested_load_cr3(self, cr3: int, old_cr3: int, caller: str) -> None:
        """``nested_vmx_load_cr3`` / ``nested_svm_load_cr3`` without nested paging."""
        v = self.era.version
        if v < (5, 18):
            self.kvm_mmu_new_pgd(cr3, current_pgd=old_cr3)
            self.cr3 = cr3
            self.kvm_init_mmu(caller)
        else:
            self.cr3 = cr3
            self.kvm_init_mmu(caller)
            self.kvm_mmu_new_pgd(cr3)

    def _shadow_ept_init(self) -> None:
        n, era, v = self.nested, self.era, self.era.version
        assert n is not None
        name = self.mmu
        c = self.ctx[name]
        l1ctx = self.ctx[self.l1_name]
        new, rec = init_shadow_ept(era, c.roles, l1ctx.roles, self.inputs(), execonly=n.execonly,
                                   accessed_dirty=n.ad, level=n.ept_level)
        if v < (5, 18) and rec.new_pgd_role is not None:
            # 4.19: the single MMU still has L1's get_cr3; 4.20: guest_mmu's get_cr3 is
            # nested_ept_get_cr3 (set at the first entry, never reset), i.e. the EPTP.
            pushed = n.nested_cr3 if era.split_contexts else self.cr3
            self.kvm_mmu_new_pgd(n.nested_cr3, role=rec.new_pgd_role, current_pgd=pushed)
            c = self.ctx[name]
        c.roles = new
        self.emit("kvm_init_shadow_ept_mmu", mmu=name, reinit=rec.reinit)
        if v >= (5, 18):
            self.kvm_mmu_new_pgd(n.nested_cr3)

    def _svm_entry(self, l2: tuple[int, int, int, int]) -> None:
        n, era, v = self.nested, self.era, self.era.version
        assert n is not None
        self.emit("enter_svm_guest_mode", nested_npt=n.paging)
        if v < (5, 10):
            if n.paging:
                if v < (4, 20):
                    self.kvm_mmu_unload("enter_svm_guest_mode")
                else:
                    self.mmu = "guest_mmu"
                c = self.ctx[self.mmu]
                new, rec = init_shadow_npt(era, c.roles, self.host, self.inputs(), self.inputs())
                c.roles = new
                self.emit("kvm_init_mmu", caller="nested_svm_init_mmu_context",
                          function=rec.function, mmu=self.mmu, reinit=rec.reinit)
                self.walk = "nested_mmu"
            self._load_l2(l2)
            self.kvm_mmu_reset_context("enter_svm_guest_mode", "guest paging mode is active")
            self.guest_mode = True  # enter_guest_mode is the last step before 5.10
            return
        old_cr3 = self.cr3
        if n.paging:
            self.mmu = "guest_mmu"
            c = self.ctx["guest_mmu"]
            l1 = self.inputs()
            live = Inputs(cr0=l2[0], cr4=l2[2], efer=l2[3], smm=self.smm,
                          guest_mode=self.guest_mode, maxphyaddr=self.maxphyaddr)
            gm = v >= (6, 14)
            if gm:
                self.guest_mode = True
            l1 = replace(l1, guest_mode=self.guest_mode)
            live = replace(live, guest_mode=self.guest_mode)
            new, rec = init_shadow_npt(era, c.roles, self.host, l1, live)
            if v < (5, 18):
                self.kvm_mmu_new_pgd(n.nested_cr3, role=rec.new_pgd_role, current_pgd=old_cr3)
                c = self.ctx["guest_mmu"]
            c.roles = new
            self.emit("kvm_init_mmu", caller="nested_svm_init_mmu_context",
                      function=rec.function, mmu="guest_mmu", reinit=rec.reinit)
            if v >= (5, 18):
                self.kvm_mmu_new_pgd(n.nested_cr3)
            self.walk = "nested_mmu"
        self._load_l2(l2, cr3=False)
        self.guest_mode = True
        if n.paging:
            self.cr3 = l2[1]
            self.kvm_init_mmu("nested_svm_load_cr3")
        else:
            self._nested_load_cr3(l2[1], old_cr3, "nested_svm_load_cr3")

    def nested_exit(self) -> None:
        """VMX VM-exit to L1 / SVM #VMEXIT."""
        n = self.nested
        if n is None:
            raise SimError("no L2 is running")
        v = self.era.version
        l1cr0, l1cr3, l1cr4, l1efer = n.l1
        self.guest_mode = False
        self.emit("nested_vmexit", vendor=n.vendor)
        if n.vendor == "vmx" and v < (4, 19) or n.vendor == "svm" and v < (5, 10):
            self.walk = self.l1_name
            self.mmu = self.l1_name
            self.cr0, self.cr3, self.cr4, self.efer = l1cr0, l1cr3, l1cr4, l1efer
            self.nested = None
            self.kvm_mmu_reset_context(
                "nested_vmx_load_cr3" if n.vendor == "vmx" else "nested_svm_vmexit",
                "back to L1")
            return
        old_cr3 = self.cr3
        self.mmu = self.walk = self.l1_name
        self.cr0, self.cr4, self.efer = l1cr0, l1cr4, l1efer
        self.nested = None
        if v < (4, 20):  # 4.19 VMX: single MMU
            self.kvm_mmu_new_pgd(l1cr3, current_pgd=old_cr3 if not n.paging else n.nested_cr3)
            self.cr3 = l1cr3
            self.kvm_init_mmu("nested_vmx_load_cr3")
            return
        self._nested_load_cr3(l1cr3, old_cr3,
                              "nested_vmx_load_cr3" if n.vendor == "vmx" else "nested_svm_load_cr3")

    def nested_fail(self) -> None:
        """VMX VM-Fail detected late: ``nested_vmx_restore_host_state`` resets the MMU."""
        n = self.nested
        if n is None or n.vendor != "vmx":
            raise SimError("nested_fail needs an L2 entered with VMX")
        if self.era.version < (4, 20):
            raise SimError("nested_vmx_restore_host_state exists from 4.20")
        l1cr0, l1cr3, l1cr4, l1efer = n.l1
        self.guest_mode = False
        self.mmu = self.walk = self.l1_name
        self.cr0, self.cr3, self.cr4, self.efer = l1cr0, l1cr3, l1cr4, l1efer
        self.nested = None
        self.kvm_mmu_reset_context("nested_vmx_restore_host_state", "VM-Fail after loading L2")

    # ------------------------------------------------------------------ guest writes
    def guest_mov_cr0(self, value: int) -> None:
        new = guest_write_cr0(self.regs(), value)
        if (self.cr0_wp_backport == "full" and self.vendor == "vmx" and self.host.tdp == "ept"
                and (new ^ self.cr0) == CR0_WP):
            self.cr0 = new
            self.emit("no_exit", why="CR0.WP is guest-owned with EPT (6.4+): the write does "
                                     "not exit; cpu_role.base.cr0_wp is refreshed lazily")
            return
        self.emit("exit", reason="CR_ACCESS", write="cr0", value=new)
        self.kvm_set_cr0(new)

    def guest_mov_cr4(self, value: int) -> None:
        new = guest_write_cr4(self.regs(), value)
        self.emit("exit", reason="CR_ACCESS", write="cr4", value=new)
        self.kvm_set_cr4(new)

    def guest_mov_cr3(self, value: int) -> None:
        if self.tdp_enabled:
            self.cr3 = value & ~CR3_NOFLUSH
            self.emit("no_exit", why="with EPT/NPT, MOV CR3 does not exit")
            return
        if value & ~CR3_NOFLUSH & ~((1 << self.maxphyaddr) - 1):
            from ..regs import InvalidStateError
            raise InvalidStateError("CR3", value, value & ~((1 << self.maxphyaddr) - 1),
                                    "kvm_set_cr3: CR3 must be a legal GPA",
                                    "bits above MAXPHYADDR")
        self.emit("exit", reason="CR_ACCESS", write="cr3", value=value)
        self.kvm_set_cr3(value)

    def guest_wrmsr_efer(self, value: int) -> None:
        new = guest_write_efer(self.regs(), value)
        self.emit("exit", reason="MSR_WRITE", write="efer", value=new)
        self.set_efer(new)

    def set_sregs(self, cr0: int, cr3: int, cr4: int, efer: int) -> None:
        """``KVM_SET_SREGS``: ``__set_sregs`` resets the MMU if CR0/CR3/CR4/EFER differ."""
        reset = (cr0, cr3, cr4, efer) != (self.cr0, self.cr3, self.cr4, self.efer)
        cpuid = self.era.version < (5, 10) and (self.cr4 ^ cr4) & (CR4_OSXSAVE | CR4_PKE)
        self.cr0, self.cr3, self.cr4, self.efer = cr0, cr3, cr4, efer
        if cpuid:
            self.kvm_update_cpuid("__set_sregs: CR4.OSXSAVE/PKE changed")
        if reset:
            self.kvm_mmu_reset_context("__set_sregs", "userspace set CR0/CR3/CR4/EFER")
        else:
            self.emit("__set_sregs", why="registers unchanged: no MMU reset")


def _spkey(item: tuple[SpKey, int]) -> tuple[int, int, int]:
    k = item[0]
    return (k.gfn, k.role, k.zombie)


def _root_str(r: RootInfo) -> str:
    h = r.hpa
    if h is None:
        return "INVALID"
    if isinstance(h, SpKey):
        return f"sp(gfn={h.gfn:#x}, role={h.role:#010x})"
    if isinstance(h, TdpKey):
        return f"tdp_mmu(role={h.role:#010x}#{h.serial})"
    return f"pae_root(l{h.wrap})"
