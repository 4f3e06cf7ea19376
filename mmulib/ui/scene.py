"""The DOT text of every view for a session, memoised (pure: no widgets, no Graphviz).

Each view's text is a function of a few hashable values (frozen machine
states, the step label, the recent events), cached with ``lru_cache``, so a
state shown before costs a lookup and the panel can tell which views changed
by comparing strings.  The costs so far change at every step, so the panel
shows them as an HTML table (:func:`mmulib.ui.views.counters_html`) rather
than through Graphviz.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..draw.contexts import contexts_dot
from ..draw.roles import roles_dot
from ..draw.roots import CacheActivity, cache_activity, roots_dot
from ..draw.timeline import LAST_EVENTS, TimelineStep, timeline_dot
from ..sim.events import Event
from .session import Session, Step, machine_of

__all__ = ["VIEWS", "session_dots", "last_activity"]

VIEWS = ("roles", "contexts", "roots", "timeline")
"""The views of one session, in the panel's order."""


@functools.lru_cache(maxsize=512)
def _roles(state: tuple[Any, ...], prev: tuple[Any, ...] | None, cause: str) -> str:
    return roles_dot(machine_of(state), machine_of(prev) if prev is not None else None,
                     cause=cause)


@functools.lru_cache(maxsize=512)
def _contexts(state: tuple[Any, ...]) -> str:
    return contexts_dot(machine_of(state))


@functools.lru_cache(maxsize=512)
def _roots(state: tuple[Any, ...], activity: CacheActivity | None) -> str:
    return roots_dot(machine_of(state), activity)


@functools.lru_cache(maxsize=512)
def _timeline(steps: tuple[TimelineStep, ...], title: str, last: int) -> str:
    return timeline_dot(steps, last=last, title=title)


@functools.lru_cache(maxsize=4096)
def _activity(label: str, events: tuple[Event, ...]) -> CacheActivity | None:
    return cache_activity(label, events)


def last_activity(steps: Sequence[Step]) -> CacheActivity | None:
    """The root-cache events of the latest step that had any."""
    for s in reversed(steps):
        act = _activity(s.label, s.events)
        if act is not None:
            return act
    return None


def _window(steps: Sequence[Step], last: int) -> tuple[TimelineStep, ...]:
    out: list[TimelineStep] = []
    n = 0
    for s in reversed(steps):
        if n >= last:
            break
        out.append(TimelineStep(s.label, s.events))
        n += max(1, len(s.events))
    return tuple(reversed(out))


def session_dots(session: Session, prev_state: tuple[Any, ...] | None = None,
                 cause: str = "", *, last: int = LAST_EVENTS) -> dict[str, str]:
    """DOT of each view of ``session``; role changes are relative to ``prev_state``."""
    if prev_state is not None and machine_of(prev_state).era != session.machine.era:
        prev_state = None
    return {
        "roles": _roles(session.state, prev_state, cause),
        "contexts": _contexts(session.state),
        "roots": _roots(session.state, last_activity(session.steps)),
        "timeline": _timeline(_window(session.steps, last), session.era, last),
    }
