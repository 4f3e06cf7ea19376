"""HTML tables of the calibration and of predictions vs published figures (plain strings).

>>> from mmulib.tdp.contention import compare
>>> ">wait_416</td>" in comparison_html(compare())
True
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from fractions import Fraction

from .contention import Calibration, Comparison, seconds_per_hold

__all__ = ["comparison_html", "calibration_html", "fmt"]


def fmt(value: Fraction, unit: str) -> str:
    """A figure as a reader wants it: shares in %, ratios to 4 places, seconds to 3."""
    if unit == "fraction":
        return f"{float(value):.2%}"
    if unit == "ratio":
        return f"{float(value):.4f}"
    return f"{float(value):.3f} {unit}"


def _table(head: list[str], rows: Iterable[list[str]]) -> str:
    cells = "".join(f"<th style='text-align:left'>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def comparison_html(rows: Iterable[Comparison]) -> str:
    """Model vs published, residual, and what the model leaves out where it misses."""
    out = []
    for c in rows:
        residual = (f"{float(c.residual) * 100:+.2f} points" if c.unit == "fraction"
                    else fmt(c.residual, c.unit).replace(" ", "&nbsp;"))
        out.append([c.key, html.escape(c.description), fmt(c.model, c.unit),
                    fmt(c.published, c.unit), residual, html.escape(c.role),
                    html.escape(c.left_out) or "&ndash;"])
    return _table(["figure", "what", "model", "published", "model &minus; published", "role",
                   "what the model leaves out"], out)


def calibration_html(cal: Calibration) -> str:
    """The fitted constant, what it was fitted to, and the residual."""
    unit = seconds_per_hold(cal.costs)
    rows = [
        ["fitted to", html.escape(str(cal.figure))],
        ["o / h (fitted)", f"{cal.outside_per_hold} = {float(cal.outside_per_hold):.4f}"],
        ["knee: 1 + o/h vCPUs", f"{float(cal.knee_vcpus):.2f}"],
        ["model at the calibration point", f"{float(cal.fitted_value):.2%}"],
        ["residual", f"{float(cal.residual):.3g}"],
        ["h in seconds (96-vCPU baseline as unit)", f"{float(unit) * 1e6:.4f} us"],
        ["o in seconds", f"{float(unit * cal.outside_per_hold) * 1e6:.4f} us"],
    ]
    return _table(["", ""], rows)
