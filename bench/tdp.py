"""Time and peak memory of the TDP MMU chapter's computations, per size.

Run: ``.venv/bin/python bench/tdp.py`` (``--quick`` skips the 416 x 4 GiB run).

1. The mmu_lock simulation (``mmulib.tdp.sim.simulate``), fault by fault, for growing
   vCPUs x memory, with the calibrated cost split (o/h = 7.32, as 366 and 50 ticks).
   The issue's target: 416 vCPUs x 4 GiB (436,207,616 faults) in at most 10 s on one
   core, with cost linear in the number of faults (see the ns/fault column).  Each run
   is checked against the closed form of ``mmulib.tdp.contention.predict``.
2. The model tree (``kvm_tdp_mmu_map`` one fault at a time): faults per second and
   bytes of model per mapped page, and a sparse 12 TiB guest.

Seconds are from an untraced run; peak memory is what ``tracemalloc`` saw allocated
during a second, traced run (numpy arrays included).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from mmulib.tdp.contention import FaultCosts, LockModel, Workload, predict
from mmulib.tdp.fault import kvm_tdp_mmu_map
from mmulib.tdp.sim import simulate
from mmulib.tdp.tree import TdpTree

OUTSIDE, HOLD = 366, 50
GIB = 1 << 30
TARGET_SECONDS = 10.0


def measured(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak bytes allocated) of ``fn``.

    Timed without tracing (tracemalloc slows every allocation down), then run again
    under tracemalloc for the peak.
    """
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def bench_simulation(sizes: list[tuple[int, int, str]]) -> bool:
    print("mmu_lock simulation (o = 366, h = 50 ticks; every fault simulated)")
    print(f"{'lock':5} {'vCPUs':>6} {'GiB/vCPU':>8} {'faults':>13} {'seconds':>8} "
          f"{'ns/fault':>8} {'peak MiB':>8}  wait share  matches closed form")
    met = True
    simulate(16, 1 << 12, OUTSIDE, HOLD)  # warm up numpy before timing
    costs = FaultCosts(Fraction(OUTSIDE), Fraction(HOLD), Fraction(HOLD))
    for vcpus, gib, lock in sizes:
        faults = gib * GIB // 4096
        r, sec, peak = measured(lambda v=vcpus, f=faults, lk=lock: simulate(v, f, OUTSIDE, HOLD,
                                                                          lock=lk))
        model = LockModel.LEGACY if lock == "spin" else LockModel.TDP_5_12
        p = predict(model, costs, Workload(vcpus, gib * GIB))
        same = (r.makespan, r.total_wait) == (p.makespan, p.total_wait)
        total = vcpus * faults
        print(f"{lock:5} {vcpus:6} {gib:8} {total:13,} {sec:8.2f} {sec / total * 1e9:8.2f} "
              f"{peak / 2**20:8.1f}  {r.wait_fraction:10.4f}  {same}")
        if (vcpus, gib, lock) == (416, 4, "spin"):
            verdict = "met" if sec <= TARGET_SECONDS else "MISSED"
            print(f"      target: 416 vCPUs x 4 GiB in <= {TARGET_SECONDS:g} s: {verdict}")
            met = met and sec <= TARGET_SECONDS
        met = met and same
    return met


def bench_tree(fault_counts: list[int]) -> None:
    print("\nmodel tree: kvm_tdp_mmu_map one 4 KiB fault at a time (5.10)")
    print(f"{'faults':>8} {'seconds':>8} {'us/fault':>8} {'tables':>7} {'model KiB':>9} "
          f"{'B/mapped page':>13} {'peak MiB':>8}")
    for n in fault_counts:
        def run(n: int = n) -> TdpTree:
            t = TdpTree()
            for gfn in range(n):
                kvm_tdp_mmu_map(t, gfn)
            return t
        t, sec, peak = measured(run)
        print(f"{n:8} {sec:8.2f} {sec / n * 1e6:8.1f} {t.counts().table_count:7} "
              f"{t.nbytes / 1024:9.0f} {t.nbytes / n:13.1f} {peak / 2**20:8.1f}")
    spread = 12 << 28  # 4 KiB pages in 12 TiB

    def sparse() -> TdpTree:
        t = TdpTree()
        for i in range(1024):
            kvm_tdp_mmu_map(t, i * (spread // 1024))
        return t
    t, sec, peak = measured(sparse)
    print(f"sparse: 1024 faults spread over a 12 TiB guest: {t.counts().table_count} tables, "
          f"{t.nbytes / 2**20:.1f} MiB of model, {sec:.2f} s, peak {peak / 2**20:.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 416 x 4 GiB run")
    args = ap.parse_args()
    sizes = [(16, 1, "spin"), (96, 3, "spin"), (416, 1, "spin"), (416, 4, "spin"),
             (416, 4, "read")]
    if args.quick:
        sizes = [s for s in sizes if s[:2] != (416, 4)]
    ok = bench_simulation(sizes)
    bench_tree([1 << 12, 1 << 14, 1 << 16])
    print(f"\nsimulation targets {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
