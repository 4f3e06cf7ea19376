"""Small helpers for chapters 03-06: the tables those notebooks show, computed by the simulator.

Every function here drives :mod:`mmulib.sim` (or its cache functions, or the cost model) and
returns plain rows or an HTML string, so a notebook cell stays a line or two and the same
tables can be tested.  Nothing from Jupyter is imported; notebooks wrap the HTML strings in
``IPython.display.HTML``.

Address spaces are named by letters: ``A`` is the CR3 of the long-mode guest of
:data:`mmulib.sim.workloads.LONG_MODE` (``0x102000``), ``B`` the next page, and so on.

>>> walk = cr3_walk("5.19", "BCDAB")
>>> [row[1] for row in walk]
['miss', 'miss', 'miss', 'hit P2', 'hit P2']
>>> walk[-1][2]
'B | A D C'
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .eras import ERAS, resolve
from .sim import Machine, Runner, cost, counters_of, parse_op
from .sim.cache import (
    RootInfo,
    cached_root_available,
    cached_root_find_and_keep_current,
    cached_root_find_without_current,
    rotate_always,
)
from .sim.events import Event
from .sim.machine import PaeRoot, SpKey, TdpKey
from .sim.replay import summary
from .sim.workloads import (
    CONFIGS,
    COLUMNS,
    FOOTPRINT_GIB,
    LONG_MODE,
    context_switch_storm,
    nested_ping_pong,
    run,
    tally_events,
)

__all__ = [
    "ERA_NAMES", "GUEST", "WP_CLEAR", "WP_SET", "html_table", "space", "cr3_of", "new_runner",
    "apply", "cache_state", "pgd_outcome", "l2_entry",
    "ROTATIONS", "rotation_rows", "without_current_rows", "cr3_walk", "outcomes_by_era",
    "switch_hits", "wp_toggle", "wp_rows", "fit_and_check_rows", "overhead_rows",
    "walker_cr0_wp", "supervisor_write_faults", "contexts_rows", "nested_trace",
    "round_trip", "round_trip_cycles", "Caller", "CALLERS", "CallerCost", "caller_cost",
    "caller_rows", "VERDICTS", "verdict", "era_map",
]

ERA_NAMES: tuple[str, ...] = tuple(e.name for e in ERAS)
WP = 1 << 16
GUEST: dict[str, int] = {"cr0": LONG_MODE[0], "cr3": LONG_MODE[1], "cr4": LONG_MODE[2],
                         "efer": LONG_MODE[3]}
"""The 64-bit guest of every chapter (``KVM_SET_SREGS`` values): paging, WP, SMEP/SMAP, NX."""
WP_CLEAR = {"op": "mov_cr0", "value": LONG_MODE[0] & ~WP}
WP_SET = {"op": "mov_cr0", "value": LONG_MODE[0]}


def html_table(head: Sequence[Any], rows: Iterable[Sequence[Any]], *,
               bold_if_different: bool = False) -> str:
    """An HTML table with escaped cells; ``bold_if_different`` bolds rows whose values differ."""
    def tr(row: Sequence[Any]) -> str:
        bold = bold_if_different and len({str(v) for v in row[1:]}) > 1
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        return f"<tr style='font-weight:{'bold' if bold else 'normal'}'>{cells}</tr>"
    top = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    return f"<table><tr>{top}</tr>{''.join(tr(r) for r in rows)}</table>"


# ------------------------------------------------------------------------- running the simulator
def cr3_of(name: str) -> int:
    """The CR3 of address space ``name`` (``"A"`` = 0x102000, ``"B"`` = 0x103000, ...)."""
    return LONG_MODE[1] + 0x1000 * (ord(name) - ord("A"))


def space(pgd: int) -> str:
    """The letter of the address space whose CR3 is ``pgd`` (hex if it is none of them)."""
    i = (pgd & ~0xFFF & ((1 << 52) - 1)) - LONG_MODE[1]
    return chr(ord("A") + i // 0x1000) if i >= 0 and i % 0x1000 == 0 and i < 0x1A000 else hex(pgd)


def new_runner(kernel: str, config: str = "shadow", *, vcpus: int = 1,
               sregs: dict[str, int] | None = None, **machine_kw: Any) -> Runner:
    """A VM of ``kernel`` in one of :data:`~mmulib.sim.workloads.CONFIGS`, every vCPU's
    registers loaded with ``KVM_SET_SREGS`` (default: the 64-bit guest of LONG_MODE)."""
    kw = {**CONFIGS[config], "footprint_gib": FOOTPRINT_GIB, **machine_kw}
    r = Runner(kernel, vcpus=vcpus, **kw)
    for v in range(vcpus):
        r.set_sregs(**{**GUEST, **(sregs or {})}, vcpu=v)
    return r


def apply(r: Runner, *items: dict[str, Any]) -> tuple[Event, ...]:
    """Apply operations given as replay-script objects; return all their events."""
    return tuple(e for i, d in enumerate(items) for e in r.apply(parse_op(d, i)))


def _ctx(m: Machine, name: str | None = None) -> Any:
    return m.ctx[name or m.mmu]


def _entry(r: RootInfo) -> str:
    return space(r.pgd) if r.valid else "·"


def cache_state(m: Machine, context: str | None = None) -> str:
    """``"B | A C D"``: the current root, then ``prev_roots[0..2]``; ``·`` is INVALID."""
    c = _ctx(m, context)
    return f"{_entry(c.root)} | {' '.join(_entry(p) for p in c.prev)}"


# ------------------------------------------------------------------------- chapter 03: prev_roots
def _label_root(label: str) -> RootInfo:
    return RootInfo(ord(label), label)


ROTATIONS = {
    "4.19-4.20 cached_root_available": lambda c, p, u: rotate_always(c, p, u, c.pgd),
    "5.10-5.17 cached_root_available": cached_root_available,
    "5.18+ cached_root_find_and_keep_current": cached_root_find_and_keep_current,
}
"""The three fast-switch lookups of :mod:`mmulib.sim.cache`, by the releases that use them."""


def _state(root: RootInfo, prev: Sequence[RootInfo]) -> str:
    return " | ".join([root.hpa or "INV", " ".join(p.hpa or "INV" for p in prev)])


def rotation_rows() -> list[list[str]]:
    """Start from ``C | 0 1 2``; for each root that is the usable one, the state each lookup
    leaves and the root it evicts (the kernel's notation: C current, 0-2 ``prev_roots``)."""
    root, prev = _label_root("C"), tuple(_label_root(x) for x in "012")
    rows = []
    for want in ("C", "0", "1", "2", None):
        row = [f"{want} is usable" if want else "none is usable"]
        for lookup in ROTATIONS.values():
            out = lookup(root, prev, lambda r, w=want: r.hpa == w)
            gone = out.evicted.hpa if out.evicted is not None else "-"
            row.append(f"{_state(out.root, out.prev_roots)} (evicts {gone})")
        rows.append(row)
    return rows


def without_current_rows() -> list[list[str]]:
    """``cached_root_find_without_current`` (5.18+) from ``INV | 0 1 2``."""
    prev = tuple(_label_root(x) for x in "012")
    out = []
    for want in ("0", "1", "2", None):
        got = cached_root_find_without_current(RootInfo(0), prev, lambda r, w=want: r.hpa == w)
        out.append([f"{want} is usable" if want else "none is usable",
                    _state(got.root, got.prev_roots)])
    return out


def pgd_outcome(events: Sequence[Event]) -> str:
    """What the last ``fast_pgd_switch`` of some events did: ``hit C``, ``hit P0``-``P2``,
    ``miss``, ``not tried`` (4.19-5.17: not a 64-bit guest) or ``no cache`` (4.18)."""
    sw = [e for e in events if e.name == "fast_pgd_switch"]
    if not sw:
        return "no switch"
    e = sw[-1]
    if e.get("hit"):
        return "hit C" if e.get("slot") == "current" else f"hit P{e.get('slot')}"
    why = e.get("why") or ""
    return "no cache" if "no root cache" in why else "not tried" if "64-bit" in why else "miss"


def cr3_walk(kernel: str, order: str, *, pcide: bool = False, noflush: bool = False,
             config: str = "shadow") -> list[list[str]]:
    """A guest at CR3 ``A`` switching to each address space of ``order`` in turn.

    One row per MOV CR3: ``[target, fast_pgd_switch outcome, cache after, at VM entry]``.
    ``pcide`` sets CR4.PCIDE; ``noflush`` sets bit 63 of every CR3 written.
    """
    cr4 = LONG_MODE[2] | (1 << 17 if pcide else 0)
    r = new_runner(kernel, config, sregs={"cr4": cr4})
    apply(r, {"op": "run"})
    rows = []
    for name in order:
        value = cr3_of(name) | (1 << 63 if noflush else 0)
        evs = apply(r, {"op": "mov_cr3", "value": value})
        made = sum(bool(e.get("created")) for e in evs if e.name == "kvm_mmu_get_page")
        again = sum(e.get("created") is False for e in evs if e.name == "kvm_mmu_get_page")
        entry = "new root" if made else "root found in hash" if again else ""
        rows.append([name, pgd_outcome(evs), cache_state(r.machine()), entry])
    return rows


def outcomes_by_era(order: str, eras: Sequence[str] = ERA_NAMES, **kw: Any) -> list[list[str]]:
    """``[era, outcome of each MOV CR3...]`` for :func:`cr3_walk` over several eras."""
    return [[e, *(row[1] for row in cr3_walk(e, order, **kw))] for e in eras]


def switch_hits(kernel: str, spaces: int, rounds: int = 100) -> tuple[int, int]:
    """(hits, misses) of ``rounds`` round-robin passes over ``spaces`` address spaces."""
    t = run(context_switch_storm(spaces, rounds), kernel, "shadow")
    return int(t[COLUMNS.index("pgd_hits")]), int(t[COLUMNS.index("pgd_misses")])


# ------------------------------------------------------------------------- chapter 04: CR0.WP
def _count(events: Sequence[Event], kernel: str) -> dict[str, int]:
    """The workload counters of some events, plus ``no_exits`` (guest writes KVM never saw)."""
    t = tally_events(events, resolve(kernel).version)
    return {**dict(zip(COLUMNS, (int(x) for x in t))), "no_exits": counters_of(events)["no_exits"]}


def wp_toggle(kernel: str, config: str, *, vcpus: int = 1,
              backport: str = "none") -> tuple[list[str], dict[str, int]]:
    """What vCPU 0 clearing CR0.WP and setting it again costs once the toggling is under
    way (one warm-up pair first): a sentence per write, and the counters of the pair
    (:data:`~mmulib.sim.workloads.COLUMNS`).  The other vCPUs sit in the guest at WP=1."""
    r = new_runner(kernel, config, vcpus=vcpus, cr0_wp_backport=backport)
    apply(r, *({"op": "run", "vcpu": v} for v in range(vcpus)))
    pair = [parse_op(WP_CLEAR, 0), parse_op(WP_SET, 1)]
    for op in pair:
        r.apply(op)
    per = [(op, r.apply(op)) for op in pair]
    said = [summary(op, evs).split(": ", 1)[1] for op, evs in per]
    return said, _count([e for _, evs in per for e in evs], kernel)


def wp_rows(eras: Sequence[str], configs: Sequence[str], *, vcpus: int = 1,
            backport: str = "none") -> list[list[Any]]:
    """``[era, config, clearing WP, setting WP, resets, TDP pages torn down, roots
    allocated]`` per toggle pair (pairs without a TDP MMU are left out)."""
    rows = []
    for e in eras:
        for c in configs:
            if CONFIGS[c].get("tdp_mmu") and not resolve(e).has_tdp_mmu:
                continue
            said, n = wp_toggle(e, c, vcpus=vcpus, backport=backport)
            rows.append([e, c, *said, n["reset_context"], n["pt_pages_torn_down"],
                         n["roots_allocated"]])
    return rows


def fit_and_check_rows(constants: dict[str, float] | None = None) -> list[list[Any]]:
    """Every published ``ssdd``/nested figure the cost model knows, with the model's value:
    ``[fit or check, table, era, config, backport, published, model, residual %]``."""
    cal = cost.calibrate()
    consts = constants if constants is not None else cal.constants
    out = []
    for use, rows in (("fit", cal.rows), ("check", cost.checks(consts))):
        for r in rows:
            out.append([use, str(r["table"]), str(r["era"]), str(r["config"]),
                        str(r["backport"]), _num(r["published"], str(r["unit"])),
                        _num(r["model"], str(r["unit"])), f"{100 * r['residual']:+.0f}%"])
    return out


def _num(v: float, unit: str) -> str:
    return f"{v:.2f} s" if unit == "s" else f"{v:,.0f} cycles"


def overhead_rows(constants: dict[str, float] | None = None) -> list[list[Any]]:
    """The cost of the toggles alone, ``before - with all patches``, published vs model, for
    each check table and configuration (base run times differ between trees; overheads less)."""
    rows = cost.checks(constants or cost.calibrate().constants)
    out = []
    for table in dict.fromkeys(str(t) for t in rows["table"]):
        for config in ("legacy", "tdp_mmu", "shadow"):
            sel = rows[(rows["table"] == table) & (rows["config"] == config)]
            if len(sel) >= 2:
                pub = sel["published"][0] - sel["published"][-1]
                mod = sel["model"][0] - sel["model"][-1]
                out.append([table, config, f"{pub:.2f} s", f"{mod:.2f} s"])
    return out


def walker_cr0_wp(m: Machine, *, refresh: bool) -> int:
    """CR0.WP as KVM's emulated permission check uses it: the bit cached in the L1 context's
    CPU role, or with ``refresh`` (``kvm_mmu_refresh_passthrough_bits``) the register itself."""
    if refresh:
        return int(bool(m.cr0 & WP))
    return m.era.page.get(m.ctx[m.l1_name].roles.base, "cr0_wp")


def supervisor_write_faults(cr0_wp: int, *, writable: bool = False) -> bool:
    """Does a supervisor write to a present page fault?  Only a read-only page with CR0.WP
    set (kvm-unit-tests ``x86/access.c``: CR0.WP = 0 lets supervisor writes ignore R/W)."""
    return not writable and bool(cr0_wp)


# ------------------------------------------------------------------------- chapter 05: nested
def _role_of(m: Machine, name: str) -> str:
    r = m.ctx[name].roles
    return f"{r.as_u64:#x}" if r.as_u64 else "(never set up)"


def contexts_rows(m: Machine) -> list[list[str]]:
    """One row per ``struct kvm_mmu``: which pointers name it, its CPU-side role, its
    root and ``prev_roots`` (``sp``/``tdp`` pages by gfn or role; ``·`` = INVALID)."""
    def root(x: RootInfo) -> str:
        h = x.hpa
        if isinstance(h, SpKey):
            return f"sp gfn {h.gfn:#x} role {h.role:#x}"
        if isinstance(h, TdpKey):
            return f"tdp_mmu role {h.role:#x}"
        return "pae_root" if isinstance(h, PaeRoot) else "·"
    rows = []
    for name, c in m.ctx.items():
        who = [p for p, v in (("arch.mmu", m.mmu), ("walk_mmu", m.walk)) if v == name]
        rows.append([name, ", ".join(who) or "-", _role_of(m, name), root(c.root),
                     " ".join(root(p) for p in c.prev)])
    return rows


def l2_entry(vendor: str = "vmx", nested_paging: bool = True, **l2: int) -> dict[str, Any]:
    """The op that enters L2 (``vmlaunch``/``vmrun``): by default a 64-bit L2 like :data:`GUEST`
    at CR3 0x202000; ``l2`` overrides its ``cr0``, ``cr3``, ``cr4``, ``efer``."""
    regs = {**GUEST, "cr3": 0x202000, **l2}
    key = "ept" if vendor == "vmx" else "npt"
    return {"op": "vmlaunch" if vendor == "vmx" else "vmrun", **regs, key: nested_paging}


def nested_trace(kernel: str, vendor: str = "vmx", *, nested_paging: bool = True,
                 config: str = "legacy", trips: int = 2, **l2: int) -> list[list[str]]:
    """L1 enters L2 and L2 exits, ``trips`` times: ``[op, arch.mmu, walk_mmu, summary]``.

    ``config`` names the VMX configuration; for SVM its NPT twin is used.  ``l2`` overrides
    L2's registers (see :func:`l2_entry`).
    """
    if vendor == "svm":
        config = {"legacy": "npt_legacy", "tdp_mmu": "npt_tdp_mmu"}.get(config, config)
    r = new_runner(kernel, config)
    apply(r, {"op": "run"})
    rows = []
    for d in [l2_entry(vendor, nested_paging, **l2), {"op": "vmexit"}] * trips:
        op = parse_op(d, 0)
        evs = r.apply(op)
        m = r.machine()
        rows.append([op.name, m.mmu, m.walk, summary(op, evs).split(": ", 1)[1]])
    return rows


def round_trip(kernel: str, vendor: str = "vmx", config: str | None = None) -> dict[str, float]:
    """Counters of one steady-state L2->L1->L2 round trip with nested EPT/NPT
    (110 round trips minus 10, divided by 100, as :mod:`mmulib.sim.cost` does)."""
    config = config or ("legacy" if vendor == "vmx" else "npt_legacy")
    a = run(nested_ping_pong(vendor, 10), kernel, config)
    b = run(nested_ping_pong(vendor, 110), kernel, config)
    return {c: float(x) for c, x in zip(COLUMNS, (b - a) / 100.0)}


def round_trip_cycles(kernel: str, vendor: str = "vmx",
                      config: str | None = None) -> dict[str, float]:
    """:func:`mmulib.sim.cost.nested_round_trip` split by cost-model constant: each entry is
    the prediction with every other constant of the sum set to 0 (the entries add up)."""
    names = ["NESTED_BASE", *cost.PRICES]
    zero = {n: 0.0 for n in names}
    return {n: cost.nested_round_trip(kernel, vendor, config,
                                      {**zero, n: cost.CONSTANTS[n].value}) for n in names}


# ------------------------------------------------------------------------- chapter 06: callers
@dataclass(frozen=True)
class Caller:
    """One caller of ``kvm_mmu_reset_context`` in 5.17 and how the simulator triggers it.

    ``trigger`` ops are measured; ``undo`` ops bring the vCPU back so that trigger + undo
    repeats (one warm-up round runs first, so the costs are those of a vCPU doing it again).
    """

    name: str
    sean: int | None  # its number in Sean Christopherson's list; None for the sregs ioctls
    event: str
    said: str
    later: str
    trigger: tuple[dict[str, Any], ...]
    undo: tuple[dict[str, Any], ...] = ()
    setup: tuple[dict[str, Any], ...] = ({"op": "run"},)
    since: str = "4.18"


_VMLAUNCH = l2_entry("vmx")
CALLERS: tuple[Caller, ...] = (
    Caller("nested_vmx_restore_host_state", 1, "VM-Fail found late, after L2's state was loaded",
           "only when a consistency check is missed; not a performance concern",
           "unchanged: still resets", ({"op": "vmfail"},), (_VMLAUNCH,),
           ({"op": "run"}, _VMLAUNCH), "4.20"),
    Caller("kvm_mmu_after_set_cpuid", 2, "userspace sets CPUID (KVM_SET_CPUID2)",
           "must still unload; not a performance concern",
           "unchanged; from 5.17 a vCPU that has run accepts only an identical CPUID table",
           ({"op": "cpuid"}, {"op": "run"})),
    Caller("kvm_vcpu_reset", 3, "INIT signal", "INIT only; could be converted by hand",
           "unchanged (6.19 adds a guest TLB flush)", ({"op": "init"}, {"op": "run"}),
           ({"op": "set_sregs", **GUEST}, {"op": "run"})),
    Caller("enter_smm", 4, "SMI", "not a performance concern; could be converted by hand",
           "unchanged (moved to smm.c); cheap for the TDP MMU from 6.4 (roots preserved)",
           ({"op": "smi"},), ({"op": "rsm"},)),
    Caller("kvm_smm_changed", 5, "RSM (and SMI)",
           "not a performance concern; could be converted by hand",
           "unchanged (moved to smm.c); cheap for the TDP MMU from 6.4 (roots preserved)",
           ({"op": "rsm"},), ({"op": "smi"},), ({"op": "run"}, {"op": "smi"})),
    Caller("set_efer", 6, "EFER.NX changes (the guest's WRMSR here)",
           "a corner case: in practice only host userspace misusing the API gets there",
           "5.18: LME changes reset too (host-initiated writes)",
           ({"op": "wrmsr_efer", "value": LONG_MODE[3] & ~(1 << 11)},),
           ({"op": "wrmsr_efer", "value": LONG_MODE[3]},)),
    Caller("kvm_post_set_cr0", 7, "CR0.PG or CR0.WP changes (here: WP cleared)",
           "one of the two that really matter; simple to fix, like kvm_set_cr3",
           "6.4: a WP-only change with TDP re-inits without unloading; VMX+EPT: no exit",
           (WP_CLEAR,), (WP_SET,)),
    Caller("kvm_post_set_cr4", 8, "a CR4 role bit changes (here: SMEP cleared)",
           "one of the two that really matter; simple to fix, like kvm_set_cr3",
           "unchanged for role bits; 5.18 split the PCIDE/PGE flush logic out",
           ({"op": "mov_cr4", "value": LONG_MODE[2] & ~(1 << 20)},),
           ({"op": "mov_cr4", "value": LONG_MODE[2]},)),
    Caller("__set_sregs / __set_sregs2", None, "userspace KVM_SET_SREGS(2) with new values",
           "not in the list (ioctl paths)", "unchanged",
           ({"op": "set_sregs", "cr3": cr3_of("B")}, {"op": "run"}),
           ({"op": "set_sregs", "cr3": cr3_of("A")}, {"op": "run"})),
)
"""The ten 5.17 call sites: Sean Christopherson's eight (mail of 2022-02-18) and the two
``KVM_SET_SREGS`` ioctls, which share one op here.  ``said`` paraphrases his comments."""


@dataclass(frozen=True)
class CallerCost:
    era: str
    config: str
    resets: tuple[str, ...]  # the kvm_mmu_reset_context callers that ran, in order
    counts: dict[str, int]
    cycles: float  # on the vCPU's path (mmulib.sim.cost.price)
    cycles_off_vcpu: float  # TDP trees zapped by a worker
    what: str


def _applicable(caller: Caller, kernel: str, config: str) -> bool:
    era = resolve(kernel)
    if CONFIGS[config].get("tdp_mmu") and not era.has_tdp_mmu:
        return False
    vmx = CONFIGS[config].get("vendor", "svm" if CONFIGS[config]["tdp"] == "npt" else "vmx")
    nested = any(d["op"] in ("vmlaunch", "vmfail") for d in caller.trigger + caller.setup)
    if nested and (vmx != "vmx" or CONFIGS[config]["tdp"] == "none"):
        return False
    return era.version >= resolve(caller.since).version


def caller_cost(caller: Caller, kernel: str, config: str = "tdp_mmu") -> CallerCost | None:
    """What ``caller``'s trigger costs on ``kernel`` in ``config`` (None: not possible there)."""
    if not _applicable(caller, kernel, config):
        return None
    r = new_runner(kernel, config)
    apply(r, *caller.setup, *caller.trigger, *caller.undo)  # warm-up round
    ops = [parse_op(d, i) for i, d in enumerate(caller.trigger)]
    per = [(op, r.apply(op)) for op in ops]
    evs = [e for _, es in per for e in es]
    on, off = cost.price(tally_events(evs, resolve(kernel).version))
    resets = tuple(e.get("caller") for e in evs if e.name == "kvm_mmu_reset_context")
    what = "; ".join(summary(op, es).rstrip(".") for op, es in per) + "."
    return CallerCost(resolve(kernel).name, config, resets, _count(evs, kernel), float(on),
                      float(off), what)


VERDICTS: dict[str, str] = {
    "teardown": "kvm_mmu_reset_context, and a TDP MMU tree torn down (rebuilt fault by fault)",
    "reset, new root": "kvm_mmu_reset_context; a root page had to be created again",
    "reset": "kvm_mmu_reset_context; the roots were found again (hash or TDP MMU list)",
    "re-init": "no reset: kvm_init_mmu only, the roots stay loaded",
    "no exit": "the guest's write does not even exit to KVM",
    "nothing": "KVM did no MMU work",
    "n/a": "not possible in this era or configuration",
}
"""What :func:`verdict` can say, and what each word means."""


def verdict(c: CallerCost | None) -> str:
    """One of :data:`VERDICTS`: how much of the MMU the trigger threw away."""
    if c is None:
        return "n/a"
    n = c.counts
    if n["pt_pages_torn_down"]:
        return "teardown"
    if n["reset_context"]:
        return "reset, new root" if n["roots_allocated"] else "reset"
    if n["permission_bitmask"]:
        return "re-init"
    return "no exit" if n["no_exits"] else "nothing"


def caller_rows(caller: Caller, config: str = "tdp_mmu",
                eras: Sequence[str] = ERA_NAMES) -> list[list[Any]]:
    """``[era, resets that ran, verdict, roots freed, TDP pages torn down, cycles, what]``."""
    rows = []
    for e in eras:
        c = caller_cost(caller, e, config)
        if c is None:
            rows.append([e, "-", "n/a", "", "", "", ""])
            continue
        rows.append([e, ", ".join(c.resets) or "none", verdict(c), c.counts["roots_freed"],
                     c.counts["pt_pages_torn_down"], f"{c.cycles + c.cycles_off_vcpu:,.0f}",
                     c.what])
    return rows


def era_map(config: str = "tdp_mmu", eras: Sequence[str] = ERA_NAMES) -> list[list[str]]:
    """``[caller, verdict per era...]``: which callers were made cheap, and when."""
    return [[c.name, *(verdict(caller_cost(c, e, config)) for e in eras)] for c in CALLERS]


