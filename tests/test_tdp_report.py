"""The chapter's tables and contention plot: what they show, exactly."""

from __future__ import annotations

import re
from fractions import Fraction

from mmulib.tdp.contention import calibrate, compare
from mmulib.tdp.plot import plot_wait_curves
from mmulib.tdp.report import calibration_html, comparison_html, fmt


def cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in rows]


def test_fmt() -> None:
    assert fmt(Fraction(49, 50), "fraction") == "98.00%"
    assert fmt(Fraction(1, 3), "ratio") == "0.3333"
    assert fmt(Fraction("16.112"), "s") == "16.112 s"


def test_calibration_table() -> None:
    rows = dict(r for r in cells(calibration_html(calibrate()))[1:])
    assert rows["o / h (fitted)"] == "183/25 = 7.3200"
    assert rows["knee: 1 + o/h vCPUs"] == "8.32"
    assert rows["model at the calibration point"] == "98.00%"
    assert rows["residual"] == "0"
    assert rows["h in seconds (96-vCPU baseline as unit)"] == "1.4596 us"
    assert rows["o in seconds"] == "10.6840 us"


def test_comparison_table() -> None:
    table = cells(comparison_html(compare()))
    assert table[0][:6] == ["figure", "what", "model", "published", "model &minus; published",
                            "role"]
    by_key = {r[0]: r for r in table[1:]}
    assert by_key["wait_416"][2:6] == ["98.00%", "98.00%", "+0.00 points", "fitted"]
    assert by_key["test_cut_416"][2:5] == ["98.00%", "89.00%", "+9.00 points"]
    assert by_key["populate_ratio_96"][2:5] == ["0.0867", "0.1462", "-0.0595"]
    assert by_key["populate_96_after"][2:5] == ["9.550 s", "16.112 s", "-6.562&nbsp;s"]
    assert by_key["legacy_vs_tdp_96"][2:5] == ["1.0000", "1.0066", "-0.0066"]
    assert "get_user_pages" in by_key["test_cut_416"][6]


def test_wait_curves_plot() -> None:
    fig = plot_wait_curves(calibrate(), max_vcpus=416)
    share, per_fault = fig.axes
    legacy, tdp_510, tdp_512, point, knee = share.lines
    assert list(knee.get_xdata()) == [8.32, 8.32]
    assert legacy.get_label() == "legacy MMU (spinlock)"
    assert legacy.get_ydata()[415] == 1 - 8.32 / 416
    assert legacy.get_ydata()[7] == 0.0 and legacy.get_ydata()[8] > 0  # knee at 8.32 vCPUs
    assert list(tdp_510.get_ydata()) == list(legacy.get_ydata())
    assert set(tdp_512.get_ydata()) == {0.0}
    assert (list(point.get_xdata()), list(point.get_ydata())) == ([416], [0.98])
    assert share.get_xscale() == "log"
    # Wait per fault at 416 vCPUs: (N - 1) h - o = 407.68 holds of 1.4596 us.
    us = per_fault.lines[0].get_ydata()[415]
    assert round(us, 1) == round(407.68 * 1.4595586633, 1) == 595.0
