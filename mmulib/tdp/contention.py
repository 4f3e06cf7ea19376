"""Who waits for ``mmu_lock``: a deterministic queueing model of demand faults.

N vCPUs each fault in their own memory, one 4 KiB page after another.  Every
fault costs ``o`` of work outside the MMU lock (the exit, ``get_user_pages``,
the userfaultfd round trip) and ``h`` of MMU work under it.  Three locking
models:

* **legacy MMU** (``LockModel.LEGACY``): one spinlock, every fault's MMU work under it;
* **5.10 TDP MMU** (``TDP_5_10``): the same spinlock, with the TDP MMU's work under it;
* **5.12+ TDP MMU** (``TDP_5_12``): faults take the read side of an rwlock and
  update SPTEs atomically, so they do not wait for each other; only writers
  (zaps, which take the write side) stop them.

A spinlock with N contenders, deterministic costs, all vCPUs starting together:
the lock serves them round-robin (a FIFO lock; proof in :mod:`mmulib.tdp.sim`).
The *offered load* is ``rho = N h / (o + h)``, the share of one lock the vCPUs
would use if nobody waited.  If ``rho < 1`` nobody waits after the first round;
each fault takes ``o + h``.  If ``rho >= 1`` the lock is never idle: a vCPU gets
it once per ``N h``, and spends ``N h - o - h`` of that waiting.  So the share of
time spent waiting is ``1 - (o + h) / (N h)``: it is zero up to ``N = 1 + o/h``
vCPUs and then climbs towards 1.  Makespans are exact for this model (the
simulation in :mod:`mmulib.tdp.sim` reproduces them fault by fault).

Calibration (:func:`calibrate`) fits the one ratio the model has, ``o/h``, to Ben
Gardon's 98% wait at 416 vCPUs; :func:`compare` then predicts the other
published figures and says, for each miss, what the model leaves out.  All
arithmetic is in exact fractions.

>>> cal = calibrate()
>>> cal.outside_per_hold, float(cal.residual)
(Fraction(183, 25), 0.0)
>>> predict(LockModel.LEGACY, cal.costs, Workload(8, 1 << 20)).wait_per_fault
Fraction(0, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

import numpy as np

from .published import (
    POPULATE_96_AFTER,
    POPULATE_96_BEFORE,
    POPULATE_96_LEGACY_AFTER,
    TEST_CUT_416,
    WAIT_416,
    Published,
)

__all__ = ["LockModel", "FaultCosts", "Workload", "DEMAND_PAGING_416", "POPULATE_96",
           "Prediction", "predict", "wait_fraction_curve", "Calibration", "calibrate",
           "Comparison", "compare", "seconds_per_hold"]


class LockModel(Enum):
    """How a demand fault's MMU work is serialised."""

    LEGACY = "legacy MMU (spinlock)"
    TDP_5_10 = "5.10 TDP MMU (spinlock)"
    TDP_5_12 = "5.12+ TDP MMU (rwlock, read side)"

    @property
    def serialised(self) -> bool:
        """Faults exclude each other (a spinlock, or the rwlock's write side)."""
        return self is not LockModel.TDP_5_12


@dataclass(frozen=True)
class FaultCosts:
    """Per-fault costs, in any one time unit: outside the lock, and under it per MMU."""

    outside: Fraction
    hold_legacy: Fraction
    hold_tdp: Fraction

    def hold(self, model: LockModel) -> Fraction:
        return self.hold_legacy if model is LockModel.LEGACY else self.hold_tdp


@dataclass(frozen=True)
class Workload:
    """N vCPUs, each faulting in ``bytes_per_vcpu`` of its own memory once."""

    vcpus: int
    bytes_per_vcpu: int
    page_size: int = 4096
    name: str = ""

    @property
    def faults_per_vcpu(self) -> int:
        return self.bytes_per_vcpu // self.page_size

    @property
    def faults(self) -> int:
        return self.vcpus * self.faults_per_vcpu


DEMAND_PAGING_416 = Workload(416, 4 << 30, name="demand_paging_test, 416 vCPUs x 4 GiB")
POPULATE_96 = Workload(96, 3 << 30, name="dirty_log_perf_test populate, 96 vCPUs x 3 GiB")


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one lock model, cost split and workload.

    ``cycle``, ``wait_per_fault`` and ``wait_fraction`` describe the steady state
    (after the first round); ``makespan`` and ``total_wait`` the whole run, from
    all vCPUs starting together to the last fault done.  ``exact`` is False only
    when ``write_holds`` were given and the result is an upper bound.
    """

    model: LockModel
    workload: Workload
    outside: Fraction
    hold: Fraction
    load: Fraction
    saturated: bool
    cycle: Fraction
    wait_per_fault: Fraction
    wait_fraction: Fraction
    makespan: Fraction
    total_wait: Fraction
    exact: bool


def predict(model: LockModel, costs: FaultCosts, workload: Workload,
            write_holds: Sequence[Fraction] = ()) -> Prediction:
    """Steady state and whole-run totals of ``workload`` under ``model``.

    ``write_holds`` are write-side critical sections (zaps) during the run.  A
    saturated spinlock is never idle, so each one adds exactly its length.
    Otherwise each is charged its length plus one read-side hold (the writer
    waits for the holder it finds): an upper bound that is exact when a write
    lasts longer than one whole fault.
    """
    n, f = workload.vcpus, workload.faults_per_vcpu
    o, h = Fraction(costs.outside), Fraction(costs.hold(model))
    load = n * h / (o + h)
    saturated = model.serialised and load >= 1
    cycle = n * h if saturated else o + h
    wait = cycle - o - h
    if not model.serialised:
        makespan, total_wait = f * (o + h), Fraction(0)
    elif saturated:
        makespan = o + f * n * h
        total_wait = h * n * (n - 1) / 2 + (f - 1) * n * wait
    else:
        makespan = f * (o + h) + (n - 1) * h
        total_wait = h * n * (n - 1) / 2
    writes = [Fraction(w) for w in write_holds]
    exact = saturated or not writes
    makespan += sum(writes) if saturated else sum(w + h for w in writes)
    return Prediction(model, workload, o, h, load, saturated, cycle, wait, wait / cycle,
                      makespan, total_wait, exact)


def wait_fraction_curve(model: LockModel, costs: FaultCosts, vcpus: Sequence[int]) -> np.ndarray:
    """Steady-state share of time waiting, for each vCPU count (floats, for plotting)."""
    n = np.asarray(vcpus, dtype=float)
    o, h = float(costs.outside), float(costs.hold(model))
    if not model.serialised:
        return np.zeros_like(n)
    return np.maximum(0.0, 1.0 - (o + h) / (n * h))


@dataclass(frozen=True)
class Calibration:
    """``o/h`` fitted to one published wait fraction; costs in units of one lock hold."""

    figure: Published
    workload: Workload
    outside_per_hold: Fraction
    costs: FaultCosts
    fitted_value: Fraction
    residual: Fraction

    @property
    def knee_vcpus(self) -> Fraction:
        """vCPU count where the spinlock saturates: ``1 + o/h``."""
        return 1 + self.outside_per_hold


def calibrate(figure: Published = WAIT_416, workload: Workload = DEMAND_PAGING_416) -> Calibration:
    """Solve ``1 - (o + h) / (N h) = figure`` for ``o/h`` (legacy MMU, saturated lock).

    The hold time of the TDP MMU is taken equal to the legacy MMU's: no
    published figure separates them (see :func:`compare`, row ``legacy_vs_tdp_96``).
    """
    ratio = (1 - figure.value) * workload.vcpus - 1
    if ratio <= 0:
        raise ValueError(f"a wait share of {float(figure.value):g} at {workload.vcpus} vCPUs "
                         "leaves no time outside the lock; the model cannot fit it")
    costs = FaultCosts(outside=ratio, hold_legacy=Fraction(1), hold_tdp=Fraction(1))
    fitted = predict(LockModel.LEGACY, costs, workload).wait_fraction
    return Calibration(figure, workload, ratio, costs, fitted, fitted - figure.value)


def seconds_per_hold(costs: FaultCosts) -> Fraction:
    """A time unit for the model: the 96-vCPU spinlock baseline (110.193 s) in hold units.

    This pins the unit on a second published figure; only figures *other* than
    that baseline are predictions once seconds are involved.
    """
    return POPULATE_96_BEFORE.value / predict(LockModel.TDP_5_10, costs, POPULATE_96).makespan


@dataclass(frozen=True)
class Comparison:
    """A model output next to the published figure it should match."""

    key: str
    description: str
    model: Fraction
    published: Fraction
    unit: str
    role: str
    left_out: str

    @property
    def residual(self) -> Fraction:
        return self.model - self.published


_OUTSIDE_CONTENDED = (
    "contention in the work outside the MMU lock once faults run in parallel: "
    "get_user_pages and mmap_lock, the page allocator, cross-socket (NUMA) traffic")


def compare(cal: Calibration | None = None) -> list[Comparison]:
    """The calibration point and the model's predictions of the other figures."""
    cal = calibrate() if cal is None else cal
    c = cal.costs
    legacy_416 = predict(LockModel.LEGACY, c, DEMAND_PAGING_416).makespan
    rw_416 = predict(LockModel.TDP_5_12, c, DEMAND_PAGING_416).makespan
    spin_96 = predict(LockModel.TDP_5_10, c, POPULATE_96).makespan
    rw_96 = predict(LockModel.TDP_5_12, c, POPULATE_96).makespan
    legacy_96 = predict(LockModel.LEGACY, c, POPULATE_96).makespan
    return [
        Comparison("wait_416", "MMU lock wait, legacy MMU, 416 vCPUs x 4 GiB", cal.fitted_value,
                   WAIT_416.value, "fraction", "fitted", ""),
        Comparison("test_cut_416", "test time saved by parallel faults vs legacy, 416 vCPUs",
                   1 - rw_416 / legacy_416, TEST_CUT_416.value, "fraction", "predicted",
                   _OUTSIDE_CONTENDED + "; the userfaultfd ioctls (the cover letter: the run "
                   "'was dominated by get_user_pages and the user fault FD ioctl'); the test's "
                   "fixed set-up time"),
        Comparison("populate_ratio_96", "populate time, parallel faults / spinlock, 96 vCPUs",
                   rw_96 / spin_96, POPULATE_96_AFTER.value / POPULATE_96_BEFORE.value,
                   "ratio", "predicted",
                   _OUTSIDE_CONTENDED + "; o/h is carried over from demand_paging_test "
                   "(userfaultfd, another machine) to dirty_log_perf_test"),
        Comparison("populate_96_after", "populate time with parallel faults, 96 vCPUs",
                   POPULATE_96_BEFORE.value * rw_96 / spin_96, POPULATE_96_AFTER.value, "s",
                   "predicted (110.193 s baseline as the time unit)",
                   "as populate_ratio_96"),
        Comparison("legacy_vs_tdp_96", "populate time, legacy / 5.10 TDP MMU, 96 vCPUs",
                   legacy_96 / spin_96,
                   POPULATE_96_LEGACY_AFTER.value / POPULATE_96_BEFORE.value, "ratio",
                   "predicted (h_tdp = h_legacy)",
                   "the two runs are different kernels (with and without the series); "
                   "lock hand-over cost between sockets, which may dominate both holds"),
    ]
