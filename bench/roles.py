"""Throughput of the scalar and vectorised role paths, and the time of the refactoring sweep.

Run: ``python bench/roles.py`` (``--quick`` for a smaller run).  Prints states per
second for ``mmulib.compute.compute`` (one Request at a time) and for
``mmulib.vector.compute_batch`` (one numpy call over all states) on the same
states in the same run, their ratio, and the wall time of ``mmulib sweep --from
5.18 --to 5.19`` (the issue's target: under 5 s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmulib import Request
from mmulib.compute import compute
from mmulib.sweep import states, sweep
from mmulib.vector import compute_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="5.19")
    ap.add_argument("--tdp", default="none", choices=("none", "ept", "npt"))
    ap.add_argument("--repeat", type=int, default=40, help="copies of the 2,560-state grid")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 4 if args.quick else args.repeat

    grid = list(states())
    cr0 = np.array([s[0] for s in grid] * repeat, dtype=np.uint64)
    cr4 = np.array([s[1] for s in grid] * repeat, dtype=np.uint64)
    efer = np.array([s[2] for s in grid] * repeat, dtype=np.uint64)
    smm = np.array([s[3] for s in grid] * repeat)
    gm = np.array([s[4] for s in grid] * repeat)
    n = len(cr0)

    scalar_n = min(n, len(grid) * (1 if args.quick else 4))
    t0 = time.perf_counter()
    scalar = [
        compute(Request(kernel=args.kernel, tdp=args.tdp, cr0=int(cr0[i]), cr4=int(cr4[i]),
                        efer=int(efer[i]), smm=bool(smm[i]), guest_mode=bool(gm[i])))
        for i in range(scalar_n)
    ]
    t_scalar = time.perf_counter() - t0

    t0 = time.perf_counter()
    vec = compute_batch(args.kernel, tdp=args.tdp, cr0=cr0, cr4=cr4, efer=efer, smm=smm,
                        guest_mode=gm)
    t_vec = time.perf_counter() - t0

    same = all(int(vec.cpu_as_u64[i]) == r.cpu_role.as_u64 and
               int(vec.root_role[i]) == (r.root_role.word if r.root_role else 0)
               for i, r in enumerate(scalar))

    t0 = time.perf_counter()
    report = sweep("5.18", "5.19")
    t_sweep = time.perf_counter() - t0

    s_rate, v_rate = scalar_n / t_scalar, n / t_vec
    print(f"kernel {args.kernel}, tdp {args.tdp}")
    print(f"scalar     compute():       {s_rate:12,.0f} states/s  ({scalar_n:,} states)")
    print(f"vectorised compute_batch(): {v_rate:12,.0f} states/s  ({n:,} states)")
    print(f"ratio vectorised/scalar:    {v_rate / s_rate:12,.1f}x   (results identical: {same})")
    print(f"sweep 5.18 -> 5.19:         {t_sweep:12.2f} s    "
          f"({len(report.configs)} configurations x {report.configs[0].states} states; "
          f"target < 5 s)")


if __name__ == "__main__":
    main()
