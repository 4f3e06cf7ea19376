"""The vCPU simulator: KVM's MMU events, contexts and root caches, era by era.

``step(state, op) -> Transition`` is a pure function: a frozen machine state
and an operation in, the next state and the ordered kernel events out.
:class:`Runner` applies a sequence of operations and memoises transitions on
interned states, so a long periodic workload (a CR0.WP storm, a context-switch
loop) costs a dictionary lookup per operation once its states repeat, with
results identical to computing every step.

>>> from mmulib.sim import Runner, parse_op
>>> r = Runner("6.4", tdp="ept")
>>> _ = r.set_sregs(cr0=0x80010011, cr3=0x1000, cr4=0x20, efer=0xd00)
>>> _ = r.apply(parse_op({"op": "run"}, 0))
>>> [e.name for e in r.apply(parse_op({"op": "mov_cr0", "value": 0x80000011}, 1))]
['no_exit', 'vm_entry']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .events import Event, ev
from .machine import Machine, SimError, Vm
from .ops import Op, apply_op, parse_op

__all__ = ["Machine", "Vm", "SimError", "Op", "Event", "ev", "parse_op", "apply_op", "step",
           "new_state", "thaw_state", "Transition", "Runner", "counters_of"]


@dataclass(frozen=True)
class Transition:
    """What one operation did: the state after it and the events, in kernel order."""

    state: tuple[Any, ...]
    events: tuple[Event, ...]


# A system state is (the VM's frozen pages, (each vCPU's frozen state, ...)).


def new_state(kernel: str, vcpus: int = 1, **machine_kw: Any) -> tuple[tuple[Any, ...],
                                                                       tuple[Event, ...]]:
    """A fresh VM with ``vcpus`` vCPUs (all created, none run yet) and the creation events."""
    if vcpus < 1:
        raise SimError(f"vcpus: {vcpus} is not a positive number")
    vm = Vm()
    ms = [Machine(kernel, vm=vm, **machine_kw) for _ in range(vcpus)]
    events = tuple(ms[0].log)
    return (vm.freeze(), tuple(m.freeze_vcpu() for m in ms)), events


def thaw_state(state: tuple[Any, ...]) -> list[Machine]:
    """The vCPUs of a system state, sharing one thawed VM."""
    vm_state, vcpus = state
    vm = Vm.thaw(vm_state)
    return [Machine.thaw_vcpu(v, vm) for v in vcpus]


def step(state: tuple[Any, ...], op: Op) -> Transition:
    """Apply ``op`` to a frozen system state; the input state is not changed."""
    ms = thaw_state(state)
    i = op.get("vcpu", 0)
    if not 0 <= i < len(ms):
        raise SimError(f"vcpu {i}: the VM has {len(ms)} vCPU(s)")
    m = ms[i]
    apply_op(m, op, tuple(x for j, x in enumerate(ms) if j != i))
    events = tuple(ev("vcpu", index=i) for _ in range(1) if len(ms) > 1) + tuple(m.log)
    return Transition((m.vm.freeze(), tuple(x.freeze_vcpu() for x in ms)), events)


class Runner:
    """Applies operations to one VM, memoising transitions on interned states."""

    def __init__(self, kernel: str, vcpus: int = 1, **machine_kw: Any) -> None:
        state, self.initial_events = new_state(kernel, vcpus, **machine_kw)
        self.vcpus = vcpus
        self._states: dict[tuple[Any, ...], int] = {}
        self._by_id: list[tuple[Any, ...]] = []
        self._memo: dict[tuple[int, Op], tuple[int, tuple[Event, ...]]] = {}
        self.sid = self._intern(state)
        self.memo_hits = 0

    def _intern(self, state: tuple[Any, ...]) -> int:
        sid = self._states.get(state)
        if sid is None:
            sid = len(self._by_id)
            self._states[state] = sid
            self._by_id.append(state)
        return sid

    @property
    def state(self) -> tuple[Any, ...]:
        return self._by_id[self.sid]

    def machine(self, vcpu: int = 0) -> Machine:
        """A fresh mutable copy of one vCPU (with its VM) for inspection and drawing."""
        return thaw_state(self.state)[vcpu]

    def machines(self) -> list[Machine]:
        return thaw_state(self.state)

    def apply(self, op: Op) -> tuple[Event, ...]:
        key = (self.sid, op)
        hit = self._memo.get(key)
        if hit is not None:
            self.memo_hits += 1
            self.sid, events = hit
            return events
        t = step(self.state, op)
        nsid = self._intern(t.state)
        self._memo[key] = (nsid, t.events)
        self.sid = nsid
        return t.events

    def set_sregs(self, *, cr0: int, cr3: int, cr4: int, efer: int,
                  vcpu: int = 0) -> tuple[Event, ...]:
        args: tuple[tuple[str, Any], ...] = (("cr0", cr0), ("cr3", cr3), ("cr4", cr4),
                                             ("efer", efer))
        if vcpu:
            args += (("vcpu", vcpu),)
        return self.apply(Op("set_sregs", args))


def counters_of(events: Any) -> Counter[str]:
    """Count what a stretch of events did (the workload table's columns)."""
    c: Counter[str] = Counter()
    tdp_traced = False  # a new TDP MMU root is also traced as kvm_mmu_get_page (5.15+)
    for e in events:
        n = e.name
        if n == "kvm_mmu_get_page" and tdp_traced:
            tdp_traced = False
            continue
        tdp_traced = n == "kvm_tdp_mmu_get_root" and not e.get("reused")
        if n == "kvm_mmu_reset_context":
            c["reset_context"] += 1
        elif n in ("kvm_init_mmu", "kvm_init_shadow_ept_mmu") and e.get("reinit"):
            c["permission_bitmask"] += 1
        elif n == "kvm_mmu_get_page":
            c["root_pages_created" if e.get("created") else "root_pages_reused"] += 1
        elif n == "kvm_tdp_mmu_get_root":
            if e.get("reused"):
                c["tdp_roots_reused"] += 1
                c["pt_pages_rebuilt"] += e.get("pages_to_build", 0)
            else:
                c["tdp_roots_allocated"] += 1
                c["pt_pages_rebuilt"] += e.get("pages_to_build", 0)
        elif n in ("kvm_tdp_mmu_free_root", "kvm_tdp_mmu_zap_all",
                   "kvm_tdp_mmu_invalidate_all_roots"):
            c["tdp_roots_freed"] += n == "kvm_tdp_mmu_free_root"
            c["pt_pages_torn_down"] += e.get("pages_freed", 0)
        elif n == "kvm_mmu_free_roots":
            c["roots_freed"] += len(e.get("freed", ()))
        elif n == "fast_pgd_switch":
            c["pgd_hits" if e.get("hit") else "pgd_misses"] += 1
        elif n == "exit":
            c["exits"] += 1
        elif n == "no_exit":
            c["no_exits"] += 1
        elif n == "vm_entry":
            c["vm_entries"] += 1
    return c
