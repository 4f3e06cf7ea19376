"""Simulator throughput: a 1,000,000-toggle CR0.WP storm, and how time grows with N.

Run: ``.venv/bin/python bench/replay.py`` (``--quick`` for a smaller run).  Prints, on one
core:

1. events per second for a 1,000,000-toggle CR0.WP storm through the memoising
   ``Runner.apply`` (target: at least 500,000 events/s), for three configurations, on a
   one-vCPU VM and on the default two-vCPU guest (mmulib.sim.workloads.GUEST_VCPUS, both
   vCPUs toggling in turn).  Counted: the kernel events ``apply`` returns (not the
   ``vcpu`` marker a several-vCPU VM puts first); timed: everything from a fresh runner,
   warm-up included.  Once the states repeat, ``apply`` is one dictionary lookup that
   returns the already-built tuple of events, so the figure is the replay rate of a
   periodic workload; the "consumed" column also walks every event (reading its name),
   which is what a consumer of the log pays at least;
2. the same without the memo: pure ``step`` (every transition computed afresh), which
   is what every *new* transition costs;
3. ``workloads.run`` on the same storm (periodic fast-forward: the answer without
   applying every operation);
4. time against N address spaces (MOV CR3 round-robin, shadow paging): the memo needs
   one warm-up pass per distinct state, and past 4 spaces the prev_roots cache thrashes
   and the machine state grows with the shadow pages;
5. time against N vCPUs of one shared VM (5.10 TDP MMU, every vCPU toggling in turn):
   the warm-up (distinct states, each a ``step`` that thaws and freezes all N vCPUs and
   the shared pages), the memoised steady state, a pure ``step`` per toggle, and
   ``workloads.run`` with the fast-forward.  The vCPUs share the VM's pages and roots,
   so they cannot be split across processes; one process steps them all.
"""

from __future__ import annotations

import argparse
import time

from mmulib.sim import Runner, step
from mmulib.sim.ops import Op, parse_op
from mmulib.sim.workloads import CONFIGS, GUEST_VCPUS, cr0_wp_storm, run

LONG_MODE = dict(cr0=0x80050033, cr3=0x102000, cr4=0x3006A0, efer=0xD01)


def toggle_ops(vcpus: int) -> list[Op]:
    """One round of the storm: each vCPU clears and sets CR0.WP, one vCPU after the other."""
    return [parse_op({"op": "mov_cr0", "value": v, "vcpu": i}, 0)
            for i in range(vcpus) for v in (0x80040033, 0x80050033)]


def storm_runner(kernel: str, config: str, vcpus: int = 1) -> Runner:
    r = Runner(kernel, vcpus=vcpus, **CONFIGS[config])
    for i in range(vcpus):
        r.set_sregs(**LONG_MODE, vcpu=i)
    for i in range(vcpus):
        r.apply(parse_op({"op": "run", "vcpu": i}, 0))
    return r


def memoised_storm(kernel: str, config: str, toggles: int, vcpus: int = 1,
                   consume: bool = False) -> tuple[float, int, int]:
    """(seconds, kernel events, memo misses) for ``toggles`` toggles through Runner.apply.

    ``consume`` also reads every event's name, as a consumer of the log would.
    """
    t0 = time.perf_counter()
    r = storm_runner(kernel, config, vcpus)
    ops = toggle_ops(vcpus)
    marker = 1 if vcpus > 1 else 0  # the leading ev("vcpu", index=i) of a several-vCPU VM
    events = 0
    names = 0
    for _ in range(toggles // len(ops)):
        for op in ops:
            evs = r.apply(op)
            events += len(evs) - marker
            if consume:
                for e in evs:
                    names += e.name != "vcpu"
    dt = time.perf_counter() - t0
    if consume:
        assert names == events
    return dt, events, toggles // len(ops) * len(ops) - r.memo_hits


def stepped_storm(kernel: str, config: str, toggles: int, vcpus: int = 1) -> tuple[float, int]:
    """(seconds, kernel events) through the pure step(): every transition computed afresh."""
    state = storm_runner(kernel, config, vcpus).state
    ops = toggle_ops(vcpus)
    marker = 1 if vcpus > 1 else 0
    events = 0
    t0 = time.perf_counter()
    for _ in range(toggles // len(ops)):
        for op in ops:
            t = step(state, op)
            state = t.state
            events += len(t.events) - marker
    return time.perf_counter() - t0, events


def address_spaces(n: int, switches: int, kernel: str = "5.19") -> tuple[float, int]:
    """(seconds, distinct states) for ``switches`` MOV CR3 over ``n`` spaces, shadow paging."""
    r = Runner(kernel, tdp="none")
    r.set_sregs(**LONG_MODE)
    r.apply(parse_op({"op": "run"}, 0))
    ops = [parse_op({"op": "mov_cr3", "value": 0x102000 + 0x1000 * i}, i) for i in range(n)]
    t0 = time.perf_counter()
    for k in range(switches):
        r.apply(ops[(k + 1) % n])
    return time.perf_counter() - t0, len(r._by_id)


def shared_vm(n: int, toggles: int, kernel: str = "5.10", config: str = "tdp_mmu") -> dict[
        str, float]:
    """One VM with ``n`` vCPUs, all toggling in turn: warm-up, steady state, step, run()."""
    r = storm_runner(kernel, config, n)
    ops = toggle_ops(n)
    states0 = len(r._by_id)
    t0 = time.perf_counter()
    for op in ops * 2:  # two rounds: every state of the period is new once
        r.apply(op)
    warm = time.perf_counter() - t0
    new_states = len(r._by_id) - states0
    rounds = max(1, toggles // len(ops))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for op in ops:
            r.apply(op)
    steady = time.perf_counter() - t0
    step_dt, _ = stepped_storm(kernel, config, 2 * n * max(1, 200 // n), n)
    t0 = time.perf_counter()
    run(cr0_wp_storm(2 * n * (1_000_000 // (2 * n)), n), kernel, config)
    ff = time.perf_counter() - t0
    return {"new_states": new_states, "warm": warm, "steady_toggles_s": rounds * len(ops) / steady,
            "step_ms": step_dt / (2 * n * max(1, 200 // n)) * 1e3, "run_ms": ff * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toggles", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 toggles, smaller sweeps")
    args = ap.parse_args()
    toggles = 100_000 if args.quick else args.toggles

    print(f"1. CR0.WP storm, {toggles:,} toggles, memoised Runner.apply (one core; kernel "
          "events only, warm-up included):")
    for kernel, config, what in (("5.10", "tdp_mmu", "reset + TDP tree freed and rebuilt"),
                                 ("5.10", "legacy", "reset, root found in the hash"),
                                 ("6.4", "tdp_mmu", "guest-owned CR0.WP: no exit")):
        for vcpus in (1, GUEST_VCPUS):
            dt, ev, misses = memoised_storm(kernel, config, toggles, vcpus)
            dtc, _, _ = memoised_storm(kernel, config, toggles, vcpus, consume=True)
            print(f"   {kernel:<4} {config:<8} {vcpus} vCPU{'s' if vcpus > 1 else ' '} "
                  f"{ev / toggles:4.1f} events/toggle  {ev / dt:>12,.0f} events/s "
                  f"({ev / dtc:>11,.0f} consumed)  {toggles / dt:>11,.0f} toggles/s  "
                  f"{dt:5.2f} s  {misses} memo misses   ({what})")

    small = 2_000 if args.quick else 10_000
    print(f"\n2. the same without the memo: pure step(), {small:,} toggles:")
    for kernel, config in (("5.10", "tdp_mmu"), ("5.10", "legacy"), ("6.4", "tdp_mmu")):
        for vcpus in (1, GUEST_VCPUS):
            dt, ev = stepped_storm(kernel, config, small, vcpus)
            print(f"   {kernel:<4} {config:<8} {vcpus} vCPU{'s' if vcpus > 1 else ' '} "
                  f"{ev / dt:>12,.0f} events/s  {small / dt:>11,.0f} toggles/s")

    t0 = time.perf_counter()
    t = run(cr0_wp_storm(toggles), "5.10", "tdp_mmu")
    dt = time.perf_counter() - t0
    print(f"\n3. workloads.run(cr0_wp_storm({toggles:,})) on 5.10 tdp_mmu, {GUEST_VCPUS} vCPUs: "
          f"{dt * 1e3:.1f} ms (periodic fast-forward; {int(t[0]):,} ops counted)")

    switches = 20_000 if args.quick else 200_000
    print(f"\n4. {switches:,} MOV CR3 over N address spaces (5.19, shadow paging):")
    for n in (1, 2, 4, 5, 8, 32, 128, 512) if not args.quick else (1, 4, 5, 32, 128):
        dt, states = address_spaces(n, switches)
        print(f"   N={n:<4} {dt:6.2f} s  {switches / dt:>11,.0f} switches/s  "
              f"{states:>5} distinct states")

    each = 20_000 if args.quick else 100_000
    print(f"\n5. one VM with N vCPUs (5.10 tdp_mmu), every vCPU toggling in turn, {each:,} "
          "toggles in the steady state:")
    print("   N    new states  warm-up  steady toggles/s  step() per toggle  "
          "run(1M toggles)")
    for n in (1, 2, 4, 8, 16) if not args.quick else (1, 4, 16):
        m = shared_vm(n, each)
        print(f"   {n:<4} {int(m['new_states']):>10}  {m['warm'] * 1e3:5.1f} ms  "
              f"{m['steady_toggles_s']:>16,.0f}  {m['step_ms']:>14.3f} ms  "
              f"{m['run_ms']:>12.1f} ms")


if __name__ == "__main__":
    main()
