"""Era comparisons: one workload on every era, as a table and a matplotlib chart.

>>> cmp = compare_eras("cr0_wp_storm", metric="tdp_roots_allocated", toggles=100,
...                    eras=["5.10", "5.19", "6.4"], configs=["legacy", "tdp_mmu"], chart=False)
>>> [(str(r["era"]), float(r["legacy"]), float(r["tdp_mmu"])) for r in cmp.table]
[('5.10', 0.0, 50.0), ('5.19', 0.0, 0.0), ('6.4', 0.0, 0.0)]

The storm runs on a two-vCPU guest by default (one WP=0 tree per open/close window
before 5.19, none after); ``vcpus=1`` is the single-vCPU VM, where every toggle
frees the only root until 6.4:

>>> cmp = compare_eras("cr0_wp_storm", metric="tdp_roots_allocated", toggles=100, vcpus=1,
...                    eras=["5.10", "5.19", "6.4"], configs=["tdp_mmu"], chart=False)
>>> [(str(r["era"]), float(r["tdp_mmu"])) for r in cmp.table]
[('5.10', 100.0), ('5.19', 100.0), ('6.4', 0.0)]

matplotlib is imported only when a chart is drawn, and the chart is a bare
:class:`matplotlib.figure.Figure` (no pyplot state): Jupyter displays it, and
``fig.savefig(...)`` writes it anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..eras import ERAS
from .workloads import FOOTPRINT_GIB, WORKLOADS, Workload, table

__all__ = ["EraComparison", "pivot", "compare_eras", "ssdd_by_era", "era_chart",
           "calibration_chart"]


@dataclass(frozen=True)
class EraComparison:
    """``rows``: the workload table; ``table``: ``metric`` per era (rows) × config (fields)."""

    workload: str
    metric: str
    rows: np.ndarray
    table: np.ndarray
    figure: Any  # matplotlib.figure.Figure, or None when chart=False


def pivot(rows: np.ndarray, metric: str, configs: Sequence[str] | None = None) -> np.ndarray:
    """Era × config table of one field of a :func:`~mmulib.sim.workloads.table` result.

    Eras keep the order of :data:`mmulib.eras.ERAS`, configs the order given (default:
    first appearance); a config that does not exist in an era (the TDP MMU before
    5.10) is NaN.
    """
    seen = list(dict.fromkeys(str(c) for c in rows["config"]))
    configs = [c for c in configs if c in seen] if configs is not None else seen
    order = {e.name: i for i, e in enumerate(ERAS)}
    eras = sorted(dict.fromkeys(str(e) for e in rows["era"]), key=lambda e: order.get(e, 99))
    out = np.full(len(eras), np.nan, dtype=[("era", "U8")] + [(c, "f8") for c in configs])
    out["era"] = eras
    where = {e: i for i, e in enumerate(eras)}
    for r in rows:
        out[where[str(r["era"])]][str(r["config"])] = float(r[metric])
    return out


def compare_eras(workload: str | Workload = "cr0_wp_storm", metric: str = "cycles", *,
                 eras: Sequence[str] | None = None, configs: Sequence[str] | None = None,
                 backport: str = "none", footprint_gib: float = FOOTPRINT_GIB,
                 progress: bool | None = None, chart: bool = True, log: bool | None = None,
                 **params: Any) -> EraComparison:
    """Run a workload (a :data:`~mmulib.sim.workloads.WORKLOADS` name with its ``params``,
    or a :class:`~mmulib.sim.workloads.Workload`) on every era; table + chart of ``metric``."""
    if isinstance(workload, str):
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r} (known: {', '.join(WORKLOADS)})")
        workload = WORKLOADS[workload](**params)
    elif params:
        raise ValueError("parameters go to the builder: pass a workload name, or build it")
    rows = table(workload, eras, configs, footprint_gib=footprint_gib, backport=backport,
                 progress=progress)
    t = pivot(rows, metric, configs or workload.configs)
    title = f"{workload.name}: {metric}" + (f" (backport {backport})" if backport != "none"
                                             else "")
    fig = era_chart(t, ylabel=metric, title=title, log=log) if chart else None
    return EraComparison(workload.name, metric, rows, t, fig)


def ssdd_by_era(eras: Sequence[str] | None = None,
                configs: Sequence[str] = ("legacy", "tdp_mmu", "shadow"),
                backport: str = "none", constants: Any = None, chart: bool = True,
                log: bool | None = None) -> EraComparison:
    """Predicted ``ssdd 10 50000`` seconds per era × config (mmulib.sim.cost)."""
    from .cost import ssdd_seconds
    from .workloads import _available

    eras = [e.name for e in ERAS] if eras is None else list(eras)
    dtype = [("era", "U8"), ("config", "U12"), ("backport", "U9"), ("seconds", "f8")]
    rows = np.array([(e, c, backport, ssdd_seconds(e, c, backport, constants))
                     for e in eras for c in configs if _available(e, c)], dtype=dtype)
    t = pivot(rows, "seconds", configs)
    fig = era_chart(t, ylabel="predicted seconds", log=log,
                    title=f"ssdd 10 50000, predicted (backport {backport})") if chart else None
    return EraComparison("ssdd", "seconds", rows, t, fig)


def era_chart(t: np.ndarray, *, ylabel: str, title: str = "", log: bool | None = None) -> Any:
    """Grouped bars: one group per era, one bar per config (NaN bars left out).

    ``log=None`` picks a log axis when the positive values span more than 100x.
    """
    from matplotlib.figure import Figure  # lazily: keeps the model import light

    configs = [n for n in t.dtype.names if n != "era"]
    values = np.array([[r[c] for c in configs] for r in t], dtype=float).reshape(len(t), -1)
    pos = values[np.isfinite(values) & (values > 0)]
    if log is None:
        log = pos.size > 0 and pos.max() / pos.min() > 100
    fig = Figure(figsize=(max(6.0, 0.9 * len(t) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(configs))
    x = np.arange(len(t))
    for i, c in enumerate(configs):
        col = values[:, i]
        ok = np.isfinite(col)
        ax.bar(x[ok] + (i - (len(configs) - 1) / 2) * width, col[ok], width, label=c)
    ax.set_xticks(x, [str(e) for e in t["era"]])
    ax.set_xlabel("kernel era")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def calibration_chart(constants: Any = None) -> tuple[np.ndarray, Any]:
    """Published vs model for every figure (fit and check), as rows and a scatter plot."""
    from matplotlib.figure import Figure

    from .cost import FIGURES, _rows

    rows = _rows(list(FIGURES), constants or {})
    uses = np.array([f.use for f in FIGURES])
    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, unit in zip(axes, ("s", "cycles")):
        sel = rows["unit"] == unit
        for use, marker in (("fit", "o"), ("check", "x")):
            m = sel & (uses == use)
            if m.any():
                ax.scatter(rows["published"][m], rows["model"][m], marker=marker, label=use)
        lim = [0, max(rows["published"][sel].max(), rows["model"][sel].max()) * 1.05]
        ax.plot(lim, lim, lw=0.8, color="grey")
        ax.set_xlabel(f"published ({unit})")
        ax.set_ylabel(f"model ({unit})")
        ax.set_title("ssdd 10 50000" if unit == "s" else "nested round trip")
        ax.legend(fontsize="small")
    return rows, fig
