"""Probe comparisons drawn with the simulator's views (:mod:`mmulib.draw`, :mod:`mmulib.show`).

* :func:`sequences`: the two ``kvm_mmu_get_page`` sequences side by side, one row per op,
  the verdict cell coloured (green agree, red MISMATCH, orange not supported, grey the rest);
* :func:`timelines`: each sequence as the simulator's timeline view, model and host;
* :func:`model_session` / :func:`model_roots`: the model's root cache (``root`` and
  ``prev_roots``, the shadow pages behind them) after an op, the drawing chapters 03 and 10
  use.  The host's cache cannot be seen from userspace: only its lookups are traced, and
  those are the records the other drawings compare.

Every function returns :class:`mmulib.show.Drawing` objects (DOT text, SVG on display), so
nothing here needs Graphviz until a drawing is shown.

>>> from mmulib.live.compare import Comparison, ModelConfig, StepComparison
>>> c = Comparison({"name": "demo", "sregs": {}, "ops": [{"op": "run"}]},
...                {"release": "6.18.44", "module": "kvm_pvm", "backend": "shadow",
...                 "tdp_mmu_allowed": False}, ModelConfig("6.18", "6.18", "none", False,
...                 "vmx", 48),
...                [StepComparison(0, {"op": "run"}, "agree", model=[], host=[])])
>>> sequence_dot(c).splitlines()[0]
'digraph probe_sequences {'
"""

from __future__ import annotations

from typing import Any

from ..draw import style
from ..draw.dot import Dot, Html, cell, esc, row, table
from ..draw.timeline import TimelineStep, timeline_dot
from ..sim.events import ev
from ..sim.machine import INIT_CR0
from ..ui.session import Session
from .compare import AGREE, MISMATCH, NOT_SUPPORTED, Comparison, op_text, record_text
from .report import OP_WIDTH, _wrap, host_text

__all__ = ["VERDICT_COLOURS", "sequence_dot", "sequences", "timelines", "model_session",
           "model_roots"]

VERDICT_COLOURS = {AGREE: style.HIT, MISMATCH: style.FREED, NOT_SUPPORTED: style.LAZY}
"""Cell colour per verdict; the others are grey (:data:`mmulib.draw.style.MUTED`)."""


def _drawing(name: str, dot: str) -> Any:
    from ..show import Drawing

    return Drawing(name, dot)


def _records_html(recs: list[dict[str, Any]] | None) -> Html:
    if recs is None:
        return Html("<I>-</I>")
    if not recs:
        return Html("<I>(none)</I>")
    return Html("<BR ALIGN='LEFT'/>".join(esc(record_text(r)) for r in recs)
                + "<BR ALIGN='LEFT'/>")


def _verdict_html(verdict: str, detail: str) -> Html:
    """The verdict in bold, its detail below in lines of at most 44 characters."""
    lines = [f"<B>{esc(verdict)}</B>"] + [esc(x) for x in _wrap(detail, 44) if detail]
    return Html("<BR ALIGN='LEFT'/>".join(lines) + "<BR ALIGN='LEFT'/>")


def sequence_dot(c: Comparison) -> str:
    """DOT of one table: step, op, the model's records, the host's, the verdict."""
    g = Dot("probe_sequences", fontname=style.FONT, fontsize=11, labelloc="t",
            label=f"{c.name}: model {c.model.era} vs {host_text(c.host)}")
    g.attr("node", shape="plaintext", fontname=style.FONT, fontsize=9)
    head = [cell(Html(f"<B>{h}</B>"), bgcolor=style.HEADER)
            for h in ("step", "op", f"model {c.model.era}: kvm_mmu_get_page",
                      "host: kvm_mmu_get_page", "verdict")]
    rows = [row(*head)]
    for s in c.steps:
        colour = VERDICT_COLOURS.get(s.verdict, style.MUTED)
        rows.append(row(
            cell("-" if s.index < 0 else s.index, align="right"),
            cell(Html("<BR ALIGN='LEFT'/>".join(esc(x) for x in _wrap(op_text(s.op), OP_WIDTH))
                      + "<BR ALIGN='LEFT'/>"), align="left", balign="left"),
            cell(_records_html(s.model), align="left", balign="left"),
            cell(_records_html(s.host), align="left", balign="left"),
            cell(_verdict_html(s.verdict, s.detail), bgcolor=colour, title=s.verdict_text,
                 href=style.CELL_HREF, id=f"verdict_{s.index + 1}", align="left",
                 balign="left"),
        ))
    g.node("sequences", label=table(rows))
    return g.source


def sequences(c: Comparison) -> Any:
    """:func:`sequence_dot` as a :class:`mmulib.show.Drawing`."""
    return _drawing("sequences", sequence_dot(c))


def _steps(c: Comparison, side: str) -> list[TimelineStep]:
    out = []
    for s in c.ops:
        recs = getattr(s, side)
        label = f"[{s.index}] {op_text(s.op)}" + ("" if recs is not None else " (not run)")
        out.append(TimelineStep(label, tuple(
            ev("kvm_mmu_get_page", gfn=r["gfn"], role=r["role"], level=r["level"],
               created=r["created"]) for r in recs or ())))
    return out


def timelines(c: Comparison, *, last: int = 12) -> Any:
    """The model's and the host's records as the simulator's timeline (the last ``last``)."""
    from ..show import Drawings

    return Drawings([
        _drawing("model", timeline_dot(_steps(c, "model"), last=last,
                                       title=f"model {c.model.era}")),
        _drawing("host", timeline_dot(_steps(c, "host"), last=last,
                                      title=f"host {c.host['release']}")),
    ])


def model_session(c: Comparison, upto: int | None = None) -> Session:
    """The model as a :class:`~mmulib.ui.session.Session` after ops ``0..upto`` (all if None).

    The session's own set-up (``KVM_SET_SREGS`` of the script's ``sregs`` and a VM entry)
    comes first, so the state is the script's: a first ``run`` finds nothing more to do.
    """
    regs = {k: int(str(v), 0) for k, v in c.script.get("sregs", {}).items()}
    reset = {"cr0": INIT_CR0, "cr3": 0, "cr4": 0, "efer": 0}     # a new vCPU's, as in the model
    s = Session(c.model.kernel, tdp=c.model.tdp, tdp_mmu=c.model.tdp_mmu,
                vendor=c.model.vendor, sregs={**reset, **regs})
    ops = c.script["ops"] if upto is None else c.script["ops"][:upto + 1]
    for i, op in enumerate(ops):
        s.apply(op, f"[{i}] {op_text(op)}")
    return s


def model_roots(c: Comparison, upto: int | None = None) -> Any:
    """The model's root cache after op ``upto``: :func:`mmulib.show.roots` of that session."""
    from .. import show

    return show.roots(model_session(c, upto))
