"""Simulator throughput: a 1,000,000-toggle CR0.WP storm, and how time grows with N.

Run: ``.venv/bin/python bench/replay.py`` (``--quick`` for a smaller run).  Prints, on one
core:

1. events per second for a 1,000,000-toggle CR0.WP storm through the memoising
   ``Runner.apply`` (target: at least 500,000 events/s), for three configurations;
2. the same for a small run through the pure ``step`` (no memo), which is what every
   *new* transition costs;
3. ``workloads.run`` on the same storm (periodic fast-forward: the answer without
   applying every operation);
4. time against N address spaces (MOV CR3 round-robin, shadow paging): the memo needs
   one warm-up pass per distinct state, and past 4 spaces the prev_roots cache thrashes
   and the machine state grows with the shadow pages;
5. time against N vCPUs: N independent ``Runner`` objects (one per vCPU, sharing
   nothing, as the simulator has one vCPU per VM) stepped round-robin in one process.
   Each has its own memo, so the warm-up is paid N times and the steady state costs the
   same per operation; independent runners can also go to separate processes
   (``--processes``), which is how they would use several cores.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

from mmulib.sim import Runner, step
from mmulib.sim.ops import parse_op
from mmulib.sim.workloads import CONFIGS, cr0_wp_storm, run

LONG_MODE = dict(cr0=0x80050033, cr3=0x102000, cr4=0x3006A0, efer=0xD01)
RUN = parse_op({"op": "run"}, 0)
WP_OFF = parse_op({"op": "mov_cr0", "value": 0x80040033}, 1)
WP_ON = parse_op({"op": "mov_cr0", "value": 0x80050033}, 2)


def storm_runner(kernel: str, config: str) -> Runner:
    r = Runner(kernel, **CONFIGS[config])
    r.set_sregs(**LONG_MODE)
    r.apply(RUN)
    return r


def memoised_storm(kernel: str, config: str, toggles: int) -> tuple[float, int]:
    """(seconds, events) for ``toggles`` toggles through Runner.apply."""
    r = storm_runner(kernel, config)
    events = 0
    t0 = time.perf_counter()
    for _ in range(toggles // 2):
        events += len(r.apply(WP_OFF))
        events += len(r.apply(WP_ON))
    return time.perf_counter() - t0, events


def stepped_storm(kernel: str, config: str, toggles: int) -> tuple[float, int]:
    """(seconds, events) through the pure step(): every transition computed afresh."""
    state = storm_runner(kernel, config).state
    events = 0
    t0 = time.perf_counter()
    for _ in range(toggles // 2):
        for op in (WP_OFF, WP_ON):
            t = step(state, op)
            state = t.state
            events += len(t.events)
    return time.perf_counter() - t0, events


def address_spaces(n: int, switches: int, kernel: str = "5.19") -> tuple[float, int]:
    """(seconds, distinct states) for ``switches`` MOV CR3 over ``n`` spaces, shadow paging."""
    r = Runner(kernel, tdp="none")
    r.set_sregs(**LONG_MODE)
    r.apply(RUN)
    ops = [parse_op({"op": "mov_cr3", "value": 0x102000 + 0x1000 * i}, i) for i in range(n)]
    t0 = time.perf_counter()
    for k in range(switches):
        r.apply(ops[(k + 1) % n])
    return time.perf_counter() - t0, len(r._by_id)


def vcpus(n: int, toggles_each: int, kernel: str = "5.10", config: str = "tdp_mmu") -> float:
    """Seconds for n independent runners, each doing ``toggles_each`` toggles, round-robin."""
    runners = [storm_runner(kernel, config) for _ in range(n)]
    t0 = time.perf_counter()
    for _ in range(toggles_each // 2):
        for r in runners:
            r.apply(WP_OFF)
            r.apply(WP_ON)
    return time.perf_counter() - t0


def _one_vcpu(args: tuple[int, str, str]) -> float:
    toggles, kernel, config = args
    return memoised_storm(kernel, config, toggles)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toggles", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 toggles, smaller sweeps")
    ap.add_argument("--processes", type=int, default=0,
                    help="also run that many vCPUs in separate processes")
    args = ap.parse_args()
    toggles = 100_000 if args.quick else args.toggles

    print(f"1. CR0.WP storm, {toggles:,} toggles, memoised Runner.apply (one core):")
    for kernel, config, what in (("5.10", "tdp_mmu", "reset + TDP tree freed and rebuilt"),
                                 ("5.10", "legacy", "reset, root found in the hash"),
                                 ("6.4", "tdp_mmu", "guest-owned CR0.WP: no exit")):
        dt, ev = memoised_storm(kernel, config, toggles)
        print(f"   {kernel} {config:<8} {ev / toggles:4.1f} events/toggle  {ev / dt:>12,.0f} "
              f"events/s  {toggles / dt:>11,.0f} toggles/s  {dt:6.2f} s   ({what})")

    small = 2_000 if args.quick else 10_000
    print(f"\n2. the same without the memo: pure step(), {small:,} toggles:")
    for kernel, config in (("5.10", "tdp_mmu"), ("5.10", "legacy"), ("6.4", "tdp_mmu")):
        dt, ev = stepped_storm(kernel, config, small)
        print(f"   {kernel} {config:<8} {ev / dt:>12,.0f} events/s  {small / dt:>11,.0f} "
              f"toggles/s")

    t0 = time.perf_counter()
    t = run(cr0_wp_storm(toggles), "5.10", "tdp_mmu")
    dt = time.perf_counter() - t0
    print(f"\n3. workloads.run(cr0_wp_storm({toggles:,})) on 5.10 tdp_mmu: {dt * 1e3:.1f} ms "
          f"(periodic fast-forward; {int(t[0]):,} ops counted)")

    switches = 20_000 if args.quick else 200_000
    print(f"\n4. {switches:,} MOV CR3 over N address spaces (5.19, shadow paging):")
    for n in (1, 2, 4, 5, 8, 32, 128, 512) if not args.quick else (1, 4, 5, 32, 128):
        dt, states = address_spaces(n, switches)
        print(f"   N={n:<4} {dt:6.2f} s  {switches / dt:>11,.0f} switches/s  "
              f"{states:>5} distinct states")

    each = 20_000 if args.quick else 100_000
    print(f"\n5. N vCPUs (independent runners, 5.10 tdp_mmu), {each:,} toggles each, "
          "round-robin on one core:")
    for n in (1, 2, 4, 8, 16) if not args.quick else (1, 4, 16):
        dt = vcpus(n, each)
        print(f"   N={n:<3} {dt:6.2f} s  {n * each / dt:>11,.0f} toggles/s in all  "
              f"{dt / n:6.3f} s per vCPU")
    if args.processes:
        n = args.processes
        t0 = time.perf_counter()
        with ProcessPoolExecutor(n) as pool:
            list(pool.map(_one_vcpu, [(each, "5.10", "tdp_mmu")] * n))
        dt = time.perf_counter() - t0
        print(f"   {n} vCPUs in {n} processes: {dt:6.2f} s wall ({n * each / dt:,.0f} "
              "toggles/s in all, process start-up included)")


if __name__ == "__main__":
    main()
