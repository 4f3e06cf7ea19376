"""The event timeline and the cost counters (one era, or several side by side).

The timeline shows the last ``N`` simulator events grouped by the step that
caused them, oldest first, each named after the kernel function or tracepoint
it mirrors, optionally followed by the costs so far
(:func:`mmulib.sim.counters_of` over every event since the reset).
:func:`counters_dot` puts the counters of several eras in one table and marks
the rows where they differ.

The drawing depends only on the steps in the window (their labels and
events), not on how many steps came before: node ids count back from the
latest step (``step_back_0`` is the latest), so a workload that repeats draws
the same timeline again and its SVG comes from the cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..sim.events import Event
from . import style
from .dot import Dot, Html, cell, esc, row, table

__all__ = ["TimelineStep", "COUNTER_ORDER", "COUNTER_DOC", "timeline_dot", "counters_dot",
           "event_text", "LAST_EVENTS"]

LAST_EVENTS = 12
"""Events the timeline shows by default."""

COUNTER_ORDER = (
    "exits", "no_exits", "vm_entries", "reset_context", "permission_bitmask", "pgd_hits",
    "pgd_misses", "roots_freed", "root_pages_created", "root_pages_reused",
    "tdp_roots_allocated", "tdp_roots_reused", "tdp_roots_freed", "pt_pages_torn_down",
    "pt_pages_rebuilt",
)
"""The counters of :func:`mmulib.sim.counters_of`, in table order."""

COUNTER_DOC = {
    "exits": "VM exits to KVM",
    "no_exits": "guest instructions that did not exit",
    "vm_entries": "VM entries",
    "reset_context": "kvm_mmu_reset_context calls",
    "permission_bitmask": "context re-initialisations (permission bitmasks rebuilt)",
    "pgd_hits": "fast PGD switch hits",
    "pgd_misses": "fast PGD switch misses",
    "roots_freed": "roots freed from root/prev_roots",
    "root_pages_created": "root pages created",
    "root_pages_reused": "root pages found again",
    "tdp_roots_allocated": "TDP MMU roots allocated",
    "tdp_roots_reused": "TDP MMU roots found again",
    "tdp_roots_freed": "TDP MMU roots freed",
    "pt_pages_torn_down": "TDP page-table pages torn down",
    "pt_pages_rebuilt": "TDP page-table pages to fault back in",
}

MAX_FIELD = 60


@dataclass(frozen=True)
class TimelineStep:
    """One step of a session: a label such as ``"CR0.WP 1→0"`` and its events."""

    label: str
    events: tuple[Event, ...]


def event_text(e: Event) -> str:
    """``name field=value ...`` with long values shortened.

    >>> from mmulib.sim import ev
    >>> event_text(ev("fast_pgd_switch", mmu="root_mmu", pgd=0x2000, hit=True, slot=1))
    'fast_pgd_switch mmu=root_mmu pgd=0x2000 hit=true slot=1'
    """
    text = str(e)
    return text if len(text) <= 2 * MAX_FIELD else text[: 2 * MAX_FIELD - 3] + "..."


def _window(steps: Sequence[TimelineStep], last: int) -> list[tuple[TimelineStep, int]]:
    """The newest steps holding the last ``last`` events: (step, events of it skipped)."""
    out: list[tuple[TimelineStep, int]] = []
    budget = last
    for step in reversed(steps):
        if budget <= 0:
            break
        n = len(step.events)
        skipped = max(0, n - budget)
        out.append((step, skipped))
        budget -= max(n, 1)
    return out[::-1]


def timeline_dot(steps: Sequence[TimelineStep], counters: Mapping[str, int] | None = None, *,
                 last: int = LAST_EVENTS, title: str = "") -> str:
    """DOT of the last ``last`` events (grouped by step), and the costs if ``counters``."""
    g = Dot("timeline", rankdir="TB", nodesep=0.3, ranksep=0.15, fontname=style.FONT,
            fontsize=11, labelloc="t",
            label=(f"{title}: " if title else "") + f"the last {last} events")
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=9)
    window = _window(steps, last)
    ids = []
    for back, (step, skipped) in zip(range(len(window) - 1, -1, -1), window):
        node = f"step_back_{back}"
        ids.append(node)
        g.node(node, label=_step_table(step, skipped, latest=back == 0))
    for a, b in zip(ids, ids[1:]):
        g.edge(a, b, arrowsize=0.6)
    if counters is not None:
        g.node("costs", label=_counter_table([("so far", counters)], "costs so far"))
        if ids:
            g.same_rank([ids[0], "costs"])
    return g.source


def _step_table(step: TimelineStep, skipped: int, latest: bool) -> Html:
    head = f"<B>{esc(step.label)}</B>" + (" (latest)" if latest else "")
    rows = [row(cell(Html(head), bgcolor=style.CHANGED if latest else style.HEADER))]
    if skipped:
        rows.append(row(cell(f"... {skipped} earlier events", align="left",
                             bgcolor=style.MUTED)))
    if not step.events:
        rows.append(row(cell("no events", align="left")))
    for e in step.events[skipped:]:
        name, _, rest = event_text(e).partition(" ")
        body = f"<B>{esc(name)}</B>" + (f" {esc(rest)}" if rest else "")
        rows.append(row(cell(Html(body), align="left")))
    return table(rows, cellborder=0, border=1)


def _counter_table(columns: Sequence[tuple[str, Mapping[str, int]]], title: str) -> Html:
    span = len(columns) + 1
    rows = [row(cell(Html(f"<B>{esc(title)}</B>"), colspan=span, bgcolor=style.HEADER))]
    if len(columns) > 1:
        rows.append(row(cell(""), *(cell(Html(f"<B>{esc(name)}</B>")) for name, _ in columns)))
    for key in COUNTER_ORDER:
        values = [int(c.get(key, 0)) for _, c in columns]
        differs = len(set(values)) > 1
        colour = style.CHANGED if differs else None
        rows.append(row(cell(COUNTER_DOC[key], align="left", bgcolor=colour),
                        *(cell(v, align="right", bgcolor=colour) for v in values)))
    return table(rows)


def counters_dot(columns: Sequence[tuple[str, Mapping[str, int]]], *,
                 title: str = "costs so far") -> str:
    """DOT of one table with a column of counters per era; differing rows highlighted."""
    g = Dot("counters", fontname=style.FONT, fontsize=11)
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=10)
    g.node("counters", label=_counter_table(columns, title))
    return g.source
