"""Random operation sequences on every era, checked against the simulator's invariants.

A Hypothesis ``RuleBasedStateMachine`` drives one :class:`mmulib.sim.Runner` per example: it
boots into one of a few register states, then applies guest operations (the guest is
entered first when it is not running), userspace operations and nested entries, all drawn
from small pools of values so that CR3s repeat, nested entries and exits pair up and SMIs
meet RSMs.  Values are not pre-filtered: an operation the model refuses
(``InvalidStateError``, ``SimError``, ``RequestError``) must leave the state exactly as it
was, both in the Runner and when applied to a bare :class:`~mmulib.sim.Machine`.

Invariants checked after every step (the kernel facts behind each are in the docstrings):

* at most 1 + KVM_MMU_NUM_PREV_ROOTS valid roots per ``struct kvm_mmu``, none in nested_mmu;
* every cached root (current or ``prev_roots``) is a live page: a shadow page still in
  ``mmu_page_hash`` or a TDP MMU root still on ``tdp_mmu_roots``;
* reference counts never go negative and equal the references the caches hold (plus the TDP
  MMU's own reference on valid roots from 6.4);
* after a VM entry the vCPU runs on a valid, live, non-obsolete root and no obsolete root is
  cached anywhere (RELOAD / FREE_OBSOLETE_ROOTS were processed first);
* every role word (stored roles, page keys, ``kvm_mmu_get_page`` records) round-trips through
  its era's layout, and the state round-trips through freeze/thaw.

Runs are derandomised (fixed examples, no example database) so the suite is reproducible;
about ten thousand steps in total across 37 configurations.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mmulib.layouts import LayoutError
from mmulib.regs import InvalidStateError
from mmulib.request import RequestError
from mmulib.roles import decode, role_from_fields
from mmulib.sim import Machine, Runner, SimError, apply_op, parse_op
from mmulib.sim.cache import KVM_MMU_NUM_PREV_ROOTS
from mmulib.sim.machine import PaeRoot, SpKey, TdpKey

ERAS = ("4.18", "4.19", "4.20", "5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18")
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    (era, {"tdp": tdp}) for era in ERAS for tdp in ("none", "ept", "npt")
] + [
    ("5.10", {"tdp": "ept", "tdp_mmu": True}),
    ("5.10", {"tdp": "ept", "tdp_mmu": True, "cr0_wp_backport": "full"}),
    ("5.15", {"tdp": "npt", "cr0_wp_backport": "no_unload"}),
    ("5.15", {"tdp": "ept", "tdp_mmu": False}),
]
REJECTED = (InvalidStateError, SimError, RequestError)

# ---------------------------------------------------------------------------------------------
# Operation pools.  Values are chosen to hit the interesting transitions often: WP/PG flips,
# CR4 role bits and PCIDE, EFER.NX/LME, a handful of CR3s (with PCID and NOFLUSH variants).

CR3S = [0x100000 + 0x1000 * i for i in range(5)]
NOFLUSH = 1 << 63
CR0S = [0x80010033, 0x80000033, 0x80010011, 0x10033, 0x33, 0x11, 0x60000010]
CR4S = [0x20, 0x0, 0x30, 0xA0, 0x100020, 0x300020, 0x20020, 0x2020, 0x1020, 0x200020]
EFERS = [0xD01, 0x501, 0xD00, 0x100, 0x900, 0x0, 0x1D01]
MODES = [  # (cr0, cr4, efer): 64-bit, 64-bit WP=0 with SMEP, PAE, 32-bit, paging off, real mode
    (0x80010033, 0x20, 0xD01), (0x80000033, 0x100020, 0xD01), (0x80010033, 0x20, 0x800),
    (0x80010033, 0x10, 0x0), (0x10033, 0x0, 0x0), (0x60000010, 0x0, 0x0),
]
L2_MODES = [(0x80010033, 0x20, 0xD01), (0x80010033, 0x20, 0x800), (0x80000033, 0x20, 0xD01)]
EPTPS = [0x30005E, 0x31005E, 0x30001E]  # A/D on, A/D on (other table), A/D off
NCR3S = [0x300000, 0x310000]

cr3_values = st.one_of(st.sampled_from(CR3S), st.sampled_from(CR3S).flatmap(
    lambda c: st.sampled_from([c | NOFLUSH, c | 1, c | 1 | NOFLUSH])))

#: Operations the guest executes (it must be running: the rule enters it first if needed).
GUEST_OPS = st.one_of(
    st.builds(lambda v: {"op": "mov_cr3", "value": v}, cr3_values),
    st.builds(lambda v: {"op": "mov_cr3", "value": v}, st.sampled_from(CR3S)),
    st.builds(lambda v: {"op": "mov_cr3", "value": v}, st.sampled_from(CR3S[:3])),
    st.builds(lambda v: {"op": "mov_cr0", "value": v}, st.sampled_from(CR0S)),
    st.builds(lambda v: {"op": "mov_cr4", "value": v}, st.sampled_from(CR4S)),
    st.builds(lambda v: {"op": "wrmsr_efer", "value": v}, st.sampled_from(EFERS)),
    st.just({"op": "vmexit"}),
    st.just({"op": "vmexit"}),
    st.just({"op": "vmfail"}),
    st.just({"op": "rsm"}),
)

#: Operations from userspace or the platform (KVM_SET_SREGS, SMI, CPUID, INIT, memslots).
USER_OPS = st.one_of(
    st.builds(lambda m, c: {"op": "set_sregs", "cr0": m[0], "cr3": c, "cr4": m[1],
                            "efer": m[2]}, st.sampled_from(MODES), st.sampled_from(CR3S)),
    st.just({"op": "smi"}),
    st.just({"op": "cpuid"}),
    st.just({"op": "init"}),
    st.builds(lambda k: {"op": "memslot", "change": k}, st.sampled_from(["delete", "move"])),
)


# ---------------------------------------------------------------------------------------------
# Invariant helpers (plain functions, so a failure names what broke).


def _refs(m: Machine) -> Counter:
    """How many cache slots (current root or prev_roots[i]) hold each page."""
    refs: Counter = Counter()
    for c in m.ctx.values():
        for r in (c.root, *c.prev):
            if r.hpa is None:
                continue
            if isinstance(r.hpa, PaeRoot):
                refs.update(p for p in r.hpa.pages if p is not None)
            else:
                refs[r.hpa] += 1
    return refs


def check_cache_sizes(m: Machine) -> None:
    """1 + KVM_MMU_NUM_PREV_ROOTS slots per kvm_mmu; nested_mmu is a walker without roots."""
    for name, c in m.ctx.items():
        assert len(c.prev) == KVM_MMU_NUM_PREV_ROOTS, name
        valid = sum(r.hpa is not None for r in (c.root, *c.prev))
        assert valid <= 1 + KVM_MMU_NUM_PREV_ROOTS, name
        if name == "nested_mmu":
            assert valid == 0, "nested_mmu never owns roots"
        if m.era.version < (4, 19):
            assert all(r.hpa is None for r in c.prev), "4.18 has no prev_roots"


def check_live_and_counted(m: Machine) -> None:
    """Every cached root is a live page, and every count equals the references held.

    Legacy pages (mmu_free_root_page): root_count is the number of root slots pointing at the
    page; a page with count 0 stays in the hash unless it was zapped (role.invalid), in which
    case the last put destroys it.  TDP MMU roots: tdp_mmu_root_count = vCPU references, plus
    the TDP MMU's own reference on a valid root from 6.4 (edbdb43fc96b); a root whose count
    would reach 0 is removed from tdp_mmu_roots.
    """
    refs = _refs(m)
    tdp = {e[0]: e for e in m.tdp_roots}
    assert len(tdp) == len(m.tdp_roots), "a TDP root is listed twice"
    for key in refs:
        if isinstance(key, SpKey):
            assert key in m.sp, f"cached root {key} is not a live shadow page (used after free)"
        else:
            assert isinstance(key, TdpKey)
            assert key in tdp, f"cached root {key} is not on tdp_mmu_roots (used after free)"
    for key, count in m.sp.items():
        assert count >= 0, f"{key}: negative root_count {count}"
        assert count == refs.get(key, 0), f"{key}: root_count {count} != {refs.get(key, 0)} refs"
        if key.zombie:
            assert count > 0, f"{key}: an invalid page with no reference must be gone"
    own = 1 if m.era.version >= (6, 4) else 0
    for key, (_, count, invalid) in tdp.items():
        assert count > 0, f"{key}: refcount {count} on tdp_mmu_roots"
        want = refs.get(key, 0) + (0 if invalid else own)
        assert count == want, f"{key}: refcount {count} != {want}"


def _obsolete(m: Machine, hpa: Any) -> bool:
    if isinstance(hpa, SpKey):
        return bool(hpa.zombie)
    if isinstance(hpa, TdpKey):
        return next(e[2] for e in m.tdp_roots if e[0] == hpa)
    if isinstance(hpa, PaeRoot):
        return any(p is not None and p.zombie for p in hpa.pages)
    return False


def check_after_entry(m: Machine) -> None:
    """vcpu_enter_guest handled RELOAD / FREE_OBSOLETE_ROOTS, then kvm_mmu_reload loaded a root."""
    cur = m.ctx[m.mmu].root
    assert cur.hpa is not None, f"VM entry with no root in {m.mmu}"
    assert not _obsolete(m, cur.hpa), f"VM entry on obsolete root {cur.hpa}"
    for name, c in m.ctx.items():
        for r in (c.root, *c.prev):
            if r.hpa is not None:
                assert not _obsolete(m, r.hpa), f"{name} still caches obsolete {r.hpa}"


def _roundtrip(word: int, era: str, ext: bool = False) -> None:
    """decode() accepts the word (no stray bits) and packing its fields gives it back."""
    _, base, ext_role = decode(0 if ext else word, era, word if ext else None)
    role = ext_role if ext else base
    assert role is not None
    assert role_from_fields(role.layout, **role.fields).word == word


def check_roles(m: Machine, events: tuple) -> None:
    """Role words are well-formed in their era's layout and survive decode -> re-pack."""
    era = m.era.name
    for c in m.ctx.values():
        r = c.roles
        _roundtrip(r.base, era)
        if m.era.ext is not None:
            _roundtrip(r.ext, era, ext=True)
        if m.era.has_cpu_role:
            _roundtrip(r.root_role, era)
    for key in m.sp:
        _roundtrip(key.role, era)
        assert m.era.page.get(key.role, "level") in (2, 3, 4, 5)
    for e in m.tdp_roots:
        _roundtrip(e[0].role, era)
        assert m.era.page.get(e[0].role, "direct") == 1
    for ev in events:
        if ev.name in ("kvm_mmu_get_page", "kvm_tdp_mmu_get_root"):
            _roundtrip(ev.get("role"), era)
        if ev.name == "kvm_mmu_get_page":
            assert m.era.page.get(ev.get("role"), "level") == ev.get("level")


# ---------------------------------------------------------------------------------------------


class SimMachine(RuleBasedStateMachine):
    """One vCPU of one configuration (set by :func:`machine_for`)."""

    kernel = "6.18"
    config: dict[str, Any] = {"tdp": "ept"}

    def __init__(self) -> None:
        super().__init__()
        self.runner = Runner(self.kernel, **self.config)
        self.events: tuple = ()
        self.steps = 0

    def apply(self, data: dict[str, Any]) -> bool:
        """Apply one op; a refused op must leave the state untouched.  True if accepted."""
        op = parse_op(data, self.steps)
        self.steps += 1
        before = self.runner.state
        try:
            self.events = self.runner.apply(op)
        except REJECTED:
            self.events = ()
            assert self.runner.state == before, "a refused op changed the Runner's state"
            # The same op on a bare Machine must not change anything before refusing.
            m = Machine.thaw(before)
            with pytest.raises(REJECTED):
                apply_op(m, op)
            assert m.freeze() == before, f"{op.name} refused after changing the machine"
            return False
        except LayoutError as exc:  # pragma: no cover - a model bug, shown with the op
            raise AssertionError(f"{op.to_json()}: {exc}") from exc
        return True

    def ensure_running(self) -> None:
        if not self.runner.machine().running:
            assert self.apply({"op": "run"}), "VM entry is never refused"

    @initialize(mode=st.sampled_from(MODES[:3] * 3 + MODES[3:]), cr3=st.sampled_from(CR3S))
    def boot(self, mode: tuple[int, int, int], cr3: int) -> None:
        self.apply({"op": "set_sregs", "cr0": mode[0], "cr3": cr3, "cr4": mode[1],
                    "efer": mode[2]})

    @rule(data=GUEST_OPS)
    def guest(self, data: dict[str, Any]) -> None:
        self.ensure_running()
        self.apply(data)

    @rule(data=GUEST_OPS)
    def guest_again(self, data: dict[str, Any]) -> None:
        self.guest(data)

    @rule(data=USER_OPS)
    def user(self, data: dict[str, Any]) -> None:
        self.apply(data)

    @rule()
    def run(self) -> None:
        self.apply({"op": "run"})

    @rule(mode=st.sampled_from(L2_MODES), cr3=st.sampled_from(CR3S), paging=st.booleans(),
          eptp=st.sampled_from(EPTPS), ncr3=st.sampled_from(NCR3S))
    def nested_entry(self, mode, cr3, paging, eptp, ncr3) -> None:
        """VMLAUNCH on a VMX host, VMRUN on an SVM host (the other one is refused)."""
        self.ensure_running()
        cr0, cr4, efer = mode
        if self.runner.machine().vendor == "vmx":
            self.apply({"op": "vmlaunch", "cr0": cr0, "cr3": cr3, "cr4": cr4, "efer": efer,
                        "ept": paging, "eptp": eptp, "ad": bool(eptp & 0x40)})
        else:
            self.apply({"op": "vmrun", "cr0": cr0, "cr3": cr3, "cr4": cr4,
                        "efer": efer | 0x1000, "npt": paging, "ncr3": ncr3})

    @invariant()
    def state_round_trips(self) -> None:
        state = self.runner.state
        assert Machine.thaw(state).freeze() == state

    @invariant()
    def caches_and_pages(self) -> None:
        m = self.runner.machine()
        check_cache_sizes(m)
        check_live_and_counted(m)
        if self.events and self.events[-1].name == "vm_entry":
            check_after_entry(m)
        check_roles(m, self.events)


def machine_for(kernel: str, config: dict[str, Any]) -> type[SimMachine]:
    return type(f"SimMachine_{kernel.replace('.', '_')}", (SimMachine,),
                {"kernel": kernel, "config": config})


SETTINGS = settings(max_examples=12, stateful_step_count=25, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("kernel", "config"), CONFIGS,
                         ids=[f"{k}-" + "-".join(str(v) for v in c.values()) for k, c in CONFIGS])
def test_random_sequences_keep_the_invariants(kernel, config):
    run_state_machine_as_test(machine_for(kernel, config), settings=SETTINGS)
