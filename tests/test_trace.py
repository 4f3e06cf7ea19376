"""kvm_mmu_get_page lines: parsing the tracepoint's text, and clear errors for other lines."""

from __future__ import annotations

import pytest

from mmulib import decode
from mmulib.trace import TraceLineError, parse_get_page

REAL = ("qemu-system-x86-1695082 [012] ...1. 722267.552895: kvm_mmu_get_page: "
        "sp gen 0 gfn 14b600 l1 8-byte q0 direct wux nxe ad root 0 sync new")


def test_a_real_trace_line() -> None:
    r = parse_get_page(REAL)
    assert (r.gen, r.gfn, r.level, r.direct, r.access, r.invalid) == (0, 0x14B600, 1, True, 7,
                                                                        False)
    assert (r.efer_nx, r.ad_disabled, r.root_count, r.unsync, r.created) == (True, False, 0,
                                                                            False, True)
    assert r.role_text == "l1 8-byte q0 direct wux nxe ad"


@pytest.mark.parametrize(("kernel", "word"), [
    ("4.20", 0x1032794),          # l4 pae direct, !nxe !ad (4.x prints "pae", no size)
    ("5.10", 0x3794),             # gpte_is_8_bytes
    ("5.19", 0x3712 | 1 << 5),    # l2 4-byte q1
    ("6.4", 0x784 | 1 << 11),     # invalid, !nxe
    ("6.4", 0x10504),             # access "-u-" with ad_disabled
])
def test_the_role_text_is_what_role_trace_str_prints(kernel: str, word: int) -> None:
    role = decode(word, kernel)[1]
    printed = role.trace_str(gfn=0x42).split(" | ")[0]
    r = parse_get_page(f"kvm_mmu_get_page: sp gen 1 {printed} root 2 unsync existing")
    assert r.role_text == printed.removeprefix("gfn 42 ")
    assert (r.gfn, r.level, r.access, r.invalid) == (0x42, role.level, role.access, role.invalid)
    assert r.direct == bool(role.direct) and r.ad_disabled == bool(role.ad_disabled)
    assert (r.root_count, r.unsync, r.created) == (2, True, False)


@pytest.mark.parametrize("bad", [
    "kvm_mmu_sync_page: sp gen 0 gfn 1 l1",
    "kvm_mmu_get_page: sp gen 0 gfn 14b600 l1 8-byte q7 direct wux nxe ad root 0 sync new",
    "",
])
def test_other_lines_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(TraceLineError, match=r"not a kvm_mmu_get_page record: .*expected "
                                             r"kvm_mmu_get_page: sp gen"):
        parse_get_page(bad)
