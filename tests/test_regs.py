"""Tests for mmulib.regs: bit names, role bits, KVM_SET_SREGS checks and guest writes.

Expected values are written out as literals taken from the kernel trees (processor-flags.h,
msr-index.h, kvm_host.h, mmu.h, x86.c), not recomputed with mmulib's own tables.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmulib import regs
from mmulib.eras import ERAS, UnknownReleaseError
from mmulib.regs import (
    CR0_BITS,
    CR0_RESERVED_BITS,
    CR4_BITS,
    CR4_RESERVED_BITS,
    EFER_BITS,
    ROLE_BITS_BY_ERA,
    CpuRegs,
    GuestFeatures,
    InvalidStateError,
    bit_names,
    check_state,
    describe,
    effective_efer,
    from_names,
    guest_cr4_reserved_bits,
    guest_efer_reserved_bits,
    guest_write_cr0,
    guest_write_cr4,
    guest_write_efer,
    role_bits,
)

# Handy literal values.
PE, ET, NE, WP, NW, CD, PG = 0x1, 0x10, 0x20, 0x10000, 0x20000000, 0x40000000, 0x80000000
PSE, PAE, PGE, LA57, VMXE, SMXE = 0x10, 0x20, 0x80, 0x1000, 0x2000, 0x4000
PCIDE, OSXSAVE, SMEP, SMAP, PKE, CET = 0x20000, 0x40000, 0x100000, 0x200000, 0x400000, 0x800000
SCE, LME, LMA, NX, SVME, LMSLE, FFXSR, TCE, AUTOIBRS = (
    0x1, 0x100, 0x400, 0x800, 0x1000, 0x2000, 0x4000, 0x8000, 0x200000)

NONE = GuestFeatures(**{f.name: False for f in dataclasses.fields(GuestFeatures)})

# Typical valid states: (cr0, cr4, efer, cr3).
REAL_MODE_RESET = (0x60000010, 0, 0, 0)                   # CD|NW|ET after INIT
PROTECTED_NO_PAGING = (PE | ET, 0, 0, 0)
LEGACY_PAGING = (PG | WP | ET | PE, PSE | PGE, 0, 0x1000)
PAE_PAGING = (PG | WP | ET | PE, PAE | PGE, NX, 0xFFFFF000)
LONG_MODE = (PG | WP | NE | ET | PE, PAE | PGE | PCIDE | OSXSAVE | SMEP | SMAP,
             SCE | LME | LMA | NX, 0x1000)
LONG_MODE_LA57 = (PG | WP | ET | PE, PAE | LA57 | PKE, LME | LMA | NX, (1 << 48) - 0x1000)


def raises(fn, *args, **kwargs) -> InvalidStateError:
    with pytest.raises(InvalidStateError) as info:
        fn(*args, **kwargs)
    return info.value


def assert_error(exc: InvalidStateError, register: str, value: int, bits: int, rule: str,
                 reason: str) -> None:
    assert (exc.register, exc.value, exc.bits, exc.rule, exc.reason) == (
        register, value, bits, rule, reason)
    assert str(exc) == f"{register}={value:#x}: {reason} ({rule})"


# --- Bit values and names ---


def test_cr0_bits_are_the_architectural_values():
    assert CR0_BITS == {"PE": 0x1, "MP": 0x2, "EM": 0x4, "TS": 0x8, "ET": 0x10, "NE": 0x20,
                        "WP": 0x10000, "AM": 0x40000, "NW": 0x20000000, "CD": 0x40000000,
                        "PG": 0x80000000}


def test_cr4_bits_are_the_architectural_values():
    assert {name: mask.bit_length() - 1 for name, mask in CR4_BITS.items()} == {
        "VME": 0, "PVI": 1, "TSD": 2, "DE": 3, "PSE": 4, "PAE": 5, "MCE": 6, "PGE": 7, "PCE": 8,
        "OSFXSR": 9, "OSXMMEXCPT": 10, "UMIP": 11, "LA57": 12, "VMXE": 13, "SMXE": 14,
        "FSGSBASE": 16, "PCIDE": 17, "OSXSAVE": 18, "KL": 19, "SMEP": 20, "SMAP": 21,
        "PKE": 22, "CET": 23, "PKS": 24, "LASS": 27, "LAM_SUP": 28, "FRED": 32}


def test_efer_bits_are_the_architectural_values():
    assert EFER_BITS == {"SCE": 0x1, "LME": 0x100, "LMA": 0x400, "NX": 0x800, "SVME": 0x1000,
                         "LMSLE": 0x2000, "FFXSR": 0x4000, "TCE": 0x8000, "AUTOIBRS": 0x200000}


@pytest.mark.parametrize("table", [CR0_BITS, CR4_BITS, EFER_BITS])
def test_every_named_mask_is_one_distinct_bit(table):
    assert all(mask & (mask - 1) == 0 and mask for mask in table.values())
    assert len(set(table.values())) == len(table)


def test_module_constants_match_the_tables():
    for prefix, table in (("X86_CR0_", CR0_BITS), ("X86_CR4_", CR4_BITS), ("EFER_", EFER_BITS)):
        for name, mask in table.items():
            assert getattr(regs, prefix + name) == mask
            assert prefix + name in regs.__all__


def test_all_lists_only_existing_names():
    assert sorted(set(regs.__all__)) == sorted(regs.__all__)
    for name in regs.__all__:
        assert hasattr(regs, name), name


def test_reserved_masks_are_the_kernel_values():
    # kvm_host.h: CR0_RESERVED_BITS (all trees), CR4_RESERVED_BITS (6.19 tree, with LAM_SUP, CET)
    assert CR0_RESERVED_BITS == 0xFFFFFFFF1FFAFFC0
    assert CR4_RESERVED_BITS == 0xFFFFFFFFEF08C000


def test_describe_matches_the_documented_example():
    assert describe("CR0", 0x80010033) == "0x80010033 = PG|WP|NE|ET|MP|PE"


def test_describe_zero_and_unnamed_bits():
    assert describe("EFER", 0) == "0x0 = (none)"
    assert describe("CR4", 0x8000 | PAE) == "0x8020 = bit15|PAE"
    assert describe("CR4", 1 << 63) == "0x8000000000000000 = bit63"


def test_bit_names_orders_high_to_low_and_names_unknown_bits():
    assert bit_names("EFER", 0xD01) == ["NX", "LMA", "LME", "SCE"]
    assert bit_names("CR0", PG | 0x40) == ["PG", "bit6"]
    assert bit_names("CR4", 1 << 32) == ["FRED"]
    assert bit_names("cr4", 0) == []


def test_register_name_is_case_insensitive():
    assert bit_names("efer", NX) == bit_names("EFER", NX) == ["NX"]
    assert from_names("Cr0", ["pg", "PE"]) == PG | PE


@pytest.mark.parametrize("register", ["CR3", "CR8", "XCR0", ""])
def test_unknown_register_is_a_value_error_listing_the_choices(register):
    with pytest.raises(ValueError, match=r"unknown register: .*\['CR0', 'CR4', 'EFER'\]"):
        bit_names(register, 0)
    with pytest.raises(ValueError, match="unknown register"):
        role_bits(register, (6, 4))


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_values_outside_64_bits_are_refused(value):
    with pytest.raises(ValueError, match="not a 64-bit unsigned value"):
        bit_names("CR0", value)


@pytest.mark.parametrize("value", [True, 1.0, "0x1", None])
def test_non_int_values_are_type_errors(value):
    with pytest.raises(TypeError):
        bit_names("CR0", value)


def test_from_names_accepts_bitn_and_refuses_unknown_names():
    assert from_names("CR4", ["PAE", "PGE", "bit15"]) == 0x80A0
    assert from_names("EFER", []) == 0
    for bad in ["XYZ", "bit64", "bit", "bit-1"]:
        with pytest.raises(ValueError, match="unknown EFER bit"):
            from_names("EFER", [bad])


@pytest.mark.parametrize("register", ["CR0", "CR4", "EFER"])
@given(value=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_bit_names_round_trips(register, value):
    names = bit_names(register, value)
    assert from_names(register, names) == value
    assert len(names) == bin(value).count("1")
    assert describe(register, value) == f"{value:#x} = " + ("|".join(names) or "(none)")


# --- Role bits ---

CR4_ROLE_OLD = 0x7000B0      # PGE|PSE|PAE|SMEP|SMAP|PKE   (kvm_set_cr4 pdptr_bits / mmu_role_bits)
CR4_ROLE_5_15 = 0x7010B0     # ... | LA57                  (v5.15.55 mmu.h)
CR4_ROLE_NEW = 0x701030      # PSE|PAE|LA57|SMEP|SMAP|PKE  (5.17-rc5 ... 6.19 mmu.h)


@pytest.mark.parametrize(("era", "cr4", "efer"), [
    ((4, 18), CR4_ROLE_OLD, NX), ((4, 19), CR4_ROLE_OLD, NX), ((4, 20), CR4_ROLE_OLD, NX),
    ((5, 10), CR4_ROLE_OLD, NX), ((5, 15), CR4_ROLE_5_15, NX),
    ((5, 17), CR4_ROLE_NEW, NX), ((5, 18), CR4_ROLE_NEW, LME | NX),
    ((5, 19), CR4_ROLE_NEW, LME | NX), ((6, 4), CR4_ROLE_NEW, LME | NX),
    ((6, 14), CR4_ROLE_NEW, LME | NX), ((6, 18), CR4_ROLE_NEW, LME | NX),
])
def test_role_bits_per_modelled_era(era, cr4, efer):
    assert role_bits("CR0", era) == PG | WP
    assert role_bits("CR4", era) == cr4
    assert role_bits("EFER", era) == efer


def test_role_bits_cover_exactly_the_modelled_eras():
    assert list(ROLE_BITS_BY_ERA) == [era.name for era in ERAS]
    assert all(set(row) == {"CR0", "CR4", "EFER"} for row in ROLE_BITS_BY_ERA.values())


def test_role_bits_resolve_other_releases_to_the_era_before():
    assert role_bits("CR4", (5, 14)) == CR4_ROLE_OLD     # -> 5.10
    assert role_bits("EFER", (6, 1)) == LME | NX         # -> 5.19
    assert role_bits("cr4", (7, 1)) == CR4_ROLE_NEW      # -> 6.18
    with pytest.raises(UnknownReleaseError):
        role_bits("CR0", (4, 17))


@pytest.mark.parametrize("bad", ["5.19", (5,), (5, 19, 0), (5.0, 19), (True, 1), None])
def test_role_bits_wants_a_major_minor_tuple(bad):
    with pytest.raises(TypeError, match="era_version"):
        role_bits("CR0", bad)


def test_newest_role_masks_are_the_mmu_h_values():
    assert regs.KVM_MMU_CR0_ROLE_BITS == 0x80010000
    assert regs.KVM_MMU_CR4_ROLE_BITS == CR4_ROLE_NEW
    assert regs.KVM_MMU_EFER_ROLE_BITS == 0x900


# --- The error type ---


def test_error_message_matches_the_documented_example():
    exc = raises(check_state, cr0=0x80000000, cr4=0, efer=0)
    assert str(exc) == (
        "CR0=0x80000000: PG set without PE (kvm_is_valid_cr0: paging requires protected mode)")
    assert (exc.register, exc.value, exc.bits) == ("CR0", 0x80000000, PG)
    assert exc.rule == "kvm_is_valid_cr0: paging requires protected mode"
    assert exc.reason == "PG set without PE"


def test_error_is_a_value_error_and_pickles():
    exc = raises(check_state, cr0=0x80000000, cr4=0, efer=0)
    assert isinstance(exc, ValueError)
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is InvalidStateError
    assert (clone.register, clone.value, clone.bits, clone.rule, clone.reason, str(clone)) == (
        exc.register, exc.value, exc.bits, exc.rule, exc.reason, str(exc))


# --- Guest features and reserved masks ---


def test_default_features_have_everything_but_the_host_only_lmsle():
    feats = GuestFeatures()
    assert all(getattr(feats, f.name) for f in dataclasses.fields(feats) if f.name != "lmsle")
    assert feats.lmsle is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        feats.nx = False  # type: ignore[misc]


def test_guest_cr4_reserved_bits_default_is_the_kvm_mask():
    assert guest_cr4_reserved_bits() == CR4_RESERVED_BITS


def test_guest_cr4_reserved_bits_without_features():
    # __cr4_reserved_bits gates OSXSAVE SMEP SMAP FSGSBASE PKE LA57 UMIP VMXE PCIDE LAM_SUP CET
    gated = 0x40000 | 0x100000 | 0x200000 | 0x10000 | 0x400000 | 0x1000 | 0x800 | 0x2000 \
        | 0x20000 | 0x10000000 | 0x800000
    assert guest_cr4_reserved_bits(NONE) == CR4_RESERVED_BITS | gated
    # never reserved by CPUID: VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT
    assert guest_cr4_reserved_bits(NONE) & 0x7FF == 0


def test_cet_is_reserved_only_without_both_shstk_and_ibt():
    assert not guest_cr4_reserved_bits(dataclasses.replace(NONE, shstk=True)) & CET
    assert not guest_cr4_reserved_bits(dataclasses.replace(NONE, ibt=True)) & CET
    assert guest_cr4_reserved_bits(NONE) & CET


def test_guest_efer_reserved_bits():
    allowed = SCE | LME | LMA | NX | FFXSR | SVME | AUTOIBRS
    assert guest_efer_reserved_bits() == ((1 << 64) - 1) & ~allowed
    assert guest_efer_reserved_bits(GuestFeatures(lmsle=True)) == ((1 << 64) - 1) & ~(
        allowed | LMSLE)
    assert guest_efer_reserved_bits(NONE) == ((1 << 64) - 1) & ~SCE
    assert guest_efer_reserved_bits() & TCE


# --- check_state: accepted states ---


@pytest.mark.parametrize("state", [REAL_MODE_RESET, PROTECTED_NO_PAGING, LEGACY_PAGING,
                                   PAE_PAGING, LONG_MODE, LONG_MODE_LA57])
def test_typical_states_are_valid(state):
    cr0, cr4, efer, cr3 = state
    assert check_state(cr0, cr4, efer, cr3) is None


def test_minimal_cpu_accepts_legacy_states():
    for cr0, cr4, efer, cr3 in (REAL_MODE_RESET, PROTECTED_NO_PAGING, LEGACY_PAGING):
        check_state(cr0, cr4, efer, cr3, features=NONE)
    check_state(PG | PE, PAE, 0, 0, features=NONE)


def test_low_reserved_cr0_bits_pass_kvm_set_sregs():
    check_state(PE | ET | 0x40 | 0x8000, 0, 0)


def test_nw_with_cd_is_valid():
    check_state(NW | CD | ET, 0, 0)


def test_la57_and_pke_outside_long_mode_are_valid():
    check_state(PG | PE, PAE | LA57 | PKE, NX)


def test_lme_without_paging_is_valid():
    check_state(PE, PAE, LME)


def test_cs_l_in_long_mode_is_valid():
    cr0, cr4, efer, cr3 = LONG_MODE
    check_state(cr0, cr4, efer, cr3, cs_l=True)


def test_vectors_states_are_all_valid():
    """Every register state of the kernel-computed role vectors passes."""
    path = Path(__file__).parent / "data" / "kernel-roles-sample.jsonl.gz"
    with gzip.open(path, "rt") as f:
        states = {(r["regs"]["cr0"], r["regs"]["cr4"], r["regs"]["efer"])
                  for r in map(json.loads, f)}
    assert len(states) > 100
    for cr0, cr4, efer in sorted(states):
        check_state(cr0, cr4, efer)


# --- check_state: kvm_is_valid_sregs ---


def test_long_mode_needs_pae():
    exc = raises(check_state, PG | PE, 0, LME | LMA)
    assert_error(exc, "CR4", 0, PAE, "kvm_is_valid_sregs: EFER.LME with CR0.PG requires CR4.PAE",
                 "PAE clear while EFER.LME and CR0.PG are set")


def test_long_mode_needs_lma():
    exc = raises(check_state, PG | PE, PAE, LME | NX)
    assert_error(exc, "EFER", LME | NX, LMA,
                 "kvm_is_valid_sregs: EFER.LME with CR0.PG requires EFER.LMA",
                 "LMA clear while LME and CR0.PG are set")


@pytest.mark.parametrize(("cr0", "efer"), [(PE, LMA), (PE, LME | LMA), (PG | PE, LMA)])
def test_lma_needs_lme_and_paging(cr0, efer):
    exc = raises(check_state, cr0, PAE, efer)
    assert_error(exc, "EFER", efer, LMA,
                 "kvm_is_valid_sregs: EFER.LMA requires EFER.LME and CR0.PG",
                 "LMA set without both LME and CR0.PG")


def test_cs_l_outside_long_mode_is_invalid():
    exc = raises(check_state, PG | PE, PAE, NX, cs_l=True)
    assert_error(exc, "EFER", NX, LMA, "kvm_is_valid_sregs: a 64-bit code segment needs long mode",
                 "CS.L=1 while LMA is clear")


def test_cr3_at_maxphyaddr_is_invalid_in_long_mode():
    cr0, cr4, efer, _ = LONG_MODE
    check_state(cr0, cr4, efer, (1 << 48) - 0x1000)
    exc = raises(check_state, cr0, cr4, efer, 1 << 48)
    assert_error(exc, "CR3", 1 << 48, 1 << 48,
                 "kvm_is_valid_sregs: CR3 must be a legal GPA in long mode",
                 "bit 48 set at or above MAXPHYADDR=48")


def test_cr3_illegal_bits_are_all_reported():
    cr0, cr4, efer, _ = LONG_MODE
    cr3 = (1 << 51) | (1 << 40) | 0x1000
    exc = raises(check_state, cr0, cr4, efer, cr3, maxphyaddr=36)
    assert exc.bits == (1 << 51) | (1 << 40)
    assert exc.reason == "bits 51:40 set at or above MAXPHYADDR=36"


@pytest.mark.parametrize("maxphyaddr", [36, 39, 46, 52])
def test_cr3_limit_follows_maxphyaddr(maxphyaddr):
    cr0, cr4, efer, _ = LONG_MODE
    check_state(cr0, cr4, efer, (1 << maxphyaddr) - 0x1000, maxphyaddr=maxphyaddr)
    if maxphyaddr < 52:
        exc = raises(check_state, cr0, cr4, efer, 1 << maxphyaddr, maxphyaddr=maxphyaddr)
        assert exc.bits == 1 << maxphyaddr


def test_cr3_lam_bits_are_legal_only_with_lam():
    cr0, cr4, efer, _ = LONG_MODE
    lam_bits = (1 << 61) | (1 << 62)
    check_state(cr0, cr4, efer, lam_bits | 0x1000)
    no_lam = dataclasses.replace(GuestFeatures(), lam=False)
    exc = raises(check_state, cr0, cr4, efer, lam_bits | 0x1000, no_lam)
    assert exc.bits == lam_bits
    exc = raises(check_state, cr0, cr4, efer, (1 << 63) | 0x1000)   # never an address bit
    assert exc.bits == 1 << 63


def test_cr3_is_not_checked_outside_long_mode():
    check_state(PG | PE, PAE, 0, 1 << 60)
    check_state(PE, PAE, LME, 1 << 60)


# --- check_state: kvm_is_valid_cr4 ---


@pytest.mark.parametrize(("bit", "name"), [(SMXE, "SMXE"), (0x8000, "bit15"), (1 << 19, "KL"),
                                           (1 << 24, "PKS"), (1 << 27, "LASS"),
                                           (1 << 32, "FRED"), (1 << 63, "bit63")])
def test_cr4_reserved_bits_are_refused(bit, name):
    exc = raises(check_state, PE, bit, 0)
    assert_error(exc, "CR4", bit, bit, "__kvm_is_valid_cr4: CR4_RESERVED_BITS may never be set",
                 f"reserved bits {name} set")


def test_cr4_reserved_bits_are_all_named():
    exc = raises(check_state, PE, SMXE | 0x8000 | PAE, 0)
    assert exc.bits == SMXE | 0x8000
    assert exc.reason == "reserved bits bit15|SMXE set"


CR4_GATED = [(0x40000, "xsave", "OSXSAVE"), (0x100000, "smep", "SMEP"),
             (0x200000, "smap", "SMAP"), (0x10000, "fsgsbase", "FSGSBASE"),
             (0x400000, "pku", "PKE"), (0x1000, "la57", "LA57"), (0x800, "umip", "UMIP"),
             (0x2000, "vmx", "VMXE"), (0x20000, "pcid", "PCIDE"),
             (0x10000000, "lam", "LAM_SUP")]


@pytest.mark.parametrize(("bit", "feature", "name"), CR4_GATED)
def test_cr4_bits_need_their_cpuid_feature(bit, feature, name):
    cr0, cr4, efer, cr3 = LONG_MODE
    cr4 = (cr4 & ~LA57) | bit
    check_state(cr0, cr4, efer, cr3)
    feats = dataclasses.replace(GuestFeatures(), **{feature: False})
    exc = raises(check_state, cr0, cr4, efer, cr3, feats)
    assert_error(exc, "CR4", cr4, bit,
                 "__kvm_is_valid_cr4: a CPUID-gated bit needs its feature (__cr4_reserved_bits)",
                 f"{name} set but guest CPUID lacks {feature}")


def test_cet_needs_shstk_or_ibt():
    cr0, cr4, efer, cr3 = LONG_MODE
    for feats in (dataclasses.replace(GuestFeatures(), shstk=False),
                  dataclasses.replace(GuestFeatures(), ibt=False)):
        check_state(cr0, cr4 | CET, efer, cr3, feats)
    feats = dataclasses.replace(GuestFeatures(), shstk=False, ibt=False)
    exc = raises(check_state, cr0, cr4 | CET, efer, cr3, feats)
    assert exc.bits == CET
    assert exc.reason == "CET set but guest CPUID lacks shstk or ibt"


def test_several_missing_features_are_all_named():
    feats = dataclasses.replace(GuestFeatures(), la57=False, pku=False)
    exc = raises(check_state, PG | PE, PAE | LA57 | PKE, 0, 0, feats)
    assert exc.bits == LA57 | PKE
    assert exc.reason == "PKE|LA57 set but guest CPUID lacks pku, la57"


# --- check_state: kvm_is_valid_cr0 ---


@pytest.mark.parametrize(("cr0", "names"), [((1 << 32) | PE, "bit32"),
                                            ((1 << 63) | (1 << 40), "bit63|bit40")])
def test_cr0_high_bits_are_refused(cr0, names):
    exc = raises(check_state, cr0, 0, 0)
    assert_error(exc, "CR0", cr0, cr0 & ~0xFFFFFFFF,
                 "kvm_is_valid_cr0: CR0 bits 63:32 are reserved", f"reserved high bits {names} set")


def test_nw_without_cd_is_refused():
    exc = raises(check_state, NW | ET | PE, 0, 0)
    assert_error(exc, "CR0", NW | ET | PE, NW, "kvm_is_valid_cr0: NW requires CD",
                 "NW set without CD")


# --- check_state: EFER (kvm_valid_efer) ---

SREGS_TAIL = " (a WRMSR rule; KVM_SET_SREGS does not check EFER)"


@pytest.mark.parametrize(("bit", "name"), [(TCE, "TCE"), (LMSLE, "LMSLE"), (0x2, "bit1"),
                                           (0x200, "bit9"), (1 << 40, "bit40")])
def test_efer_reserved_bits_are_refused(bit, name):
    exc = raises(check_state, PE, 0, bit)
    assert_error(exc, "EFER", bit, bit,
                 "kvm_valid_efer: efer_reserved_bits may never be set" + SREGS_TAIL,
                 f"reserved bits {name} set")


def test_lmsle_is_allowed_when_the_host_lets_it_through():
    check_state(PE, 0, LMSLE, features=GuestFeatures(lmsle=True))


@pytest.mark.parametrize(("bit", "feature", "name"), [
    (NX, "nx", "NX"), (SVME, "svm", "SVME"), (FFXSR, "fxsr_opt", "FFXSR"),
    (AUTOIBRS, "autoibrs", "AUTOIBRS"), (LME, "lm", "LME")])
def test_efer_bits_need_their_cpuid_feature(bit, feature, name):
    check_state(PE, 0, bit)
    feats = dataclasses.replace(GuestFeatures(), **{feature: False})
    exc = raises(check_state, PE, 0, bit, 0, feats)
    assert_error(exc, "EFER", bit, bit,
                 "__kvm_valid_efer: a CPUID-gated bit needs its feature" + SREGS_TAIL,
                 f"{name} set but guest CPUID lacks {feature}")


def test_long_mode_without_lm_names_lme_and_lma():
    cr0, cr4, efer, cr3 = LONG_MODE
    exc = raises(check_state, cr0, cr4, efer, cr3, dataclasses.replace(GuestFeatures(), lm=False))
    assert exc.bits == LME | LMA
    assert exc.reason == "LMA|LME set but guest CPUID lacks lm"


# --- check_state: invariants of the MOV-CR4 rules ---


def test_pcide_needs_lma():
    exc = raises(check_state, PG | PE, PAE | PCIDE, 0)
    assert_error(exc, "CR4", PAE | PCIDE, PCIDE,
                 "kvm_set_cr4: MOV-CR4 rule, PCIDE can only be set in long mode "
                 "(KVM_SET_SREGS does not check it)", "PCIDE set while EFER.LMA is clear")
    assert "MOV-CR4" in exc.rule


def test_cet_needs_wp():
    exc = raises(check_state, PG | PE, CET, 0)
    assert_error(exc, "CR4", CET, CET,
                 "kvm_set_cr4: MOV-CR4 rule, CET requires CR0.WP (KVM_SET_SREGS does not check it)",
                 "CET set while CR0.WP is clear")
    check_state(PG | WP | PE, CET, 0)


# --- check_state: order and argument checking ---


def test_rules_are_applied_in_kernel_order():
    # kvm_is_valid_sregs, then kvm_is_valid_cr4, then kvm_is_valid_cr0, then EFER, then MOV-CR4
    assert raises(check_state, PG, SMXE, LME).register == "CR4"               # PAE, sregs
    assert raises(check_state, PG, SMXE, LME).bits == PAE
    assert raises(check_state, PG, SMXE, 0).bits == SMXE                      # CR4 before CR0
    assert raises(check_state, PG, PCIDE, TCE).bits == PG                     # CR0 before EFER
    assert raises(check_state, PG | PE, PCIDE, TCE).bits == TCE               # EFER before PCIDE
    assert raises(check_state, PG | PE, PCIDE | CET, 0).bits == PCIDE


@pytest.mark.parametrize("maxphyaddr", [31, 53, 64, True, 48.0])
def test_maxphyaddr_must_be_32_to_52(maxphyaddr):
    with pytest.raises(ValueError, match="maxphyaddr"):
        check_state(PE, 0, 0, maxphyaddr=maxphyaddr)


@pytest.mark.parametrize("which", ["cr0", "cr4", "efer", "cr3"])
def test_check_state_refuses_non_u64(which):
    args = {"cr0": 0, "cr4": 0, "efer": 0, "cr3": 0}
    with pytest.raises(ValueError, match=f"{which.upper()} value"):
        check_state(**{**args, which: -1})


# --- effective_efer ---


@pytest.mark.parametrize("pg", [0, PG])
@pytest.mark.parametrize("lme", [0, LME])
@pytest.mark.parametrize("lma", [0, LMA])
def test_effective_efer_lma_is_lme_and_pg(pg, lme, lma):
    out = effective_efer(pg | PE, SCE | NX | lme | lma)
    assert out == SCE | NX | lme | (LMA if lme and pg else 0)


@given(cr0=st.integers(0, (1 << 64) - 1), efer=st.integers(0, (1 << 64) - 1))
def test_effective_efer_only_touches_lma(cr0, efer):
    out = effective_efer(cr0, efer)
    assert out & ~LMA == efer & ~LMA
    assert bool(out & LMA) == bool(efer & LME and cr0 & PG)


# --- guest_write_cr0 ---


def regs_of(state, cs_l=False) -> CpuRegs:
    cr0, cr4, efer, cr3 = state
    return CpuRegs(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer, cs_l=cs_l)


def test_cpu_regs_predicates():
    s = regs_of(LONG_MODE, cs_l=True)
    assert (s.is_paging, s.is_pae, s.is_long_mode, s.is_64_bit_mode) == (True, True, True, True)
    s = regs_of(LONG_MODE)
    assert s.is_64_bit_mode is False
    s = regs_of(PROTECTED_NO_PAGING, cs_l=True)
    assert (s.is_paging, s.is_pae, s.is_long_mode, s.is_64_bit_mode) == (False,) * 4
    with pytest.raises(ValueError, match="CR3 value"):
        CpuRegs(cr0=0, cr3=1 << 64, cr4=0, efer=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cr0 = 0  # type: ignore[misc]


def test_cr0_write_forces_et_and_drops_low_reserved_bits():
    s = regs_of(PROTECTED_NO_PAGING)
    assert guest_write_cr0(s, PE) == PE | ET
    assert guest_write_cr0(s, PE | 0x40 | 0x0FFA0000) == PE | ET
    assert guest_write_cr0(s, 0xFFFFFFFF) == 0xE005003F


@pytest.mark.parametrize(("new", "bits", "rule", "reason"), [
    ((1 << 32) | PE, 1 << 32, "kvm_is_valid_cr0: CR0 bits 63:32 are reserved",
     "reserved high bits bit32 set"),
    (NW | PE, NW, "kvm_is_valid_cr0: NW requires CD", "NW set without CD"),
    (PG, PG, "kvm_is_valid_cr0: paging requires protected mode", "PG set without PE"),
])
def test_cr0_write_validity(new, bits, rule, reason):
    exc = raises(guest_write_cr0, regs_of(PROTECTED_NO_PAGING), new)
    assert_error(exc, "CR0", new, bits, rule, reason)


def test_cr0_write_activates_long_mode_with_pae():
    s = CpuRegs(cr0=PE | ET, cr3=0x1000, cr4=PAE, efer=LME | NX)
    new = guest_write_cr0(s, PG | WP | PE)
    assert new == PG | WP | ET | PE
    assert effective_efer(new, s.efer) == LME | LMA | NX
    check_state(new, s.cr4, effective_efer(new, s.efer), s.cr3)


def test_cr0_write_activating_long_mode_without_pae_is_refused():
    s = CpuRegs(cr0=PE | ET, cr3=0, cr4=PSE, efer=LME)
    exc = raises(guest_write_cr0, s, PG | PE)
    assert_error(exc, "CR0", PG | PE, PG, "kvm_set_cr0: activating long mode requires CR4.PAE",
                 "PG set with EFER.LME while CR4.PAE is clear")


def test_cr0_write_activating_long_mode_with_cs_l_is_refused():
    s = CpuRegs(cr0=PE | ET, cr3=0, cr4=PAE, efer=LME, cs_l=True)
    exc = raises(guest_write_cr0, s, PG | PE)
    assert_error(exc, "CR0", PG | PE, PG, "kvm_set_cr0: activating long mode requires CS.L=0",
                 "PG set with EFER.LME while CS.L=1")


def test_cr0_write_legacy_paging_needs_no_pae():
    s = regs_of(PROTECTED_NO_PAGING)
    assert guest_write_cr0(s, PG | PE) == PG | ET | PE
    assert effective_efer(PG | ET | PE, s.efer) == 0


def test_cr0_write_leaving_long_mode_from_compatibility_mode():
    cr0, cr4, efer, cr3 = LONG_MODE
    s = CpuRegs(cr0=cr0, cr3=cr3, cr4=cr4 & ~PCIDE, efer=efer)
    new = guest_write_cr0(s, cr0 & ~PG)
    assert new == cr0 & ~PG
    assert effective_efer(new, s.efer) == efer & ~LMA
    check_state(new, s.cr4, effective_efer(new, s.efer), s.cr3)


def test_cr0_write_clearing_pg_in_64_bit_mode_is_refused():
    cr0, cr4, efer, cr3 = LONG_MODE
    s = CpuRegs(cr0=cr0, cr3=cr3, cr4=cr4 & ~PCIDE, efer=efer, cs_l=True)
    exc = raises(guest_write_cr0, s, cr0 & ~PG)
    assert_error(exc, "CR0", cr0 & ~PG, PG,
                 "kvm_set_cr0: paging cannot be turned off in 64-bit mode",
                 "PG clear while in 64-bit mode")


def test_cr0_write_clearing_pg_with_pcide_is_refused():
    cr0, cr4, efer, cr3 = LONG_MODE
    exc = raises(guest_write_cr0, regs_of(LONG_MODE), cr0 & ~PG)
    assert_error(exc, "CR0", cr0 & ~PG, PG,
                 "kvm_set_cr0: paging cannot be turned off with CR4.PCIDE",
                 "PG clear while CR4.PCIDE is set")


def test_cr0_write_wp_toggle_and_cet():
    cr0, cr4, efer, cr3 = LONG_MODE
    assert guest_write_cr0(regs_of(LONG_MODE), cr0 & ~WP) == cr0 & ~WP
    s = CpuRegs(cr0=cr0, cr3=cr3, cr4=cr4 | CET, efer=efer)
    exc = raises(guest_write_cr0, s, cr0 & ~WP)
    assert_error(exc, "CR0", cr0 & ~WP, WP,
                 "kvm_set_cr0: WP cannot be cleared while CR4.CET is set",
                 "WP clear while CR4.CET is set")
    assert guest_write_cr0(s, cr0) == cr0


# --- guest_write_cr4 ---


def test_cr4_write_returns_the_value_unchanged():
    s = regs_of(LONG_MODE)
    new = s.cr4 | 0x7FF | 0x10000 | 0x800 | 0x2000 | 0x400000 | 0x10000000
    assert guest_write_cr4(s, new) == new


def test_cr4_write_reserved_and_feature_bits():
    s = regs_of(PROTECTED_NO_PAGING)
    exc = raises(guest_write_cr4, s, SMXE)
    assert (exc.register, exc.value, exc.bits) == ("CR4", SMXE, SMXE)
    assert exc.rule == "__kvm_is_valid_cr4: CR4_RESERVED_BITS may never be set"
    exc = raises(guest_write_cr4, s, LA57, dataclasses.replace(GuestFeatures(), la57=False))
    assert (exc.bits, exc.reason) == (LA57, "LA57 set but guest CPUID lacks la57")


def test_cr4_write_clearing_pae_in_long_mode_is_refused():
    s = regs_of(LONG_MODE)
    exc = raises(guest_write_cr4, s, s.cr4 & ~PAE)
    assert_error(exc, "CR4", s.cr4 & ~PAE, PAE, "kvm_set_cr4: long mode requires CR4.PAE",
                 "PAE clear while EFER.LMA is set")


@pytest.mark.parametrize(("state", "was"), [(LONG_MODE, 0), (LONG_MODE_LA57, 1)])
def test_cr4_write_toggling_la57_in_long_mode_is_refused(state, was):
    s = regs_of(state)
    exc = raises(guest_write_cr4, s, s.cr4 ^ LA57)
    assert_error(exc, "CR4", s.cr4 ^ LA57, LA57, "kvm_set_cr4: LA57 cannot change in long mode",
                 f"LA57 toggled (was {was}) while EFER.LMA is set")
    assert guest_write_cr4(s, s.cr4 ^ PGE) == s.cr4 ^ PGE      # LA57 kept: fine


def test_cr4_write_outside_long_mode_may_toggle_pae_and_la57():
    s = regs_of(PAE_PAGING)
    assert guest_write_cr4(s, PSE) == PSE
    assert guest_write_cr4(s, s.cr4 | LA57) == s.cr4 | LA57


def test_cr4_write_setting_pcide():
    cr0, cr4, efer, _ = LONG_MODE
    s = CpuRegs(cr0=cr0, cr3=0x1000, cr4=cr4 & ~PCIDE, efer=efer)
    assert guest_write_cr4(s, s.cr4 | PCIDE) == s.cr4 | PCIDE
    exc = raises(guest_write_cr4, dataclasses.replace(s, cr3=0x1005), s.cr4 | PCIDE)
    assert_error(exc, "CR4", s.cr4 | PCIDE, PCIDE,
                 "kvm_set_cr4: PCIDE can only be set with CR3[11:0]=0",
                 "PCIDE set while CR3[11:0]=0x5")
    exc = raises(guest_write_cr4, regs_of(PAE_PAGING), PAE | PCIDE)
    assert_error(exc, "CR4", PAE | PCIDE, PCIDE, "kvm_set_cr4: PCIDE can only be set in long mode",
                 "PCIDE set while EFER.LMA is clear")
    no_pcid = dataclasses.replace(GuestFeatures(), pcid=False)
    exc = raises(guest_write_cr4, s, s.cr4 | PCIDE, no_pcid)
    assert exc.reason == "PCIDE set but guest CPUID lacks pcid"


def test_cr4_write_keeping_pcide_ignores_the_pcid_in_cr3():
    s = dataclasses.replace(regs_of(LONG_MODE), cr3=0x1005)
    assert guest_write_cr4(s, s.cr4 | SMEP) == s.cr4 | SMEP


def test_cr4_write_cet_needs_wp():
    cr0, cr4, efer, cr3 = LONG_MODE
    assert guest_write_cr4(regs_of(LONG_MODE), cr4 | CET) == cr4 | CET
    s = CpuRegs(cr0=cr0 & ~WP, cr3=cr3, cr4=cr4, efer=efer)
    exc = raises(guest_write_cr4, s, cr4 | CET)
    assert_error(exc, "CR4", cr4 | CET, CET, "kvm_set_cr4: CET requires CR0.WP",
                 "CET set while CR0.WP is clear")


# --- guest_write_efer ---


def test_efer_write_lma_is_read_only():
    s = regs_of(PROTECTED_NO_PAGING)
    assert guest_write_efer(s, LME | LMA) == LME
    s = regs_of(LONG_MODE)
    assert guest_write_efer(s, LME | NX) == LME | LMA | NX


def test_efer_write_reserved_bits():
    exc = raises(guest_write_efer, regs_of(PROTECTED_NO_PAGING), TCE | SCE)
    assert_error(exc, "EFER", TCE | SCE, TCE, "set_efer: efer_reserved_bits may never be set",
                 "reserved bits TCE set")


def test_efer_write_feature_bits():
    feats = dataclasses.replace(GuestFeatures(), nx=False)
    exc = raises(guest_write_efer, regs_of(PROTECTED_NO_PAGING), NX, feats)
    assert_error(exc, "EFER", NX, NX, "__kvm_valid_efer: a CPUID-gated bit needs its feature",
                 "NX set but guest CPUID lacks nx")


def test_efer_write_written_lma_needs_lm_even_though_it_is_ignored():
    feats = dataclasses.replace(GuestFeatures(), lm=False)
    exc = raises(guest_write_efer, regs_of(PROTECTED_NO_PAGING), LMA, feats)
    assert exc.bits == LMA


@pytest.mark.parametrize("state", [PAE_PAGING, LONG_MODE])
def test_efer_write_toggling_lme_with_paging_is_refused(state):
    s = regs_of(state)
    new = s.efer ^ LME
    exc = raises(guest_write_efer, s, new)
    assert_error(exc, "EFER", new, LME, "set_efer: LME cannot change while CR0.PG is set",
                 f"LME toggled (was {int(bool(s.efer & LME))}) while CR0.PG is set")


def test_efer_write_nx_toggle_with_paging_is_fine():
    s = regs_of(LONG_MODE)
    assert guest_write_efer(s, s.efer & ~NX) == s.efer & ~NX


# --- A boot, and writes keep states valid ---


def test_boot_to_long_mode_with_pcid_and_5_level_paging():
    s = CpuRegs(cr0=0x60000010, cr3=0, cr4=0, efer=0)
    steps = [
        ("cr0", 0x11),                       # protected mode, caches on
        ("cr4", PAE | LA57 | PGE),
        ("cr3", 0x9000),
        ("efer", LME | NX | SCE),
        ("cr0", PG | WP | NE | ET | PE),    # activate long mode
        ("cr4", PAE | LA57 | PGE | PCIDE | SMEP | SMAP),
    ]
    for reg, value in steps:
        if reg == "cr0":
            cr0 = guest_write_cr0(s, value)
            s = dataclasses.replace(s, cr0=cr0, efer=effective_efer(cr0, s.efer))
        elif reg == "cr4":
            s = dataclasses.replace(s, cr4=guest_write_cr4(s, value))
        elif reg == "efer":
            s = dataclasses.replace(s, efer=guest_write_efer(s, value))
        else:
            s = dataclasses.replace(s, cr3=value)
        check_state(s.cr0, s.cr4, s.efer, s.cr3)
    assert s == CpuRegs(cr0=0x80010031, cr3=0x9000, cr4=0x3210A0, efer=0xD01)


CR0_POOL = [PE, ET, NE, WP, NW, CD, PG]
CR4_POOL = [PSE, PAE, PGE, LA57, PCIDE, SMEP, SMAP, PKE, CET, OSXSAVE]
EFER_POOL = [SCE, LME, LMA, NX]


def _combo(pool):
    return st.lists(st.sampled_from(pool), unique=True).map(lambda bits: sum(bits))


def _repair(cr0: int, cr4: int, efer: int) -> tuple[int, int, int]:
    """Turn any combination into a valid state by the rules (so the rules get tested)."""
    if cr0 & PG:
        cr0 |= PE
    if cr0 & NW:
        cr0 |= CD
    if efer & LME and cr0 & PG:
        cr4 |= PAE
    efer = effective_efer(cr0, efer)
    if not efer & LMA:
        cr4 &= ~PCIDE
    if cr4 & CET:
        cr0 |= WP
    return cr0, cr4, efer


@given(cr0=_combo(CR0_POOL), cr4=_combo(CR4_POOL), efer=_combo(EFER_POOL),
       which=st.sampled_from(["cr0", "cr4", "efer"]),
       new=st.tuples(_combo(CR0_POOL), _combo(CR4_POOL), _combo(EFER_POOL)))
def test_an_accepted_write_always_leaves_a_valid_state(cr0, cr4, efer, which, new):
    cr0, cr4, efer = _repair(cr0, cr4, efer)
    check_state(cr0, cr4, efer, 0x1000)
    s = CpuRegs(cr0=cr0, cr3=0x1000, cr4=cr4, efer=efer)
    try:
        if which == "cr0":
            out = guest_write_cr0(s, new[0])
            s = dataclasses.replace(s, cr0=out, efer=effective_efer(out, s.efer))
        elif which == "cr4":
            s = dataclasses.replace(s, cr4=guest_write_cr4(s, new[1]))
        else:
            s = dataclasses.replace(s, efer=guest_write_efer(s, new[2]))
    except InvalidStateError as exc:
        assert exc.register == which.upper()
        assert str(exc).startswith(f"{which.upper()}={exc.value:#x}: ")
        return
    check_state(s.cr0, s.cr4, s.efer, s.cr3)
