"""What the control panel drives: a simulator session with history, undo and reset.

Pure Python (no ipywidgets), so the panel's logic is testable without a
browser and :mod:`mmulib.show` can use it.  A :class:`Session` holds the
current frozen system state of :mod:`mmulib.sim` (one VM, one vCPU:
:func:`~mmulib.sim.new_state`, :func:`~mmulib.sim.step`,
:func:`~mmulib.sim.thaw_state`) and the steps that led there.  Each control
of the panel is one method that builds one simulator operation:

* a register switch while the guest runs is the guest's own instruction
  (``mov_cr0``, ``mov_cr4``, ``wrmsr_efer``): it exits to KVM (or, for CR0.WP
  with EPT from 6.4, does not) and KVM handles it; while the guest is stopped
  it is userspace's ``KVM_SET_SREGS``;
* "VM entry" is ``run``; MOV CR3, SMI, RSM, VM entry into L2 and VM exit, CPUID
  and memslot changes are the simulator's ops of the same names.

A state KVM refuses (:class:`~mmulib.regs.InvalidStateError`, or a
:class:`~mmulib.sim.SimError` for an impossible operation) raises
:class:`Refused` with the rule, and the session stays where it was.

>>> s = Session("6.4", tdp="ept")
>>> step = s.toggle("CR0", "WP")
>>> step.label, [e.name for e in step.events]
('CR0.WP 1→0', ['no_exit', 'vm_entry'])
>>> s.undo().label
'CR0.WP 1→0'
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..regs import CR0_BITS, CR4_BITS, EFER_BITS, InvalidStateError, effective_efer
from ..request import RequestError
from ..sim import Machine, Op, SimError, counters_of, new_state, parse_op, step, thaw_state
from ..sim.events import Event
from ..sim.replay import summary

__all__ = ["Config", "Step", "Refused", "Session", "DEFAULT_SREGS", "L2_CR3",
           "address_space_cr3", "machine_of", "ADDRESS_SPACES"]

DEFAULT_SREGS: Mapping[str, int] = {"cr0": 0x80010033, "cr3": 0x100000, "cr4": 0xA0,
                                    "efer": 0xD00}
"""A 64-bit guest: CR0 = PG|WP|NE|ET|MP|PE, CR4 = PGE|PAE, EFER = NX|LMA|LME, CR3 in address
space 0."""

ADDRESS_SPACES = 4
"""Address spaces the MOV CR3 control offers: enough to fill ``root`` and ``prev_roots``."""

L2_CR3 = 0x5000000
"""CR3 of the L2 guest that "VM entry into L2" starts."""

_REGISTERS = {"CR0": CR0_BITS, "CR4": CR4_BITS, "EFER": EFER_BITS}
_OPS = {"CR0": "mov_cr0", "CR4": "mov_cr4", "EFER": "wrmsr_efer"}


def address_space_cr3(n: int) -> int:
    """CR3 of address space ``n`` (0 is the one :data:`DEFAULT_SREGS` starts in).

    >>> hex(address_space_cr3(2))
    '0x300000'
    """
    if not 0 <= n < 64:
        raise ValueError(f"address space {n} is not in 0..63")
    return (n + 1) << 20


@functools.lru_cache(maxsize=128)
def machine_of(state: tuple[Any, ...]) -> Machine:
    """The (first) vCPU of a frozen system state (shared and cached: do not modify it)."""
    return thaw_state(state)[0]


@functools.lru_cache(maxsize=4096)
def _transition(state: tuple[Any, ...], op: Op) -> tuple[tuple[Any, ...], tuple[Event, ...]]:
    t = step(state, op)
    return t.state, t.events


@dataclass(frozen=True)
class Config:
    """The machine a session simulates: release, paging mode and host options."""

    kernel: str = "6.4"
    tdp: str = "ept"
    tdp_mmu: bool | None = None  # None: the era's default
    vendor: str | None = None  # None: VMX with EPT or shadow paging, SVM with NPT
    cr0_wp_backport: str = "none"
    nested_paging: bool = True  # VM entry into L2 uses nested EPT/NPT

    def machine_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"tdp": self.tdp, "cr0_wp_backport": self.cr0_wp_backport}
        if self.tdp_mmu is not None:
            kw["tdp_mmu"] = self.tdp_mmu
        if self.vendor is not None:
            kw["vendor"] = self.vendor
        return kw


@dataclass(frozen=True)
class Step:
    """One applied operation: its label, the op, the events, and the states around it."""

    index: int
    label: str
    op: Op
    events: tuple[Event, ...]
    before: tuple[Any, ...]
    after: tuple[Any, ...]

    @property
    def summary(self) -> str:
        """The simulator's one-sentence account (:func:`mmulib.sim.replay.summary`)."""
        return summary(self.op, self.events)


class Refused(Exception):
    """KVM (or the CPU) refuses the operation; the session did not change.

    ``rule`` is the kernel check and what it demands, ``reason`` what was wrong.
    """

    def __init__(self, label: str, rule: str, reason: str = "") -> None:
        self.label, self.rule, self.reason = label, rule, reason
        super().__init__(f"{label}: refused: {rule}" + (f" ({reason})" if reason else ""))


class Session:
    """One simulated vCPU, driven step by step (see the module docstring)."""

    def __init__(self, kernel: str = "6.4", *, tdp: str = "ept", tdp_mmu: bool | None = None,
                 vendor: str | None = None, cr0_wp_backport: str = "none",
                 nested_paging: bool = True, sregs: Mapping[str, int] = DEFAULT_SREGS) -> None:
        self.sregs = dict(sregs)
        self._start(Config(kernel, tdp, tdp_mmu, vendor, cr0_wp_backport, nested_paging))

    def _start(self, config: Config) -> None:
        try:
            state, _ = new_state(config.kernel, **config.machine_kwargs())
        except SimError as exc:
            raise Refused(f"configure {config.kernel}", str(exc)) from None
        self.config = config
        self.state: tuple[Any, ...] = state
        self.steps: list[Step] = []
        self.apply(parse_op({"op": "set_sregs", **self.sregs}, 0), "KVM_SET_SREGS")
        self.apply(parse_op({"op": "run"}, 0), "VM entry")
        self.setup_steps = len(self.steps)

    # ------------------------------------------------------------------ state
    @property
    def machine(self) -> Machine:
        """The current machine (shared with the drawing cache: do not modify it)."""
        return machine_of(self.state)

    @property
    def prev_machine(self) -> Machine | None:
        """The machine before the last step, or None before any step."""
        return machine_of(self.steps[-1].before) if self.steps else None

    @property
    def era(self) -> str:
        return self.machine.era.name

    @property
    def user_steps(self) -> list[Step]:
        """The steps after the setup (KVM_SET_SREGS and the first VM entry)."""
        return self.steps[self.setup_steps:]

    def counters(self) -> Counter[str]:
        """:func:`mmulib.sim.counters_of` over every event since the session started."""
        return counters_of(e for s in self.steps for e in s.events)

    # ------------------------------------------------------------------ applying ops
    def apply(self, op: Op | Mapping[str, Any], label: str | None = None) -> Step:
        """Apply one operation; raise :class:`Refused` (state unchanged) if KVM refuses it."""
        if not isinstance(op, Op):
            try:
                op = parse_op(dict(op), len(self.steps))
            except RequestError as exc:
                raise Refused(label or str(op), str(exc)) from None
        label = label or op.name
        try:
            after, events = _transition(self.state, op)
        except InvalidStateError as exc:
            raise Refused(label, exc.rule, exc.reason) from None
        except SimError as exc:
            raise Refused(label, str(exc)) from None
        s = Step(len(self.steps) + 1, label, op, events, self.state, after)
        self.steps.append(s)
        self.state = after
        return s

    def undo(self) -> Step | None:
        """Take back the last step after the setup; returns it, or None if there is none."""
        if len(self.steps) <= self.setup_steps:
            return None
        s = self.steps.pop()
        self.state = s.before
        return s

    def reset(self) -> None:
        """Back to the state right after the setup, with the same configuration."""
        del self.steps[self.setup_steps:]
        self.state = self.steps[-1].after

    def reconfigure(self, **changes: Any) -> list[Refused]:
        """Switch release, paging mode or vendor and replay the steps so far on it.

        Steps the new configuration refuses are left out; they are returned.
        On a configuration that cannot exist, :class:`Refused` is raised and
        nothing changes.
        """
        config = replace(self.config, **changes)
        if config.tdp == "ept" and config.vendor == "svm" or \
                config.tdp == "npt" and config.vendor == "vmx":
            config = replace(config, vendor=None)
        old = (self.config, self.state, list(self.steps), self.setup_steps)
        replayed = [(s.op, s.label) for s in self.user_steps]
        try:
            self._start(config)
        except Refused:
            self.config, self.state, self.steps, self.setup_steps = old
            raise
        skipped = []
        for op, label in replayed:
            try:
                self.apply(op, label)
            except Refused as exc:
                skipped.append(exc)
        return skipped

    # ------------------------------------------------------------------ the panel's controls
    def bit(self, register: str, name: str) -> bool:
        """Is ``register.name`` set now (``bit("CR0", "WP")``)?"""
        return bool(self._value(register) & self._mask(register, name))

    def _value(self, register: str) -> int:
        m = self.machine
        return {"CR0": m.cr0, "CR4": m.cr4, "EFER": m.efer}[register]

    @staticmethod
    def _mask(register: str, name: str) -> int:
        try:
            return _REGISTERS[register][name]
        except KeyError:
            raise ValueError(f"unknown bit {register}.{name}") from None

    def toggle(self, register: str, name: str) -> Step:
        """Flip one bit: a guest write while the guest runs, else ``KVM_SET_SREGS``."""
        mask = self._mask(register, name)
        m = self.machine
        old = self._value(register)
        new = old ^ mask
        label = f"{register}.{name} {int(bool(old & mask))}→{int(bool(new & mask))}"
        if m.running:
            return self.apply(Op(_OPS[register], (("value", new),)), label)
        regs = {"cr0": m.cr0, "cr3": m.cr3, "cr4": m.cr4, "efer": m.efer}
        regs[register.lower()] = new
        if register in ("CR0", "EFER"):  # LMA follows LME and PG, as the CPU keeps it
            regs["efer"] = effective_efer(regs["cr0"], regs["efer"])
        return self.apply(parse_op({"op": "set_sregs", **regs}, 0), f"{label} (KVM_SET_SREGS)")

    def mov_cr3(self, space: int) -> Step:
        cr3 = address_space_cr3(space)
        return self.apply(Op("mov_cr3", (("value", cr3),)),
                          f"MOV CR3 to address space {space} ({cr3:#x})")

    def vm_entry(self) -> Step:
        return self.apply(Op("run"), "VM entry")

    def smi(self) -> Step:
        return self.apply(Op("smi"), "SMI")

    def rsm(self) -> Step:
        return self.apply(Op("rsm"), "RSM")

    def cpuid(self) -> Step:
        return self.apply(Op("cpuid"), "CPUID update")

    def memslot(self, change: str = "delete") -> Step:
        return self.apply(parse_op({"op": "memslot", "change": change}, 0),
                          f"memslot {change}")

    def enter_l2(self) -> Step:
        """VMLAUNCH (VMX) or VMRUN (SVM) into an L2 with L1's registers and its own CR3."""
        m = self.machine
        paging = self.config.nested_paging and m.tdp_enabled
        regs = {"cr0": m.cr0, "cr3": L2_CR3, "cr4": m.cr4, "efer": m.efer}
        if m.vendor == "vmx":
            op, what = {"op": "vmlaunch", "ept": paging, **regs}, "nested EPT"
        else:
            op, what = {"op": "vmrun", "npt": paging, **regs}, "nested NPT"
        verb = "VMLAUNCH" if m.vendor == "vmx" else "VMRUN"
        return self.apply(parse_op(op, 0), f"{verb} into L2 ({what} {'on' if paging else 'off'})")

    def leave_l2(self) -> Step:
        return self.apply(Op("vmexit"), "VM exit to L1")
