"""Read ``kvm_mmu_get_page`` lines as the kernel's tracepoint prints them.

The tracepoint (``KVM_MMU_PAGE_PRINTK`` in ``arch/x86/kvm/mmu/mmutrace.h``) prints the
generation, the gfn, then part of the role: level, gpte size (``pae`` before 5.10), quadrant,
direct, access, invalid, NX and A/D; then the root count, sync state and created/existing.
:func:`parse_get_page` turns such a line (with or without the ``trace`` prefix of task, CPU and
timestamp) into a :class:`GetPageLine`; a line that does not have that shape raises
:class:`TraceLineError` naming the line and the expected form.  The role text it keeps is the
same as the prefix of :meth:`mmulib.roles.Role.trace_str`, so a line can be matched against
role words computed by mmulib.

>>> rec = parse_get_page("kvm_mmu_get_page: sp gen 0 gfn 14b600 l1 8-byte q0 direct wux nxe ad "
...                      "root 0 sync new")
>>> rec.gfn, rec.level, rec.created, rec.role_text
(1357312, 1, True, 'l1 8-byte q0 direct wux nxe ad')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GetPageLine", "TraceLineError", "parse_get_page", "EXPECTED"]

EXPECTED = ("kvm_mmu_get_page: sp gen <gen> gfn <hex> l<level> [<n>-byte | pae] q<quadrant> "
            "[direct] <access> [invalid] [!]nxe [!]ad root <count> sync|unsync new|existing")

_LINE = re.compile(
    r"sp gen (?P<gen>[0-9a-fA-F]+) gfn (?P<gfn>[0-9a-fA-F]+) "
    r"(?P<role>l(?P<level>\d+)(?: (?P<size>[48])-byte| pae)? q(?P<quadrant>[0-3])"
    r"(?P<direct> direct)? (?P<access>[-w][-u][-x])(?P<invalid> invalid)? "
    r"(?P<nx>!?)nxe (?P<ad>!?)ad) "
    r"root (?P<root_count>\d+) (?P<sync>sync|unsync)(?: (?P<created>new|existing))?\s*$")


class TraceLineError(ValueError):
    """A line that is not a ``kvm_mmu_get_page`` record."""


@dataclass(frozen=True)
class GetPageLine:
    """The fields one ``kvm_mmu_get_page`` line carries."""

    gen: int
    gfn: int
    level: int
    role_text: str  # the printed part of the role, comparable with Role.trace_str()
    direct: bool
    access: int
    invalid: bool
    efer_nx: bool
    ad_disabled: bool
    root_count: int
    unsync: bool
    created: bool | None  # None when the kernel's format has no new/existing word


def parse_get_page(line: str) -> GetPageLine:
    """Parse one ``kvm_mmu_get_page`` line; raise :class:`TraceLineError` if it is not one."""
    text = line.strip()
    if "kvm_mmu_get_page" in text:
        text = text.split("kvm_mmu_get_page:", 1)[-1].strip()
    m = _LINE.search(text)
    if m is None:
        raise TraceLineError(f"not a kvm_mmu_get_page record: {line.strip()!r} "
                             f"(expected {EXPECTED})")
    access = sum(bit for ch, bit in zip(m["access"], (2, 4, 1)) if ch != "-")
    created = None if m["created"] is None else m["created"] == "new"
    return GetPageLine(
        # 4.x prints the generation in hex (%lx), 5.x in decimal (%u); it is kept as printed
        # digits read in decimal when they can be, which is exact for every 5.x/6.x line.
        gen=int(m["gen"]) if m["gen"].isdigit() else int(m["gen"], 16),
        gfn=int(m["gfn"], 16), level=int(m["level"]), role_text=m["role"],
        direct=m["direct"] is not None, access=access, invalid=m["invalid"] is not None,
        efer_nx=m["nx"] == "", ad_disabled=m["ad"] == "!", root_count=int(m["root_count"]),
        unsync=m["sync"] == "unsync", created=created)
