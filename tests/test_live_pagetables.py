"""Identity-mapped guest page tables and the probe's memory layout (no KVM needed)."""

from __future__ import annotations

import struct

import pytest

from mmulib.live.guest import MAP_BYTES, TableManager, plan_layout
from mmulib.live.pagetables import (
    FORMATS, PTE_A, PTE_D, PTE_P, PTE_RW, build_identity_map, paging_mode, table_root,
)

NONLEAF = PTE_P | PTE_RW | PTE_A          # 0x23
LEAF = NONLEAF | PTE_D                    # 0x63


def memory_of(tables, size: int = 0x400000) -> bytearray:
    mem = bytearray(size)

    def write(gpa: int, data: bytes) -> None:
        mem[gpa:gpa + len(data)] = data

    tables.write(write)
    return mem


def walk(mem: bytearray, mode: str, root: int, va: int) -> int | None:
    """A test-side page walk over the written bytes: the physical address, or None."""
    size, levels = FORMATS[mode]
    table = root
    for _, shift, bits in levels:
        index = (va >> shift) & ((1 << bits) - 1)
        entry = struct.unpack_from("<I" if size == 4 else "<Q", mem, table + index * size)[0]
        if not entry & PTE_P:
            return None
        table = entry & 0x000FFFFFFFFFF000
    return table | (va & 0xFFF)


def test_4level_tables_are_one_page_per_level_and_map_2mib_with_4k_pages():
    t = build_identity_map("4level", 0x100000)
    assert [(hex(p.gpa), p.level) for p in t.pages] == [
        ("0x100000", 4), ("0x101000", 3), ("0x102000", 2), ("0x103000", 1)]
    assert t.pages[0].entries == {0: 0x101000 | NONLEAF}
    assert t.pages[1].entries == {0: 0x102000 | NONLEAF}
    assert t.pages[2].entries == {0: 0x103000 | NONLEAF}
    assert t.pages[3].entries == {i: (i << 12) | LEAF for i in range(512)}


def test_5level_adds_a_pml5_on_top():
    t = build_identity_map("5level", 0x100000)
    assert [p.level for p in t.pages] == [5, 4, 3, 2, 1]
    assert t.pages[0].entries == {0: 0x101000 | NONLEAF}


def test_2level_tables_use_4_byte_entries():
    t = build_identity_map("2level", 0x100000)
    assert [(hex(p.gpa), p.level, p.entry_size) for p in t.pages] == [
        ("0x100000", 2, 4), ("0x101000", 1, 4)]
    raw = t.pages[0].to_bytes()
    assert len(raw) == 4096 and raw[:8] == bytes.fromhex("23101000 00000000")
    assert t.pages[1].to_bytes()[4:8] == struct.pack("<I", 0x1000 | LEAF)


def test_pae_has_four_present_pdptes_with_only_the_present_bit():
    t = build_identity_map("pae", 0x100000)
    root = t.pages[0]
    assert root.size == 32 and len(root.to_bytes()) == 32
    assert root.entries == {0: 0x101001, 1: 0x102001, 2: 0x103001, 3: 0x104001}
    assert [(hex(p.gpa), p.level, len(p.entries)) for p in t.pages[1:]] == [
        ("0x101000", 2, 1), ("0x102000", 2, 0), ("0x103000", 2, 0), ("0x104000", 2, 0),
        ("0x105000", 1, 512)]


def test_more_than_2mib_needs_more_page_tables():
    t = build_identity_map("4level", 0x200000, map_bytes=0x400000, next_table=0x300000)
    assert [(hex(p.gpa), p.level) for p in t.pages] == [
        ("0x200000", 4), ("0x300000", 3), ("0x301000", 2), ("0x302000", 1), ("0x303000", 1)]
    assert t.pages[2].entries == {0: 0x302000 | NONLEAF, 1: 0x303000 | NONLEAF}


@pytest.mark.parametrize("mode", sorted(FORMATS))
def test_every_format_maps_every_page_onto_itself(mode):
    root = 0x100000
    mem = memory_of(build_identity_map(mode, root, map_bytes=0x400000))
    for va in (0, 0x1000, 0x1234, 0x1FFFFF, 0x200000, 0x3FF000):
        assert walk(mem, mode, root, va) == va
    assert walk(mem, mode, root, 0x400000) is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown paging format 'pse'"):
        build_identity_map("pse", 0x1000)
    with pytest.raises(ValueError, match="multiple of 4096"):
        build_identity_map("4level", 0x1000, map_bytes=100)
    with pytest.raises(ValueError, match="at most 4 GiB"):
        build_identity_map("pae", 0x1000, map_bytes=8 << 30)


def test_paging_mode_and_table_root():
    assert paging_mode(0x11, 0x20, 0x500) is None
    assert paging_mode(0x80000011, 0x10, 0) == "2level"
    assert paging_mode(0x80000011, 0x20, 0x800) == "pae"
    assert paging_mode(0x80000011, 0x20, 0x100) == "4level"      # LME and PG: LMA to come
    assert paging_mode(0x80000011, 0x1020, 0x500) == "5level"
    assert table_root("2level", 0x102fff) == 0x102000
    assert table_root("pae", 0x102fff) == 0x102fe0
    assert table_root("5level", 0x8000000000102001) == 0x102000


def test_layout_puts_the_code_at_0x1000_and_the_tables_above_2mib():
    layout = plan_layout({0x102000, 0x103000}, 50)
    assert (layout.code, layout.table_area, layout.mem_size) == (0x1000, 0x200000, 0x600000)


def test_layout_moves_the_code_off_a_cr3_and_the_tables_above_high_roots():
    layout = plan_layout({0x1000, 0x2000, 0x300000}, 0x1800)
    assert (layout.code, layout.table_area, layout.mem_size) == (0x3000, 0x400000, 0x800000)


def test_layout_refuses_cr3_in_smram_or_above_1gib():
    with pytest.raises(ValueError, match="CR3 0x30000 is where the probe keeps"):
        plan_layout({0x30000}, 10)
    with pytest.raises(ValueError, match="CR3 0x40000000"):
        plan_layout({0x40000000}, 10)


def test_table_manager_rewrites_only_the_root_when_a_cr3_changes_format():
    writes: list[tuple[int, int]] = []
    tm = TableManager(lambda gpa, data: writes.append((gpa, len(data))), 0x200000, 0x600000)
    tm.ensure(0x11, 0x102000, 0, 0)                      # paging off: nothing to build
    assert writes == []
    tm.ensure(0x80010011, 0x102000, 0x20, 0x500)         # 4-level: root + 3 tables
    assert writes == [(0x102000, 4096), (0x200000, 4096), (0x201000, 4096), (0x202000, 4096)]
    writes.clear()
    tm.ensure(0x80010011, 0x102000, 0x20, 0xD00)         # same format: nothing to do
    assert writes == []
    tm.ensure(0x80010011, 0x102000, 0x20, 0)             # PAE at the same CR3: its PDs and
    assert writes[0] == (0x102000, 32)                   # PT in the pages after the PDPT
    assert [w[0] for w in writes[1:]] == [0x103000 + i * 0x1000 for i in range(5)]
    writes.clear()
    tm.ensure(0x80010011, 0x102000, 0x20, 0x500)         # back: the first subtree again
    assert [w[0] for w in writes] == [0x102000, 0x200000, 0x201000, 0x202000]
    assert tm.current == {0x102000: "4level"}
    assert MAP_BYTES == 0x200000


def test_pae_directories_are_where_the_model_looks_for_them():
    # The simulator names a PAE guest's roots by gfn = (CR3 >> 12) + 1 + i (README,
    # "Replaying a vCPU"), so the probe puts the four page directories there.
    writes: dict[int, bytes] = {}
    tm = TableManager(writes.__setitem__, 0x400000, 0x800000)
    tm.ensure(0x80000011, 0x10FFE0, 0x20, 0)
    pdpt = writes[0x10FFE0]
    assert [int.from_bytes(pdpt[8 * i:8 * i + 8], "little") for i in range(4)] == [
        ((0x10F + 1 + i) << 12) | 1 for i in range(4)]
    assert sorted(writes) == [0x10FFE0, 0x110000, 0x111000, 0x112000, 0x113000, 0x114000]


def test_layout_keeps_cr3_and_code_off_pae_directories():
    with pytest.raises(ValueError, match="CR3 0x104000 is where the PAE address space at "
                                         "0x102000 keeps its page directories"):
        plan_layout({0x102000, 0x104000}, 10, {0x102000})
    layout = plan_layout({0x1000}, 10, {0x1000})
    assert layout.code == 0x7000                  # after the PDPT page and its 5 tables
    assert plan_layout({0x1FF000}, 10, {0x1FF000}).table_area == 0x400000
