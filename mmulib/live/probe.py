"""Run a replay script on the host's KVM and record what its MMU does, op by op.

:func:`run_script` takes the simulator's replay-script format (:mod:`mmulib.sim.replay`),
builds a guest for it (:mod:`mmulib.live.guest`), runs it under a private trace instance
(:mod:`mmulib.live.tracing`) and returns, for every op, the ``kvm_mmu_get_page`` records of
the root pages KVM looked up or created, the child pages its page faults created
(:mod:`mmulib.live.records`), and the registers read back afterwards.

==============================  ==========================================================
Op                              What the probe does
==============================  ==========================================================
``run``                         KVM_RUN until the guest's next OUT (its marker block)
``mov_cr0/3/4``, ``wrmsr_efer``  KVM_RUN: the guest executes the write, then its OUT
``set_sregs``                   KVM_SET_SREGS (registers not given keep their value)
``smi``                         KVM_SMI, then KVM_RUN until the SMM handler's OUT
``rsm``                         KVM_RUN: the handler's RSM, back to the program's next OUT
``cpuid``                       KVM_SET_CPUID2 with the vCPU's own CPUID (KVM_GET_CPUID2)
``memslot``                     delete (then re-create) or move a spare 64 KiB memslot
==============================  ==========================================================

Every op ends with a status:

* ``ok``: it ran, and its records are the kernel's.
* ``unsupported``: ``"not supported on this host: <reason>"``.  The host lacks a CPUID
  feature or a capability, or it refused, or silently changed, a state that KVM accepts by
  :mod:`mmulib.regs` (the validity rules of ``kvm_is_valid_sregs``, ``kvm_set_cr0``, ...).
* ``refused``: KVM refused the op as those rules say every KVM must (the ioctl failed, or the
  guest's write raised #GP, which the probe guest's empty IDT turns into a triple fault).
* ``not probed``: the probe cannot drive the op (INIT needs an in-kernel local APIC, nested
  entry an L1 hypervisor), or an earlier op was unsupported or refused, so the state would no
  longer be the script's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..regs import (
    CpuRegs, GuestFeatures, InvalidStateError, bit_names, check_state, guest_cr4_reserved_bits,
    guest_efer_reserved_bits, guest_write_cr0, guest_write_cr4, guest_write_efer,
)
from ..request import parse_int
from ..sim.ops import Op, parse_op
from .errors import HostRefused, ProbeError
from .guest import (
    SMM_HANDLER, SMM_MARK, STEP_PORT, GuestStep, TableManager, build_program, code_bits,
    load_segments, marker, plan_layout, smm_handler,
)
from .host import HostBackend, guest_features, host_backend, maxphyaddr
from .pagetables import paging_mode, table_root
from .kvmapi import KVM_CAP_X86_SMM, KVM_DEVICE, CpuidEntry, GuestMemory, Kvm, KvmExit, Vcpu, Vm
from .records import TRACE_EVENTS, split_records
from .tracing import TraceSession

__all__ = ["StepResult", "LiveResult", "run_script", "cpuid_diff", "UNSUPPORTED", "REGS"]

UNSUPPORTED = "not supported on this host: "
REGS = ("cr0", "cr3", "cr4", "efer")
_GUEST_OPS = ("mov_cr0", "mov_cr3", "mov_cr4", "wrmsr_efer")
_ENTERS = ("run", "smi", "rsm", *_GUEST_OPS)
_NO_L1 = "nested entry and exit need an L1 hypervisor in the guest; the probe guest has none"
_NOT_PROBED = {"init": "INIT needs an in-kernel local APIC, which the probe's VM does not "
                       "create", "vmlaunch": _NO_L1, "vmrun": _NO_L1, "vmexit": _NO_L1,
               "vmfail": _NO_L1}
_SPARE_GPA = (0x40000000, 0x40100000)
_MODE_NAMES = {None: "paging off", "2level": "32-bit 2-level paging", "pae": "PAE paging",
               "4level": "4-level paging", "5level": "5-level paging"}
_MAX_EXITS = 64
_ALL_FEATURES = GuestFeatures()
_CR0_PE, _CR0_PG, _EFER_LME, _EFER_LMA = 1 << 0, 1 << 31, 1 << 8, 1 << 10


@dataclass
class StepResult:
    """What one op did on the host.

    ``records`` are the root pages (the model's ``kvm_mmu_get_page`` records), ``children``
    the pages page faults created, ``regs`` CR0/CR3/CR4/EFER read back after the op, and
    ``changed`` every register whose read-back value is not the one the op asked for.
    """

    index: int
    op: dict[str, Any]
    status: str = "ok"
    reason: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)
    regs: dict[str, int] = field(default_factory=dict)
    changed: dict[str, dict[str, int]] = field(default_factory=dict)
    exit: str = ""


@dataclass
class LiveResult:
    """A whole script on the host: the host, what its guests get, the set-up, every op.

    ``features`` are those of the CPUID the vCPU holds after KVM_SET_CPUID2 (read back with
    KVM_GET_CPUID2), which is what KVM checks CR4 and EFER against; ``cpuid_changed`` lists
    every register of that CPUID which differs from what was set; ``maxphyaddr`` is that
    CPUID's physical-address width.
    """

    host: HostBackend
    features: GuestFeatures
    smm: bool
    initial: StepResult
    steps: list[StepResult]
    cpuid_changed: list[str] = field(default_factory=list)
    maxphyaddr: int = 48

    def to_json(self) -> dict[str, Any]:
        return {"host": {**asdict(self.host), "kernel": self.host.kernel, "tdp": self.host.tdp},
                "features": asdict(self.features), "maxphyaddr": self.maxphyaddr,
                "smm": self.smm,
                "cpuid_changed": self.cpuid_changed, "initial": asdict(self.initial),
                "steps": [asdict(s) for s in self.steps]}


def _lacking(features: GuestFeatures, cr4: int | None, efer: int | None) -> str | None:
    """Why the host refused CR4/EFER, if bits are reserved only for want of a CPUID feature.

    >>> _lacking(GuestFeatures(smep=False), 0x100020, 0xd00)[:33]
    'CR4.SMEP needs a CPU feature that'
    >>> _lacking(GuestFeatures(), 0x100020, 0xd00) is None
    True
    """
    full = GuestFeatures()
    names = []
    if cr4 is not None:
        bits = cr4 & guest_cr4_reserved_bits(features) & ~guest_cr4_reserved_bits(full)
        names += [f"CR4.{n}" for n in bit_names("CR4", bits)]
    if efer is not None:
        bits = efer & guest_efer_reserved_bits(features) & ~guest_efer_reserved_bits(full)
        names += [f"EFER.{n}" for n in bit_names("EFER", bits)]
    if not names:
        return None
    return (f"{', '.join(names)} needs a CPU feature that the guest's CPUID lacks (as KVM "
            "holds it after KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID)")


def _predict(regs: dict[str, int], op: Op) -> dict[str, int]:
    """The registers the op asks for, before the host answers."""
    new = dict(regs)
    a = dict(op.args)
    if op.name == "set_sregs":
        new.update({k: v for k, v in a.items() if k in REGS and v is not None})
    elif op.name in ("mov_cr0", "mov_cr3", "mov_cr4"):
        new[op.name[4:]] = a["value"]
    elif op.name == "wrmsr_efer":
        new["efer"] = (a["value"] & ~_EFER_LMA) | (regs["efer"] & _EFER_LMA)
    if op.name == "mov_cr0":
        lma = new["cr0"] & _CR0_PG and new["efer"] & _EFER_LME
        new["efer"] = new["efer"] | _EFER_LMA if lma else new["efer"] & ~_EFER_LMA
    return new


def _pae_roots(regs: dict[str, int], roots: set[int]) -> set[int]:
    """``roots`` plus the PDPT of ``regs`` if they are in PAE mode."""
    if paging_mode(regs["cr0"], regs["cr4"], regs["efer"]) == "pae":
        return roots | {table_root("pae", regs["cr3"])}
    return roots


def _kvm_verdict(op: Op, cur: dict[str, int], want: dict[str, int], cs_l: bool,
                 phys: int) -> str | None:
    """Why KVM refuses ``op`` whatever the CPU (by :mod:`mmulib.regs`, with every CPUID
    feature present), or None if a KVM with the features would accept it."""
    features = _ALL_FEATURES
    try:
        if op.name in ("set_sregs", "initial"):
            check_state(want["cr0"], want["cr4"], want["efer"], cr3=want["cr3"],
                        features=features, maxphyaddr=phys, cs_l=bool(want["efer"] & _EFER_LMA))
        elif op.name in ("mov_cr0", "mov_cr4", "wrmsr_efer"):
            state = CpuRegs(cur["cr0"], cur["cr3"], cur["cr4"], cur["efer"], cs_l)
            value = dict(op.args)["value"]
            if op.name == "mov_cr0":
                guest_write_cr0(state, value)
            elif op.name == "mov_cr4":
                guest_write_cr4(state, value, features)
            else:
                guest_write_efer(state, value, features)
    except InvalidStateError as exc:
        return str(exc)
    return None


def cpuid_diff(given: list[CpuidEntry], held: list[CpuidEntry]) -> list[str]:
    """Every CPUID register that KVM_SET_CPUID2 did not keep, e.g.
    ``"CPUID.(EAX=7,ECX=0).EBX: set 0x1800002, KVM holds 0xf1bf03ab"``."""
    def key(e: CpuidEntry) -> tuple[int, int]:
        return (e.function, e.index)

    have = {key(e): e for e in held}
    out = []
    for e in given:
        h = have.get(key(e))
        for reg in ("eax", "ebx", "ecx", "edx"):
            a, b = getattr(e, reg), (None if h is None else getattr(h, reg))
            if a != b:
                now = "nothing" if b is None else f"{b:#x}"
                out.append(f"CPUID.(EAX={e.function:#x},ECX={e.index}).{reg.upper()}: set "
                           f"{a:#x}, KVM holds {now}")
    return out


def _changed(want: dict[str, int], got: dict[str, int], keys: tuple[str, ...]
             ) -> dict[str, dict[str, int]]:
    return {k: {"requested": want[k], "read back": got[k]} for k in keys if want[k] != got[k]}


class _Executor:
    """One script on one VM and vCPU."""

    def __init__(self, vm: Vm, vcpu: Vcpu, trace: TraceSession, ops: list[Op],
                 cpuid: list[CpuidEntry], smm: bool, start: dict[str, int]) -> None:
        self.vm, self.vcpu, self.trace, self.ops = vm, vcpu, trace, ops
        self.cpuid, self.smm = cpuid, smm          # the vCPU's CPUID, as KVM holds it
        self.features, self.phys = guest_features(cpuid), maxphyaddr(cpuid)
        # The program: one block per op that enters the guest, assembled for the code size
        # the op's instruction is decoded with: 16-bit in real mode, otherwise the size of
        # the CS last loaded by KVM_SET_SREGS (clearing and setting CR0.PE keeps the cached
        # descriptor, as on hardware).
        regs, cs_bits = dict(start), code_bits(start["cr0"], start["efer"])
        blocks: list[GuestStep] = []
        cr3s = {start["cr3"]}
        pae_roots = _pae_roots(start, set())
        for i, op in enumerate(ops):
            if op.name in _ENTERS and op.name != "smi":
                kind = op.name if op.name in _GUEST_OPS else "mark"
                bits = cs_bits if regs["cr0"] & _CR0_PE else 16
                blocks.append(GuestStep(i, kind, op.get("value"), bits))
            regs = _predict(regs, op)
            cr3s.add(regs["cr3"])
            pae_roots = _pae_roots(regs, pae_roots)
            if op.name == "set_sregs":
                cs_bits = code_bits(regs["cr0"], regs["efer"])
        self.layout = plan_layout(cr3s, len(build_program(blocks, 0).code), pae_roots)
        self.program = build_program(blocks, self.layout.code)
        mem = vm.add_memory(self.layout.mem_size)
        mem.write(self.layout.code, self.program.code)
        if smm:
            mem.write(SMM_HANDLER, smm_handler())
        self.tables = TableManager(mem.write, self.layout.table_area, self.layout.mem_size)
        self.spare: tuple[int, GuestMemory] | None = None
        if any(op.name == "memslot" for op in ops):
            self.spare = (len(vm.memory), vm.add_memory(0x10000, _SPARE_GPA[0]))
        self.root_level = 4

    def regs(self) -> dict[str, int]:
        s = self.vcpu.get_sregs()
        return {r: int(getattr(s, r)) for r in REGS}

    def set_sregs(self, want: dict[str, int], res: StepResult, op: Op) -> None:
        """KVM_SET_SREGS with flat segments; classify a failure or a silent change."""
        self.tables.ensure(want["cr0"], want["cr3"], want["cr4"], want["efer"])
        s = self.vcpu.get_sregs()
        for r in REGS:
            setattr(s, r, want[r])
        load_segments(s, code_bits(want["cr0"], want["efer"]))
        try:
            self.vcpu.set_sregs(s)
        except HostRefused as exc:
            verdict = _kvm_verdict(op, want, want, False, self.phys)
            if verdict:
                res.status, res.reason = "refused", f"{exc} ({verdict})"
            else:
                why = _lacking(self.features, want["cr4"], want["efer"])
                res.status = "unsupported"
                res.reason = UNSUPPORTED + (why or f"{exc} for a state KVM accepts")
            return
        got = self.regs()
        res.changed = _changed(want, got, REGS)
        if res.changed:
            held = ", ".join(f"{k.upper()}={v['read back']:#x} (asked {v['requested']:#x})"
                             for k, v in res.changed.items())
            res.status = "unsupported"
            res.reason = UNSUPPORTED + f"KVM_SET_SREGS took the state but holds {held}"
            asked = paging_mode(want["cr0"], want["cr4"], want["efer"])
            if asked != paging_mode(got["cr0"], got["cr4"], got["efer"]):
                res.reason += f", so {_MODE_NAMES[asked]} does not run here"

    def enter(self, op: Op, want: dict[str, int], res: StepResult) -> None:
        """KVM_RUN until the op's OUT, and judge how the guest stopped."""
        cur = self.regs()
        cs_l = bool(self.vcpu.get_sregs().cs.l)
        if op.name == "smi":
            if not self.smm:
                res.status = "unsupported"
                res.reason = UNSUPPORTED + "KVM_CAP_X86_SMM is 0 (this KVM offers no SMM)"
                return
            self.vcpu.smi()
        self.tables.ensure(want["cr0"], want["cr3"], want["cr4"], want["efer"])
        ex = self._run()
        res.exit = str(ex)
        if ex.name == "IO" and ex.port == STEP_PORT:
            if op.name in _GUEST_OPS:
                key = "efer" if op.name == "wrmsr_efer" else op.name[4:]
                res.changed = _changed(want, self.regs(), (key,))
            return
        verdict = _kvm_verdict(op, cur, want, cs_l, self.phys)
        if ex.name == "SHUTDOWN" and op.name in _GUEST_OPS and verdict:
            res.status, res.reason = "refused", f"the guest's {op.name} raised #GP ({verdict})"
        elif ex.name == "SHUTDOWN" and op.name in _GUEST_OPS:
            res.status = "unsupported"
            why = _lacking(self.features, want["cr4"] if op.name == "mov_cr4" else None,
                           dict(op.args)["value"] if op.name == "wrmsr_efer" else None)
            mode = _MODE_NAMES[paging_mode(want["cr0"], want["cr4"], want["efer"])]
            res.reason = UNSUPPORTED + (why or (
                f"the guest's {op.name} to {op.get('value'):#x} ({mode}) raised an exception "
                "although KVM accepts the write"))
        else:
            res.status, res.reason = "unsupported", UNSUPPORTED + f"the guest stopped with {ex}"

    def _run(self) -> KvmExit:
        for _ in range(_MAX_EXITS):
            ex = self.vcpu.run()
            if ex.name != "INTR":        # a signal interrupted KVM_RUN: enter again
                return ex
        raise HostRefused(f"KVM_RUN was interrupted {_MAX_EXITS} times in a row")

    def memslot(self, change: str) -> None:
        """Delete then re-create, or move, the spare memslot."""
        assert self.spare is not None
        slot, mem = self.spare
        if change == "delete":
            self.vm.set_region(slot, mem.gpa, None)
            self.vm.set_region(slot, mem.gpa, mem)
        else:
            self.vm.set_region(slot, _SPARE_GPA[mem.gpa == _SPARE_GPA[0]], mem)

    def step(self, i: int, op: Op) -> StepResult:
        res = StepResult(i, op.to_json())
        want = _predict(self.regs(), op)
        if op.name in _NOT_PROBED:
            res.status, res.reason = "not probed", _NOT_PROBED[op.name]
        elif op.name == "set_sregs":
            self.set_sregs(want, res, op)
        elif op.name == "cpuid":
            # After KVM_RUN only the vCPU's own CPUID is accepted, so hand that back.
            self.vcpu.set_cpuid(self.vcpu.get_cpuid())
        elif op.name == "memslot":
            self.memslot(dict(op.args)["change"])
        else:
            self.enter(op, want, res)
        self.capture(res, (SMM_MARK if op.name == "smi" else marker(i))
                     if op.name in _ENTERS and res.status == "ok" else None)
        return res

    def capture(self, res: StepResult, mark: int | None) -> None:
        """Attach the op's trace records and read-back registers to ``res``."""
        events = self.trace.read()
        res.records, res.children, self.root_level = split_records(events, self.root_level)
        res.regs = self.regs()
        if mark is None:
            return
        pios = [e.fields for e in events if e.name == "kvm_pio"]
        if not pios or (pios[-1]["port"], pios[-1]["val"]) != (STEP_PORT, mark):
            raise ProbeError(f"op {res.index}: the trace does not end with the guest's OUT of "
                              f"{mark} to port {STEP_PORT:#x} (kvm_pio records: {pios})")


def run_script(script: dict[str, Any], *, device: str = KVM_DEVICE) -> LiveResult:
    """Run ``script`` (the simulator's replay format) on this host's KVM.

    Only ``sregs`` and ``ops`` are read: the host decides the release and the backend.

    Raises:
        LiveUnavailable: no usable /dev/kvm, tracefs or tracepoint (one line: what and how).
        RequestError / ValueError: the script is malformed.
        TraceOverrun: the trace lost events, so the records would be incomplete.
        ProbeError: a step's trace does not end with the guest's marker.
    """
    ops = [parse_op(o, i) for i, o in enumerate(script.get("ops") or [])]
    if not ops:
        raise ValueError("'ops' must be a non-empty list")
    sregs = script.get("sregs") or {}
    if not isinstance(sregs, dict) or set(sregs) - set(REGS):
        raise ValueError("sregs: an object with cr0, cr3, cr4, efer")
    with Kvm(device) as kvm:
        host = host_backend()
        cpuid = kvm.supported_cpuid()
        with TraceSession(TRACE_EVENTS) as trace:
            vm = kvm.create_vm()
            smm = vm.check_extension(KVM_CAP_X86_SMM) > 0
            vcpu = vm.create_vcpu()
            vcpu.set_cpuid(cpuid)
            held = vcpu.get_cpuid()
            reset = {r: int(getattr(vcpu.get_sregs(), r)) for r in REGS}
            start = {r: parse_int(sregs[r], f"sregs.{r}") if r in sregs else reset[r]
                     for r in REGS}
            ex = _Executor(vm, vcpu, trace, ops, held, smm, start)
            initial = StepResult(-1, {"op": "sregs", **{r: hex(v) for r, v in start.items()}})
            ex.set_sregs(start, initial, Op("initial"))
            regs = vcpu.get_regs()
            regs.rip = ex.program.starts.get(min(ex.program.starts, default=-1), ex.program.end)
            regs.rflags = 2
            vcpu.set_regs(regs)
            back = vcpu.get_regs()
            initial.changed.update({r: {"requested": getattr(regs, r),
                                        "read back": getattr(back, r)}
                                    for r in ("rip", "rflags")
                                    if getattr(back, r) != getattr(regs, r)})
            ex.capture(initial, None)
            steps: list[StepResult] = []
            stopped = "" if initial.status == "ok" else f"the initial sregs were {initial.status}"
            for i, op in enumerate(ops):
                if stopped:
                    steps.append(StepResult(i, op.to_json(), "not probed",
                                            f"an earlier op stopped the script: {stopped}"))
                    continue
                try:
                    res = ex.step(i, op)
                except HostRefused as exc:
                    res = StepResult(i, op.to_json(), "refused", str(exc))
                steps.append(res)
                if res.status in ("unsupported", "refused"):
                    stopped = f"op {i} ({op.name}) was {res.status}"
            return LiveResult(host, ex.features, smm, initial, steps, cpuid_diff(cpuid, held),
                              ex.phys)
