"""How fast the control panel redraws: new states against one ``dot`` run, repeated states.

Run: ``python bench/ui.py`` (``--quick`` for fewer clicks, ``--check`` to exit 1 when a target
is missed).  Drives :class:`mmulib.ui.Panel` in this process, exactly as clicks do (setting a
switch's value, pressing a button), over four workloads, and prints:

* **new states**: every cache emptied before each click (simulator transitions, DOT text, SVG),
  so each click is a state never drawn before.  The time from the click to every changed view's
  SVG being in its widget is put side by side with one ``dot -Tsvg`` run (a subprocess, as
  :func:`mmulib.render.render_svg` starts it) on the largest DOT text that click re-rendered,
  measured right after it in the same run.  Target: median ratio <= 1.2.
* **repeated states**: the same clicks again with warm caches, after enough of them for the
  event timeline's window to repeat as well.  Target: median <= 2 ms.

Only views whose DOT text changed are re-rendered; the last column counts them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from mmulib import render
from mmulib.ui import Panel
from mmulib.ui import scene, session
from mmulib.ui.views import SVG_CACHE

NEW_STATE_RATIO = 1.2
REPEATED_MS = 2.0


def clear_caches() -> None:
    """Forget every transition, drawing and SVG, so the next click is a new state."""
    SVG_CACHE.clear()
    render.render_svg.cache_clear()
    session.machine_of.cache_clear()
    session._transition.cache_clear()  # noqa: SLF001 - the bench empties private caches
    for fn in (scene._roles, scene._contexts, scene._roots, scene._timeline, scene._activity):
        fn.cache_clear()


def one_dot_run(source: str) -> float:
    """Milliseconds of one ``dot -Tsvg`` subprocess on ``source``."""
    exe = shutil.which("dot")
    assert exe is not None
    t0 = time.perf_counter()
    subprocess.run([exe, "-Tsvg"], input=source.encode(), capture_output=True, check=True)
    return (time.perf_counter() - t0) * 1000


def flip(panel: Panel, name: str) -> Callable[[], None]:
    def click() -> None:
        w = panel.switch(name)
        w.value = not w.value
    return click


def cr3_round(panel: Panel) -> Callable[[], None]:
    spaces = iter(range(10**9))

    def click() -> None:
        panel.space.value = next(spaces) % 4
        panel.buttons["mov_cr3"].click()
    return click


def smm_round(panel: Panel) -> Callable[[], None]:
    def click() -> None:
        panel.smm.value = not panel.smm.value
    return click


WORKLOADS: list[tuple[str, dict[str, str], Callable[[Panel], Callable[[], None]]]] = [
    ("6.4 EPT, CR0.WP flips", {"kernel": "6.4", "tdp": "ept"}, lambda p: flip(p, "CR0.WP")),
    ("5.17 EPT, CR0.WP flips", {"kernel": "5.17", "tdp": "ept"}, lambda p: flip(p, "CR0.WP")),
    ("6.4 shadow, MOV CR3 round", {"kernel": "6.4", "tdp": "none"}, cr3_round),
    ("5.19 NPT, SMI/RSM", {"kernel": "5.19", "tdp": "npt"}, smm_round),
]


def measure(clicks: int) -> tuple[list[dict[str, float]], list[float]]:
    new_rows: list[dict[str, float]] = []
    repeated: list[float] = []
    for name, config, make in WORKLOADS:
        panel = Panel(**config)
        click = make(panel)
        for _ in range(clicks):
            clear_caches()
            click()
            t = panel.timing
            assert panel.errors.value == "", panel.errors.value
            largest = max(t["dots"].values(), key=len) if t["dots"] else None
            base = one_dot_run(largest) if largest else float("nan")
            new_rows.append({"workload": name, "panel": t["total_ms"], "dot": base,
                             "views": len(t["rendered"])})
        for _ in range(16):  # warm-up: the timeline window fills with the repeating clicks
            click()
        for _ in range(clicks):
            click()
            repeated.append(panel.timing["total_ms"])
    return new_rows, repeated


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=24, help="clicks per workload and phase")
    ap.add_argument("--quick", action="store_true", help="8 clicks per workload and phase")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    if shutil.which("dot") is None:
        print(f"bench/ui.py needs Graphviz's dot: {render.INSTALL_HINT}", file=sys.stderr)
        return 2
    clicks = 8 if args.quick else args.clicks
    Panel()  # import widgets, start the render threads: not part of any click
    new_rows, repeated = measure(clicks)

    print(f"new states: every cache emptied before each click ({clicks} clicks per workload)")
    print(f"{'workload':28} {'panel ms':>9} {'dot ms':>8} {'ratio':>6} {'views':>6}")
    for name, _, _ in WORKLOADS:
        rows = [r for r in new_rows if r["workload"] == name]
        p = statistics.median(r["panel"] for r in rows)
        d = statistics.median(r["dot"] for r in rows)
        v = statistics.median(r["views"] for r in rows)
        print(f"{name:28} {p:9.1f} {d:8.1f} {p / d:6.2f} {v:6.0f}")
    p_all = statistics.median(r["panel"] for r in new_rows)
    d_all = statistics.median(r["dot"] for r in new_rows)
    per_click = statistics.median(r["panel"] / r["dot"] for r in new_rows)
    ratio = p_all / d_all
    ok_new = ratio <= NEW_STATE_RATIO
    print(f"{'all':28} {p_all:9.1f} {d_all:8.1f} {ratio:6.2f}   (median of per-click ratios "
          f"{per_click:.2f})")
    print(f"  target: click to all views' SVG <= {NEW_STATE_RATIO}x one dot run on the largest "
          f"graph: {'met' if ok_new else 'MISSED'}")

    med, worst = statistics.median(repeated), max(repeated)
    ok_rep = med <= REPEATED_MS
    print(f"repeated states (warm caches, {len(repeated)} clicks): median {med:.2f} ms, "
          f"p90 {statistics.quantiles(repeated, n=10)[-1]:.2f} ms, max {worst:.2f} ms")
    print(f"  target: median <= {REPEATED_MS} ms: {'met' if ok_rep else 'MISSED'}")
    return 0 if (ok_new and ok_rep) or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
