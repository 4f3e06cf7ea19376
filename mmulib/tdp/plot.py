"""Contention curves with matplotlib (imported only when a plot is made).

:func:`plot_wait_curves` draws, for the three locking models, the share of
time a vCPU spends waiting for ``mmu_lock`` and the wait per fault, against the
number of vCPUs faulting at once, with the calibration point (Ben Gardon's 98%
at 416 vCPUs) marked.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .contention import Calibration, LockModel, seconds_per_hold, wait_fraction_curve

__all__ = ["plot_wait_curves"]

STYLES = {
    LockModel.LEGACY: {"color": "#c0392b", "linestyle": "-"},
    LockModel.TDP_5_10: {"color": "#e67e22", "linestyle": "--"},
    LockModel.TDP_5_12: {"color": "#2471a3", "linestyle": "-"},
}


def _pyplot() -> Any:
    # A first import may build the font cache and say so on stderr; that is not news here.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt

    return plt


def plot_wait_curves(cal: Calibration, max_vcpus: int = 512) -> Any:
    """Two panels: wait share and wait per fault (microseconds) vs vCPUs; returns the figure.

    Microseconds use :func:`~mmulib.tdp.contention.seconds_per_hold` (the 96-vCPU
    populate baseline as the time unit).
    """
    plt = _pyplot()
    vcpus = np.arange(1, max_vcpus + 1)
    unit_us = float(seconds_per_hold(cal.costs)) * 1e6
    fig, (share, per_fault) = plt.subplots(1, 2, figsize=(10, 3.6))
    for model, style in STYLES.items():
        curve = wait_fraction_curve(model, cal.costs, vcpus)
        hold = float(cal.costs.hold(model))
        cycle = np.maximum(vcpus * hold, float(cal.costs.outside) + hold) if model.serialised \
            else np.full(vcpus.shape, float(cal.costs.outside) + hold)
        share.plot(vcpus, curve, label=model.value, **style)
        per_fault.plot(vcpus, curve * cycle * unit_us, label=model.value, **style)
    n, f = cal.workload.vcpus, float(cal.figure.value)
    share.plot([n], [f], "ko", label=f"published: {f:.0%} at {n} vCPUs (fitted)")
    share.axvline(float(cal.knee_vcpus), color="grey", linewidth=0.8)
    share.set_xscale("log")
    share.set(xlabel="vCPUs faulting at once (log scale)",
              ylabel="share of time waiting for mmu_lock",
              ylim=(-0.02, 1.02), title=f"knee at 1 + o/h = {float(cal.knee_vcpus):.2f} vCPUs")
    per_fault.set(xlabel="vCPUs faulting at once", ylabel="wait per fault (us)",
                  title=f"one lock hold = {unit_us:.2f} us (96-vCPU baseline)")
    share.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig
