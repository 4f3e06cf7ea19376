"""The vectorised simulation against a plain event loop and against the closed forms."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from mmulib.tdp.contention import FaultCosts, LockModel, Workload, predict
from mmulib.tdp.fault import kvm_tdp_mmu_map
from mmulib.tdp.sim import simulate, simulate_reference, tables_allocated_per_fault
from mmulib.tdp.tree import TdpTree

OUT, H = 366, 50  # o/h = 7.32, the calibrated ratio, in integer ticks


def test_hand_worked_unsaturated_run() -> None:
    # 3 vCPUs, o = 5, h = 2: round 0 grants at 5, 7, 9 (waits 0, 2, 4); afterwards every
    # request finds the lock free; last releases 28, 30, 32.
    r = simulate(3, 4, 5, 2)
    assert (r.makespan, r.total_wait, r.finish.tolist(), r.wait.tolist()) == (
        32, 6, [28, 30, 32], [0, 2, 4])
    assert r.total_hold == 3 * 4 * 2


def test_hand_worked_saturated_run() -> None:
    # 4 vCPUs, o = 1, h = 2: the lock frees at 3, 5, 7, 9, ... and never idles after t = 1.
    r = simulate(4, 3, 1, 2)
    assert (r.makespan, r.finish.tolist()) == (1 + 3 * 4 * 2, [19, 21, 23, 25])
    assert r.wait.tolist() == [0 + 2 * 5, 2 + 2 * 5, 4 + 2 * 5, 6 + 2 * 5]  # (N-1)h - o = 5
    assert r.passes == (0,)


@pytest.mark.parametrize(("vcpus", "faults"), [(1, 5), (8, 40), (9, 40), (12, 33), (100, 7)])
def test_constant_costs_match_the_closed_form_exactly(vcpus, faults) -> None:
    r = simulate(vcpus, faults, OUT, H, chunk_faults=64)
    p = predict(LockModel.LEGACY, FaultCosts(F(OUT), F(H), F(H)), Workload(vcpus, faults * 4096))
    assert (r.makespan, r.total_wait) == (p.makespan, p.total_wait)


def test_read_side_faults_run_independently() -> None:
    r = simulate(416, 1000, OUT, H, lock="read")
    p = predict(LockModel.TDP_5_12, FaultCosts(F(OUT), F(H), F(H)), Workload(416, 1000 * 4096))
    assert (r.makespan, r.total_wait) == (p.makespan, 0) == (1000 * (OUT + H), 0)


def test_random_costs_match_the_event_loop() -> None:
    rng = np.random.default_rng(20201014)
    for _ in range(300):
        n, f = int(rng.integers(1, 10)), int(rng.integers(1, 40))
        o, holds = int(rng.integers(0, 60)), rng.integers(1, 25, size=f)
        got = simulate(n, f, o, holds, chunk_faults=int(rng.integers(1, 80)))
        assert (got.makespan, got.total_wait, got.finish.tolist()) == simulate_reference(
            n, f, o, holds)


def test_mixed_regime_needs_recurrence_passes() -> None:
    # Holds alternate between cheap and expensive: the lock saturates in some rounds only,
    # so neither lower bound holds outright and the recurrence runs.
    holds = np.array([1, 40] * 20)
    r = simulate(4, 40, 30, holds, chunk_faults=1 << 10)
    assert (r.makespan, r.total_wait) == simulate_reference(4, 40, 30, holds)[:2]
    assert r.passes[0] >= 2


def test_profile_window_in_steady_state_sees_the_steady_wait_share() -> None:
    # N = 10 saturates (10 h >= o + h).  Ten whole periods (N h each) after the start-up
    # hold exactly 10 * ((N - 1) h - o) of waiting per vCPU.
    n, period = 10, 10 * H
    r = simulate(n, 30, OUT, H, window=(OUT + 5 * period, OUT + 15 * period))
    assert r.window_wait == n * 10 * ((n - 1) * H - OUT)
    assert r.window_wait_fraction == 0.168


def test_chunking_does_not_change_the_answer() -> None:
    holds = np.arange(1, 101) % 7 + 1
    results = {(r.makespan, r.total_wait) for r in
               (simulate(13, 100, 9, holds, chunk_faults=c) for c in (1, 13, 100, 1 << 20))}
    assert len(results) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="spin' or 'read"):
        simulate(2, 2, 1, 1, lock="mutex")
    with pytest.raises(ValueError, match="positive"):
        simulate(2, 2, 1, 0)
    with pytest.raises(ValueError, match="shape"):
        simulate(2, 3, 1, np.array([1, 2]))


@pytest.mark.parametrize("start", [0, 300, (1 << 18) - 700])
def test_table_allocations_per_fault_match_the_fault_path(start) -> None:
    t = TdpTree()
    counts = [len(kvm_tdp_mmu_map(t, start + k).tables_allocated) for k in range(1500)]
    assert tables_allocated_per_fault(1500, start).tolist() == counts
