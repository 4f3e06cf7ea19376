"""The role-unions view: the CPU-side role and the root role as bit tables, side by side.

Left: what KVM stores about the guest's paging mode in the context that
``vcpu->arch.mmu`` points at (``base_role`` in 4.18/4.19, ``mmu_role`` in
4.20-5.18, ``cpu_role`` from 5.19).  Right: the role of the pages KVM builds
for that context, the word a cached root is compared against
(``root_role`` from 5.19; before that, the root page's role as
``kvm_mmu_get_page`` computes it from ``mmu_role.base``, followed by the
fields older releases kept beside the role).

Every field is a row in kernel declaration order (field, bits, value).  Rows
that changed since the previous state are yellow and name the register bit
that changed them, so the 5.19 split shows at a glance: a CR0.WP flip under
TDP lights up the CPU side only on 5.19+, both sides on 5.18 and older.

From 6.4, with TDP, the guest may own CR0.WP (no VM exit) and KVM copies it
into ``cpu_role.base.cr0_wp`` lazily, at the next permission check
(``kvm_mmu_refresh_passthrough_bits``).  The table shows the value KVM will
use, marks it "lazy", and gives the stored value in a note.

Node ids are the kernel's names (``base_role``, ``mmu_role`` or ``cpu_role``;
``root_role``, or ``root_page_role`` before 5.19).  Each value cell has the id
``<node>.<part>.<field>`` (``cpu_role.base.cr0_wp``, ``root_role.cr0_wp``,
``root_page_role.extra.root_level``), which Graphviz writes into the SVG as
``<g id="a_cpu_role.base.cr0_wp">``, and the field's meaning as its tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..eras import Era
from ..regs import bit_names
from ..rolecalc import refresh_passthrough_bits, root_page_roles
from ..roles import FieldChange, Role
from ..sim.machine import Machine
from . import style
from .dot import Dot, Html, cell, esc, row, table

__all__ = ["RoleSide", "RoleView", "FIELD_DOC", "EXT_DOC", "role_view", "role_changes",
           "changed_inputs", "cause_of", "roles_dot"]

FIELD_DOC: dict[str, str] = {
    "level": "paging level of the table (0: guest paging off; roots are 4 or 5)",
    "cr4_pae": "4.x: guest PTEs are 8 bytes (CR4.PAE); forced 0 in direct pages",
    "gpte_is_8_bytes": "guest PTEs are 8 bytes (PAE or long mode); 1 in direct pages",
    "has_4_byte_gpte": "guest PTEs are 4 bytes (32-bit paging without PAE)",
    "quadrant": "which part of a 4-byte-gpte guest table this page shadows",
    "direct": "maps guest-physical memory directly (TDP, or guest paging off)",
    "access": "access the page grants (w u x; 7 = all)",
    "invalid": "zapped page: it never matches a wanted role",
    "nxe": "EFER.NX: the NX bit of guest PTEs is honoured",
    "efer_nx": "EFER.NX: the NX bit of guest PTEs is honoured",
    "cr0_wp": "CR0.WP: supervisor writes honour read-only PTEs",
    "smep_andnot_wp": "CR4.SMEP and not CR0.WP (needed by shadow paging)",
    "smap_andnot_wp": "CR4.SMAP and not CR0.WP (needed by shadow paging)",
    "ad_disabled": "accessed/dirty bits are not used in this page's entries",
    "guest_mode": "built while L2 runs (is_guest_mode)",
    "passthrough": "5-level NPT root over L1's 4-level NPT: no guest table behind it",
    "is_mirror": "TDX mirror root",
    "smm": "built in SMM; also selects the SMM memslot address space",
    "valid": "0 forces the next kvm_init_mmu to recompute the context",
    "execonly": "nested EPT: L1 allows execute-only pages",
    "cr0_pg": "CR0.PG: guest paging on",
    "cr4_pse": "CR4.PSE: 4 MiB pages in 32-bit paging",
    "cr4_pke": "CR4.PKE: protection keys (counted only with EFER.LMA)",
    "cr4_smap": "CR4.SMAP",
    "cr4_smep": "CR4.SMEP",
    "cr4_la57": "CR4.LA57: 5-level guest paging (counted only with EFER.LMA)",
    "efer_lma": "EFER.LMA: long mode active",
    "maxphyaddr": "guest MAXPHYADDR (CPUID 0x80000008)",
    "root_level": "depth of the guest's tables (mmu->root_level)",
    "shadow_root_level": "depth of KVM's tables (mmu->shadow_root_level)",
    "direct_map": "KVM's tables map guest-physical memory directly",
    "ept_ad": "EPT accessed/dirty bits in use",
    "nx": "mmu->nx: EFER.NX as the context saw it",
    "last_nonleaf_level": "lowest level whose entries can point to a table",
}
"""One line per field, shown as the cell's tooltip (wording from the glossary)."""

EXT_DOC: dict[str, str] = {"cr4_pae": "CR4.PAE: guest PTEs are 8 bytes"}
"""Where an extended-role field means something else than the page-role field of that name."""

# Register bits (and modes) whose change can change each field.
_SOURCES: dict[str, tuple[str, ...]] = {
    "level": ("CR0.PG", "CR4.PAE", "EFER.LMA", "CR4.LA57", "EFER.LME"),
    "cr4_pae": ("CR4.PAE", "CR0.PG"),
    "gpte_is_8_bytes": ("CR4.PAE", "CR0.PG"),
    "has_4_byte_gpte": ("CR4.PAE", "CR0.PG"),
    "direct": ("CR0.PG",),
    "nxe": ("EFER.NX",),
    "efer_nx": ("EFER.NX",),
    "nx": ("EFER.NX",),
    "cr0_wp": ("CR0.WP",),
    "smep_andnot_wp": ("CR4.SMEP", "CR0.WP"),
    "smap_andnot_wp": ("CR4.SMAP", "CR0.WP"),
    "guest_mode": ("guest mode",),
    "smm": ("SMM",),
    "cr0_pg": ("CR0.PG",),
    "cr4_pse": ("CR4.PSE",),
    "cr4_pke": ("CR4.PKE", "EFER.LMA"),
    "cr4_smap": ("CR4.SMAP",),
    "cr4_smep": ("CR4.SMEP",),
    "cr4_la57": ("CR4.LA57", "EFER.LMA"),
    "efer_lma": ("EFER.LMA",),
    "root_level": ("CR0.PG", "CR4.PAE", "EFER.LMA", "CR4.LA57"),
    "last_nonleaf_level": ("CR0.PG", "CR4.PAE", "EFER.LMA"),
}


@dataclass(frozen=True)
class RoleSide:
    """One side of the view: a named role union (``parts``) and fields kept beside it."""

    node: str  # DOT node id: base_role / mmu_role / cpu_role / root_page_role / root_role
    title: str
    parts: tuple[tuple[str, Role], ...]  # ("base", role), ("ext", role); ("", role) if alone
    extra: tuple[tuple[str, int], ...] = ()

    def values(self) -> dict[str, int]:
        """``"base.cr0_wp"`` -> value for every named field (and ``"extra.name"``)."""
        out = {}
        for part, role in self.parts:
            for name, value in role.fields.items():
                out[f"{part}.{name}" if part else name] = value
        for name, value in self.extra:
            out[f"extra.{name}"] = value
        return out


@dataclass(frozen=True)
class RoleView:
    """What the roles view shows for one machine state."""

    era: Era
    context: str  # the struct kvm_mmu that vcpu->arch.mmu points at
    cpu: RoleSide
    root: RoleSide
    lazy_wp: int | None = None  # stored cpu_role.base.cr0_wp when KVM has not caught up yet


def _extra(era: Era, ctx: object) -> tuple[tuple[str, int], ...]:
    """The role-related members older releases kept beside the role (gone in 5.19)."""
    names = ["root_level", "shadow_root_level", "direct_map", "ept_ad"]
    if era.version < (5, 15):
        names += ["nx", "last_nonleaf_level"]
    return tuple((n, int(getattr(ctx, n))) for n in names)


def role_view(m: Machine) -> RoleView:
    """The CPU-side role and the root role of ``vcpu->arch.mmu`` in machine ``m``."""
    era = m.era
    name = m.mmu
    state = m.ctx[name].roles
    lazy = None
    if m.host.tdp != "none":
        fresh, stale = refresh_passthrough_bits(era, state, m.cr0, tdp=True,
                                                is_guest_mmu=name == "guest_mmu")
        if stale:
            lazy = era.page.get(state.base, "cr0_wp")
            state = fresh
    side = era.cpu_side_name
    base = Role(era.page, state.base)
    if era.ext is None:
        cpu = RoleSide(side, f"{side} (union kvm_mmu_page_role)", (("", base),))
    else:
        union = era.combined_c_name
        cpu = RoleSide(side, f"{side} (union {union})",
                       (("base", base), ("ext", Role(era.ext, state.ext))))
    if era.has_cpu_role:
        root = RoleSide("root_role", "root_role (union kvm_mmu_page_role)",
                        (("", Role(era.page, state.root_role)),))
    else:
        level, direct = state.shadow_root_level, state.direct_map
        pages = root_page_roles(era, state, level=level, direct=direct,
                                guest_level=state.root_level)
        page_level, word = pages[0]
        src = f"{side}.base" if era.ext is not None else side
        root = RoleSide("root_page_role",
                        f"role of the root page (level {page_level}, from {src})",
                        (("", Role(era.page, word)),), _extra(era, state))
    return RoleView(era, name, cpu, root, lazy)


def role_changes(prev: RoleView | None, cur: RoleView) -> tuple[FieldChange, ...]:
    """Fields that differ from ``prev`` on either side, as ``FieldChange`` records.

    ``union`` is the side's node plus the part (``"cpu_role.base"``,
    ``"root_role"``, ``"root_page_role.extra"``).  No changes are reported
    across eras (the layouts differ).
    """
    if prev is None or prev.era != cur.era:
        return ()
    out: list[FieldChange] = []
    for old, new in ((prev.cpu, cur.cpu), (prev.root, cur.root)):
        a, b = old.values(), new.values()
        bits = _bits(new)
        for key, value in b.items():
            if a.get(key, value) != value:
                part, _, field = key.rpartition(".")
                union = f"{new.node}.{part}" if part else new.node
                out.append(FieldChange(union, field, bits.get(key, ""), a[key], value))
    return tuple(out)


def _bits(side: RoleSide) -> dict[str, str]:
    out = {}
    for part, role in side.parts:
        for f in role.layout.named_fields:
            out[f"{part}.{f.name}" if part else f.name] = f.bits
    return out


def changed_inputs(prev: Machine | None, m: Machine) -> tuple[str, ...]:
    """Register bits and modes that differ between two states, lowest bit first.

    >>> from mmulib.sim import Machine
    >>> a = Machine("6.4"); b = Machine("6.4"); b.cr0 ^= 1 << 16; b.smm = True
    >>> changed_inputs(a, b)
    ('CR0.WP', 'SMM')
    """
    if prev is None:
        return ()
    out: list[str] = []
    for reg, a, b in (("CR0", prev.cr0, m.cr0), ("CR4", prev.cr4, m.cr4),
                      ("EFER", prev.efer, m.efer)):
        out.extend(f"{reg}.{n}" for n in reversed(bit_names(reg, a ^ b)))
    if prev.smm != m.smm:
        out.append("SMM")
    if prev.guest_mode != m.guest_mode:
        out.append("guest mode")
    if prev.mmu != m.mmu:
        out.append(f"mmu -> {m.mmu}")
    return tuple(out)


def cause_of(field: str, inputs: tuple[str, ...], fallback: str = "") -> str:
    """Which changed input explains a changed field (``"CR0.WP"``), else ``fallback``.

    >>> cause_of("smep_andnot_wp", ("CR0.WP", "CR4.PGE"))
    'CR0.WP'
    >>> cause_of("valid", ("CR0.WP",), "CPUID update")
    'CPUID update'
    """
    hits = [s for s in _SOURCES.get(field, ()) if s in inputs]
    if hits:
        return ", ".join(hits)
    for general in ("CR0.PG", "SMM", "guest mode"):
        if general in inputs:
            return general
    switched = [s for s in inputs if s.startswith("mmu -> ")]
    return switched[0] if switched else fallback


def roles_dot(m: Machine, prev: Machine | None = None, *, cause: str = "") -> str:
    """DOT of the roles view of ``m``; fields changed since ``prev`` highlighted.

    ``cause`` names the step for changes no register bit explains (e.g.
    ``"CPUID update"``).  ``prev`` of another era highlights nothing.
    """
    view = role_view(m)
    before = role_view(prev) if prev is not None and prev.era == m.era else None
    changes = {(c.union, c.name): c for c in role_changes(before, view)}
    inputs = changed_inputs(prev, m)
    title = esc(f"{m.era.name}: vcpu->arch.mmu = &{view.context}")
    notes = "".join(f"<BR/>{n}" for n in _notes(view))
    g = Dot("roles", rankdir="LR", nodesep=0.25, ranksep=0.3, fontname=style.FONT,
            fontsize=11, labelloc="t", label=Html(f"<B>{title}</B>{notes}"))
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=10)
    for side in (view.cpu, view.root):
        lazy = view.lazy_wp if side is view.cpu else None
        g.node(side.node, label=_side_table(side, changes, inputs, cause, lazy))
    g.edge(view.cpu.node, view.root.node, style="invis")
    return g.source


def _notes(view: RoleView) -> list[str]:
    out = []
    if view.lazy_wp is not None:
        out.append(f"lazy: KVM still stores {view.cpu.node}.base.cr0_wp = {view.lazy_wp}; "
                   "kvm_mmu_refresh_passthrough_bits copies the guest-owned CR0.WP<BR/>"
                   "at the next permission check (6.4+ with TDP)")
    if not view.era.has_cpu_role:
        src = view.cpu.node + (".base" if len(view.cpu.parts) > 1 else "")
        out.append(f"{view.era.name} has no root_role: root pages take {src} with "
                   "level, direct and access set")
    return out


def _side_table(side: RoleSide, changes: dict[tuple[str, str], FieldChange],
                inputs: tuple[str, ...], cause: str, lazy_wp: int | None) -> Html:
    rows = [row(cell(Html(f"<B>{esc(side.title)}</B>"), colspan=4, bgcolor=style.HEADER))]
    if len(side.parts) > 1:
        total = side.parts[0][1].word | (side.parts[1][1].word << 32)
        rows.append(row(cell(f"as_u64 {total:#018x}", colspan=4)))
    for part, role in side.parts:
        union = f"{side.node}.{part}" if part else side.node
        head = f"{part}: {role.layout.c_name} {role.hex}" if part else \
            f"{role.layout.c_name} {role.hex}"
        rows.append(row(cell(head, colspan=4, align="left", bgcolor=style.MUTED)))
        rows.append(row(*(cell(Html(f"<I>{h}</I>")) for h in ("field", "bits", "value",
                                                              "changed by"))))
        for field, bits, value in role.listing():
            if field == "(pad)":
                grey = [Html(f'<FONT COLOR="{style.INVALID}">{esc(t)}</FONT>')
                        for t in (field, bits, value)]
                rows.append(row(cell(grey[0], align="left"), cell(grey[1]), cell(grey[2]),
                                cell("")))
                continue
            lazy = lazy_wp if part == "base" and field == "cr0_wp" else None
            rows.append(_field_row(union, part, field, bits, value, changes, inputs, cause,
                                   lazy))
    if side.extra:
        rows.append(row(cell("beside the role in struct kvm_mmu", colspan=4, align="left",
                             bgcolor=style.MUTED)))
        for field, value in side.extra:
            rows.append(_field_row(f"{side.node}.extra", "extra", field, "", value, changes,
                                   inputs, cause, None))
    return table(rows)


def _field_row(union: str, part: str, field: str, bits: str, value: int,
               changes: dict[tuple[str, str], FieldChange], inputs: tuple[str, ...],
               cause: str, lazy: int | None) -> str:
    node = union.split(".")[0]
    cell_id = f"{node}.{part}.{field}" if part else f"{node}.{field}"
    change = changes.get((union, field))
    colour = style.CHANGED if change else (style.LAZY if lazy is not None else None)
    why = ""
    if change is not None:
        why = f"{cause_of(field, inputs, cause) or '?'} (was {change.old})"
    shown = f"{value} lazy" if lazy is not None else str(value)
    tip = (EXT_DOC if part == "ext" else {}).get(field) or FIELD_DOC.get(field, field)
    return row(cell(field, align="left", bgcolor=colour), cell(bits, bgcolor=colour),
               cell(shown, id=cell_id, href=style.CELL_HREF, tooltip=f"{field}: {tip}",
                    bgcolor=colour),
               cell(why, align="left", bgcolor=colour))
