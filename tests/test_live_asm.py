"""The probe guest's instructions, byte for byte (Intel SDM Vol. 2; no KVM needed)."""

from __future__ import annotations

import pytest

from mmulib.live.asm import ENCODINGS, REGS, Asm
from mmulib.live.guest import (
    SMM_MARK, STEP_PORT, GuestStep, build_program, code_bits, flat_segments, marker, smm_handler,
)


def hexcode(a: Asm) -> str:
    return a.code.hex(" ")


@pytest.mark.parametrize(("reg", "first"), [("eax", "b8"), ("ecx", "b9"), ("edx", "ba"),
                                            ("ebx", "bb"), ("edi", "bf")])
def test_mov_r32_imm32_is_b8_plus_register_then_little_endian_immediate(reg, first):
    assert hexcode(Asm(32).mov_imm32(reg, 0x80010033)) == f"{first} 33 00 01 80"


def test_mov_r32_imm32_in_16_bit_code_needs_the_operand_size_prefix():
    assert hexcode(Asm(16).mov_imm32("eax", 0x11)) == "66 b8 11 00 00 00"


def test_mov_r64_imm64_is_rex_w_b8_plus_register():
    assert hexcode(Asm(64).mov_imm64("eax", 0x123456789)) == "48 b8 89 67 45 23 01 00 00 00"


def test_mov_r64_imm64_exists_only_in_64_bit_code():
    with pytest.raises(ValueError, match="only in 64-bit code"):
        Asm(32).mov_imm64("eax", 1)


def test_mov_imm_picks_the_32_bit_form_when_the_value_fits():
    assert hexcode(Asm(64).mov_imm("ecx", 0xC0000080)) == "b9 80 00 00 c0"
    assert hexcode(Asm(64).mov_imm("ecx", 1 << 32)) == "48 b9 00 00 00 00 01 00 00 00"
    with pytest.raises(ValueError, match="does not fit in 32 bits"):
        Asm(64).mov_imm32("eax", 1 << 32)


@pytest.mark.parametrize(("cr", "reg", "modrm"), [(0, "eax", "c0"), (3, "eax", "d8"),
                                                  (4, "eax", "e0"), (3, "ebx", "db"),
                                                  (0, "edx", "c2")])
def test_mov_to_cr_is_0f_22_with_mod_11_reg_cr_rm_gpr(cr, reg, modrm):
    assert hexcode(Asm(64).mov_to_cr(cr, reg)) == f"0f 22 {modrm}"
    # the same bytes in every mode: the register width follows the mode, not a prefix
    assert Asm(16).mov_to_cr(cr, reg).code == Asm(64).mov_to_cr(cr, reg).code


def test_mov_from_cr_is_0f_20():
    assert hexcode(Asm(32).mov_from_cr("eax", 0)) == "0f 20 c0"
    assert hexcode(Asm(32).mov_from_cr("ebx", 4)) == "0f 20 e3"


def test_single_instructions():
    assert hexcode(Asm(64).wrmsr()) == "0f 30"
    assert hexcode(Asm(64).rdmsr()) == "0f 32"
    assert hexcode(Asm(64).out(0x10)) == "e6 10"
    assert hexcode(Asm(64).mov_al(0x42)) == "b0 42"
    assert hexcode(Asm(64).hlt()) == "f4"
    assert hexcode(Asm(16).rsm()) == "0f aa"


def test_a_countdown_loop_is_dec_ecx_then_jnz_back():
    a = Asm(64).mov_imm32("ecx", 3).label("top").dec("ecx").jnz("top")
    assert hexcode(a) == "b9 03 00 00 00 ff c9 75 fc"
    # in 16-bit code the 32-bit dec needs 66, so the branch reaches one byte further back
    assert hexcode(Asm(16).label("top").dec("ecx").jnz("top")) == "66 ff c9 75 fb"


def test_jmp_to_itself_is_eb_fe():
    assert hexcode(Asm(32).label("here").jmp("here")) == "eb fe"


def test_bad_operands_are_refused():
    with pytest.raises(ValueError, match="unknown register 'rax'"):
        Asm(64).mov_imm32("rax", 1)
    with pytest.raises(ValueError, match="cr5 is not one of"):
        Asm(64).mov_to_cr(5, "eax")
    with pytest.raises(ValueError, match="does not fit in imm8"):
        Asm(64).out(0x100)
    with pytest.raises(ValueError, match="bits must be 16, 32 or 64"):
        Asm(8)
    a = Asm(32).label("far")
    a.code += bytes(200)
    with pytest.raises(ValueError, match="beyond rel8"):
        a.jmp("far")


def test_the_encoding_table_lists_every_emitter_and_the_register_numbers():
    assert set(ENCODINGS) == {"mov r32, imm32", "mov r64, imm64", "mov al, imm8", "mov crN, r",
                              "mov r, crN", "wrmsr", "rdmsr", "out imm8, al", "dec r32",
                              "jnz rel8", "jmp rel8", "hlt", "rsm"}
    assert REGS == {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6,
                    "edi": 7}


def test_program_has_one_block_per_step_each_ending_in_its_marker_out():
    steps = [GuestStep(0, "mark", None, 64), GuestStep(1, "mov_cr3", 0x103000, 64),
             GuestStep(3, "wrmsr_efer", 0xD01, 64), GuestStep(4, "mov_cr0", 0x11, 16)]
    p = build_program(steps, 0x1000)
    assert p.starts == {0: 0x1000, 1: 0x1004, 3: 0x1010, 4: 0x1025}
    assert p.code.hex(" ") == " ".join([
        "b0 01 e6 10",                                        # run: marker 1
        "b8 00 30 10 00 0f 22 d8 b0 02 e6 10",                # mov cr3, then marker 2
        "b9 80 00 00 c0 b8 01 0d 00 00 ba 00 00 00 00 0f 30 b0 04 e6 10",  # wrmsr, marker 4
        "66 b8 11 00 00 00 0f 22 c0 b0 05 e6 10",             # 16-bit mov cr0, marker 5
        "f4 eb fd",                                           # hlt; jmp back to the hlt
    ])
    assert p.end == 0x1032


def test_markers_skip_zero_and_the_smm_mark():
    assert [marker(i) for i in (0, 1, 249, 250)] == [1, 2, 250, 1]
    assert SMM_MARK not in {marker(i) for i in range(1000)}


def test_smm_handler_reports_then_resumes():
    assert smm_handler().hex(" ") == f"b0 fe e6 {STEP_PORT:02x} 0f aa"


def test_code_bits_and_flat_segments_follow_the_mode():
    assert [code_bits(0x10, 0), code_bits(0x11, 0), code_bits(0x80000011, 0x500)] == [16, 32, 64]
    cs64, cs32, cs16 = (flat_segments(b)["cs"] for b in (64, 32, 16))
    assert (cs64.l, cs64.db, cs64.selector, cs64.limit) == (1, 0, 0x08, 0xFFFFFFFF)
    assert (cs32.l, cs32.db, cs32.g) == (0, 1, 1)
    assert (cs16.l, cs16.db, cs16.selector, cs16.limit, cs16.base) == (0, 0, 0, 0xFFFF, 0)
