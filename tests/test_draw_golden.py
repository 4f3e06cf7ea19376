"""Golden DOT text of every view, for fixed states, in every era.

The expected text is in ``tests/data/golden/<scenario>-<era>.dot`` (all four views of the
state, one graph after the other, so ``dot -Tsvg`` renders the file as it is).  It is compared
exactly: any change to a drawing shows up here as a diff to review.  After a deliberate change,
regenerate with ``MMULIB_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_draw_golden.py``
and review ``git diff tests/data/golden``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mmulib.draw import cache_activity, contexts_dot, roles_dot, roots_dot, timeline_dot
from mmulib.draw.timeline import TimelineStep
from mmulib.eras import era_names
from mmulib.ui.session import Refused, Session

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
ALL_ERAS = era_names()
SOME_ERAS = ["4.18", "4.20", "5.17", "5.19", "6.4", "6.18"]


def _cr3_round(s: Session) -> None:
    for space in (1, 2, 3, 1):  # three misses fill the cache, then a hit in prev_roots
        s.mov_cr3(space)


SCENARIOS: dict[str, tuple[str, Callable[[Session], object], list[str]]] = {
    # name: (tdp, what to do after the setup, eras)
    "tdp-wp": ("ept", lambda s: s.toggle("CR0", "WP"), ALL_ERAS),
    "shadow-cr3": ("none", _cr3_round, ALL_ERAS),
    "nested-ept": ("ept", lambda s: s.enter_l2(), SOME_ERAS),
    "npt-smm": ("npt", lambda s: s.smi(), SOME_ERAS),
}

CASES = [(name, era) for name, (_, _, eras) in SCENARIOS.items() for era in eras]


def views_text(name: str, era: str) -> str:
    tdp, act, _ = SCENARIOS[name]
    s = Session(era, tdp=tdp)
    act(s)
    m, last = s.machine, s.steps[-1]
    activity = None
    for step in s.steps:
        activity = cache_activity(step.label, step.events) or activity
    steps = [TimelineStep(x.label, x.events) for x in s.steps]
    views = {
        "roles": roles_dot(m, s.prev_machine, cause=last.label),
        "contexts": contexts_dot(m),
        "roots": roots_dot(m, activity),
        "timeline": timeline_dot(steps, s.counters(), title=era),
    }
    return "".join(f"// mmulib golden: {name} in {era}, view {v}\n{dot}"
                   for v, dot in views.items())


@pytest.mark.parametrize(("name", "era"), CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_views_match_golden_dot(name: str, era: str) -> None:
    text = views_text(name, era)
    path = GOLDEN / f"{name}-{era}.dot"
    if os.environ.get("MMULIB_REGEN_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        pytest.skip(f"regenerated {path.name}")
    assert path.exists(), f"{path} missing: run with MMULIB_REGEN_GOLDEN=1 once and review it"
    assert text == path.read_text(encoding="utf-8")


def test_views_are_deterministic_across_fresh_sessions() -> None:
    assert views_text("shadow-cr3", "6.4") == views_text("shadow-cr3", "6.4")


def test_no_golden_file_is_left_over() -> None:
    expected = {f"{n}-{e}.dot" for n, e in CASES}
    assert {p.name for p in GOLDEN.glob("*.dot")} <= expected


def test_every_scenario_runs_in_every_era_it_names() -> None:
    for name, era in CASES:
        try:
            views_text(name, era)
        except Refused as exc:  # pragma: no cover - a scenario the model refuses
            pytest.fail(f"{name} in {era}: {exc}")


@pytest.mark.needs_dot
@pytest.mark.parametrize("name", ["tdp-wp", "shadow-cr3", "nested-ept", "npt-smm"])
def test_golden_files_render_with_dot(name: str) -> None:
    for path in sorted(GOLDEN.glob(f"{name}-*.dot")):
        proc = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr.strip(), (path.name, proc.stderr)
        assert proc.stdout.count("<svg") == 4
