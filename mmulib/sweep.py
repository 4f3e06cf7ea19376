"""The refactoring check: sweep every valid role-relevant input for two eras and compare.

Paolo Bonzini's 2022 series (landed in 5.19) was presented as "no functional
change intended".  This module makes that claim checkable: for every MMU
configuration and every valid combination of the inputs the role code reads
(CR0.PG/WP; CR4.PAE/PSE/SMEP/SMAP/PKE/LA57; EFER.LMA/NX; SMM; guest mode; and
the host inputs of the configuration), it compares two eras on

1. **root-page roles** — the role words of the pages at the top of KVM's tree
   (what ``kvm_mmu_get_page`` would be asked for), and
2. **re-initialisation decisions** — for every pair of states, whether the
   init function would rebuild the context or return early ("role
   unchanged").  An era decides by comparing a key: ``mmu_role.as_u64``
   before 5.19, ``cpu_role.as_u64`` plus ``root_role.word`` from 5.19 (only
   ``cpu_role`` for the shadow-EPT and nested contexts).  Two eras decide
   alike on every pair exactly when their keys split the states into the same
   groups; each group that differs is reported with one pair that shows it,
3. **reset triggers** — the CR0/CR4/EFER bits whose change makes ``x86.c``
   call ``kvm_mmu_reset_context``.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .eras import Era, resolve
from .regs import role_bits
from .request import Request
from .rolecalc import (
    Host,
    Inputs,
    MmuState,
    init_nested_mmu,
    init_shadow,
    init_shadow_ept,
    init_shadow_npt,
    init_tdp,
    root_page_roles,
)

__all__ = [
    "canonical_fields", "Config", "CONFIGS", "Difference", "ConfigReport", "SweepReport",
    "sweep", "states",
]

_CR0_PE_ET = 0x11
_CR0_PG, _CR0_WP = 1 << 31, 1 << 16
_CR4_BITS = {"PSE": 1 << 4, "PAE": 1 << 5, "LA57": 1 << 12, "SMEP": 1 << 20, "SMAP": 1 << 21,
             "PKE": 1 << 22}
_EFER_LME, _EFER_LMA, _EFER_NX = 1 << 8, 1 << 10, 1 << 11


@dataclass(frozen=True)
class Config:
    """One MMU configuration of the sweep, with its host inputs fixed."""

    name: str
    params: dict[str, Any]

    def request(self, kernel: str, cr0: int, cr4: int, efer: int, smm: bool,
                guest_mode: bool) -> Request:
        return Request(kernel=kernel, cr0=cr0, cr4=cr4, efer=efer, smm=smm,
                       guest_mode=guest_mode, **self.params)


def _configs() -> tuple[Config, ...]:
    out = [Config("shadow", {"tdp": "none"})]
    for ad, maxl, phys in itertools.product((True, False), (4, 5), (48, 52)):
        if maxl == 4 and phys == 52:
            continue  # MAXPHYADDR only matters with 5-level EPT
        out.append(Config(f"tdp-ept-ad{int(ad)}-max{maxl}-maxphy{phys}",
                          {"tdp": "ept", "ept_ad": ad, "max_tdp_level": maxl,
                           "maxphyaddr": phys}))
    for la57 in (False, True):
        out.append(Config(f"tdp-npt-host{5 if la57 else 4}", {"tdp": "npt", "host_la57": la57}))
    for lvl, xo, ad in itertools.product((4, 5), (False, True), (True, False)):
        out.append(Config(f"nested-ept-l{lvl}-execonly{int(xo)}-ad{int(ad)}",
                          {"tdp": "ept", "nested": "ept", "nested_ept_level": lvl,
                           "execonly": xo, "nested_ept_ad": ad}))
    for la57 in (False, True):
        out.append(Config(f"nested-npt-host{5 if la57 else 4}",
                          {"tdp": "npt", "nested": "npt", "host_la57": la57}))
    out.append(Config("nested-mmu", {"tdp": "ept", "context": "nested_mmu"}))
    return tuple(out)


CONFIGS: tuple[Config, ...] = _configs()


def states() -> Iterator[tuple[int, int, int, bool, bool]]:
    """Every valid (cr0, cr4, efer, smm, guest_mode) over the role-relevant bits.

    CR0 always has PE|ET; long mode (LME=LMA=1) needs PG and PAE; with PG=0
    EFER.LMA is 0.  LA57 and PKE are allowed in every mode (the role code
    gates them on LMA itself from 5.14).
    """
    cr4_names = list(_CR4_BITS)
    for pg, wp in itertools.product((0, 1), repeat=2):
        cr0 = _CR0_PE_ET | (_CR0_PG if pg else 0) | (_CR0_WP if wp else 0)
        for bits in itertools.product((0, 1), repeat=len(cr4_names)):
            cr4 = sum(_CR4_BITS[n] for n, b in zip(cr4_names, bits) if b)
            for lma, nx in itertools.product((0, 1), repeat=2):
                if lma and not (pg and cr4 & _CR4_BITS["PAE"]):
                    continue
                efer = (_EFER_LME | _EFER_LMA if lma else 0) | (_EFER_NX if nx else 0)
                for smm, gm in itertools.product((False, True), repeat=2):
                    yield cr0, cr4, efer, smm, gm


@dataclass(frozen=True)
class Outcome:
    """What one era computes for one state: the re-init key and the root-page roles."""

    key: tuple[int, ...]
    root_pages: tuple[tuple[int, int], ...]  # (level, role word) per page


# L1's root_mmu init is the same for every nested configuration of one host; the
# functions are pure, so the sweep may reuse their results.
_init_tdp_cached = functools.lru_cache(maxsize=1 << 15)(init_tdp)


def _host(cfg: Config) -> Host:
    p = cfg.params
    return Host(tdp=p["tdp"], ept_ad=p.get("ept_ad", True),
                max_tdp_level=p.get("max_tdp_level", 4), host_la57=p.get("host_la57", False))


def _outcome(era: Era, cfg: Config, host: Host, cr0: int, cr4: int, efer: int, smm: bool,
             gm: bool) -> Outcome:
    """Lean version of :func:`mmulib.compute.compute` for the sweep's inner loop."""
    p = cfg.params
    inp = Inputs(cr0, cr4, efer, smm, gm, p.get("maxphyaddr", 48))
    split = era.split_contexts
    if p.get("context") == "nested_mmu":
        ctx, _ = init_nested_mmu(era, MmuState("nested_mmu"), inp)
        return Outcome((ctx.as_u64,), ())
    nested = p.get("nested")
    if nested is None:
        if p["tdp"] == "none":
            ctx, _ = init_shadow(era, MmuState("root_mmu"), inp)
        else:
            ctx, _ = init_tdp(era, MmuState("root_mmu"), host, inp)
    else:
        l1, _ = _init_tdp_cached(era, MmuState("root_mmu"), host,
                         Inputs(cr0, cr4, efer, smm, False, inp.maxphyaddr))
        g = MmuState("guest_mmu") if split else l1
        if nested == "ept":
            ctx, _ = init_shadow_ept(era, g, l1, Inputs(cr0, cr4, efer, smm, True,
                                                        inp.maxphyaddr),
                                     execonly=p["execonly"], accessed_dirty=p["nested_ept_ad"],
                                     level=p["nested_ept_level"])
        else:
            # SVM's own order decides guest_mode at the call (see
            # compute.effective_guest_mode): 0 before 6.14, 1 from 6.14.
            npt_inp = Inputs(cr0, cr4, efer, smm, era.version >= (6, 14), inp.maxphyaddr)
            ctx, _ = init_shadow_npt(era, g, host, npt_inp, npt_inp)
    if era.has_cpu_role:
        lp = era.page
        level = lp.get(ctx.root_role, "level")
        direct = bool(lp.get(ctx.root_role, "direct"))
        guest_level = lp.get(ctx.base, "level")
        key: tuple[int, ...] = (ctx.as_u64,) if nested == "ept" else (ctx.as_u64, ctx.root_role)
    else:
        level, direct, guest_level = ctx.shadow_root_level, ctx.direct_map, ctx.root_level
        key = (ctx.as_u64,)
    pages = root_page_roles(era, ctx, level=level, direct=direct, guest_level=guest_level)
    return Outcome(key, pages)


@dataclass(frozen=True)
class Difference:
    """One difference between the eras, with the input that shows it."""

    what: str  # "root_pages" or "reinit"
    state: dict[str, Any]
    detail: str
    other_state: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "state": self.state, "other_state": self.other_state,
                "detail": self.detail}


@dataclass
class ConfigReport:
    config: str
    states: int
    root_pages_identical: bool = True
    reinit_identical: bool = True
    root_page_diffs: int = 0
    examples: list[Difference] = field(default_factory=list)
    reinit_diffs: list[Difference] = field(default_factory=list)
    fields_changed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config, "states": self.states,
            "root_pages_identical": self.root_pages_identical,
            "reinit_identical": self.reinit_identical,
            "root_page_differences": self.root_page_diffs,
            "fields_changed": dict(sorted(self.fields_changed.items())),
            "root_page_examples": [d.to_json() for d in self.examples],
            "reinit_differences": [d.to_json() for d in self.reinit_diffs],
        }


@dataclass
class SweepReport:
    era_from: Era
    era_to: Era
    configs: list[ConfigReport]
    triggers: dict[str, dict[str, str]]
    seconds: float

    @property
    def identical(self) -> bool:
        return all(c.root_pages_identical and c.reinit_identical for c in self.configs) and \
            all(v["from"] == v["to"] for v in self.triggers.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.era_from.name, "to": self.era_to.name, "identical": self.identical,
            "states_per_config": self.configs[0].states if self.configs else 0,
            "seconds": round(self.seconds, 3),
            "reset_triggers": self.triggers,
            "configs": [c.to_json() for c in self.configs],
        }

    def text(self) -> str:
        a, b = self.era_from.name, self.era_to.name
        lines = [f"refactoring check {a} -> {b}: "
                 f"{len(self.configs)} configurations x {self.configs[0].states} states "
                 f"({self.seconds:.2f} s)"]
        lines.append("reset triggers (kvm_mmu_reset_context on a change of):")
        for reg, v in self.triggers.items():
            same = "same" if v["from"] == v["to"] else "DIFFERENT"
            lines.append(f"  {reg:5} {a}: {v['from']:40} {b}: {v['to']:40} {same}")
        for c in self.configs:
            rp = "identical" if c.root_pages_identical else \
                f"{c.root_page_diffs} states differ"
            ri = "identical" if c.reinit_identical else f"{len(c.reinit_diffs)} group(s) differ"
            lines.append(f"{c.config:34} root pages: {rp:22} re-init: {ri}")
            if c.fields_changed:
                changed = ", ".join(f"{k} ({n})" for k, n in sorted(c.fields_changed.items()))
                lines.append(f"    fields that differ: {changed}")
            for d in c.examples[:3]:
                lines.append(f"    e.g. {_fmt_state(d.state)}: {d.detail}")
            for d in c.reinit_diffs[:3]:
                lines.append(f"    re-init: {_fmt_state(d.state)} vs {_fmt_state(d.other_state)}: "
                             f"{d.detail}")
        lines.append("verdict: " + ("no difference" if self.identical else
                                    "differences listed above"))
        return "\n".join(lines)


def _fmt_state(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return (f"cr0={s['cr0']:#x} cr4={s['cr4']:#x} efer={s['efer']:#x}"
            f"{' smm' if s['smm'] else ''}{' guest' if s['guest_mode'] else ''}")


def _state_dict(st: tuple[int, int, int, bool, bool]) -> dict[str, Any]:
    cr0, cr4, efer, smm, gm = st
    return {"cr0": cr0, "cr4": cr4, "efer": efer, "smm": smm, "guest_mode": gm}


# Renamed page-role fields, mapped to one canonical meaning so that eras with
# different layouts (4.20 cr4_pae, 5.10 gpte_is_8_bytes, 5.17 has_4_byte_gpte
# with the opposite sense; nxe vs efer_nx) compare by meaning, not by word.
_CANON = {"cr4_pae": ("gpte_is_8_bytes", False), "gpte_is_8_bytes": ("gpte_is_8_bytes", False),
          "has_4_byte_gpte": ("gpte_is_8_bytes", True), "nxe": ("efer_nx", False)}


def canonical_fields(era: Era, word: int) -> dict[str, int]:
    """A page role's fields under canonical names (see ``_CANON``); absent bits read 0."""
    return dict(_canonical(era, word))


@functools.lru_cache(maxsize=1 << 16)
def _canonical(era: Era, word: int) -> tuple[tuple[str, int], ...]:
    out = {"passthrough": 0, "is_mirror": 0}
    for name, value in era.page.unpack(word).items():
        canon, invert = _CANON.get(name, (name, False))
        out[canon] = int(not value) if invert else value
    return tuple(sorted(out.items()))


def _pages_equal(ea: Era, eb: Era, a: tuple[tuple[int, int], ...],
                 b: tuple[tuple[int, int], ...]) -> bool:
    if ea.page is eb.page:
        return a == b
    return len(a) == len(b) and all(
        la == lb and _canonical(ea, ra) == _canonical(eb, rb)
        for (la, ra), (lb, rb) in zip(a, b))


def _page_diff(ea: Era, eb: Era, a: tuple[tuple[int, int], ...],
               b: tuple[tuple[int, int], ...]) -> tuple[str, set[str]]:
    if len(a) != len(b):
        return f"{len(a)} root page(s) vs {len(b)}", {"(page count)"}
    names: set[str] = set()
    parts = []
    for (la, ra), (lb, rb) in zip(a, b):
        fa, fb = canonical_fields(ea, ra), canonical_fields(eb, rb)
        if la == lb and fa == fb:
            continue
        names.update(k for k in fa if fa[k] != fb.get(k))
        parts.append(f"l{la} {ra:#010x} vs l{lb} {rb:#010x}")
    return "; ".join(sorted(set(parts))), names


def _compare_partitions(
    sts: list[tuple[int, int, int, bool, bool]], ka: list[tuple[int, ...]],
    kb: list[tuple[int, ...]], limit: int = 20,
) -> list[Difference]:
    """Pairs of states on which one era re-initialises and the other returns early."""
    out: list[Difference] = []
    first_a: dict[tuple[int, ...], int] = {}
    first_b: dict[tuple[int, ...], int] = {}
    seen: set[tuple[str, int, int]] = set()
    for i in range(len(sts)):
        ja = first_a.setdefault(ka[i], i)
        jb = first_b.setdefault(kb[i], i)
        # Same key in era A as an earlier state but a different key in era B.
        if ja != i and kb[ja] != kb[i] and ("a", ja, 0) not in seen:
            seen.add(("a", ja, 0))
            out.append(Difference("reinit", _state_dict(sts[ja]),
                                  "first era returns early (role unchanged), second re-initialises",
                                  _state_dict(sts[i])))
        if jb != i and ka[jb] != ka[i] and ("b", jb, 0) not in seen:
            seen.add(("b", jb, 0))
            out.append(Difference("reinit", _state_dict(sts[jb]),
                                  "first era re-initialises, second returns early (role unchanged)",
                                  _state_dict(sts[i])))
        if len(out) >= limit:
            break
    return out


def _triggers(ea: Era, eb: Era) -> dict[str, dict[str, str]]:
    from .regs import bit_names

    out = {}
    for reg in ("CR0", "CR4", "EFER"):
        out[reg] = {
            "from": "|".join(bit_names(reg, role_bits(reg, ea.version))),
            "to": "|".join(bit_names(reg, role_bits(reg, eb.version))),
        }
    return out


def sweep(era_from: str, era_to: str, *, max_examples: int = 5) -> SweepReport:
    """Compare two eras over every configuration and every valid state."""
    t0 = time.perf_counter()
    ea, eb = resolve(era_from), resolve(era_to)
    sts = list(states())
    reports = []
    for cfg in CONFIGS:
        if cfg.params.get("nested") == "ept" and cfg.params["nested_ept_level"] == 5 and \
                min(ea.version, eb.version) < (5, 10):
            continue  # 5-level nested EPT does not exist before 5.10
        rep = ConfigReport(cfg.name, len(sts))
        ka, kb = [], []
        host = _host(cfg)
        for st in sts:
            oa, ob = _outcome(ea, cfg, host, *st), _outcome(eb, cfg, host, *st)
            ka.append(oa.key)
            kb.append(ob.key)
            if not _pages_equal(ea, eb, oa.root_pages, ob.root_pages):
                rep.root_pages_identical = False
                rep.root_page_diffs += 1
                detail, names = _page_diff(ea, eb, oa.root_pages, ob.root_pages)
                for n in names:
                    rep.fields_changed[n] = rep.fields_changed.get(n, 0) + 1
                if len(rep.examples) < max_examples:
                    rep.examples.append(Difference("root_pages", _state_dict(st), detail))
        rep.reinit_diffs = _compare_partitions(sts, ka, kb)
        rep.reinit_identical = not rep.reinit_diffs
        reports.append(rep)
    return SweepReport(ea, eb, reports, _triggers(ea, eb), time.perf_counter() - t0)
