"""A tiny x86 assembler: the dozen instructions a probe guest needs, byte for byte.

The encodings come from the Intel SDM, Volume 2 (instruction set reference), and are the same
in AMD's APM Volume 3.  Each instruction is emitted from the table below; nothing else is
assembled.  ``bits`` is the code-segment size the bytes will run in: 32- and 64-bit code
share every encoding used here, and 16-bit code (real mode, SMM) needs the operand-size prefix
``66`` to reach 32-bit registers.

======================  ====================  ===========================================
Instruction             Encoding              Notes
======================  ====================  ===========================================
``mov r32, imm32``      ``B8+rd id``          in 64-bit code it zero-extends into r64
``mov r64, imm64``      ``REX.W B8+rd io``    64-bit code only (REX.W = ``48``)
``mov al, imm8``        ``B0 ib``
``mov crN, r``          ``0F 22 /r``          ModRM mod=11, reg=N, rm=GPR; r32 or r64 by
                                              mode, whatever the operand-size prefix
``mov r, crN``          ``0F 20 /r``          ModRM mod=11, reg=N, rm=GPR
``wrmsr``               ``0F 30``             MSR[ECX] = EDX:EAX
``rdmsr``               ``0F 32``             EDX:EAX = MSR[ECX]
``out imm8, al``        ``E6 ib``             one byte to an I/O port
``dec r32``             ``FF /1``             ModRM mod=11, reg=1; not ``48+rd``, a REX
                                              prefix in 64-bit code
``jnz rel8``            ``75 cb``             relative to the next instruction
``jmp rel8``            ``EB cb``             relative to the next instruction
``hlt``                 ``F4``
``rsm``                 ``0F AA``             leave system management mode
======================  ====================  ===========================================

>>> a = Asm(64)
>>> a.mov_imm32("eax", 0x80010033).mov_to_cr(0, "eax").out(0x10).hlt().code.hex(" ")
'b8 33 00 01 80 0f 22 c0 e6 10 f4'
>>> Asm(16).mov_imm32("ecx", 0xC0000080).wrmsr().code.hex(" ")
'66 b9 80 00 00 c0 0f 30'
"""

from __future__ import annotations

import struct

__all__ = ["REGS", "ENCODINGS", "Asm"]

REGS = {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6, "edi": 7}
"""Register numbers in ModRM.rm and in the low three bits of ``B8+rd`` (SDM Vol. 2, 2.1.5)."""

ENCODINGS = {
    "mov r32, imm32": "B8+rd id",
    "mov r64, imm64": "REX.W B8+rd io",
    "mov al, imm8": "B0 ib",
    "mov crN, r": "0F 22 /r",
    "mov r, crN": "0F 20 /r",
    "wrmsr": "0F 30",
    "rdmsr": "0F 32",
    "out imm8, al": "E6 ib",
    "dec r32": "FF /1",
    "jnz rel8": "75 cb",
    "jmp rel8": "EB cb",
    "hlt": "F4",
    "rsm": "0F AA",
}
"""The table above, for programs that want to show it."""

_CONTROL_REGS = (0, 2, 3, 4)


def _modrm_reg(reg: int, rm: int) -> int:
    """ModRM byte with mod=11 (register operand)."""
    return 0xC0 | (reg << 3) | rm


class Asm:
    """Append-only assembler for one code-segment size; methods return ``self`` to chain.

    Args:
        bits: 16, 32 or 64, the size of the code segment the bytes will run in.
    """

    def __init__(self, bits: int) -> None:
        if bits not in (16, 32, 64):
            raise ValueError(f"bits must be 16, 32 or 64, not {bits!r}")
        self.bits = bits
        self.code = bytearray()
        self.labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.code)

    def _reg(self, name: str) -> int:
        try:
            return REGS[name]
        except KeyError:
            raise ValueError(f"unknown register {name!r} (one of {sorted(REGS)})") from None

    def _osz32(self) -> None:
        """Operand-size prefix: 32-bit operands in 16-bit code."""
        if self.bits == 16:
            self.code.append(0x66)

    def label(self, name: str) -> Asm:
        self.labels[name] = len(self.code)
        return self

    def mov_imm32(self, reg: str, value: int) -> Asm:
        """``mov r32, imm32``."""
        if not 0 <= value < 1 << 32:
            raise ValueError(f"0x{value:x} does not fit in 32 bits; use mov_imm64")
        self._osz32()
        self.code += bytes([0xB8 + self._reg(reg)]) + struct.pack("<I", value)
        return self

    def mov_imm64(self, reg: str, value: int) -> Asm:
        """``mov r64, imm64`` (64-bit code only)."""
        if self.bits != 64:
            raise ValueError("mov r64, imm64 exists only in 64-bit code")
        self.code += bytes([0x48, 0xB8 + self._reg(reg)]) + struct.pack("<Q", value)
        return self

    def mov_imm(self, reg: str, value: int) -> Asm:
        """The shortest of the two ``mov reg, imm`` forms that holds ``value``."""
        return self.mov_imm32(reg, value) if value < 1 << 32 else self.mov_imm64(reg, value)

    def mov_al(self, value: int) -> Asm:
        """``mov al, imm8``."""
        self.code += bytes([0xB0, value & 0xFF])
        return self

    def mov_to_cr(self, cr: int, reg: str) -> Asm:
        """``mov crN, reg``."""
        if cr not in _CONTROL_REGS:
            raise ValueError(f"cr{cr} is not one of {_CONTROL_REGS}")
        self.code += bytes([0x0F, 0x22, _modrm_reg(cr, self._reg(reg))])
        return self

    def mov_from_cr(self, reg: str, cr: int) -> Asm:
        """``mov reg, crN``."""
        if cr not in _CONTROL_REGS:
            raise ValueError(f"cr{cr} is not one of {_CONTROL_REGS}")
        self.code += bytes([0x0F, 0x20, _modrm_reg(cr, self._reg(reg))])
        return self

    def wrmsr(self) -> Asm:
        self.code += b"\x0f\x30"
        return self

    def rdmsr(self) -> Asm:
        self.code += b"\x0f\x32"
        return self

    def out(self, port: int) -> Asm:
        """``out imm8, al``."""
        if not 0 <= port <= 0xFF:
            raise ValueError(f"port 0x{port:x} does not fit in imm8")
        self.code += bytes([0xE6, port])
        return self

    def dec(self, reg: str) -> Asm:
        """``dec r32``."""
        self._osz32()
        self.code += bytes([0xFF, _modrm_reg(1, self._reg(reg))])
        return self

    def _rel8(self, opcode: int, target: str) -> Asm:
        disp = self.labels[target] - (len(self.code) + 2)
        if not -128 <= disp <= 127:
            raise ValueError(f"label {target!r} is {disp} bytes away, beyond rel8")
        self.code += bytes([opcode, disp & 0xFF])
        return self

    def jnz(self, target: str) -> Asm:
        """``jnz rel8`` to an earlier label."""
        return self._rel8(0x75, target)

    def jmp(self, target: str) -> Asm:
        """``jmp rel8`` to an earlier label."""
        return self._rel8(0xEB, target)

    def hlt(self) -> Asm:
        self.code.append(0xF4)
        return self

    def rsm(self) -> Asm:
        self.code += b"\x0f\xaa"
        return self
