"""Identity-mapped guest page tables in the four x86 formats, built as plain data.

A probe guest only needs its code to stay where it is whatever paging mode it is in, so every
address space built here maps ``[0, map_bytes)`` onto itself with 4 KiB pages.  4 KiB pages on
purpose: a guest large page is shadowed by a *direct* shadow page whose existence depends on
whether the host backs it with a huge page, while a 4 KiB guest page table is always shadowed
by exactly one indirect page.  That keeps the ``kvm_mmu_get_page`` sequence the same from run
to run.

Formats (SDM Vol. 3, 4.3 / 4.4 / 4.5):

==========  ====================================================  ==========  =============
Format      Levels (address bits indexing each table)             Entry size  Root at
==========  ====================================================  ==========  =============
``2level``  PD 31:22, PT 21:12                                    4 bytes     CR3[31:12]
``pae``     PDPT 31:30 (4 entries), PD 29:21, PT 20:12            8 bytes     CR3[31:5]
``4level``  PML4 47:39, PDPT 38:30, PD 29:21, PT 20:12            8 bytes     CR3[51:12]
``5level``  PML5 56:48, then as ``4level``                        8 bytes     CR3[51:12]
==========  ====================================================  ==========  =============

Entries are present, writable and supervisor-only, with Accessed (and Dirty, in leaves)
already set so that no walker ever writes to a table.  PAE PDPTEs carry only the present bit:
bits 1-2 and 5-8 of a PDPTE are reserved, and KVM's ``load_pdptrs`` refuses them.

>>> t = build_identity_map("pae", 0x100000, map_bytes=0x2000)
>>> [(hex(p.gpa), p.level, {i: hex(e) for i, e in p.entries.items()}) for p in t.pages[:2]]
[('0x100000', 3, {0: '0x101001', 1: '0x102001', 2: '0x103001', 3: '0x104001'}), \
('0x101000', 2, {0: '0x105023'})]
>>> {i: hex(e) for i, e in t.pages[5].entries.items()}
{0: '0x63', 1: '0x1063'}
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "FORMATS", "PTE_P", "PTE_RW", "PTE_US", "PTE_A", "PTE_D", "TablePage", "PageTables",
    "build_identity_map", "paging_mode", "table_root",
]

PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6
_NONLEAF = PTE_P | PTE_RW | PTE_A
_LEAF = PTE_P | PTE_RW | PTE_A | PTE_D
_PDPTE = PTE_P

FORMATS: dict[str, tuple[int, tuple[tuple[int, int, int], ...]]] = {
    "2level": (4, ((2, 22, 10), (1, 12, 10))),
    "pae": (8, ((3, 30, 2), (2, 21, 9), (1, 12, 9))),
    "4level": (8, ((4, 39, 9), (3, 30, 9), (2, 21, 9), (1, 12, 9))),
    "5level": (8, ((5, 48, 9), (4, 39, 9), (3, 30, 9), (2, 21, 9), (1, 12, 9))),
}
"""format -> (entry size, ((level, shift, index bits), ...) from the root down)."""

_X86_CR0_PG = 1 << 31
_X86_CR4_PAE = 1 << 5
_X86_CR4_LA57 = 1 << 12
_EFER_LME = 1 << 8
_EFER_LMA = 1 << 10


def paging_mode(cr0: int, cr4: int, efer: int) -> str | None:
    """The table format a vCPU with these registers walks, or None with paging off.

    Long mode counts as active when EFER.LMA is set or when EFER.LME and CR0.PG are both set
    (the state a guest's MOV to CR0 produces before KVM sets LMA).

    >>> paging_mode(0x80000011, 0x20, 0x500), paging_mode(0x80000011, 0, 0), paging_mode(0x11, 0, 0)
    ('4level', '2level', None)
    """
    if not cr0 & _X86_CR0_PG:
        return None
    if efer & _EFER_LMA or efer & _EFER_LME:
        return "5level" if cr4 & _X86_CR4_LA57 else "4level"
    return "pae" if cr4 & _X86_CR4_PAE else "2level"


def table_root(mode: str, cr3: int) -> int:
    """Guest-physical address of the root table that ``cr3`` names in ``mode``.

    >>> hex(table_root("pae", 0x103fe0)), hex(table_root("4level", 0x8000000000103018))
    ('0x103fe0', '0x103000')
    """
    if mode == "pae":
        return cr3 & 0xFFFFFFE0
    if mode == "2level":
        return cr3 & 0xFFFFF000
    return cr3 & 0x000FFFFFFFFFF000


@dataclass
class TablePage:
    """One guest page table: its address, its level (1 = PT) and its non-zero entries."""

    gpa: int
    level: int
    entry_size: int
    entries: dict[int, int] = field(default_factory=dict)
    size: int = 4096

    def to_bytes(self) -> bytes:
        fmt = "<I" if self.entry_size == 4 else "<Q"
        buf = bytearray(self.size)
        for index, entry in self.entries.items():
            struct.pack_into(fmt, buf, index * self.entry_size, entry)
        return bytes(buf)


@dataclass
class PageTables:
    """The tables of one address space, root first; ``root`` is what CR3 points at."""

    mode: str
    root: int
    pages: list[TablePage]

    def write(self, write: Callable[[int, bytes], None]) -> None:
        """Store every table through ``write(gpa, data)`` (e.g. ``GuestMemory.write``)."""
        for page in self.pages:
            write(page.gpa, page.to_bytes())


def build_identity_map(mode: str, root: int, map_bytes: int = 0x200000,
                       next_table: int | None = None) -> PageTables:
    """Tables in format ``mode`` mapping ``[0, map_bytes)`` onto itself with 4 KiB pages.

    Args:
        mode: one of :data:`FORMATS`.
        root: address of the root table (a page, or 32 bytes for the PAE PDPT).
        map_bytes: how much to map, a multiple of 4 KiB (at most 4 GiB in 32-bit formats).
        next_table: where the tables below the root go, one page each in allocation order;
            by default the pages right after the root's page.
    """
    try:
        entry_size, levels = FORMATS[mode]
    except KeyError:
        raise ValueError(f"unknown paging format {mode!r} (one of {sorted(FORMATS)})") from None
    if map_bytes <= 0 or map_bytes % 4096:
        raise ValueError(f"map_bytes must be a positive multiple of 4096, not {map_bytes}")
    if mode in ("2level", "pae") and map_bytes > 1 << 32:
        raise ValueError("a 32-bit format maps at most 4 GiB")
    cursor = (root & ~0xFFF) + 0x1000 if next_table is None else next_table

    def alloc(level: int) -> TablePage:
        nonlocal cursor
        page = TablePage(cursor, level, entry_size)
        cursor += 0x1000
        pages.append(page)
        by_gpa[page.gpa] = page
        return page

    root_page = TablePage(root, levels[0][0], entry_size, size=32 if mode == "pae" else 4096)
    pages = [root_page]
    by_gpa = {root_page.gpa & ~0xFFF: root_page}
    if mode == "pae":
        # All four PDPTEs present, each with its own page directory, as a booted 32-bit
        # PAE guest has them; directories beyond map_bytes stay empty.
        for i in range(4):
            root_page.entries[i] = alloc(2).gpa | _PDPTE
    for addr in range(0, map_bytes, 4096):
        table = root_page
        for level, shift, bits in levels[:-1]:
            index = (addr >> shift) & ((1 << bits) - 1)
            if index not in table.entries:
                flags = _PDPTE if mode == "pae" and level == 3 else _NONLEAF
                table.entries[index] = alloc(level - 1).gpa | flags
            child = table.entries[index] & ~0xFFF
            table = by_gpa[child]
        _, shift, bits = levels[-1]
        table.entries[(addr >> shift) & ((1 << bits) - 1)] = addr | _LEAF
    return PageTables(mode, root, pages)
