"""The root-cache view: ``root`` and ``prev_roots[0..2]`` per context, and the pages behind them.

Each context that can hold roots (``root_mmu``/``guest_mmu``; the single
``mmu`` before 4.20) is a box with its current ``root`` and its
``prev_roots`` from most to least recently used, each with the guest PGD it
was built for and what its ``hpa`` points at:

* a legacy shadow page, found in ``mmu_page_hash`` by (gfn, role), with the
  ``root_count`` of roots using it;
* a TDP MMU root with its reference count and whether it is invalid;
* ``pae_root``: KVM's own level-3 page over four level-2 pages, never cached.

A box above the caches repeats the most recent root-cache activity (a lookup
with its hit or miss and slot, roots freed or evicted, roots created) and the
step it came from, so a step that leaves the roots alone leaves this drawing
exactly as it was.  The title says what happens in this era to a root that
nobody uses any more.

Node ids: ``<context>_root``, ``<context>_prev_roots_<i>``, pages
``sp_<gfn>_<role>`` and ``tdp_root_<role>_<serial>`` (:func:`page_id`),
``last_activity``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..sim.events import Event
from ..sim.machine import Machine, PaeRoot, SpKey, TdpKey
from . import style
from .dot import Dot, Html, cell, esc, row, table

__all__ = ["ROOT_EVENTS", "CacheActivity", "cache_activity", "roots_dot", "root_fate",
           "page_id", "MAX_IDLE_PAGES"]

ROOT_EVENTS = frozenset({
    "fast_pgd_switch", "kvm_mmu_free_roots", "kvm_tdp_mmu_free_root", "kvm_mmu_get_page",
    "kvm_tdp_mmu_get_root", "kvm_mmu_prepare_zap_page", "kvm_tdp_mmu_zap_all",
    "kvm_tdp_mmu_invalidate_all_roots", "kvm_mmu_unload", "kvm_mmu_reset_context",
    "kvm_arch_flush_shadow_memslot",
})
"""Events that touch roots, root caches or root pages."""

MAX_IDLE_PAGES = 6
"""Unreferenced legacy root pages drawn at most (the rest are counted)."""

MAX_ACTIVITY_ROWS = 8


@dataclass(frozen=True)
class CacheActivity:
    """The root-cache events of one step, and the step's label."""

    label: str
    events: tuple[Event, ...]


def cache_activity(label: str, events: Iterable[Event]) -> CacheActivity | None:
    """The step's root-cache events, or None if the step left the roots alone."""
    kept = tuple(e for e in events if e.name in ROOT_EVENTS)
    return CacheActivity(label, kept) if kept else None


def root_fate(m: Machine) -> str:
    """What happens in this era to a root that no vCPU uses any more."""
    v = m.era.version
    if m.tdp_mmu:
        if v < (5, 18):
            return ("TDP MMU (5.10-5.17): when its last reference is put, a root is freed "
                    "and its whole tree zapped at once")
        if v < (6, 4):
            return ("TDP MMU (5.18-6.3): on its last reference a root is invalidated; the "
                    "tdp_mmu_zap_wq worker zaps its tree")
        return ("TDP MMU (6.4+): the TDP MMU keeps its own reference, so a root outlives "
                "its users and is found again by role until it is invalidated")
    return ("legacy MMU: root pages live in mmu_page_hash by (gfn, role); one with "
            "root_count 0 stays there and kvm_mmu_get_page finds it again")


def page_id(key: SpKey | TdpKey) -> str:
    """Semantic node id of a page: ``sp_<gfn>_<role>[_z<n>]`` or ``tdp_root_<role>_<serial>``.

    >>> page_id(SpKey(0x1, 0x3784)), page_id(TdpKey(0x3784, 0))
    ('sp_1_00003784', 'tdp_root_00003784_0')
    """
    if isinstance(key, TdpKey):
        return f"tdp_root_{key.role:08x}_{key.serial}"
    return f"sp_{key.gfn:x}_{key.role:08x}" + (f"_z{key.zombie}" if key.zombie else "")


def _cache_contexts(m: Machine) -> list[str]:
    names = ["root_mmu", "guest_mmu"] if m.era.split_contexts else ["mmu"]
    shown = []
    for name in names:
        c = m.ctx[name]
        if name == names[0] or name == m.mmu or c.root.valid or any(p.valid for p in c.prev):
            shown.append(name)
    return shown


def roots_dot(m: Machine, activity: CacheActivity | None = None) -> str:
    """DOT of the root-cache view of ``m``, with the most recent root-cache ``activity``."""
    title = f"<B>{esc(m.era.name)}: root caches and root pages</B><BR/>{esc(root_fate(m))}"
    g = Dot("roots", rankdir="TB", nodesep=0.15, ranksep=0.35, fontname=style.FONT,
            fontsize=11, labelloc="t", label=Html(title))
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=10)
    g.attr("edge", fontname=style.FONT, fontsize=9, arrowsize=0.7)
    pages: dict[str, SpKey | TdpKey] = {}
    edges: list[tuple[str, str]] = []
    hits = _hits(activity)
    for name in _cache_contexts(m):
        c = m.ctx[name]
        active = name == m.mmu
        sub = g.subgraph(f"cluster_{name}", label=name + ("  <- vcpu->arch.mmu" if active else ""),
                         color=style.ACTIVE if active else "black", penwidth=2 if active else 1,
                         fontname=style.FONT, fontsize=10)
        slots = [("root", c.root)] + [(f"prev_roots_{i}", p) for i, p in enumerate(c.prev)]
        ids = []
        for slot, info in slots:
            node = f"{name}_{slot}"
            ids.append(node)
            hit = slot == "root" and name in hits
            sub.node(node, label=_slot_table(slot, info, hit and hits[name], m))
            for target in _targets(node, info.hpa, sub, m):
                edges.append(target[:2])
                if target[2] is not None:
                    pages[target[1]] = target[2]
        sub.same_rank(ids)
        for a, b in zip(ids, ids[1:]):
            sub.edge(a, b, style="invis")
    _draw_pages(g, m, pages)
    for tail, head in edges:
        g.edge(tail, head)
    g.node("last_activity", label=_activity_table(activity))
    g.edge("last_activity", f"{_cache_contexts(m)[0]}_root", style="invis")
    return g.source


def _hits(activity: CacheActivity | None) -> dict[str, str]:
    """Context -> where its current root was found, for lookups that hit in the activity."""
    out: dict[str, str] = {}
    for e in activity.events if activity else ():
        if e.name == "fast_pgd_switch" and e.get("hit"):
            slot = e.get("slot")
            out[e.get("mmu")] = "kept current root" if slot == "current" else \
                f"found in prev_roots[{slot}]"
    return out


def _hpa_text(hpa: Any, m: Machine) -> str:
    if hpa is None:
        return "INVALID_PAGE"
    if isinstance(hpa, PaeRoot):
        return f"pae_root (KVM's level-{hpa.wrap} root)"
    if isinstance(hpa, TdpKey):
        return f"TDP MMU root {hpa.role:#010x}"
    return f"shadow page gfn {hpa.gfn:#x} role {hpa.role:#010x}"


def _slot_table(slot: str, info: Any, hit: str | bool, m: Machine) -> Html:
    title = "root" if slot == "root" else f"prev_roots[{slot[-1]}]"
    valid = info.valid
    fill = style.HIT if hit else (None if valid else style.MUTED)
    text_colour = "black" if valid else style.INVALID
    lines = [f"pgd {info.pgd:#x}", _hpa_text(info.hpa, m)]
    if hit:
        lines.append(str(hit))
    rows = [row(cell(Html(f"<B>{esc(title)}</B>"), bgcolor=style.HEADER))]
    rows += [row(cell(Html(f'<FONT COLOR="{text_colour}">{esc(t)}</FONT>'), align="left",
                      bgcolor=fill)) for t in lines]
    return table(rows, cellborder=0, border=1)


def _targets(node: str, hpa: Any, sub: Dot, m: Machine) -> list[tuple[str, str, Any]]:
    """Edges from a slot to its page(s): (tail, head, page key or None)."""
    if hpa is None:
        return []
    if isinstance(hpa, PaeRoot):
        pae = f"{node}_pae_root"
        sub.node(pae, label=table([row(cell(f"pae_root: level {hpa.wrap}, no shadow page",
                                            bgcolor=style.MUTED))]))
        out: list[tuple[str, str, Any]] = [(node, pae, None)]
        out += [(pae, page_id(p), p) for p in hpa.pages if p is not None]
        return out
    return [(node, page_id(hpa), hpa)]


def _draw_pages(g: Dot, m: Machine, linked: dict[str, SpKey | TdpKey]) -> None:
    """Legacy root pages (sorted by gfn, role) and TDP MMU roots (kernel list order)."""
    idle = 0
    for key, count in sorted(m.sp.items(), key=lambda kv: (kv[0].gfn, kv[0].role,
                                                            kv[0].zombie)):
        nid = page_id(key)
        if count == 0 and nid not in linked:
            idle += 1
            if idle > MAX_IDLE_PAGES:
                continue
        g.node(nid, label=_sp_table(key, count, m))
    if idle > MAX_IDLE_PAGES:
        g.node("idle_pages", label=table([row(cell(
            f"... {idle - MAX_IDLE_PAGES} more unreferenced root pages", bgcolor=style.MUTED))]))
    for key, refs, invalid in m.tdp_roots:
        g.node(page_id(key), label=_tdp_table(key, refs, invalid, m))


def _sp_table(key: SpKey, count: int, m: Machine) -> Html:
    from ..roles import Role

    role = Role(m.era.page, key.role)
    rows = [row(cell(Html("<B>shadow page</B>" if not role.direct else "<B>direct page</B>"),
                     bgcolor=style.HEADER)),
            row(cell(f"gfn {key.gfn:#x}, role {key.role:#010x}", align="left")),
            row(cell(role.trace_str(), align="left")),
            row(cell(f"root_count {count}", align="left",
                     bgcolor=style.MUTED if count == 0 else None))]
    if key.zombie:
        rows.append(row(cell("invalid (zapped): freed when unreferenced", bgcolor=style.FREED)))
    return table(rows, cellborder=0, border=1, color=style.INVALID if count == 0 else "black")


def _tdp_table(key: TdpKey, refs: int, invalid: bool, m: Machine) -> Html:
    from ..roles import Role

    role = Role(m.era.page, key.role)
    own = " (incl. the TDP MMU's own)" if m.era.version >= (6, 4) else ""
    rows = [row(cell(Html(f"<B>TDP MMU root #{key.serial}</B>"), bgcolor=style.HEADER)),
            row(cell(f"role {key.role:#010x}", align="left")),
            row(cell(role.trace_str(), align="left")),
            row(cell(f"refcount {refs}{own}", align="left")),
            row(cell("invalid" if invalid else "valid", align="left",
                     bgcolor=style.FREED if invalid else None))]
    if key in getattr(m, "tdp_empty", ()):
        rows.append(row(cell("tree zapped: empty until faults refill it", align="left",
                             bgcolor=style.MUTED)))
    return table(rows, cellborder=0, border=1)


def _activity_table(activity: CacheActivity | None) -> Html:
    head = "last root-cache activity"
    if activity is None:
        rows = [row(cell(Html(f"<B>{head}</B>"), bgcolor=style.HEADER)),
                row(cell("none since the reset", align="left"))]
        return table(rows, cellborder=0, border=1)
    lines = _activity_lines(activity.events)
    more = len(lines) - MAX_ACTIVITY_ROWS
    if more > 0:
        lines = lines[:MAX_ACTIVITY_ROWS] + [(f"... {more} more", None)]
    rows = [row(cell(Html(f"<B>{head}</B>: {esc(activity.label)}"),
                     bgcolor=style.HEADER))]
    rows += [row(cell(text, align="left", bgcolor=colour)) for text, colour in lines]
    return table(rows, cellborder=0, border=1)


def _activity_lines(events: tuple[Event, ...]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    after_tdp_alloc = False
    for e in events:
        n = e.name
        skip_trace = after_tdp_alloc and n == "kvm_mmu_get_page"
        after_tdp_alloc = n == "kvm_tdp_mmu_get_root" and not e.get("reused")
        if skip_trace:
            continue  # the same new TDP MMU root, traced again as kvm_mmu_get_page (5.15+)
        if n == "fast_pgd_switch":
            slot = e.get("slot")
            if e.get("hit"):
                where = "the current root" if slot == "current" else f"prev_roots[{slot}]"
                out.append((f"lookup pgd {e.get('pgd'):#x} on {e.get('mmu')}: hit {where}",
                            style.HIT))
            else:
                why = e.get("why") or ("LRU root evicted" if e.get("evicted") else "")
                out.append((f"lookup pgd {e.get('pgd'):#x} on {e.get('mmu')}: miss"
                            + (f" ({why})" if why else ""), style.FREED))
        elif n == "kvm_mmu_free_roots":
            why = e.get("why")
            out.append((f"kvm_mmu_free_roots({e.get('mmu')}): {', '.join(e.get('freed'))}"
                        + (f" ({why})" if why else ""), style.FREED))
        elif n == "kvm_tdp_mmu_free_root":
            out.append((f"TDP MMU root {e.get('role'):#010x} freed: {e.get('pages_freed')} "
                        "page-table pages", style.FREED))
        elif n == "kvm_mmu_prepare_zap_page":
            out.append((f"shadow page gfn {e.get('gfn'):#x} role {e.get('role'):#010x} "
                        "zapped", style.FREED))
        elif n == "kvm_tdp_mmu_get_root":
            if e.get("reused"):
                out.append((f"TDP MMU root {e.get('role'):#010x} found again "
                            f"(refcount {e.get('refcount')})", style.HIT))
            else:
                out.append((f"TDP MMU root {e.get('role'):#010x} allocated: "
                            f"{e.get('pages_to_build')} pages to fault in", style.CHANGED))
        elif n == "kvm_mmu_get_page":
            verb = "created" if e.get("created") else "found again"
            out.append((f"root page gfn {e.get('gfn'):#x} role {e.get('role'):#010x} {verb}",
                        style.CHANGED if e.get("created") else style.HIT))
        elif n in ("kvm_tdp_mmu_zap_all", "kvm_tdp_mmu_invalidate_all_roots"):
            out.append((f"{n} (root {e.get('role'):#010x})", style.FREED))
        elif n == "kvm_mmu_reset_context":
            out.append((f"kvm_mmu_reset_context from {e.get('caller')}: {e.get('why')}", None))
        elif n == "kvm_mmu_unload":
            why = e.get("why")
            out.append(("kvm_mmu_unload" + (f" ({why})" if why else ""), None))
        elif n == "kvm_arch_flush_shadow_memslot":
            out.append((f"memslot {e.get('change')}: pages zapped, roots in use invalid",
                        style.FREED))
    return out
