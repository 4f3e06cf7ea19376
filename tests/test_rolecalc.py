"""Stateful role behaviour of rolecalc: early returns and the 6.4 lazy CR0.WP refresh."""

from __future__ import annotations

import pytest

from mmulib.eras import resolve
from mmulib.rolecalc import Host, Inputs, MmuState, init_tdp, refresh_passthrough_bits

# Page-role bits (kvm_host.h, 5.19+ layout)
LEVEL4, DIRECT, ACC_ALL = 4, 1 << 7, 7 << 8
EFER_NX, CR0_WP, SMEP_ANDNOT_WP = 1 << 12, 1 << 13, 1 << 14
# Extended role (5.19+): valid, cr4_smep (bit 5), efer_lma (bit 7)
EXT_VALID, EXT_SMEP, EXT_LMA = 1, 1 << 5, 1 << 7

CR0_PE_ET, CR0_WP_BIT, CR0_PG = 0x11, 1 << 16, 1 << 31
CR4_PAE, CR4_SMEP = 1 << 5, 1 << 20
EFER_LME_LMA_NX = (1 << 8) | (1 << 10) | (1 << 11)

EPT = Host(tdp="ept")
LONG_MODE_SMEP = dict(cr4=CR4_PAE | CR4_SMEP, efer=EFER_LME_LMA_NX)


def l1(era: str, wp: bool) -> MmuState:
    cr0 = CR0_PE_ET | CR0_PG | (CR0_WP_BIT if wp else 0)
    ctx, rec = init_tdp(resolve(era), MmuState("root_mmu"), EPT, Inputs(cr0=cr0, **LONG_MODE_SMEP))
    assert rec.reinit
    return ctx


@pytest.mark.parametrize("era", ["6.4", "6.14", "6.18"])
def test_refresh_updates_only_cr0_wp_and_leaves_smep_andnot_wp_stale(era: str) -> None:
    ctx = l1(era, wp=True)
    # kvm_calc_cpu_role with WP=1, SMEP=1, 64-bit: smep_andnot_wp = SMEP && !WP = 0
    assert ctx.base == LEVEL4 | ACC_ALL | EFER_NX | CR0_WP
    new, changed = refresh_passthrough_bits(resolve(era), ctx, CR0_PE_ET | CR0_PG, tdp=True)
    assert changed
    # __kvm_mmu_refresh_passthrough_bits writes cpu_role.base.cr0_wp only: WP is now 0 but
    # smep_andnot_wp stays 0, although a full kvm_init_mmu would set it (SMEP && !WP).
    assert new.base == LEVEL4 | ACC_ALL | EFER_NX
    full = l1(era, wp=False)
    assert full.base == LEVEL4 | ACC_ALL | EFER_NX | SMEP_ANDNOT_WP
    assert new.base != full.base and new.ext == full.ext == EXT_VALID | EXT_SMEP | EXT_LMA
    # root_role is untouched: TDP roots force cr0_wp = 1.
    assert new.root_role == ctx.root_role == LEVEL4 | DIRECT | ACC_ALL | EFER_NX | CR0_WP


@pytest.mark.parametrize(("era", "tdp", "guest_mmu"), [
    ("5.19", True, False),   # no lazy refresh before 6.4
    ("6.4", False, False),   # shadow paging: CR0.WP always exits
    ("6.4", True, True),     # guest_mmu shadows nested EPT/NPT, which ignore CR0.WP
])
def test_refresh_does_nothing_where_the_kernel_skips_it(era: str, tdp: bool,
                                                          guest_mmu: bool) -> None:
    ctx = l1(era, wp=True)
    new, changed = refresh_passthrough_bits(resolve(era), ctx, CR0_PE_ET | CR0_PG, tdp=tdp,
                                            is_guest_mmu=guest_mmu)
    assert not changed and new == ctx


def test_refresh_is_a_no_op_when_wp_already_matches() -> None:
    ctx = l1("6.4", wp=True)
    new, changed = refresh_passthrough_bits(resolve("6.4"), ctx,
                                            CR0_PE_ET | CR0_PG | CR0_WP_BIT, tdp=True)
    assert not changed and new is ctx


@pytest.mark.parametrize(("era", "key_changes"), [("5.18", True), ("5.19", True)])
def test_wp_toggle_changes_the_early_return_key_under_tdp(era: str, key_changes: bool) -> None:
    # 5.18 mmu_role and 5.19 cpu_role both carry cr0_wp, so init_kvm_tdp_mmu re-initialises
    # after a WP flip; only 5.19's root_role stays the same.
    a, b = l1(era, wp=True), l1(era, wp=False)
    assert (a.as_u64 != b.as_u64) is key_changes
    if era == "5.19":
        assert a.root_role == b.root_role
    ctx, rec = init_tdp(resolve(era), a, EPT,
                        Inputs(cr0=CR0_PE_ET | CR0_PG | CR0_WP_BIT, **LONG_MODE_SMEP))
    assert not rec.reinit and ctx is a  # same state again: the kernel returns early
