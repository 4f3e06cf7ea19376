"""Role values: layouts per release, packing, diffs, the tracepoint-style rendering, eras."""

from __future__ import annotations

import pytest

from mmulib import LayoutError, UnknownReleaseError, decode, resolve
from mmulib.layouts import (
    EXT_ROLE_4_20,
    EXT_ROLE_5_10,
    EXT_ROLE_5_15,
    EXT_ROLE_5_19,
    PAGE_ROLE_4_18,
    PAGE_ROLE_5_17,
    PAGE_ROLE_5_19,
    PAGE_ROLE_6_14,
)
from mmulib.roles import CpuRole, Role


def offsets(layout) -> dict[str, tuple[int, int]]:
    return {f.name: (f.offset, f.width) for f in layout.named_fields}


def test_page_role_bit_positions_5_19() -> None:
    # union kvm_mmu_page_role, arch/x86/include/asm/kvm_host.h (5.19)
    assert offsets(PAGE_ROLE_5_19) == {
        "level": (0, 4), "has_4_byte_gpte": (4, 1), "quadrant": (5, 2), "direct": (7, 1),
        "access": (8, 3), "invalid": (11, 1), "efer_nx": (12, 1), "cr0_wp": (13, 1),
        "smep_andnot_wp": (14, 1), "smap_andnot_wp": (15, 1), "ad_disabled": (16, 1),
        "guest_mode": (17, 1), "passthrough": (18, 1), "smm": (24, 8)}


def test_is_mirror_is_bit_19_from_6_14() -> None:
    assert offsets(PAGE_ROLE_6_14)["is_mirror"] == (19, 1)
    assert not PAGE_ROLE_5_19.has("is_mirror")
    assert resolve("6.13").page is PAGE_ROLE_5_19 and resolve("6.14").page is PAGE_ROLE_6_14


def test_bit_4_and_12_names_per_era() -> None:
    names = {e: (resolve(e).page.names[1], resolve(e).page.field("level").offset)
             for e in ("4.18", "5.10", "5.15", "5.17")}
    assert names == {"4.18": ("cr4_pae", 0), "5.10": ("gpte_is_8_bytes", 0),
                     "5.15": ("gpte_is_8_bytes", 0), "5.17": ("has_4_byte_gpte", 0)}
    assert PAGE_ROLE_4_18.field("nxe").offset == 12
    assert PAGE_ROLE_5_17.field("efer_nx").offset == 12


def test_extended_role_layouts() -> None:
    assert list(offsets(EXT_ROLE_4_20)) == ["valid", "execonly", "cr0_pg", "cr4_pse", "cr4_pke",
                                            "cr4_smap", "cr4_smep", "cr4_la57"]
    assert offsets(EXT_ROLE_5_10)["maxphyaddr"] == (8, 6)
    assert offsets(EXT_ROLE_5_15)["efer_lma"] == (9, 1)
    assert offsets(EXT_ROLE_5_19) == {
        "valid": (0, 1), "execonly": (1, 1), "cr4_pse": (2, 1), "cr4_pke": (3, 1),
        "cr4_smap": (4, 1), "cr4_smep": (5, 1), "cr4_la57": (6, 1), "efer_lma": (7, 1)}
    assert resolve("4.19").ext is None


def test_pack_rejects_unknown_fields_and_overflow() -> None:
    with pytest.raises(LayoutError, match="no field 'passthrough'"):
        PAGE_ROLE_5_17.pack(passthrough=1)
    with pytest.raises(LayoutError, match="level is 4 bit"):
        PAGE_ROLE_5_19.pack(level=16)
    assert PAGE_ROLE_5_19.pack(level=4, direct=1, access=7, efer_nx=1, cr0_wp=1) == 0x3784


def test_padding_bits_are_rejected_with_the_era() -> None:
    with pytest.raises(LayoutError, match=r"padding or unused .*\(era 5.10\)"):
        decode(1 << 18, "5.10")
    assert decode(1 << 18, "5.19")[1].passthrough == 1


def test_role_fields_replace_and_diff() -> None:
    a = Role(PAGE_ROLE_5_19, 0x3784)
    b = a.replace(cr0_wp=0, smm=1)
    assert b.word == 0x1001784
    assert [(c.name, c.bits, c.old, c.new) for c in a.diff(b)] == [
        ("cr0_wp", "13", 1, 0), ("smm", "24-31", 0, 1)]
    with pytest.raises(AttributeError, match="no field 'nxe'"):
        _ = a.nxe


def test_cpu_role_as_u64_and_diff() -> None:
    base = Role(PAGE_ROLE_5_19, 0x3704)
    ext = Role(EXT_ROLE_5_19, 0x81)
    r = CpuRole(base, ext)
    assert r.as_u64 == 0x81_0000_3704
    r2 = CpuRole(base.replace(cr0_wp=0, smep_andnot_wp=1), ext.replace(cr4_smep=1))
    assert [str(c) for c in r.diff(r2)] == [
        "base.cr0_wp 1->0", "base.smep_andnot_wp 0->1", "ext.cr4_smep 0->1"]


@pytest.mark.parametrize(("kernel", "word", "text"), [
    # KVM_MMU_PAGE_PRINTK: level, gpte size, quadrant, direct, access, invalid, nxe, ad
    ("4.20", 0x1032794, "l4 pae q0 direct wux !nxe !ad | wp guest smm"),
    ("5.10", 0x3794, "l4 8-byte q0 direct wux nxe ad | wp"),
    ("5.19", 0x3712 | 1 << 5, "l2 4-byte q1 wux nxe ad | wp"),
    ("6.14", 0x80784, "l4 8-byte q0 direct wux !nxe ad | mirror"),
    ("6.4", 0x784 | 1 << 11, "l4 8-byte q0 direct wux invalid !nxe ad"),
])
def test_trace_rendering_matches_the_tracepoint_order(kernel: str, word: int, text: str) -> None:
    assert decode(word, kernel)[1].trace_str() == text


def test_listing_includes_padding_in_kernel_order() -> None:
    rows = Role(PAGE_ROLE_5_19, 0x3784).listing()
    assert rows[0] == ("level", "0-3", 4)
    assert rows[-2] == ("(pad)", "19-23", 0)
    assert rows[-1] == ("smm", "24-31", 0)


@pytest.mark.parametrize(("release", "era"), [
    ("4.18", "4.18"), ("v4.19.12", "4.19"), ("5.0", "4.20"), ("5.9", "4.20"), ("5.14", "5.10"),
    ("5.16", "5.15"), ("5.17-rc5", "5.17"), ("5.18.12", "5.18"), ("6.1", "5.19"),
    ("v6.6.47", "6.4"), ("6.13.7", "6.4"), ("6.14", "6.14"), ("6.17", "6.14"), ("6.19", "6.18"),
    ("7.1.5", "6.18")])
def test_release_resolves_to_newest_era_not_after_it(release: str, era: str) -> None:
    assert resolve(release).name == era


@pytest.mark.parametrize("bad", ["4.17", "banana", "6", ""])
def test_bad_release_strings_are_named(bad: str) -> None:
    with pytest.raises(UnknownReleaseError, match=repr(bad).replace("(", r"\(")):
        resolve(bad)
