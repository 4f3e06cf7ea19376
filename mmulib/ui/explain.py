"""The panel's "what just happened" line: one step in plain words.

Pure Python, built from the step's events and the machines before and after
it, e.g. ``"CR0.WP 1→0: mmu_role.base.cr0_wp changed, the root page role
changed (cr0_wp); 5.17 runs kvm_mmu_reset_context (from kvm_post_set_cr0),
drops its root, tears down 515 TDP page-table pages and builds a new root at
VM entry."``  Roots are counted over every context's ``root`` and
``prev_roots``; "drops" counts the roots ``kvm_mmu_free_roots`` freed.

>>> from mmulib.ui.session import Session
>>> s = Session("6.4", tdp="npt")
>>> step = s.toggle("CR0", "WP")
>>> print(explain(step, s.prev_machine, s.machine))
CR0.WP 1→0: cpu_role.base.cr0_wp changed, root_role unchanged; 6.4 runs kvm_init_mmu only \
and keeps its 1 root.
"""

from __future__ import annotations

from typing import Any

from ..draw.roles import role_changes, role_view
from ..roles import FieldChange
from ..sim import Machine, counters_of
from ..sim.events import Event
from .session import Step

__all__ = ["explain", "roles_phrase", "kvm_phrase", "held_roots"]

MAX_FIELDS = 3


def held_roots(m: Machine) -> set[tuple[str, Any]]:
    """(context, hpa) of every valid ``root`` and ``prev_roots`` entry."""
    out = set()
    for name, c in m.ctx.items():
        for r in (c.root, *c.prev):
            if r.valid:
                out.add((name, r.hpa))
    return out


def _fields(changes: list[FieldChange]) -> str:
    names = [f"{c.union}.{c.name}" for c in changes]
    if len(names) <= MAX_FIELDS:
        return ", ".join(names)
    return ", ".join(names[:MAX_FIELDS]) + f" and {len(names) - MAX_FIELDS} more"


def roles_phrase(before: Machine | None, after: Machine) -> str:
    """Which role fields changed on the CPU side and on the root side."""
    cur = role_view(after)
    if before is None or before.era != after.era:
        return f"{cur.cpu.node} and {cur.root.node} recomputed"
    changes = list(role_changes(role_view(before), cur))
    cpu = [c for c in changes if c.union.split(".")[0] == cur.cpu.node]
    root = [c for c in changes if c.union.split(".")[0] == cur.root.node]
    parts = []
    if before.mmu != after.mmu:
        parts.append(f"vcpu->arch.mmu now points at {after.mmu}")
    lazy = " (copied in lazily)" if cur.lazy_wp is not None and any(
        c.name == "cr0_wp" for c in cpu) else ""
    parts.append(f"{_fields(cpu)} changed{lazy}" if cpu else f"{cur.cpu.node} unchanged")
    root_name = "root_role" if cur.root.node == "root_role" else "the root page role"
    if root:
        names = ", ".join(c.name for c in root[:MAX_FIELDS])
        more = f" and {len(root) - MAX_FIELDS} more" if len(root) > MAX_FIELDS else ""
        parts.append(f"{root_name} changed ({names}{more})")
    else:
        parts.append(f"{root_name} unchanged")
    return ", ".join(parts)


_QUIET = {"vm_entry", "exit", "kvm_mmu_load", "fast_pgd_switch", "kvm_mmu_get_page",
          "kvm_tdp_mmu_get_root", "kvm_tdp_mmu_free_root", "kvm_mmu_prepare_zap_page",
          "kvm_init_mmu", "kvm_init_shadow_ept_mmu", "no_exit"}


def _called(e: Event) -> str:
    if e.name == "kvm_make_request":
        return f"kvm_make_request({e.get('request')})"
    return e.name


def kvm_phrase(era: str, events: tuple[Event, ...], before: Machine | None,
               after: Machine) -> str:
    """What KVM ran and what became of the roots."""
    resets = [e for e in events if e.name == "kvm_mmu_reset_context"]
    inits = [e for e in events if e.name in ("kvm_init_mmu", "kvm_init_shadow_ept_mmu")]
    no_exit = [e for e in events if e.name == "no_exit"]
    if resets:
        callers = sorted({str(e.get("caller")) for e in resets})
        times = f" {len(resets)} times" if len(resets) > 1 else ""
        did = f"{era} runs kvm_mmu_reset_context{times} (from {', '.join(callers)})"
    elif inits:
        early = all(not e.get("reinit") for e in inits)
        did = f"{era} runs kvm_init_mmu only" + (" (role unchanged: it returns early)"
                                                 if early else "")
    elif no_exit:
        why = str(no_exit[0].get("why")).split(":")[0]
        did = f"no VM exit ({why}), so {era} runs no MMU code"
    else:
        called = list(dict.fromkeys(_called(e) for e in events if e.name not in _QUIET))
        did = f"{era} runs " + ", ".join(called) if called else f"{era} runs no MMU code"
    for e in events:
        if e.name == "fast_pgd_switch":
            slot = e.get("slot")
            if e.get("hit"):
                where = "the current root" if slot == "current" else f"prev_roots[{slot}]"
                did += f"; kvm_mmu_new_pgd hits {where}"
            else:
                did += "; kvm_mmu_new_pgd misses" + (f" ({e.get('why')})" if e.get("why") else "")
    return did + _roots_phrase(events, before)


def _roots_phrase(events: tuple[Event, ...], before: Machine | None) -> str:
    c = counters_of(events)
    held = len(held_roots(before)) if before is not None else 0
    lost = c["roots_freed"]
    made = c["root_pages_created"] + c["tdp_roots_allocated"]
    found = c["root_pages_reused"] + c["tdp_roots_reused"]
    out = []
    if held and not lost:
        out.append(f"keeps its {held} root" if held == 1 else f"keeps all {held} roots")
    elif lost:
        if lost >= held:
            out.append("drops its root" if held <= 1 else f"drops all {held} roots")
        else:
            out.append(f"drops {lost} of its {held} roots")
        if c["pt_pages_torn_down"]:
            out.append(f"tears down {c['pt_pages_torn_down']} TDP page-table pages")
    if made:
        out.append("builds a new root at VM entry" if made == 1 else
                   f"builds {made} new root pages at VM entry")
    elif found and lost:
        out.append("finds a root again at VM entry" if found == 1 else
                   f"finds {found} root pages again at VM entry")
    if not out:
        return ""
    if len(out) == 1:
        return f" and {out[0]}"
    return ", " + ", ".join(out[:-1]) + f" and {out[-1]}"


def explain(step: Step, before: Machine | None, after: Machine) -> str:
    """One sentence for the panel: the step, the role fields it changed, what KVM did."""
    era = after.era.name
    return (f"{step.label}: {roles_phrase(before, after)}; "
            f"{kvm_phrase(era, step.events, before, after)}.")
