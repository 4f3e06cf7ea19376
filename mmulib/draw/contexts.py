"""The MMU-contexts view: the vCPU, its ``mmu`` and ``walk_mmu`` pointers, and each context.

From 4.20 a vCPU has three ``struct kvm_mmu``: ``root_mmu`` (L1's paging),
``guest_mmu`` (shadows L1's EPT/NPT while L2 runs) and ``nested_mmu`` (only
walks L2's tables; owns no roots).  ``vcpu->arch.mmu`` points at the one whose
roots are loaded, ``walk_mmu`` at the one that translates guest virtual
addresses.  4.18 and 4.19 embed a single ``mmu`` plus ``nested_mmu``.

Each context shows its role summary (the CPU-side role as the
``kvm_mmu_get_page`` tracepoint would print it, and ``root_role``) and how
many roots it holds; the context ``mmu`` points at is drawn in blue.
"""

from __future__ import annotations

from ..regs import describe
from ..roles import Role
from ..sim.machine import Ctx, Machine
from . import style
from .dot import Dot, Html, cell, esc, row, table

__all__ = ["contexts_dot", "context_summary"]


def context_summary(m: Machine, name: str) -> list[str]:
    """Lines describing context ``name`` of ``m``: roles, then roots."""
    era, c = m.era, m.ctx[name]
    r = c.roles
    if r.base == 0 and r.ext == 0 and r.root_role == 0:
        return ["not initialised yet (every role word 0)"]
    side = era.cpu_side_name
    lines = [f"{side} {r.as_u64:#018x}" if era.ext is not None else f"{side} {r.base:#010x}",
             "  " + Role(era.page, r.base).trace_str()]
    if era.has_cpu_role and name != "nested_mmu":
        lines.append(f"root_role {r.root_role:#010x}")
        lines.append("  " + Role(era.page, r.root_role).trace_str())
    if name == "nested_mmu":
        lines.append("walks L2's tables; owns no roots")
    else:
        lines.append(_roots_line(c))
    return lines


def _roots_line(c: Ctx) -> str:
    held = int(c.root.valid) + sum(p.valid for p in c.prev)
    cur = "root valid" if c.root.valid else "root INVALID"
    return f"{cur}; {held} of 4 roots held (root + prev_roots)"


def contexts_dot(m: Machine) -> str:
    """DOT of the contexts view of ``m``."""
    era = m.era
    g = Dot("contexts", rankdir="LR", nodesep=0.2, ranksep=0.5, fontname=style.FONT,
            fontsize=11, labelloc="t", label=f"{era.name}: MMU contexts of the vCPU")
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=10)
    g.attr("edge", fontname=style.FONT, fontsize=9)
    g.node("vcpu", label=_vcpu_table(m))
    for name in m.ctx:
        g.node(name, label=_context_table(m, name))
    embedded = "" if era.split_contexts else " (embedded)"
    g.edge("vcpu:mmu", m.mmu, label="mmu" + embedded, color=style.ACTIVE, penwidth=2)
    g.edge("vcpu:walk_mmu", m.walk, label="walk_mmu", color=style.ACTIVE, style="dashed")
    return g.source


def _vcpu_table(m: Machine) -> Html:
    mmu = m.mmu if not m.era.split_contexts else f"&amp;{m.mmu}"
    rows = [
        row(cell(Html("<B>vcpu-&gt;arch</B>"), colspan=2, bgcolor=style.HEADER)),
        row(cell("mmu", align="left"), cell(Html(mmu), port="mmu", align="left")),
        row(cell("walk_mmu", align="left"), cell(Html(f"&amp;{m.walk}"), port="walk_mmu",
                                                  align="left")),
        row(cell("CR0", align="left"), cell(describe("CR0", m.cr0), align="left")),
        row(cell("CR3", align="left"), cell(f"{m.cr3:#x}", align="left")),
        row(cell("CR4", align="left"), cell(describe("CR4", m.cr4), align="left")),
        row(cell("EFER", align="left"), cell(describe("EFER", m.efer), align="left")),
        row(cell("SMM", align="left"), cell("yes" if m.smm else "no", align="left")),
        row(cell("running", align="left"), cell(_running(m), align="left")),
    ]
    tdp = {"none": "shadow paging", "ept": "EPT", "npt": "NPT"}[m.host.tdp]
    if m.host.tdp != "none":
        tdp += ", TDP MMU" if m.tdp_mmu else ", legacy MMU"
    rows.append(row(cell("paging", align="left"), cell(f"{tdp} ({m.vendor})", align="left")))
    if m.requests:
        rows.append(row(cell("requests", align="left"),
                        cell(", ".join(sorted(m.requests)), align="left")))
    return table(rows)


def _running(m: Machine) -> str:
    if m.nested is not None:
        n = m.nested
        paging = ("nested EPT" if n.vendor == "vmx" else "nested NPT") if n.paging else \
            "no nested paging"
        return f"L2 ({n.vendor.upper()}, {paging})"
    return "L1" if m.running else "L1 (stopped: next step is a VM entry)"


def _context_table(m: Machine, name: str) -> Html:
    marks = [p for p, target in (("mmu", m.mmu), ("walk_mmu", m.walk)) if target == name]
    active = name == m.mmu
    head = f"<B>{esc(name)}</B>" + (f"  &lt;- {esc(', '.join(marks))}" if marks else "")
    fill = style.ACTIVE_FILL if active else None
    rows = [row(cell(Html(head), bgcolor=style.HEADER))]
    for line in context_summary(m, name):
        rows.append(row(cell(line, align="left", bgcolor=fill)))
    colour = style.ACTIVE if marks else "black"
    return table(rows, border=2 if active else 1, color=colour, cellborder=0)
