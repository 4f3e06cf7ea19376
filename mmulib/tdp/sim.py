"""Fault-by-fault simulation of N vCPUs demand-faulting under ``mmu_lock``, vectorised.

Every vCPU repeats: work outside the lock for ``outside`` ticks, request the
lock, hold it for ``hold[k]`` ticks (its k-th fault), release.  All vCPUs start at
time 0.  The spinlock is FIFO: requests are served in the order they arrive,
ties by vCPU number.  Times are integers (ticks), so results are exact.

**Why round-robin is exact.**  Number the faults in round-robin order,
``n = k * N + j`` (vCPU j's k-th fault).  If the lock serves them in that order,
each release comes after the previous one (``D[n] > D[n-1]``), and since the
outside time is one constant ``o``, the requests ``R[n] = D[n-N] + o`` are in
that order too; so FIFO order *is* round-robin order.  The schedule then obeys
``D[n] = max(D[n-1], R[n]) + hold[n]``, a max-plus recurrence.  With
``S = cumsum(hold)`` it unrolls to ``D = S + cummax(R - S_before)`` once ``R`` is
known, and ``R`` depends on ``D`` one round (N faults) back.

**How it is computed.**  A chunk of rounds at a time, starting from a lower
of rounds at a time.  Two lower bounds on ``D`` are tried first: "the lock never
idles" is the schedule if every request arrives before the previous release
(a saturated lock), "nobody waits" is the schedule if every request finds the
lock free; either check is a few comparisons.  Otherwise the recurrence is
applied to the larger of the two bounds until nothing changes; each pass makes
at least one more round exact.  Nothing is sampled; the cost is a few numpy passes per fault,
so it grows linearly with vCPUs x memory (``bench/tdp.py``: 416 vCPUs x 4 GiB,
436 million faults).

The read side of the 5.12 rwlock does not serialise faults: each vCPU runs at
``outside + hold[k]`` per fault, independently.

:func:`simulate_reference` is a plain event loop over every grant (a priority
queue of requests), slow and obviously FIFO; the tests check the two agree.

>>> r = simulate(vcpus=3, faults_per_vcpu=4, outside=5, hold=2)
>>> r.makespan, r.total_wait, r.finish.tolist()
(32, 6, [28, 30, 32])
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .spte import PT64_ROOT_4LEVEL

__all__ = ["SimResult", "simulate", "simulate_reference", "tables_allocated_per_fault"]

_NEG = np.int64(-(1 << 62))


@dataclass(frozen=True)
class SimResult:
    """Totals of one simulated run (ticks).

    ``finish[j]``: when vCPU j's last fault completed; ``wait[j]``: its total time
    spinning; ``window_wait``: time spent waiting inside ``window`` summed over
    vCPUs (a profile of that interval); ``passes``: recurrence passes per chunk (0 when
    the chunk was proved saturated or idle outright).
    """

    lock: str
    vcpus: int
    faults_per_vcpu: int
    makespan: int
    total_wait: int
    total_hold: int
    finish: np.ndarray
    wait: np.ndarray
    window: tuple[int, int] | None
    window_wait: int | None
    passes: tuple[int, ...]

    @property
    def wait_fraction(self) -> float:
        """Share of all vCPU time (N x makespan) spent waiting for the lock."""
        return self.total_wait / (self.vcpus * self.makespan)

    @property
    def window_wait_fraction(self) -> float | None:
        if self.window is None or self.window_wait is None:
            return None
        return self.window_wait / (self.vcpus * (self.window[1] - self.window[0]))


def _holds(hold: int | np.ndarray, faults: int) -> np.ndarray:
    arr = np.asarray(hold, dtype=np.int64)
    if arr.ndim == 0:
        return np.full(faults, int(arr), dtype=np.int64)
    if arr.shape != (faults,):
        raise ValueError(f"hold must be a scalar or have shape ({faults},), not {arr.shape}")
    return arr


def simulate(vcpus: int, faults_per_vcpu: int, outside: int, hold: int | np.ndarray,
             lock: str = "spin", window: tuple[int, int] | None = None,
             chunk_faults: int = 1 << 15) -> SimResult:
    """Simulate every fault of every vCPU; exact, in integer ticks.

    Args:
        vcpus, faults_per_vcpu: the workload.
        outside: ticks of work outside the lock per fault (one constant).
        hold: ticks under the lock, one value or one per fault index (same for all vCPUs).
        lock: "spin" (legacy and 5.10 TDP MMU) or "read" (5.12+ faults, no writers).
        window: [start, end) ticks to profile: waiting time inside it is summed.
        chunk_faults: faults per numpy pass; 32768 keeps arrays in cache (256 KiB each).
    """
    if outside < 0 or vcpus < 1 or faults_per_vcpu < 1:
        raise ValueError("need outside >= 0, vcpus >= 1 and faults_per_vcpu >= 1")
    holds = _holds(hold, faults_per_vcpu)
    if np.any(holds <= 0):
        raise ValueError("every hold must be positive")
    if lock == "read":
        return _simulate_read(vcpus, faults_per_vcpu, outside, holds, window)
    if lock != "spin":
        raise ValueError(f"lock must be 'spin' or 'read', not {lock!r}")
    return _simulate_spin(vcpus, faults_per_vcpu, outside, holds, window, chunk_faults)


def _simulate_read(n: int, f: int, o: int, holds: np.ndarray,
                   window: tuple[int, int] | None) -> SimResult:
    done = int(f * o + holds.sum())  # every vCPU: o + hold[k] per fault, never waiting
    finish = np.full(n, done, dtype=np.int64)
    zero = np.zeros(n, dtype=np.int64)
    return SimResult("read", n, f, done, 0, int(holds.sum()) * n, finish, zero, window,
                     None if window is None else 0, (1,))


def _simulate_spin(n: int, f: int, o: int, holds: np.ndarray, window: tuple[int, int] | None,
                   chunk_faults: int) -> SimResult:
    rounds = max(1, chunk_faults // n)
    prev = np.full(n, o, dtype=np.int64)          # requests of the next round
    carry = _NEG                                  # release of the previous fault
    wait = np.zeros(n, dtype=np.int64)
    window_wait, passes = 0, []
    for k0 in range(0, f, rounds):
        h = np.repeat(holds[k0:k0 + rounds], n)
        d, r, npass = _chunk(prev, carry, h, o, n)
        passes.append(npass)
        g = d - h                                 # grants
        w = g - r
        wait += w.reshape(-1, n).sum(axis=0)
        if window is not None:
            lo, hi = window
            window_wait += int(np.clip(np.minimum(g, hi) - np.maximum(r, lo), 0, None).sum())
        prev, carry = d[-n:] + o, d[-1]
    finish = prev - o
    return SimResult("spin", n, f, int(finish.max()), int(wait.sum()), int(holds.sum()) * n,
                     finish, wait, window, None if window is None else window_wait,
                     tuple(passes))


def _requests(d: np.ndarray, first: np.ndarray, o: int, n: int) -> np.ndarray:
    r = np.empty_like(d)
    r[:n] = first
    np.add(d[:-n], o, out=r[n:])  # no temporary: a fresh 2 MiB array per chunk is slow
    return r


def _chunk(first: np.ndarray, carry: np.int64, h: np.ndarray, o: int,
           n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Releases and requests of one chunk of whole rounds, exactly; and the passes it took.

    0 passes: one of the two lower bounds is proved to be the schedule outright.
    """
    s = np.cumsum(h)
    # Lower bound 1: the lock never idles after the chunk's first grant.  It is the
    # schedule if every request arrives before the previous release.
    busy = max(carry, first[0]) + s
    r = _requests(busy, first, o, n)
    if np.all(r[1:] <= busy[:-1]):
        return busy, r, 0
    # Lower bound 2: nobody waits.  It is the schedule if every request finds the lock free.
    per_round = (h.reshape(-1, n) + o).cumsum(axis=0) - o
    free = (first[None, :] + per_round).reshape(-1)
    r = _requests(free, first, o, n)
    if carry <= r[0] and np.all(free[:-1] <= r[1:]):
        return free, r, 0
    d = np.maximum(busy, free)
    before = s - h
    for npass in range(1, len(h) // n + 2):
        r = _requests(d, first, o, n)
        new = s + np.maximum(carry, np.maximum.accumulate(r - before))
        if np.array_equal(new, d):
            return d, r, npass
        d = new
    raise AssertionError("max-plus recurrence did not settle")  # cannot happen: causal


def simulate_reference(vcpus: int, faults_per_vcpu: int, outside: int,
                       hold: int | np.ndarray) -> tuple[int, int, list[int]]:
    """The same FIFO spinlock, one grant at a time: (makespan, total wait, finish per vCPU)."""
    holds = _holds(hold, faults_per_vcpu)
    pending = [(outside, 0, j) for j in range(vcpus)]  # (request time, fault index, vCPU)
    heapq.heapify(pending)
    free_at, total_wait = 0, 0
    finish = [0] * vcpus
    while pending:
        t, k, j = heapq.heappop(pending)
        grant = max(t, free_at)
        total_wait += grant - t
        free_at = grant + int(holds[k])
        if k + 1 < faults_per_vcpu:
            heapq.heappush(pending, (free_at + outside, k + 1, j))
        else:
            finish[j] = free_at
    return max(finish), total_wait, finish


def tables_allocated_per_fault(faults: int, start_gfn: int = 0,
                               root_level: int = PT64_ROOT_4LEVEL) -> np.ndarray:
    """Tables the fault path allocates at each of ``faults`` 4 KiB faults, in GFN order.

    A vCPU that faults ``start_gfn, start_gfn + 1, ...`` into a tree holding nothing
    else allocates a level-L table (L < root) at the first fault that lands in it:
    the first fault of all, or one whose GFN is a multiple of 512**L.
    """
    gfn = start_gfn + np.arange(faults, dtype=np.int64)
    count = np.zeros(faults, dtype=np.int64)
    for level in range(1, root_level):
        count += (gfn % (1 << (9 * level))) == 0
    count[0] = root_level - 1
    return count
