"""Probe comparisons as text: two columns of root records and a verdict per row.

:func:`comparison_text` prints one script (what ``mmulib probe`` shows); :func:`summary_text`
one line per script with its verdict counts and then everything the host could not do.

In the columns, ``(none)`` means the side ran the op and looked up no root (a MOV CR3 that
hit ``prev_roots``, a ``KVM_SET_SREGS`` whose work waits for the next VM entry), and ``-``
means the side did not run it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from .compare import NOT_SUPPORTED, VERDICTS, Comparison, op_text, record_text

__all__ = ["comparison_text", "summary_rows", "summary_text", "summary_html", "reasons",
           "host_text", "OP_WIDTH"]

OP_WIDTH = 26
"""The op column wraps at this width (between the op's arguments)."""


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _records(recs: list[dict[str, Any]] | None) -> list[str]:
    if recs is None:
        return ["-"]
    return [record_text(r) for r in recs] or ["(none)"]


def host_text(host: dict[str, Any]) -> str:
    """``Linux 6.18.44-fc-v669, kvm_pvm: shadow paging, kvm.tdp_mmu=N``."""
    paging = "shadow paging" if host["backend"] == "shadow" else host["backend"].upper()
    extra = ""
    if host["backend"] == "ept":
        extra = f", EPT A/D {'on' if host.get('ept_ad') else 'off'}, " \
                f"up to {host.get('max_tdp_level', 4)} levels"
    elif host["backend"] == "npt":
        extra = f", {5 if host.get('host_la57') else 4}-level host"
    return (f"Linux {host['release']}, {host['module']}: {paging}{extra}, "
            f"kvm.tdp_mmu={'Y' if host['tdp_mmu_allowed'] else 'N'}")


def _table(header: Sequence[str], rows: Iterable[Sequence[list[str]]]) -> list[str]:
    """Columns of cells that are lists of lines; the last column is never padded."""
    rows = list(rows)
    widths = [max([len(header[i])] + [len(line) for r in rows for line in r[i]])
              for i in range(len(header) - 1)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[-1]]
    for r in rows:
        height = max(len(c) for c in r)
        for k in range(height):
            cells = [(c[k] if k < len(c) else "") for c in r]
            line = "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1]
            out.append(line.rstrip())
    return out


def comparison_text(c: Comparison) -> str:
    """One script: header, the two sequences side by side, counts, and what the host lacked."""
    head = [f"probe {c.name}" + (f": {c.script['description']}" if "description" in c.script
                                 else ""),
            f"host:  {host_text(c.host)}",
            f"model: {c.model.describe()}",
            ""]
    rows = []
    for s in c.steps:
        step = "-" if s.index < 0 else str(s.index)
        rows.append(([step.rjust(4)], _wrap(op_text(s.op), OP_WIDTH), _records(s.model),
                     _records(s.host), [s.verdict_text]))
    body = _table(["step", "op", "model: kvm_mmu_get_page", "host: kvm_mmu_get_page",
                   "verdict"], rows)
    counts = c.counts()
    tail = ["", "verdicts: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])]
    return "\n".join(head + body + tail) + "\n"


def summary_rows(comparisons: Iterable[Comparison]) -> list[list[Any]]:
    """``[name, agree, MISMATCH, not supported, refused, not probed]`` per script."""
    return [[c.name, *c.counts().values()] for c in comparisons]


def summary_text(comparisons: Sequence[Comparison]) -> str:
    """One line per script, the totals, and every reason the host gave for not doing a step."""
    rows = summary_rows(comparisons)
    names = ["script", *VERDICTS]
    widths = [max(len(str(r[i])) for r in [names, *rows]) for i in range(len(names))]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w)
                       for i, (x, w) in enumerate(zip(r, widths))).rstrip()
             for r in [names, *rows]]
    totals = [sum(r[i] for r in rows) for i in range(1, len(names))]
    lines.append("  ".join(["total".ljust(widths[0]),
                            *(str(t).rjust(w) for t, w in zip(totals, widths[1:]))]))
    found = reasons(comparisons)
    if found:
        lines += ["", f"{NOT_SUPPORTED}:"]
        lines += [f"  {why}  [{', '.join(where)}]" for why, where in found.items()]
    return "\n".join(lines) + "\n"


def reasons(comparisons: Iterable[Comparison]) -> dict[str, list[str]]:
    """Each reason the host gave for not doing a step -> where (``smm op 1``, ...)."""
    out: dict[str, list[str]] = {}
    for c in comparisons:
        for s in c.not_supported():
            where = f"{c.name} {'sregs' if s.index < 0 else 'op ' + str(s.index)}"
            out.setdefault(s.detail, []).append(where)
    return out


def summary_html(comparisons: Sequence[Comparison]) -> str:
    """:func:`summary_rows` as an HTML table (non-zero MISMATCH counts in bold red)."""
    def td(value: Any, verdict: str = "") -> str:
        style = " style='color:#b71c1c;font-weight:bold'" if verdict == "MISMATCH" and \
            value else ""
        return f"<td{style}>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["script", *VERDICTS])
    body = "".join("<tr>" + td(r[0]) + "".join(td(v, k) for k, v in zip(VERDICTS, r[1:]))
                   + "</tr>" for r in summary_rows(comparisons))
    return f"<table class='mmulib-probe'><tr>{head}</tr>{body}</table>"
