"""The executor's pure parts: register prediction, CPUID read-back, refusal reasons."""

from __future__ import annotations

from mmulib.live.kvmapi import CpuidEntry
from mmulib.live.probe import _lacking, _predict, cpuid_diff
from mmulib.regs import GuestFeatures
from mmulib.sim.ops import parse_op

LONG = {"cr0": 0x80010011, "cr3": 0x102000, "cr4": 0x20, "efer": 0xD00}


def op(**kw):
    return parse_op(kw, 0)


def test_guest_writes_predict_the_register_they_write():
    assert _predict(LONG, op(op="mov_cr3", value=0x103000)) == {**LONG, "cr3": 0x103000}
    assert _predict(LONG, op(op="mov_cr4", value=0x30)) == {**LONG, "cr4": 0x30}


def test_wrmsr_efer_keeps_lma_which_is_read_only():
    assert _predict(LONG, op(op="wrmsr_efer", value=0x100))["efer"] == 0x500
    real = {"cr0": 0x11, "cr3": 0, "cr4": 0x20, "efer": 0}
    assert _predict(real, op(op="wrmsr_efer", value=0x500))["efer"] == 0x100


def test_mov_cr0_with_lme_turns_long_mode_on_and_off():
    pre = {"cr0": 0x11, "cr3": 0x102000, "cr4": 0x20, "efer": 0x100}
    assert _predict(pre, op(op="mov_cr0", value=0x80000011))["efer"] == 0x500
    assert _predict({**pre, "efer": 0x500}, op(op="mov_cr0", value=0x11))["efer"] == 0x100


def test_set_sregs_keeps_the_registers_it_does_not_name():
    assert _predict(LONG, op(op="set_sregs", cr3=0x104000)) == {**LONG, "cr3": 0x104000}
    assert _predict(LONG, op(op="run")) == LONG


def test_lacking_names_the_bits_reserved_only_for_want_of_a_feature():
    none = GuestFeatures(smep=False, smap=False, nx=False)
    assert _lacking(none, 0x300020, 0xD00) == (
        "CR4.SMAP, CR4.SMEP, EFER.NX needs a CPU feature that the guest's CPUID lacks (as KVM "
        "holds it after KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID)")
    assert _lacking(none, 0x20, 0x500) is None          # nothing asked that is missing
    assert _lacking(GuestFeatures(), 1 << 63, None) is None   # reserved anyway: not a feature


def test_cpuid_diff_lists_every_register_kvm_did_not_keep():
    given = [CpuidEntry(7, 0, 1, 0, 0x1800002, 0x104, 0), CpuidEntry(0xD, 1, 1, 0, 0, 0, 0),
             CpuidEntry(0x40000000, 0, 0, 1, 2, 3, 4)]
    held = [CpuidEntry(7, 0, 1, 0, 0xF1BF03AB, 0x104, 0), CpuidEntry(0xD, 1, 1, 7, 0, 0, 0)]
    assert cpuid_diff(given, held) == [
        "CPUID.(EAX=0x7,ECX=0).EBX: set 0x1800002, KVM holds 0xf1bf03ab",
        "CPUID.(EAX=0xd,ECX=1).EAX: set 0x0, KVM holds 0x7",
        "CPUID.(EAX=0x40000000,ECX=0).EAX: set 0x1, KVM holds nothing",
        "CPUID.(EAX=0x40000000,ECX=0).EBX: set 0x2, KVM holds nothing",
        "CPUID.(EAX=0x40000000,ECX=0).ECX: set 0x3, KVM holds nothing",
        "CPUID.(EAX=0x40000000,ECX=0).EDX: set 0x4, KVM holds nothing",
    ]
    assert cpuid_diff(held, held) == []
