"""The built-in probe scripts: small replay scripts that each exercise one MMU path.

Every script is in the simulator's replay format (:mod:`mmulib.sim.replay`, without
``kernel`` and ``tdp``: :mod:`mmulib.live.compare` takes those from the host) and runs
as well on a real vCPU as in the model.  The groups:

* ``real-mode``, ``protected-mode``, ``paging-2level``, ``paging-pae``, ``paging-4level``,
  ``paging-5level``: one script per paging mode the guest can be in, each with MOV CR3 and
  a role change inside it.  A host that refuses a mode stops that script only;
* ``cr0-wp``, ``efer-nx``, ``cr4-smep``, ``cr4-smap``: one bit toggled back and forth;
  ``wp-smep-smap-nx``: all 16 combinations of the four, visited in Gray-code order, so
  each step flips one bit (``smep_andnot_wp`` and ``smap_andnot_wp`` need both WP and the
  CR4 bit, and shadow paging stores the guest's NX only in ``cpu_role``);
* ``cr3-cycle-2`` ... ``cr3-cycle-6``: MOV CR3 round robin over N address spaces, twice:
  up to four fit in ``root`` plus ``prev_roots[0..2]``, five and more evict;
* ``boot``: real mode to long mode the way a boot loader does it;
* ``userspace-sregs``: ``KVM_SET_SREGS`` from userspace (CR3, CR0.WP, CR4, EFER, no
  change at all, leaving long mode and coming back), each followed by a VM entry;
* ``memslot-cpuid``: deleting and moving a memslot, and ``KVM_SET_CPUID2`` after the first
  ``KVM_RUN``;
* ``smm``: SMI and RSM (most KVMs offer SMM; this one needs ``KVM_CAP_X86_SMM``).

Address spaces are ``0x102000``, ``0x103000``, ... (the chapters' A, B, ...); the PAE
script spaces its two page-directory-pointer tables 14 pages apart because a PAE address
space keeps its four page directories in the four pages after its PDPT, the layout the
model assumes.

>>> sorted(BUILTINS)[:3]
['boot', 'cr0-wp', 'cr3-cycle-2']
>>> [o["value"] for o in builtin("cr3-cycle-3")["ops"][1:]]
['0x103000', '0x104000', '0x102000', '0x103000', '0x104000', '0x102000']
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["BUILTINS", "builtin", "builtin_names", "LONG", "A", "gray_code"]

A = 0x102000
"""The first address space (CR3); the next ones are the pages after it."""

LONG = {"cr0": "0x80010011", "cr4": "0x20", "efer": "0xd00", "cr3": hex(A)}
"""A 64-bit guest: CR0 = PG|WP|ET|PE, CR4 = PAE, EFER = NX|LMA|LME."""

_WP, _PG = 1 << 16, 1 << 31
_SMEP, _SMAP, _PAE = 1 << 20, 1 << 21, 1 << 5
_NX = 1 << 11


def _space(n: int) -> str:
    return hex(A + 0x1000 * n)


def _op(name: str, value: int | str | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": name}
    if value is not None:
        out["value"] = value if isinstance(value, str) else hex(value)
    out.update({k: (hex(v) if isinstance(v, int) else v) for k, v in kw.items()})
    return out


RUN = {"op": "run"}


def gray_code(bits: int) -> list[int]:
    """Every ``bits``-bit number once, each differing from the previous in one bit.

    >>> gray_code(2)
    [0, 1, 3, 2]
    """
    return [i ^ (i >> 1) for i in range(1 << bits)]


def _wp_smep_smap_nx() -> list[dict[str, Any]]:
    """Start at WP=1, NX=1, SMEP=SMAP=0; visit the 16 (WP, SMEP, SMAP, NX) in Gray order."""
    ops: list[dict[str, Any]] = [RUN]
    flips = [("mov_cr0", _WP), ("mov_cr4", _SMEP), ("mov_cr4", _SMAP), ("wrmsr_efer", _NX)]
    cr0, cr4, efer = 0x80010011, 0x20, 0xD00
    codes = gray_code(4)
    for prev, code in zip(codes, codes[1:]):
        name, bit = flips[(prev ^ code).bit_length() - 1]
        if name == "mov_cr0":
            cr0 ^= bit
            ops.append(_op(name, cr0))
        elif name == "mov_cr4":
            cr4 ^= bit
            ops.append(_op(name, cr4))
        else:
            efer ^= bit
            ops.append(_op(name, efer))
    return ops


def _cycle(n: int) -> list[dict[str, Any]]:
    return [RUN] + [_op("mov_cr3", _space((i + 1) % n)) for i in range(2 * n)]


_SCRIPTS: dict[str, dict[str, Any]] = {
    "real-mode": {
        "description": "real mode (CR0.PE=0): paging off, four direct PAE-style roots; CR4.PAE "
                       "is a role bit even with paging off, MOV CR3 is not",
        "sregs": {"cr0": "0x10", "cr4": "0x0", "efer": "0x0", "cr3": "0x0"},
        "ops": [RUN, _op("mov_cr4", _PAE), _op("mov_cr3", A), _op("mov_cr4", 0), RUN],
    },
    "protected-mode": {
        "description": "32-bit protected mode without paging: the same direct roots as real "
                       "mode; CR0.PE is not a role bit",
        "sregs": {"cr0": "0x11", "cr4": "0x0", "efer": "0x0", "cr3": "0x0"},
        "ops": [RUN, _op("mov_cr4", _PAE), _op("mov_cr0", 0x10), _op("mov_cr0", 0x11),
                _op("mov_cr4", 0), _op("mov_cr3", A), RUN],
    },
    "paging-2level": {
        "description": "32-bit 2-level paging: a 4-byte-PTE guest page directory shadowed by "
                       "four level-2 roots, one per quadrant",
        "sregs": {"cr0": "0x80010011", "cr4": "0x0", "efer": "0x0", "cr3": hex(A)},
        "ops": [RUN, _op("mov_cr3", _space(1)), _op("mov_cr3", A), _op("mov_cr0", 0x80000011),
                RUN],
    },
    "paging-pae": {
        "description": "32-bit PAE paging: one level-2 root per PDPTE, at the page directory "
                       "it points to",
        "sregs": {"cr0": "0x80010011", "cr4": "0x20", "efer": "0x0", "cr3": hex(A)},
        "ops": [RUN, _op("mov_cr3", _space(14)), _op("mov_cr3", A), _op("mov_cr0", 0x80000011),
                RUN],
    },
    "paging-4level": {
        "description": "64-bit 4-level paging: one level-4 root per address space",
        "sregs": dict(LONG),
        "ops": [RUN, _op("mov_cr3", _space(1)), _op("mov_cr3", A), _op("mov_cr4", 0x30), RUN],
    },
    "paging-5level": {
        "description": "64-bit 5-level paging (CR4.LA57): one level-5 root per address space",
        "sregs": {**LONG, "cr4": "0x1020"},
        "ops": [RUN, _op("mov_cr3", _space(1)), _op("mov_cr3", A), _op("mov_cr0", 0x80000011),
                RUN],
    },
    "cr0-wp": {
        "description": "CR0.WP off and on twice: cr0_wp is a root-role bit under shadow paging",
        "sregs": dict(LONG),
        "ops": [RUN, _op("mov_cr0", 0x80000011), _op("mov_cr0", 0x80010011),
                _op("mov_cr0", 0x80000011), _op("mov_cr0", 0x80010011), RUN],
    },
    "efer-nx": {
        "description": "EFER.NX off and on: it resets the MMU, but shadow roots force "
                       "efer_nx = 1 (5.19+)",
        "sregs": dict(LONG),
        "ops": [RUN, _op("wrmsr_efer", 0x500), _op("wrmsr_efer", 0xD00),
                _op("wrmsr_efer", 0x500), RUN],
    },
    "cr4-smep": {
        "description": "CR4.SMEP with CR0.WP clear (smep_andnot_wp) and set",
        "sregs": {**LONG, "cr0": "0x80000011"},
        "ops": [RUN, _op("mov_cr4", _SMEP | _PAE), _op("mov_cr0", 0x80010011),
                _op("mov_cr0", 0x80000011), _op("mov_cr4", _PAE), RUN],
    },
    "cr4-smap": {
        "description": "CR4.SMAP with CR0.WP clear (smap_andnot_wp) and set",
        "sregs": {**LONG, "cr0": "0x80000011"},
        "ops": [RUN, _op("mov_cr4", _SMAP | _PAE), _op("mov_cr0", 0x80010011),
                _op("mov_cr0", 0x80000011), _op("mov_cr4", _PAE), RUN],
    },
    "wp-smep-smap-nx": {
        "description": "all 16 combinations of CR0.WP, CR4.SMEP, CR4.SMAP and EFER.NX, one "
                       "guest write apart (Gray code)",
        "sregs": dict(LONG),
        "ops": _wp_smep_smap_nx(),
    },
    **{f"cr3-cycle-{n}": {
        "description": f"MOV CR3 round robin over {n} address spaces, twice"
                       + (" (they all fit in root + prev_roots)" if n <= 4 else
                          " (more than root + 3 prev_roots: every switch evicts)"),
        "sregs": dict(LONG),
        "ops": _cycle(n),
    } for n in range(2, 7)},
    "boot": {
        "description": "a boot: real mode, CR3, protected mode, PAE, EFER.LME, paging on "
                       "(long mode), then WP, NX and a second address space",
        "sregs": {"cr0": "0x10", "cr4": "0x0", "efer": "0x0", "cr3": "0x0"},
        "ops": [RUN, _op("mov_cr3", A), _op("mov_cr0", 0x11), _op("mov_cr4", _PAE),
                _op("wrmsr_efer", 0x100), _op("mov_cr0", 0x80000011),
                _op("mov_cr0", 0x80010011), _op("wrmsr_efer", 0xD00),
                _op("mov_cr3", _space(1)), RUN],
    },
    "userspace-sregs": {
        "description": "KVM_SET_SREGS from userspace: CR3, CR0.WP, CR4, EFER.NX, nothing "
                       "changed, two at once, out of long mode and back",
        "sregs": dict(LONG),
        "ops": [RUN,
                _op("set_sregs", cr3=A + 0x1000), RUN,
                _op("set_sregs", cr3=A), RUN,
                _op("set_sregs", cr0=0x80000011), RUN,
                _op("set_sregs", cr4=0x30), RUN,
                _op("set_sregs", efer=0x500), RUN,
                _op("set_sregs", cr0=0x80000011, cr3=A, cr4=0x30, efer=0x500), RUN,
                _op("set_sregs", cr3=A + 0x2000), _op("set_sregs", cr0=0x80010011), RUN,
                _op("set_sregs", cr0=0x11, cr4=0x20, efer=0), RUN,
                _op("set_sregs", cr0=0x80010011, cr3=A, cr4=0x20, efer=0xD00), RUN],
    },
    "memslot-cpuid": {
        "description": "a memslot deleted and moved (every shadow page zapped), and "
                       "KVM_SET_CPUID2 after KVM_RUN (an identical table: no reset)",
        "sregs": dict(LONG),
        "ops": [RUN, _op("memslot", change="delete"), RUN, _op("memslot", change="move"), RUN,
                _op("cpuid"), RUN],
    },
    "smm": {
        "description": "SMI and RSM: SMM is a role bit, so SMM gets its own (direct) roots",
        "sregs": dict(LONG),
        "ops": [RUN, _op("smi"), _op("rsm"), RUN],
    },
}

BUILTINS: dict[str, dict[str, Any]] = {
    name: {"name": name, **script} for name, script in _SCRIPTS.items()}
"""name -> script (``name``, ``description``, ``sregs``, ``ops``), in the order above."""


def builtin_names() -> list[str]:
    """The built-in scripts' names, in a reading order (paging modes first)."""
    return list(BUILTINS)


def builtin(name: str) -> dict[str, Any]:
    """A copy of the built-in script ``name``.

    Raises:
        ValueError: no such built-in; the message lists them.
    """
    try:
        return copy.deepcopy(BUILTINS[name])
    except KeyError:
        raise ValueError(f"no built-in probe script {name!r} (one of: "
                       f"{', '.join(BUILTINS)})") from None
