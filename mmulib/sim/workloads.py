"""Built-in workloads: operation loops run through the simulator on every era.

A :class:`Workload` is a prologue (puts the vCPUs in their starting state, not
counted) and a body repeated ``repeats`` times (counted).  :func:`run` drives
one era and configuration and returns a :class:`Tally`; :func:`table` does it
for every era and returns a numpy structured array, one row per (era, config),
with the counters of :data:`COLUMNS` and the cycles the cost model
(:mod:`mmulib.sim.cost`) puts on them.

>>> t = table(cr0_wp_storm(toggles=4, vcpus=1), eras=["5.10", "6.4"], configs=["tdp_mmu"])
>>> [(str(r["era"]), int(r["reset_context"]), int(r["tdp_roots_allocated"])) for r in t]
[('5.10', 4, 4), ('6.4', 0, 0)]

Several vCPUs: every builder takes ``vcpus`` (one VM whose vCPUs share the
shadow pages and the TDP MMU roots; the CR0.WP storm defaults to
:data:`GUEST_VCPUS`, the others to 1) and, but for ``memslot_change``,
``interleave``, the deterministic order in which the vCPUs' copies of the body
run: ``"body"`` (vCPU 0's whole body, then vCPU 1's, …) or ``"op"`` (one
operation of each vCPU in turn).  In the
CR0.WP storm every vCPU's kernel clears and sets WP; with ``"body"`` no two
vCPUs are ever between their clear and their set at the same time, with
``"op"`` every vCPU clears, then every vCPU sets.  The storm is the one
workload whose count is the VM's total (``toggles``); the others count body
repeats, which every vCPU does.  With two vCPUs a 5.10 TDP MMU tree lives only
as long as one vCPU's WP=0 window, and from 5.19 the other vCPU's reference
keeps the only root alive through every toggle:

>>> t = table(cr0_wp_storm(toggles=4, vcpus=2), eras=["5.10", "5.19"], configs=["tdp_mmu"])
>>> [(str(r["era"]), int(r["tdp_roots_allocated"]), int(r["roots_reused"])) for r in t]
[('5.10', 2, 2), ('5.19', 0, 4)]

Long loops are cheap because the body is periodic: the :class:`~mmulib.sim.Runner`
interns states, and as soon as the state at the start of an iteration repeats,
every later iteration is known to repeat too, so the rest is added up by
arithmetic.  The result is the one a full run gives (``fast_forward=False``
runs every iteration, with a progress bar when the run is long).

Configurations (:data:`CONFIGS`): ``legacy`` = EPT with ``tdp_mmu=0`` (the
shadow-MMU code managing EPT tables), ``tdp_mmu`` = EPT with the TDP MMU,
``shadow`` = no EPT (``ept=0``), and the same three on SVM (``npt_legacy``,
``npt_tdp_mmu``, ``shadow_svm``).  ``*tdp_mmu`` rows exist from 5.10 on (the TDP
MMU does not exist before); other invalid pairs raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..eras import ERAS, resolve
from . import Runner, counters_of
from .events import Event
from .ops import Op, parse_op

__all__ = ["COLUMNS", "CONFIGS", "FOOTPRINT_GIB", "GUEST_VCPUS", "INTERLEAVES", "Workload",
           "Tally", "run", "table",
           "format_table", "tally_events", "cr0_wp_storm", "boot", "context_switch_storm",
           "nested_ping_pong", "smm_round_trips", "cpuid_update", "memslot_change",
           "WORKLOADS"]

# Counted per run.  roots_* count root *pages* (shadow/legacy pages found in or added to
# mmu_page_hash, TDP MMU roots found in or added to tdp_mmu_roots) and root references
# dropped by kvm_mmu_free_roots; a prev_roots hit is a pgd_hit, not a reuse.
COLUMNS: tuple[str, ...] = (
    "ops", "exits", "reset_context", "permission_bitmask", "roots_allocated",
    "roots_reused", "roots_freed", "tdp_roots_allocated", "tdp_roots_freed", "pgd_hits",
    "pgd_misses", "pgd_evictions", "pt_pages_torn_down", "pt_pages_torn_down_vcpu",
    "pt_pages_rebuilt",
)
_IDX = {c: i for i, c in enumerate(COLUMNS)}

CONFIGS: dict[str, dict[str, Any]] = {
    "legacy": {"tdp": "ept", "tdp_mmu": False},
    "tdp_mmu": {"tdp": "ept", "tdp_mmu": True},
    "shadow": {"tdp": "none"},
    "npt_legacy": {"tdp": "npt", "tdp_mmu": False},
    "npt_tdp_mmu": {"tdp": "npt", "tdp_mmu": True},
    "shadow_svm": {"tdp": "none", "vendor": "svm"},
}

# Guest memory a TDP MMU tree maps when it is torn down (Machine(footprint_gib=...)).
# In a storm the tree is rebuilt from empty after every teardown, so this is the memory
# touched between two teardowns, not the VM's size.  16 MiB = 11 page-table pages in a
# 4-level tree; why this value: mmulib.sim.cost (FOOTPRINT_GIB there is this constant).
FOOTPRINT_GIB = 1 / 64

# vCPUs of the default CR0.WP-storm guest (the grsecurity guest of ssdd); why this value:
# mmulib.sim.cost CHOICES['VCPUS'] (VCPUS there is this constant).
GUEST_VCPUS = 2

INTERLEAVES: tuple[str, ...] = ("body", "op")
"""How the vCPUs' copies of a body are interleaved (see the module docstring)."""

# 64-bit guest with paging, WP, SMEP/SMAP, NX: a grsecurity-like kernel state.
LONG_MODE = (0x80050033, 0x102000, 0x3006A0, 0xD01)  # cr0, cr3, cr4, efer
WP = 1 << 16


Tally = np.ndarray
"""One int64 counter per :data:`COLUMNS` entry."""


@dataclass(frozen=True)
class Workload:
    """A named operation loop: ``prologue`` once (not counted), ``body`` × ``repeats``."""

    name: str
    summary: str
    sregs: tuple[int, int, int, int] | None  # KVM_SET_SREGS first; None = INIT state
    prologue: tuple[Op, ...]
    body: tuple[Op, ...]
    repeats: int
    configs: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()
    vcpus: int = 1  # sregs go to every vCPU; ops name theirs with "vcpu"


def _ops(*items: dict[str, Any]) -> tuple[Op, ...]:
    return tuple(parse_op(d, i) for i, d in enumerate(items))


def _check_vcpus(vcpus: int, interleave: str) -> None:
    if not isinstance(vcpus, int) or vcpus < 1:
        raise ValueError(f"vcpus must be a positive integer, not {vcpus!r}")
    if interleave not in INTERLEAVES:
        raise ValueError(f"unknown interleave {interleave!r} (known: {', '.join(INTERLEAVES)})")


def _each(items: Sequence[dict[str, Any]], vcpus: int, interleave: str = "body") -> tuple[
        Op, ...]:
    """Every vCPU's copy of ``items``, in the ``interleave`` order (see the module docstring)."""
    _check_vcpus(vcpus, interleave)
    order = ([(v, d) for v in range(vcpus) for d in items] if interleave == "body" else
             [(v, d) for d in items for v in range(vcpus)])
    return _ops(*({**d, "vcpu": v} for v, d in order))


def _vcpu_params(vcpus: int, interleave: str) -> tuple[tuple[str, Any], ...]:
    return (("vcpus", vcpus), ("interleave", interleave)) if vcpus > 1 else ()


def tally_events(events: Iterable[Event], version: tuple[int, int]) -> Tally:
    """Count one stretch of events into a :data:`COLUMNS` vector.

    A TDP MMU tree torn down by ``kvm_tdp_mmu_free_root`` with ``where="vcpu"`` is
    zapped on the vCPU's own path (``pt_pages_torn_down_vcpu``): before 5.18, and the
    empty root page of an already-invalid root after; from 5.18 a worker zaps a tree
    that loses its last reference (kernel-roots.md §8.3), and ``kvm_tdp_mmu_zap_all`` /
    ``kvm_tdp_mmu_invalidate_all_roots`` run in the memslot ioctl.
    """
    events = tuple(events)
    c = counters_of(events)
    t = np.zeros(len(COLUMNS), dtype=np.int64)
    t[_IDX["exits"]] = c["exits"]
    t[_IDX["reset_context"]] = c["reset_context"]
    t[_IDX["permission_bitmask"]] = c["permission_bitmask"]
    t[_IDX["roots_allocated"]] = c["root_pages_created"] + c["tdp_roots_allocated"]
    t[_IDX["roots_reused"]] = c["root_pages_reused"] + c["tdp_roots_reused"]
    t[_IDX["roots_freed"]] = c["roots_freed"]
    t[_IDX["tdp_roots_allocated"]] = c["tdp_roots_allocated"]
    t[_IDX["tdp_roots_freed"]] = c["tdp_roots_freed"]
    t[_IDX["pgd_hits"]] = c["pgd_hits"]
    t[_IDX["pgd_misses"]] = c["pgd_misses"]
    t[_IDX["pt_pages_torn_down"]] = c["pt_pages_torn_down"]
    t[_IDX["pt_pages_rebuilt"]] = c["pt_pages_rebuilt"]
    for e in events:
        if e.name == "fast_pgd_switch" and e.get("evicted") == "LRU":
            t[_IDX["pgd_evictions"]] += 1
        elif e.name == "kvm_tdp_mmu_free_root" and e.get(
                "where", "vcpu" if version < (5, 18) else "worker") == "vcpu":
            t[_IDX["pt_pages_torn_down_vcpu"]] += e.get("pages_freed", 0)
    return t


def _runner(era: str, config: str, footprint_gib: float, backport: str,
            vcpus: int = 1) -> Runner:
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")
    return Runner(era, vcpus=vcpus, **CONFIGS[config], footprint_gib=footprint_gib,
                  cr0_wp_backport=backport)


def _available(era: str, config: str) -> bool:
    return CONFIGS[config].get("tdp_mmu") is not True or resolve(era).has_tdp_mmu


def run(workload: Workload, era: str, config: str, *, footprint_gib: float = FOOTPRINT_GIB,
        backport: str = "none", fast_forward: bool = True,
        progress: bool | None = None) -> Tally:
    """Run ``workload`` on one era and configuration; return its counters.

    ``backport`` is ``Machine(cr0_wp_backport=...)``: the 6.4 CR0.WP fix on an older
    era (``"no_unload"``, or ``"full"``, which adds the VMX guest-owned CR0.WP).
    ``progress=None`` shows a bar (tqdm.auto) when every iteration is run and the
    run has at least 100,000 operations.

    The fast-forward keys on the whole VM's state (every vCPU's and the shared
    pages), so it is exact with several vCPUs too.
    """
    version = resolve(era).version
    r = _runner(era, config, footprint_gib, backport, workload.vcpus)
    if workload.sregs is not None:
        cr0, cr3, cr4, efer = workload.sregs
        for v in range(workload.vcpus):
            r.set_sregs(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer, vcpu=v)
    for op in workload.prologue:
        r.apply(op)
    body, n = workload.body, workload.repeats
    cache: dict[tuple[int, Op], Tally] = {}  # (state id, op) -> tally: transitions are pure
    seen: dict[int, int] = {}
    cum = [np.zeros(len(COLUMNS), dtype=np.int64)]
    show = (not fast_forward and n * len(body) >= 100_000) if progress is None else progress
    bar = _bar(n, workload.name, era, config) if show else None
    try:
        for k in range(n):
            if fast_forward:
                j = seen.get(r.sid)
                if j is not None:  # the state repeats: iterations j..k-1 repeat forever
                    per = cum[k] - cum[j]
                    q, rem = divmod(n - k, k - j)
                    return cum[k] + q * per + (cum[j + rem] - cum[j])
                seen[r.sid] = k
            t = cum[-1].copy()
            for op in body:
                key = (r.sid, op)
                got = cache.get(key)
                evs = r.apply(op)
                if got is None:
                    got = cache[key] = tally_events(evs, version)
                t += got
            t[_IDX["ops"]] += len(body)
            if fast_forward:
                cum.append(t)
            else:
                cum[0] = t
            if bar is not None:
                bar.update(1)
        return cum[-1]
    finally:
        if bar is not None:
            bar.close()


def _bar(total: int, *label: str) -> Any:
    from tqdm.auto import tqdm  # lazily: tqdm.auto imports IPython when it is there

    return tqdm(total=total, desc=" ".join(label), unit="it", leave=False)


def table(workload: Workload, eras: Sequence[str] | None = None,
          configs: Sequence[str] | None = None, *, footprint_gib: float = FOOTPRINT_GIB,
          backport: str = "none", fast_forward: bool = True, progress: bool | None = None,
          constants: Any = None) -> np.ndarray:
    """Run ``workload`` on every era × config; one structured-array row per valid pair.

    Fields: ``era``, ``config``, ``backport``, the int64 :data:`COLUMNS`, and the
    float64 ``cycles`` (vCPU path) and ``cycles_off_vcpu`` (TDP trees zapped by a
    worker or the memslot ioctl) of :func:`mmulib.sim.cost.price`.
    """
    from .cost import price

    eras = [e.name for e in ERAS] if eras is None else list(eras)
    configs = list(workload.configs if configs is None else configs)
    pairs = [(e, c) for e in eras for c in configs if _available(e, c)]
    outer = _bar(len(pairs), workload.name) if progress and len(pairs) > 1 else None
    rows = []
    for e, c in pairs:
        rows.append((resolve(e).name, c, run(workload, e, c, footprint_gib=footprint_gib,
                                             backport=backport, fast_forward=fast_forward,
                                             progress=progress)))
        if outer is not None:
            outer.update(1)
    if outer is not None:
        outer.close()
    dtype = ([("era", "U8"), ("config", "U12"), ("backport", "U9")]
             + [(c, "i8") for c in COLUMNS] + [("cycles", "f8"), ("cycles_off_vcpu", "f8")])
    out = np.zeros(len(rows), dtype=dtype)
    for i, (e, c, t) in enumerate(rows):
        on, off = price(t, constants)
        out[i] = (e, c, backport, *t.tolist(), float(on), float(off))
    return out


def format_table(t: np.ndarray, columns: Sequence[str] | None = None) -> str:
    """Plain-text rendering of a :func:`table` result (zero columns left out by default)."""
    keys = ["era", "config"] + (
        list(columns) if columns is not None else
        [c for c in (*COLUMNS, "cycles") if c in t.dtype.names and np.any(t[c] != 0)])
    cells = [keys] + [[_cell(r[k]) for k in keys] for r in t]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(v.rjust(w) if j > 1 else v.ljust(w)
                               for j, (v, w) in enumerate(zip(row, widths))) for row in cells)


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):,.0f}"
    return str(v)


# --------------------------------------------------------------------- the built-in workloads
def cr0_wp_storm(toggles: int = 1_000_000, vcpus: int = GUEST_VCPUS,
                 interleave: str = "body") -> Workload:
    """grsecurity's kernel W^X: every vCPU's kernel clears and sets CR0.WP; ``toggles`` in all.

    numbers.md #1, #5-#11: each toggle exits to KVM (unless CR0.WP is guest-owned,
    VMX with EPT, 6.4 or the ``full`` backport) and, before 6.4, resets the MMU.
    One repeat is one clear + one set on each of the ``vcpus`` vCPUs, in the
    ``interleave`` order, so ``toggles`` must be a multiple of ``2 * vcpus``.  The
    default guest has :data:`GUEST_VCPUS` vCPUs and ``"body"``: a vCPU's WP=0 window
    (pax_open_kernel … pax_close_kernel, a few guest instructions with preemption
    off) does not overlap another vCPU's.
    """
    _check_vcpus(vcpus, interleave)
    if toggles < 0 or toggles % (2 * vcpus):
        raise ValueError(f"toggles must be >= 0 and a multiple of 2 x vcpus = {2 * vcpus} (one "
                         f"clear + one set per vCPU), not {toggles}")
    cr0 = LONG_MODE[0]
    return Workload("cr0_wp_storm", "CR0.WP cleared and set again", LONG_MODE,
                    _each([{"op": "run"}], vcpus),
                    _each([{"op": "mov_cr0", "value": cr0 & ~WP},
                           {"op": "mov_cr0", "value": cr0}], vcpus, interleave),
                    toggles // (2 * vcpus), ("legacy", "tdp_mmu", "shadow"),
                    (("toggles", toggles), *_vcpu_params(vcpus, interleave)), vcpus)


def boot(vcpus: int = 1, interleave: str = "body") -> Workload:
    """Real mode → protected mode → 32-bit paging → PAE paging → long mode, from INIT.

    With several vCPUs each one boots (``"body"``: one after the other, as the
    kernel brings up its APs; ``"op"``: in lock step).
    """
    body = _each([
        {"op": "run"},                                  # real mode (CR0 = CD|NW|ET)
        {"op": "mov_cr0", "value": 0x60000011},        # PE: protected mode, no paging
        {"op": "mov_cr0", "value": 0x00000011},        # caches on
        {"op": "mov_cr3", "value": 0x1000},
        {"op": "mov_cr0", "value": 0x80000011},        # PG: 32-bit paging
        {"op": "mov_cr4", "value": 0x20},              # PAE paging
        {"op": "mov_cr0", "value": 0x00000011},        # PG off to enter long mode
        {"op": "wrmsr_efer", "value": 0x100},          # LME
        {"op": "mov_cr3", "value": 0x2000},
        {"op": "mov_cr0", "value": 0x80000011},        # PG: long mode (LMA)
        {"op": "wrmsr_efer", "value": 0xD01},          # SCE|NX
        {"op": "mov_cr0", "value": 0x80050033},        # WP, NE, MP
    ], vcpus, interleave)
    return Workload("boot", "real → protected → PAE → long mode", None, (), body, 1,
                    ("legacy", "tdp_mmu", "shadow"), _vcpu_params(vcpus, interleave), vcpus)


def context_switch_storm(spaces: int = 4, rounds: int = 1000, vcpus: int = 1,
                         interleave: str = "body") -> Workload:
    """MOV CR3 round-robin over ``spaces`` address spaces, ``rounds`` times over (each vCPU).

    With EPT/NPT a MOV CR3 does not exit; with shadow paging it is a fast PGD switch
    that hits ``prev_roots`` while ``spaces`` ≤ 4 (current + KVM_MMU_NUM_PREV_ROOTS) and
    misses, evicting the LRU root, from 5 on (4.18 has no cache at all).  The vCPUs
    share the shadow pages: a root another vCPU created is found in the hash.
    """
    if spaces < 1 or rounds < 0:
        raise ValueError("spaces >= 1 and rounds >= 0")
    cr3s = [LONG_MODE[1] + 0x1000 * i for i in range(spaces)]
    body = _each([{"op": "mov_cr3", "value": c} for c in cr3s[1:] + cr3s[:1]], vcpus,
                 interleave)
    return Workload("context_switch_storm", f"MOV CR3 over {spaces} address spaces",
                    LONG_MODE, _each([{"op": "run"}], vcpus), body, rounds, ("shadow", "legacy"),
                    (("spaces", spaces), ("rounds", rounds), *_vcpu_params(vcpus, interleave)),
                    vcpus)


def nested_ping_pong(vendor: str = "vmx", round_trips: int = 1000,
                     l2_cr3: int = 0x202000, vcpus: int = 1,
                     interleave: str = "body") -> Workload:
    """L1 enters L2 with nested EPT (VMX) / NPT (SVM), L2 exits back, ``round_trips`` times
    on each vCPU.

    The L2→L1→L2 round trip of numbers.md #19/#20 (a nested CPUID exit reflected to
    L1, which resumes L2; #20 ran 16 vCPUs).  ``l2_cr3`` differs from L1's CR3 by
    default.
    """
    cr0, _, cr4, efer = LONG_MODE
    l2 = {"cr0": cr0, "cr3": l2_cr3, "cr4": cr4, "efer": efer}
    if vendor == "vmx":
        entry, configs = {"op": "vmlaunch", **l2}, ("legacy", "tdp_mmu")
    elif vendor == "svm":
        entry, configs = {"op": "vmrun", **l2}, ("npt_legacy", "npt_tdp_mmu")
    else:
        raise ValueError(f"vendor must be 'vmx' or 'svm', not {vendor!r}")
    return Workload(f"nested_ping_pong_{vendor}", f"L1 ↔ L2 on {vendor.upper()}", LONG_MODE,
                    _each([{"op": "run"}], vcpus),
                    _each([entry, {"op": "vmexit"}], vcpus, interleave), round_trips, configs,
                    (("vendor", vendor), ("round_trips", round_trips), ("l2_cr3", l2_cr3),
                     *_vcpu_params(vcpus, interleave)), vcpus)


def smm_round_trips(round_trips: int = 5000, bios: bool = True, vcpus: int = 1,
                    interleave: str = "body") -> Workload:
    """SMI then RSM, ``round_trips`` times (on each vCPU), from firmware state (protected
    mode, no paging).

    numbers.md #17: a single-vCPU guest under KVM on Hyper-V (SVM, NPT) "goes through
    some ~10000 unique roots in the period before kernel init"; the cause was SMM.
    Before 6.4 each SMI and each RSM frees the only TDP MMU root and allocates
    another, 2 per round trip, so 5,000 round trips are what ~10,000 roots mean in
    this model (the report gives roots, not SMIs).  ``bios=False`` starts in long mode.
    """
    sregs = (0x00000011, 0, 0, 0) if bios else LONG_MODE
    return Workload("smm_round_trips", "SMI + RSM", sregs, _each([{"op": "run"}], vcpus),
                    _each([{"op": "smi"}, {"op": "rsm"}], vcpus, interleave), round_trips,
                    ("npt_legacy", "npt_tdp_mmu"),
                    (("round_trips", round_trips), ("bios", bios),
                     *_vcpu_params(vcpus, interleave)), vcpus)


def cpuid_update(repeats: int = 1, vcpus: int = 1, interleave: str = "body") -> Workload:
    """Userspace sets the guest CPUID (KVM_SET_CPUID2), then the vCPU runs again (each vCPU)."""
    return Workload("cpuid_update", "KVM_SET_CPUID2 + run", LONG_MODE,
                    _each([{"op": "run"}], vcpus),
                    _each([{"op": "cpuid"}, {"op": "run"}], vcpus, interleave), repeats,
                    ("legacy", "tdp_mmu", "shadow"),
                    (("repeats", repeats), *_vcpu_params(vcpus, interleave)), vcpus)


def memslot_change(change: str = "delete", repeats: int = 1, vcpus: int = 1) -> Workload:
    """Userspace deletes (or moves) a memslot, then every vCPU runs again.

    The memslot ioctl is VM-wide (issued once per repeat); each vCPU then services
    its request and reloads, and the last one to drop an old TDP MMU root frees it.
    """
    _check_vcpus(vcpus, "body")
    return Workload("memslot_change", f"memslot {change} + run", LONG_MODE,
                    _each([{"op": "run"}], vcpus),
                    _ops({"op": "memslot", "change": change}, *({"op": "run", "vcpu": v}
                                                                 for v in range(vcpus))),
                    repeats, ("legacy", "tdp_mmu", "shadow"),
                    (("change", change), ("repeats", repeats), *_vcpu_params(vcpus, "body")),
                    vcpus)


WORKLOADS = {
    "cr0_wp_storm": cr0_wp_storm, "boot": boot, "context_switch_storm": context_switch_storm,
    "nested_ping_pong": nested_ping_pong, "smm_round_trips": smm_round_trips,
    "cpuid_update": cpuid_update, "memslot_change": memslot_change,
}
"""Builders by name (each takes its parameters as keywords, ``vcpus`` included)."""
