"""Probe runs kept as JSON: run the built-ins here, or read a run recorded on another host.

A recorded run is exactly what ``mmulib probe --builtin all --json`` prints:
``{"comparisons": [<Comparison.to_json()>, ...]}``.  Chapter 08 uses :func:`run_or_load`:
the live probe when this machine can run it, the recorded example otherwise, with one
sentence saying which and why.  Setting ``MMULIB_PROBE=recorded`` in the environment always
takes the recorded run (a notebook test uses it to check the path a machine without KVM
takes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .builtins import builtin, builtin_names
from .compare import Comparison, probe
from .errors import LiveUnavailable, ProbeError
from .kvmapi import KVM_DEVICE
from .report import host_text
from .tracing import TraceOverrun

__all__ = ["ENV", "load", "save", "probe_all", "run_or_load"]

ENV = "MMULIB_PROBE"
"""Environment variable: ``recorded`` makes :func:`run_or_load` skip the live probe."""


def load(path: str | Path) -> list[Comparison]:
    """The comparisons of a recorded run."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Comparison.from_json(c) for c in data["comparisons"]]


def save(comparisons: Sequence[Comparison], path: str | Path) -> Path:
    """Write ``comparisons`` as ``mmulib probe --builtin all --json`` does."""
    p = Path(path)
    p.write_text(json.dumps({"comparisons": [c.to_json() for c in comparisons]}, indent=1)
                 + "\n", encoding="utf-8")
    return p


def probe_all(names: Sequence[str] | None = None, *,
              device: str = KVM_DEVICE) -> list[Comparison]:
    """:func:`~mmulib.live.compare.probe` of each built-in (all of them by default)."""
    return [probe(builtin(n), device=device) for n in (names or builtin_names())]


def run_or_load(path: str | Path, names: Sequence[str] | None = None, *,
                device: str = KVM_DEVICE) -> tuple[list[Comparison], str]:
    """The built-ins probed live here if possible, else the run recorded at ``path``.

    Returns the comparisons and one sentence saying where they come from.
    """
    why = ""
    if os.environ.get(ENV, "") == "recorded":
        why = f"{ENV}=recorded is set"
    else:
        try:
            result = probe_all(names, device=device)
            return result, f"probed live on this machine: {host_text(result[0].host)}"
        except (LiveUnavailable, TraceOverrun, ProbeError) as exc:
            why = f"no live probe here ({exc})"
    recorded = load(path)
    if names is not None:
        recorded = [c for c in recorded if c.name in set(names)]
    host = host_text(recorded[0].host) if recorded else "nowhere"
    return recorded, f"the recorded example from {host}; {why}"
