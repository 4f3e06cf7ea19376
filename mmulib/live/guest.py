"""The probe guest: flat segments, memory layout, page tables per CR3, and its program.

The guest does nothing but the script's guest operations.  Its program is straight-line
code, one block per script step that enters the guest:

* a ``run`` (or ``rsm``) step is a *marker*: ``mov al, n; out 0x10, al``;
* a guest op is the write itself followed by the marker, e.g. for ``mov_cr4``:
  ``mov eax, value; mov cr4, eax; mov al, n; out 0x10, al``
  (``wrmsr_efer``: ``mov ecx, 0xC0000080; mov eax, lo; mov edx, hi; wrmsr``);
* at the end ``hlt`` and a jump back to it.

So every ``KVM_RUN`` ends at the OUT of exactly one step, the host sees the step boundary as
a ``KVM_EXIT_IO`` on port 0x10 carrying the step's marker byte, and the kernel's own
``kvm_pio`` tracepoint closes the step in the trace.  Steps the host cannot run are skipped
by setting RIP to the next block.

Memory (one memslot at GPA 0): the code at 0x1000 or the first free page after it, below
64 KiB so that real-mode steps reach it with CS.base = 0; SMRAM at 0x30000 (SMBASE, handler
at 0x38000); each CR3 the script names holds its root table, whose lower tables are
allocated above the highest root, from 2 MiB up.  The exception is PAE: a PAE address space
keeps its four page directories in the four pages right after its PDPT (and its page table
in the fifth), because that is where the model puts them (``gfn = (CR3 >> 12) + 1 + i``), and
KVM names a PAE guest's roots by those directories.  Every address space identity-maps the
first 2 MiB with 4 KiB pages (:mod:`mmulib.live.pagetables`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .asm import Asm
from .kvmapi import KvmSegment, KvmSregs
from .pagetables import build_identity_map, paging_mode, table_root

__all__ = [
    "STEP_PORT", "SMM_MARK", "SMBASE", "SMM_HANDLER", "MAP_BYTES", "MSR_EFER", "code_bits",
    "flat_segments", "load_segments", "GuestStep", "Program", "build_program", "smm_handler",
    "Layout", "plan_layout", "TableManager", "marker", "PAE_PAGES", "pae_pages",
]

STEP_PORT = 0x10
SMM_MARK = 0xFE                # the byte the SMM handler sends
SMBASE = 0x30000               # the architectural default SMBASE
SMM_HANDLER = SMBASE + 0x8000  # where an SMI starts executing
MAP_BYTES = 0x200000
MSR_EFER = 0xC0000080
_EFER_LMA = 1 << 10
_CR0_PE = 1 << 0
_TABLE_AREA = 0x200000
_SMRAM = range(SMBASE, SMBASE + 0x10000)


def code_bits(cr0: int, efer: int) -> int:
    """The code-segment size the probe loads with these registers: 64 in long mode, 32 in
    protected mode, 16 in real mode."""
    if efer & _EFER_LMA:
        return 64
    return 32 if cr0 & _CR0_PE else 16


def flat_segments(bits: int) -> dict[str, KvmSegment]:
    """Flat segments for ``bits``-bit code, as a boot loader leaves them.

    Code selector 0x08 (execute/read, accessed: type 11), data 0x10 (read/write, accessed:
    type 3), a busy 32-bit TSS for TR (type 11) and an unusable LDT, which is what VMX entry
    checks want; real mode uses selector 0 and 64 KiB limits.
    """
    real = bits == 16
    limit, g = (0xFFFF, 0) if real else (0xFFFFFFFF, 1)
    cs = KvmSegment(base=0, limit=limit, selector=0 if real else 0x08, type=11, present=1,
                    dpl=0, db=int(bits == 32), s=1, l=int(bits == 64), g=g)
    data = KvmSegment(base=0, limit=limit, selector=0 if real else 0x10, type=3, present=1,
                      dpl=0, db=int(not real), s=1, l=0, g=g)
    tr = KvmSegment(base=0, limit=0x67, selector=0x18 if not real else 0, type=11, present=1,
                    s=0)
    ldt = KvmSegment(base=0, limit=0xFFFF, selector=0, type=2, present=1, s=0, unusable=1)
    return {"cs": cs, "ds": data, "es": data, "fs": data, "gs": data, "ss": data, "tr": tr,
            "ldt": ldt}


def load_segments(sregs: KvmSregs, bits: int) -> None:
    """Put :func:`flat_segments` into ``sregs``; an empty IDT makes any exception a triple
    fault (KVM_EXIT_SHUTDOWN) instead of a jump into zeroed memory."""
    for name, seg in flat_segments(bits).items():
        setattr(sregs, name, seg)
    sregs.idt.base, sregs.idt.limit = 0, 0
    sregs.gdt.base, sregs.gdt.limit = 0, 0


def marker(index: int) -> int:
    """The byte step ``index`` sends (1 ... 250, wrapping; 0 and SMM_MARK are never used)."""
    return index % 250 + 1


@dataclass(frozen=True)
class GuestStep:
    """One block of the program: ``kind`` is "mark" or a guest op; ``bits`` its CS size."""

    index: int
    kind: str
    value: int | None
    bits: int


@dataclass
class Program:
    """Assembled code and where each step's block starts (None: no block)."""

    base: int
    code: bytes
    starts: dict[int, int] = field(default_factory=dict)
    end: int = 0


_CR_OF = {"mov_cr0": 0, "mov_cr3": 3, "mov_cr4": 4}


def build_program(steps: list[GuestStep], base: int) -> Program:
    """Assemble one block per step, then ``hlt`` in a loop; see the module docstring."""
    code = bytearray()
    starts: dict[int, int] = {}
    for step in steps:
        starts[step.index] = base + len(code)
        a = Asm(step.bits)
        if step.kind in _CR_OF:
            assert step.value is not None
            a.mov_imm("eax", step.value).mov_to_cr(_CR_OF[step.kind], "eax")
        elif step.kind == "wrmsr_efer":
            assert step.value is not None
            a.mov_imm32("ecx", MSR_EFER).mov_imm32("eax", step.value & 0xFFFFFFFF)
            a.mov_imm32("edx", step.value >> 32).wrmsr()
        elif step.kind != "mark":
            raise ValueError(f"no guest code for {step.kind!r}")
        a.mov_al(marker(step.index)).out(STEP_PORT)
        code += a.code
    end = base + len(code)
    code += Asm(16).label("halt").hlt().jmp("halt").code
    return Program(base, bytes(code), starts, end)


def smm_handler() -> bytes:
    """What runs at SMBASE + 0x8000 after an SMI: report ``SMM_MARK``, then ``rsm``."""
    return bytes(Asm(16).mov_al(SMM_MARK).out(STEP_PORT).rsm().code)


@dataclass(frozen=True)
class Layout:
    """Where the program, the SMM handler and the tables go, and the memory size."""

    code: int
    table_area: int
    mem_size: int


PAE_PAGES = 5
"""Pages after a PAE PDPT's page that its tables take: four page directories, one table."""


def pae_pages(root: int) -> range:
    """The pages (GPAs) that the tables of the PAE address space at ``root`` occupy.

    >>> [hex(p) for p in pae_pages(0x102fe0)]
    ['0x103000', '0x104000', '0x105000', '0x106000', '0x107000']
    """
    page = root & ~0xFFF
    return range(page + 0x1000, page + (1 + PAE_PAGES) * 0x1000, 0x1000)


def plan_layout(cr3_values: set[int], code_size: int,
                pae_roots: set[int] | frozenset[int] = frozenset()) -> Layout:
    """Place the code below 64 KiB away from every root page, PAE table and SMRAM.

    ``pae_roots`` are the PDPT addresses used in PAE mode: the pages after each hold its
    tables (:func:`pae_pages`), so no CR3 and no code may be there.

    Raises:
        ValueError: a CR3 leaves no room for the code, is beyond 1 GiB, or falls on the
            tables of a PAE address space.
    """
    roots = {cr3 & 0xFFFFF000 for cr3 in cr3_values}
    pae = {p: root for root in sorted(pae_roots) for p in pae_pages(root)}
    clash = sorted(r for r in roots if r in pae)
    if clash:
        raise ValueError(f"CR3 {clash[0]:#x} is where the PAE address space at "
                         f"{pae[clash[0]]:#x} keeps its page directories (the {PAE_PAGES} pages "
                         "after its PDPT); space PAE CR3 values at least 6 pages apart")
    taken = roots | set(pae)
    pages = -(-max(code_size, 1) // 0x1000)
    for start in range(0x1000, 0x10000, 0x1000):
        span = range(start, start + pages * 0x1000, 0x1000)
        if start + pages * 0x1000 <= 0x10000 and not any(p in taken for p in span):
            break
    else:
        raise ValueError("the CR3 values leave no room for the guest code below 64 KiB")
    bad = sorted(r for r in taken if r in range(start, start + pages * 0x1000) or r in _SMRAM
                 or r >= 1 << 30)
    if bad:
        raise ValueError(f"CR3 0x{bad[0]:x} is where the probe keeps its code or SMRAM, or "
                         "above 1 GiB; pick CR3 values between 0x40000 and 0x40000000")
    area = max(_TABLE_AREA, (max(taken, default=0) + 0x1000 + 0x1FFFFF) & ~0x1FFFFF)
    return Layout(start, area, area + 0x400000)


class TableManager:
    """Keeps, for each CR3 root, tables in the format the vCPU is about to walk.

    A CR3 can be used in two formats by one script (PAE, then 4-level, ...).  The lower
    tables of each (root, format) pair have their own pages; switching format rewrites only
    the root table, before the step that makes the CPU read it.  PAE tables go in the pages
    after the PDPT (:func:`pae_pages`), the others in the table area.
    """

    def __init__(self, write: Callable[[int, bytes], None], area: int, limit: int) -> None:
        self._write = write
        self._next = area
        self._limit = limit
        self._subtrees: dict[tuple[int, str], int] = {}
        self.current: dict[int, str] = {}

    def ensure(self, cr0: int, cr3: int, cr4: int, efer: int) -> None:
        """Make the tables at ``cr3`` valid for the paging mode of these registers."""
        mode = paging_mode(cr0, cr4, efer)
        if mode is None:
            return
        root = table_root(mode, cr3)
        if self.current.get(root) == mode:
            return
        key = (root, mode)
        if mode == "pae":
            tables = build_identity_map(mode, root, MAP_BYTES)   # PDs in the next pages
        elif key not in self._subtrees:
            self._subtrees[key] = self._next
            tables = build_identity_map(mode, root, MAP_BYTES, next_table=self._next)
            self._next += (len(tables.pages) - 1) * 0x1000
            if self._next > self._limit:
                raise ValueError("too many address spaces for the probe's table area")
        else:
            tables = build_identity_map(mode, root, MAP_BYTES, next_table=self._subtrees[key])
        tables.write(self._write)
        page = root & ~0xFFF
        for other in [r for r in self.current if r & ~0xFFF == page and r != root]:
            del self.current[other]   # a 4 KiB root overwrote a PDPT sharing its page
        self.current[root] = mode
