"""Control registers CR0, CR4, EFER (and CR3): bit names and KVM's validity rules.

Two kinds of check live here, both in the kernel's order:

* :func:`check_state` judges a whole register state, as ``KVM_SET_SREGS`` does
  (``kvm_is_valid_sregs`` -> ``kvm_is_valid_cr4`` -> ``kvm_is_valid_cr0``), then adds the EFER
  checks of ``kvm_valid_efer`` and two invariants a running guest can never break although
  ``KVM_SET_SREGS`` does not test them (CR4.PCIDE needs EFER.LMA; CR4.CET needs CR0.WP).
* :func:`guest_write_cr0`, :func:`guest_write_cr4` and :func:`guest_write_efer` judge one guest
  instruction (MOV to CR0/CR4, WRMSR to EFER) against a current :class:`CpuRegs`, mirroring
  ``kvm_set_cr0``, ``kvm_set_cr4`` and ``set_efer`` (``arch/x86/kvm/x86.c``).

Every refusal is an :class:`InvalidStateError` that names the register, its value, the bits at
fault and the kernel check.  The rules are those of the newest modelled tree (6.19 source,
era "6.18"); where older releases differ, the docstring says so.

Which checks ``KVM_SET_SREGS`` applies, by tree (``arch/x86/kvm/x86.c``):

======================  =====================================================================
4.18                    LME&PG => PAE and LMA; otherwise LMA=0 and CS.L=0; CR4.OSXSAVE needs
                        XSAVE (in ``__set_sregs``)
4.19, 4.20              same, the OSXSAVE test moved into ``kvm_valid_sregs``
5.10                    + ``kvm_valid_cr4`` (CR4_RESERVED_BITS and ``__cr4_reserved_bits``)
5.15.55 ... 6.4         + CR3 must be a legal GPA when LME&PG (``kvm_is_valid_sregs``)
6.14, 6.19              + ``kvm_is_valid_cr0``
======================  =====================================================================

No release validates EFER's feature bits on ``KVM_SET_SREGS``: ``__set_sregs_common`` hands
EFER straight to the vendor ``set_efer`` hook.  :func:`check_state` still applies
``kvm_valid_efer`` (what a guest WRMSR would face) and says so in the rule text.

>>> describe("CR0", 0x80010033)
'0x80010033 = PG|WP|NE|ET|MP|PE'
>>> check_state(cr0=0x80000000, cr4=0, efer=0)
Traceback (most recent call last):
  ...
mmulib.regs.InvalidStateError: CR0=0x80000000: PG set without PE (kvm_is_valid_cr0: paging \
requires protected mode)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from .eras import resolve

__all__ = [
    # CR0
    "X86_CR0_PE", "X86_CR0_MP", "X86_CR0_EM", "X86_CR0_TS", "X86_CR0_ET", "X86_CR0_NE",
    "X86_CR0_WP", "X86_CR0_AM", "X86_CR0_NW", "X86_CR0_CD", "X86_CR0_PG",
    # CR3
    "X86_CR3_PCID_MASK", "X86_CR3_LAM_U57", "X86_CR3_LAM_U48",
    # CR4
    "X86_CR4_VME", "X86_CR4_PVI", "X86_CR4_TSD", "X86_CR4_DE", "X86_CR4_PSE", "X86_CR4_PAE",
    "X86_CR4_MCE", "X86_CR4_PGE", "X86_CR4_PCE", "X86_CR4_OSFXSR", "X86_CR4_OSXMMEXCPT",
    "X86_CR4_UMIP", "X86_CR4_LA57", "X86_CR4_VMXE", "X86_CR4_SMXE", "X86_CR4_FSGSBASE",
    "X86_CR4_PCIDE", "X86_CR4_OSXSAVE", "X86_CR4_KL", "X86_CR4_SMEP", "X86_CR4_SMAP",
    "X86_CR4_PKE", "X86_CR4_CET", "X86_CR4_PKS", "X86_CR4_LASS", "X86_CR4_LAM_SUP",
    "X86_CR4_FRED",
    # EFER
    "EFER_SCE", "EFER_LME", "EFER_LMA", "EFER_NX", "EFER_SVME", "EFER_LMSLE", "EFER_FFXSR",
    "EFER_TCE", "EFER_AUTOIBRS",
    # tables and masks
    "CR0_BITS", "CR4_BITS", "EFER_BITS", "CR0_RESERVED_BITS", "CR4_RESERVED_BITS",
    "KVM_MMU_CR0_ROLE_BITS", "KVM_MMU_CR4_ROLE_BITS", "KVM_MMU_EFER_ROLE_BITS",
    "ROLE_BITS_BY_ERA",
    # functions and types
    "bit_names", "from_names", "describe", "role_bits", "InvalidStateError", "GuestFeatures",
    "CpuRegs", "guest_cr4_reserved_bits", "guest_efer_reserved_bits", "check_state",
    "guest_write_cr0", "guest_write_cr4", "guest_write_efer", "effective_efer",
]

_MASK64 = (1 << 64) - 1

# --- Architectural bit values (arch/x86/include/uapi/asm/processor-flags.h, msr-index.h) ---

X86_CR0_PE = 1 << 0    # protection enable
X86_CR0_MP = 1 << 1    # monitor coprocessor
X86_CR0_EM = 1 << 2    # x87 emulation
X86_CR0_TS = 1 << 3    # task switched
X86_CR0_ET = 1 << 4    # extension type (hard-wired to 1 on modern CPUs)
X86_CR0_NE = 1 << 5    # numeric error
X86_CR0_WP = 1 << 16   # supervisor writes honour read-only pages
X86_CR0_AM = 1 << 18   # alignment mask
X86_CR0_NW = 1 << 29   # not write-through
X86_CR0_CD = 1 << 30   # cache disable
X86_CR0_PG = 1 << 31   # paging

X86_CR3_PCID_MASK = 0xFFF       # CR3[11:0] = PCID when CR4.PCIDE=1
X86_CR3_LAM_U57 = 1 << 61       # LAM for user pointers, 57-bit
X86_CR3_LAM_U48 = 1 << 62       # LAM for user pointers, 48-bit

X86_CR4_VME = 1 << 0
X86_CR4_PVI = 1 << 1
X86_CR4_TSD = 1 << 2
X86_CR4_DE = 1 << 3
X86_CR4_PSE = 1 << 4
X86_CR4_PAE = 1 << 5
X86_CR4_MCE = 1 << 6
X86_CR4_PGE = 1 << 7
X86_CR4_PCE = 1 << 8
X86_CR4_OSFXSR = 1 << 9
X86_CR4_OSXMMEXCPT = 1 << 10
X86_CR4_UMIP = 1 << 11
X86_CR4_LA57 = 1 << 12
X86_CR4_VMXE = 1 << 13
X86_CR4_SMXE = 1 << 14
X86_CR4_FSGSBASE = 1 << 16
X86_CR4_PCIDE = 1 << 17
X86_CR4_OSXSAVE = 1 << 18
X86_CR4_KL = 1 << 19            # Key Locker: SDM name, not defined in the kernel headers
X86_CR4_SMEP = 1 << 20
X86_CR4_SMAP = 1 << 21
X86_CR4_PKE = 1 << 22
X86_CR4_CET = 1 << 23
X86_CR4_PKS = 1 << 24           # supervisor protection keys: SDM name, not in kernel headers
X86_CR4_LASS = 1 << 27
X86_CR4_LAM_SUP = 1 << 28
X86_CR4_FRED = 1 << 32

EFER_SCE = 1 << 0        # SYSCALL/SYSRET
EFER_LME = 1 << 8        # long mode enable
EFER_LMA = 1 << 10       # long mode active (the CPU sets it; read-only to WRMSR)
EFER_NX = 1 << 11        # no-execute enable
EFER_SVME = 1 << 12      # AMD SVM enable
EFER_LMSLE = 1 << 13     # AMD long-mode segment limit enable
EFER_FFXSR = 1 << 14     # AMD fast FXSAVE/FXRSTOR
EFER_TCE = 1 << 15       # AMD translation cache extension
EFER_AUTOIBRS = 1 << 21  # AMD automatic IBRS

CR0_BITS: dict[str, int] = {
    "PE": X86_CR0_PE, "MP": X86_CR0_MP, "EM": X86_CR0_EM, "TS": X86_CR0_TS,
    "ET": X86_CR0_ET, "NE": X86_CR0_NE, "WP": X86_CR0_WP, "AM": X86_CR0_AM,
    "NW": X86_CR0_NW, "CD": X86_CR0_CD, "PG": X86_CR0_PG,
}
"""CR0 bit name -> mask, in bit order."""

CR4_BITS: dict[str, int] = {
    "VME": X86_CR4_VME, "PVI": X86_CR4_PVI, "TSD": X86_CR4_TSD, "DE": X86_CR4_DE,
    "PSE": X86_CR4_PSE, "PAE": X86_CR4_PAE, "MCE": X86_CR4_MCE, "PGE": X86_CR4_PGE,
    "PCE": X86_CR4_PCE, "OSFXSR": X86_CR4_OSFXSR, "OSXMMEXCPT": X86_CR4_OSXMMEXCPT,
    "UMIP": X86_CR4_UMIP, "LA57": X86_CR4_LA57, "VMXE": X86_CR4_VMXE, "SMXE": X86_CR4_SMXE,
    "FSGSBASE": X86_CR4_FSGSBASE, "PCIDE": X86_CR4_PCIDE, "OSXSAVE": X86_CR4_OSXSAVE,
    "KL": X86_CR4_KL, "SMEP": X86_CR4_SMEP, "SMAP": X86_CR4_SMAP, "PKE": X86_CR4_PKE,
    "CET": X86_CR4_CET, "PKS": X86_CR4_PKS, "LASS": X86_CR4_LASS, "LAM_SUP": X86_CR4_LAM_SUP,
    "FRED": X86_CR4_FRED,
}
"""CR4 bit name -> mask, in bit order (KL and PKS are SDM names the kernel does not define)."""

EFER_BITS: dict[str, int] = {
    "SCE": EFER_SCE, "LME": EFER_LME, "LMA": EFER_LMA, "NX": EFER_NX, "SVME": EFER_SVME,
    "LMSLE": EFER_LMSLE, "FFXSR": EFER_FFXSR, "TCE": EFER_TCE, "AUTOIBRS": EFER_AUTOIBRS,
}
"""EFER bit name -> mask, in bit order."""

_TABLES = {"CR0": CR0_BITS, "CR4": CR4_BITS, "EFER": EFER_BITS}

CR0_RESERVED_BITS = _MASK64 & ~sum(CR0_BITS.values())
"""CR0 bits outside the eleven architectural ones (kvm_host.h, same in 4.18 ... 6.19).

A guest MOV to CR0 that sets one of the low 32 of them is not refused: ``kvm_set_cr0``
silently clears them.  Bits 63:32 are refused (``kvm_is_valid_cr0``).
"""

_CR4_KVM_ALLOWED = (
    X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE | X86_CR4_PSE | X86_CR4_PAE
    | X86_CR4_MCE | X86_CR4_PGE | X86_CR4_PCE | X86_CR4_OSFXSR | X86_CR4_PCIDE
    | X86_CR4_OSXSAVE | X86_CR4_SMEP | X86_CR4_FSGSBASE | X86_CR4_OSXMMEXCPT | X86_CR4_LA57
    | X86_CR4_VMXE | X86_CR4_SMAP | X86_CR4_PKE | X86_CR4_UMIP | X86_CR4_LAM_SUP | X86_CR4_CET
)
CR4_RESERVED_BITS = _MASK64 & ~_CR4_KVM_ALLOWED
"""CR4 bits no KVM guest may set, whatever its CPUID (kvm_host.h, 6.19 tree).

SMXE, KL, PKS, LASS and FRED are among them.  LAM_SUP joined the allowed set after 6.4
(present in 6.14) and CET after 6.14 (present in the 6.19 tree); 4.18 ... 6.4 allow the
other twenty bits only.
"""

# --- Role bits: which register bits make KVM recompute the MMU role ---

KVM_MMU_CR0_ROLE_BITS = X86_CR0_PG | X86_CR0_WP
"""arch/x86/kvm/mmu.h (5.15.55+); ``update_bits`` in ``kvm_set_cr0`` before (same value)."""
KVM_MMU_CR4_ROLE_BITS = (X86_CR4_PSE | X86_CR4_PAE | X86_CR4_LA57 | X86_CR4_SMEP
                         | X86_CR4_SMAP | X86_CR4_PKE)
"""arch/x86/kvm/mmu.h, 5.17-rc5 ... 6.19 (5.15.55 also has PGE)."""
KVM_MMU_EFER_ROLE_BITS = EFER_LME | EFER_NX
"""arch/x86/kvm/mmu.h, 5.18 ... 6.19 (4.18 ... 5.17: NX only; 5.15.y stable got LME later)."""

_CR4_ROLE_4_18 = (X86_CR4_PGE | X86_CR4_PSE | X86_CR4_PAE | X86_CR4_SMEP | X86_CR4_SMAP
                  | X86_CR4_PKE)
ROLE_BITS_BY_ERA: dict[str, dict[str, int]] = {
    "4.18": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": _CR4_ROLE_4_18, "EFER": EFER_NX},
    "4.19": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": _CR4_ROLE_4_18, "EFER": EFER_NX},
    "4.20": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": _CR4_ROLE_4_18, "EFER": EFER_NX},
    "5.10": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": _CR4_ROLE_4_18, "EFER": EFER_NX},
    # 5.15.0 mainline resets on EFER.NX only; the LME half arrived in 5.18
    # ("Reinitialize context if host userspace toggles EFER.LME") and was
    # backported to 5.15.y stable (present in 5.15.55).  mmulib models mainline.
    "5.15": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": _CR4_ROLE_4_18 | X86_CR4_LA57,
             "EFER": EFER_NX},
    "5.17": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS, "EFER": EFER_NX},
    "5.18": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS,
             "EFER": KVM_MMU_EFER_ROLE_BITS},
    "5.19": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS,
             "EFER": KVM_MMU_EFER_ROLE_BITS},
    "6.4": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS,
            "EFER": KVM_MMU_EFER_ROLE_BITS},
    "6.14": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS,
             "EFER": KVM_MMU_EFER_ROLE_BITS},
    "6.18": {"CR0": KVM_MMU_CR0_ROLE_BITS, "CR4": KVM_MMU_CR4_ROLE_BITS,
             "EFER": KVM_MMU_EFER_ROLE_BITS},
}
"""Era name -> register -> the bits whose change triggers ``kvm_mmu_reset_context``.

Read from each era's tree (``kvm_set_cr0``/``kvm_post_set_cr0``, ``kvm_set_cr4``/
``kvm_post_set_cr4``, ``set_efer`` in arch/x86/kvm/x86.c and the masks in mmu.h).  5.15 is
mainline v5.15.0: EFER.NX only, and PGE kept next to LA57 in ``KVM_MMU_CR4_ROLE_BITS``.
The stable tree v5.15.55 also carries the 5.18 fix "Reinitialize context if host userspace
toggles EFER.LME" (LME|NX); mmulib follows mainline.
"""


def _table(register: str) -> dict[str, int]:
    table = _TABLES.get(register.upper())
    if table is None:
        raise ValueError(f"unknown register: {register!r} (must be one of {sorted(_TABLES)})")
    return table


def _check_u64(register: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{register} value must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MASK64:
        raise ValueError(f"{register} value {value:#x} is not a 64-bit unsigned value")


def bit_names(register: str, value: int) -> list[str]:
    """Names of the bits set in ``value``, highest bit first.

    Bits without an architectural name come out as ``bitN``, so the list always
    accounts for every set bit (:func:`from_names` reverses it).

    >>> bit_names("EFER", 0xd01)
    ['NX', 'LMA', 'LME', 'SCE']
    >>> bit_names("cr0", 0x80000040)
    ['PG', 'bit6']
    """
    table = _table(register)
    _check_u64(register.upper(), value)
    by_mask = {mask: name for name, mask in table.items()}
    return [by_mask.get(1 << bit, f"bit{bit}")
            for bit in range(value.bit_length() - 1, -1, -1) if value >> bit & 1]


def from_names(register: str, names: Iterable[str]) -> int:
    """The value whose set bits are ``names`` (``bitN`` accepted); inverse of :func:`bit_names`.

    >>> hex(from_names("CR4", ["PAE", "PGE", "bit15"]))
    '0x80a0'
    """
    table = _table(register)
    value = 0
    for name in names:
        key = name.upper()
        if key in table:
            value |= table[key]
        elif key.startswith("BIT") and key[3:].isdigit() and int(key[3:]) < 64:
            value |= 1 << int(key[3:])
        else:
            raise ValueError(f"unknown {register.upper()} bit: {name!r} "
                             f"(must be one of {list(table)} or bitN with N < 64)")
    return value


def describe(register: str, value: int) -> str:
    """``value`` in hex followed by its bit names, e.g. ``'0x80010033 = PG|WP|NE|ET|MP|PE'``.

    >>> describe("EFER", 0)
    '0x0 = (none)'
    """
    names = bit_names(register, value)
    return f"{value:#x} = {'|'.join(names) if names else '(none)'}"


def role_bits(register: str, era_version: tuple[int, int]) -> int:
    """Bits of ``register`` whose change makes KVM reset the MMU context in that era.

    ``era_version`` is resolved like any release, to the newest modelled era not after it
    (``(6, 1)`` -> 5.19).  Role bits are what ``kvm_set_cr0``, ``kvm_set_cr4`` and ``set_efer``
    (arch/x86/kvm/x86.c) compare old and new values against; see :data:`ROLE_BITS_BY_ERA`.

    Other triggers are not bits of a mask and are not included: CR4.PCIDE going 1 -> 0
    resets in 4.18 ... 5.15.55 (5.17 requests ``KVM_REQ_MMU_RELOAD`` on any PCIDE change;
    5.18+ flushes the guest TLB on 1 -> 0 and, without TDP, unloads the roots on 0 -> 1),
    and from 6.4 a CR0 write that changes WP alone does not reset (``kvm_post_set_cr0``:
    nothing with PG=0, only ``kvm_init_mmu`` with TDP).

    >>> hex(role_bits("EFER", (5, 17))), hex(role_bits("EFER", (6, 1)))
    ('0x800', '0x900')
    """
    if (not isinstance(era_version, tuple) or len(era_version) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in era_version)):
        raise TypeError(f"era_version must be a (major, minor) tuple of ints, not {era_version!r}")
    key = register.upper()
    if key not in _TABLES:
        raise ValueError(f"unknown register: {register!r} (must be one of {sorted(_TABLES)})")
    era = resolve(f"{era_version[0]}.{era_version[1]}")
    return ROLE_BITS_BY_ERA[era.name][key]


# --- Errors ---


class InvalidStateError(ValueError):
    """A register value that KVM (or the CPU) refuses.

    Attributes:
        register: ``"CR0"``, ``"CR3"``, ``"CR4"`` or ``"EFER"``: the register whose value is
            quoted.  (``"state"`` is reserved for a future rule about no single register;
            every current rule pins one.)
        value: that register's value (for a guest write, the value the guest tried to write).
        bits: the bits the rule is about, set where they are forbidden or clear where they
            are required (e.g. PAE for "long mode requires PAE").
        rule: the kernel check and what it demands, e.g.
            ``"kvm_is_valid_cr0: paging requires protected mode"``.
        reason: what is wrong with ``value``, naming ``bits``.

    For a guest write the refusal is a #GP(0) in the guest; for ``KVM_SET_SREGS`` it is
    ``-EINVAL``.
    """

    def __init__(self, register: str, value: int, bits: int, rule: str, reason: str) -> None:
        self.register = register
        self.value = value
        self.bits = bits
        self.rule = rule
        self.reason = reason
        super().__init__(f"{register}={value:#x}: {reason} ({rule})")

    def __reduce__(self) -> tuple:  # keep pickling (e.g. across processes) working
        return (type(self), (self.register, self.value, self.bits, self.rule, self.reason))


def _names(register: str, bits: int) -> str:
    return "|".join(bit_names(register, bits))


def _span(bits: int) -> str:
    high, low = bits.bit_length() - 1, (bits & -bits).bit_length() - 1
    return f"bit {low}" if high == low else f"bits {high}:{low}"


# --- Guest CPUID ---


@dataclass(frozen=True)
class GuestFeatures:
    """The guest CPUID features that decide which CR4 and EFER bits are reserved.

    The default has everything on: a modern host whose ``KVM_GET_SUPPORTED_CPUID`` is handed
    to the guest unchanged.  Each field is the ``X86_FEATURE_*`` that ``__cr4_reserved_bits``
    (arch/x86/kvm/x86.h) or ``__kvm_valid_efer`` (x86.c) tests.  CR4.PAE, PSE and PGE are
    never reserved by KVM, whatever the CPUID says, so they have no field.
    """

    lm: bool = True          # X86_FEATURE_LM: EFER.LME, EFER.LMA
    nx: bool = True          # X86_FEATURE_NX: EFER.NX
    xsave: bool = True       # X86_FEATURE_XSAVE: CR4.OSXSAVE
    smep: bool = True        # X86_FEATURE_SMEP: CR4.SMEP
    smap: bool = True        # X86_FEATURE_SMAP: CR4.SMAP
    fsgsbase: bool = True    # X86_FEATURE_FSGSBASE: CR4.FSGSBASE
    pku: bool = True         # X86_FEATURE_PKU: CR4.PKE
    la57: bool = True        # X86_FEATURE_LA57: CR4.LA57
    umip: bool = True        # X86_FEATURE_UMIP: CR4.UMIP
    vmx: bool = True         # X86_FEATURE_VMX: CR4.VMXE
    pcid: bool = True        # X86_FEATURE_PCID: CR4.PCIDE
    lam: bool = True         # X86_FEATURE_LAM: CR4.LAM_SUP; CR3 LAM_U48/U57 not address bits
    shstk: bool = True       # X86_FEATURE_SHSTK: CR4.CET (either SHSTK or IBT suffices)
    ibt: bool = True         # X86_FEATURE_IBT: CR4.CET
    svm: bool = True         # X86_FEATURE_SVM: EFER.SVME
    fxsr_opt: bool = True    # X86_FEATURE_FXSR_OPT: EFER.FFXSR
    autoibrs: bool = True    # X86_FEATURE_AUTOIBRS: EFER.AUTOIBRS
    lmsle: bool = False
    """Not CPUID: whether the host lets EFER.LMSLE through (``svm_hardware_setup``: nested
    SVM in 4.18 ... 6.14; the 6.19 tree also wants a CPU without ``EFER_LMSLE_MBZ``).  Off by
    default: Intel hosts never allow it, nor do AMD ones reporting ``EFER_LMSLE_MBZ``."""


# (mask, any-of features): the bit is reserved unless one of the features is present.
_CR4_FEATURE_BITS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (X86_CR4_OSXSAVE, ("xsave",)), (X86_CR4_SMEP, ("smep",)), (X86_CR4_SMAP, ("smap",)),
    (X86_CR4_FSGSBASE, ("fsgsbase",)), (X86_CR4_PKE, ("pku",)), (X86_CR4_LA57, ("la57",)),
    (X86_CR4_UMIP, ("umip",)), (X86_CR4_VMXE, ("vmx",)), (X86_CR4_PCIDE, ("pcid",)),
    (X86_CR4_LAM_SUP, ("lam",)), (X86_CR4_CET, ("shstk", "ibt")),
)
_EFER_FEATURE_BITS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (EFER_AUTOIBRS, ("autoibrs",)), (EFER_FFXSR, ("fxsr_opt",)), (EFER_SVME, ("svm",)),
    (EFER_LME | EFER_LMA, ("lm",)), (EFER_NX, ("nx",)),
)
# What x86.c starts efer_reserved_bits from (64-bit host) plus every kvm_enable_efer_bits()
# call in vmx.c / svm.c, except LMSLE (see GuestFeatures.lmsle).  TCE is never enabled.
_EFER_KVM_ALLOWED = (EFER_SCE | EFER_LME | EFER_LMA | EFER_NX | EFER_FFXSR | EFER_SVME
                     | EFER_AUTOIBRS)


def _missing(features: GuestFeatures, table: tuple[tuple[int, tuple[str, ...]], ...],
             value: int) -> tuple[int, list[str]]:
    """Bits of ``value`` reserved for lack of a feature, and the features lacking."""
    bits, lacking = 0, []
    for mask, needs in table:
        if value & mask and not any(getattr(features, f) for f in needs):
            bits |= value & mask
            lacking.append(" or ".join(needs))
    return bits, lacking


def _efer_host_reserved(features: GuestFeatures) -> int:
    return _MASK64 & ~(_EFER_KVM_ALLOWED | (EFER_LMSLE if features.lmsle else 0))


def guest_cr4_reserved_bits(features: GuestFeatures = GuestFeatures()) -> int:
    """Every CR4 bit this guest may not set: CR4_RESERVED_BITS | ``__cr4_reserved_bits``.

    ``kvm_is_valid_cr4`` (arch/x86/kvm/x86.c, 6.19) refuses a value that meets either
    ``cr4_reserved_bits`` (KVM's own capabilities, here: everything) or
    ``vcpu->arch.cr4_guest_rsvd_bits`` (computed from the guest CPUID).

    >>> hex(guest_cr4_reserved_bits(GuestFeatures(la57=False)) & 0xffff)
    '0xd000'
    """
    bits, _ = _missing(features, _CR4_FEATURE_BITS, _CR4_KVM_ALLOWED)
    return CR4_RESERVED_BITS | bits


def guest_efer_reserved_bits(features: GuestFeatures = GuestFeatures()) -> int:
    """Every EFER bit this guest may not set: ``efer_reserved_bits`` | ``__kvm_valid_efer``.

    >>> bit_names("EFER", guest_efer_reserved_bits() & 0xffff)
    ['TCE', 'LMSLE', 'bit9', 'bit7', 'bit6', 'bit5', 'bit4', 'bit3', 'bit2', 'bit1']
    """
    bits, _ = _missing(features, _EFER_FEATURE_BITS, _EFER_KVM_ALLOWED)
    return _efer_host_reserved(features) | bits


# --- Per-register checks shared by check_state and the guest writes ---


def _check_cr0(cr0: int) -> None:
    """kvm_is_valid_cr0 (x86.c, 6.14 and 6.19; inline in kvm_set_cr0 in 4.18 ... 6.4)."""
    if cr0 >> 32:
        raise InvalidStateError(
            "CR0", cr0, cr0 & ~0xFFFFFFFF, "kvm_is_valid_cr0: CR0 bits 63:32 are reserved",
            f"reserved high bits {_names('CR0', cr0 & ~0xFFFFFFFF)} set")
    if cr0 & X86_CR0_NW and not cr0 & X86_CR0_CD:
        raise InvalidStateError("CR0", cr0, X86_CR0_NW, "kvm_is_valid_cr0: NW requires CD",
                                "NW set without CD")
    if cr0 & X86_CR0_PG and not cr0 & X86_CR0_PE:
        raise InvalidStateError("CR0", cr0, X86_CR0_PG,
                                "kvm_is_valid_cr0: paging requires protected mode",
                                "PG set without PE")


def _check_cr4(cr4: int, features: GuestFeatures) -> None:
    """kvm_is_valid_cr4 / __kvm_is_valid_cr4 (x86.c, 6.19): KVM-wide, then CPUID-dependent."""
    if cr4 & CR4_RESERVED_BITS:
        bits = cr4 & CR4_RESERVED_BITS
        raise InvalidStateError(
            "CR4", cr4, bits, "__kvm_is_valid_cr4: CR4_RESERVED_BITS may never be set",
            f"reserved bits {_names('CR4', bits)} set")
    bits, lacking = _missing(features, _CR4_FEATURE_BITS, cr4)
    if bits:
        raise InvalidStateError(
            "CR4", cr4, bits,
            "__kvm_is_valid_cr4: a CPUID-gated bit needs its feature (__cr4_reserved_bits)",
            f"{_names('CR4', bits)} set but guest CPUID lacks {', '.join(lacking)}")


def _check_efer(efer: int, features: GuestFeatures, caller: str, tail: str = "") -> None:
    """efer_reserved_bits, then __kvm_valid_efer (x86.c, 5.10 ... 6.19).

    ``caller`` is the kernel function that tests efer_reserved_bits itself: kvm_valid_efer,
    or set_efer (which inlines that test before calling __kvm_valid_efer).
    """
    host = efer & _efer_host_reserved(features)
    if host:
        raise InvalidStateError(
            "EFER", efer, host, f"{caller}: efer_reserved_bits may never be set{tail}",
            f"reserved bits {_names('EFER', host)} set")
    bits, lacking = _missing(features, _EFER_FEATURE_BITS, efer)
    if bits:
        raise InvalidStateError(
            "EFER", efer, bits, f"__kvm_valid_efer: a CPUID-gated bit needs its feature{tail}",
            f"{_names('EFER', bits)} set but guest CPUID lacks {', '.join(lacking)}")


# --- Whole-state check (KVM_SET_SREGS) ---


def check_state(cr0: int, cr4: int, efer: int, cr3: int = 0,
                features: GuestFeatures = GuestFeatures(), maxphyaddr: int = 48, *,
                cs_l: bool = False) -> None:
    """Raise :class:`InvalidStateError` unless (CR0, CR4, EFER, CR3) is a state KVM accepts.

    In order (the first failing rule is reported):

    1. ``kvm_is_valid_sregs`` (x86.c, 6.19): with EFER.LME and CR0.PG both set, CR4.PAE and
       EFER.LMA must be set and CR3 must be a legal GPA (no bit at or above ``maxphyaddr``;
       the LAM_U48/U57 bits excepted when the guest has LAM, ``kvm_vcpu_is_legal_cr3``);
       otherwise EFER.LMA and CS.L (``cs_l``) must be clear.
    2. ``kvm_is_valid_cr4``: no CR4_RESERVED_BITS, no bit whose CPUID feature is missing.
    3. ``kvm_is_valid_cr0``: bits 63:32 clear, NW only with CD, PG only with PE.  The
       low reserved CR0 bits are accepted (KVM_SET_SREGS stores them).
    4. ``kvm_valid_efer``: what a guest WRMSR would face; KVM_SET_SREGS itself never checks it.
    5. Invariants a guest cannot break, though KVM_SET_SREGS does not test them: the MOV-CR4
       rule that CR4.PCIDE needs EFER.LMA (``kvm_set_cr4``; ``kvm_set_cr0`` refuses to clear
       PG while PCIDE is set), and CR4.CET needs CR0.WP (``kvm_set_cr4``/``kvm_set_cr0``, 6.19
       tree).

    Era differences (which of these ``KVM_SET_SREGS`` enforced) are in the module docstring;
    the vendor hooks (``vmx_is_valid_cr4``: VMXE in SMM or under nested VMXON) are not
    modelled.

    >>> check_state(cr0=0x80050033, cr4=0x3706f8, efer=0xd01, cr3=0x1000)
    >>> check_state(cr0=0x80000011, cr4=0x20, efer=0x100)
    Traceback (most recent call last):
      ...
    mmulib.regs.InvalidStateError: EFER=0x100: LMA clear while LME and CR0.PG are set \
(kvm_is_valid_sregs: EFER.LME with CR0.PG requires EFER.LMA)
    """
    for name, value in (("CR0", cr0), ("CR4", cr4), ("EFER", efer), ("CR3", cr3)):
        _check_u64(name, value)
    if isinstance(maxphyaddr, bool) or not isinstance(maxphyaddr, int) \
            or not 32 <= maxphyaddr <= 52:
        raise ValueError(f"maxphyaddr must be an int in 32..52, not {maxphyaddr!r}")

    if efer & EFER_LME and cr0 & X86_CR0_PG:
        if not cr4 & X86_CR4_PAE:
            raise InvalidStateError(
                "CR4", cr4, X86_CR4_PAE,
                "kvm_is_valid_sregs: EFER.LME with CR0.PG requires CR4.PAE",
                "PAE clear while EFER.LME and CR0.PG are set")
        if not efer & EFER_LMA:
            raise InvalidStateError(
                "EFER", efer, EFER_LMA,
                "kvm_is_valid_sregs: EFER.LME with CR0.PG requires EFER.LMA",
                "LMA clear while LME and CR0.PG are set")
        address = cr3 & ~(X86_CR3_LAM_U48 | X86_CR3_LAM_U57) if features.lam else cr3
        illegal = address & (_MASK64 & ~((1 << maxphyaddr) - 1))
        if illegal:
            raise InvalidStateError(
                "CR3", cr3, illegal,
                "kvm_is_valid_sregs: CR3 must be a legal GPA in long mode",
                f"{_span(illegal)} set at or above MAXPHYADDR={maxphyaddr}")
    elif efer & EFER_LMA:
        raise InvalidStateError(
            "EFER", efer, EFER_LMA,
            "kvm_is_valid_sregs: EFER.LMA requires EFER.LME and CR0.PG",
            "LMA set without both LME and CR0.PG")
    elif cs_l:
        raise InvalidStateError(
            "EFER", efer, EFER_LMA, "kvm_is_valid_sregs: a 64-bit code segment needs long mode",
            "CS.L=1 while LMA is clear")

    _check_cr4(cr4, features)
    _check_cr0(cr0)
    _check_efer(efer, features, "kvm_valid_efer",
                " (a WRMSR rule; KVM_SET_SREGS does not check EFER)")

    if cr4 & X86_CR4_PCIDE and not efer & EFER_LMA:
        raise InvalidStateError(
            "CR4", cr4, X86_CR4_PCIDE,
            "kvm_set_cr4: MOV-CR4 rule, PCIDE can only be set in long mode "
            "(KVM_SET_SREGS does not check it)",
            "PCIDE set while EFER.LMA is clear")
    if cr4 & X86_CR4_CET and not cr0 & X86_CR0_WP:
        raise InvalidStateError(
            "CR4", cr4, X86_CR4_CET,
            "kvm_set_cr4: MOV-CR4 rule, CET requires CR0.WP (KVM_SET_SREGS does not check it)",
            "CET set while CR0.WP is clear")


# --- Guest instructions ---


@dataclass(frozen=True)
class CpuRegs:
    """The registers a CR0/CR4/EFER write is judged against.

    ``cs_l`` is the L bit of the current code segment (``get_cs_db_l_bits``): it decides
    64-bit mode versus compatibility mode, which matters when paging is switched on or off.
    The state is assumed to be one :func:`check_state` accepts.
    """

    cr0: int
    cr3: int
    cr4: int
    efer: int
    cs_l: bool = False

    def __post_init__(self) -> None:
        for f in fields(self)[:4]:
            _check_u64(f.name.upper(), getattr(self, f.name))

    @property
    def is_paging(self) -> bool:
        """CR0.PG (``is_paging``)."""
        return bool(self.cr0 & X86_CR0_PG)

    @property
    def is_pae(self) -> bool:
        """CR4.PAE (``is_pae``)."""
        return bool(self.cr4 & X86_CR4_PAE)

    @property
    def is_long_mode(self) -> bool:
        """EFER.LMA (``is_long_mode``)."""
        return bool(self.efer & EFER_LMA)

    @property
    def is_64_bit_mode(self) -> bool:
        """Long mode with a 64-bit code segment (``is_64_bit_mode``)."""
        return self.is_long_mode and self.cs_l


def effective_efer(cr0: int, efer: int) -> int:
    """``efer`` with LMA = LME && CR0.PG: LMA follows LME and PG as the CPU does.

    KVM does this in the vendor ``set_cr0`` hooks (``vmx_set_cr0`` -> ``enter_lmode`` /
    ``exit_lmode``, ``svm_set_cr0``) when PG changes with EFER.LME set; a WRMSR cannot
    touch LMA (:func:`guest_write_efer`).

    >>> hex(effective_efer(0x80000011, 0x900))
    '0xd00'
    """
    _check_u64("CR0", cr0)
    _check_u64("EFER", efer)
    active = efer & EFER_LME and cr0 & X86_CR0_PG
    return (efer & ~EFER_LMA) | (EFER_LMA if active else 0)


def guest_write_cr0(state: CpuRegs, new: int) -> int:
    """The CR0 that a guest ``MOV CR0, new`` leaves, or :class:`InvalidStateError` (#GP).

    Mirrors ``kvm_set_cr0`` (arch/x86/kvm/x86.c, 5.19, 6.4, 6.19):

    1. ``kvm_is_valid_cr0``: bits 63:32, NW without CD, PG without PE are refused.
    2. ET is forced on and the low reserved bits are dropped (not refused).
    3. Turning PG on with EFER.LME set (activating long mode) needs CR4.PAE and CS.L=0;
       EFER.LMA then becomes 1 (see :func:`effective_efer`).
    4. Turning PG off is refused in 64-bit mode and while CR4.PCIDE=1; otherwise a set
       EFER.LME makes LMA 0.
    5. Clearing WP is refused while CR4.CET=1 (6.19 tree; absent in 6.14).

    Not modelled: loading the PAE PDPTEs (``load_pdptrs``, which needs guest memory) when
    PAE paging is turned on, and the vendor nested-VMX checks of ``vmx_is_valid_cr0``.
    Era differences: 4.18 ... 5.15.55 do not refuse clearing PG in 64-bit mode (5.17 does).

    >>> hex(guest_write_cr0(CpuRegs(cr0=0x11, cr3=0, cr4=0x20, efer=0x100), 0x80000001))
    '0x80000011'
    """
    _check_u64("CR0", new)
    _check_cr0(new)
    cr0 = (new | X86_CR0_ET) & ~CR0_RESERVED_BITS
    if state.efer & EFER_LME and not state.is_paging and cr0 & X86_CR0_PG:
        if not state.is_pae:
            raise InvalidStateError(
                "CR0", new, X86_CR0_PG, "kvm_set_cr0: activating long mode requires CR4.PAE",
                "PG set with EFER.LME while CR4.PAE is clear")
        if state.cs_l:
            raise InvalidStateError(
                "CR0", new, X86_CR0_PG, "kvm_set_cr0: activating long mode requires CS.L=0",
                "PG set with EFER.LME while CS.L=1")
    if not cr0 & X86_CR0_PG:
        if state.is_64_bit_mode:
            raise InvalidStateError(
                "CR0", new, X86_CR0_PG, "kvm_set_cr0: paging cannot be turned off in 64-bit mode",
                "PG clear while in 64-bit mode")
        if state.cr4 & X86_CR4_PCIDE:
            raise InvalidStateError(
                "CR0", new, X86_CR0_PG, "kvm_set_cr0: paging cannot be turned off with CR4.PCIDE",
                "PG clear while CR4.PCIDE is set")
    if not cr0 & X86_CR0_WP and state.cr4 & X86_CR4_CET:
        raise InvalidStateError(
            "CR0", new, X86_CR0_WP, "kvm_set_cr0: WP cannot be cleared while CR4.CET is set",
            "WP clear while CR4.CET is set")
    return cr0


def guest_write_cr4(state: CpuRegs, new: int,
                    features: GuestFeatures = GuestFeatures()) -> int:
    """The CR4 that a guest ``MOV CR4, new`` leaves, or :class:`InvalidStateError` (#GP).

    Mirrors ``kvm_set_cr4`` (arch/x86/kvm/x86.c, 5.19, 6.4, 6.19):

    1. ``kvm_is_valid_cr4``: CR4_RESERVED_BITS and CPUID-dependent bits are refused.
    2. In long mode (EFER.LMA): clearing PAE is refused, and so is changing LA57.
    3. Setting PCIDE (0 -> 1) needs CR3[11:0] = 0 and long mode.
    4. Setting CET needs CR0.WP (6.19 tree).

    The value is stored as written (no bit is dropped).  Not modelled: reloading the PAE
    PDPTEs when PAE paging is on and PGE/PSE/PAE/SMEP change (``load_pdptrs``), and the
    vendor check ``vmx_is_valid_cr4`` (VMXE in SMM, nested VMXON).
    Era differences: 4.18 ... 4.20 allow LA57 to change in long mode and test the CPUID
    bits one by one in ``kvm_set_cr4`` (VMXE through the vendor ``set_cr4`` hook); before
    6.4 a PCIDE 0 -> 1 without the PCID feature is refused by a separate test (also a
    reserved bit from 5.15.55); LAM_SUP is reserved in 6.4 and older (allowed in 6.14),
    CET in 6.14 and older (allowed in the 6.19 tree).

    >>> hex(guest_write_cr4(CpuRegs(cr0=0x80000011, cr3=0, cr4=0x20, efer=0xd00), 0x20020))
    '0x20020'
    """
    _check_u64("CR4", new)
    _check_cr4(new, features)
    old = state.cr4
    if state.is_long_mode:
        if not new & X86_CR4_PAE:
            raise InvalidStateError(
                "CR4", new, X86_CR4_PAE, "kvm_set_cr4: long mode requires CR4.PAE",
                "PAE clear while EFER.LMA is set")
        if (new ^ old) & X86_CR4_LA57:
            raise InvalidStateError(
                "CR4", new, X86_CR4_LA57, "kvm_set_cr4: LA57 cannot change in long mode",
                f"LA57 toggled (was {int(bool(old & X86_CR4_LA57))}) while EFER.LMA is set")
    if new & X86_CR4_PCIDE and not old & X86_CR4_PCIDE:
        if state.cr3 & X86_CR3_PCID_MASK:
            raise InvalidStateError(
                "CR4", new, X86_CR4_PCIDE, "kvm_set_cr4: PCIDE can only be set with CR3[11:0]=0",
                f"PCIDE set while CR3[11:0]={state.cr3 & X86_CR3_PCID_MASK:#x}")
        if not state.is_long_mode:
            raise InvalidStateError(
                "CR4", new, X86_CR4_PCIDE, "kvm_set_cr4: PCIDE can only be set in long mode",
                "PCIDE set while EFER.LMA is clear")
    if new & X86_CR4_CET and not state.cr0 & X86_CR0_WP:
        raise InvalidStateError(
            "CR4", new, X86_CR4_CET, "kvm_set_cr4: CET requires CR0.WP",
            "CET set while CR0.WP is clear")
    return new


def guest_write_efer(state: CpuRegs, new: int,
                     features: GuestFeatures = GuestFeatures()) -> int:
    """The EFER that a guest ``WRMSR EFER, new`` leaves, or :class:`InvalidStateError` (#GP).

    Mirrors ``set_efer`` for a guest (not host-initiated) write (arch/x86/kvm/x86.c, 5.19,
    6.4, 6.19):

    1. ``efer_reserved_bits``: bits KVM never enables (e.g. TCE) are refused.
    2. ``__kvm_valid_efer``: AUTOIBRS, FFXSR, SVME, LME/LMA and NX need their CPUID feature
       (a written LMA counts, although it is then ignored).
    3. Changing LME while CR0.PG=1 is refused.
    4. LMA is read-only: KVM keeps the current LMA whatever was written.

    Era differences: 4.18 ... 4.20 call ``kvm_valid_efer`` without the LM and NX CPUID tests
    (``__kvm_valid_efer`` has them by 5.10); AUTOIBRS is reserved in 5.19 and older (allowed
    in 6.4).  A host-initiated write (KVM_SET_MSRS) skips steps 2 and 3 from 5.10.

    >>> hex(guest_write_efer(CpuRegs(cr0=0x11, cr3=0, cr4=0x20, efer=0), 0x500))
    '0x100'
    """
    _check_u64("EFER", new)
    _check_efer(new, features, "set_efer")
    if state.is_paging and (state.efer ^ new) & EFER_LME:
        raise InvalidStateError(
            "EFER", new, EFER_LME, "set_efer: LME cannot change while CR0.PG is set",
            f"LME toggled (was {int(bool(state.efer & EFER_LME))}) while CR0.PG is set")
    return (new & ~EFER_LMA) | (state.efer & EFER_LMA)
