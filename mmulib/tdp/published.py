"""Published TDP MMU scaling figures, with their conditions and sources.

Values are kept as exact decimals (``Fraction("110.193")``) so that model and
figure can be compared without rounding.  Quote a figure only with its
conditions; ``shared/reference/numbers.md`` rows #21 and #24 hold the quotes.

Note, in the parallel-faults cover letter the "TDP MMU disabled, baseline,
partitioned" run repeats the "TDP MMU enabled" baseline digit for digit in all
five rows (110.193, 4.829, 3.949, 0.822, 2.995): most likely a copy, so it is
listed (:data:`POPULATE_96_LEGACY_BEFORE`) but not compared with anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Published", "GARDON_2020", "GARDON_2021", "WAIT_416", "TEST_CUT_416",
           "POPULATE_96_BEFORE", "POPULATE_96_AFTER", "POPULATE_96_LEGACY_BEFORE",
           "POPULATE_96_LEGACY_AFTER", "POPULATE_96_OVERLAP_BEFORE",
           "POPULATE_96_OVERLAP_AFTER", "FIGURES"]

GARDON_2020 = ("Ben Gardon, \"[PATCH v2 00/20] Introduce the TDP MMU\", 2020-10-14, "
               "https://lore.kernel.org/kvm/20201014182700.2888246-1-bgardon@google.com/")
GARDON_2021 = ("Ben Gardon, \"[PATCH 00/24] Allow parallel page faults with TDP MMU\", "
               "2021-01-12, https://lore.kernel.org/kvm/20210112181041.356734-1-bgardon@google.com/")

_DEMAND_416 = ("demand_paging_test, 416 vCPUs, 4 GiB per vCPU (exact command line not given); "
               "1-second profile")
_POPULATE_96 = ("dirty_log_perf_test \"Populate memory time\", 96 vCPUs, 3 GiB per vCPU, "
                "partitioned, two-socket Skylake, mean of 3 runs")


@dataclass(frozen=True)
class Published:
    """One published number: what it measures, under what conditions, where."""

    key: str
    quantity: str
    value: Fraction
    unit: str
    conditions: str
    source: str

    def __str__(self) -> str:
        return f"{self.quantity}: {float(self.value):g} {self.unit} ({self.conditions})"


WAIT_416 = Published(
    "wait_416", "time spent waiting for the MMU lock, legacy MMU", Fraction("0.98"), "of the time",
    _DEMAND_416, GARDON_2020)
TEST_CUT_416 = Published(
    "test_cut_416", "shorter test duration with Google's TDP MMU than with the legacy MMU",
    Fraction("0.89"), "of the time",
    _DEMAND_416 + "; Google's internal TDP MMU already handled faults in parallel", GARDON_2020)
POPULATE_96_BEFORE = Published(
    "populate_96_before", "populate time, TDP MMU, mmu_lock a spinlock (baseline)",
    Fraction("110.193"), "s", _POPULATE_96, GARDON_2021)
POPULATE_96_AFTER = Published(
    "populate_96_after", "populate time, TDP MMU, parallel faults (with the series)",
    Fraction("16.112"), "s", _POPULATE_96, GARDON_2021)
POPULATE_96_LEGACY_BEFORE = Published(
    "populate_96_legacy_before", "populate time, TDP MMU disabled (baseline; repeats the "
    "TDP-enabled baseline in every row)", Fraction("110.193"), "s", _POPULATE_96, GARDON_2021)
POPULATE_96_LEGACY_AFTER = Published(
    "populate_96_legacy_after", "populate time, TDP MMU disabled (with the series)",
    Fraction("110.917"), "s", _POPULATE_96, GARDON_2021)
POPULATE_96_OVERLAP_BEFORE = Published(
    "populate_96_overlap_before", "populate time, TDP MMU, overlapping accesses (baseline)",
    Fraction("117.31"), "s", _POPULATE_96.replace("3 GiB per vCPU, partitioned",
                                                  "6 GiB shared by all vCPUs"), GARDON_2021)
POPULATE_96_OVERLAP_AFTER = Published(
    "populate_96_overlap_after", "populate time, TDP MMU, overlapping accesses (with the series)",
    Fraction("141.155"), "s", POPULATE_96_OVERLAP_BEFORE.conditions, GARDON_2021)

FIGURES: dict[str, Published] = {f.key: f for f in (
    WAIT_416, TEST_CUT_416, POPULATE_96_BEFORE, POPULATE_96_AFTER, POPULATE_96_LEGACY_BEFORE,
    POPULATE_96_LEGACY_AFTER, POPULATE_96_OVERLAP_BEFORE, POPULATE_96_OVERLAP_AFTER)}
