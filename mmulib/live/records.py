"""Turn trace events into the model's records, and tell root pages from child pages.

``kvm_mmu_get_page`` fires for every shadow page KVM looks up or creates
(``__kvm_mmu_get_shadow_page`` in ``arch/x86/kvm/mmu/mmu.c``; every TDP MMU page through
``tdp_mmu_init_sp`` in ``tdp_mmu.c``, 6.19).  The model traces root pages only, so the probe
has to say which records are roots.  The role word cannot: a 64-bit guest's level-2 child and
a PAE guest's level-2 root have the same role.  The order of events can:

* child pages are created only while a page fault is mapped, and every mapping path
  (``direct_map`` in ``mmu.c``, ``FNAME(fetch)`` in ``paging_tmpl.h``, ``kvm_tdp_mmu_map`` in
  ``tdp_mmu.c``) fires ``kvm_mmu_spte_requested`` first and then walks down from the root,
  creating pages one level at a time;
* so after ``kvm_mmu_spte_requested``, pages of strictly decreasing level, each below the
  level of the current root, are children; anything else (a page at or above that level, or
  any other event in between) ends the fault, and the next ``kvm_mmu_get_page`` is a root,
  looked up by ``kvm_mmu_load`` before the next entry.

A root's level is then the level children must stay below: 4 or 5 for a 64-bit root, 2 for
each of the four PAE roots of a 32-bit or non-paging shadow guest.

>>> from mmulib.live.tracing import TraceEvent
>>> def gp(gfn, role, new=1):
...     return TraceEvent("kvmmmu", "kvm_mmu_get_page", 0, 0, 1,
...                       {"gfn": gfn, "role": role, "created": new})
>>> req = TraceEvent("kvmmmu", "kvm_mmu_spte_requested", 0, 0, 1, {})
>>> roots, kids, level = split_records([gp(0x100, 0x3704), req, gp(0x101, 0x3703),
...                                     gp(0x102, 0x3702), gp(0x110, 0x3704, 0)], 4)
>>> [(hex(r["gfn"]), r["level"], r["created"]) for r in roots], len(kids), level
([('0x100', 4, True), ('0x110', 4, False)], 2, 4)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .tracing import TraceEvent

__all__ = ["TRACE_EVENTS", "ROLE_LEVEL_MASK", "to_record", "split_records"]

TRACE_EVENTS = ("kvmmmu/kvm_mmu_get_page", "kvmmmu/kvm_mmu_spte_requested", "kvm/kvm_pio")
"""The only events the probe enables: pages, fault boundaries, and the step markers."""

ROLE_LEVEL_MASK = 0xF
"""``union kvm_mmu_page_role``: ``level`` is bits 3:0 in every release since 4.x."""


def to_record(event: TraceEvent) -> dict[str, Any]:
    """A ``kvm_mmu_get_page`` event as the model writes it."""
    role = int(event.fields["role"])
    return {"event": "kvm_mmu_get_page", "gfn": int(event.fields["gfn"]), "role": role,
            "level": role & ROLE_LEVEL_MASK, "created": bool(event.fields["created"])}


def split_records(events: Iterable[TraceEvent], root_level: int
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(root records, child records, root level at the end), in trace order."""
    roots: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    below: int | None = None          # inside a fault: children must be below this level
    for e in events:
        if e.name == "kvm_mmu_spte_requested":
            below = root_level
            continue
        if e.name != "kvm_mmu_get_page":
            below = None
            continue
        rec = to_record(e)
        if below is not None and rec["level"] < below:
            children.append(rec)
            below = rec["level"]
        else:
            roots.append(rec)
            root_level, below = rec["level"], None
    return roots, children, root_level
