"""The lock model: exact predictions, the calibration, and the comparison rows.

Expected values are worked out from the closed forms by hand (o/h = 0.02 * 416 - 1 = 7.32);
the comparison with published figures is asserted as what the model says, misses included.
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from mmulib.tdp.contention import (
    DEMAND_PAGING_416,
    POPULATE_96,
    FaultCosts,
    LockModel,
    Workload,
    calibrate,
    compare,
    predict,
    seconds_per_hold,
    wait_fraction_curve,
)
from mmulib.tdp.published import FIGURES, WAIT_416, Published

OUT = F(183, 25)  # 7.32 lock holds of work outside the lock per fault
COSTS = FaultCosts(outside=OUT, hold_legacy=F(1), hold_tdp=F(1))
F416 = 1 << 20  # 4 KiB faults per vCPU in 4 GiB
F96 = 3 << 18   # ... in 3 GiB


def test_calibration_solves_for_outside_over_hold() -> None:
    cal = calibrate()
    assert cal.outside_per_hold == OUT
    assert cal.costs == COSTS
    assert (cal.fitted_value, cal.residual) == (F(49, 50), 0)
    assert cal.knee_vcpus == F(208, 25)


def test_calibration_refuses_a_wait_share_the_model_cannot_reach() -> None:
    impossible = Published("x", "x", F("0.999"), "", "", "")
    with pytest.raises(ValueError, match="no time outside the lock"):
        calibrate(impossible)


def test_saturated_spinlock_at_416_vcpus() -> None:
    p = predict(LockModel.LEGACY, COSTS, DEMAND_PAGING_416)
    assert (p.saturated, p.load, p.cycle) == (True, 50, 416)
    assert p.wait_per_fault == 416 - F(208, 25)
    assert p.wait_fraction == F(49, 50)
    assert p.makespan == OUT + F416 * 416
    assert p.total_wait == F(416 * 415, 2) + (F416 - 1) * 416 * (416 - F(208, 25))
    assert p.exact


def test_below_the_knee_nobody_waits_after_the_first_round() -> None:
    p = predict(LockModel.LEGACY, COSTS, Workload(8, 1 << 20))
    assert (p.saturated, p.load, p.wait_per_fault) == (False, F(25, 26), 0)
    assert p.makespan == 256 * F(208, 25) + 7
    assert p.total_wait == 28  # the first round's stagger: 0 + 1 + ... + 7 holds


def test_parallel_faults_never_wait_and_the_5_10_spinlock_equals_legacy() -> None:
    rw = predict(LockModel.TDP_5_12, COSTS, DEMAND_PAGING_416)
    assert (rw.saturated, rw.wait_fraction, rw.total_wait) == (False, 0, 0)
    assert rw.makespan == F416 * F(208, 25)
    spin = predict(LockModel.TDP_5_10, COSTS, DEMAND_PAGING_416)
    legacy = predict(LockModel.LEGACY, COSTS, DEMAND_PAGING_416)
    assert (spin.makespan, spin.total_wait, spin.wait_fraction) == (
        legacy.makespan, legacy.total_wait, legacy.wait_fraction)


def test_less_tdp_work_under_the_lock_moves_the_5_10_curve_only() -> None:
    half = FaultCosts(outside=OUT, hold_legacy=F(1), hold_tdp=F(1, 2))
    p = predict(LockModel.TDP_5_10, half, DEMAND_PAGING_416)
    assert p.wait_fraction == 1 - (OUT + F(1, 2)) / (416 * F(1, 2))
    assert predict(LockModel.LEGACY, half, DEMAND_PAGING_416).wait_fraction == F(49, 50)


def test_writes_add_exactly_to_a_saturated_lock_and_as_a_bound_to_readers() -> None:
    writes = [F(1000), F(500)]
    spin = predict(LockModel.LEGACY, COSTS, DEMAND_PAGING_416, write_holds=writes)
    assert spin.makespan == OUT + F416 * 416 + 1500 and spin.exact
    rw = predict(LockModel.TDP_5_12, COSTS, DEMAND_PAGING_416, write_holds=writes)
    assert rw.makespan == F416 * F(208, 25) + 1502 and not rw.exact


def test_wait_curve_is_zero_up_to_the_knee() -> None:
    curve = wait_fraction_curve(LockModel.LEGACY, COSTS, [1, 8, 9, 416])
    assert curve.tolist() == [0.0, 0.0, 1 - 8.32 / 9, 1 - 8.32 / 416]
    assert wait_fraction_curve(LockModel.TDP_5_12, COSTS, [416]).tolist() == [0.0]


def test_comparison_rows() -> None:
    rows = {c.key: c for c in compare()}
    assert list(rows) == ["wait_416", "test_cut_416", "populate_ratio_96", "populate_96_after",
                          "legacy_vs_tdp_96"]
    assert (rows["wait_416"].role, rows["wait_416"].residual) == ("fitted", 0)
    # Parallel faults vs a saturated legacy lock: F(o + h) / (o + F N h).
    cut = rows["test_cut_416"]
    assert cut.model == 1 - F(F416 * 208, 183 + F416 * 10400)
    assert cut.published == F(89, 100)
    assert round(float(cut.residual), 4) == 0.09  # the model overshoots by 9 points
    ratio = rows["populate_ratio_96"]
    assert ratio.model == F(F96 * 208, 183 + F96 * 2400)
    assert ratio.published == F("16.112") / F("110.193")
    after = rows["populate_96_after"]
    assert after.model == F("110.193") * ratio.model
    assert round(float(after.model), 2) == 9.55 and after.published == F("16.112")
    assert rows["legacy_vs_tdp_96"].model == 1
    assert all(c.left_out for c in rows.values() if c.role != "fitted")


def test_time_unit_from_the_96_vcpu_baseline() -> None:
    assert seconds_per_hold(COSTS) == F("110.193") / (OUT + F96 * 96)
    assert round(float(seconds_per_hold(COSTS)) * 1e6, 3) == 1.460  # microseconds per hold


def test_workloads_and_figures() -> None:
    assert DEMAND_PAGING_416.faults == 436_207_616
    assert POPULATE_96.faults_per_vcpu == F96
    assert FIGURES["wait_416"] is WAIT_416
    assert FIGURES["populate_96_legacy_before"].value == FIGURES["populate_96_before"].value
